//! `postgres`: 1,000 bots and 200,000 events delivered over 127.0.0.1 to a
//! receiver started here (answers 200 to every push it parses, counts each
//! event by its sequence number), by:
//! - **two `PostgresDispatcher`s on one database** (the main figure): two
//!   processes of a cluster, each enqueueing half of the events (event `i`
//!   to dispatcher `i % 2`, from a thread of its own) on a fresh schema,
//!   migrated before and dropped after the run. Settings: push interval
//!   `PUSH_INTERVAL` (100 ms) and `max_batch_events` 500 (the default), so a
//!   bot's events leave in a few large pushes and the run is bound by how
//!   fast the store takes events in and hands them out, not by the
//!   interval; `max_concurrent_pushes` 64 (the default, as in `end_to_end`);
//!   `max_buffered_events` `EVENTS`, so that the burst (all events at once,
//!   faster than any database commits them) is buffered rather than refused:
//!   a host expecting such bursts sizes the buffer so. The defaults
//!   otherwise (`commit_window` 10 ms, `poll_interval` 1 s: each process is
//!   woken by its own commits; a shorter poll makes every process count
//!   each webhook's pending events over the whole `events` table more
//!   often, and at 100 ms that scan took most of the database's time and
//!   the run fell from about 30,000 to 18,000-20,000 events/s).
//! - the in-memory `WebhookDispatcher` on the same workload and settings.
//!   Goal: the two PostgreSQL dispatchers at least 0.5x its events/s.
//! - **what a host would write instead**: an `outbox` table, one row per
//!   event (`bot_token`, the event's JSON encoded by `#[derive(Serialize)]`
//!   structs as in `end_to_end`'s naive user), filled by one producer that
//!   sends one `INSERT` per event in autocommit, as a naive host does (one
//!   commit, so one WAL flush, per event); and two workers, each on its own
//!   connection, looping: `BEGIN`; `SELECT ... ORDER BY id LIMIT 100 FOR
//!   UPDATE SKIP LOCKED`; one POST per bot among those rows (its events in
//!   a JSON array; the posts 64 at a time, which is generous to the
//!   baseline); on 200 for all, `DELETE` those ids; `COMMIT`. A worker that
//!   finds nothing sleeps `PUSH_INTERVAL`. Goal: the two PostgreSQL
//!   dispatchers at least 2x its events/s.
//! - 1 and 4 `PostgresDispatcher`s, for scaling (the events split as above).
//!
//! A run's time goes from the first enqueue (or insert) to the moment the
//! receiver has counted the last event; every run asserts each event arrived
//! exactly once. WAL bytes per event: `pg_wal_lsn_diff` of
//! `pg_current_wal_lsn()` from just before the first enqueue to the moment
//! the store holds no event any more (deletions of delivered events
//! included), over the events. The WAL is the server's, so anything else
//! the server does meanwhile is counted too; commits per event likewise
//! come from `pg_stat_database` (this database's, read after the server's
//! statistics are flushed). After one warm-up run of the in-memory
//! dispatcher and one of two PostgreSQL dispatchers, those two sides run
//! `ALTERNATE_RUNS` (5) times in turn and each is reported by its median
//! run (events/s): this machine's speed drifts over minutes, and runs taken
//! alternately see the same drift. The outbox and the 1 and 4 dispatchers
//! run once (criterion's repeated sampling would take hours).
//!
//! Each run also reports the machine's busy CPU time over it (`/proc/stat`:
//! every process, the database server's included), and the medians of
//! both main sides' are compared: CPU moves less than wall time with the
//! machine's drift, and the PostgreSQL runs are CPU-bound (the in-memory
//! ones are not), so it shows what a change to the store costs or saves.
//!
//! Without `DATABASE_URL` the bench prints a `SKIPPED` line and exits 0.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhook::adapters::{ReqwestTransport, TokioRuntime};
use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
use eventhook::postgres::{migrate, PostgresDispatcher, PostgresSchema};
use eventhook::{Event, WebhookConfig};
use futures::StreamExt;
use support::loopback::{
    json_post, machine_busy_since, machine_busy_time, plain_client, post_all, start_receiver, status_of, Tally,
};
use support::{EventGen, Goal};
use tokio_postgres::{Client, NoTls};

const BOTS: usize = 1_000;
const EVENTS: usize = 200_000;
const CONCURRENCY: usize = 64;
const PUSH_INTERVAL: Duration = Duration::from_millis(100);
const MAX_BATCH_EVENTS: usize = 500;
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Rows an outbox worker claims at a time.
const OUTBOX_CLAIM: i64 = 100;
const OUTBOX_WORKERS: usize = 2;
/// Runs of the in-memory side and of two PostgreSQL dispatchers, taken in turn.
const ALTERNATE_RUNS: usize = 5;
/// The pause after each PostgreSQL side's run.
const QUIET_AFTER_RUN: Duration = Duration::from_secs(1);

/// One run of one side.
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    /// Until every event was also deleted from the store (PostgreSQL sides).
    settled: Duration,
    wal_bytes: f64,
    commits: i64,
    posts: usize,
    /// The machine's busy CPU time from the first enqueue to the last event received.
    cpu: Option<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        EVENTS as f64 / self.elapsed.as_secs_f64()
    }

    fn wal_per_event(&self) -> f64 {
        self.wal_bytes / EVENTS as f64
    }

    /// The run of median events/s (of an odd count; the upper middle of an even one).
    fn median(mut runs: Vec<Run>) -> Run {
        runs.sort_by_key(|run| run.elapsed);
        runs[runs.len() / 2]
    }

    /// The median of the runs' CPU times, where the machine gives them.
    fn median_cpu(runs: &[Run]) -> Option<Duration> {
        let mut cpu: Vec<Duration> = runs.iter().map(|run| run.cpu).collect::<Option<_>>()?;
        cpu.sort();
        cpu.get(cpu.len() / 2).copied()
    }

    fn cpu_text(&self) -> String {
        self.cpu.map_or_else(|| "CPU not measured".to_owned(), |cpu| format!("{:.2} s CPU", cpu.as_secs_f64()))
    }
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    tally: Arc<Tally>,
    base_url: String,
    database_url: String,
    admin: Client,
    events: Vec<Event>,
    /// The outbox workers' settings: URL and bearer header by bot token.
    targets: Arc<HashMap<String, (String, String)>>,
}

/// Connects to `url`, driving the connection on the current runtime.
async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connecting to DATABASE_URL");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A schema name no other run uses.
fn fresh_schema(side: &str) -> PostgresSchema {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    PostgresSchema::new(format!("eventhook_bench_{side}_{}_{}", std::process::id(), nanos % 1_000_000_000))
        .expect("a valid schema name")
}

impl Bench {
    fn new(database_url: String) -> Bench {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let tally = Arc::new(Tally::new(EVENTS));
        let address = runtime.block_on(start_receiver(Arc::clone(&tally)));
        let base_url = format!("http://{address}");
        let admin = runtime.block_on(connect(&database_url));
        let mut generator = EventGen::new(0x9057);
        // Bot `seq % BOTS`: 200 events per bot, interleaved as traffic would be.
        let events: Vec<Event> = (0..EVENTS).map(|seq| generator.event(seq % BOTS, seq as u64)).collect();
        let targets = (0..BOTS)
            .map(|bot| {
                let config = support::webhook_config(bot, &base_url).build().expect("valid config");
                let bearer = config.secret().authorization_header().to_str().expect("ASCII").to_owned();
                (support::bot_token(bot), (config.url().to_string(), bearer))
            })
            .collect();
        Bench { runtime, tally, base_url, database_url, admin, events, targets: Arc::new(targets) }
    }

    fn config(&self, bot: usize) -> WebhookConfig {
        support::webhook_config(bot, &self.base_url)
            .push_interval(PUSH_INTERVAL)
            .max_batch_events(MAX_BATCH_EVENTS)
            .build()
            .expect("valid config")
    }

    fn transport() -> Arc<ReqwestTransport> {
        Arc::new(ReqwestTransport::builder().allow_private_networks(true).build().expect("transport"))
    }

    fn wal_lsn(&self) -> String {
        let row = self.runtime.block_on(self.admin.query_one("SELECT pg_current_wal_lsn()::text", &[])).expect("LSN");
        row.get(0)
    }

    fn wal_since(&self, lsn: &str) -> f64 {
        let statement = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8";
        self.runtime.block_on(self.admin.query_one(statement, &[&lsn])).expect("LSN difference").get(0)
    }

    /// This database's committed transactions so far, as the server's statistics say.
    fn commits(&self) -> i64 {
        // Backends report their counts at most once a second; this one's own now.
        let statement = "SELECT pg_stat_force_next_flush(); SELECT pg_stat_clear_snapshot()";
        self.runtime.block_on(self.admin.batch_execute(statement)).expect("statistics");
        let statement = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
        self.runtime.block_on(self.admin.query_one(statement, &[])).expect("commits").get(0)
    }

    /// Drops a run's schema, then lets the server settle (the files' removal, its
    /// writers) before the next run, which the runs taken in turn would otherwise pay.
    fn drop_schema(&self, schema: &PostgresSchema) {
        let statement = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", schema.name());
        self.runtime.block_on(self.admin.batch_execute(&statement)).expect("dropping the bench's schema");
        std::thread::sleep(QUIET_AFTER_RUN);
    }

    /// One run of the in-memory dispatcher.
    fn run_memory(&self) -> Run {
        self.tally.reset();
        let dispatcher = WebhookDispatcher::builder()
            .transport(Bench::transport())
            .runtime(Arc::new(TokioRuntime::from_handle(self.runtime.handle().clone())))
            .max_concurrent_pushes(CONCURRENCY)
            .build()
            .expect("dispatcher");
        for bot in 0..BOTS {
            dispatcher.configure(self.config(bot)).expect("open");
        }
        let events = self.events.clone();
        let busy_before = machine_busy_time();
        let start = Instant::now();
        for event in events {
            assert!(dispatcher.enqueue(event).is_accepted(), "accepted");
        }
        let end = self.runtime.block_on(self.tally.wait_complete(RUN_LIMIT));
        let cpu = machine_busy_since(busy_before);
        let posts = self.tally.pushes.load(Ordering::SeqCst);
        let report = self.runtime.block_on(dispatcher.shutdown(Duration::from_secs(10)));
        assert!(report.undelivered.is_empty(), "everything delivered");
        self.tally.assert_exactly_once("in-memory dispatcher");
        Run { elapsed: end - start, settled: end - start, wal_bytes: 0.0, commits: 0, posts, cpu }
    }

    /// One run of `processes` PostgreSQL dispatchers on one fresh schema.
    fn run_postgres(&self, processes: usize) -> Run {
        let schema = fresh_schema("dispatcher");
        let run = self.runtime.block_on(async {
            let mut client = connect(&self.database_url).await;
            migrate(&mut client, &schema).await.expect("migrating the bench's schema");
            let mut dispatchers = Vec::new();
            for _ in 0..processes {
                let dispatcher = PostgresDispatcher::builder(&self.database_url)
                    .schema(schema.clone())
                    .transport(Bench::transport())
                    .max_concurrent_pushes(CONCURRENCY)
                    .max_buffered_events(EVENTS)
                    .build()
                    .await
                    .expect("building a PostgreSQL dispatcher");
                // Each process configures its bots from the platform's settings at start.
                for bot in 0..BOTS {
                    dispatcher.configure(self.config(bot)).expect("open");
                }
                dispatcher.wait_durable(Duration::from_secs(30)).await.expect("settings committed");
                dispatchers.push(dispatcher);
            }
            dispatchers
        });
        let dispatchers = run;
        self.tally.reset();
        let mut shares: Vec<Vec<Event>> = vec![Vec::with_capacity(EVENTS / processes + 1); processes];
        for (index, event) in self.events.iter().enumerate() {
            shares[index % processes].push(event.clone());
        }
        let commits_before = self.commits();
        let lsn = self.wal_lsn();

        let busy_before = machine_busy_time();
        let start = Instant::now();
        std::thread::scope(|scope| {
            for (dispatcher, share) in dispatchers.iter().zip(shares) {
                scope.spawn(move || {
                    for event in share {
                        assert!(dispatcher.enqueue(event).is_accepted(), "accepted");
                    }
                });
            }
        });
        let enqueued = start.elapsed();
        let end = self.runtime.block_on(self.tally.wait_complete(RUN_LIMIT));
        let cpu = machine_busy_since(busy_before);
        let posts = self.tally.pushes.load(Ordering::SeqCst);
        let settled = self.runtime.block_on(async {
            tokio::time::timeout(RUN_LIMIT, async {
                while dispatchers[0].pending_in_database(None).await.expect("counting") > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("every delivered event deleted");
            start.elapsed()
        });
        let wal_bytes = self.wal_since(&lsn);
        let (first, half) = self.tally.milestones(start);
        for dispatcher in &dispatchers {
            let report = self.runtime.block_on(dispatcher.shutdown(Duration::from_secs(10)));
            assert!(report.undelivered.is_empty(), "everything delivered");
            assert_eq!(dispatcher.database_error(), None, "no database error");
        }
        drop(dispatchers);
        // Let the other backends report their statistics (at most once a second).
        std::thread::sleep(Duration::from_millis(1_100));
        let commits = self.commits() - commits_before;
        self.drop_schema(&schema);
        self.tally.assert_exactly_once("PostgreSQL dispatchers");
        let run = Run { elapsed: end - start, settled, wal_bytes, commits, posts, cpu };
        println!(
            "  {processes} PostgreSQL dispatcher(s): all enqueued after {:.0} ms; first event received after {first:.0} ms, \
             half after {half:.0} ms, all after {:.0} ms, all deleted after {:.0} ms; {posts} posts; {commits} commits; \
             {:.0} WAL bytes per event; {}",
            enqueued.as_secs_f64() * 1e3,
            run.elapsed.as_secs_f64() * 1e3,
            settled.as_secs_f64() * 1e3,
            wal_bytes / EVENTS as f64,
            run.cpu_text(),
        );
        run
    }

    /// One run of the host-written outbox.
    fn run_outbox(&self) -> Run {
        let schema = fresh_schema("outbox");
        let table = format!("\"{}\".outbox", schema.name());
        self.runtime
            .block_on(self.admin.batch_execute(&format!(
                "CREATE SCHEMA \"{}\";
                 CREATE TABLE {table} (id bigserial PRIMARY KEY, bot_token text NOT NULL, body bytea NOT NULL)",
                schema.name()
            )))
            .expect("creating the outbox");
        self.tally.reset();
        let events = self.events.clone();
        let commits_before = self.commits();
        let lsn = self.wal_lsn();

        let busy_before = machine_busy_time();
        let start = Instant::now();
        let produced = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..OUTBOX_WORKERS)
            .map(|_| {
                let worker = outbox_worker(
                    self.database_url.clone(),
                    table.clone(),
                    Arc::clone(&self.targets),
                    Arc::clone(&produced),
                );
                self.runtime.spawn(worker)
            })
            .collect();
        let producer = {
            let (url, table, produced) = (self.database_url.clone(), table.clone(), Arc::clone(&produced));
            self.runtime.spawn(async move {
                let client = connect(&url).await;
                let insert = client
                    .prepare(&format!("INSERT INTO {table} (bot_token, body) VALUES ($1, $2)"))
                    .await
                    .expect("preparing the insert");
                for event in events {
                    let token = event.bot_token().expect("known kinds carry a bot token").to_owned();
                    let array = support::serde_wire::serde_encode(std::slice::from_ref(&event));
                    // The event's object, without the array's brackets.
                    let body = &array[1..array.len() - 1];
                    client.execute(&insert, &[&token, &body]).await.expect("inserting an event");
                }
                produced.store(true, Ordering::SeqCst);
                start.elapsed()
            })
        };
        let end = self.runtime.block_on(self.tally.wait_complete(RUN_LIMIT));
        let cpu = machine_busy_since(busy_before);
        let produced_after = self.runtime.block_on(producer).expect("producer task");
        for worker in workers {
            self.runtime.block_on(worker).expect("worker task");
        }
        let settled = start.elapsed();
        let wal_bytes = self.wal_since(&lsn);
        let posts = self.tally.pushes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1_100));
        let commits = self.commits() - commits_before;
        self.drop_schema(&schema);
        self.tally.assert_exactly_once("outbox");
        let run = Run { elapsed: end - start, settled, wal_bytes, commits, posts, cpu };
        let (first, half) = self.tally.milestones(start);
        println!(
            "  outbox: all inserted after {:.0} ms; first event received after {first:.0} ms, half after {half:.0} ms, \
             all after {:.0} ms, all deleted after {:.0} ms; {posts} posts; {commits} commits; {:.0} WAL bytes per event; \
             {}",
            produced_after.as_secs_f64() * 1e3,
            run.elapsed.as_secs_f64() * 1e3,
            settled.as_secs_f64() * 1e3,
            wal_bytes / EVENTS as f64,
            run.cpu_text(),
        );
        run
    }
}

/// One outbox worker: claims up to `OUTBOX_CLAIM` rows in a transaction,
/// posts them grouped by bot, deletes them once every post answered 200 and
/// commits; ends when the producer is done and the outbox is empty.
async fn outbox_worker(
    url: String,
    table: String,
    targets: Arc<HashMap<String, (String, String)>>,
    produced: Arc<AtomicBool>,
) {
    let mut client = connect(&url).await;
    let http = plain_client();
    let claim =
        format!("SELECT id, bot_token, body FROM {table} ORDER BY id LIMIT {OUTBOX_CLAIM} FOR UPDATE SKIP LOCKED");
    let delete = format!("DELETE FROM {table} WHERE id = ANY($1)");
    loop {
        // Read before claiming: rows inserted before the flag was set are seen by the claim.
        let producer_done = produced.load(Ordering::SeqCst);
        let transaction = client.transaction().await.expect("BEGIN");
        let rows = transaction.query(&claim, &[]).await.expect("claiming rows");
        if rows.is_empty() {
            transaction.commit().await.expect("COMMIT");
            if producer_done {
                return;
            }
            tokio::time::sleep(PUSH_INTERVAL).await;
            continue;
        }
        let mut ids = Vec::with_capacity(rows.len());
        // Per bot, in claim order: its events' objects joined into one array.
        let mut groups: Vec<(String, Vec<u8>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            ids.push(row.get::<_, i64>(0));
            let token: String = row.get(1);
            let body: &[u8] = row.get(2);
            let index = *group_of.entry(token.clone()).or_insert_with(|| {
                groups.push((token, vec![b'[']));
                groups.len() - 1
            });
            let array = &mut groups[index].1;
            if array.len() > 1 {
                array.push(b',');
            }
            array.extend_from_slice(body);
        }
        let http = &http;
        let targets = &targets;
        post_all(
            CONCURRENCY,
            futures::stream::iter(groups).map(|(token, mut array)| {
                array.push(b']');
                let (url, bearer) = &targets[&token];
                status_of(json_post(http, url, bearer, array))
            }),
        )
        .await;
        transaction.execute(&delete, &[&ids]).await.expect("deleting the posted rows");
        transaction.commit().await.expect("COMMIT");
    }
}

fn main() {
    if !support::is_bench_run() {
        println!("{}: run with `cargo bench --bench postgres --features postgres`", file!());
        return;
    }
    let Some(database_url) = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()) else {
        println!(
            "SKIPPED postgres bench: DATABASE_URL is not set; it needs a PostgreSQL it may create and drop schemas in \
             (e.g. DATABASE_URL=postgres://USER:PASSWORD@127.0.0.1:5432/DATABASE, as `.ci/run` sets it)"
        );
        return;
    };
    let bench = Bench::new(database_url);
    println!(
        "postgres: {BOTS} bots, {EVENTS} events, push interval {PUSH_INTERVAL:?}, max_batch_events {MAX_BATCH_EVENTS}, \
         concurrency {CONCURRENCY} per process"
    );
    if let Some(runs) = std::env::var_os("EVENTHOOK_POSTGRES_DISPATCHERS_ONLY") {
        // For a profiler (see benches/README.md): two PostgreSQL dispatchers' runs alone (3, or as
        // many as the variable says), no report.
        let runs = runs.to_str().and_then(|runs| runs.parse().ok()).unwrap_or(3);
        for _ in 0..runs {
            let run = bench.run_postgres(2);
            println!(
                "2 PostgreSQL dispatchers: {:.0} events/s, {:.0} WAL bytes per event; {}",
                run.rate(),
                run.wal_per_event(),
                run.cpu_text()
            );
        }
        return;
    }
    // A warm-up run of each side, then the two main sides in turn: this
    // machine's speed drifts over minutes (a shared VM), and each side's
    // median of runs taken alternately sees the same drift.
    let _ = bench.run_memory();
    let _ = bench.run_postgres(2);
    let (mut memory_runs, mut two_runs) = (Vec::new(), Vec::new());
    for _ in 0..ALTERNATE_RUNS {
        let memory = bench.run_memory();
        println!(
            "  in-memory dispatcher: {:.0} events/s, {} posts; {}",
            memory.rate(),
            memory.posts,
            memory.cpu_text()
        );
        memory_runs.push(memory);
        two_runs.push(bench.run_postgres(2));
    }
    let (memory_cpu, two_cpu) = (Run::median_cpu(&memory_runs), Run::median_cpu(&two_runs));
    let memory = Run::median(memory_runs);
    let two = Run::median(two_runs);
    println!(
        "  medians of {ALTERNATE_RUNS}: in-memory {:.0} events/s, 2 PostgreSQL dispatchers {:.0} events/s",
        memory.rate(),
        two.rate()
    );
    let outbox = bench.run_outbox();
    let one = bench.run_postgres(1);
    let four = bench.run_postgres(4);
    println!();
    for (name, run) in [("1 process", &one), ("2 processes", &two), ("4 processes", &four)] {
        println!(
            "  PostgresDispatcher, {name}: {:.0} events/s ({:.2?} to the last event received, {:.2?} to the last \
             deleted), {:.1} commits per 1,000 events, {:.0} WAL bytes per event",
            run.rate(),
            run.elapsed,
            run.settled,
            run.commits as f64 / EVENTS as f64 * 1e3,
            run.wal_per_event()
        );
    }
    println!(
        "  outbox: {:.0} events/s ({:.2?}, {:.2?}), {:.1} commits per 1,000 events, {:.0} WAL bytes per event",
        outbox.rate(),
        outbox.elapsed,
        outbox.settled,
        outbox.commits as f64 / EVENTS as f64 * 1e3,
        outbox.wal_per_event()
    );
    support::report(
        "postgres/vs_in_memory",
        "2 PG dispatchers' events/s / in-memory's",
        two.rate() / memory.rate(),
        Goal::AtLeast(0.5),
        &format!("{:.0} vs {:.0} events/s; each event received exactly once", two.rate(), memory.rate()),
    );
    if let Some((two_cpu, memory_cpu)) = two_cpu.zip(memory_cpu) {
        support::report(
            "postgres/cpu_vs_in_memory",
            "2 PG dispatchers' CPU per run / in-memory's",
            two_cpu.as_secs_f64() / memory_cpu.as_secs_f64(),
            Goal::Reported,
            &format!(
                "{:.2} vs {:.2} s, medians of the machine's busy time (the server's included)",
                two_cpu.as_secs_f64(),
                memory_cpu.as_secs_f64()
            ),
        );
    }
    support::report(
        "postgres/vs_outbox",
        "2 PG dispatchers' events/s / outbox's",
        two.rate() / outbox.rate(),
        Goal::AtLeast(2.0),
        &format!(
            "{:.0} vs {:.0} events/s, {} vs {} posts; each event received exactly once",
            two.rate(),
            outbox.rate(),
            two.posts,
            outbox.posts
        ),
    );
    support::report(
        "postgres/wal_vs_outbox",
        "WAL bytes per event / outbox's",
        two.wal_per_event() / outbox.wal_per_event(),
        Goal::Reported,
        &format!("{:.0} vs {:.0} bytes per event", two.wal_per_event(), outbox.wal_per_event()),
    );
    support::report(
        "postgres/scaling_2_vs_1",
        "2 processes' events/s / 1's",
        two.rate() / one.rate(),
        Goal::Reported,
        &format!("{:.0} vs {:.0} events/s", two.rate(), one.rate()),
    );
    support::report(
        "postgres/scaling_4_vs_1",
        "4 processes' events/s / 1's",
        four.rate() / one.rate(),
        Goal::Reported,
        &format!("{:.0} vs {:.0} events/s", four.rate(), one.rate()),
    );
}
