//! The loopback side of the delivery benches (`end_to_end`, `postgres`): a
//! receiver on 127.0.0.1 that parses every push with the crate's codec and
//! counts each event by its sequence number, the plain reqwest client the
//! baselines post with, and the process's CPU time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use eventhook::Event;
use futures::StreamExt;

/// User plus system CPU time of this process so far (all threads).
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` only writes the `rusage` it is given, which is
    // zeroed, properly aligned and lives for the call.
    let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(result, 0, "getrusage(RUSAGE_SELF)");
    // SAFETY: zeroed is a valid `rusage` (plain integers), and `getrusage` filled it.
    let usage = unsafe { usage.assume_init() };
    let time =
        |value: libc::timeval| Duration::from_secs(value.tv_sec as u64) + Duration::from_micros(value.tv_usec as u64);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time the whole machine has spent busy so far (user, nice, system and
/// interrupts, of every process: a local database server's included), from
/// `/proc/stat`; `None` where there is none to read (not Linux).
pub fn machine_busy_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).map(|field| field.parse().ok()).collect::<Option<_>>()?;
    // user, nice, system, idle, iowait, irq, softirq, steal, ...
    let busy = fields.first()? + fields.get(1)? + fields.get(2)? + fields.get(5)? + fields.get(6)?;
    // SAFETY: `sysconf` only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_second > 0).then(|| Duration::from_secs_f64(busy as f64 / ticks_per_second as f64))
}

/// The machine's busy CPU time since `before` (a [`machine_busy_time`] reading).
pub fn machine_busy_since(before: Option<Duration>) -> Option<Duration> {
    machine_busy_time().zip(before).map(|(after, before)| after.saturating_sub(before))
}

/// The reqwest client the baselines post with: what the crate's transport
/// does by default (no redirects, no proxies, a timeout).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A JSON `POST` of `body` with a bearer, as the baselines send it.
pub fn json_post(client: &reqwest::Client, url: &str, bearer: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(http::header::AUTHORIZATION, bearer)
        .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body)
}

/// Sends `request`, reads its answer whole and gives its status.
pub async fn status_of(request: reqwest::RequestBuilder) -> reqwest::StatusCode {
    let response = request.send().await.expect("sent");
    let status = response.status();
    let _ = response.bytes().await;
    status
}

/// Makes the posts of `posts`, `concurrency` at a time; each must answer `200`.
pub async fn post_all(
    concurrency: usize,
    posts: impl futures::Stream<Item = impl std::future::Future<Output = reqwest::StatusCode>>,
) {
    posts
        .buffer_unordered(concurrency)
        .for_each(|status| {
            assert_eq!(status, reqwest::StatusCode::OK);
            futures::future::ready(())
        })
        .await;
}

/// What the receiver has seen in the current run, of the events numbered
/// `0..expected`.
pub struct Tally {
    expected: usize,
    seen: Vec<AtomicBool>,
    events: AtomicUsize,
    duplicates: AtomicUsize,
    strangers: AtomicUsize,
    pub pushes: AtomicUsize,
    completed_at: Mutex<Option<Instant>>,
    /// When the first event, and the middle one, arrived.
    first_at: Mutex<Option<Instant>>,
    half_at: Mutex<Option<Instant>>,
    completed: tokio::sync::Notify,
}

impl Tally {
    pub fn new(expected: usize) -> Tally {
        Tally {
            expected,
            seen: (0..expected).map(|_| AtomicBool::new(false)).collect(),
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

    pub fn reset(&self) {
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
    pub fn milestones(&self, start: Instant) -> (f64, f64) {
        let since = |at: Option<Instant>| at.map_or(f64::NAN, |at| (at - start).as_secs_f64() * 1e3);
        (since(*self.first_at.lock().unwrap()), since(*self.half_at.lock().unwrap()))
    }

    /// Events received so far (each counted once).
    pub fn received(&self) -> usize {
        self.events.load(Ordering::SeqCst)
    }

    fn record(&self, events: &[Event]) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        for event in events {
            let index =
                super::event_seq(event).and_then(|seq| usize::try_from(seq).ok()).filter(|&seq| seq < self.expected);
            let Some(index) = index else {
                self.strangers.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if self.seen[index].swap(true, Ordering::Relaxed) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let count = self.events.fetch_add(1, Ordering::AcqRel) + 1;
            if count == 1 {
                *self.first_at.lock().unwrap() = Some(Instant::now());
            }
            if count == self.expected / 2 {
                *self.half_at.lock().unwrap() = Some(Instant::now());
            }
            if count == self.expected {
                *self.completed_at.lock().unwrap() = Some(Instant::now());
                self.completed.notify_one();
            }
        }
    }

    /// Waits until every event arrived, at most `limit`; returns when the last one did.
    pub async fn wait_complete(&self, limit: Duration) -> Instant {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.completed.notified();
                if let Some(at) = *self.completed_at.lock().unwrap() {
                    return at;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("only {} of {} events arrived in {limit:?}", self.received(), self.expected))
    }

    pub fn assert_exactly_once(&self, side: &str) {
        assert_eq!(self.duplicates.load(Ordering::SeqCst), 0, "{side}: events received twice");
        assert_eq!(self.strangers.load(Ordering::SeqCst), 0, "{side}: events not sent");
        assert_eq!(self.received(), self.expected, "{side}: every event once");
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

/// Starts the receiver on 127.0.0.1 (any free port) on the current runtime:
/// `POST /hooks/{bot}` answers 200 to every push it can parse.
pub async fn start_receiver(tally: Arc<Tally>) -> SocketAddr {
    let router = Router::new().route("/hooks/{bot}", post(hook)).with_state(tally);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    address
}
