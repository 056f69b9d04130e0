//! `parse`: a push of 100 realistic events parsed into typed events by the
//! crate, against `serde_json::from_slice::<Vec<serde_json::Value>>`.
//! Goal: the codec at least 2x faster.

mod support;

use std::hint::black_box;

use criterion::Throughput;
use support::Goal;

fn main() {
    let events = support::push_events();
    let body = eventhook::wire::encode_push(&events);
    assert_eq!(eventhook::wire::parse_push(&body).expect("the codec reads its own pushes"), events, "round trip");
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&body).expect("valid JSON").len(), events.len());
    println!("push: {} events, {} bytes", events.len(), body.len());

    let plan = support::callgrind::Plan { unit: "push", events_per_unit: events.len(), small: 1, large: 4 };
    let instructions = support::callgrind::count(
        "parse",
        plan,
        vec![
            support::callgrind::Routine::repeating("eventhook_parse_push", || {
                drop(black_box(eventhook::wire::parse_push(black_box(&body))))
            }),
            support::callgrind::Routine::repeating("serde_json_value", || {
                drop(black_box(serde_json::from_slice::<Vec<serde_json::Value>>(black_box(&body))))
            }),
        ],
    );

    let mut criterion = support::criterion();
    {
        let mut group = criterion.benchmark_group("parse");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("eventhook_parse_push", |bencher| {
            bencher.iter(|| eventhook::wire::parse_push(black_box(&body)).expect("valid"))
        });
        group.bench_function("serde_json_value", |bencher| {
            bencher.iter(|| serde_json::from_slice::<Vec<serde_json::Value>>(black_box(&body)).expect("valid"))
        });
        group.finish();
    }
    criterion.final_summary();
    if !support::is_bench_run() {
        return; // `cargo test --benches`: criterion ran each routine once.
    }

    support::SpeedupCheck {
        name: "parse/100_events",
        what: "serde_json Value time / eventhook time",
        group: "parse",
        crate_id: "eventhook_parse_push",
        baseline_id: "serde_json_value",
        goal: Goal::AtLeast(2.0),
        instructions: &instructions,
    }
    .run(
        || drop(black_box(eventhook::wire::parse_push(black_box(&body)))),
        || drop(black_box(serde_json::from_slice::<Vec<serde_json::Value>>(black_box(&body)))),
    );
}
