//! A fast path for the pushes senders actually write: an array of objects
//! whose keys are all in the contract, unescaped, with string, `null` or (for
//! `Type`) small integer values, and a known `Type`.
//!
//! It reads the bytes directly: keys are matched in place, strings are scanned
//! 8 bytes at a time and copied once into the event's field, and nothing goes
//! through serde's visitor layers. It only ever answers "these are the events"
//! or "not mine": anything else (an unknown key or `Type`, an escaped key, a
//! number that is not a small integer, a surrogate escape, a duplicate key,
//! any error at all) returns `None`, and the caller parses the body again with
//! the full reader, which accepts the same pushes and names the errors. So
//! every error message still comes from one place, and this path must only
//! agree with that reader on what it accepts (a property test checks that).

use std::borrow::Cow;

use crate::event::{
    CatalogChange, ConversationEvent, Event, EventDate, EventKind, Message, MissedText, Origin, Variables,
};
use crate::wire::encode::escape_mask;

use super::{classify, known_event, share, Field, KeyClass, PayloadFields, FIELD_COUNT, RECENT_ORIGINS};

/// Reads `text` (already checked to be UTF-8) as a push, or `None` when it is
/// not in this path's subset or not valid.
pub(super) fn push(text: &str, expected_events: usize) -> Option<Vec<Event>> {
    let mut scanner = Scanner { text, bytes: text.as_bytes(), at: 0 };
    scanner.skip_whitespace();
    let events = match scanner.next()? {
        b'[' => {
            let mut events = Vec::with_capacity(expected_events);
            scanner.skip_whitespace();
            if scanner.peek()? == b']' {
                scanner.at += 1;
            } else {
                loop {
                    scanner.skip_whitespace();
                    scanner.expect(b'{')?;
                    scanner.entry(&mut events)?;
                    scanner.skip_whitespace();
                    match scanner.next()? {
                        b',' => {}
                        b']' => break,
                        _ => return None,
                    }
                }
            }
            events
        }
        b'{' => {
            let mut events = Vec::with_capacity(1);
            scanner.entry(&mut events)?;
            events
        }
        _ => return None,
    };
    scanner.skip_whitespace();
    (scanner.at == scanner.bytes.len()).then_some(events)
}

/// Reads `text` as one event object, or `None` (see [`push`]).
pub(super) fn event(text: &str) -> Option<Event> {
    let mut scanner = Scanner { text, bytes: text.as_bytes(), at: 0 };
    scanner.skip_whitespace();
    scanner.expect(b'{')?;
    let mut events = Vec::with_capacity(1);
    scanner.entry(&mut events)?;
    scanner.skip_whitespace();
    if scanner.at != scanner.bytes.len() {
        return None;
    }
    events.pop()
}

struct Scanner<'de> {
    text: &'de str,
    bytes: &'de [u8],
    /// The index of the next byte to read.
    at: usize,
}

impl<'de> Scanner<'de> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    #[inline]
    fn expect(&mut self, wanted: u8) -> Option<()> {
        (self.next()? == wanted).then_some(())
    }

    /// Skips JSON whitespace (the same four bytes serde_json skips).
    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// One entry, its `{` already read: the event is pushed onto `events`.
    fn entry(&mut self, events: &mut Vec<Event>) -> Option<()> {
        let mut code = None;
        let mut fields = Fields::default();
        self.skip_whitespace();
        loop {
            self.expect(b'"')?;
            let key = self.key()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            match key {
                KeyClass::Type => {
                    if code.is_some() {
                        return None;
                    }
                    code = Some(self.type_code()?);
                }
                KeyClass::Known(field) => {
                    let bit = 1u16 << field as u16;
                    if fields.seen & bit != 0 {
                        return None;
                    }
                    fields.seen |= bit;
                    // `null` leaves the slot empty: absent for an optional
                    // key, and an error (so not this path's) for a required one.
                    if let Some(text) = self.field_value()? {
                        fields.values[field as usize] = Some(text);
                    }
                }
                KeyClass::Variables => {
                    if fields.variables_seen {
                        return None;
                    }
                    fields.variables_seen = true;
                    fields.variables = self.variables_value()?;
                }
                // Outside the contract: the full reader decides what to keep.
                KeyClass::Other => return None,
            }
            self.skip_whitespace();
            match self.next()? {
                b',' => self.skip_whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
        let recent = &events[events.len().saturating_sub(RECENT_ORIGINS)..];
        let event = fields.build(code?, recent)?;
        events.push(event);
        Some(())
    }

    /// A key, its opening quote already read; escaped keys are left to the full reader.
    #[inline]
    fn key(&mut self) -> Option<KeyClass> {
        let start = self.at;
        self.skip_to_special();
        self.expect(b'"')?;
        Some(classify(self.bytes.get(start..self.at - 1)?))
    }

    /// `Type`'s value when it is a non-negative integer that fits a `u64`;
    /// anything else is left to the full reader.
    fn type_code(&mut self) -> Option<u64> {
        let first = self.next()?;
        if !first.is_ascii_digit() {
            return None;
        }
        let mut code = u64::from(first - b'0');
        while let Some(byte) = self.peek().filter(u8::is_ascii_digit) {
            // A leading zero is invalid JSON; the full reader reports it.
            if first == b'0' {
                return None;
            }
            code = code.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
            self.at += 1;
        }
        // A fraction or exponent makes it a float, which `Type` rejects.
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        Some(code)
    }

    /// The value of a contract key: a string, or `None` for `null`; anything
    /// else is left to the full reader.
    #[inline]
    fn field_value(&mut self) -> Option<Option<Cow<'de, str>>> {
        match self.next()? {
            b'"' => self.string().map(Some),
            b'n' => self.field_value_null().map(|()| None),
            _ => None,
        }
    }

    /// The value of `Variables`: an object of up to [`MAX_FAST_VARIABLES`]
    /// distinct names with string values, or `null` (none); anything else
    /// is left to the full reader.
    fn variables_value(&mut self) -> Option<Vec<(String, String)>> {
        let mut variables = Vec::new();
        match self.next()? {
            b'n' => {
                self.field_value_null()?;
                return Some(variables);
            }
            b'{' => {}
            _ => return None,
        }
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(variables);
        }
        loop {
            self.expect(b'"')?;
            let name = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            self.expect(b'"')?;
            let value = self.string()?;
            // Few names, so a scan; many are the full reader's (it uses a set).
            if variables.len() == MAX_FAST_VARIABLES || variables.iter().any(|(known, _)| *known == name) {
                return None;
            }
            variables.push((name.into_owned(), value.into_owned()));
            self.skip_whitespace();
            match self.next()? {
                b',' => self.skip_whitespace(),
                b'}' => return Some(variables),
                _ => return None,
            }
        }
    }

    /// The rest of `null`, its `n` already read.
    #[inline]
    fn field_value_null(&mut self) -> Option<()> {
        let rest = self.bytes.get(self.at..self.at + 3)?;
        if rest != b"ull" {
            return None;
        }
        self.at += 3;
        Some(())
    }

    /// A string, its opening quote already read: borrowed from the body when
    /// it has no escapes.
    #[inline]
    fn string(&mut self) -> Option<Cow<'de, str>> {
        let start = self.at;
        self.skip_to_special();
        match self.peek()? {
            b'"' => {
                let text = self.text.get(start..self.at)?;
                self.at += 1;
                Some(Cow::Borrowed(text))
            }
            b'\\' => self.escaped_string(start).map(Cow::Owned),
            _ => None, // A control character.
        }
    }

    /// Moves to the next quote, backslash or control character (or to the
    /// end), 8 bytes at a time.
    #[inline]
    fn skip_to_special(&mut self) {
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let mask = escape_mask(u64::from_le_bytes(word));
            if mask != 0 {
                self.at += (mask.trailing_zeros() / 8) as usize;
                return;
            }
            self.at += 8;
        }
        while let Some(byte) = self.peek() {
            if byte == b'"' || byte == b'\\' || byte < 0x20 {
                return;
            }
            self.at += 1;
        }
    }

    /// The rest of a string with escapes, from `start` (just after its opening
    /// quote); `self.at` is on the first backslash.
    fn escaped_string(&mut self, start: usize) -> Option<String> {
        let mut out = String::with_capacity(self.at - start + 16);
        let mut run_start = start;
        loop {
            self.skip_to_special();
            out.push_str(self.text.get(run_start..self.at)?);
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => {
                    out.push(self.escape()?);
                    run_start = self.at;
                }
                _ => return None, // A control character.
            }
        }
    }

    /// The character of an escape, its backslash already read. A surrogate
    /// pair (how .NET and Python escape an emoji) makes one character; a lone
    /// surrogate is left to the full reader, which reports it.
    fn escape(&mut self) -> Option<char> {
        Some(match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => match self.hex4()? {
                high @ 0xD800..=0xDBFF => {
                    // The low half must follow, as an escape of its own.
                    if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                        return None;
                    }
                    self.at += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?
                }
                // `from_u32` refuses a lone low surrogate.
                code => char::from_u32(code)?,
            },
            _ => return None,
        })
    }

    /// The four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut code = 0u32;
        for digit in digits {
            code = code * 16 + char::from(*digit).to_digit(16)?;
        }
        self.at += 4;
        Some(code)
    }
}

/// The contract's keys of one entry. Only strings are kept: any other
/// value has already sent the entry to the full reader, and `null` counts as
/// absent (it is only valid for optional keys, where it means absent).
#[derive(Default)]
struct Fields<'de> {
    values: [Option<Cow<'de, str>>; FIELD_COUNT],
    /// One bit per [`Field`] seen, for the duplicate check.
    seen: u16,
    /// `Variables`, distinct names in order; empty when absent or `null`.
    variables: Vec<(String, String)>,
    variables_seen: bool,
}

/// The most variables this path reads in one event: webhooks list at most 64.
const MAX_FAST_VARIABLES: usize = 64;

impl<'de> Fields<'de> {
    #[inline]
    fn take(&mut self, field: Field) -> Option<Cow<'de, str>> {
        self.values[field as usize].take()
    }

    /// A string key's value, `None` when absent or `null`: for a required
    /// key that ends the fast path, for an optional one it is the value.
    #[inline]
    fn string(&mut self, field: Field) -> Option<String> {
        self.take(field).map(Cow::into_owned)
    }

    #[inline]
    fn required_date(&mut self) -> Option<EventDate> {
        EventDate::parse(&self.take(Field::Date)?).ok()
    }

    #[inline]
    fn optional_date(&mut self) -> Option<Option<EventDate>> {
        match self.take(Field::Date) {
            Some(text) => EventDate::parse(&text).ok().map(Some),
            None => Some(None),
        }
    }

    fn variables(&mut self) -> Variables {
        Variables::from_distinct(std::mem::take(&mut self.variables))
    }

    #[inline]
    fn origin(&mut self, recent: &[Event]) -> Option<Origin> {
        let bot_token = share(&self.take(Field::BotToken)?, recent, |origin| &origin.bot_token);
        let account_name = share(&self.take(Field::AccountName)?, recent, |origin| &origin.account_name);
        Some(Origin { bot_token, account_name })
    }

    // The same payloads as the full reader's `EntryFields` builds.
    fn read_message(&mut self, recent: &[Event]) -> Option<Message> {
        let item_type = self.string(Field::ItemType);
        let item_sub_type = self.string(Field::ItemSubType);
        let data = self.string(Field::Data)?;
        let date = self.required_date()?;
        let origin = self.origin(recent)?;
        let conversation_id = self.string(Field::ConversationId)?;
        let user_name = self.string(Field::UserName);
        let channel = self.string(Field::Channel)?;
        let variables = self.variables();
        Some(Message { origin, item_type, item_sub_type, data, date, conversation_id, user_name, channel, variables })
    }

    fn read_catalog_change(&mut self, recent: &[Event]) -> Option<CatalogChange> {
        let date = self.optional_date()?;
        let origin = self.origin(recent)?;
        let name = self.string(Field::Name)?;
        let key = self.string(Field::Key)?;
        Some(CatalogChange { origin, date, name, key })
    }

    fn read_missed_text(&mut self, recent: &[Event]) -> Option<MissedText> {
        let date = self.optional_date()?;
        let origin = self.origin(recent)?;
        let conversation_id = self.string(Field::ConversationId);
        let user_name = self.string(Field::UserName);
        let channel = self.string(Field::Channel);
        let text = self.string(Field::Text)?;
        let variables = if conversation_id.is_some() { self.variables() } else { Variables::new() };
        Some(MissedText { origin, date, conversation_id, user_name, channel, text, variables })
    }

    fn read_conversation_event(&mut self, recent: &[Event]) -> Option<ConversationEvent> {
        let data = self.string(Field::Data);
        let date = self.optional_date()?;
        let origin = self.origin(recent)?;
        let conversation_id = self.string(Field::ConversationId)?;
        let user_name = self.string(Field::UserName);
        let channel = self.string(Field::Channel);
        let variables = self.variables();
        Some(ConversationEvent { origin, data, date, conversation_id, user_name, channel, variables })
    }

    /// The event of a known `Type`; unknown types are left to the full reader.
    fn build(mut self, code: u64, recent: &[Event]) -> Option<Event> {
        known_event(EventKind::from_code(code)?, &mut self, recent).ok()
    }
}

impl PayloadFields for Fields<'_> {
    type Error = ();

    fn message(&mut self, recent: &[Event]) -> Result<Message, ()> {
        self.read_message(recent).ok_or(())
    }

    fn catalog_change(&mut self, recent: &[Event]) -> Result<CatalogChange, ()> {
        self.read_catalog_change(recent).ok_or(())
    }

    fn missed_text(&mut self, recent: &[Event]) -> Result<MissedText, ()> {
        self.read_missed_text(recent).ok_or(())
    }

    fn conversation_event(&mut self, recent: &[Event]) -> Result<ConversationEvent, ()> {
        self.read_conversation_event(recent).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::{parse_event_slow, parse_push_slow};
    use crate::wire::{encode_event, encode_push};
    use proptest::prelude::*;

    /// One event of each payload type, with escapes, non-ASCII text and both dates' offsets.
    fn sample_events() -> Vec<Event> {
        let date: EventDate = "2019-07-10T15:47:58.580873+02:00".parse().unwrap();
        let origin = Origin::new("bot-1", "Matelab \"Srl\"");
        vec![
            Event::UserMessage(
                Message::new(origin.clone(), "conv-9", "TelegramChannel", "Hé \\ \"quoted\"\n\u{1}😀 </script>", date)
                    .user_name("Ada")
                    .item_type("Text"),
            ),
            Event::NlpMissed(MissedText::new(origin.clone(), "what?").date(date)),
            Event::IntentDeleted(CatalogChange::new(origin.clone(), "greet", "k\u{2028}")),
            Event::HandOver(
                ConversationEvent::new(origin.clone(), "conv-9")
                    .data("to: Bob")
                    .date(date)
                    .channel("Web")
                    .variables(Variables::new().with("plan", "gold").with("caf\u{e9} \"x\"", "\n\u{1}😀")),
            ),
            Event::BotMessage(
                Message::new(origin, "conv-9", "WebChannel", "Pick", date)
                    .item_type("Card")
                    .item_sub_type("Carousel")
                    .variables(Variables::new().with("email", "ada@example.com")),
            ),
        ]
    }

    /// Whatever the fast path reads from `text`, the full reader reads the same.
    fn check_agreement(text: &str) -> Result<(), TestCaseError> {
        if let Some(fast) = push(text, 0) {
            prop_assert_eq!(Ok(fast), parse_push_slow(text, 0), "{}", text);
        }
        if let Some(fast) = event(text) {
            prop_assert_eq!(Ok(fast), parse_event_slow(text), "{}", text);
        }
        Ok(())
    }

    #[test]
    fn takes_encoded_pushes_and_events() {
        let events = sample_events();
        let body = encode_push(&events);
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(push(text, 0), Some(events.clone()));
        for sample in &events {
            let mut one = Vec::new();
            encode_event(sample, &mut one);
            let one = std::str::from_utf8(&one).unwrap();
            assert_eq!(event(one).as_ref(), Some(sample));
            assert_eq!(push(one, 0), Some(vec![sample.clone()]));
        }
        assert_eq!(push(" [ ] ", 0), Some(Vec::new()));
    }

    #[test]
    fn takes_surrogate_pairs_as_one_character() {
        let text = "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\
                    \"Data\":\"hi \\ud83d\\ude00 \\uD83D\\uDE00!\"}]";
        let events = push(text, 0).expect("in the fast path's subset");
        assert_eq!(Ok(events.clone()), parse_push_slow(text, 0));
        let Event::NewUser(new_user) = &events[0] else { panic!("{events:?}") };
        assert_eq!(new_user.data.as_deref(), Some("hi 😀 😀!"));
    }

    #[test]
    fn takes_whitespace_nulls_and_escapes() {
        let text =
            " [\n{ \"Type\" : 8 ,\"BotToken\":\"b\\u00e9\\/\\u00E9\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\
                    \"UserName\":null,\"Channel\":\"\\t\\b\\f\\r\\n\\\\\\\"\"}\r\n] ";
        let events = push(text, 0).expect("in the fast path's subset");
        assert_eq!(Ok(events), parse_push_slow(text, 0));
    }

    /// The golden vectors, which the integration tests read through the
    /// public functions (so through this path only): the full reader must
    /// read them too, and read the same.
    #[test]
    fn both_readers_read_the_golden_vectors_alike() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/vectors/seed-examples.json")).unwrap();
        let canonicals: Vec<&str> =
            vectors.as_array().unwrap().iter().map(|vector| vector["canonical"].as_str().unwrap()).collect();
        assert!(!canonicals.is_empty());
        for canonical in &canonicals {
            let fast = event(canonical).expect("in the fast path's subset");
            assert_eq!(Ok(fast), parse_event_slow(canonical), "{canonical}");
        }
        let body = format!("[{}]", canonicals.join(","));
        let fast = push(&body, 0).expect("in the fast path's subset");
        assert_eq!(Ok(fast), parse_push_slow(&body, 0));
        let body = include_str!("../../../tests/vectors/push-example.json");
        let fast = push(body, 0).expect("in the fast path's subset");
        assert_eq!(Ok(fast), parse_push_slow(body, 0));
    }

    #[test]
    fn leaves_everything_else_to_the_full_reader() {
        for text in [
            "",
            "[",
            "[,]",
            "[{}]",
            "[] x",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"},]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Other\":1}]",
            "[{\"Type\":08,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8.0,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8e0,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":-8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":\"8\",\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":99,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":99999999999999999999999,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"UserName\":null,\"UserName\":null,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"Bot\\u0054oken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\ud83d\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\ud83dx\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\ud83d\\u0041\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\ude00\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\ud83d\\ud83d\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\x\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\\u12\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"\n\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":1,\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":null,\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":nul,\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\"}]",
            "[{\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\"}]",
            "[{\"Type\":0,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Channel\":\"x\",\
             \"Data\":\"d\",\"Date\":\"2019-07-10\"}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":{\"a\":1}}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":{\"a\":null}}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":[]}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":\"a\"}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":{\"a\":\"1\",\"a\":\"2\"}}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":{\"a\":\"1\",}}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":{},\"Variables\":{}}]",
            "[{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Variables\":{\"a\" \"1\"}}]",
        ] {
            assert_eq!(push(text, 0), None, "{text}");
        }
    }

    /// Bytes that make up pushes, to damage them with.
    fn json_byte() -> impl Strategy<Value = u8> {
        prop_oneof![prop::sample::select(b"{}[],:\"\\ \n0189.-eEnultrfu/bTD".to_vec()), any::<u8>()]
    }

    /// A value for `key`: valid for it (a string, a date for `Date`) when
    /// `variant` is below 32, else absent (`None`), `null` or something odd.
    fn json_value(key: &str, variant: u8, text: &str) -> Option<String> {
        const ODD: [&str; 9] = ["7", "01", "1.0", "-1", "true", "[]", "{}", "\"\\ud800\"", "\"2019-07-10T15:47:58Z \""];
        Some(match variant {
            0..=31 if key == "Date" => "\"2019-07-10T15:47:58.5+00:00\"".to_owned(),
            0..=31 => serde_json::to_string(text).unwrap(),
            32..=35 => return None,
            36..=37 => "null".to_owned(),
            _ => ODD[usize::from(variant) % ODD.len()].to_owned(),
        })
    }

    proptest! {
        /// Encoded pushes with a few bytes inserted, removed or replaced.
        #[test]
        fn agrees_with_the_full_reader_on_damaged_pushes(
            first in 0usize..4,
            count in 0usize..5,
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, json_byte()), 0..4),
        ) {
            let mut events = sample_events();
            events.rotate_left(first);
            events.truncate(count);
            let mut body = encode_push(&events);
            for (position, action, byte) in edits {
                let at = position.index(body.len() + 1);
                match action {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    _ if at < body.len() => body[at] = byte,
                    _ => body.push(byte),
                }
            }
            if let Ok(text) = std::str::from_utf8(&body) {
                check_agreement(text)?;
            }
        }

        /// Strings of `\u` escapes, surrogates among them, paired or not.
        #[test]
        fn agrees_with_the_full_reader_on_unicode_escapes(
            codes in prop::collection::vec(prop_oneof![
                2 => 0xD800u32..0xDC00, 2 => 0xDC00u32..0xE000, 1 => 0u32..0x10000, 1 => Just(0x41u32)
            ], 0..6),
            upper in any::<bool>(),
        ) {
            let escapes: String = codes
                .iter()
                .map(|code| if upper { format!("\\u{code:04X}") } else { format!("\\u{code:04x}") })
                .collect();
            let text = format!(
                "[{{\"Type\":8,\"BotToken\":\"b\",\"AccountName\":\"a\",\"ConversationId\":\"c\",\"Data\":\"{escapes}\"}}]"
            );
            check_agreement(&text)?;
        }

        /// Objects of every kind, with any key missing, `null`, odd or
        /// duplicated, one outside the contract, in any order.
        #[test]
        fn agrees_with_the_full_reader_on_assorted_objects(
            code in prop_oneof![9 => 0u64..15, 1 => Just(u64::MAX)],
            variants in prop::collection::vec(0u8..40, FIELD_COUNT),
            texts in prop::collection::vec("[a-z\u{e9}\"\\\\\n]{0,6}", FIELD_COUNT),
            extra in prop::sample::select(vec![None, None, None, None, None, Some("Other"), Some("Type"), Some("Data")]),
            variables in prop::sample::select(vec![
                "", "", "null", "{}", r#"{"plan":"gold"}"#, r#"{ "b" : "1" , "a":"\u00e9\n" }"#, r#"{"a":"1","a":"2"}"#,
                r#"{"a":1}"#, r#"{"a":null}"#, "[]", r#""x""#, r#"{"a":"1",}"#, r#"{"a""#,
            ]),
            order in Just((0..FIELD_COUNT + 3).collect::<Vec<usize>>()).prop_shuffle(),
            space in prop::sample::select(vec!["", " ", "\n\t "]),
            array in any::<bool>(),
        ) {
            let mut members: Vec<String> = Field::ALL
                .iter()
                .zip(variants.iter().zip(&texts))
                .map(|(field, (variant, text))| {
                    json_value(field.name(), *variant, text)
                        .map(|value| format!("\"{}\"{space}:{space}{value}", field.name()))
                        .unwrap_or_default()
                })
                .collect();
            members.push(format!("\"Type\":{code}"));
            members.push(extra.map(|key| format!("\"{key}\":\"x\"")).unwrap_or_default());
            members.push(if variables.is_empty() { String::new() } else { format!("\"Variables\":{space}{variables}") });
            let members: Vec<&String> = order.iter().map(|index| &members[*index]).filter(|member| !member.is_empty()).collect();
            let object = format!("{{{space}{}{space}}}", members.iter().map(|member| member.as_str()).collect::<Vec<_>>().join(&format!("{space},{space}")));
            let text = if array { format!("[{object},{space}{object}]") } else { object };
            check_agreement(&text)?;
        }

        #[test]
        fn agrees_with_the_full_reader_on_arbitrary_text(text in "[\\[\\]{}\",:\\\\ a-zA-Z0-9\u{e9}]{0,40}") {
            check_agreement(&text)?;
        }
    }
}
