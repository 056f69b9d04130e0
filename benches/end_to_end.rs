//! `end_to_end`: 1,000 webhooks and 200,000 events delivered over 127.0.0.1
//! by the dispatcher (reqwest transport, tokio runtime, push interval
//! shortened to `PUSH_INTERVAL`) to an axum receiver started here, against a
//! bare reqwest client posting the same encoded bodies (one per webhook,
//! built before timing) with the same concurrency (64, the dispatcher's
//! default cap). Goal: at least 0.8x the bare client's events per second.
//!
//! The receiver parses every push with the crate's codec and counts each
//! event by its sequence number; every run asserts each event arrived
//! exactly once. A run's time goes from the first enqueue (or the first
//! request) to the moment the receiver has counted the last event. Runs
//! alternate between the two sides; the median of `RUNS` runs is reported.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use eventhook::adapters::{ReqwestTransport, TokioRuntime};
use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
use eventhook::Event;
use futures::StreamExt;
use support::{EventGen, Goal};

const WEBHOOKS: usize = 1_000;
const EVENTS: usize = 200_000;
const CONCURRENCY: usize = 64;
const PUSH_INTERVAL: Duration = Duration::from_millis(10);
const RUNS: usize = 5;
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What the receiver has seen in the current run.
struct Tally {
    seen: Vec<AtomicBool>,
    events: AtomicUsize,
    duplicates: AtomicUsize,
    strangers: AtomicUsize,
    pushes: AtomicUsize,
    completed_at: Mutex<Option<Instant>>,
    /// When the first event, and the 100,000th, arrived.
    first_at: Mutex<Option<Instant>>,
    half_at: Mutex<Option<Instant>>,
    completed: tokio::sync::Notify,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            seen: (0..EVENTS).map(|_| AtomicBool::new(false)).collect(),
            events: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            strangers: AtomicUsize::new(0),
            pushes: AtomicUsize::new(0),
            completed_at: Mutex::new(None),
            first_at: Mutex::new(None),
            half_at: Mutex::new(None),
            completed: tokio::sync::Notify::new(),
        }
    }

    fn reset(&self) {
        for seen in &self.seen {
            seen.store(false, Ordering::Relaxed);
        }
        self.events.store(0, Ordering::SeqCst);
        self.duplicates.store(0, Ordering::SeqCst);
        self.strangers.store(0, Ordering::SeqCst);
        self.pushes.store(0, Ordering::SeqCst);
        *self.completed_at.lock().unwrap() = None;
        *self.first_at.lock().unwrap() = None;
        *self.half_at.lock().unwrap() = None;
    }

    /// Milliseconds from `start` to the first event and to half of them.
    fn milestones(&self, start: Instant) -> (f64, f64) {
        let since = |at: Option<Instant>| at.map_or(f64::NAN, |at| (at - start).as_secs_f64() * 1e3);
        (since(*self.first_at.lock().unwrap()), since(*self.half_at.lock().unwrap()))
    }

    fn record(&self, events: &[Event]) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        for event in events {
            let index = support::event_seq(event).and_then(|seq| usize::try_from(seq).ok()).filter(|&seq| seq < EVENTS);
            let Some(index) = index else {
                self.strangers.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if self.seen[index].swap(true, Ordering::Relaxed) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match self.events.fetch_add(1, Ordering::AcqRel) + 1 {
                1 => *self.first_at.lock().unwrap() = Some(Instant::now()),
                count if count == EVENTS / 2 => *self.half_at.lock().unwrap() = Some(Instant::now()),
                EVENTS => {
                    *self.completed_at.lock().unwrap() = Some(Instant::now());
                    self.completed.notify_one();
                }
                _ => {}
            }
        }
    }

    /// Waits until every event arrived; returns when the last one did.
    async fn wait_complete(&self) -> Instant {
        tokio::time::timeout(RUN_LIMIT, async {
            loop {
                let notified = self.completed.notified();
                if let Some(at) = *self.completed_at.lock().unwrap() {
                    return at;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("only {} of {EVENTS} events arrived in {RUN_LIMIT:?}", self.events.load(Ordering::SeqCst))
        })
    }

    fn assert_exactly_once(&self, side: &str) {
        assert_eq!(self.duplicates.load(Ordering::SeqCst), 0, "{side}: events received twice");
        assert_eq!(self.strangers.load(Ordering::SeqCst), 0, "{side}: events not sent");
        assert_eq!(self.events.load(Ordering::SeqCst), EVENTS, "{side}: every event once");
        assert!(self.seen.iter().all(|seen| seen.load(Ordering::Relaxed)), "{side}: every event once");
    }
}

async fn hook(State(tally): State<Arc<Tally>>, body: Bytes) -> StatusCode {
    match eventhook::wire::parse_push(&body) {
        Ok(events) => {
            tally.record(&events);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn start_receiver(tally: Arc<Tally>) -> SocketAddr {
    let router = Router::new().route("/hooks/{bot}", post(hook)).with_state(tally);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    address
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    tally: Arc<Tally>,
    base_url: String,
    events: Vec<Event>,
    /// Per webhook: URL, bearer header and the encoded push of its events.
    bodies: Vec<(String, String, Vec<u8>)>,
}

impl Bench {
    fn new() -> Bench {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let tally = Arc::new(Tally::new());
        let address = runtime.block_on(start_receiver(Arc::clone(&tally)));
        let base_url = format!("http://{address}");
        let mut generator = EventGen::new(0xe2e);
        // Bot `seq % WEBHOOKS`: 200 events per webhook, interleaved as traffic would be.
        let events: Vec<Event> = (0..EVENTS).map(|seq| generator.event(seq % WEBHOOKS, seq as u64)).collect();
        let bodies = (0..WEBHOOKS)
            .map(|bot| {
                let config = support::webhook_config(bot, &base_url).build().expect("valid config");
                let own: Vec<Event> = events.iter().skip(bot).step_by(WEBHOOKS).cloned().collect();
                let bearer = config.secret().authorization_header().to_str().expect("ASCII").to_owned();
                (config.url().to_string(), bearer, eventhook::wire::encode_push(&own))
            })
            .collect();
        Bench { runtime, tally, base_url, events, bodies }
    }

    /// One run of the dispatcher; returns its time.
    fn run_dispatcher(&self) -> Duration {
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

        let start = Instant::now();
        for event in events {
            assert!(dispatcher.enqueue(event).is_accepted(), "accepted");
        }
        let enqueued = start.elapsed();
        let end = self.runtime.block_on(self.tally.wait_complete());
        let elapsed = end - start;
        let (first, half) = self.tally.milestones(start);
        println!(
            "  dispatcher: all enqueued after {:.0} ms; first event received after {first:.0} ms, half after {half:.0} ms, \
             all after {:.0} ms",
            enqueued.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3
        );

        let report = self.runtime.block_on(dispatcher.shutdown(Duration::from_secs(10)));
        assert!(report.undelivered.is_empty(), "everything delivered");
        assert_eq!(report.stats.totals.delivered, EVENTS as u64);
        self.tally.assert_exactly_once("dispatcher");
        elapsed
    }

    /// One run of the bare client; returns its time.
    fn run_bare_client(&self) -> Duration {
        self.tally.reset();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let requests: Vec<_> = self.bodies.clone();

        let start = Instant::now();
        let sending = async move {
            futures::stream::iter(requests)
                .map(|(url, bearer, body)| {
                    let request = client
                        .post(url)
                        .header(http::header::AUTHORIZATION, bearer)
                        .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
                        .header(http::header::USER_AGENT, eventhook::USER_AGENT)
                        .body(body);
                    async move {
                        let response = request.send().await.expect("sent");
                        let status = response.status();
                        let _ = response.bytes().await;
                        status
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .for_each(|status| {
                    assert_eq!(status, reqwest::StatusCode::OK);
                    futures::future::ready(())
                })
                .await;
        };
        self.runtime.block_on(self.runtime.spawn(sending)).expect("bare client task");
        let end = self.runtime.block_on(self.tally.wait_complete());
        let elapsed = end - start;
        let (first, half) = self.tally.milestones(start);
        println!(
            "  bare client: first event received after {first:.0} ms, half after {half:.0} ms, all after {:.0} ms",
            elapsed.as_secs_f64() * 1e3
        );
        self.tally.assert_exactly_once("bare client");
        elapsed
    }
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
    // Warm-up (connections, allocator, page faults), then alternate.
    let _ = (bench.run_dispatcher(), bench.run_bare_client());
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..RUNS {
        let dispatcher = bench.run_dispatcher();
        let dispatcher_posts = bench.tally.pushes.load(Ordering::SeqCst);
        let bare = bench.run_bare_client();
        let bare_posts = bench.tally.pushes.load(Ordering::SeqCst);
        println!(
            "run {run}: dispatcher {:>8.0} events/s ({dispatcher:.2?}, {dispatcher_posts} posts), \
             bare client {:>8.0} events/s ({bare:.2?}, {bare_posts} posts)",
            EVENTS as f64 / dispatcher.as_secs_f64(),
            EVENTS as f64 / bare.as_secs_f64(),
        );
        ours.push(dispatcher);
        theirs.push(bare);
    }
    let ours = support::median(ours);
    let theirs = support::median(theirs);
    let ours_rate = EVENTS as f64 / ours.as_secs_f64();
    let theirs_rate = EVENTS as f64 / theirs.as_secs_f64();
    println!();
    support::report(
        "end_to_end/200k_events",
        "eventhook events/s / bare client's",
        ours_rate / theirs_rate,
        Goal::AtLeast(0.8),
        &format!("median of {RUNS}: {ours_rate:.0} vs {theirs_rate:.0} events/s; each event received exactly once"),
    );
}
