//! Properties of the wire codec: what is encoded parses back equal, the
//! output is valid JSON escaped like serde_json's, and no input makes the
//! parser panic.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use eventhook::dispatch::{CoreLimits, DispatchCore, EnqueueOutcome};
use eventhook::receiver::WebhookReceiver;
use eventhook::wire;
use eventhook::{
    BotSecret, CatalogChange, ConversationEvent, Event, EventDate, IncludedVariables, ManualClock, Message, MissedText,
    Origin, UnknownEvent, Variables, WebhookConfig,
};
use proptest::prelude::*;
use serde_json::Value;

/// Any Unicode, weighted towards what JSON escaping and HTML embedding get wrong.
fn text() -> impl Strategy<Value = String> {
    let tricky = prop::sample::select(vec![
        "\"",
        "\\",
        "\n",
        "\t",
        "\r",
        "\u{0}",
        "\u{8}",
        "\u{c}",
        "\u{1f}",
        "\u{7f}",
        "/",
        "</script>",
        "\u{2028}",
        "\u{2029}",
        "😀",
        "é",
        "\u{feff}",
        "\\u0000",
    ]);
    let piece = prop_oneof![3 => any::<char>().prop_map(String::from), 1 => tricky.prop_map(String::from)];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn optional_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

/// Any date of years 1-9999 at 100 ns precision, with any whole-minute offset up to ±23:59.
fn date() -> impl Strategy<Value = EventDate> {
    (1i32..=9999, 1u32..=12, 1u32..=31, 0u32..24, 0u32..60, 0u32..60, 0u32..10_000_000, -1439i32..=1439).prop_map(
        |(year, month, day, hour, minute, second, ticks, offset_minutes)| {
            // Clamp the day into the month rather than rejecting cases.
            let date = (1..=day)
                .rev()
                .find_map(|day| NaiveDate::from_ymd_opt(year, month, day))
                .expect("day 1 of a month always exists");
            let local = date.and_hms_nano_opt(hour, minute, second, ticks * 100).expect("valid time of day");
            let offset = FixedOffset::east_opt(offset_minutes * 60).expect("offset under a day");
            EventDate::new(offset.from_local_datetime(&local).single().expect("fixed offsets are unambiguous"))
                .expect("years 1-9999, whole minutes")
        },
    )
}

/// Variable names, often from a small set so that webhooks' lists hit them.
fn variable_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["plan", "email", "locale", "Plan", "é"]).prop_map(String::from),
        1 => text().prop_filter("names are not empty", |name| !name.is_empty()),
    ]
}

/// A conversation's variables: none half of the time.
fn variables() -> impl Strategy<Value = Variables> {
    prop_oneof![
        1 => Just(Variables::new()),
        1 => prop::collection::vec((variable_name(), text()), 1..5).prop_map(Variables::from_iter),
    ]
}

/// A webhook's list of included names.
fn included_variables() -> impl Strategy<Value = IncludedVariables> {
    prop::collection::vec(variable_name(), 0..5).prop_map(|mut names| {
        let mut seen = std::collections::HashSet::new();
        names.retain(|name| name.len() <= 128 && seen.insert(name.clone()));
        IncludedVariables::new(names).expect("distinct names of 1-128 bytes")
    })
}

/// Any instant chrono can hold, with any offset chrono allows (to the
/// second), weighted towards the edges of the years 0000-9999.
fn any_instant() -> impl Strategy<Value = DateTime<FixedOffset>> {
    let edge = |year: i32| {
        NaiveDate::from_ymd_opt(year, 1, 1)
            .map_or(0, |date| date.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp()))
    };
    let (first, past_last) = (edge(0), edge(10_000));
    let day = 86_400;
    let seconds = prop_oneof![
        DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
        first..past_last,
        first - 2 * day..first + 2 * day,
        past_last - 2 * day..past_last + 2 * day,
    ];
    let offset = prop_oneof![(-1439i32..=1439).prop_map(|minutes| minutes * 60), -86_399i32..=86_399];
    (seconds, 0u32..1_000_000_000, offset).prop_filter_map("inside chrono's range", |(seconds, nanos, offset)| {
        let offset = FixedOffset::east_opt(offset)?;
        Some(DateTime::<Utc>::from_timestamp(seconds, nanos)?.with_timezone(&offset))
    })
}

/// `event` as the bot "bot" of "Account" sends it, dated `date` where it has a date.
fn stamped(event: Event, date: EventDate) -> Event {
    let origin = Origin::new("bot", "Account");
    match event {
        Event::BotMessage(message) => Event::BotMessage(Message { origin, date, ..message }),
        Event::UserMessage(message) => Event::UserMessage(Message { origin, date, ..message }),
        Event::IntentUpdated(change) => Event::IntentUpdated(CatalogChange { origin, date: Some(date), ..change }),
        Event::IntentDeleted(change) => Event::IntentDeleted(CatalogChange { origin, date: Some(date), ..change }),
        Event::EntityUpdated(change) => Event::EntityUpdated(CatalogChange { origin, date: Some(date), ..change }),
        Event::EntityDeleted(change) => Event::EntityDeleted(CatalogChange { origin, date: Some(date), ..change }),
        Event::NlpMissed(missed) => Event::NlpMissed(MissedText { origin, date: Some(date), ..missed }),
        Event::ConversationError(conversation) => {
            Event::ConversationError(ConversationEvent { origin, date: Some(date), ..conversation })
        }
        Event::NewUser(conversation) => Event::NewUser(ConversationEvent { origin, date: Some(date), ..conversation }),
        Event::ReturningUser(conversation) => {
            Event::ReturningUser(ConversationEvent { origin, date: Some(date), ..conversation })
        }
        Event::TakeOver(conversation) => {
            Event::TakeOver(ConversationEvent { origin, date: Some(date), ..conversation })
        }
        Event::HandOver(conversation) => {
            Event::HandOver(ConversationEvent { origin, date: Some(date), ..conversation })
        }
        Event::Fallback(conversation) => {
            Event::Fallback(ConversationEvent { origin, date: Some(date), ..conversation })
        }
        Event::WrongAnswer(conversation) => {
            Event::WrongAnswer(ConversationEvent { origin, date: Some(date), ..conversation })
        }
        unknown @ Event::Unknown(_) => unknown,
    }
}

fn origin() -> impl Strategy<Value = Origin> {
    (text(), text()).prop_map(|(bot_token, account_name)| Origin::new(bot_token, account_name))
}

fn message() -> impl Strategy<Value = Message> {
    (origin(), optional_text(), optional_text(), text(), date(), text(), optional_text(), text(), variables()).prop_map(
        |(origin, item_type, item_sub_type, data, date, conversation_id, user_name, channel, variables)| Message {
            origin,
            item_type,
            item_sub_type,
            data,
            date,
            conversation_id,
            user_name,
            channel,
            variables,
        },
    )
}

fn catalog_change() -> impl Strategy<Value = CatalogChange> {
    (origin(), prop::option::of(date()), text(), text()).prop_map(|(origin, date, name, key)| CatalogChange {
        origin,
        date,
        name,
        key,
    })
}

fn missed_text() -> impl Strategy<Value = MissedText> {
    (origin(), prop::option::of(date()), optional_text(), optional_text(), optional_text(), text(), variables())
        .prop_map(|(origin, date, conversation_id, user_name, channel, text, variables)| MissedText {
            // Variables belong to a conversation: a miss outside one has none.
            variables: if conversation_id.is_some() { variables } else { Variables::new() },
            origin,
            date,
            conversation_id,
            user_name,
            channel,
            text,
        })
}

fn conversation_event() -> impl Strategy<Value = ConversationEvent> {
    (origin(), optional_text(), prop::option::of(date()), text(), optional_text(), optional_text(), variables())
        .prop_map(|(origin, data, date, conversation_id, user_name, channel, variables)| ConversationEvent {
            origin,
            data,
            date,
            conversation_id,
            user_name,
            channel,
            variables,
        })
}

/// JSON values, floats included (they round-trip exactly: serde_json's
/// `float_roundtrip` parsing is on).
fn json() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from)
    ];
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number, text().prop_map(Value::String)];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn unknown_event() -> impl Strategy<Value = UnknownEvent> {
    let key = prop_oneof![
        text(),
        prop::sample::select(vec!["Date", "BotToken", "Name", "Data", "Text"]).prop_map(String::from)
    ];
    (14u64.., prop::collection::vec((key, json()), 0..8)).prop_map(|(code, pairs)| {
        // Keys are unique on the wire and `Type` is the code.
        let mut fields: Vec<(String, Value)> = Vec::new();
        for (key, value) in pairs {
            if key != "Type" && !fields.iter().any(|(existing, _)| *existing == key) {
                fields.push((key, value));
            }
        }
        UnknownEvent { code, fields }
    })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        message().prop_map(Event::BotMessage),
        message().prop_map(Event::UserMessage),
        conversation_event().prop_map(Event::ConversationError),
        catalog_change().prop_map(Event::IntentUpdated),
        catalog_change().prop_map(Event::IntentDeleted),
        catalog_change().prop_map(Event::EntityUpdated),
        catalog_change().prop_map(Event::EntityDeleted),
        missed_text().prop_map(Event::NlpMissed),
        conversation_event().prop_map(Event::NewUser),
        conversation_event().prop_map(Event::ReturningUser),
        conversation_event().prop_map(Event::TakeOver),
        conversation_event().prop_map(Event::HandOver),
        conversation_event().prop_map(Event::Fallback),
        conversation_event().prop_map(Event::WrongAnswer),
        unknown_event().prop_map(Event::Unknown),
    ]
}

/// The object serde_json itself would write: each present key in contract
/// order, its value written by `serde_json::to_string`; `Variables` holds the
/// event's variables that `included` selects (all of them for `None`), in the
/// list's order.
fn reference_encoding(event: &Event, included: Option<&IncludedVariables>) -> String {
    fn text(value: &str) -> Option<String> {
        Some(serde_json::to_string(value).unwrap())
    }
    fn optional(value: &Option<String>) -> Option<String> {
        value.as_deref().and_then(text)
    }
    fn date(value: Option<EventDate>) -> Option<String> {
        value.map(|date| format!("\"{date}\""))
    }
    let none = || None;
    let variables_json = |variables: &Variables| {
        let selected: Vec<(&str, &str)> = match included {
            None => variables.iter().collect(),
            Some(names) => names.iter().filter_map(|name| variables.get(name).map(|value| (name, value))).collect(),
        };
        (!selected.is_empty()).then(|| {
            let members: Vec<String> = selected
                .iter()
                .map(|(name, value)| {
                    format!("{}:{}", serde_json::to_string(name).unwrap(), serde_json::to_string(value).unwrap())
                })
                .collect();
            format!("{{{}}}", members.join(","))
        })
    };
    // Type, ItemType, ItemSubType, Data, Date, BotToken, AccountName, ConversationId, UserName, Channel, Text, Name,
    // Key, Variables
    let values: [Option<String>; 13] = match event {
        Event::BotMessage(message) | Event::UserMessage(message) => [
            optional(&message.item_type),
            optional(&message.item_sub_type),
            text(&message.data),
            date(Some(message.date)),
            text(&message.origin.bot_token),
            text(&message.origin.account_name),
            text(&message.conversation_id),
            optional(&message.user_name),
            text(&message.channel),
            none(),
            none(),
            none(),
            variables_json(&message.variables),
        ],
        Event::IntentUpdated(change)
        | Event::IntentDeleted(change)
        | Event::EntityUpdated(change)
        | Event::EntityDeleted(change) => [
            none(),
            none(),
            none(),
            date(change.date),
            text(&change.origin.bot_token),
            text(&change.origin.account_name),
            none(),
            none(),
            none(),
            none(),
            text(&change.name),
            text(&change.key),
            none(),
        ],
        Event::NlpMissed(missed) => [
            none(),
            none(),
            none(),
            date(missed.date),
            text(&missed.origin.bot_token),
            text(&missed.origin.account_name),
            optional(&missed.conversation_id),
            optional(&missed.user_name),
            optional(&missed.channel),
            text(&missed.text),
            none(),
            none(),
            missed.conversation_id.as_ref().and_then(|_| variables_json(&missed.variables)),
        ],
        Event::ConversationError(conversation)
        | Event::NewUser(conversation)
        | Event::ReturningUser(conversation)
        | Event::TakeOver(conversation)
        | Event::HandOver(conversation)
        | Event::Fallback(conversation)
        | Event::WrongAnswer(conversation) => [
            none(),
            none(),
            optional(&conversation.data),
            date(conversation.date),
            text(&conversation.origin.bot_token),
            text(&conversation.origin.account_name),
            text(&conversation.conversation_id),
            optional(&conversation.user_name),
            optional(&conversation.channel),
            none(),
            none(),
            none(),
            variables_json(&conversation.variables),
        ],
        Event::Unknown(unknown) => {
            let mut out = format!("{{\"Type\":{}", unknown.code);
            for (key, value) in &unknown.fields {
                out.push_str(&format!(
                    ",{}:{}",
                    serde_json::to_string(key).unwrap(),
                    serde_json::to_string(value).unwrap()
                ));
            }
            return out + "}";
        }
    };
    let keys = [
        "ItemType",
        "ItemSubType",
        "Data",
        "Date",
        "BotToken",
        "AccountName",
        "ConversationId",
        "UserName",
        "Channel",
        "Text",
        "Name",
        "Key",
        "Variables",
    ];
    let mut out = format!("{{\"Type\":{}", event.code());
    for (key, value) in keys.iter().zip(values) {
        if let Some(value) = value {
            out.push_str(&format!(",\"{key}\":{value}"));
        }
    }
    out + "}"
}

/// Issue 11: `2.0000000000000003e+60` came back as `2.0000000000000006e+60`
/// after a parse, an encode and a parse.
#[test]
fn numbers_in_unknown_events_round_trip_exactly() {
    for number in
        ["2.0000000000000003e+60", "0.1", "1.7976931348623157e308", "5e-324", "-123.456e-7", "9007199254740993"]
    {
        let body = format!(r#"[{{"Type":99,"Value":{number},"Nested":[{{"Deep":{number}}}]}}]"#);
        let first = wire::parse_push(body.as_bytes()).unwrap();
        let again = wire::parse_push(&wire::encode_push(&first)).unwrap();
        assert_eq!(again, first, "{number}");
        let Event::Unknown(unknown) = &again[0] else { panic!("{again:?}") };
        let expected: Value = serde_json::from_str(number).unwrap();
        assert_eq!(unknown.field("Value").and_then(Value::as_f64), expected.as_f64(), "{number}");
        let written = String::from_utf8(wire::encode_push(&again)).unwrap();
        let reread: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(reread[0]["Value"].to_string().parse::<f64>().ok(), number.parse::<f64>().ok(), "{number}");
    }
}

proptest! {
    #[test]
    fn encoding_equals_serde_json_field_by_field(event in event()) {
        let mut out = Vec::new();
        wire::encode_event(&event, &mut out);
        let encoded = String::from_utf8(out).unwrap();
        prop_assert_eq!(&encoded, &reference_encoding(&event, None));
        prop_assert!(serde_json::from_str::<Value>(&encoded).is_ok());
    }

    /// What a webhook sends: only its listed names, in its order, and no
    /// `Variables` at all when none of them has a value.
    #[test]
    fn webhooks_send_the_variables_they_list(event in event(), included in included_variables()) {
        let mut out = Vec::new();
        wire::encode_event_including(&event, &included, &mut out);
        let encoded = String::from_utf8(out).unwrap();
        prop_assert_eq!(&encoded, &reference_encoding(&event, Some(&included)));
        // A receiver reads back exactly the selected variables, in order.
        let parsed = wire::parse_event(encoded.as_bytes()).unwrap();
        let expected: Variables = included
            .iter()
            .filter_map(|name| event.variables().get(name).map(|value| (name.to_owned(), value.to_owned())))
            .collect();
        prop_assert_eq!(parsed.variables(), &expected);
        if included.is_empty() {
            prop_assert!(!encoded.contains("\"Variables\""));
        }
    }

    #[test]
    fn pushes_round_trip(events in prop::collection::vec(event(), 0..6)) {
        let body = wire::encode_push(&events);
        prop_assert_eq!(wire::parse_push(&body).unwrap(), events);
    }

    #[test]
    fn single_events_round_trip(event in event()) {
        let mut out = Vec::new();
        wire::encode_event(&event, &mut out);
        prop_assert_eq!(wire::parse_event(&out).unwrap(), event);
    }

    #[test]
    fn encoded_output_is_valid_json_escaped_like_serde_json(message in message()) {
        let event = Event::UserMessage(message.clone());
        let mut out = Vec::new();
        wire::encode_event(&event, &mut out);
        let value: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(value["Data"].as_str(), Some(message.data.as_str()));
        let text = String::from_utf8(out).unwrap();
        let data = format!("\"Data\":{}", serde_json::to_string(&message.data).unwrap());
        prop_assert!(text.contains(&data), "{} does not contain {}", text, data);
        let date = format!("\"Date\":\"{}\"", message.date);
        prop_assert!(text.contains(&date));
    }

    #[test]
    fn dates_write_and_read_back(date in date()) {
        let text = date.to_string();
        prop_assert_eq!(EventDate::parse(&text), Ok(date));
        prop_assert!(!text.contains('Z'));
    }

    /// Issue 11's poison event: a date the encoder wrote but the parser
    /// rejected made a receiver built with this crate refuse every push.
    #[test]
    fn whatever_enqueue_accepts_the_crates_receiver_accepts(event in event(), instant in any_instant()) {
        let writable = (0..=9999).contains(&instant.naive_local().year()) && instant.offset().local_minus_utc() % 60 == 0;
        let made = EventDate::new(instant);
        prop_assert_eq!(made.is_ok(), writable, "{:?}", instant);
        let Ok(date) = made else { return Ok(()) };
        // Unknown kinds are what receivers keep; a bot engine does not send them.
        prop_assume!(event.kind().is_some());
        let event = stamped(event, date);

        const SECRET: &str = "property-test-secret";
        let clock = Arc::new(ManualClock::new());
        let (mut core, enqueuer) = DispatchCore::new(clock.clone(), CoreLimits::default());
        // The webhook includes every variable the event has, so it sends the event whole.
        let names: Vec<String> = event.variables().iter().map(|(name, _)| name.to_owned()).collect();
        core.configure(
            WebhookConfig::builder("bot", "Account", "https://hooks.example.com/bot", SECRET)
                .include_variables(names)
                .build()
                .unwrap(),
        );
        prop_assert_eq!(enqueuer.enqueue(event.clone()), EnqueueOutcome::Accepted);
        core.take_in_all();
        clock.advance(Duration::from_secs(30));
        let push = core.poll_push();
        prop_assert!(push.is_some(), "due within an interval");
        let Some(push) = push else { return Ok(()) };
        let receiver = WebhookReceiver::new(BotSecret::new(SECRET).unwrap());
        let received = receiver.receive(push.request.headers(), push.request.body()).map_err(|error| error.to_string());
        prop_assert_eq!(received, Ok(vec![event]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::parse_push(&body);
        let _ = wire::parse_event(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json()) {
        let body = serde_json::to_vec(&value).unwrap();
        let _ = wire::parse_push(&body);
        let _ = wire::parse_event(&body);
    }

    #[test]
    fn arbitrary_objects_with_a_type_never_panic(
        code in prop_oneof![0u64..16, any::<u64>()],
        pairs in prop::collection::vec((prop::sample::select(vec![
            "ItemType", "ItemSubType", "Data", "Date", "BotToken", "AccountName", "ConversationId", "UserName",
            "Channel", "Text", "Name", "Key", "Variables", "Other",
        ]), json()), 0..14),
    ) {
        let mut object = serde_json::Map::new();
        object.insert("Type".to_owned(), Value::from(code));
        for (key, value) in pairs {
            object.insert(key.to_owned(), value);
        }
        let body = serde_json::to_vec(&Value::Array(vec![Value::Object(object)])).unwrap();
        match wire::parse_push(&body) {
            Ok(events) => prop_assert_eq!(events.len(), 1),
            Err(error) => prop_assert_eq!(error.entry(), Some(0), "{}", error),
        }
    }

    #[test]
    fn damaged_pushes_never_panic(
        events in prop::collection::vec(event(), 1..4),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let body = wire::encode_push(&events);
        let _ = wire::parse_push(&body[..cut.index(body.len())]);
        let mut damaged = body.clone();
        let position = flip.index(damaged.len());
        damaged[position] = byte;
        let _ = wire::parse_push(&damaged);
    }
}
