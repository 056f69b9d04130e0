//! A cluster of real processes on one PostgreSQL schema: the
//! `cluster_node` example, run several times at once against a receiver on
//! 127.0.0.1, one of them killed mid-run.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use eventhook::postgres::{load_webhooks, migrate};
use eventhook::receiver::WebhookReceiver;
use eventhook::{BotSecret, Event};
use postgres_support::TestSchema;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "cluster-secret";
/// How long any one process, build or wait here may take before the test fails.
const LIMIT: Duration = Duration::from_secs(50);

/// The `cluster_node` example's binary, built once per test run in this
/// test's profile (a no-op when `cargo build --examples --all-features` ran).
fn cluster_node() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/postgres_cluster-<hash>
            let executable = std::env::current_exe().expect("the test's own path");
            let profile_dir = executable.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
            let mut build = std::process::Command::new(env!("CARGO"));
            // What cargo sets for this test, not for a build: build scripts that
            // watch these (ring's) would run again here, and again in the next `cargo test`.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                let per_unit = ["CARGO_PKG_", "CARGO_BIN_EXE_"].iter().any(|prefix| name.starts_with(prefix))
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_MANIFEST_LINKS",
                        "CARGO_CRATE_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                        "OUT_DIR",
                    ]
                    .contains(&&*name);
                if per_unit {
                    build.env_remove(&*name);
                }
            }
            build
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--quiet", "--all-features", "--example", "cluster_node"])
                .arg("--target-dir")
                .arg(profile_dir.parent().expect("target/"));
            match profile_dir.file_name().and_then(|name| name.to_str()) {
                Some("debug") => {}
                Some("release") => {
                    build.arg("--release");
                }
                Some(profile) => {
                    build.args(["--profile", profile]);
                }
                None => panic!("no profile directory above {}", executable.display()),
            }
            let mut child = build.spawn().expect("running cargo build for the cluster_node example");
            let deadline = Instant::now() + Duration::from_secs(600);
            let status = loop {
                if let Some(status) = child.try_wait().expect("waiting for cargo build") {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("cargo build of the cluster_node example took over 10 minutes");
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert!(status.success(), "cargo build of the cluster_node example failed: {status}");
            profile_dir.join("examples").join(format!("cluster_node{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}

/// One call the receiver took: the bot, its events' ConversationIds, when.
#[derive(Debug, Clone)]
struct Call {
    bot: String,
    ids: Vec<String>,
    at: Instant,
}

#[derive(Clone)]
struct Receiver {
    verify: WebhookReceiver,
    status: StatusCode,
    calls: Arc<Mutex<Vec<Call>>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let events = receiver.verify.receive(&headers, &body).expect("a push with the bots' secret, well-formed");
    let bot = events.first().and_then(Event::bot_token).expect("a bot token").to_owned();
    let ids = events
        .iter()
        .map(|event| {
            assert_eq!(event.bot_token(), Some(bot.as_str()), "one bot per push");
            match event {
                Event::UserMessage(message) => message.conversation_id.clone(),
                other => panic!("a user message, not {other:?}"),
            }
        })
        .collect();
    receiver.calls.lock().unwrap().push(Call { bot, ids, at });
    receiver.status
}

/// A receiver on 127.0.0.1 answering every verified push with `status`; its URL and calls.
async fn start_receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let verify = WebhookReceiver::new(BotSecret::new(SECRET).expect("a valid secret"));
    let state = Receiver { verify, status, calls: Arc::clone(&calls) };
    let app = Router::new().route("/events", post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1");
    let address = listener.local_addr().expect("the receiver's address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/events"), calls)
}

/// A running `cluster_node` and the lines it printed so far.
struct Node {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn start_node(test: &TestSchema, url: &str, name: &str, arguments: &[&str]) -> Node {
    let mut child = Command::new(cluster_node())
        .args(["--database-url", test.url(), "--schema", test.schema.name(), "--url", url, "--secret", SECRET])
        .args(["--node", name, "--run-ms", "45000"])
        .args(arguments)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting cluster_node");
    let stdout = child.stdout.take().expect("the node's stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let printed = Arc::clone(&lines);
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            printed.lock().unwrap().push(line);
        }
    });
    Node { name: name.to_owned(), child, lines }
}

impl Node {
    /// Waits for the node to exit 0; returns what it printed.
    async fn finish(mut self) -> Vec<String> {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("node {} still running after {LIMIT:?}", self.name))
            .expect("waiting for a node");
        assert!(status.success(), "node {} exited with {status}", self.name);
        // Its stdout ends with it; the reader takes the last lines at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

/// The counts of a node's `STATS accepted=A delivered=D pending=P dropped=X` line.
fn stats(name: &str, lines: &[String]) -> HashMap<String, u64> {
    let line =
        lines.iter().find_map(|line| line.strip_prefix("STATS ")).unwrap_or_else(|| panic!("no STATS from {name}"));
    line.split(' ')
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("key=value");
            (key.to_owned(), value.parse().expect("a count"))
        })
        .collect()
}

/// Waits until the store holds `bots` webhooks: the first node configured them.
async fn wait_configured(test: &TestSchema, bots: usize) {
    let client = test.connect().await;
    let started = Instant::now();
    while load_webhooks(&client, &test.schema).await.expect("loading webhooks").len() < bots {
        assert!(started.elapsed() < LIMIT, "the first node did not configure its bots");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `<node>-<bot index>-<sequence>`, checked against the call's bot.
fn parse_id(id: &str, bot: &str, events: usize) -> (String, usize) {
    let mut parts = id.rsplitn(3, '-');
    let (sequence, index, node) = (parts.next(), parts.next(), parts.next());
    let sequence: usize = sequence.and_then(|text| text.parse().ok()).unwrap_or_else(|| panic!("bad id {id:?}"));
    assert_eq!(index.map(|index| format!("bot-{index}")).as_deref(), Some(bot), "id {id:?} in a call of {bot}");
    assert!(sequence < events, "id {id:?}: sequence out of range");
    (node.unwrap_or_else(|| panic!("bad id {id:?}")).to_owned(), sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_it_committed_and_bots_are_pushed_once_per_interval_over_the_cluster() {
    let Some(test) = TestSchema::new(
        "a_killed_node_loses_nothing_it_committed_and_bots_are_pushed_once_per_interval_over_the_cluster",
    ) else {
        return;
    };
    let (bots, events, interval) = (20usize, 30usize, Duration::from_millis(500));
    let started = Instant::now();
    migrate(&mut test.connect().await, &test.schema).await.expect("migrating");
    let (url, calls) = start_receiver(StatusCode::OK).await;
    let (bots_text, events_text, interval_text) =
        (bots.to_string(), events.to_string(), interval.as_millis().to_string());
    let common = ["--bots", &bots_text, "--interval-ms", &interval_text, "--request-timeout-ms", "1000"];
    let with_events = [&common[..], &["--events", &events_text]].concat();
    let first = start_node(&test, &url, "a", &with_events);
    wait_configured(&test, bots).await;
    let mut killed = start_node(&test, &url, "b", &with_events);
    let third = start_node(&test, &url, "c", &with_events);

    // Killed mid-run: once it has committed some of its events.
    let client = test.connect().await;
    let statement = format!(
        "SELECT count(*) FROM {}.events WHERE convert_from(body, 'UTF8') LIKE '%\"ConversationId\":\"b-%'",
        test.quoted()
    );
    let waiting = Instant::now();
    while client.query_one(&statement, &[]).await.expect("counting node b's events").get::<_, i64>(0) == 0 {
        assert!(waiting.elapsed() < LIMIT, "node b committed nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed.child.kill().await.expect("killing node b");
    let killed_at = Instant::now();
    let drainer = start_node(&test, &url, "d", &[&common[..], &["--events", "0", "--drain"]].concat());

    let first = first.finish().await;
    let third = third.finish().await;
    let _ = drainer.finish().await;
    for (name, lines) in [("a", &first), ("c", &third)] {
        let counts = stats(name, lines);
        assert_eq!(counts["accepted"], (bots * events) as u64, "node {name}: {lines:?}");
        assert_eq!(counts["dropped"], 0, "node {name}: {lines:?}");
    }
    let statement = format!("SELECT coalesce(sum(events), 0)::bigint FROM {}.events", test.quoted());
    let left: i64 = client.query_one(&statement, &[]).await.expect("counting events").get(0);
    assert_eq!(left, 0, "the store holds no event at the end");

    let calls = calls.lock().unwrap().clone();
    // First arrivals per (node, bot), in order; every repeat with its first call.
    let mut arrived: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut repeats: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
    for (index, call) in calls.iter().enumerate() {
        for id in &call.ids {
            let (node, sequence) = parse_id(id, &call.bot, events);
            assert!(["a", "b", "c"].contains(&node.as_str()), "id {id:?} of an unknown node");
            match seen.get(id.as_str()) {
                Some(&first_call) => repeats.entry(&call.bot).or_default().push((id, first_call)),
                None => {
                    seen.insert(id, index);
                    arrived.entry((node, call.bot.clone())).or_default().push(sequence);
                }
            }
        }
    }
    for bot in (0..bots).map(|index| format!("bot-{index}")) {
        for node in ["a", "b", "c"] {
            let sequences = arrived.get(&(node.to_owned(), bot.clone())).cloned().unwrap_or_default();
            // Committed in order, delivered in order: a node's events of a bot arrive as 0, 1, 2, ...
            let expected: Vec<usize> = (0..sequences.len()).collect();
            assert_eq!(sequences, expected, "node {node}'s events of {bot}, in order of first arrival");
            if node != "b" {
                assert_eq!(sequences.len(), events, "every event of node {node} for {bot} arrived");
            }
        }
    }
    // A repeat is the resending of a call the killed node made and never settled.
    for (bot, repeated) in &repeats {
        let first_calls: HashSet<usize> = repeated.iter().map(|(_, first_call)| *first_call).collect();
        assert_eq!(first_calls.len(), 1, "{bot}: repeats from one abandoned call, not {repeated:?}");
        let abandoned = &calls[*first_calls.iter().next().expect("one call")];
        // A call node b sent just before dying may be taken in after the kill
        // returned, on a loaded machine; a resend comes only once its lease
        // (over twice the request timeout) has expired.
        let received_by = killed_at + Duration::from_secs(1);
        assert!(abandoned.at <= received_by, "{bot}: the repeated call was made before the kill");
    }
    // Over the whole cluster, each bot is pushed at most once per interval
    // (no batch here is full, so none drains at once).
    let tolerance = Duration::from_millis(200);
    let mut by_bot: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for call in &calls {
        by_bot.entry(&call.bot).or_default().push(call.at);
    }
    for (bot, times) in &by_bot {
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap + tolerance >= interval, "{bot}: two calls {gap:?} apart, interval {interval:?}");
        }
    }
    eprintln!(
        "cluster: {} calls, {} events, {} repeated, node b killed after {:?}, all done in {:?}",
        calls.len(),
        seen.len(),
        repeats.values().map(Vec::len).sum::<usize>(),
        killed_at - started,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_eleven_calls_per_bot_over_the_cluster_and_one_alert() {
    let Some(test) = TestSchema::new("a_failing_receiver_gets_eleven_calls_per_bot_over_the_cluster_and_one_alert")
    else {
        return;
    };
    let bots = 3;
    migrate(&mut test.connect().await, &test.schema).await.expect("migrating");
    let (url, calls) = start_receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let arguments = ["--bots", "3", "--events", "5", "--interval-ms", "100"];
    let first = start_node(&test, &url, "a", &arguments);
    wait_configured(&test, bots).await;
    let others = [start_node(&test, &url, "b", &arguments), start_node(&test, &url, "c", &arguments)];

    let mut outputs = vec![("a", first.finish().await)];
    for (name, node) in ["b", "c"].into_iter().zip(others) {
        outputs.push((name, node.finish().await));
    }
    let printed: Vec<String> = outputs.iter().flat_map(|(_, lines)| lines.clone()).collect();
    let mut alerts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &printed {
        if let Some(bot) = line.strip_prefix("ALERT ") {
            *alerts.entry(bot).or_default() += 1;
        }
    }
    let expected: BTreeMap<&str, usize> = [("bot-0", 1), ("bot-1", 1), ("bot-2", 1)].into();
    assert_eq!(alerts, expected, "one alert per bot over the cluster: {printed:?}");
    let mut per_bot: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls.lock().unwrap().iter() {
        *per_bot.entry(call.bot.clone()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (0..bots).map(|index| (format!("bot-{index}"), 11)).collect();
    assert_eq!(per_bot, expected, "the 11th failed call in a row disables, over all nodes");
    let (mut accepted, mut dropped, mut delivered) = (0, 0, 0);
    for (name, lines) in &outputs {
        let counts = stats(name, lines);
        accepted += counts["accepted"];
        dropped += counts["dropped"];
        delivered += counts["delivered"];
    }
    // Node a enqueued before any webhook was disabled; b and c may have
    // started after (their events refused then).
    assert_eq!(stats("a", &outputs[0].1)["accepted"], 3 * 5, "{printed:?}");
    assert_eq!((delivered, dropped), (0, accepted), "every event dropped as disabled, by whichever node disabled");
}
