//! `end_to_end`: 1,000 webhooks and 200,000 events delivered over 127.0.0.1
//! by the dispatcher (reqwest transport, tokio runtime, push interval
//! shortened to `PUSH_INTERVAL`) to an axum receiver started here, against
//! two baselines with the same concurrency (64, the dispatcher's default cap):
//! - a bare reqwest client posting the same encoded bodies (one per webhook,
//!   built before timing). Goal: at least 0.8x its events per second;
//! - what a user would write instead of the crate ("naive user"): a bounded
//!   tokio `mpsc` channel, one task collecting events into a `Vec` per bot
//!   token and, every `PUSH_INTERVAL`, posting each bot's batch encoded by
//!   `#[derive(Serialize)]` structs (the `encode` bench's baseline) with
//!   reqwest, 64 at a time, before it reads on. Goal: the dispatcher at least 1.5x its events per second, and
//!   less CPU per delivered event.
//!
//! The receiver parses every push with the crate's codec and counts each
//! event by its sequence number; every run asserts each event arrived
//! exactly once. A run's time goes from the first enqueue (or the first
//! request) to the moment the receiver has counted the last event. Runs
//! rotate between the three sides; the median of `RUNS` runs is reported.
//! CPU time (user + system, `getrusage(RUSAGE_SELF)`) is taken from the
//! start of a run to the end of the side's work (the dispatcher's shutdown,
//! the last response, the collecting task's end) and summed over the runs;
//! it includes the receiver, which runs in this process and does the same
//! work for every side.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhook::adapters::{ReqwestTransport, TokioRuntime};
use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
use eventhook::Event;
use futures::StreamExt;
use support::loopback::{cpu_time, json_post, plain_client, post_all, start_receiver, status_of, Tally};
use support::{EventGen, Goal};

const WEBHOOKS: usize = 1_000;
const EVENTS: usize = 200_000;
const CONCURRENCY: usize = 64;
const PUSH_INTERVAL: Duration = Duration::from_millis(10);
const RUNS: usize = 5;
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The naive user's channel bound: a round number a user would pick.
const NAIVE_CHANNEL: usize = 10_000;

/// One run of one side: wall time to the last event received, CPU time to the end of its work.
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    cpu: Duration,
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    tally: Arc<Tally>,
    base_url: String,
    events: Vec<Event>,
    /// Per webhook: URL, bearer header and the encoded push of its events.
    bodies: Vec<(String, String, Vec<u8>)>,
    /// The naive user's settings: URL and bearer header by bot token.
    targets: Arc<HashMap<String, (String, String)>>,
}

impl Bench {
    fn new() -> Bench {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let tally = Arc::new(Tally::new(EVENTS));
        let address = runtime.block_on(start_receiver(Arc::clone(&tally)));
        let base_url = format!("http://{address}");
        let mut generator = EventGen::new(0xe2e);
        // Bot `seq % WEBHOOKS`: 200 events per webhook, interleaved as traffic would be.
        let events: Vec<Event> = (0..EVENTS).map(|seq| generator.event(seq % WEBHOOKS, seq as u64)).collect();
        let bodies: Vec<(String, String, Vec<u8>)> = (0..WEBHOOKS)
            .map(|bot| {
                let config = support::webhook_config(bot, &base_url).build().expect("valid config");
                let own: Vec<Event> = events.iter().skip(bot).step_by(WEBHOOKS).cloned().collect();
                let bearer = config.secret().authorization_header().to_str().expect("ASCII").to_owned();
                (config.url().to_string(), bearer, eventhook::wire::encode_push(&own))
            })
            .collect();
        let targets = (0..WEBHOOKS)
            .map(|bot| (support::bot_token(bot), (bodies[bot].0.clone(), bodies[bot].1.clone())))
            .collect();
        Bench { runtime, tally, base_url, events, bodies, targets: Arc::new(targets) }
    }

    /// One run of the dispatcher.
    fn run_dispatcher(&self) -> Run {
        self.tally.reset();
        let transport = ReqwestTransport::builder().allow_private_networks(true).build().expect("transport");
        let dispatcher = WebhookDispatcher::builder()
            .transport(Arc::new(transport))
            .runtime(Arc::new(TokioRuntime::from_handle(self.runtime.handle().clone())))
            .max_concurrent_pushes(CONCURRENCY)
            .build()
            .expect("dispatcher");
        for bot in 0..WEBHOOKS {
            let config =
                support::webhook_config(bot, &self.base_url).push_interval(PUSH_INTERVAL).build().expect("valid");
            dispatcher.configure(config).expect("open");
        }
        let events = self.events.clone();

        let cpu_start = cpu_time();
        let start = Instant::now();
        for event in events {
            assert!(dispatcher.enqueue(event).is_accepted(), "accepted");
        }
        let enqueued = start.elapsed();
        let end = self.runtime.block_on(self.tally.wait_complete(RUN_LIMIT));
        let elapsed = end - start;
        let (first, half) = self.tally.milestones(start);
        println!(
            "  dispatcher: all enqueued after {:.0} ms; first event received after {first:.0} ms, half after {half:.0} ms, \
             all after {:.0} ms",
            enqueued.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3
        );

        let report = self.runtime.block_on(dispatcher.shutdown(Duration::from_secs(10)));
        let cpu = cpu_time() - cpu_start;
        assert!(report.undelivered.is_empty(), "everything delivered");
        assert_eq!(report.stats.totals.delivered, EVENTS as u64);
        self.tally.assert_exactly_once("dispatcher");
        Run { elapsed, cpu }
    }

    /// One run of the bare client.
    fn run_bare_client(&self) -> Run {
        self.tally.reset();
        let client = plain_client();
        let requests: Vec<_> = self.bodies.clone();

        let cpu_start = cpu_time();
        let start = Instant::now();
        let sending = async move {
            post_all(
                CONCURRENCY,
                futures::stream::iter(requests).map(|(url, bearer, body)| {
                    let request =
                        json_post(&client, &url, &bearer, body).header(http::header::USER_AGENT, eventhook::USER_AGENT);
                    status_of(request)
                }),
            )
            .await;
        };
        self.runtime.block_on(self.runtime.spawn(sending)).expect("bare client task");
        let end = self.runtime.block_on(self.tally.wait_complete(RUN_LIMIT));
        let cpu = cpu_time() - cpu_start;
        let elapsed = end - start;
        let (first, half) = self.tally.milestones(start);
        println!(
            "  bare client: first event received after {first:.0} ms, half after {half:.0} ms, all after {:.0} ms",
            elapsed.as_secs_f64() * 1e3
        );
        self.tally.assert_exactly_once("bare client");
        Run { elapsed, cpu }
    }

    /// One run of what a user would write instead of the crate.
    fn run_naive_user(&self) -> Run {
        self.tally.reset();
        let client = plain_client();
        let events = self.events.clone();

        let cpu_start = cpu_time();
        let start = Instant::now();
        let (sender, receiver) = tokio::sync::mpsc::channel(NAIVE_CHANNEL);
        let collector = self.runtime.spawn(naive_collector(receiver, client, Arc::clone(&self.targets)));
        for event in events {
            sender.blocking_send(event).expect("collector alive");
        }
        let enqueued = start.elapsed();
        drop(sender);
        let end = self.runtime.block_on(self.tally.wait_complete(RUN_LIMIT));
        self.runtime.block_on(collector).expect("collector task");
        let cpu = cpu_time() - cpu_start;
        let elapsed = end - start;
        let (first, half) = self.tally.milestones(start);
        println!(
            "  naive user: all sent after {:.0} ms; first event received after {first:.0} ms, half after {half:.0} ms, \
             all after {:.0} ms",
            enqueued.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3
        );
        self.tally.assert_exactly_once("naive user");
        Run { elapsed, cpu }
    }
}

/// The naive user's task: collects events into a `Vec` per bot and, every
/// `PUSH_INTERVAL`, posts every bot's batch (64 at a time) and waits for
/// the posts before reading on (the bounded channel holds the producer
/// back meanwhile); when the channel closes, posts what is left.
async fn naive_collector(
    mut events: tokio::sync::mpsc::Receiver<Event>,
    client: reqwest::Client,
    targets: Arc<HashMap<String, (String, String)>>,
) {
    let mut batches: HashMap<String, Vec<Event>> = HashMap::new();
    let mut ticks = tokio::time::interval(PUSH_INTERVAL);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Some(event) => {
                    let token = event.bot_token().expect("known kinds carry a bot token");
                    match batches.get_mut(token) {
                        Some(batch) => batch.push(event),
                        None => {
                            let token = token.to_owned();
                            batches.insert(token, vec![event]);
                        }
                    }
                }
                None => break,
            },
            _ = ticks.tick() => naive_post(&client, &targets, &mut batches).await,
        }
    }
    naive_post(&client, &targets, &mut batches).await;
}

/// Posts every bot's batch, `CONCURRENCY` at a time, each encoded by serde.
async fn naive_post(
    client: &reqwest::Client,
    targets: &HashMap<String, (String, String)>,
    batches: &mut HashMap<String, Vec<Event>>,
) {
    post_all(
        CONCURRENCY,
        futures::stream::iter(batches.drain()).map(|(token, batch)| {
            let (url, bearer) = &targets[&token];
            async move { status_of(json_post(client, url, bearer, support::serde_wire::serde_encode(&batch))).await }
        }),
    )
    .await;
}

fn main() {
    if !support::is_bench_run() {
        println!("{}: run with `cargo bench --bench end_to_end`", file!());
        return;
    }
    let bench = Bench::new();
    let body_bytes: usize = bench.bodies.iter().map(|(_, _, body)| body.len()).sum();
    println!(
        "end_to_end: {WEBHOOKS} webhooks, {EVENTS} events ({:.1} MB encoded), push interval {PUSH_INTERVAL:?}, concurrency {CONCURRENCY}",
        body_bytes as f64 / 1e6
    );
    if std::env::var_os("EVENTHOOK_END_TO_END_DISPATCHER_ONLY").is_some() {
        // For a profiler (see benches/README.md): the dispatcher's runs alone, no report.
        for _ in 0..=RUNS {
            let run = bench.run_dispatcher();
            println!(
                "dispatcher: {:.0} events/s, CPU {:.3} s",
                EVENTS as f64 / run.elapsed.as_secs_f64(),
                run.cpu.as_secs_f64()
            );
        }
        return;
    }
    // Warm-up (connections, allocator, page faults), then rotate.
    let _ = (bench.run_dispatcher(), bench.run_bare_client(), bench.run_naive_user());
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let mut naive = Vec::new();
    for run in 0..RUNS {
        let dispatcher = bench.run_dispatcher();
        let dispatcher_posts = bench.tally.pushes.load(Ordering::SeqCst);
        let bare_client = bench.run_bare_client();
        let bare_posts = bench.tally.pushes.load(Ordering::SeqCst);
        let naive_user = bench.run_naive_user();
        let naive_posts = bench.tally.pushes.load(Ordering::SeqCst);
        let rate = |run: Run| EVENTS as f64 / run.elapsed.as_secs_f64();
        println!(
            "run {run}: dispatcher {:>8.0} events/s ({:.2?}, {dispatcher_posts} posts), \
             bare client {:>8.0} events/s ({:.2?}, {bare_posts} posts), \
             naive user {:>8.0} events/s ({:.2?}, {naive_posts} posts)",
            rate(dispatcher),
            dispatcher.elapsed,
            rate(bare_client),
            bare_client.elapsed,
            rate(naive_user),
            naive_user.elapsed,
        );
        ours.push(dispatcher);
        bare.push(bare_client);
        naive.push(naive_user);
    }
    // Events per second from the median time; CPU seconds per 100,000 events over all runs.
    let rate =
        |runs: &[Run]| EVENTS as f64 / support::median(runs.iter().map(|run| run.elapsed).collect()).as_secs_f64();
    let cpu = |runs: &[Run]| {
        runs.iter().map(|run| run.cpu).sum::<Duration>().as_secs_f64() / (runs.len() * EVENTS) as f64 * 100_000.0
    };
    let (ours_rate, bare_rate, naive_rate) = (rate(&ours), rate(&bare), rate(&naive));
    let (ours_cpu, bare_cpu, naive_cpu) = (cpu(&ours), cpu(&bare), cpu(&naive));
    println!();
    println!(
        "CPU (user + system) per 100,000 delivered events, over {RUNS} runs: dispatcher {ours_cpu:.3} s, \
         bare client {bare_cpu:.3} s, naive user {naive_cpu:.3} s (each includes the receiver, which runs in this \
         process and does the same work for all three)"
    );
    support::report(
        "end_to_end/200k_events",
        "eventhook events/s / bare client's",
        ours_rate / bare_rate,
        Goal::AtLeast(0.8),
        &format!(
            "median of {RUNS}: {ours_rate:.0} vs {bare_rate:.0} events/s; CPU {ours_cpu:.3} vs {bare_cpu:.3} s per 100k \
             events; each event received exactly once"
        ),
    );
    support::report(
        "end_to_end/vs_naive_user",
        "eventhook events/s / naive user's",
        ours_rate / naive_rate,
        Goal::AtLeast(1.5),
        &format!("median of {RUNS}: {ours_rate:.0} vs {naive_rate:.0} events/s; each event received exactly once"),
    );
    support::report(
        "end_to_end/cpu_vs_naive_user",
        "eventhook CPU / naive user's",
        ours_cpu / naive_cpu,
        Goal::AtMost(1.0),
        &format!("{ours_cpu:.3} vs {naive_cpu:.3} s user+sys per 100k events, receiver included in both"),
    );
}
