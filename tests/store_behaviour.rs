//! The delivery rules as a host sees them, one suite run against both stores:
//! the in-memory `WebhookDispatcher` and the `PostgresDispatcher` (with a
//! real PostgreSQL; skipped loudly without `DATABASE_URL`).
//!
//! Each rule is a function of a [`Setup`]; `store_tests!` runs it on each
//! store. Times are real but short (push intervals of tens of milliseconds).
// The in-memory dispatcher runs on its default runtime, tokio.
#![cfg(feature = "tokio")]

mod common;
#[cfg(feature = "postgres")]
mod postgres_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::Recorder;
use eventhook::dispatch::{Dispatcher, DropReason, EnqueueOutcome, WebhookDispatcher};
use eventhook::{
    ChatContext, Event, EventFactory, EventFlags, EventKind, Plan, Transport, TransportError, WebhookConfig,
    WebhookConfigBuilder,
};

/// Answers with scripted statuses (then 200); records every call.
#[derive(Debug, Default)]
struct ScriptedTransport {
    script: Mutex<VecDeque<u16>>,
    calls: Mutex<Vec<Call>>,
    bodies: Mutex<Vec<Vec<u8>>>,
}

#[derive(Debug, Clone)]
struct Call {
    bot: String,
    texts: Vec<String>,
    webhook_id: Option<String>,
    at: Instant,
    status: u16,
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(request.body()).expect("a JSON array");
        let texts = events.iter().map(|event| event["Data"].as_str().unwrap_or_default().to_owned()).collect();
        let webhook_id = request.headers().get("webhook-id").and_then(|id| id.to_str().ok()).map(str::to_owned);
        let bot = events[0]["BotToken"].as_str().unwrap_or_default().to_owned();
        let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
        self.calls.lock().unwrap().push(Call { bot, texts, webhook_id, at: Instant::now(), status });
        self.bodies.lock().unwrap().push(request.body().clone());
        Ok(http::StatusCode::from_u16(status).expect("a status"))
    }
}

/// A dispatcher on one store, its scripted transport and its recorder.
struct Setup {
    dispatcher: Arc<dyn Dispatcher>,
    transport: Arc<ScriptedTransport>,
    recorder: Arc<Recorder>,
    #[cfg(feature = "postgres")]
    _schema: Option<postgres_support::TestSchema>,
}

impl Setup {
    fn in_memory(script: Vec<u16>) -> Setup {
        let transport = Arc::new(ScriptedTransport { script: Mutex::new(script.into()), ..Default::default() });
        let recorder = Arc::new(Recorder::default());
        let dispatcher = WebhookDispatcher::builder()
            .transport(transport.clone())
            .alert_sink(recorder.clone())
            .observer(recorder.clone())
            .build()
            .expect("building");
        Setup {
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
        let transport = Arc::new(ScriptedTransport { script: Mutex::new(script.into()), ..Default::default() });
        let recorder = Arc::new(Recorder::default());
        let dispatcher = eventhook::postgres::PostgresDispatcher::builder(schema.url())
            .schema(schema.schema.clone())
            .transport(transport.clone())
            .alert_sink(recorder.clone())
            .observer(recorder.clone())
            .poll_interval(Duration::from_millis(10))
            .commit_window(Duration::from_millis(2))
            .build()
            .await
            .expect("building");
        Some(Setup { dispatcher: Arc::new(dispatcher), transport, recorder, _schema: Some(schema) })
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(setup.recorder.alerts.lock().unwrap().len(), 1, "alerted once");
    let alert = setup.recorder.alerts.lock().unwrap()[0].clone();
    assert_eq!((alert.bot_token.as_str(), alert.failures_in_row), ("bot", 11));
    assert!(alert.last_failure.contains("500"), "{}", alert.last_failure);

    // Saving the settings again re-enables it.
    setup.configure(config("bot").build().unwrap()).await;
    setup.until("enabled", |setup| setup.dispatcher.stats().disabled_webhooks == 0).await;
    assert_eq!(setup.dispatcher.enqueue(message("bot", "again")), EnqueueOutcome::Accepted);
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

async fn only_the_variables_a_webhook_lists_are_sent(setup: Setup) {
    setup.configure(config("bot").include_variables(["plan"]).build().unwrap()).await;
    let factory = EventFactory::new("bot", "Account");
    let chat = ChatContext::new("conversation", "TelegramChannel").variable("plan", "gold").variable("email", "x@y");
    let event = Event::UserMessage(factory.message(&chat, "with variables"));
    assert_eq!(setup.dispatcher.enqueue(event), EnqueueOutcome::Accepted);
    setup.until("delivered", |setup| !setup.calls().is_empty()).await;
    let body = setup.transport.bodies.lock().unwrap()[0].clone();
    let events: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(events[0]["Variables"], serde_json::json!({ "plan": "gold" }));
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
}
