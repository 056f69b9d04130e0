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

use criterion::Throughput;
use eventhook::{Event, SigningSecret};
use support::serde_wire::serde_encode;
use support::Goal;

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

    let plan = support::callgrind::Plan { unit: "push", events_per_unit: events.len(), small: 1, large: 4 };
    let instructions = support::callgrind::count(
        "encode",
        plan,
        vec![
            support::callgrind::Routine::repeating("eventhook_encode_push", || {
                drop(black_box(eventhook::wire::encode_push(black_box(&events))))
            }),
            support::callgrind::Routine::repeating("serde_derive_chrono", || {
                drop(black_box(serde_encode(black_box(&events))))
            }),
            support::callgrind::Routine::repeating("eventhook_sign_push", || drop(black_box(sign(black_box(&body))))),
            support::callgrind::Routine::repeating("sha256_of_body", || {
                black_box(sha256(black_box(&body)));
            }),
        ],
    );

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
        instructions: &instructions,
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
        instructions: &instructions,
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
        instructions: &instructions,
    }
    .run(
        || drop(black_box(sign(black_box(&body)))),
        || {
            black_box(sha256(black_box(&body)));
        },
    );
}
