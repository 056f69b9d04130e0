//! `enqueue`: the admission path of a dispatcher with 10,000 webhooks, from
//! 1 and 2 producer threads, against a bounded crossbeam channel's `send` of
//! the same events. Goal: at most 2x the channel's time per event.
//!
//! Two ways in are measured: `Enqueuer::enqueue`, which finds the bot's
//! webhook by the event's token on every call, and `BotSender::enqueue`,
//! which a bot engine keeps per bot (made once per bot before timing; each
//! event is paired with its bot's sender, as the engine has the bot at hand).
//!
//! One round sends the same 1,000 pre-built events of bots picked among the
//! 10,000, split evenly between the producers. Each producer clones its share
//! on its own thread before the timed part (an engine builds each event on
//! the thread that enqueues it, so the event is in that core's cache).
//! Producers are long-lived threads that start together on a barrier; a
//! round's time runs from the first producer's start to the last one's end.
//! Between rounds, untimed, the core drains its intake (`take_in_all`, then
//! `poll_push` with the clock not advanced: the events are encoded into the
//! webhooks' queues) and every 100 rounds it delivers everything (clock
//! advanced, every push answered 200), so no queue ever fills; the channel's
//! receiver drains it the same way.

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Throughput};
use eventhook::dispatch::{BotSender, CoreLimits, DispatchCore, EnqueueOutcome, Enqueuer};
use eventhook::{Event, ManualClock};
use support::{EventGen, Goal};

const WEBHOOKS: usize = 10_000;
/// Events per round (one criterion iteration).
const ROUND: usize = 1_000;
/// Rounds between two full deliveries of the core.
const DELIVER_EVERY: usize = 100;

/// A job for a producer: prepares its share (untimed, on its own thread, as
/// an engine builds each event on the thread that enqueues it) and returns
/// the timed part, which sends the share and returns how many were accepted.
type Job = Box<dyn FnOnce() -> Timed + Send>;
/// The timed part of a job.
type Timed = Box<dyn FnOnce() -> usize>;

/// Long-lived producer threads that run one job each per round, together.
struct Producers {
    jobs: Vec<mpsc::Sender<Job>>,
    done: mpsc::Receiver<(Instant, Instant, usize)>,
    threads: Vec<JoinHandle<()>>,
}

impl Producers {
    fn new(count: usize) -> Producers {
        let barrier = Arc::new(Barrier::new(count));
        let (done_sender, done) = mpsc::channel();
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..count {
            let (job_sender, job_receiver) = mpsc::channel::<Job>();
            let barrier = Arc::clone(&barrier);
            let done_sender = done_sender.clone();
            threads.push(std::thread::spawn(move || {
                while let Ok(job) = job_receiver.recv() {
                    let timed = job();
                    barrier.wait();
                    let start = Instant::now();
                    let accepted = timed();
                    let end = Instant::now();
                    if done_sender.send((start, end, accepted)).is_err() {
                        break;
                    }
                }
            }));
            jobs.push(job_sender);
        }
        Producers { jobs, done, threads }
    }

    fn count(&self) -> usize {
        self.jobs.len()
    }

    /// Runs one job per producer, together; returns the wall time and the events accepted.
    fn run(&self, jobs: Vec<Job>) -> (Duration, usize) {
        assert_eq!(jobs.len(), self.jobs.len());
        for (sender, job) in self.jobs.iter().zip(jobs) {
            sender.send(job).expect("producer alive");
        }
        let mut first_start: Option<Instant> = None;
        let mut last_end: Option<Instant> = None;
        let mut accepted = 0;
        for _ in 0..self.jobs.len() {
            let (start, end, count) = self.done.recv().expect("producer alive");
            first_start = Some(first_start.map_or(start, |first| first.min(start)));
            last_end = Some(last_end.map_or(end, |last| last.max(end)));
            accepted += count;
        }
        (last_end.unwrap() - first_start.unwrap(), accepted)
    }

    fn stop(self) {
        drop(self.jobs);
        for thread in self.threads {
            thread.join().expect("producer finished");
        }
    }
}

/// The index ranges of one round's events, split evenly between `producers`.
fn shares(events: usize, producers: usize) -> Vec<std::ops::Range<usize>> {
    let share = events.div_ceil(producers);
    (0..producers).map(|producer| producer * share..((producer + 1) * share).min(events)).collect()
}

/// The crate: a sans-IO core with 10,000 webhooks and its `Enqueuer`.
struct CrateSide {
    clock: Arc<ManualClock>,
    core: DispatchCore,
    enqueuer: Enqueuer,
    /// One sender per bot, as a bot engine keeps one in each bot's state.
    senders: Arc<Vec<BotSender>>,
    /// For each event of the round, the index of its bot's sender.
    sender_of: Arc<Vec<usize>>,
    rounds: usize,
}

impl CrateSide {
    fn new() -> CrateSide {
        let clock = Arc::new(ManualClock::new());
        let limits = CoreLimits { max_pending_events: 10_000_000, max_concurrent_pushes: 1_000_000 };
        let (mut core, enqueuer) = DispatchCore::new(clock.clone(), limits);
        for bot in 0..WEBHOOKS {
            core.configure(support::webhook_config(bot, support::EXAMPLE_BASE_URL).build().expect("valid config"));
        }
        let senders: Vec<BotSender> = (0..WEBHOOKS).map(|bot| enqueuer.bot_sender(&support::bot_token(bot))).collect();
        CrateSide { clock, core, enqueuer, senders: Arc::new(senders), sender_of: Arc::default(), rounds: 0 }
    }

    /// Pairs each event with its bot's sender, as the engine has the bot at hand.
    fn pair_senders(&mut self, events: &[Event]) {
        let index: std::collections::HashMap<&str, usize> =
            self.senders.iter().enumerate().map(|(at, sender)| (sender.bot_token(), at)).collect();
        self.sender_of = Arc::new(events.iter().map(|event| index[event.bot_token().expect("bot token")]).collect());
    }

    fn round(&mut self, events: &Arc<Vec<Event>>, producers: &Producers, through_senders: bool) -> Duration {
        let jobs: Vec<Job> = shares(events.len(), producers.count())
            .into_iter()
            .map(|range| {
                let events = Arc::clone(events);
                let sender_of = Arc::clone(&self.sender_of);
                let enqueuer = self.enqueuer.clone();
                let senders = Arc::clone(&self.senders);
                Box::new(move || {
                    let share = prepare_share(&events, &sender_of, &senders, range, through_senders);
                    Box::new(move || send_share(share, &enqueuer, &senders, through_senders)) as Timed
                }) as Job
            })
            .collect();
        let (time, accepted) = producers.run(jobs);
        assert_eq!(accepted, events.len(), "every event accepted");
        self.rounds += 1;
        self.settle(self.rounds.is_multiple_of(DELIVER_EVERY));
        time
    }

    /// The first `count` events sent by this thread, only the sends counted
    /// by callgrind (the share is prepared before, the intake drained after).
    fn counted_run(&mut self, events: &[Event], count: usize, through_senders: bool) {
        let mut share = Some(prepare_share(events, &self.sender_of, &self.senders, 0..count, through_senders));
        let mut accepted = 0;
        support::callgrind::counted(&mut || {
            if let Some(share) = share.take() {
                accepted = send_share(share, &self.enqueuer, &self.senders, through_senders);
            }
        });
        assert_eq!(accepted, count, "every event accepted");
        self.settle(false);
    }

    /// Drains the intake into the queues; when `deliver`, also delivers everything.
    fn settle(&mut self, deliver: bool) {
        if deliver {
            self.clock.advance(Duration::from_secs(61));
        }
        self.core.take_in_all();
        let pushes: Vec<_> = std::iter::from_fn(|| self.core.poll_push()).collect();
        for push in &pushes {
            self.core.on_push_result(&push.id, Ok(http::StatusCode::OK));
        }
        while self.core.poll_notice().is_some() {}
    }
}

/// The baseline: a bounded crossbeam channel that never fills.
struct ChannelSide {
    sender: crossbeam_channel::Sender<Event>,
    receiver: crossbeam_channel::Receiver<Event>,
}

impl ChannelSide {
    fn new() -> ChannelSide {
        let (sender, receiver) = crossbeam_channel::bounded(2 * ROUND);
        ChannelSide { sender, receiver }
    }

    fn round(&mut self, events: &Arc<Vec<Event>>, producers: &Producers) -> Duration {
        let jobs: Vec<Job> = shares(events.len(), producers.count())
            .into_iter()
            .map(|range| {
                let events = Arc::clone(events);
                let sender = self.sender.clone();
                Box::new(move || {
                    let share = events[range].to_vec();
                    Box::new(move || send_to_channel(share, &sender)) as Timed
                }) as Job
            })
            .collect();
        let (time, accepted) = producers.run(jobs);
        assert_eq!(accepted, events.len(), "every event sent");
        while self.receiver.try_recv().is_ok() {}
        time
    }

    /// Like [`CrateSide::counted_run`].
    fn counted_run(&mut self, events: &[Event], count: usize) {
        let mut share = Some(events[..count].to_vec());
        let mut sent = 0;
        support::callgrind::counted(&mut || {
            if let Some(share) = share.take() {
                sent = send_to_channel(share, &self.sender);
            }
        });
        assert_eq!(sent, count, "every event sent");
        while self.receiver.try_recv().is_ok() {}
    }
}

/// A producer's share of a round, each event with its bot's sender, cloned
/// on the producer's thread.
fn prepare_share(
    events: &[Event],
    sender_of: &[usize],
    senders: &[BotSender],
    range: std::ops::Range<usize>,
    through_senders: bool,
) -> Vec<(Event, usize)> {
    let share: Vec<(Event, usize)> =
        events[range.clone()].iter().cloned().zip(sender_of[range].iter().copied()).collect();
    if through_senders {
        // The engine has each bot's state at hand when it builds the bot's
        // event: its sender and the bot token it holds (not the dispatcher's data).
        for &(_, sender) in &share {
            std::hint::black_box(senders[sender].bot_token().as_bytes().first());
        }
    }
    share
}

/// The timed part of the crate's side: returns how many events were accepted.
fn send_share(share: Vec<(Event, usize)>, enqueuer: &Enqueuer, senders: &[BotSender], through_senders: bool) -> usize {
    share
        .into_iter()
        .map(|(event, sender)| if through_senders { senders[sender].enqueue(event) } else { enqueuer.enqueue(event) })
        .filter(EnqueueOutcome::is_accepted)
        .count()
}

/// The timed part of the baseline: returns how many events were sent.
fn send_to_channel(share: Vec<Event>, sender: &crossbeam_channel::Sender<Event>) -> usize {
    share.into_iter().map(|event| sender.send(event).is_ok()).filter(|&sent| sent).count()
}

/// Instructions per event of the three ways in, 1 producer: under valgrind
/// threads run one at a time, so 2 producers would count the same work.
fn count_instructions(
    crate_side: &mut CrateSide,
    channel_side: &mut ChannelSide,
    events: &[Event],
) -> support::callgrind::Counts {
    let crate_side = std::cell::RefCell::new(crate_side);
    let plan = support::callgrind::Plan { unit: "event", events_per_unit: 1, small: ROUND / 10, large: ROUND };
    let counts = support::callgrind::count(
        "enqueue",
        plan,
        vec![
            support::callgrind::Routine {
                id: "eventhook_10k_webhooks/1_producers",
                run: Box::new(|count| crate_side.borrow_mut().counted_run(events, count, false)),
            },
            support::callgrind::Routine {
                id: "eventhook_bot_senders_10k_webhooks/1_producers",
                run: Box::new(|count| crate_side.borrow_mut().counted_run(events, count, true)),
            },
            support::callgrind::Routine {
                id: "crossbeam_bounded_send/1_producers",
                run: Box::new(|count| channel_side.counted_run(events, count)),
            },
        ],
    );
    if matches!(counts, support::callgrind::Counts::Measured { .. }) {
        println!("(1 producer only: under valgrind threads run one at a time)");
    }
    counts
}

fn main() {
    let mut criterion = support::criterion();
    let events = Arc::new(EventGen::new(0xe9).events(ROUND, WEBHOOKS, 0));
    let mut crate_side = CrateSide::new();
    crate_side.pair_senders(&events);
    let mut channel_side = ChannelSide::new();
    let instructions = count_instructions(&mut crate_side, &mut channel_side, &events);
    let mut ratios = Vec::new();

    for threads in [1, 2] {
        let producers = Producers::new(threads);
        {
            let mut group = criterion.benchmark_group("enqueue");
            group.throughput(Throughput::Elements(ROUND as u64));
            group.bench_function(
                BenchmarkId::new("eventhook_10k_webhooks", format!("{threads}_producers")),
                |bencher| {
                    bencher.iter_custom(|iters| (0..iters).map(|_| crate_side.round(&events, &producers, false)).sum())
                },
            );
            group.bench_function(
                BenchmarkId::new("eventhook_bot_senders_10k_webhooks", format!("{threads}_producers")),
                |bencher| {
                    bencher.iter_custom(|iters| (0..iters).map(|_| crate_side.round(&events, &producers, true)).sum())
                },
            );
            group.bench_function(
                BenchmarkId::new("crossbeam_bounded_send", format!("{threads}_producers")),
                |bencher| {
                    bencher.iter_custom(|iters| (0..iters).map(|_| channel_side.round(&events, &producers)).sum())
                },
            );
            group.finish();
        }
        if support::is_bench_run() {
            // The same-run ratio: median rounds, from alternating blocks of 100 rounds.
            for (path, through_senders) in [("token", false), ("bot_sender", true)] {
                let (crate_time, channel_time) = support::interleaved(
                    20,
                    100,
                    || crate_side.round(&events, &producers, through_senders),
                    || channel_side.round(&events, &producers),
                );
                let elements = ROUND as u64;
                ratios.push((
                    path,
                    threads,
                    support::per_element(crate_time, elements),
                    support::per_element(channel_time, elements),
                ));
            }
        }
        producers.stop();
    }
    criterion.final_summary();
    if !support::is_bench_run() {
        return; // `cargo test --benches`: criterion ran each routine once.
    }

    println!();
    for (path, threads, crate_ns, channel_ns) in ratios {
        let ratio = crate_ns / channel_ns;
        let detail = format!("{crate_ns:.1} ns/event vs {channel_ns:.1} ns/event");
        let crate_id = match path {
            "token" => format!("eventhook_10k_webhooks/{threads}_producers"),
            _ => format!("eventhook_bot_senders_10k_webhooks/{threads}_producers"),
        };
        let baseline_id = format!("crossbeam_bounded_send/{threads}_producers");
        let criterion_detail = support::criterion_ratio_detail("enqueue", &crate_id, &baseline_id);
        let instructions = match threads {
            1 => instructions.detail(&crate_id, &baseline_id, false),
            _ => "; instructions: counted with 1 producer only".to_owned(),
        };
        support::report(
            &format!("enqueue/{path}/{threads}_producers"),
            "eventhook time / crossbeam time",
            ratio,
            Goal::AtMost(2.0),
            &format!("{detail}{criterion_detail}{instructions}"),
        );
    }
}
