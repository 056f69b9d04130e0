//! The dispatcher over real sockets: reqwest transport, tokio runtime, and an
//! axum server on 127.0.0.1 started by each test. Every test is bounded in time.
#![cfg(all(feature = "reqwest", feature = "tokio"))]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use eventhook::adapters::{ReqwestTransport, TokioRuntime};
use eventhook::dispatch::{Dispatcher, DropReason, EnqueueOutcome, WebhookDispatcher, WebhookState};
use eventhook::{AlertSink, ChatContext, Event, EventFactory, TransportErrorKind, WebhookConfig, WebhookDisabledAlert};

const SECRET: &str = "the-bot-api-secret";
const TEST_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Answer(u16),
    Hang,
}

/// What the test server saw and how it answers, per bot path.
#[derive(Default)]
struct ServerState {
    behaviour: Mutex<HashMap<String, Behaviour>>,
    requests: Mutex<Vec<(String, HeaderMap, Bytes)>>,
    redirect_target_hits: Mutex<usize>,
}

impl ServerState {
    fn set(&self, bot: &str, behaviour: Behaviour) {
        self.behaviour.lock().unwrap().insert(bot.to_owned(), behaviour);
    }

    fn requests_for(&self, bot: &str) -> Vec<(HeaderMap, Bytes)> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(path, ..)| path == bot)
            .map(|(_, headers, body)| (headers.clone(), body.clone()))
            .collect()
    }

    fn events_for(&self, bot: &str) -> Vec<Event> {
        self.requests_for(bot)
            .iter()
            .flat_map(|(_, body)| eventhook::wire::parse_push(body).expect("valid push"))
            .collect()
    }
}

async fn hook(
    Path(bot): Path<String>,
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = state.behaviour.lock().unwrap().get(&bot).copied().unwrap_or(Behaviour::Answer(200));
    state.requests.lock().unwrap().push((bot, headers, body));
    match behaviour {
        Behaviour::Answer(status) if (300..400).contains(&status) => {
            (StatusCode::from_u16(status).unwrap(), [("location", "/redirect-target")]).into_response()
        }
        Behaviour::Answer(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

async fn redirect_target(State(state): State<Arc<ServerState>>) -> StatusCode {
    *state.redirect_target_hits.lock().unwrap() += 1;
    StatusCode::OK
}

async fn start_server() -> (SocketAddr, Arc<ServerState>) {
    let state = Arc::new(ServerState::default());
    let router = Router::new()
        .route("/hooks/{bot}", post(hook))
        .route("/redirect-target", any(redirect_target))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (address, state)
}

#[derive(Debug, Default)]
struct Alerts(Mutex<Vec<WebhookDisabledAlert>>);

impl AlertSink for Alerts {
    fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
        self.0.lock().unwrap().push(alert.clone());
    }
}

fn dispatcher(allow_private: bool, alerts: Arc<Alerts>) -> WebhookDispatcher {
    let transport = ReqwestTransport::builder().allow_private_networks(allow_private).build().unwrap();
    WebhookDispatcher::builder()
        .transport(Arc::new(transport))
        .runtime(Arc::new(TokioRuntime::current()))
        .alert_sink(alerts)
        .build()
        .unwrap()
}

fn config(address: SocketAddr, bot: &str) -> eventhook::WebhookConfigBuilder {
    WebhookConfig::builder(bot, "Matelab Srl", format!("http://{address}/hooks/{bot}"), SECRET)
        .push_interval(Duration::from_millis(40))
        .request_timeout(Duration::from_millis(300))
}

fn conversation(bot: &str, count: usize) -> Vec<Event> {
    let factory = EventFactory::new(bot, "Matelab Srl");
    let chat = ChatContext::new("conversation-7", "TelegramChannel").user_name("Ada");
    (0..count)
        .map(|index| match index % 4 {
            0 => Event::UserMessage(factory.message(&chat, format!("user says {index} ✓"))),
            1 => Event::BotMessage(factory.message(&chat, format!("bot answers {index}")).item_type("Text")),
            2 => Event::NlpMissed(factory.missed_text(&chat, format!("asdf {index}"))),
            _ => Event::HandOver(factory.conversation(&chat)),
        })
        .collect()
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(TEST_LIMIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("reached in time");
}

#[tokio::test]
async fn delivered_events_equal_enqueued_events_with_the_contract_headers() {
    let (address, server) = start_server().await;
    let dispatcher = dispatcher(true, Arc::default());
    let mut sent = HashMap::new();
    for bot in ["alpha", "beta"] {
        dispatcher.configure(config(address, bot).max_batch_events(9).build().unwrap()).unwrap();
        let events = conversation(bot, 40);
        for event in &events {
            assert_eq!(dispatcher.enqueue(event.clone()), EnqueueOutcome::Accepted);
        }
        sent.insert(bot, events);
    }
    wait_until(|| dispatcher.stats().totals.delivered == 80).await;
    for (bot, events) in &sent {
        assert_eq!(&server.events_for(bot), events, "bot {bot}");
        for (headers, body) in server.requests_for(bot) {
            assert_eq!(headers["authorization"], format!("Bearer {SECRET}").as_str());
            assert_eq!(headers["content-type"], "application/json; charset=utf-8");
            assert_eq!(headers["user-agent"], eventhook::USER_AGENT);
            let parsed = eventhook::wire::parse_push(&body).unwrap();
            assert_eq!(body, eventhook::wire::encode_push(&parsed), "the body is what the codec writes");
        }
    }
    let report = dispatcher.shutdown(Duration::from_secs(5)).await;
    assert!(report.undelivered.is_empty());
    assert!(report.stats.totals.is_balanced());
}

/// Runs one failing behaviour to the 11th call and checks the failure rule end to end.
async fn eleven_failures_disable(behaviour: Option<Behaviour>, url_override: Option<String>) {
    let (address, server) = start_server().await;
    let alerts = Arc::new(Alerts::default());
    let dispatcher = dispatcher(true, Arc::clone(&alerts));
    let bot = "failing";
    if let Some(behaviour) = behaviour {
        server.set(bot, behaviour);
    }
    let mut builder = config(address, bot);
    if let Some(url) = &url_override {
        builder = WebhookConfig::builder(bot, "Matelab Srl", url, SECRET)
            .push_interval(Duration::from_millis(40))
            .request_timeout(Duration::from_millis(300));
    }
    dispatcher.configure(builder.build().unwrap()).unwrap();
    let events = conversation(bot, 5);
    for event in &events {
        let _ = dispatcher.enqueue(event.clone());
    }
    wait_until(|| !alerts.0.lock().unwrap().is_empty()).await;
    let stats = dispatcher.webhook_stats(bot).unwrap();
    assert_eq!(stats.state, WebhookState::Disabled);
    assert_eq!((stats.counts.calls, stats.counts.calls_failed), (11, 11));
    assert_eq!(stats.counts.dropped(DropReason::Disabled), 5);
    // Nothing else is sent to it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if url_override.is_none() {
        assert_eq!(server.requests_for(bot).len(), 11);
    }
    assert_eq!(*server.redirect_target_hits.lock().unwrap(), 0, "redirects are never followed");
    assert_eq!(alerts.0.lock().unwrap().len(), 1, "one alert");
    assert_eq!(dispatcher.enqueue(events[0].clone()), EnqueueOutcome::WebhookDisabled);

    // Saving the settings again re-enables it.
    server.set(bot, Behaviour::Answer(200));
    dispatcher.configure(config(address, bot).build().unwrap()).unwrap();
    assert_eq!(dispatcher.enqueue(events[0].clone()), EnqueueOutcome::Accepted);
    wait_until(|| dispatcher.webhook_stats(bot).unwrap().counts.delivered == 1).await;
    assert_eq!(dispatcher.webhook_stats(bot).unwrap().state, WebhookState::Active);
    let _ = dispatcher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn status_500_is_a_failed_call() {
    eleven_failures_disable(Some(Behaviour::Answer(500)), None).await;
}

#[tokio::test]
async fn status_404_is_a_failed_call() {
    eleven_failures_disable(Some(Behaviour::Answer(404)), None).await;
}

#[tokio::test]
async fn status_204_is_a_failed_call() {
    eleven_failures_disable(Some(Behaviour::Answer(204)), None).await;
}

#[tokio::test]
async fn redirect_301_is_a_failed_call_and_not_followed() {
    eleven_failures_disable(Some(Behaviour::Answer(301)), None).await;
}

#[tokio::test]
async fn redirect_302_is_a_failed_call_and_not_followed() {
    eleven_failures_disable(Some(Behaviour::Answer(302)), None).await;
}

#[tokio::test]
async fn hanging_past_the_timeout_is_a_failed_call() {
    eleven_failures_disable(Some(Behaviour::Hang), None).await;
}

#[tokio::test]
async fn a_reset_connection_is_a_failed_call() {
    // A raw listener that accepts and drops each connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // A zero linger makes the close a reset (RST); it cannot block on drop.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    eleven_failures_disable(None, Some(format!("http://{address}/hooks/failing"))).await;
}

#[tokio::test]
async fn nothing_listening_is_a_failed_call() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    eleven_failures_disable(None, Some(format!("http://{address}/hooks/failing"))).await;
}

#[tokio::test]
async fn a_backlog_of_100000_events_drains_without_waiting_an_interval_per_batch() {
    let (address, server) = start_server().await;
    let dispatcher = dispatcher(true, Arc::default());
    // 100 batches: waiting one 1-second interval per batch would take 100 s.
    let interval = Duration::from_secs(1);
    dispatcher
        .configure(
            config(address, "busy")
                .push_interval(interval)
                .queue_capacity(100_000)
                .max_batch_events(1000)
                .build()
                .unwrap(),
        )
        .unwrap();
    let factory = EventFactory::new("busy", "Matelab Srl");
    let chat = ChatContext::new("c", "WebChannel");
    let started = std::time::Instant::now();
    for index in 0..100_000 {
        assert!(dispatcher.enqueue(Event::UserMessage(factory.message(&chat, index.to_string()))).is_accepted());
    }
    wait_until(|| dispatcher.stats().totals.delivered == 100_000).await;
    assert!(started.elapsed() < interval * 30, "drained in {:?}, not one interval per batch", started.elapsed());
    let stats = dispatcher.webhook_stats("busy").unwrap();
    assert_eq!(stats.counts.calls, 100);
    assert_eq!(server.requests_for("busy").len(), 100);
    let received = server.events_for("busy");
    assert_eq!(received.len(), 100_000);
    let _ = dispatcher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_with_the_receiver_down_returns_every_undelivered_event() {
    let (address, server) = start_server().await;
    server.set("down", Behaviour::Answer(503));
    let dispatcher = dispatcher(true, Arc::default());
    dispatcher.configure(config(address, "down").push_interval(Duration::from_secs(3600)).build().unwrap()).unwrap();
    let events = conversation("down", 30);
    for event in &events {
        let _ = dispatcher.enqueue(event.clone());
    }
    let report = tokio::time::timeout(TEST_LIMIT, dispatcher.shutdown(Duration::from_secs(2))).await.unwrap();
    assert_eq!(report.undelivered, events);
    assert_eq!(report.stats.totals.dropped(DropReason::Shutdown), 30);
    assert!(report.stats.totals.is_balanced());
}

#[tokio::test]
async fn the_guard_refuses_loopback_unless_private_networks_are_allowed() {
    let (address, server) = start_server().await;
    let dispatcher = dispatcher(false, Arc::default());
    dispatcher.configure(config(address, "guarded").build().unwrap()).unwrap();
    let _ = dispatcher.enqueue(conversation("guarded", 1).remove(0));
    wait_until(|| dispatcher.webhook_stats("guarded").unwrap().counts.calls_failed >= 1).await;
    let failure = dispatcher.webhook_stats("guarded").unwrap().last_failure.unwrap();
    assert!(failure.contains(&TransportErrorKind::BlockedAddress.to_string()), "{failure}");
    assert!(failure.contains("loopback"), "{failure}");
    assert!(server.requests_for("guarded").is_empty(), "nothing reached the server");
    let _ = dispatcher.shutdown(Duration::from_millis(100)).await;

    let dispatcher = self::dispatcher(true, Arc::default());
    dispatcher.configure(config(address, "guarded").build().unwrap()).unwrap();
    let _ = dispatcher.enqueue(conversation("guarded", 1).remove(0));
    wait_until(|| dispatcher.webhook_stats("guarded").unwrap().counts.delivered == 1).await;
    let _ = dispatcher.shutdown(Duration::from_secs(1)).await;
}
