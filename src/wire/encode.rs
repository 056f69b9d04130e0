//! Writing events as the platform's JSON, by hand: this runs for every event
//! sent, so it writes straight into the output buffer with no intermediate
//! value, no formatter and no allocation beyond the buffer's growth.

use crate::config::IncludedVariables;
use crate::event::{
    CatalogChange, ConversationEvent, Event, EventDate, Message, MissedText, Payload, UnknownEvent, Variables,
    MAX_DATE_LEN,
};

/// Which of an event's variables to write.
#[derive(Clone, Copy)]
pub(crate) enum Selection<'a> {
    /// All of them, in the event's order: what a receiver read is written back.
    All,
    /// Only the names a webhook lists that have a value, in the list's order.
    Listed(&'a IncludedVariables),
}

/// What each byte becomes inside a JSON string: 0 for itself, otherwise the
/// letter after the backslash (`u` for a `\u00XX` escape). Same choices as
/// serde_json, so the output is byte for byte what serde_json would write.
static ESCAPE: [u8; 256] = escape_table();

const fn escape_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Whether any of the 8 bytes in `word` may need escaping: below 0x20, `"`
/// or `\`. False positives are possible (they are checked byte by byte),
/// false negatives are not.
#[inline]
fn may_need_escape(word: u64) -> bool {
    escape_mask(word) != 0
}

/// The high bit of each byte of `word` (read little-endian) that may need
/// escaping in a JSON string: below 0x20, `"` or `\`. A set bit may be a
/// false positive only above a true one, so the lowest set bit, when there is
/// one, marks the first such byte exactly.
#[inline]
pub(super) fn escape_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    below_space | has_zero_byte(word ^ (ONES * u64::from(b'"'))) | has_zero_byte(word ^ (ONES * u64::from(b'\\')))
}

/// Writes `text` as a JSON string, quotes included.
///
/// Scans 8 bytes at a time and copies clean runs whole: most texts need no
/// escape at all, and a byte-at-a-time loop was both slower and sensitive to
/// where the compiler placed it.
pub(crate) fn write_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if let Some(chunk) = bytes.get(index..index + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !may_need_escape(u64::from_le_bytes(word)) {
                index += 8;
                continue;
            }
        }
        let byte = bytes[index];
        let escape = ESCAPE[usize::from(byte)];
        if escape != 0 {
            // Copy the unescaped run in one go.
            out.extend_from_slice(&bytes[run_start..index]);
            if escape == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX_DIGITS[usize::from(byte >> 4)]);
                out.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
            run_start = index + 1;
        }
        index += 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Writes `value` in decimal.
fn write_integer(out: &mut Vec<u8>, mut value: u64) {
    // u64::MAX has 20 digits.
    let mut buffer = [0u8; 20];
    let mut position = buffer.len();
    loop {
        position -= 1;
        buffer[position] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&buffer[position..]);
}

/// Writes `,"Key":"value"`; `prefix` is the `,"Key":` part.
fn string_field(out: &mut Vec<u8>, prefix: &[u8], value: &str) {
    out.extend_from_slice(prefix);
    write_string(out, value);
}

/// Writes the field only when the value is present: absent keys are left out, not `null`.
fn optional_string_field(out: &mut Vec<u8>, prefix: &[u8], value: Option<&String>) {
    if let Some(value) = value {
        string_field(out, prefix, value);
    }
}

fn date_field(out: &mut Vec<u8>, date: Option<EventDate>) {
    if let Some(date) = date {
        let mut buffer = [0u8; MAX_DATE_LEN];
        let length = date.write_wire(&mut buffer);
        out.extend_from_slice(b",\"Date\":\"");
        // The date writer only writes ASCII digits and punctuation: nothing to escape.
        out.extend_from_slice(&buffer[..length]);
        out.push(b'"');
    }
}

/// Writes `,"Variables":{...}` with the selected variables, or nothing when
/// none is selected: an event without variables costs one emptiness check.
fn variables_field(out: &mut Vec<u8>, variables: &Variables, selection: Selection<'_>) {
    let none_listed = matches!(selection, Selection::Listed(names) if names.is_empty());
    if variables.is_empty() || none_listed {
        return;
    }
    let start = out.len();
    out.extend_from_slice(b",\"Variables\":{");
    let mut written = 0;
    let mut write = |out: &mut Vec<u8>, name: &str, value: &str| {
        if written > 0 {
            out.push(b',');
        }
        write_string(out, name);
        out.push(b':');
        write_string(out, value);
        written += 1;
    };
    match selection {
        Selection::All => {
            for (name, value) in variables.iter() {
                write(out, name, value);
            }
        }
        Selection::Listed(names) => {
            for name in names.iter() {
                if let Some(value) = variables.get(name) {
                    write(out, name, value);
                }
            }
        }
    }
    if written == 0 {
        // None of the listed names has a value: the key is left out.
        out.truncate(start);
    } else {
        out.push(b'}');
    }
}

fn write_message(out: &mut Vec<u8>, message: &Message, selection: Selection<'_>) {
    optional_string_field(out, b",\"ItemType\":", message.item_type.as_ref());
    optional_string_field(out, b",\"ItemSubType\":", message.item_sub_type.as_ref());
    string_field(out, b",\"Data\":", &message.data);
    date_field(out, Some(message.date));
    string_field(out, b",\"BotToken\":", &message.origin.bot_token);
    string_field(out, b",\"AccountName\":", &message.origin.account_name);
    string_field(out, b",\"ConversationId\":", &message.conversation_id);
    optional_string_field(out, b",\"UserName\":", message.user_name.as_ref());
    string_field(out, b",\"Channel\":", &message.channel);
    variables_field(out, &message.variables, selection);
}

fn write_catalog_change(out: &mut Vec<u8>, change: &CatalogChange) {
    date_field(out, change.date);
    string_field(out, b",\"BotToken\":", &change.origin.bot_token);
    string_field(out, b",\"AccountName\":", &change.origin.account_name);
    string_field(out, b",\"Name\":", &change.name);
    string_field(out, b",\"Key\":", &change.key);
}

fn write_missed_text(out: &mut Vec<u8>, missed: &MissedText, selection: Selection<'_>) {
    date_field(out, missed.date);
    string_field(out, b",\"BotToken\":", &missed.origin.bot_token);
    string_field(out, b",\"AccountName\":", &missed.origin.account_name);
    optional_string_field(out, b",\"ConversationId\":", missed.conversation_id.as_ref());
    optional_string_field(out, b",\"UserName\":", missed.user_name.as_ref());
    optional_string_field(out, b",\"Channel\":", missed.channel.as_ref());
    string_field(out, b",\"Text\":", &missed.text);
    // Variables belong to a conversation: a miss outside one carries none.
    if missed.conversation_id.is_some() {
        variables_field(out, &missed.variables, selection);
    }
}

fn write_conversation_event(out: &mut Vec<u8>, conversation: &ConversationEvent, selection: Selection<'_>) {
    optional_string_field(out, b",\"Data\":", conversation.data.as_ref());
    date_field(out, conversation.date);
    string_field(out, b",\"BotToken\":", &conversation.origin.bot_token);
    string_field(out, b",\"AccountName\":", &conversation.origin.account_name);
    string_field(out, b",\"ConversationId\":", &conversation.conversation_id);
    optional_string_field(out, b",\"UserName\":", conversation.user_name.as_ref());
    optional_string_field(out, b",\"Channel\":", conversation.channel.as_ref());
    variables_field(out, &conversation.variables, selection);
}

fn write_unknown(out: &mut Vec<u8>, unknown: &UnknownEvent) {
    // `Type` is already written from `code`; a second one would make a duplicate key.
    for (key, value) in unknown.fields.iter().filter(|(key, _)| key != "Type") {
        out.push(b',');
        write_string(out, key);
        out.push(b':');
        // Writing a `Value` into a `Vec` cannot fail: the writer never errors
        // and a `Value`'s map keys are always strings.
        if serde_json::to_writer(&mut *out, value).is_err() {
            out.extend_from_slice(b"null");
        }
    }
}

/// See [`crate::wire::encode_event`] and [`crate::wire::encode_event_including`].
pub(crate) fn encode_event(event: &Event, selection: Selection<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"Type\":");
    write_integer(out, event.code());
    match event.payload() {
        Payload::Message(message) => write_message(out, message, selection),
        Payload::CatalogChange(change) => write_catalog_change(out, change),
        Payload::MissedText(missed) => write_missed_text(out, missed, selection),
        Payload::Conversation(conversation) => write_conversation_event(out, conversation, selection),
        Payload::Unknown(unknown) => write_unknown(out, unknown),
    }
    out.push(b'}');
}

/// A typical encoded event's size, to size the push buffer once for most pushes.
const TYPICAL_EVENT_BYTES: usize = 320;

/// See [`crate::wire::encode_push`] and [`crate::wire::encode_push_including`].
pub(crate) fn encode_push(events: &[Event], selection: Selection<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len().saturating_mul(TYPICAL_EVENT_BYTES).saturating_add(2));
    out.push(b'[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        encode_event(event, selection, &mut out);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_ascii_byte_at_every_position_of_a_word_is_escaped_like_serde_json() {
        for byte in 0u8..0x80 {
            for position in 0..17 {
                let mut text = vec![b'a'; 17];
                text[position] = byte;
                let text = String::from_utf8(text).unwrap();
                let mut out = Vec::new();
                write_string(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap(), "byte {byte:#04x} at {position}");
            }
        }
        let mut out = Vec::new();
        write_string(&mut out, "é😀 naïve\u{7f}");
        assert_eq!(out, serde_json::to_vec("é😀 naïve\u{7f}").unwrap());
    }

    use super::*;

    fn encoded(text: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for text in
            ["", "plain", "quote \" and \\ slash /", "\n\t\r\u{8}\u{c}\u{0}\u{1f}\u{7f}", "é😀\u{2028}</script>"]
        {
            assert_eq!(encoded(text), serde_json::to_string(text).unwrap());
        }
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        assert_eq!(encoded(&every_byte), serde_json::to_string(&every_byte).unwrap());
    }

    #[test]
    fn integers_are_decimal() {
        for value in [0, 7, 10, 13, 14, 1_000, u64::MAX] {
            let mut out = Vec::new();
            write_integer(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }
}
