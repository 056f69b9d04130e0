//! The wire codec against the contract's golden vectors (`tests/vectors/`,
//! copies of `shared/wire/*.json`), and one test per parse error.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhook::receiver::WebhookReceiver;
use eventhook::wire::{self, JsonType, ParseError, ParseOptions, DEFAULT_MAX_BODY_BYTES};
use eventhook::{
    BotSecret, CatalogChange, ChatContext, ConversationEvent, Event, EventDate, EventFactory, EventKind,
    IncludedVariables, ManualClock, Message, MissedText, Origin, UnknownEvent,
};
use serde_json::Value;

fn vector(name: &str) -> Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "vectors", name].iter().collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn date(text: &str) -> EventDate {
    EventDate::parse(text).unwrap()
}

fn seed_origin() -> Origin {
    Origin::new("...", "Matelab Srl")
}

/// The typed event each seed example describes, built by hand from the seed
/// page (and, for the newer entries, from the example's own description).
fn seed_event(name: &str) -> Event {
    let bot = seed_origin();
    match name {
        "chatbot message (seed example 1)" => Event::BotMessage(
            Message::new(
                bot,
                "...",
                "TelegramChannel",
                "Hey you, I'm your chatbot!",
                date("2019-07-10T15:47:58.580873+00:00"),
            )
            .item_type("Text")
            .user_name("conversation user name"),
        ),
        "user message (seed example 2)" => Event::UserMessage(
            Message::new(bot, "...", "TelegramChannel", "Hello there!", date("2019-07-10T15:47:58.5750058+00:00"))
                .user_name("conversation user name"),
        ),
        "intent update (seed example 3, Type added: the seed omits it)" => {
            Event::IntentUpdated(CatalogChange::new(bot, "Intent Name", "Intent Key"))
        }
        "NLP missed text (seed example 4, Type added: the seed omits it)" => {
            Event::NlpMissed(MissedText::new(bot, "Missed AI Text"))
        }
        "chatbot message with an item subtype" => Event::BotMessage(
            Message::new(bot, "...", "WebChannel", "Pick a plan", date("2019-07-10T15:47:58.5808731+02:00"))
                .item_type("Card")
                .item_sub_type("Carousel")
                .user_name("conversation user name"),
        ),
        // The bot engine hands over every value the conversation has; the
        // webhook's list decides what is sent.
        name if name.starts_with("user message with included variables") => {
            let chat = ChatContext::new("...", "TelegramChannel")
                .user_name("conversation user name")
                .variable("email", "ada@example.com")
                .variable("plan", "gold")
                .variable("other", "not listed");
            let clock = ManualClock::starting_at(date("2019-07-10T15:48:03.12+00:00").to_datetime().to_utc());
            let bot = EventFactory::new(bot.bot_token, bot.account_name).with_clock(Arc::new(clock));
            Event::UserMessage(bot.message(&chat, "Hello there!"))
        }
        _ => panic!("no typed event for seed example {name:?}"),
    }
}

/// The names an example's webhook includes (none when it says nothing).
fn webhook_variables(example: &Value) -> IncludedVariables {
    let names = example.get("webhook_variables").and_then(Value::as_array).cloned().unwrap_or_default();
    IncludedVariables::new(names.iter().map(|name| name.as_str().unwrap().to_owned())).unwrap()
}

/// The conversation's values an example states must be the ones its event carries.
fn check_conversation_variables(example: &Value, event: &Event) {
    let Some(stated) = example.get("conversation_variables").and_then(Value::as_object) else { return };
    let Event::UserMessage(message) = event else { panic!("{event:?}") };
    assert_eq!(message.variables.len(), stated.len());
    for (name, value) in stated {
        assert_eq!(message.variables.get(name), value.as_str(), "{name}");
    }
}

/// The event as a receiver reads it back: with the variables its webhook sent.
fn as_sent(event: &Event, included: &IncludedVariables) -> Event {
    let mut out = Vec::new();
    wire::encode_event_including(event, included, &mut out);
    wire::parse_event(&out).unwrap()
}

fn encode(event: &Event) -> String {
    let mut out = Vec::new();
    wire::encode_event(event, &mut out);
    String::from_utf8(out).unwrap()
}

fn encode_for(event: &Event, included: &IncludedVariables) -> String {
    let mut out = Vec::new();
    wire::encode_event_including(event, included, &mut out);
    String::from_utf8(out).unwrap()
}

/// The seed examples as one webhook sends them, and the list it includes.
fn seed_push() -> (Vec<Event>, IncludedVariables) {
    let examples = vector("seed-examples.json");
    let examples = examples.as_array().unwrap();
    let events = examples.iter().map(|example| seed_event(example["name"].as_str().unwrap())).collect();
    // One webhook sends them all: the list of the example that has one applies to each event.
    let included = examples.iter().map(webhook_variables).find(|names| !names.is_empty()).unwrap();
    (events, included)
}

#[test]
fn seed_examples_encode_to_their_canonical_form_and_parse_back() {
    let examples = vector("seed-examples.json");
    let examples = examples.as_array().unwrap();
    assert_eq!(examples.len(), 6);
    for example in examples {
        let name = example["name"].as_str().unwrap();
        let canonical = example["canonical"].as_str().unwrap();
        let included = webhook_variables(example);
        let event = seed_event(name);
        check_conversation_variables(example, &event);
        assert_eq!(encode_for(&event, &included), canonical, "{name}");
        let sent = as_sent(&event, &included);
        if included.is_empty() {
            assert_eq!(sent, event, "{name}: without included variables an event is sent as it is");
        }
        // Read back through the public functions, and written back alike.
        assert_eq!(wire::parse_event(canonical.as_bytes()).unwrap(), sent, "{name}");
        assert_eq!(wire::parse_push(canonical.as_bytes()).unwrap(), vec![sent.clone()], "{name}");
        assert_eq!(encode(&sent), canonical, "{name}");
    }
}

#[test]
fn the_variables_example_sends_the_listed_names_in_the_webhooks_order() {
    let examples = vector("seed-examples.json");
    let example = examples.as_array().unwrap().iter().find(|example| example.get("webhook_variables").is_some());
    let example = example.expect("an example with included variables");
    let sent = wire::parse_event(example["canonical"].as_str().unwrap().as_bytes()).unwrap();
    let Event::UserMessage(message) = sent else { panic!("{sent:?}") };
    let variables: Vec<(&str, &str)> = message.variables.iter().collect();
    assert_eq!(variables, [("plan", "gold"), ("email", "ada@example.com")]);
}

#[test]
fn seed_examples_as_one_push_round_trip() {
    let examples = vector("seed-examples.json");
    let canonicals: Vec<&str> =
        examples.as_array().unwrap().iter().map(|example| example["canonical"].as_str().unwrap()).collect();
    let (events, included) = seed_push();
    let body = wire::encode_push_including(&events, &included);
    assert_eq!(String::from_utf8(body.clone()).unwrap(), format!("[{}]", canonicals.join(",")));
    let sent: Vec<Event> = events.iter().map(|event| as_sent(event, &included)).collect();
    assert_eq!(wire::parse_push(&body).unwrap(), sent);
}

/// `push-example.json` is exactly the body the crate writes for the seed
/// examples in one call, and reads back as those events.
#[test]
fn push_example_is_one_whole_push_byte_for_byte() {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "vectors", "push-example.json"].iter().collect();
    let file = std::fs::read(&path).unwrap();
    let (events, included) = seed_push();
    assert_eq!(wire::encode_push_including(&events, &included), file);
    let sent: Vec<Event> = events.iter().map(|event| as_sent(event, &included)).collect();
    assert_eq!(wire::parse_push(&file).unwrap(), sent);
    // The receiver takes it as it is, as `curl --data-binary @push-example.json` sends it.
    let receiver = WebhookReceiver::new(BotSecret::new("S").unwrap());
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer S"));
    assert_eq!(receiver.receive(&headers, &file).unwrap(), sent);
}

/// `SubType`, the key an earlier contract named, is a key like any other the
/// crate does not know: ignored on known kinds, kept on unknown ones, never written.
#[test]
fn the_old_sub_type_key_is_an_unknown_key() {
    let body = br#"[{"Type":0,"ItemType":"Card","SubType":"Carousel","Data":"d","Date":"2019-07-10T15:47:58+00:00","BotToken":"b","AccountName":"a","ConversationId":"c","Channel":"Web"}]"#;
    let events = wire::parse_push(body).unwrap();
    let Event::BotMessage(message) = &events[0] else { panic!("{events:?}") };
    assert_eq!(message.item_type.as_deref(), Some("Card"));
    assert_eq!(message.item_sub_type, None);
    assert!(!String::from_utf8(wire::encode_push(&events)).unwrap().contains("SubType"));

    let unknown = wire::parse_push(br#"[{"Type":14,"SubType":"Carousel"}]"#).unwrap();
    let Event::Unknown(unknown) = &unknown[0] else { panic!("{unknown:?}") };
    assert_eq!(unknown.field("SubType"), Some(&Value::from("Carousel")));

    let with_subtype = Event::BotMessage(
        Message::new(seed_origin(), "c", "Web", "d", date("2019-07-10T15:47:58+00:00")).item_sub_type("Carousel"),
    );
    let written = String::from_utf8(wire::encode_push(&[with_subtype])).unwrap();
    assert!(written.starts_with(r#"[{"Type":0,"ItemSubType":"Carousel","Data":"d""#), "{written}");
}

/// `Variables` that are not an object of strings, or that name a variable
/// twice, are errors naming the entry and the variable.
#[test]
fn invalid_variables_name_the_entry_and_the_variable() {
    let entry = |variables: &str| {
        format!(
            r#"[{{"Type":8,"BotToken":"b","AccountName":"a","ConversationId":"c"}},{{"Type":8,"BotToken":"b","AccountName":"a","ConversationId":"c","Variables":{variables}}}]"#
        )
    };
    for (variables, expected) in [
        (
            r#"{"plan":"gold","age":42}"#,
            r#"entry 1: key "Variables": variable "age": expected a string, found a number"#,
        ),
        (r#"{"plan":null}"#, r#"entry 1: key "Variables": variable "plan": expected a string, found null"#),
        (r#"{"tags":["a"]}"#, r#"entry 1: key "Variables": variable "tags": expected a string, found an array"#),
        (r#"{"plan":"gold","plan":"silver"}"#, r#"entry 1: key "Variables": duplicate variable "plan""#),
        (r#"["plan"]"#, r#"entry 1: key "Variables": expected an object, found an array"#),
        (r#""plan=gold""#, r#"entry 1: key "Variables": expected an object, found a string"#),
    ] {
        let error = wire::parse_push(entry(variables).as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), expected, "{variables}");
        assert_eq!((error.entry(), error.key()), (Some(1), Some("Variables")), "{variables}");
    }
    let error = wire::parse_push(entry(r#"{"a":"1","b":true}"#).as_bytes()).unwrap_err();
    assert_eq!(error, ParseError::InvalidVariable { entry: Some(1), name: "b".to_owned(), found: JsonType::Boolean });
    // `null` and `{}` mean none; kinds outside a conversation ignore the key.
    for variables in ["null", "{}"] {
        let events = wire::parse_push(entry(variables).as_bytes()).unwrap();
        let Event::NewUser(new_user) = &events[1] else { panic!("{events:?}") };
        assert!(new_user.variables.is_empty());
    }
    let change = br#"[{"Type":3,"BotToken":"b","AccountName":"a","Name":"n","Key":"k","Variables":[1]}]"#;
    assert!(wire::parse_push(change).is_ok());
    let miss = br#"[{"Type":7,"BotToken":"b","AccountName":"a","Text":"t","Variables":{"a":"1"}}]"#;
    let events = wire::parse_push(miss).unwrap();
    let Event::NlpMissed(missed) = &events[0] else { panic!("{events:?}") };
    assert!(missed.variables.is_empty(), "a miss outside a conversation carries no variables");
    let twice = br#"[{"Type":8,"BotToken":"b","AccountName":"a","ConversationId":"c","Variables":{},"Variables":{}}]"#;
    assert_eq!(
        wire::parse_push(twice).unwrap_err(),
        ParseError::DuplicateKey { entry: Some(0), key: "Variables".to_owned() }
    );
}

/// A receiver keeps the variables in the order sent, whatever it is, with escapes.
#[test]
fn variables_are_read_in_order_with_escapes() {
    let body = br#"{"Type":1,"Data":"d","Date":"2019-07-10T15:47:58+00:00","BotToken":"b","AccountName":"a","ConversationId":"c","Channel":"Web","Variables":{"zeta":"1","alpha":"say \"hi\"\n","caf\u00e9":"\ud83d\ude00"}}"#;
    let event = wire::parse_event(body).unwrap();
    let Event::UserMessage(message) = &event else { panic!("{event:?}") };
    let variables: Vec<(&str, &str)> = message.variables.iter().collect();
    assert_eq!(variables, [("zeta", "1"), ("alpha", "say \"hi\"\n"), ("café", "😀")]);
    let written = encode(&event);
    assert!(written.ends_with(r#""Variables":{"zeta":"1","alpha":"say \"hi\"\n","café":"😀"}}"#), "{written}");
}

#[test]
fn event_types_match_the_kinds() {
    let types = vector("event-types.json");
    let types = types.as_array().unwrap();
    let codes: BTreeSet<u64> = types.iter().map(|entry| entry["code"].as_u64().unwrap()).collect();
    let kind_codes: BTreeSet<u64> = EventKind::ALL.iter().map(|kind| u64::from(kind.code())).collect();
    assert_eq!(codes, kind_codes);
    for entry in types {
        let code = entry["code"].as_u64().unwrap();
        let seed = entry["seed"].as_str().unwrap().to_lowercase();
        let kind = EventKind::from_code(code).unwrap();
        // The descriptions are paraphrases; their opening words must agree.
        let opening: String =
            kind.description().to_lowercase().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        assert!(seed.starts_with(&opening), "code {code}: {seed:?} vs {:?}", kind.description());
    }
}

#[test]
fn every_kind_round_trips_through_the_wire() {
    let origin = Origin::new("bot", "Account");
    let when = date("2019-07-10T17:47:58.25+02:00");
    let conversation = ConversationEvent::new(origin.clone(), "conversation").date(when).channel("Web");
    let change = CatalogChange::new(origin.clone(), "Name", "key").date(when);
    let message = Message::new(origin.clone(), "conversation", "Web", "hi", when).item_sub_type("Quick");
    let events: Vec<Event> = EventKind::ALL
        .iter()
        .map(|kind| match kind {
            EventKind::BotMessage => Event::BotMessage(message.clone()),
            EventKind::UserMessage => Event::UserMessage(message.clone()),
            EventKind::ConversationError => Event::ConversationError(conversation.clone().data("boom")),
            EventKind::IntentUpdated => Event::IntentUpdated(change.clone()),
            EventKind::IntentDeleted => Event::IntentDeleted(change.clone()),
            EventKind::EntityUpdated => Event::EntityUpdated(change.clone()),
            EventKind::EntityDeleted => Event::EntityDeleted(change.clone()),
            EventKind::NlpMissed => Event::NlpMissed(MissedText::new(origin.clone(), "asdf").date(when)),
            EventKind::NewUser => Event::NewUser(conversation.clone()),
            EventKind::ReturningUser => Event::ReturningUser(conversation.clone().user_name("Ada")),
            EventKind::TakeOver => Event::TakeOver(conversation.clone()),
            EventKind::HandOver => Event::HandOver(conversation.clone()),
            EventKind::Fallback => Event::Fallback(conversation.clone()),
            EventKind::WrongAnswer => Event::WrongAnswer(conversation.clone()),
        })
        .collect();
    for (event, kind) in events.iter().zip(EventKind::ALL) {
        assert_eq!(event.kind(), Some(kind));
        assert!(encode(event).starts_with(&format!("{{\"Type\":{},", kind.code())));
    }
    assert_eq!(wire::parse_push(&wire::encode_push(&events)).unwrap(), events);
}

#[test]
fn dates_round_trip_to_their_canonical_form() {
    let dates = vector("dates.json");
    for pair in dates["canonical_round_trip"].as_array().unwrap() {
        let (read, written) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let parsed = EventDate::parse(read).unwrap_or_else(|error| panic!("{read}: {error}"));
        assert_eq!(parsed.to_string(), written, "{read}");
        // And inside an event, through the wire both ways.
        let body = format!(r#"[{{"Type":3,"Date":"{read}","BotToken":"b","AccountName":"a","Name":"n","Key":"k"}}]"#);
        let events = wire::parse_push(body.as_bytes()).unwrap();
        assert_eq!(events[0].date(), Some(parsed));
        assert!(encode(&events[0]).contains(&format!(r#""Date":"{written}""#)));
    }
}

#[test]
fn rejected_dates_fail_alone_and_inside_an_event() {
    let dates = vector("dates.json");
    for text in dates["rejected"].as_array().unwrap() {
        let text = text.as_str().unwrap();
        assert!(EventDate::parse(text).is_err(), "{text:?} was accepted");
        let entry = serde_json::json!({"Type": 7, "Date": text, "BotToken": "b", "AccountName": "a", "Text": "t"});
        let body = serde_json::to_vec(&vec![entry.clone(), entry]).unwrap();
        let error = wire::parse_push(&body).unwrap_err();
        assert_eq!(error, ParseError::InvalidDate { entry: Some(0), key: "Date", value: text.to_owned() });
        assert_eq!((error.entry(), error.key()), (Some(0), Some("Date")));
    }
}

#[test]
fn invalid_date_message_names_entry_key_and_value() {
    let body = br#"[{"Type":13,"BotToken":"b","AccountName":"a","ConversationId":"c"},
        {"Type":13,"BotToken":"b","AccountName":"a","ConversationId":"c"},
        {"Type":13,"BotToken":"b","AccountName":"a","ConversationId":"c"},
        {"Type":13,"Date":"2019-07-10","BotToken":"b","AccountName":"a","ConversationId":"c"}]"#;
    let error = wire::parse_push(body).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"entry 3: key "Date": invalid date "2019-07-10": not an RFC 3339 date-time with an offset"#
    );
}

// One test per error kind.

#[test]
fn body_too_large_is_rejected_before_parsing() {
    let body = vec![b' '; 2 * 1024 * 1024];
    let started = Instant::now();
    let error = wire::parse_push(&body).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50), "took {:?}", started.elapsed());
    assert_eq!(error, ParseError::BodyTooLarge { size: body.len(), limit: DEFAULT_MAX_BODY_BYTES });
    assert_eq!((error.entry(), error.key()), (None, None));

    // Invalid content past the limit is not even looked at.
    let options = ParseOptions::new().max_body_bytes(10);
    assert_eq!(
        wire::parse_push_with(b"\xff\xff not json at all", &options),
        Err(ParseError::BodyTooLarge { size: 18, limit: 10 })
    );
    assert_eq!(wire::parse_push_with(b"[]", &options), Ok(vec![]));
}

#[test]
fn invalid_utf8_is_reported() {
    assert_eq!(wire::parse_push(b"[{\"Type\":1,\"Data\":\"\xff\"}]"), Err(ParseError::InvalidUtf8));
}

#[test]
fn invalid_json_gives_line_and_column() {
    for body in [&b""[..], b"[", b"[{]", b"[{\"Type\":1,}]", b"[] []", b"[]x", b"nul"] {
        match wire::parse_push(body) {
            Err(ParseError::InvalidJson { line, message, .. }) => {
                assert_eq!(line, 1, "{body:?}");
                assert!(!message.is_empty() && !message.contains(" at line "), "{message}");
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    // Trailing data after a valid push.
    let body = br#"{"Type":8,"BotToken":"b","AccountName":"a","ConversationId":"c"} ,"#;
    assert!(matches!(wire::parse_push(body), Err(ParseError::InvalidJson { line: 1, .. })));
    match wire::parse_push(b"[\n  {\"Type\": 1,\n   \"Data\": tru }\n]") {
        Err(error @ ParseError::InvalidJson { line: 3, column: 15, .. }) => {
            assert!(error.to_string().starts_with("invalid JSON at line 3, column 15: expected ident"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 100_000;
    let mut body = String::from(r#"[{"Type":14,"Deep":"#);
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push_str("}]");
    assert!(matches!(wire::parse_push(body.as_bytes()), Err(ParseError::InvalidJson { .. })));
    let body = "[".repeat(depth);
    assert!(matches!(wire::parse_push(body.as_bytes()), Err(ParseError::EntryNotObject { entry: Some(0) })));
}

#[test]
fn top_level_scalar_is_not_an_array() {
    for body in ["1", "\"text\"", "null", "true", "-1.5"] {
        assert_eq!(wire::parse_push(body.as_bytes()), Err(ParseError::NotAnArray), "{body}");
    }
}

#[test]
fn entry_that_is_not_an_object_is_named() {
    let body = br#"[{"Type":8,"BotToken":"b","AccountName":"a","ConversationId":"c"}, [1], 2]"#;
    let error = wire::parse_push(body).unwrap_err();
    assert_eq!(error, ParseError::EntryNotObject { entry: Some(1) });
    assert_eq!(error.entry(), Some(1));
    assert_eq!(error.to_string(), "entry 1: not a JSON object");
    assert_eq!(wire::parse_event(b"\"x\""), Err(ParseError::EntryNotObject { entry: None }));
}

#[test]
fn missing_type_is_named() {
    let body = br#"[{"BotToken":"b","AccountName":"a","Text":"t"}]"#;
    let error = wire::parse_push(body).unwrap_err();
    assert_eq!(error, ParseError::MissingType { entry: Some(0) });
    assert_eq!(error.key(), Some("Type"));
    assert_eq!(wire::parse_push(b"{}"), Err(ParseError::MissingType { entry: None }));
}

#[test]
fn type_that_is_not_a_non_negative_integer_is_invalid() {
    for (value, found) in [
        ("-1", "-1"),
        ("1.5", "1.5"),
        ("1.0", "1.0"),
        ("\"1\"", "\"1\""),
        ("null", "null"),
        ("true", "true"),
        ("[1]", "[1]"),
        ("18446744073709551616", "1.8446744073709552e+19"),
    ] {
        let body =
            format!(r#"[{{"Type":7,"BotToken":"b","AccountName":"a","Text":"t"}},{{"Text":"t","Type":{value}}}]"#);
        let error = wire::parse_push(body.as_bytes()).unwrap_err();
        assert_eq!(error, ParseError::InvalidType { entry: Some(1), found: found.to_owned() }, "{value}");
        assert_eq!(error.key(), Some("Type"));
    }
    let error = wire::parse_push(br#"[{"Type":-1}]"#).unwrap_err();
    assert_eq!(error.to_string(), r#"entry 0: key "Type": expected a non-negative integer, found -1"#);
}

#[test]
fn missing_required_key_is_named() {
    let cases: [(&str, &str); 5] = [
        (
            r#"{"Type":0,"Date":"2019-07-10T15:47:58+00:00","BotToken":"b","AccountName":"a","ConversationId":"c","Channel":"w"}"#,
            "Data",
        ),
        (r#"{"Type":1,"Data":"d","BotToken":"b","AccountName":"a","ConversationId":"c","Channel":"w"}"#, "Date"),
        (r#"{"Type":4,"BotToken":"b","AccountName":"a","Name":"n"}"#, "Key"),
        (r#"{"Type":7,"AccountName":"a","Text":"t"}"#, "BotToken"),
        (r#"{"Type":11,"BotToken":"b","AccountName":"a"}"#, "ConversationId"),
    ];
    for (object, key) in cases {
        let body = format!("[{object}]");
        let error = wire::parse_push(body.as_bytes()).unwrap_err();
        assert_eq!(error, ParseError::MissingKey { entry: Some(0), key }, "{object}");
        assert_eq!((error.entry(), error.key()), (Some(0), Some(key)));
    }
}

#[test]
fn wrong_json_type_is_named() {
    let body = br#"[{"Type":7,"BotToken":"b","AccountName":"a","Text":"t","Channel":5}]"#;
    let error = wire::parse_push(body).unwrap_err();
    assert_eq!(
        error,
        ParseError::WrongJsonType {
            entry: Some(0),
            key: "Channel",
            expected: JsonType::String,
            found: JsonType::Number
        }
    );
    assert_eq!(error.to_string(), r#"entry 0: key "Channel": expected a string, found a number"#);
    // `null` stands for an absent optional key, but not for a required one.
    let body = br#"[{"Type":7,"BotToken":"b","AccountName":"a","Text":null}]"#;
    let error = wire::parse_push(body).unwrap_err();
    assert_eq!(
        error,
        ParseError::WrongJsonType { entry: Some(0), key: "Text", expected: JsonType::String, found: JsonType::Null }
    );
    let body = br#"[{"Type":3,"Date":{"at":1},"BotToken":"b","AccountName":"a","Name":"n","Key":"k"}]"#;
    assert_eq!(wire::parse_push(body).unwrap_err().key(), Some("Date"));
}

#[test]
fn duplicate_keys_are_errors() {
    for (object, key) in [
        (r#"{"Type":7,"Type":7,"BotToken":"b","AccountName":"a","Text":"t"}"#, "Type"),
        (r#"{"Type":7,"BotToken":"b","AccountName":"a","Text":"t","Text":"u"}"#, "Text"),
        (r#"{"Type":7,"BotToken":"b","AccountName":"a","Text":"t","X":1,"X":2}"#, "X"),
        (r#"{"X":1,"X":2,"Type":20}"#, "X"),
        (r#"{"Type":7,"BotToken":"b","AccountName":"a","Text":"t","Name":null,"Name":null}"#, "Name"),
    ] {
        let error = wire::parse_push(format!("[{object}]").as_bytes()).unwrap_err();
        assert_eq!(error, ParseError::DuplicateKey { entry: Some(0), key: key.to_owned() }, "{object}");
        assert_eq!(error.key(), Some(key));
    }
}

#[test]
fn a_single_object_is_a_push_of_one() {
    let body = br#"{"Type":9,"BotToken":"b","AccountName":"a","ConversationId":"c"}"#;
    let events = wire::parse_push(body).unwrap();
    assert_eq!(events, vec![Event::ReturningUser(ConversationEvent::new(Origin::new("b", "a"), "c"))]);
    assert_eq!(wire::parse_event(body).unwrap(), events[0]);
}

#[test]
fn an_empty_array_is_an_empty_push() {
    assert_eq!(wire::parse_push(b"[]").unwrap(), vec![]);
    assert_eq!(wire::parse_push(b" \n[ ]\t").unwrap(), vec![]);
    assert_eq!(wire::encode_push(&[]), b"[]");
}

#[test]
fn tolerant_reader_ignores_extra_and_foreign_keys_and_nulls() {
    let body = br#"[{"Type":1,"Name":5,"ItemType":null,"Data":"d","Date":"2019-07-10T15:47:58Z","BotToken":"b",
        "AccountName":"a","ConversationId":"c","Channel":"w","Future":{"nested":[1,2,{"x":null}]},"type":"lower"}]"#;
    let events = wire::parse_push(body).unwrap();
    let expected = Message::new(Origin::new("b", "a"), "c", "w", "d", date("2019-07-10T15:47:58+00:00"));
    assert_eq!(events, vec![Event::UserMessage(expected)]);
}

#[test]
fn type_may_come_last_and_escaped_keys_match() {
    let body = br#"[{"Text":"t\u00e9","Future":1,"BotToken":"b","Account\u004eame":"a","Type":7}]"#;
    let events = wire::parse_push(body).unwrap();
    assert_eq!(events, vec![Event::NlpMissed(MissedText::new(Origin::new("b", "a"), "té"))]);
}

#[test]
fn unknown_type_is_kept_with_every_field_and_re_encodes_identically() {
    let canonical = r#"{"Type":14,"Date":"not checked","Score":1.5,"BotToken":"b","Nested":{"a":[1,null,true]},"Name":7,"Extra":null}"#;
    let body = format!(r#"[{{"Type":7,"BotToken":"b","AccountName":"a","Text":"t"}},{canonical}]"#);
    let events = wire::parse_push(body.as_bytes()).unwrap();
    assert_eq!(events.len(), 2);
    let Event::Unknown(unknown) = &events[1] else { panic!("{:?}", events[1]) };
    assert_eq!(unknown.code, 14);
    let keys: Vec<&str> = unknown.fields.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["Date", "Score", "BotToken", "Nested", "Name", "Extra"]);
    assert_eq!(unknown.field("Name"), Some(&Value::from(7)));
    assert_eq!(events[1].bot_token(), Some("b"));
    assert_eq!(events[1].kind(), None);
    assert_eq!(encode(&events[1]), canonical);

    // With `Type` last, the fields keep their order and `Type` moves first.
    let moved = r#"{"Z":1,"A":"x","Type":99}"#;
    let event = wire::parse_event(moved.as_bytes()).unwrap();
    assert_eq!(
        event,
        Event::Unknown(UnknownEvent {
            code: 99,
            fields: vec![("Z".to_owned(), Value::from(1)), ("A".to_owned(), Value::from("x"))]
        })
    );
    assert_eq!(encode(&event), r#"{"Type":99,"Z":1,"A":"x"}"#);
}

#[test]
fn many_extra_keys_do_not_make_parsing_quadratic() {
    // About 1 MiB of distinct ignored keys: with a quadratic duplicate check
    // this would take minutes.
    let mut body = String::from(r#"[{"Type":7,"BotToken":"b","AccountName":"a","Text":"t""#);
    let mut index = 0;
    while body.len() < DEFAULT_MAX_BODY_BYTES - 100 {
        body.push_str(&format!(",\"k{index}\":0"));
        index += 1;
    }
    body.push_str("}]");
    let started = Instant::now();
    assert_eq!(wire::parse_push(body.as_bytes()).unwrap().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "{index} keys took {:?}", started.elapsed());
    body.insert_str(body.len() - 2, ",\"k0\":1");
    assert_eq!(wire::parse_push(body.as_bytes()).unwrap_err().key(), Some("k0"));
}
