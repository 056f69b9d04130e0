//! The whole loop, end to end, with nothing to set up.
//!
//! Starts a webhook receiver on 127.0.0.1 (an ephemeral port), configures two
//! bots, enqueues a realistic conversation, and prints what the receiver got,
//! verified and parsed (with an entry of each push shown as it was on the
//! wire: a card's `ItemSubType`, the conversation `Variables` the webhook
//! includes). Then makes the receiver fail until the webhook is
//! disabled (the 11th failed call) and alerted, re-enables it by configuring
//! it again, and shows delivery resume. With `--metrics` it ends with the
//! Prometheus text exposition of every metric the dispatcher recorded, and
//! checks that the delivered total is what the receiver got.
//!
//! ```sh
//! cargo run --example quickstart
//! cargo run --example quickstart -- --metrics
//! cargo run --example quickstart -- --interval-ms 200 --events 20
//! cargo run --example quickstart -- --url http://127.0.0.1:8080/events --secret s3cr3t   # your own receiver
//! cargo run --example quickstart -- --url http://127.0.0.1:8080/events --secret s3cr3t \
//!     --signing-secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw                              # ... signing each push
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use eventhook::adapters::{ReqwestTransport, TokioRuntime};
use eventhook::dispatch::{CallRecord, DeliveryObserver, Dispatcher, DroppedEvents, WebhookDispatcher, WebhookState};
use eventhook::receiver::WebhookReceiver;
use eventhook::{
    AlertSink, BotSecret, ChatContext, Event, EventFactory, EventFlags, EventKind, WebhookConfig, WebhookDisabledAlert,
};

struct Options {
    interval: Duration,
    events_per_bot: usize,
    external: Option<External>,
    metrics: bool,
}

/// A receiver of the user's: where, the bearer, and the signing secret if any.
struct External {
    url: String,
    secret: String,
    signing_secret: Option<String>,
}

const USAGE: &str =
    "usage: quickstart [--url URL --secret S [--signing-secret whsec_...]] [--interval-ms N] [--events N] [--metrics]";

fn parse_options() -> Result<Options, String> {
    let mut options =
        Options { interval: Duration::from_millis(250), events_per_bot: 8, external: None, metrics: false };
    let (mut url, mut secret, mut signing_secret) = (None, None, None);
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let mut value = |name: &str| arguments.next().ok_or_else(|| format!("{name} needs a value"));
        match argument.as_str() {
            "--url" => url = Some(value("--url")?),
            "--secret" => secret = Some(value("--secret")?),
            "--signing-secret" => signing_secret = Some(value("--signing-secret")?),
            "--interval-ms" => {
                let text = value("--interval-ms")?;
                let millis: u64 = text.parse().map_err(|_| format!("--interval-ms: {text:?} is not a number"))?;
                options.interval = Duration::from_millis(millis.max(1));
            }
            "--events" => {
                let text = value("--events")?;
                options.events_per_bot = text.parse().map_err(|_| format!("--events: {text:?} is not a number"))?;
            }
            "--metrics" if cfg!(feature = "metrics") => options.metrics = true,
            "--metrics" => {
                return Err(
                    "--metrics needs the examples' `metrics` feature (on unless --no-default-features)".to_owned()
                )
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    options.external = match (url, secret, signing_secret) {
        (Some(url), Some(secret), signing_secret) => Some(External { url, secret, signing_secret }),
        (None, None, None) => None,
        (None, None, Some(_)) => return Err("--signing-secret goes with --url and --secret".to_owned()),
        _ => return Err("--url and --secret go together".to_owned()),
    };
    Ok(options)
}

/// Prints alerts as the platform would e-mail them.
#[derive(Debug, Default)]
struct PrintAlerts {
    alerts: AtomicUsize,
}

impl AlertSink for PrintAlerts {
    fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
        self.alerts.fetch_add(1, Ordering::SeqCst);
        println!("  ALERT to account {:?}: {alert}", alert.account_name);
    }
}

/// Counts billable calls and shows dropped events.
#[derive(Debug, Default)]
struct Billing {
    calls: AtomicUsize,
}

impl DeliveryObserver for Billing {
    fn call_made(&self, call: &CallRecord) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !call.outcome.is_success() {
            println!("  call to {} failed: {}", call.url, call.outcome);
        }
    }

    fn events_dropped(&self, dropped: &DroppedEvents) {
        println!(
            "  {} pending events of {} handed to the host: {}",
            dropped.events.len(),
            dropped.bot_token,
            dropped.reason
        );
    }
}

/// The receiving side: one verifying receiver per bot, and a switch to make it fail.
#[derive(Clone)]
struct Hook {
    receiver: WebhookReceiver,
    failing: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Event>>>,
    /// Whether this bot's first pushes have been shown entry by entry yet.
    shown: Arc<AtomicBool>,
}

/// The entries of a push worth showing as they were on the wire: one with an
/// `ItemSubType` and one with `Variables` (or the first, when none has either).
fn notable(events: &[Event]) -> Vec<&Event> {
    let has_subtype = |event: &&Event| matches!(event, Event::BotMessage(message) if message.item_sub_type.is_some());
    let has_variables = |event: &&Event| !event.variables().is_empty();
    let mut shown: Vec<&Event> = events.iter().find(has_subtype).into_iter().collect();
    if !shown.iter().any(has_variables) {
        shown.extend(events.iter().find(has_variables));
    }
    if shown.is_empty() {
        shown.extend(events.first());
    }
    shown
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let events = match hook.receiver.receive(&headers, &body) {
        Ok(events) => events,
        Err(error) => return (error.status(), error.public_message()),
    };
    if hook.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "receiver is down for the demo".to_owned());
    }
    let mut kinds = BTreeMap::new();
    for event in &events {
        *kinds.entry(event.kind().map_or("unknown", |kind| kind.name())).or_insert(0) += 1;
    }
    let bot = events.first().and_then(Event::bot_token).unwrap_or("?").to_owned();
    println!("  receiver: verified push from {bot}: {} events {kinds:?}", events.len());
    if !hook.shown.swap(true, Ordering::SeqCst) {
        for event in notable(&events) {
            // The crate's encoder writes back exactly the bytes it read.
            let mut entry = Vec::new();
            eventhook::wire::encode_event(event, &mut entry);
            println!("    on the wire: {}", String::from_utf8_lossy(&entry));
        }
    }
    hook.received.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(events);
    (StatusCode::OK, String::new())
}

/// A realistic conversation of `count` events for one bot. The engine gives
/// the conversation's variables, all of them; each webhook sends those it lists.
fn conversation(bot: &EventFactory, conversation_id: &str, count: usize) -> Vec<Event> {
    let chat = ChatContext::new(conversation_id, "TelegramChannel")
        .user_name("Ada Lovelace")
        .variable("plan", "gold")
        .variable("email", "ada@example.com")
        .variable("cart_total", "129.90");
    let script = [
        Event::NewUser(bot.conversation(&chat)),
        Event::UserMessage(bot.message(&chat, "Hello there!")),
        Event::BotMessage(bot.message(&chat, "Hey you, I'm your chatbot! Want to track an order?").item_type("Text")),
        Event::BotMessage(bot.message(&chat, "Pick an order").item_type("Card").item_sub_type("Carousel")),
        Event::UserMessage(bot.message(&chat, "Yes, track my order|TRACK_ORDER").item_type("Button")),
        Event::UserMessage(bot.message(&chat, "wo ist mein Paket? 📦")),
        Event::NlpMissed(bot.missed_text(&chat, "wo ist mein Paket? 📦")),
        Event::Fallback(bot.conversation(&chat)),
        Event::HandOver(bot.conversation(&chat).data("to the support team")),
    ];
    script.into_iter().cycle().take(count).collect()
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn print_stats(dispatcher: &dyn Dispatcher, bots: &[&str]) {
    for bot in bots {
        if let Some(stats) = dispatcher.webhook_stats(bot) {
            let counts = stats.counts;
            println!(
                "  {bot}: {:?}, accepted {}, delivered {}, pending {}, dropped {}, calls {} ({} failed), not selected {}",
                stats.state,
                counts.accepted,
                counts.delivered,
                counts.pending + counts.in_flight,
                counts.dropped_total(),
                counts.calls,
                counts.calls_failed,
                counts.refused(eventhook::dispatch::Refusal::NotSelected),
            );
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The recorder goes in before the dispatcher is built: its metrics register then.
    #[cfg(feature = "metrics")]
    let exposition = match options.metrics.then(metrics_exporter_prometheus::PrometheusBuilder::new) {
        Some(builder) => match builder.install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                eprintln!("--metrics: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let result = match &options.external {
        Some(external) => run_external(&options, external).await,
        None => run_local(&options).await,
    };
    #[cfg(feature = "metrics")]
    let result = match (result, exposition) {
        (Ok(received), Some(handle)) => print_exposition(&handle.render(), received).map(|()| received),
        (result, _) => result,
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickstart failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn build_dispatcher(
    allow_private_networks: bool,
    alerts: Arc<PrintAlerts>,
    billing: Arc<Billing>,
) -> Result<WebhookDispatcher, Box<dyn std::error::Error>> {
    let transport = ReqwestTransport::builder().allow_private_networks(allow_private_networks).build()?;
    Ok(WebhookDispatcher::builder()
        .transport(Arc::new(transport))
        .runtime(Arc::new(TokioRuntime::current()))
        .alert_sink(alerts)
        .observer(billing)
        .build()?)
}

/// Prints what a scraper of `/metrics` would read, and checks its delivered
/// total against the events the receiver acknowledged.
#[cfg(feature = "metrics")]
fn print_exposition(text: &str, received: u64) -> Result<(), Box<dyn std::error::Error>> {
    println!("8. Metrics, as a Prometheus scraper of /metrics would read them:\n");
    println!("{text}");
    let delivered = text
        .lines()
        .find_map(|line| line.strip_prefix("eventhook_events_delivered_total "))
        .ok_or("no eventhook_events_delivered_total in the exposition")?;
    if delivered.trim().parse::<u64>()? != received {
        return Err(format!("eventhook_events_delivered_total is {delivered}, the receiver got {received}").into());
    }
    println!("eventhook_events_delivered_total {received}: exactly what the receiver got.");
    Ok(())
}

/// Runs the whole loop on 127.0.0.1; returns how many events the receiver got.
async fn run_local(options: &Options) -> Result<u64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let bots = [("support-bot", "support-secret-1f9c"), ("sales-bot", "sales-secret-77ab")];
    let failing = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut app = Router::new();
    for (bot, secret) in bots {
        let hook = Hook {
            receiver: WebhookReceiver::new(BotSecret::new(secret)?),
            failing: Arc::clone(&failing),
            received: Arc::clone(&received),
            shown: Arc::new(AtomicBool::new(false)),
        };
        app = app.merge(Router::new().route(&format!("/hooks/{bot}"), post(receive)).with_state(hook));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address: SocketAddr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!("1. Receiver listening on http://{address}/hooks/<bot> (checks the bearer, parses the events).");
    println!("   The webhooks point at 127.0.0.1, so the dispatcher is built with private networks allowed;");
    println!("   by default it refuses loopback and private addresses, since bot owners choose the URLs.");

    let alerts = Arc::new(PrintAlerts::default());
    let billing = Arc::new(Billing::default());
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(build_dispatcher(true, Arc::clone(&alerts), Arc::clone(&billing))?);
    let config = |bot: &str, secret: &str, events: EventFlags, variables: &[&str]| {
        WebhookConfig::builder(bot, "Matelab Srl", format!("http://{address}/hooks/{bot}"), secret)
            .events(events)
            .include_variables(variables.iter().copied())
            .push_interval(options.interval)
            .request_timeout(Duration::from_secs(2))
            .build()
    };
    let sales_selection = EventFlags::from_kinds([
        EventKind::UserMessage,
        EventKind::NlpMissed,
        EventKind::Fallback,
        EventKind::HandOver,
    ]);
    let support_variables = ["plan", "email"];
    dispatcher.configure(config(bots[0].0, bots[0].1, EventFlags::all(), &support_variables)?)?;
    dispatcher.configure(config(bots[1].0, bots[1].1, sales_selection, &[])?)?;
    println!(
        "2. Configured {} (every event, including variables {support_variables:?}) and {} ({:?}, no variables), \
         push interval {:?}.",
        bots[0].0, bots[1].0, sales_selection, options.interval
    );

    let mut expected = 0;
    for (index, (bot, _)) in bots.iter().enumerate() {
        let factory = EventFactory::new(*bot, "Matelab Srl");
        for event in conversation(&factory, &format!("conversation-{index}"), options.events_per_bot) {
            expected += usize::from(dispatcher.enqueue(event).is_accepted());
        }
    }
    println!(
        "3. Enqueued {} events per bot; {expected} accepted (the rest not selected by sales-bot).",
        options.events_per_bot
    );
    let delivered =
        wait_until(Duration::from_secs(10), || received.lock().map_or(0, |events| events.len()) >= expected).await;
    if !delivered {
        return Err("the receiver did not get every event within 10 s".into());
    }
    println!("4. The receiver got all {expected} events, verified and parsed. Stats:");
    print_stats(&*dispatcher, &[bots[0].0, bots[1].0]);

    println!("5. Now the receiver answers 500: each push fails, and its events wait for the next one...");
    failing.store(true, Ordering::SeqCst);
    let factory = EventFactory::new(bots[0].0, "Matelab Srl");
    let chat = ChatContext::new("conversation-9", "WebChatChannel");
    let _ = dispatcher.enqueue(Event::ConversationError(factory.conversation(&chat).data("flow 'checkout' failed")));
    let disabled = wait_until(Duration::from_secs(10), || alerts.alerts.load(Ordering::SeqCst) > 0).await;
    let stats = dispatcher.webhook_stats(bots[0].0).ok_or("support-bot vanished")?;
    if !disabled || stats.state != WebhookState::Disabled {
        return Err("the webhook was not disabled".into());
    }
    println!(
        "   disabled after {} failed calls in a row; enqueue now answers {:?}.",
        stats.counts.calls_failed,
        dispatcher.enqueue(Event::ConversationError(factory.conversation(&chat)))
    );

    println!("6. The owner fixes the receiver and saves the bot's settings again: re-enabled.");
    failing.store(false, Ordering::SeqCst);
    dispatcher.configure(config(bots[0].0, bots[0].1, EventFlags::all(), &support_variables)?)?;
    let before = received.lock().map_or(0, |events| events.len());
    let _ = dispatcher.enqueue(Event::UserMessage(factory.message(&chat, "Is anyone there?")));
    if !wait_until(Duration::from_secs(5), || received.lock().map_or(0, |events| events.len()) > before).await {
        return Err("delivery did not resume".into());
    }
    let report = dispatcher.shutdown(Duration::from_secs(2)).await;
    println!(
        "7. Shut down: {} undelivered events handed back; {} billable calls made. Final stats:",
        report.undelivered.len(),
        billing.calls.load(Ordering::SeqCst)
    );
    print_stats(&*dispatcher, &[bots[0].0, bots[1].0]);
    let totals = report.stats.totals;
    println!(
        "   totals: accepted {} = delivered {} + pending {} + in flight {} + dropped {}. Done in {:.1?}.",
        totals.accepted,
        totals.delivered,
        totals.pending,
        totals.in_flight,
        totals.dropped_total(),
        started.elapsed()
    );
    Ok(received.lock().map_or(0, |events| events.len() as u64))
}

/// Sends a conversation to the user's receiver; returns how many events it acknowledged.
async fn run_external(options: &Options, external: &External) -> Result<u64, Box<dyn std::error::Error>> {
    let bot = "quickstart-bot";
    let url = external.url.as_str();
    let config = WebhookConfig::builder(bot, "Quickstart Account", url, external.secret.as_str())
        .signing_secrets(external.signing_secret.iter().map(String::as_str))
        .include_variables(["plan", "email"])
        .push_interval(options.interval)
        .request_timeout(Duration::from_secs(5))
        .build()?;
    // A receiver on this machine (e.g. `cargo run --example receiver`) is on a loopback address.
    let host = config.url().host().trim_matches(|character| character == '[' || character == ']');
    let local = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback());
    if local {
        println!("{url} is on this machine: allowing private networks for this run.");
    }
    if external.signing_secret.is_some() {
        println!("Signing every push (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature).");
    }
    let alerts = Arc::new(PrintAlerts::default());
    let dispatcher = build_dispatcher(local, Arc::clone(&alerts), Arc::new(Billing::default()))?;
    dispatcher.configure(config)?;
    let factory = EventFactory::new(bot, "Quickstart Account");
    let mut accepted = 0u64;
    for event in conversation(&factory, "conversation-1", options.events_per_bot) {
        accepted += u64::from(dispatcher.enqueue(event).is_accepted());
    }
    println!("Enqueued {accepted} events for {url}; waiting until delivered or disabled (at most 20 s)...");
    wait_until(Duration::from_secs(20), || {
        dispatcher
            .webhook_stats(bot)
            .is_some_and(|stats| stats.counts.delivered == accepted || stats.state == WebhookState::Disabled)
    })
    .await;
    print_stats(&dispatcher, &[bot]);
    let report = dispatcher.shutdown(Duration::from_secs(1)).await;
    println!("{} events undelivered.", report.undelivered.len());
    Ok(report.stats.totals.delivered)
}
