//! `encode`: the body of a push of 100 realistic events, by the crate's
//! codec and by the obvious alternative, `#[derive(Serialize)]` structs with
//! `skip_serializing_if` and dates written by chrono's `to_rfc3339_opts`.
//! Goal: the codec at least 1.5x faster.
//!
//! Beside it, the cost of signing that body (Standard Webhooks, one secret:
//! HMAC-SHA256 over id, timestamp and body, then base64), which a signed
//! webhook adds to each attempt: reported as a multiple of encoding the same
//! push (no goal), and checked against its floor, a bare SHA-256 of the
//! body. Goal: at most 1.2x that floor (HMAC hashes two more blocks; the
//! rest, base64 and the header text, must cost next to nothing).

mod support;

use std::hint::black_box;

use chrono::SecondsFormat;
use criterion::Throughput;
use eventhook::{Event, EventDate, SigningSecret};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use support::Goal;

/// One event as the obvious serde model has it: every wire field, optional
/// ones skipped when absent, in the wire's order.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct WireEvent<'a> {
    r#type: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_sub_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    bot_token: &'a str,
    account_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

fn rfc3339(date: EventDate) -> String {
    date.to_datetime().to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn to_wire(event: &Event) -> WireEvent<'_> {
    let origin = event.origin().expect("known kinds only");
    let mut wire = WireEvent {
        r#type: event.code(),
        bot_token: &origin.bot_token,
        account_name: &origin.account_name,
        ..WireEvent::default()
    };
    match event {
        Event::BotMessage(message) | Event::UserMessage(message) => {
            wire.item_type = message.item_type.as_deref();
            wire.item_sub_type = message.item_sub_type.as_deref();
            wire.data = Some(&message.data);
            wire.date = Some(rfc3339(message.date));
            wire.conversation_id = Some(&message.conversation_id);
            wire.user_name = message.user_name.as_deref();
            wire.channel = Some(&message.channel);
        }
        Event::IntentUpdated(change)
        | Event::IntentDeleted(change)
        | Event::EntityUpdated(change)
        | Event::EntityDeleted(change) => {
            wire.date = change.date.map(rfc3339);
            wire.name = Some(&change.name);
            wire.key = Some(&change.key);
        }
        Event::NlpMissed(missed) => {
            wire.date = missed.date.map(rfc3339);
            wire.conversation_id = missed.conversation_id.as_deref();
            wire.user_name = missed.user_name.as_deref();
            wire.channel = missed.channel.as_deref();
            wire.text = Some(&missed.text);
        }
        Event::ConversationError(conversation)
        | Event::NewUser(conversation)
        | Event::ReturningUser(conversation)
        | Event::TakeOver(conversation)
        | Event::HandOver(conversation)
        | Event::Fallback(conversation)
        | Event::WrongAnswer(conversation) => {
            wire.data = conversation.data.as_deref();
            wire.date = conversation.date.map(rfc3339);
            wire.conversation_id = Some(&conversation.conversation_id);
            wire.user_name = conversation.user_name.as_deref();
            wire.channel = conversation.channel.as_deref();
        }
        Event::Unknown(_) => unreachable!("the bench builds known kinds only"),
    }
    wire
}

/// The events as a JSON array, without collecting the structs first.
struct AsWire<'a>(&'a [Event]);

impl Serialize for AsWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&to_wire(event))?;
        }
        seq.end()
    }
}

fn serde_encode(events: &[Event]) -> Vec<u8> {
    serde_json::to_vec(&AsWire(events)).expect("serializable")
}

/// Both bodies hold the same objects with the same keys (dates differ in digits only).
fn check_equivalent(events: &[Event]) {
    let ours: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&eventhook::wire::encode_push(events)).expect("the codec writes JSON");
    let theirs: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&serde_encode(events)).expect("serde writes JSON");
    assert_eq!(ours.len(), theirs.len());
    for (ours, theirs) in ours.iter().zip(&theirs) {
        let our_keys: Vec<&String> = ours.keys().collect();
        let their_keys: Vec<&String> = theirs.keys().collect();
        assert_eq!(our_keys, their_keys, "same fields");
        for key in our_keys {
            if key != "Date" {
                assert_eq!(ours[key], theirs[key], "same {key}");
            }
        }
    }
}

fn main() {
    let events = support::push_events();
    check_equivalent(&events);
    let body = eventhook::wire::encode_push(&events);
    let body_length = body.len();
    println!("push: {} events, {body_length} bytes", events.len());
    let secret = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("the spec's example secret");
    let sign = |body: &[u8]| secret.sign("msg_0123456789abcdef0123456789abcdef", 1_700_000_000, body);
    let sha256 = |body: &[u8]| <sha2::Sha256 as sha2::Digest>::digest(body);

    let mut criterion = support::criterion();
    {
        let mut group = criterion.benchmark_group("encode");
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function("eventhook_encode_push", |bencher| {
            bencher.iter(|| eventhook::wire::encode_push(black_box(&events)))
        });
        group.bench_function("serde_derive_chrono", |bencher| bencher.iter(|| serde_encode(black_box(&events))));
        group.bench_function("eventhook_sign_push", |bencher| bencher.iter(|| sign(black_box(&body))));
        group.bench_function("sha256_of_body", |bencher| bencher.iter(|| sha256(black_box(&body))));
        group.finish();
    }
    criterion.final_summary();
    if !support::is_bench_run() {
        return; // `cargo test --benches`: criterion ran each routine once.
    }

    support::SpeedupCheck {
        name: "encode/100_events",
        what: "serde time / eventhook time",
        group: "encode",
        crate_id: "eventhook_encode_push",
        baseline_id: "serde_derive_chrono",
        goal: Goal::AtLeast(1.5),
    }
    .run(
        || drop(black_box(eventhook::wire::encode_push(black_box(&events)))),
        || drop(black_box(serde_encode(black_box(&events)))),
    );

    support::SpeedupCheck {
        name: "sign/100_events",
        what: "signing time / encoding time",
        group: "encode",
        crate_id: "eventhook_sign_push",
        baseline_id: "eventhook_encode_push",
        goal: Goal::Reported,
    }
    .run(
        || drop(black_box(sign(black_box(&body)))),
        || drop(black_box(eventhook::wire::encode_push(black_box(&events)))),
    );
    support::SpeedupCheck {
        name: "sign/100_events_vs_sha256",
        what: "signing time / SHA-256 of the body",
        group: "encode",
        crate_id: "eventhook_sign_push",
        baseline_id: "sha256_of_body",
        goal: Goal::AtMost(1.2),
    }
    .run(
        || drop(black_box(sign(black_box(&body)))),
        || {
            black_box(sha256(black_box(&body)));
        },
    );
}
