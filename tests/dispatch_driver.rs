//! The driver on a real runtime (tokio) with a scripted in-memory transport.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Recorder, TestRuntime};
use eventhook::dispatch::{CallRecord, DeliveryObserver, Dispatcher, WebhookDispatcher, WebhookState};
use eventhook::{ChatContext, Event, EventFactory, Transport, TransportError, WebhookConfig};

/// Answers with scripted statuses (then 200), or hangs; records every request.
#[derive(Debug, Default)]
struct ScriptedTransport {
    script: Mutex<VecDeque<Option<u16>>>,
    requests: Mutex<Vec<http::Request<Vec<u8>>>>,
    sent_at: Mutex<Vec<std::time::Instant>>,
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        let next = self.script.lock().unwrap().pop_front().unwrap_or(Some(200));
        self.requests.lock().unwrap().push(request);
        self.sent_at.lock().unwrap().push(std::time::Instant::now());
        match next {
            Some(status) => Ok(http::StatusCode::from_u16(status).unwrap()),
            None => futures::future::pending().await,
        }
    }
}

fn setup(script: Vec<Option<u16>>) -> (WebhookDispatcher, Arc<ScriptedTransport>, Arc<Recorder>) {
    let transport = Arc::new(ScriptedTransport { script: Mutex::new(script.into()), ..Default::default() });
    let recorder = Arc::new(Recorder::default());
    let dispatcher = WebhookDispatcher::builder()
        .transport(transport.clone())
        .runtime(Arc::new(TestRuntime))
        .alert_sink(recorder.clone())
        .observer(recorder.clone())
        .build()
        .unwrap();
    (dispatcher, transport, recorder)
}

fn config(bot: &str) -> eventhook::WebhookConfigBuilder {
    WebhookConfig::builder(bot, "Account", format!("https://hooks.example.com/{bot}"), "secret")
        .push_interval(Duration::from_millis(20))
        .request_timeout(Duration::from_millis(200))
}

fn messages(bot: &str, count: usize) -> Vec<Event> {
    let factory = EventFactory::new(bot, "Account");
    let chat = ChatContext::new("conversation", "TelegramChannel");
    (0..count).map(|index| Event::UserMessage(factory.message(&chat, index.to_string()))).collect()
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition reached in time");
}

#[tokio::test]
async fn delivers_every_event_of_every_bot() {
    let (dispatcher, transport, recorder) = setup(Vec::new());
    for bot in ["a", "b", "c"] {
        dispatcher.configure(config(bot).max_batch_events(7).build().unwrap()).unwrap();
    }
    let mut enqueued = Vec::new();
    for bot in ["a", "b", "c"] {
        for event in messages(bot, 50) {
            assert!(dispatcher.enqueue(event.clone()).is_accepted());
            enqueued.push(event);
        }
    }
    wait_until(|| dispatcher.stats().totals.delivered == 150).await;
    let mut received = Vec::new();
    for request in transport.requests.lock().unwrap().iter() {
        received.extend(eventhook::wire::parse_push(request.body()).unwrap());
    }
    for bot in ["a", "b", "c"] {
        let sent: Vec<_> = enqueued.iter().filter(|event| event.bot_token() == Some(bot)).collect();
        let got: Vec<_> = received.iter().filter(|event| event.bot_token() == Some(bot)).collect();
        assert_eq!(sent, got, "bot {bot}: same events, same order");
    }
    assert_eq!(recorder.calls.lock().unwrap().len(), transport.requests.lock().unwrap().len());
    let report = dispatcher.shutdown(Duration::from_secs(1)).await;
    assert!(report.undelivered.is_empty());
    assert!(report.stats.totals.is_balanced());
}

#[tokio::test]
async fn the_eleventh_failure_disables_alerts_once_and_hands_events_to_the_host() {
    let (dispatcher, transport, recorder) = setup(vec![Some(500); 20]);
    dispatcher.configure(config("bot").build().unwrap()).unwrap();
    for event in messages("bot", 3) {
        let _ = dispatcher.enqueue(event);
    }
    wait_until(|| !recorder.alerts.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(transport.requests.lock().unwrap().len(), 11, "nothing sent after disabling");
    assert_eq!(recorder.alerts.lock().unwrap().len(), 1);
    let stats = dispatcher.webhook_stats("bot").unwrap();
    assert_eq!(stats.state, WebhookState::Disabled);
    let dropped_events: usize = recorder.dropped.lock().unwrap().iter().map(|dropped| dropped.events.len()).sum();
    assert_eq!(dropped_events, 3);

    // The owner fixes the endpoint and saves the settings again: re-enabled.
    transport.script.lock().unwrap().clear();
    dispatcher.configure(config("bot").build().unwrap()).unwrap();
    assert_eq!(dispatcher.webhook_stats("bot").unwrap().state, WebhookState::Active);
    for event in messages("bot", 2) {
        assert!(dispatcher.enqueue(event).is_accepted());
    }
    wait_until(|| dispatcher.webhook_stats("bot").unwrap().counts.delivered == 2).await;
    let _ = dispatcher.shutdown(Duration::from_secs(1)).await;
}

/// Issue 11's retry storm through the driver: a backlog to a failing
/// receiver is retried once per interval, not at network speed.
#[tokio::test]
async fn a_backlog_to_a_failing_endpoint_is_retried_once_per_interval() {
    let interval = Duration::from_millis(50);
    let (dispatcher, transport, _recorder) = setup(vec![Some(500); 20]);
    dispatcher.configure(config("busy").push_interval(interval).max_batch_events(5).build().unwrap()).unwrap();
    for event in messages("busy", 12) {
        assert!(dispatcher.enqueue(event).is_accepted());
    }
    wait_until(|| transport.sent_at.lock().unwrap().len() >= 4).await;
    let sent_at = transport.sent_at.lock().unwrap().clone();
    // Timers never fire early, so each gap is at least the interval on any machine.
    for pair in sent_at.windows(2) {
        assert!(pair[1] - pair[0] >= interval, "retried after {:?}", pair[1] - pair[0]);
    }
    let stats = dispatcher.webhook_stats("busy").unwrap();
    assert_eq!(stats.state, WebhookState::Active, "not disabled within a few intervals");
    let _ = dispatcher.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_as_a_failure() {
    let (dispatcher, _transport, _recorder) = setup(vec![None]);
    dispatcher.configure(config("bot").build().unwrap()).unwrap();
    let _ = dispatcher.enqueue(messages("bot", 1).remove(0));
    wait_until(|| dispatcher.webhook_stats("bot").unwrap().counts.delivered == 1).await;
    let stats = dispatcher.webhook_stats("bot").unwrap();
    assert_eq!(stats.counts.calls_failed, 1);
    assert!(stats.last_failure.unwrap().contains("timed out"));
    let _ = dispatcher.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn flush_sends_now_and_shutdown_returns_what_could_not_be_delivered() {
    let (dispatcher, _transport, _recorder) = setup(Vec::new());
    dispatcher.configure(config("up").push_interval(Duration::from_secs(3600)).build().unwrap()).unwrap();
    for event in messages("up", 10) {
        let _ = dispatcher.enqueue(event);
    }
    dispatcher.flush(Duration::from_secs(5)).await.expect("flushed without waiting an hour");
    assert_eq!(dispatcher.stats().totals.delivered, 10);

    let (dispatcher, transport, _recorder) = setup(vec![Some(503); 100]);
    dispatcher.configure(config("down").push_interval(Duration::from_secs(3600)).build().unwrap()).unwrap();
    let sent = messages("down", 25);
    for event in &sent {
        let _ = dispatcher.enqueue(event.clone());
    }
    let report = dispatcher.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.undelivered, sent, "every undelivered event comes back, in order");
    assert_eq!(transport.requests.lock().unwrap().len(), 1, "one flush attempt");
    assert!(matches!(dispatcher.enqueue(sent[0].clone()), eventhook::dispatch::EnqueueOutcome::Closed(_)));
    assert!(dispatcher.configure(config("down").build().unwrap()).is_err());
}

#[tokio::test]
async fn enqueue_from_many_threads_at_once() {
    let (dispatcher, _transport, _recorder) = setup(Vec::new());
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(dispatcher);
    dispatcher.configure(config("bot").queue_capacity(100_000).build().unwrap()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let dispatcher = Arc::clone(&dispatcher);
            std::thread::spawn(move || {
                messages("bot", 2_000)
                    .into_iter()
                    .filter(|event| dispatcher.enqueue(event.clone()).is_accepted())
                    .count()
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|thread| thread.join().unwrap()).sum();
    assert_eq!(accepted, 8_000);
    wait_until(|| dispatcher.stats().totals.delivered == 8_000).await;
    let _ = dispatcher.shutdown(Duration::from_secs(1)).await;
}

/// An observer that takes its time, as one writing to a billing database does.
#[derive(Debug, Default)]
struct SlowObserver {
    calls: std::sync::atomic::AtomicU64,
}

impl DeliveryObserver for SlowObserver {
    fn call_made(&self, _call: &CallRecord) {
        std::thread::sleep(Duration::from_millis(5));
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A flush that could not deliver says which webhooks hold the events and
/// why, and by the time it returns the observer has heard of every call,
/// however slow it is and whichever thread runs the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_names_the_webhook_and_the_observer_has_heard_every_call() {
    for round in 0..10 {
        let transport =
            Arc::new(ScriptedTransport { script: Mutex::new(vec![Some(503); 3].into()), ..Default::default() });
        let observer = Arc::new(SlowObserver::default());
        let dispatcher = WebhookDispatcher::builder()
            .transport(transport)
            .runtime(Arc::new(TestRuntime))
            .observer(observer.clone())
            .build()
            .unwrap();
        dispatcher.configure(config("bot").push_interval(Duration::from_secs(3600)).build().unwrap()).unwrap();
        for event in messages("bot", 4) {
            assert!(dispatcher.enqueue(event).is_accepted());
        }
        let error = dispatcher.flush(Duration::from_secs(5)).await.unwrap_err();
        let heard = observer.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(heard, dispatcher.stats().totals.calls, "round {round}: the observer is behind the flush");
        let eventhook::dispatch::FlushError::Incomplete { pending, webhooks } = &error else {
            panic!("round {round}: {error:?}")
        };
        assert_eq!(*pending, 4);
        assert_eq!(webhooks.len(), 1);
        assert_eq!(webhooks[0].bot_token, "bot");
        assert_eq!(webhooks[0].undelivered, 4);
        assert_eq!(webhooks[0].last_failure.as_deref(), Some("answered 503 Service Unavailable"));
        assert_eq!(
            error.to_string(),
            "flush ended with 4 events still pending after failed calls: \
             bot: 4 undelivered, last failure: answered 503 Service Unavailable"
        );
        let report = dispatcher.shutdown(Duration::from_millis(1)).await;
        assert_eq!(report.undelivered.len(), 4);
        assert_eq!(report.stalled.len(), 1, "{report:?}");
        assert_eq!(report.stalled[0].bot_token, "bot");
        assert!(report.stalled[0].last_failure.is_some());
    }
}

/// Every dispatcher, the test doubles included, hands out per-bot senders
/// through the one handle a bot engine holds.
#[tokio::test]
async fn every_dispatcher_hands_out_bot_senders_through_the_trait() {
    let (real, transport, _recorder) = setup(Vec::new());
    real.configure(config("bot").build().unwrap()).unwrap();
    let recording = eventhook::dispatch::RecordingDispatcher::new();
    let dispatchers: Vec<Arc<dyn Dispatcher>> =
        vec![Arc::new(real), Arc::new(recording.clone()), Arc::new(eventhook::dispatch::NoopDispatcher)];
    let event = messages("bot", 1).remove(0);
    let mut outcomes = Vec::new();
    for dispatcher in &dispatchers {
        let sender = dispatcher.bot_sender("bot");
        assert_eq!(sender.bot_token(), "bot");
        outcomes.push(sender.enqueue(event.clone()));
    }
    assert_eq!(
        outcomes,
        [
            eventhook::dispatch::EnqueueOutcome::Accepted,
            eventhook::dispatch::EnqueueOutcome::Accepted,
            eventhook::dispatch::EnqueueOutcome::NoWebhook
        ]
    );
    assert_eq!(recording.events(), [event], "the recorder's sender records into the recorder");
    wait_until(|| transport.requests.lock().unwrap().len() == 1).await;
    let _ = dispatchers[0].shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_polling_stats_does_not_hold_deliveries_back() {
    // A snapshot takes in what waits in the intake; the driver must still schedule it.
    let (dispatcher, transport, _recorder) = setup(Vec::new());
    dispatcher.configure(config("bot").build().unwrap()).unwrap();
    for round in 0..20 {
        for event in messages("bot", 1) {
            assert!(dispatcher.enqueue(event).is_accepted());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dispatcher.stats().totals.delivered < round + 1 {
            assert!(std::time::Instant::now() < deadline, "event {round} never pushed");
        }
    }
    assert_eq!(transport.requests.lock().unwrap().len(), 20);
}
