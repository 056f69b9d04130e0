//! `schedule`: finding and building the due pushes when 100 webhooks are
//! due, among 1,000 and among 100,000 configured idle webhooks. Goal: the
//! 100,000 case at most 1.5x the 1,000 case.
//!
//! The sans-IO core runs on a `ManualClock`. Configuring the webhooks is
//! setup. Each iteration, untimed: one event is enqueued to each of 100
//! webhooks picked at random among the configured ones, the intake is
//! drained (`poll_push` with the clock not advanced: events encoded and the
//! webhooks scheduled) and the clock moves 61 s, past every due time.
//! Timed: `poll_push` until `None`, then `on_push_result(200)` for each push
//! (the concurrent-call cap is raised from 64 to 1,000 so that all 100 come
//! out of one loop).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Throughput};
use eventhook::dispatch::{CoreLimits, DispatchCore, Enqueuer, Push};
use eventhook::ManualClock;
use support::{EventGen, Goal};

const DUE: usize = 100;

struct Scene {
    webhooks: usize,
    clock: Arc<ManualClock>,
    core: DispatchCore,
    enqueuer: Enqueuer,
    events: EventGen,
    seq: u64,
    pushes: Vec<Push>,
}

impl Scene {
    fn new(webhooks: usize) -> Scene {
        let clock = Arc::new(ManualClock::new());
        // A call cap above 100, so one `poll_push` loop finds every due webhook.
        let limits = CoreLimits { max_concurrent_pushes: 1_000, ..CoreLimits::default() };
        let (mut core, enqueuer) = DispatchCore::new(clock.clone(), limits);
        for bot in 0..webhooks {
            core.configure(support::webhook_config(bot, support::EXAMPLE_BASE_URL).build().expect("valid config"));
        }
        assert!(core.poll_push().is_none(), "idle webhooks push nothing");
        Scene {
            webhooks,
            clock,
            core,
            enqueuer,
            events: EventGen::new(0x5c4e),
            seq: 0,
            pushes: Vec::with_capacity(DUE),
        }
    }

    /// One iteration; returns the time of finding, building and settling the due pushes.
    fn iteration(&mut self) -> Duration {
        // Setup: 100 distinct webhooks get one event each.
        let mut bots: Vec<usize> = Vec::with_capacity(DUE);
        while bots.len() < DUE {
            let bot = self.events.rng().below(self.webhooks as u64) as usize;
            if !bots.contains(&bot) {
                bots.push(bot);
            }
        }
        for bot in bots {
            let event = self.events.event(bot, self.seq);
            self.seq += 1;
            assert!(self.enqueuer.enqueue(event).is_accepted());
        }
        self.core.take_in_all();
        let early: Vec<Push> = std::iter::from_fn(|| self.core.poll_push()).collect();
        for push in &early {
            self.core.on_push_result(&push.id, Ok(http::StatusCode::OK));
        }
        self.clock.advance(Duration::from_secs(61));

        // Timed: find and build the due pushes, then settle them.
        let start = Instant::now();
        while let Some(push) = self.core.poll_push() {
            self.pushes.push(push);
        }
        for push in &self.pushes {
            self.core.on_push_result(&push.id, Ok(http::StatusCode::OK));
        }
        let elapsed = start.elapsed();

        assert_eq!(self.pushes.len() + early.len(), DUE, "every webhook with an event was due");
        self.pushes.clear();
        while self.core.poll_notice().is_some() {}
        elapsed
    }
}

fn main() {
    let mut criterion = support::criterion();
    let mut small = Scene::new(1_000);
    let mut large = Scene::new(100_000);
    {
        let mut group = criterion.benchmark_group("schedule");
        group.throughput(Throughput::Elements(DUE as u64));
        for scene in [&mut small, &mut large] {
            let id = BenchmarkId::new("eventhook_100_due", format!("{}_idle", scene.webhooks));
            group
                .bench_function(id, |bencher| bencher.iter_custom(|iters| (0..iters).map(|_| scene.iteration()).sum()));
        }
        group.finish();
    }
    criterion.final_summary();
    if !support::is_bench_run() {
        return; // `cargo test --benches`: criterion ran each routine once.
    }

    let (large_time, small_time) = support::interleaved(20, 100, || large.iteration(), || small.iteration());
    let ratio = large_time.as_secs_f64() / small_time.as_secs_f64();
    let criterion_detail =
        support::criterion_ratio_detail("schedule", "eventhook_100_due/100000_idle", "eventhook_100_due/1000_idle");
    println!();
    support::report(
        "schedule/100_due",
        "100,000 idle time / 1,000 idle time",
        ratio,
        Goal::AtMost(1.5),
        &format!(
            "{:.1} µs vs {:.1} µs per 100 pushes{criterion_detail}",
            large_time.as_secs_f64() * 1e6,
            small_time.as_secs_f64() * 1e6
        ),
    );
}
