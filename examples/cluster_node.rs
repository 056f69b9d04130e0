//! One node of a cluster of bot-engine processes sharing one PostgreSQL
//! store (feature `postgres`): run several at once, kill one, and watch the
//! others deliver what it committed.
//!
//! Each node migrates the schema, configures bots `bot-0` .. `bot-{N-1}`
//! (the same settings on every node), enqueues `--events` user messages per
//! bot spread over about two push intervals, and delivers whatever is due
//! in the store, whichever node accepted it. Each message's `ConversationId`
//! is `<node>-<bot index>-<sequence>`, so a receiver can tell who accepted
//! what and in which order.
//!
//! ```text
//! cluster_node --url RECEIVER_URL --secret S --node NAME [--database-url URL]
//!              [--bots N] [--events M] [--interval-ms I] [--drain] [--run-ms T]
//!              [--schema NAME] [--request-timeout-ms R]
//!
//!   --database-url URL      the PostgreSQL store (default: the DATABASE_URL environment variable)
//!   --url URL               where the bots' webhooks push (127.0.0.1 is allowed)
//!   --secret S              the bots' API secret, sent as bearer (default: EVENTHOOK_SECRET)
//!   --node NAME             this node's name, the first part of its ConversationIds
//!   --bots N                bots bot-0 .. bot-{N-1} (default 10)
//!   --events M              user messages per bot this node enqueues (default 30; 0: none)
//!   --interval-ms I         the webhooks' push interval (default 1000)
//!   --drain                 stay until nothing of the N bots is pending in the store,
//!                           not only until what this node accepted is delivered
//!   --run-ms T              give up after T ms (default 60000)
//!   --schema NAME           the store's schema (default eventhook)
//!   --request-timeout-ms R  the webhooks' request timeout (default 10000); a node
//!                           killed mid-call holds that bot for 2 R + 5 s
//! ```
//!
//! It prints `ALERT <bot token>` for each webhook-disabled alert its
//! `AlertSink` receives (each alert reaches one node of the cluster), and at
//! the end `STATS accepted=A delivered=D pending=P dropped=X`: this node's
//! counts. It exits 0 once every event it accepted is delivered or dropped
//! (by any node), or with `--drain` once the store holds no event of the N
//! bots; 2 when `--run-ms` passed first (said on stderr); 1 on a bad
//! argument or an error. `--events 0 --drain` makes a node that only delivers.
//!
//! A node configures a bot only when the store does not already hold it
//! with these settings: saving a webhook re-enables it and starts its count
//! of failures again, as saving a bot's settings does on the platform, so a
//! node joining a running cluster leaves the others' counts, and a webhook
//! they disabled, alone. A bot disabled in an earlier run stays disabled
//! until its settings change (another `--url`, `--interval-ms` or
//! `--secret`) or the run uses a fresh `--schema`.
//!
//! `pending` in `STATS` is the bots' events in the store as this node last
//! read them (it reads every second), plus any it could not commit.
//!
//! Three nodes against the receiver example, from the repository's top:
//!
//! ```sh
//! export DATABASE_URL=postgres://user:password@127.0.0.1:5432/database EVENTHOOK_SECRET=s3cr3t
//! cargo build --release --features postgres,axum --example cluster_node --example receiver
//! target/release/examples/receiver &        # prints one line per push, on 127.0.0.1:8080
//! node() { target/release/examples/cluster_node --url http://127.0.0.1:8080/events \
//!     --bots 5 --interval-ms 2000 "$@"; }
//! node --node a --events 40 & node --node b --events 40 & node --node c --events 0 --drain
//! ```
//!
//! Each bot gets one push per two seconds over the three nodes, carrying the
//! messages of `a` and `b`; `c` delivers its share and stays until the
//! store is empty. Kill `a` with `kill -9` mid-run: whatever it committed
//! is delivered by `b` and `c`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use eventhook::adapters::ReqwestTransport;
use eventhook::dispatch::{Dispatcher, EnqueueOutcome};
use eventhook::postgres::{load_webhooks, migrate, PostgresDispatcher, PostgresSchema, StoredWebhook};
use eventhook::{AlertSink, ChatContext, Event, EventFlags, WebhookConfig, WebhookDisabledAlert};
use tokio::time::Instant;

const USAGE: &str = "usage: cluster_node --url RECEIVER_URL --secret S --node NAME [--database-url URL] \
[--bots N] [--events M] [--interval-ms I] [--drain] [--run-ms T] [--schema NAME] [--request-timeout-ms R]
(see the top of examples/cluster_node.rs)";

const ACCOUNT: &str = "Cluster Test";

struct Options {
    database_url: String,
    url: String,
    secret: String,
    node: String,
    bots: usize,
    events: usize,
    interval: Duration,
    drain: bool,
    run: Duration,
    schema: PostgresSchema,
    request_timeout: Duration,
}

fn parse_options(arguments: impl Iterator<Item = String>) -> Result<Options, String> {
    let (mut database_url, mut url, mut secret, mut node, mut schema) = (None, None, None, None, None);
    let (mut bots, mut events, mut interval_ms, mut run_ms, mut request_timeout_ms) = (10, 30, 1000, 60_000, 10_000);
    let mut drain = false;
    let mut arguments = arguments;
    while let Some(argument) = arguments.next() {
        let mut value = |name: &str| arguments.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, text: String| -> Result<u64, String> {
            text.parse().map_err(|_| format!("{name}: {text:?} is not a whole number"))
        };
        match argument.as_str() {
            "--database-url" => database_url = Some(value("--database-url")?),
            "--url" => url = Some(value("--url")?),
            "--secret" => secret = Some(value("--secret")?),
            "--node" => node = Some(value("--node")?),
            "--schema" => schema = Some(value("--schema")?),
            "--bots" => bots = number("--bots", value("--bots")?)?,
            "--events" => events = number("--events", value("--events")?)?,
            "--interval-ms" => interval_ms = number("--interval-ms", value("--interval-ms")?)?.max(1),
            "--run-ms" => run_ms = number("--run-ms", value("--run-ms")?)?,
            "--request-timeout-ms" => {
                request_timeout_ms = number("--request-timeout-ms", value("--request-timeout-ms")?)?.max(1)
            }
            "--drain" => drain = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let from_environment = |name: &str, flag: &str| {
        std::env::var(name).map_err(|_| format!("{flag} is missing (and {name} is not set)\n{USAGE}"))
    };
    let database_url = database_url.map_or_else(|| from_environment("DATABASE_URL", "--database-url"), Ok)?;
    let secret = secret.map_or_else(|| from_environment("EVENTHOOK_SECRET", "--secret"), Ok)?;
    let schema = match schema {
        Some(name) => PostgresSchema::new(name).map_err(|error| format!("--schema: {error}"))?,
        None => PostgresSchema::default(),
    };
    Ok(Options {
        database_url,
        url: url.ok_or_else(|| format!("--url is missing\n{USAGE}"))?,
        secret,
        node: node.ok_or_else(|| format!("--node is missing\n{USAGE}"))?,
        bots: usize::try_from(bots).map_err(|_| "--bots is too large".to_owned())?,
        events: usize::try_from(events).map_err(|_| "--events is too large".to_owned())?,
        interval: Duration::from_millis(interval_ms),
        drain,
        run: Duration::from_millis(run_ms),
        schema,
        request_timeout: Duration::from_millis(request_timeout_ms),
    })
}

/// One line per alert, for whoever reads this node's output.
#[derive(Debug)]
struct PrintAlerts;

impl AlertSink for PrintAlerts {
    fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
        println!("ALERT {}", alert.bot_token);
    }
}

/// Whether the store already holds `config`'s bot with these settings (enabled or not).
fn holds(stored: Option<&StoredWebhook>, config: &WebhookConfig) -> bool {
    stored.is_some_and(|stored| {
        let held = &stored.config;
        held.account_name() == config.account_name()
            && held.url() == config.url()
            && held.secret().expose() == config.secret().expose()
            && held.events() == config.events()
            && held.push_interval() == config.push_interval()
            && held.request_timeout() == config.request_timeout()
    })
}

/// How a run ended.
enum Ending {
    Done,
    TimedOut(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    match run(&options).await {
        Ok(Ending::Done) => ExitCode::SUCCESS,
        Ok(Ending::TimedOut(what)) => {
            eprintln!("cluster_node {}: --run-ms {} passed: {what}", options.node, options.run.as_millis());
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("cluster_node {}: {error}", options.node);
            ExitCode::FAILURE
        }
    }
}

async fn run(options: &Options) -> Result<Ending, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + options.run;
    let (mut client, connection) = tokio_postgres::connect(&options.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    migrate(&mut client, &options.schema).await?;
    let transport = ReqwestTransport::builder().allow_private_networks(true).build()?;
    let dispatcher = PostgresDispatcher::builder(&options.database_url)
        .schema(options.schema.clone())
        .transport(Arc::new(transport))
        .alert_sink(Arc::new(PrintAlerts))
        .build()
        .await?;

    let stored: HashMap<String, StoredWebhook> = load_webhooks(&client, &options.schema)
        .await?
        .into_iter()
        .map(|stored| (stored.config.bot_token().to_owned(), stored))
        .collect();
    drop(client);
    let bots: Vec<String> = (0..options.bots).map(|index| format!("bot-{index}")).collect();
    let mut factories = Vec::with_capacity(bots.len());
    for bot in &bots {
        let config = WebhookConfig::builder(bot.as_str(), ACCOUNT, options.url.as_str(), options.secret.as_str())
            .events(EventFlags::all())
            .push_interval(options.interval)
            .request_timeout(options.request_timeout)
            .build()?;
        factories.push(config.event_factory());
        if !holds(stored.get(bot), &config) {
            dispatcher.configure(config)?;
        }
    }

    // `--events` rounds of one message per bot, spread over two intervals.
    let started = Instant::now();
    let pause = options.interval * 2 / u32::try_from(options.events.max(1)).unwrap_or(u32::MAX);
    let mut refused = 0usize;
    for sequence in 0..options.events {
        if Instant::now() >= deadline {
            break;
        }
        for (index, factory) in factories.iter().enumerate() {
            let chat = ChatContext::new(format!("{}-{index}-{sequence}", options.node), "WebChannel");
            let text = format!("message {sequence} of node {}", options.node);
            if dispatcher.enqueue(Event::UserMessage(factory.message(&chat, text))) != EnqueueOutcome::Accepted {
                refused += 1;
            }
        }
        tokio::time::sleep_until(started + pause * u32::try_from(sequence + 1).unwrap_or(u32::MAX)).await;
    }
    if refused > 0 {
        eprintln!("cluster_node {}: {refused} events refused (see STATS)", options.node);
    }

    let ending = settle(&dispatcher, options, &bots, deadline).await;
    let report = dispatcher.shutdown(Duration::from_secs(10)).await;
    let totals = report.stats.totals;
    println!(
        "STATS accepted={} delivered={} pending={} dropped={}",
        totals.accepted,
        totals.delivered,
        totals.pending,
        totals.dropped_total()
    );
    if !report.undelivered.is_empty() {
        eprintln!("cluster_node {}: {} accepted events never committed", options.node, report.undelivered.len());
    }
    Ok(ending)
}

/// Waits until what this node accepted is delivered or dropped (with
/// `--drain`: until the bots have nothing pending in the store), or the deadline.
async fn settle(dispatcher: &PostgresDispatcher, options: &Options, bots: &[String], deadline: Instant) -> Ending {
    let bots: Vec<&str> = bots.iter().map(String::as_str).collect();
    // Each check opens a connection: a few a second is plenty.
    let pause = (options.interval / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
    let mut last = String::from("nothing checked yet");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ending::TimedOut(last);
        }
        last = match dispatcher.wait_durable(remaining).await {
            Err(error) => error.to_string(),
            Ok(()) => match dispatcher.undelivered().await {
                Err(error) => error.to_string(),
                Ok(0) if !options.drain => return Ending::Done,
                Ok(0) => match dispatcher.pending_in_database(Some(&bots)).await {
                    Err(error) => error.to_string(),
                    Ok(0) => return Ending::Done,
                    Ok(pending) => format!("{pending} events of the bots still pending in the store"),
                },
                Ok(undelivered) => format!("{undelivered} events accepted here (or older) not delivered yet"),
            },
        };
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
