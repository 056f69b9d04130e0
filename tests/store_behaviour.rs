//! The delivery rules as a host sees them, one suite run against both stores:
//! the in-memory `WebhookDispatcher` and the `PostgresDispatcher` (with a
//! real PostgreSQL; skipped loudly without `DATABASE_URL`).
//!
//! Each rule is a function of a [`Setup`]; `store_tests!` runs it on each
//! store. Times are real but short (push intervals of tens of milliseconds);
//! timing assertions have wide margins ("not before 0.8 × the interval",
//! "at once" as "within half of it"). Where the PostgreSQL store documents a
//! difference (`remove` hands no events back, pending counts are as of its
//! last poll, its queue bound is checked against that count, `shutdown`
//! leaves committed events in the database), a rule states the shared
//! behaviour and names the store-specific part by [`Setup::store`].
//!
//! The rule tests of `tests/dispatch_core.rs` that stay there only, as they
//! need the sans-IO core's own API or its manual clock:
//! - `a_queue_bound_larger_than_the_intake_ring_holds_exactly`,
//!   `a_global_bound_larger_than_the_intake_ring_holds_exactly`,
//!   `a_burst_larger_than_the_intake_ring_is_taken_in_whole`,
//!   `a_webhook_filled_during_global_crowding_keeps_its_bound_after_it`:
//!   the in-memory intake's ring and take-ins (`take_in_all`), and the
//!   global `max_pending_events` bound, which the PostgreSQL store does not
//!   have (its `max_buffered_events` bounds uncommitted events instead);
//!   the global-bound part of `enqueue_says_what_happened` likewise.
//! - `bot_senders_racing_remove_and_close_lose_and_double_count_nothing`,
//!   `a_bot_sender_sees_a_disable_and_a_reconfiguration_at_once`: races of
//!   `BotSender`s on other threads against the core's `remove`/`close`, and
//!   the in-memory sender's cached settings (here, a sender's answers after
//!   a disable, re-enable and reconfiguration are checked on both stores).
//! - `snapshots_taken_during_enqueue_balance`: exact balanced snapshots
//!   during `enqueue`, which the PostgreSQL store's counts as of its last
//!   poll do not promise.
//! - `call_ids_are_unique_across_bots_and_cores`: two cores on clocks
//!   showing the same time (here: a new call gets a new id).
//! - The exact times of the core tests (a retry exactly one interval later,
//!   11 failures in exactly 10 intervals, a tenth of the bots per tenth of
//!   the interval, the alert's `disabled_at`): here as bounds.
// The in-memory dispatcher runs on its default runtime, tokio.
#![cfg(feature = "tokio")]

mod common;
#[cfg(feature = "postgres")]
mod postgres_support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::Recorder;
use eventhook::dispatch::{Dispatcher, DropReason, EnqueueOutcome, WebhookDispatcher};
use eventhook::{
    ChatContext, Event, EventFactory, EventFlags, EventKind, Plan, Transport, TransportError, TransportErrorKind,
    WebhookConfig, WebhookConfigBuilder,
};

/// Answers with scripted statuses (0 for a connection reset), then 200, and
/// always 500 for the bots in `down`; records every call as it starts. While
/// held, calls wait inside `send` until released.
#[derive(Debug)]
struct ScriptedTransport {
    script: Mutex<VecDeque<u16>>,
    down: Mutex<Vec<String>>,
    calls: Mutex<Vec<Call>>,
    bodies: Mutex<Vec<Vec<u8>>>,
    open: tokio::sync::watch::Sender<bool>,
    /// Calls under way per bot, and every bot that had two at once.
    under_way: Mutex<HashMap<String, usize>>,
    overlapping: Mutex<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Call {
    bot: String,
    texts: Vec<String>,
    webhook_id: Option<String>,
    at: Instant,
    status: u16,
    method: http::Method,
    uri: String,
    headers: http::HeaderMap,
}

impl ScriptedTransport {
    fn new(script: Vec<u16>) -> ScriptedTransport {
        ScriptedTransport {
            script: Mutex::new(script.into()),
            down: Mutex::default(),
            calls: Mutex::default(),
            bodies: Mutex::default(),
            open: tokio::sync::watch::channel(true).0,
            under_way: Mutex::default(),
            overlapping: Mutex::default(),
        }
    }

    /// Calls from now on wait until [`release`](Self::release).
    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(request.body()).expect("a JSON array");
        let texts = events.iter().map(|event| event["Data"].as_str().unwrap_or_default().to_owned()).collect();
        let webhook_id = request.headers().get("webhook-id").and_then(|id| id.to_str().ok()).map(str::to_owned);
        let bot = events[0]["BotToken"].as_str().unwrap_or_default().to_owned();
        let status = if self.down.lock().unwrap().contains(&bot) {
            500
        } else {
            self.script.lock().unwrap().pop_front().unwrap_or(200)
        };
        {
            let mut under_way = self.under_way.lock().unwrap();
            let count = under_way.entry(bot.clone()).or_default();
            *count += 1;
            if *count > 1 {
                self.overlapping.lock().unwrap().push(bot.clone());
            }
        }
        self.calls.lock().unwrap().push(Call {
            bot: bot.clone(),
            texts,
            webhook_id,
            at: Instant::now(),
            status,
            method: request.method().clone(),
            uri: request.uri().to_string(),
            headers: request.headers().clone(),
        });
        self.bodies.lock().unwrap().push(request.body().clone());
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        *self.under_way.lock().unwrap().get_mut(&bot).expect("counted above") -= 1;
        if status == 0 {
            return Err(TransportError::new(TransportErrorKind::Io, "connection reset by peer"));
        }
        Ok(http::StatusCode::from_u16(status).expect("a status"))
    }
}

/// Which store a [`Setup`] runs on, for the few documented differences.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    InMemory,
    Postgres,
}

/// The global cap on calls under way, set on both stores (below their default
/// of 64, so that a test can reach it).
const MAX_CONCURRENT_CALLS: usize = 3;

/// A dispatcher on one store, its scripted transport and its recorder.
struct Setup {
    /// Which store this is, for the differences it documents.
    store: Store,
    dispatcher: Arc<dyn Dispatcher>,
    transport: Arc<ScriptedTransport>,
    recorder: Arc<Recorder>,
    #[cfg(feature = "postgres")]
    _schema: Option<postgres_support::TestSchema>,
}

impl Setup {
    fn in_memory(script: Vec<u16>) -> Setup {
        let transport = Arc::new(ScriptedTransport::new(script));
        let recorder = Arc::new(Recorder::default());
        let dispatcher = WebhookDispatcher::builder()
            .transport(transport.clone())
            .alert_sink(recorder.clone())
            .observer(recorder.clone())
            .max_concurrent_pushes(MAX_CONCURRENT_CALLS)
            .build()
            .expect("building");
        Setup {
            store: Store::InMemory,
            dispatcher: Arc::new(dispatcher),
            transport,
            recorder,
            #[cfg(feature = "postgres")]
            _schema: None,
        }
    }

    #[cfg(feature = "postgres")]
    async fn postgres(test: &str, script: Vec<u16>) -> Option<Setup> {
        let schema = postgres_support::TestSchema::new(test)?;
        eventhook::postgres::migrate(&mut schema.connect().await, &schema.schema).await.expect("migrating");
        let transport = Arc::new(ScriptedTransport::new(script));
        let recorder = Arc::new(Recorder::default());
        let dispatcher = eventhook::postgres::PostgresDispatcher::builder(schema.url())
            .schema(schema.schema.clone())
            .transport(transport.clone())
            .alert_sink(recorder.clone())
            .observer(recorder.clone())
            .poll_interval(Duration::from_millis(10))
            .commit_window(Duration::from_millis(2))
            .max_concurrent_pushes(MAX_CONCURRENT_CALLS)
            .build()
            .await
            .expect("building");
        Some(Setup {
            store: Store::Postgres,
            dispatcher: Arc::new(dispatcher),
            transport,
            recorder,
            _schema: Some(schema),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.transport.calls.lock().unwrap().clone()
    }

    /// Waits until `done` holds, for at most ten seconds.
    async fn until(&self, what: &str, done: impl Fn(&Setup) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; calls: {:?}; {:?}",
                self.calls(),
                self.dispatcher.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn configure(&self, config: WebhookConfig) {
        self.dispatcher.configure(config).expect("configuring");
        // The PostgreSQL store writes settings with its next commit; a flush waits for it.
        let _ = self.dispatcher.flush(Duration::from_secs(5)).await;
    }
}

fn config(bot: &str) -> WebhookConfigBuilder {
    WebhookConfig::builder(bot, "Account", format!("https://hooks.example.com/{bot}"), "secret")
        .push_interval(Duration::from_millis(40))
        .request_timeout(Duration::from_millis(500))
}

fn message(bot: &str, text: &str) -> Event {
    let factory = EventFactory::new(bot, "Account");
    Event::UserMessage(factory.message(&ChatContext::new("conversation", "TelegramChannel"), text))
}

fn enqueue_all(setup: &Setup, bot: &str, texts: &[&str]) {
    for text in texts {
        assert_eq!(setup.dispatcher.enqueue(message(bot, text)), EnqueueOutcome::Accepted, "{text}");
    }
}

async fn delivered_in_order(setup: Setup) {
    setup.configure(config("bot").build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b", "c"]);
    setup
        .until("three events arrived", |setup| setup.calls().iter().map(|call| call.texts.len()).sum::<usize>() == 3)
        .await;
    let texts: Vec<String> = setup.calls().into_iter().flat_map(|call| call.texts).collect();
    assert_eq!(texts, ["a", "b", "c"]);
    setup.until("the call is counted", |setup| setup.dispatcher.stats().totals.delivered == 3).await;
    assert_eq!(setup.recorder.calls.lock().unwrap().len(), setup.calls().len());
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_failed_call_is_sent_again_as_it_was_an_interval_later(setup: Setup) {
    let signing = eventhook::SigningSecret::generate().unwrap();
    setup.configure(config("bot").signing_secrets([signing.expose()]).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b"]);
    setup.until("the retry", |setup| setup.calls().len() >= 2).await;
    // Events enqueued after the failure go in later calls, not the retry.
    let calls = setup.calls();
    assert_eq!(calls[0].texts, calls[1].texts, "the same events again");
    assert_eq!(calls[0].webhook_id, calls[1].webhook_id, "the same webhook-id");
    assert!(calls[0].webhook_id.is_some());
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(35),
        "a failure waits an interval: {:?}",
        calls[1].at - calls[0].at
    );
    setup.until("delivered", |setup| setup.dispatcher.stats().totals.delivered == 2).await;
    let stats = setup.dispatcher.webhook_stats("bot").expect("configured");
    assert_eq!(stats.failures_in_row, 0, "a success resets the count");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn the_eleventh_failure_in_a_row_disables_drops_and_alerts_once(setup: Setup) {
    setup.configure(config("bot").push_interval(Duration::from_millis(10)).build().unwrap()).await;
    let sender = setup.dispatcher.bot_sender("bot");
    enqueue_all(&setup, "bot", &["a", "b"]);
    setup.until("the alert", |setup| !setup.recorder.alerts.lock().unwrap().is_empty()).await;
    assert_eq!(setup.calls().len(), 11, "more than 10 failures, not one more call");
    setup
        .until("the drop is reported", |setup| {
            setup.recorder.dropped.lock().unwrap().iter().any(|dropped| dropped.reason == DropReason::Disabled)
        })
        .await;
    let dropped: usize = setup.recorder.dropped.lock().unwrap().iter().map(|dropped| dropped.events.len()).sum();
    assert_eq!(dropped, 2);
    setup.until("disabled here", |setup| setup.dispatcher.stats().disabled_webhooks == 1).await;
    assert_eq!(setup.dispatcher.enqueue(message("bot", "late")), EnqueueOutcome::WebhookDisabled);
    assert_eq!(sender.enqueue(message("bot", "late")), EnqueueOutcome::WebhookDisabled, "a bot sender too");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(setup.recorder.alerts.lock().unwrap().len(), 1, "alerted once");
    let alert = setup.recorder.alerts.lock().unwrap()[0].clone();
    assert_eq!((alert.bot_token.as_str(), alert.failures_in_row), ("bot", 11));
    assert!(alert.last_failure.contains("500"), "{}", alert.last_failure);
    assert_eq!((alert.account_name.as_str(), alert.url.as_str()), ("Account", "https://hooks.example.com/bot"));
    assert!(!format!("{alert:?}{alert}").contains("secret"), "no secret in an alert: {alert:?}");

    // Saving the settings again re-enables it.
    setup.configure(config("bot").build().unwrap()).await;
    setup.until("enabled", |setup| setup.dispatcher.stats().disabled_webhooks == 0).await;
    assert_eq!(sender.enqueue(message("bot", "again")), EnqueueOutcome::Accepted, "through the same bot sender");
    setup
        .until("delivered after re-enabling", |setup| setup.calls().last().is_some_and(|call| call.texts == ["again"]))
        .await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn refusals_are_named(setup: Setup) {
    setup.configure(config("free").plan(Plan::Free).build().unwrap()).await;
    let only_errors = EventFlags::none().with(EventKind::ConversationError);
    setup.configure(config("picky").events(only_errors).build().unwrap()).await;
    assert_eq!(setup.dispatcher.enqueue(message("free", "x")), EnqueueOutcome::FreePlan);
    assert_eq!(setup.dispatcher.enqueue(message("picky", "x")), EnqueueOutcome::NotSelected);
    assert_eq!(setup.dispatcher.enqueue(message("nobody", "x")), EnqueueOutcome::NoWebhook);
    let totals = setup.dispatcher.stats().totals;
    assert_eq!(totals.accepted, 0);
    let refused: u64 = eventhook::dispatch::Refusal::ALL.iter().map(|refusal| totals.refused(*refusal)).sum();
    assert_eq!(refused, 3);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_backlog_goes_in_full_batches_at_once(setup: Setup) {
    setup.configure(config("bot").max_batch_events(2).push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b", "c", "d", "e"]);
    // Nothing is due within the hour but by a flush, after which each full batch follows at once.
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let sizes: Vec<usize> = setup.calls().iter().map(|call| call.texts.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn an_event_too_large_for_any_call_is_dropped_with_its_reason(setup: Setup) {
    setup.configure(config("bot").max_batch_bytes(1024).build().unwrap()).await;
    let large = "x".repeat(1100);
    enqueue_all(&setup, "bot", &[large.as_str(), "small"]);
    setup.until("the small one arrived", |setup| setup.calls().iter().any(|call| call.texts == ["small"])).await;
    setup
        .until("the large one is dropped", |setup| setup.dispatcher.stats().totals.dropped(DropReason::TooLarge) == 1)
        .await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn only_200_is_a_success_unless_any_2xx_is_accepted(setup: Setup) {
    // Every call is answered 204 until the script runs out, then 200.
    setup.configure(config("lenient").accept_any_2xx(true).build().unwrap()).await;
    enqueue_all(&setup, "lenient", &["l"]);
    setup.until("a 204 delivered it", |setup| setup.dispatcher.stats().totals.delivered == 1).await;
    assert_eq!(setup.calls()[0].status, 204);
    setup.transport.script.lock().unwrap().push_back(204);
    setup.configure(config("strict").build().unwrap()).await;
    enqueue_all(&setup, "strict", &["s"]);
    setup.until("a 200 delivered it after a 204", |setup| setup.dispatcher.stats().totals.delivered == 2).await;
    let strict: Vec<u16> = setup.calls().iter().filter(|call| call.bot == "strict").map(|call| call.status).collect();
    assert_eq!(strict, [204, 200], "204 is a failure for a webhook that wants exactly 200");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn one_event_per_call_sends_each_alone(setup: Setup) {
    setup.configure(config("bot").one_event_per_call(true).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b", "c"]);
    setup.until("three calls", |setup| setup.calls().len() == 3).await;
    assert!(setup.calls().iter().all(|call| call.texts.len() == 1));
    let texts: Vec<String> = setup.calls().into_iter().flat_map(|call| call.texts).collect();
    assert_eq!(texts, ["a", "b", "c"]);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_webhook_moved_to_the_free_plan_drops_what_waits(setup: Setup) {
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b"]);
    setup.configure(config("bot").plan(Plan::Free).build().unwrap()).await;
    setup
        .until("the waiting events are dropped", |setup| {
            setup.dispatcher.stats().totals.dropped(DropReason::Reconfigured) == 2
        })
        .await;
    assert_eq!(setup.dispatcher.enqueue(message("bot", "c")), EnqueueOutcome::FreePlan);
    assert!(setup.calls().is_empty(), "nothing is sent for a free bot");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// Each event carries the variables its webhook lists, with the values they
/// had when it was enqueued; a webhook that lists none gets no `Variables`.
async fn only_the_variables_a_webhook_lists_are_sent(setup: Setup) {
    let hourly = |bot: &str| config(bot).push_interval(Duration::from_secs(3600));
    setup.configure(hourly("bot").include_variables(["plan", "email"]).build().unwrap()).await;
    setup.configure(hourly("silent").build().unwrap()).await;
    let mut chat = ChatContext::new("conversation", "TelegramChannel")
        .variable("plan", "gold")
        .variable("email", "x@y")
        .variable("other", "not listed");
    for bot in ["bot", "silent"] {
        let event = Event::UserMessage(EventFactory::new(bot, "Account").message(&chat, "with variables"));
        assert_eq!(setup.dispatcher.enqueue(event), EnqueueOutcome::Accepted);
    }
    chat.variables.insert("plan", "platinum");
    let later = Event::UserMessage(EventFactory::new("bot", "Account").message(&chat, "later"));
    assert_eq!(setup.dispatcher.enqueue(later), EnqueueOutcome::Accepted);
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let body = |bot: &str| {
        let index = setup.calls().iter().position(|call| call.bot == bot).expect("a call per webhook");
        let body = setup.transport.bodies.lock().unwrap()[index].clone();
        serde_json::from_slice::<Vec<serde_json::Value>>(&body).expect("a JSON array")
    };
    let listing = body("bot");
    assert_eq!(listing[0]["Variables"], serde_json::json!({ "plan": "gold", "email": "x@y" }));
    assert_eq!(listing[1]["Variables"], serde_json::json!({ "plan": "platinum", "email": "x@y" }), "as at enqueue");
    let silent = body("silent");
    assert!(silent[0].get("Variables").is_none(), "{silent:?}");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_flush_after_a_failure_says_which_webhook_failed(setup: Setup) {
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a"]);
    let error = setup.dispatcher.flush(Duration::from_secs(10)).await.expect_err("the call fails");
    let shown = error.to_string();
    assert!(shown.contains("bot") && shown.contains("500"), "{shown}");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SIGNING_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn header<'a>(call: &'a Call, name: &str) -> &'a str {
    call.headers[name].to_str().expect("a visible header")
}

/// What the `standardwebhooks` crate signs for this call's id, time and body.
fn reference_signature(secret: &str, call: &Call, body: &[u8]) -> String {
    let timestamp: i64 = header(call, "webhook-timestamp").parse().expect("seconds");
    standardwebhooks::Webhook::new(secret).unwrap().sign(header(call, "webhook-id"), timestamp, body).unwrap()
}

/// The gaps between the starts of consecutive calls.
fn gaps(calls: &[Call]) -> Vec<Duration> {
    calls.windows(2).map(|pair| pair[1].at - pair[0].at).collect()
}

/// Sends `first` alone and enqueues `texts` while its call is under way, so
/// that they all wait together for the next call.
async fn enqueue_during_a_first_call(setup: &Setup, bot: &str, texts: &[&str]) {
    let before = setup.calls().len();
    setup.transport.hold();
    enqueue_all(setup, bot, &["first"]);
    setup.until("the first call", |setup| setup.calls().len() > before).await;
    enqueue_all(setup, bot, texts);
    setup.transport.release();
}

async fn pushes_once_the_interval_has_passed_and_never_when_empty(setup: Setup) {
    let interval = Duration::from_millis(60);
    setup.configure(config("bot").push_interval(interval).build().unwrap()).await;
    tokio::time::sleep(interval * 3).await;
    assert!(setup.calls().is_empty(), "nothing pending, nothing sent");
    enqueue_all(&setup, "bot", &["one"]);
    setup.until("the first call", |setup| setup.calls().len() == 1).await;
    enqueue_all(&setup, "bot", &["two"]);
    setup.until("the second call", |setup| setup.calls().len() == 2).await;
    let calls = setup.calls();
    assert_eq!(
        (calls[0].texts.as_slice(), calls[1].texts.as_slice()),
        (&["one".to_owned()][..], &["two".to_owned()][..])
    );
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= interval.mul_f64(0.8), "the next call waits for the interval: {gap:?}");
    tokio::time::sleep(interval * 3).await;
    assert_eq!(setup.calls().len(), 2, "no call without events");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// The phase of each bot's grid of push times follows from its token, so
/// bots configured together push at different times within the first interval.
async fn first_pushes_are_spread_over_the_interval(setup: Setup) {
    let interval = Duration::from_millis(600);
    let bots: Vec<String> = (0..16).map(|bot| format!("spread-{bot}")).collect();
    for bot in &bots {
        setup.dispatcher.configure(config(bot).push_interval(interval).build().unwrap()).expect("configuring");
    }
    let configured = Instant::now();
    for bot in &bots {
        enqueue_all(&setup, bot, &["x"]);
    }
    setup.until("a call per bot", |setup| setup.calls().len() == bots.len()).await;
    let after: Vec<Duration> = setup.calls().iter().map(|call| call.at - configured).collect();
    let (first, last) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    assert!(*last - *first >= interval / 2, "spread over the interval, not together: {after:?}");
    assert!(*last <= interval * 2, "all within about one interval: {after:?}");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_push_carries_the_contract_headers_and_the_codec_body(setup: Setup) {
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    let events = vec![message("bot", "a"), message("bot", "b")];
    for event in &events {
        assert_eq!(setup.dispatcher.enqueue(event.clone()), EnqueueOutcome::Accepted);
    }
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let calls = setup.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, http::Method::POST);
    assert_eq!(call.uri, "https://hooks.example.com/bot");
    assert_eq!(call.headers["authorization"], "Bearer secret", "the bot's API secret is the bearer");
    assert!(call.headers["authorization"].is_sensitive());
    assert_eq!(call.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(call.headers["user-agent"], eventhook::USER_AGENT);
    // Unsigned: these three headers and no others (no `webhook-*`).
    assert_eq!(call.headers.len(), 3, "{:?}", call.headers.keys().collect::<Vec<_>>());
    assert_eq!(setup.transport.bodies.lock().unwrap()[0], eventhook::wire::encode_push(&events));
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_success_removes_exactly_its_events(setup: Setup) {
    let interval = Duration::from_millis(200);
    setup
        .configure(config("bot").push_interval(interval).request_timeout(Duration::from_secs(5)).build().unwrap())
        .await;
    enqueue_during_a_first_call(&setup, "bot", &["while in flight"]).await;
    setup.until("the first call delivered", |setup| setup.dispatcher.stats().totals.delivered == 1).await;
    setup
        .until("one event left, none in flight", |setup| {
            let counts = setup.dispatcher.webhook_stats("bot").unwrap().counts;
            (counts.delivered, counts.pending, counts.in_flight) == (1, 1, 0)
        })
        .await;
    setup.until("the second call", |setup| setup.calls().len() == 2).await;
    let calls = setup.calls();
    assert_eq!(
        (calls[0].texts.as_slice(), calls[1].texts.as_slice()),
        (&["first".to_owned()][..], &["while in flight".to_owned()][..])
    );
    assert!(
        calls[1].at - calls[0].at >= interval.mul_f64(0.8),
        "the rest waits for the next interval: {:?}",
        gaps(&calls)
    );
    setup.until("both delivered", |setup| setup.dispatcher.stats().totals.delivered == 2).await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// A full batch left after a success goes at once (a backlog drains at
/// network speed); a failure pauses the drain for one interval and the next
/// success resumes it; the last partial batch waits for the interval.
async fn a_backlog_drains_at_once_pauses_an_interval_on_a_failure_and_its_last_partial_batch_waits(setup: Setup) {
    let interval = Duration::from_millis(400);
    let builder = config("busy").push_interval(interval).max_batch_events(5).request_timeout(Duration::from_secs(5));
    setup.configure(builder.build().unwrap()).await;
    let texts: Vec<String> = (0..23).map(|index| index.to_string()).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    // The first call and the first full batch succeed, the second fails once.
    setup.transport.script.lock().unwrap().extend([200, 200, 503]);
    enqueue_during_a_first_call(&setup, "busy", &texts).await;
    setup.until("every event delivered", |setup| setup.dispatcher.stats().totals.delivered == 24).await;
    let calls = &setup.calls()[1..];
    let sizes: Vec<usize> = calls.iter().map(|call| call.texts.len()).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 5, 3], "the failed batch again, then the rest");
    assert_eq!(calls[1].texts, calls[2].texts, "the failed call again");
    let delivered: Vec<String> =
        calls.iter().filter(|call| call.status == 200).flat_map(|call| call.texts.clone()).collect();
    assert_eq!(delivered, texts, "order kept");
    let gaps = gaps(calls);
    let at_once = interval / 2;
    let waited = interval.mul_f64(0.8);
    assert!(gaps[0] < at_once, "a full batch after a success goes at once: {gaps:?}");
    assert!(gaps[1] >= waited, "a failure waits an interval: {gaps:?}");
    assert!(gaps[2] < at_once && gaps[3] < at_once, "the drain resumes at once after the retry: {gaps:?}");
    assert!(gaps[4] >= waited, "the last partial batch waits for the interval: {gaps:?}");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// The retry storm of issue 11: a backlog of full batches to a failing
/// receiver must be retried one interval later, not at network speed,
/// whether the receiver answers an error status or the connection fails.
async fn a_failed_call_with_a_full_batch_pending_is_retried_one_interval_later(setup: Setup) {
    let interval = Duration::from_millis(40);
    setup
        .configure(
            config("busy")
                .push_interval(interval)
                .max_batch_events(5)
                .request_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .await;
    let texts: Vec<String> = (0..12).map(|index| index.to_string()).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    // The first call succeeds; then 500 and connection resets, alternately.
    setup.transport.script.lock().unwrap().push_back(200);
    setup.transport.script.lock().unwrap().extend((0..11).map(|attempt| if attempt % 2 == 0 { 500 } else { 0 }));
    enqueue_during_a_first_call(&setup, "busy", &texts).await;
    setup.until("disabled", |setup| setup.dispatcher.stats().disabled_webhooks == 1).await;
    let calls = &setup.calls()[1..];
    assert_eq!(calls.len(), 11, "11 failures, not one more call");
    assert!(calls.iter().all(|call| call.texts == texts[..5]), "the same full batch each time");
    let gaps = gaps(calls);
    assert!(gaps.iter().all(|gap| *gap >= interval.mul_f64(0.8)), "an interval between attempts: {gaps:?}");
    setup
        .until("the events are dropped", |setup| setup.dispatcher.stats().totals.dropped(DropReason::Disabled) == 12)
        .await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn batches_respect_the_byte_limit(setup: Setup) {
    setup
        .configure(config("bot").push_interval(Duration::from_secs(3600)).max_batch_bytes(2048).build().unwrap())
        .await;
    let text = "x".repeat(600);
    enqueue_all(&setup, "bot", &[text.as_str(); 10]);
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let bodies = setup.transport.bodies.lock().unwrap().clone();
    assert!(bodies.iter().all(|body| body.len() <= 2048), "{:?}", bodies.iter().map(Vec::len).collect::<Vec<_>>());
    // Each encoded event is about 700 bytes: two fit in 2048, three do not.
    let sizes: Vec<usize> = setup.calls().iter().map(|call| call.texts.len()).collect();
    assert_eq!(sizes, [2, 2, 2, 2, 2]);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

fn failures_in_row(setup: &Setup) -> (eventhook::dispatch::WebhookState, u32) {
    let stats = setup.dispatcher.webhook_stats("bot").expect("configured");
    (stats.state, stats.failures_in_row)
}

/// Ten failures, a success, ten failures, a success: without the reset, the
/// 11th failure would disable the webhook.
async fn a_success_resets_the_failure_count(setup: Setup) {
    use eventhook::dispatch::WebhookState::Active;
    setup.configure(config("bot").push_interval(Duration::from_millis(10)).build().unwrap()).await;
    for round in 0..2 {
        setup.transport.script.lock().unwrap().extend([500; 10]);
        enqueue_all(&setup, "bot", &["x"]);
        setup.until("delivered", |setup| setup.dispatcher.stats().totals.delivered == round + 1).await;
        setup.until("the count reset", |setup| failures_in_row(setup) == (Active, 0)).await;
    }
    let statuses: Vec<u16> = setup.calls().iter().map(|call| call.status).collect();
    let round: Vec<u16> = [500; 10].into_iter().chain([200]).collect();
    assert_eq!(statuses, [round.clone(), round].concat());
    assert!(setup.recorder.alerts.lock().unwrap().is_empty(), "never 11 in a row");
    assert_eq!(setup.dispatcher.stats().disabled_webhooks, 0);
    let stats = setup.dispatcher.webhook_stats("bot").expect("configured");
    assert!(
        stats.last_failure.as_deref().is_some_and(|failure| failure.contains("500")),
        "the last failure stays after a success: {:?}",
        stats.last_failure
    );
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn configuring_again_re_enables_with_a_zero_count(setup: Setup) {
    use eventhook::dispatch::WebhookState::{Active, Disabled};
    setup.configure(config("bot").push_interval(Duration::from_millis(10)).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["x"]);
    setup.until("disabled", |setup| failures_in_row(setup) == (Disabled, 11)).await;
    setup.configure(config("bot").push_interval(Duration::from_millis(10)).build().unwrap()).await;
    setup.until("enabled with no failures", |setup| failures_in_row(setup) == (Active, 0)).await;
    // A new run of failures needs 11 again: 10 keep the webhook.
    setup.transport.script.lock().unwrap().extend([500; 10]);
    enqueue_all(&setup, "bot", &["again"]);
    setup.until("delivered after ten failures", |setup| setup.dispatcher.stats().totals.delivered == 1).await;
    assert_eq!(failures_in_row(&setup), (Active, 0));
    let calls = setup.calls();
    assert_eq!(calls.len(), 22);
    assert_eq!(calls[21].texts, ["again"]);
    assert_eq!(setup.recorder.alerts.lock().unwrap().len(), 1, "alerted for the first run only");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// A full queue and a closed dispatcher hand the event back, counted. The
/// in-memory bound is exact at once; the PostgreSQL store's is checked
/// against its count as of the last poll (documented as approximate).
async fn a_full_queue_and_a_closed_dispatcher_hand_the_event_back(setup: Setup) {
    use eventhook::dispatch::Refusal;
    setup.configure(config("small").push_interval(Duration::from_secs(3600)).queue_capacity(2).build().unwrap()).await;
    enqueue_all(&setup, "small", &["1", "2"]);
    let full = message("small", "3");
    if setup.store == Store::InMemory {
        assert_eq!(setup.dispatcher.enqueue(full.clone()), EnqueueOutcome::QueueFull(full.clone()), "exact at once");
    }
    setup.until("two pending", |setup| setup.dispatcher.webhook_stats("small").unwrap().counts.pending == 2).await;
    assert_eq!(setup.dispatcher.enqueue(full.clone()), EnqueueOutcome::QueueFull(full), "the event is handed back");
    let counts = setup.dispatcher.webhook_stats("small").unwrap().counts;
    assert_eq!(counts.accepted, 2);
    assert!(counts.refused(Refusal::QueueFull) >= 1);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
    let late = message("small", "late");
    assert_eq!(setup.dispatcher.enqueue(late.clone()), EnqueueOutcome::Closed(late));
    assert!(setup.dispatcher.configure(config("other").build().unwrap()).is_err(), "closed for settings too");
}

async fn a_free_plan_bot_never_gets_a_call(setup: Setup) {
    use eventhook::dispatch::{Refusal, WebhookState};
    setup.configure(config("free").push_interval(Duration::from_millis(10)).plan(Plan::Free).build().unwrap()).await;
    for _ in 0..3 {
        assert_eq!(setup.dispatcher.enqueue(message("free", "x")), EnqueueOutcome::FreePlan);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(setup.calls().is_empty());
    let stats = setup.dispatcher.webhook_stats("free").unwrap();
    assert_eq!((stats.state, stats.counts.accepted, stats.counts.calls), (WebhookState::FreePlan, 0, 0));
    assert_eq!(stats.counts.refused(Refusal::FreePlan), 3);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn every_call_is_reported_for_billing(setup: Setup) {
    use eventhook::dispatch::CallOutcome;
    setup
        .configure(
            config("bot")
                .push_interval(Duration::from_millis(50))
                .request_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .await;
    setup.transport.script.lock().unwrap().extend([200, 500, 0]);
    let texts = [".."; 30];
    enqueue_during_a_first_call(&setup, "bot", &texts).await;
    setup.until("delivered", |setup| setup.dispatcher.stats().totals.delivered == 31).await;
    setup.until("four calls reported", |setup| setup.recorder.calls.lock().unwrap().len() == 4).await;
    let reported = setup.recorder.calls.lock().unwrap().clone();
    let bodies = setup.transport.bodies.lock().unwrap().clone();
    let carried: Vec<(usize, usize)> = reported.iter().map(|call| (call.events, call.bytes)).collect();
    let sent: Vec<(usize, usize)> =
        setup.calls().iter().zip(&bodies).map(|(call, body)| (call.texts.len(), body.len())).collect();
    assert_eq!(carried, sent, "one billable message per call, with what it carried");
    assert_eq!(carried[1].0, 30);
    assert_eq!(reported[0].outcome, CallOutcome::Delivered(http::StatusCode::OK));
    assert_eq!(reported[1].outcome, CallOutcome::FailedStatus(http::StatusCode::INTERNAL_SERVER_ERROR));
    assert!(
        matches!(&reported[2].outcome, CallOutcome::FailedTransport(error) if error.kind == TransportErrorKind::Io),
        "{:?}",
        reported[2].outcome
    );
    assert_eq!(reported[3].outcome, CallOutcome::Delivered(http::StatusCode::OK));
    assert!(reported.iter().all(|call| &*call.bot_token == "bot" && call.account_name() == "Account"));
    assert_eq!(reported[0].url.to_string(), "https://hooks.example.com/bot");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// At most one call per webhook is under way; webhooks are called side by side.
async fn one_call_per_webhook(setup: Setup) {
    for bot in ["a", "b"] {
        setup
            .configure(
                config(bot)
                    .push_interval(Duration::from_secs(3600))
                    .max_batch_events(1)
                    .request_timeout(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .await;
    }
    // Each configure above flushes: the events come after, while calls are held.
    setup.transport.hold();
    for bot in ["a", "b"] {
        enqueue_all(&setup, bot, &["1", "2", "3"]);
    }
    let dispatcher = setup.dispatcher.clone();
    let flush = tokio::spawn(async move { dispatcher.flush(Duration::from_secs(10)).await });
    setup.until("a call to each webhook", |setup| setup.calls().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = setup.calls();
    assert_eq!(calls.len(), 2, "no second call to a webhook while its first is under way");
    assert_ne!(calls[0].bot, calls[1].bot);
    setup.transport.release();
    flush.await.unwrap().expect("flushed");
    assert_eq!(setup.calls().len(), 6);
    assert!(setup.transport.overlapping.lock().unwrap().is_empty(), "{:?}", setup.transport.overlapping);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// No more calls are under way at once than the dispatcher's cap.
async fn calls_under_way_stay_within_the_global_cap(setup: Setup) {
    let bots: Vec<String> = (0..=MAX_CONCURRENT_CALLS).map(|bot| format!("capped-{bot}")).collect();
    for bot in &bots {
        let builder = config(bot).push_interval(Duration::from_secs(3600)).request_timeout(Duration::from_secs(5));
        setup.configure(builder.build().unwrap()).await;
    }
    setup.transport.hold();
    for bot in &bots {
        enqueue_all(&setup, bot, &["x"]);
    }
    let dispatcher = setup.dispatcher.clone();
    let flush = tokio::spawn(async move { dispatcher.flush(Duration::from_secs(10)).await });
    setup.until("the cap reached", |setup| setup.calls().len() == MAX_CONCURRENT_CALLS).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(setup.calls().len(), MAX_CONCURRENT_CALLS, "only a call that ends frees a place");
    setup.transport.release();
    flush.await.unwrap().expect("flushed");
    assert_eq!(setup.calls().len(), bots.len());
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// A flush pushes everything now, full batches back to back, and says which
/// webhook failed; shutdown hands back what is left: on PostgreSQL, what is
/// committed stays in the database instead.
async fn flush_pushes_everything_now_and_shutdown_returns_the_rest(setup: Setup) {
    use eventhook::dispatch::FlushError;
    setup.configure(config("up").push_interval(Duration::from_secs(3600)).max_batch_events(5).build().unwrap()).await;
    setup.configure(config("down").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    setup.transport.down.lock().unwrap().push("down".to_owned());
    for index in 0..12 {
        enqueue_all(&setup, "up", &[index.to_string().as_str()]);
        enqueue_all(&setup, "down", &[index.to_string().as_str()]);
    }
    let error = setup.dispatcher.flush(Duration::from_secs(10)).await.expect_err("down fails");
    let FlushError::Incomplete { webhooks, .. } = &error else { panic!("{error:?}") };
    assert_eq!(webhooks.iter().map(|stalled| stalled.bot_token.as_str()).collect::<Vec<_>>(), ["down"], "{error}");
    setup
        .until("up's twelve counted", |setup| setup.dispatcher.webhook_stats("up").unwrap().counts.delivered == 12)
        .await;
    let up: Vec<usize> = setup.calls().iter().filter(|call| call.bot == "up").map(|call| call.texts.len()).collect();
    assert_eq!(up, [5, 5, 2]);
    assert_eq!(setup.calls().iter().filter(|call| call.bot == "down").count(), 1, "one attempt per webhook");
    // The PostgreSQL store's pending counts are as of its last poll.
    setup
        .until("twelve left, all down's", |setup| {
            let pending = |bot| setup.dispatcher.webhook_stats(bot).unwrap().counts.pending;
            (pending("up"), pending("down")) == (0, 12)
        })
        .await;
    let report = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
    let totals = report.stats.totals;
    match setup.store {
        Store::InMemory => {
            assert_eq!(report.undelivered.len(), 12);
            assert!(report.undelivered.iter().all(|event| event.bot_token() == Some("down")));
            assert_eq!((totals.pending, totals.in_flight, totals.dropped(DropReason::Shutdown)), (0, 0, 12));
            assert_eq!(report.stalled.iter().map(|stalled| stalled.bot_token.as_str()).collect::<Vec<_>>(), ["down"]);
        }
        Store::Postgres => {
            assert!(report.undelivered.is_empty(), "committed events stay in the database: {:?}", report.undelivered);
            assert_eq!((totals.pending, totals.dropped_total()), (12, 0));
        }
    }
    assert_eq!(totals.delivered, 12);
}

/// The bound counts the batch in flight (issue 11: a capacity of 10,000 held 10,500).
async fn the_queue_bound_counts_the_batch_in_flight(setup: Setup) {
    use eventhook::dispatch::Refusal;
    setup
        .configure(
            config("bot")
                .push_interval(Duration::from_secs(3600))
                .queue_capacity(10)
                .max_batch_events(5)
                .request_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .await;
    let texts: Vec<String> = (0..10).map(|index| index.to_string()).collect();
    enqueue_all(&setup, "bot", &texts.iter().map(String::as_str).collect::<Vec<_>>());
    setup.transport.hold();
    let dispatcher = setup.dispatcher.clone();
    let flush = tokio::spawn(async move { dispatcher.flush(Duration::from_secs(10)).await });
    setup.until("a call under way", |setup| !setup.calls().is_empty()).await;
    setup
        .until("five in flight, five pending", |setup| {
            let counts = setup.dispatcher.webhook_stats("bot").unwrap().counts;
            counts.in_flight == 5 && counts.pending + counts.in_flight >= 10
        })
        .await;
    assert!(matches!(setup.dispatcher.enqueue(message("bot", "one too many")), EnqueueOutcome::QueueFull(_)));
    setup.transport.release();
    flush.await.unwrap().expect("flushed");
    setup.until("room again", |setup| setup.dispatcher.webhook_stats("bot").unwrap().counts.pending == 0).await;
    assert_eq!(setup.dispatcher.enqueue(message("bot", "room again")), EnqueueOutcome::Accepted);
    let counts = setup.dispatcher.webhook_stats("bot").unwrap().counts;
    assert_eq!((counts.accepted, counts.delivered, counts.refused(Refusal::QueueFull)), (11, 10, 1));
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_signed_call_keeps_its_id_and_body_and_is_signed_again_for_each_attempt(setup: Setup) {
    // Flushes make the attempts (the hourly grid never does), over a second
    // apart so that their timestamps differ.
    let hourly = Duration::from_secs(3600);
    setup.configure(config("bot").push_interval(hourly).signing_secrets([SIGNING_SECRET]).build().unwrap()).await;
    setup.transport.script.lock().unwrap().push_back(500);
    enqueue_all(&setup, "bot", &["a", "b"]);
    assert!(setup.dispatcher.flush(Duration::from_secs(10)).await.is_err(), "the first attempt fails");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("the retry delivers");
    enqueue_all(&setup, "bot", &["c"]);
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let (calls, bodies) = (setup.calls(), setup.transport.bodies.lock().unwrap().clone());
    let id = header(&calls[0], "webhook-id");
    assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
    for (call, body) in calls.iter().zip(&bodies) {
        assert_eq!(header(call, "webhook-signature"), reference_signature(SIGNING_SECRET, call, body));
        assert!(call.headers["webhook-signature"].is_sensitive());
        assert_eq!(call.headers["authorization"], "Bearer secret", "the bearer stays");
    }
    assert_eq!(header(&calls[1], "webhook-id"), id, "the same call");
    assert_eq!(bodies[1], bodies[0]);
    let timestamps: Vec<i64> = calls.iter().map(|call| header(call, "webhook-timestamp").parse().unwrap()).collect();
    assert!(timestamps[1] > timestamps[0], "each attempt is signed at its own time: {timestamps:?}");
    assert_ne!(header(&calls[1], "webhook-signature"), header(&calls[0], "webhook-signature"));
    let now = chrono::Utc::now().timestamp();
    assert!((now - 5..=now).contains(&timestamps[2]), "the attempt's wall time: {timestamps:?}, now {now}");
    assert_eq!(calls[2].texts, ["c"]);
    assert_ne!(header(&calls[2], "webhook-id"), id, "a new call, a new id");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn each_signing_secret_signs_during_a_rotation(setup: Setup) {
    let secrets = [OTHER_SIGNING_SECRET, SIGNING_SECRET];
    setup
        .configure(config("bot").push_interval(Duration::from_secs(3600)).signing_secrets(secrets).build().unwrap())
        .await;
    enqueue_all(&setup, "bot", &["a"]);
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let (call, body) = (setup.calls()[0].clone(), setup.transport.bodies.lock().unwrap()[0].clone());
    let expected: Vec<String> = secrets.iter().map(|secret| reference_signature(secret, &call, &body)).collect();
    assert_eq!(header(&call, "webhook-signature"), expected.join(" "));
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn saving_the_settings_forms_a_failed_call_again_with_them(setup: Setup) {
    let config = |batch, interval| {
        config("bot").push_interval(interval).max_batch_events(batch).signing_secrets([SIGNING_SECRET]).build().unwrap()
    };
    setup.configure(config(3, Duration::from_secs(3600))).await;
    enqueue_all(&setup, "bot", &["a", "b", "c"]);
    assert!(setup.dispatcher.flush(Duration::from_secs(10)).await.is_err(), "the call fails");
    setup.configure(config(2, Duration::from_millis(40))).await;
    setup.until("the next call", |setup| setup.calls().len() >= 2).await;
    let calls = setup.calls();
    assert_eq!(calls[0].texts, ["a", "b", "c"]);
    assert_eq!(calls[1].texts, ["a", "b"], "formed again with the new batch size");
    assert_ne!(header(&calls[1], "webhook-id"), header(&calls[0], "webhook-id"));
    setup.until("all delivered", |setup| setup.dispatcher.stats().totals.delivered == 3).await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

async fn a_flush_after_a_failure_sends_the_failed_call_again(setup: Setup) {
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).max_batch_events(2).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b"]);
    assert!(setup.dispatcher.flush(Duration::from_secs(10)).await.is_err(), "the call fails");
    enqueue_all(&setup, "bot", &["c"]);
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let texts: Vec<Vec<String>> = setup.calls().into_iter().map(|call| call.texts).collect();
    assert_eq!(texts, [vec!["a", "b"], vec!["a", "b"], vec!["c"]], "the failed call again, then the rest");
    let bodies = setup.transport.bodies.lock().unwrap().clone();
    assert_eq!(bodies[1], bodies[0], "the same call");
    setup.until("three delivered", |setup| setup.dispatcher.stats().totals.delivered == 3).await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

fn removed(setup: &Setup) -> usize {
    let dropped = setup.recorder.dropped.lock().unwrap();
    dropped.iter().filter(|dropped| dropped.reason == DropReason::Removed).map(|dropped| dropped.events.len()).sum()
}

/// `remove` ends a webhook while its call is under way: its events are
/// handed back (in memory) or, being in the database, reported dropped
/// (PostgreSQL); the late result of the call is ignored; every accepted
/// event is accounted for once and nothing stays in flight.
async fn remove_ends_a_webhook_and_accounts_for_its_events(setup: Setup) {
    let builder = config("bot").push_interval(Duration::from_secs(3600)).max_batch_events(2);
    setup.configure(builder.request_timeout(Duration::from_secs(5)).build().unwrap()).await;
    enqueue_all(&setup, "bot", &["a", "b", "c"]);
    setup.transport.hold();
    let dispatcher = setup.dispatcher.clone();
    let flush = tokio::spawn(async move { dispatcher.flush(Duration::from_secs(10)).await });
    setup.until("a call under way", |setup| !setup.calls().is_empty()).await;
    let returned = setup.dispatcher.remove("bot");
    match setup.store {
        Store::InMemory => assert_eq!(returned.len(), 3, "pending and in-flight events handed back"),
        Store::Postgres => {
            assert!(returned.is_empty(), "the events are in the database");
            setup.until("the removal is committed", |setup| removed(setup) == 3).await;
        }
    }
    setup.transport.release();
    let _ = flush.await.unwrap();
    assert_eq!(setup.dispatcher.enqueue(message("bot", "x")), EnqueueOutcome::NoWebhook);
    assert!(setup.dispatcher.webhook_stats("bot").is_none());
    setup
        .until("nothing in flight or pending", |setup| {
            let totals = setup.dispatcher.stats().totals;
            (totals.pending, totals.in_flight) == (0, 0)
        })
        .await;
    let totals = setup.dispatcher.stats().totals;
    assert_eq!((totals.accepted, totals.delivered, totals.dropped(DropReason::Removed)), (3, 0, 3), "{totals:?}");
    assert_eq!(returned.len() + removed(&setup), 3, "handed back or reported, once");
    assert_eq!(setup.calls().len(), 1, "no call after the removal");
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

/// A bot sender answers like `enqueue` and follows its webhook's settings.
async fn a_bot_sender_answers_like_enqueue_and_follows_its_webhook(setup: Setup) {
    let early = setup.dispatcher.bot_sender("late");
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    let sender = setup.dispatcher.bot_sender("bot");
    assert_eq!(sender.bot_token(), "bot");
    assert_eq!(sender.enqueue(message("bot", "one")), EnqueueOutcome::Accepted);
    assert_eq!(sender.enqueue(message("stranger", "x")), EnqueueOutcome::NoWebhook, "routed by the event's token");
    assert_eq!(early.enqueue(message("late", "x")), EnqueueOutcome::NoWebhook);
    setup.configure(config("late").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    assert_eq!(early.enqueue(message("late", "y")), EnqueueOutcome::Accepted, "found once configured");
    setup
        .configure(
            config("bot")
                .push_interval(Duration::from_secs(3600))
                .events(EventFlags::none().with(EventKind::BotMessage))
                .build()
                .unwrap(),
        )
        .await;
    assert_eq!(sender.enqueue(message("bot", "two")), EnqueueOutcome::NotSelected);
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).plan(Plan::Free).build().unwrap()).await;
    assert_eq!(sender.enqueue(message("bot", "three")), EnqueueOutcome::FreePlan);
    setup.configure(config("bot").push_interval(Duration::from_secs(3600)).build().unwrap()).await;
    assert_eq!(sender.enqueue(message("bot", "four")), EnqueueOutcome::Accepted);
    setup.dispatcher.flush(Duration::from_secs(10)).await.expect("flushed");
    let mut texts: Vec<String> = setup.calls().into_iter().flat_map(|call| call.texts).collect();
    texts.sort();
    assert_eq!(texts, ["four", "one", "y"]);
    let _ = setup.dispatcher.remove("bot");
    assert_eq!(sender.enqueue(message("bot", "five")), EnqueueOutcome::NoWebhook);
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
    let event = message("late", "closed");
    assert_eq!(early.enqueue(event.clone()), EnqueueOutcome::Closed(event));
}

/// One step of the randomized traffic.
#[derive(Debug, Clone)]
enum Step {
    Enqueue { bot: usize, count: usize },
    Wait { millis: u64 },
    FailNext { calls: usize },
    Reconfigure { bot: usize, batch: usize },
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let step = prop_oneof![
        4 => (0..3usize, 1..12usize).prop_map(|(bot, count)| Step::Enqueue { bot, count }),
        3 => (0..60u64).prop_map(|millis| Step::Wait { millis }),
        2 => (1..4usize).prop_map(|calls| Step::FailNext { calls }),
        1 => (0..3usize, 1..6usize).prop_map(|(bot, batch)| Step::Reconfigure { bot, batch }),
    ];
    proptest::collection::vec(step, 1..25)
}

fn traffic_config(bot: usize, batch: usize) -> WebhookConfig {
    config(&format!("bot-{bot}")).push_interval(Duration::from_millis(15)).max_batch_events(batch).build().unwrap()
}

/// Random traffic, failures and reconfigurations; then, with every call
/// answered 200, a flush. Every accepted event was delivered exactly once,
/// in its bot's order, or dropped with its reason; the counts balance.
async fn randomized_traffic_accounts_for_every_event(setup: Setup, steps: Vec<Step>) {
    for bot in 0..3 {
        setup.configure(traffic_config(bot, 3)).await;
    }
    let mut accepted: Vec<Vec<String>> = vec![Vec::new(); 3];
    for step in steps {
        match step {
            Step::Enqueue { bot, count } => {
                for _ in 0..count {
                    let text = format!("bot-{bot}/{}", accepted[bot].len());
                    match setup.dispatcher.enqueue(message(&format!("bot-{bot}"), &text)) {
                        EnqueueOutcome::Accepted => accepted[bot].push(text),
                        EnqueueOutcome::WebhookDisabled => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            Step::Wait { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
            Step::FailNext { calls } => setup.transport.script.lock().unwrap().extend(std::iter::repeat_n(500, calls)),
            Step::Reconfigure { bot, batch } => {
                setup.dispatcher.configure(traffic_config(bot, batch)).expect("configuring")
            }
        }
    }
    setup.transport.script.lock().unwrap().clear();
    let deadline = Instant::now() + Duration::from_secs(20);
    while setup.dispatcher.flush(Duration::from_secs(5)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never flushed: {:?}; calls: {:?}",
            setup.dispatcher.stats(),
            setup.calls().iter().map(|call| (&call.bot, call.texts.len(), call.status)).collect::<Vec<_>>()
        );
    }
    setup.until("every call settled", |setup| setup.dispatcher.stats().totals.in_flight == 0).await;

    let dropped: Vec<String> = setup
        .recorder
        .dropped
        .lock()
        .unwrap()
        .iter()
        .flat_map(|dropped| {
            assert_eq!(dropped.reason, DropReason::Disabled, "the only drop this traffic causes");
            dropped
                .events
                .iter()
                .map(|event| match event {
                    Event::UserMessage(message) => message.data.clone(),
                    other => panic!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (bot, accepted) in accepted.iter().enumerate() {
        let token = format!("bot-{bot}");
        let delivered: Vec<String> = setup
            .calls()
            .into_iter()
            .filter(|call| call.bot == token && call.status == 200)
            .flat_map(|call| call.texts)
            .collect();
        let kept: Vec<&String> = accepted.iter().filter(|text| !dropped.contains(text)).collect();
        assert_eq!(delivered.iter().collect::<Vec<_>>(), kept, "{token}: delivered once each, in order");
    }
    let totals = setup.dispatcher.stats().totals;
    let accepted_total: usize = accepted.iter().map(Vec::len).sum();
    assert_eq!(totals.accepted, accepted_total as u64);
    assert_eq!(totals.delivered + totals.dropped_total(), totals.accepted, "{totals:?}");
    // The PostgreSQL store's `pending` is as of its last poll.
    setup.until("nothing shows pending", |setup| setup.dispatcher.stats().totals.pending == 0).await;
    let _ = setup.dispatcher.shutdown(Duration::from_secs(2)).await;
}

#[test]
fn in_memory_randomized_traffic_accounts_for_every_event() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = proptest::test_runner::Config { cases: 12, failure_persistence: None, ..Default::default() };
    proptest::proptest!(config, |(steps in steps())| {
        runtime.block_on(async { randomized_traffic_accounts_for_every_event(Setup::in_memory(Vec::new()), steps).await });
    });
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_randomized_traffic_accounts_for_every_event() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = proptest::test_runner::Config { cases: 6, failure_persistence: None, ..Default::default() };
    proptest::proptest!(config, |(steps in steps())| {
        runtime.block_on(async {
            let Some(setup) = Setup::postgres("store_behaviour::randomized_traffic", Vec::new()).await else { return };
            randomized_traffic_accounts_for_every_event(setup, steps).await;
        });
    });
}

macro_rules! store_tests {
    ($($rule:ident $(, script = $script:expr)?;)*) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    let scripts: Vec<Vec<u16>> = vec![$($script)?];
                    let script: Vec<u16> = scripts.into_iter().flatten().collect();
                    super::$rule(Setup::in_memory(script)).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    let scripts: Vec<Vec<u16>> = vec![$($script)?];
                    let script: Vec<u16> = scripts.into_iter().flatten().collect();
                    let Some(setup) = Setup::postgres(concat!("store_behaviour::", stringify!($rule)), script).await else { return };
                    super::$rule(setup).await;
                }
            )*
        }
    };
}

store_tests! {
    delivered_in_order;
    a_failed_call_is_sent_again_as_it_was_an_interval_later, script = vec![500];
    the_eleventh_failure_in_a_row_disables_drops_and_alerts_once, script = vec![500; 11];
    refusals_are_named;
    a_backlog_goes_in_full_batches_at_once;
    an_event_too_large_for_any_call_is_dropped_with_its_reason;
    only_200_is_a_success_unless_any_2xx_is_accepted, script = vec![204];
    one_event_per_call_sends_each_alone;
    a_webhook_moved_to_the_free_plan_drops_what_waits;
    only_the_variables_a_webhook_lists_are_sent;
    a_flush_after_a_failure_says_which_webhook_failed, script = vec![500];
    pushes_once_the_interval_has_passed_and_never_when_empty;
    first_pushes_are_spread_over_the_interval;
    a_push_carries_the_contract_headers_and_the_codec_body;
    a_success_removes_exactly_its_events;
    a_backlog_drains_at_once_pauses_an_interval_on_a_failure_and_its_last_partial_batch_waits;
    a_failed_call_with_a_full_batch_pending_is_retried_one_interval_later;
    batches_respect_the_byte_limit;
    a_success_resets_the_failure_count;
    configuring_again_re_enables_with_a_zero_count, script = vec![500; 11];
    a_full_queue_and_a_closed_dispatcher_hand_the_event_back;
    a_free_plan_bot_never_gets_a_call;
    every_call_is_reported_for_billing;
    one_call_per_webhook;
    calls_under_way_stay_within_the_global_cap;
    flush_pushes_everything_now_and_shutdown_returns_the_rest;
    the_queue_bound_counts_the_batch_in_flight;
    a_signed_call_keeps_its_id_and_body_and_is_signed_again_for_each_attempt;
    each_signing_secret_signs_during_a_rotation;
    saving_the_settings_forms_a_failed_call_again_with_them, script = vec![500];
    a_flush_after_a_failure_sends_the_failed_call_again, script = vec![500];
    remove_ends_a_webhook_and_accounts_for_its_events;
    a_bot_sender_answers_like_enqueue_and_follows_its_webhook;
}
