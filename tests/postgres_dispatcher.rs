//! The PostgreSQL dispatcher's rules across processes, against a real
//! PostgreSQL: several dispatchers on one schema stand for several processes.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventhook::dispatch::{CallRecord, DeliveryObserver, Dispatcher, EnqueueOutcome};
use eventhook::postgres::{migrate, save_webhook, PostgresDispatcher};
use eventhook::{
    AlertSink, ChatContext, Event, EventFactory, Transport, TransportError, WebhookConfig, WebhookDisabledAlert,
};
use http::StatusCode;
use postgres_support::TestSchema;

/// Answers calls with scripted statuses (then `otherwise`, 200 by default;
/// 0 hangs), recording each call's bot, event texts and time.
#[derive(Debug, Default)]
struct ScriptedTransport {
    answers: Mutex<VecDeque<u16>>,
    otherwise: Mutex<Option<u16>>,
    calls: Mutex<Vec<(String, Vec<String>, Instant)>>,
}

impl ScriptedTransport {
    fn answering(status: u16) -> Arc<ScriptedTransport> {
        Arc::new(ScriptedTransport { otherwise: Mutex::new(Some(status)), ..Default::default() })
    }

    fn texts(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().flat_map(|(_, texts, _)| texts.clone()).collect()
    }
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<StatusCode, TransportError> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(request.body()).expect("a JSON array");
        let texts = events.iter().map(|event| event["Data"].as_str().unwrap_or_default().to_owned()).collect();
        let bot = events[0]["BotToken"].as_str().unwrap_or_default().to_owned();
        self.calls.lock().unwrap().push((bot, texts, Instant::now()));
        let otherwise = self.otherwise.lock().unwrap().unwrap_or(200);
        let status = self.answers.lock().unwrap().pop_front().unwrap_or(otherwise);
        if status == 0 {
            futures::future::pending::<()>().await;
        }
        Ok(StatusCode::from_u16(status).expect("a status"))
    }
}

#[derive(Debug, Default)]
struct Alerts(Mutex<Vec<WebhookDisabledAlert>>);

impl AlertSink for Alerts {
    fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
        self.0.lock().unwrap().push(alert.clone());
    }
}

/// Waits until `done` holds, for at most `seconds`.
async fn until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A webhook's settings (its URL is never called: the transport is scripted), pushing every `interval`.
fn settings(bot: &str, interval: Duration) -> eventhook::WebhookConfigBuilder {
    WebhookConfig::builder(bot, "Account", "http://127.0.0.1:9/events", "bot-secret").push_interval(interval)
}

fn config(bot: &str) -> WebhookConfig {
    settings(bot, Duration::from_millis(200)).build().expect("a valid config")
}

fn message(bot: &str, text: &str) -> Event {
    let factory = EventFactory::new(bot, "Account");
    Event::UserMessage(factory.message(&ChatContext::new("c-1", "WebChannel"), text))
}

async fn dispatcher(test: &TestSchema, transport: Arc<ScriptedTransport>) -> PostgresDispatcher {
    builder(test, transport).build().await.expect("building the dispatcher")
}

fn builder(test: &TestSchema, transport: Arc<dyn Transport>) -> eventhook::postgres::PostgresDispatcherBuilder {
    PostgresDispatcher::builder(test.url())
        .schema(test.schema.clone())
        .transport(transport)
        .poll_interval(Duration::from_millis(50))
}

async fn migrated(name: &str) -> Option<TestSchema> {
    let test = TestSchema::new(name)?;
    migrate(&mut test.connect().await, &test.schema).await.expect("migrating");
    Some(test)
}

#[tokio::test]
async fn events_accepted_by_one_process_are_delivered_once_in_order() {
    let Some(test) = TestSchema::new("events_accepted_by_one_process_are_delivered_once_in_order") else { return };
    migrate(&mut test.connect().await, &test.schema).await.expect("migrating");
    let transport = Arc::new(ScriptedTransport::default());
    let first = dispatcher(&test, Arc::clone(&transport)).await;
    let second = dispatcher(&test, Arc::clone(&transport)).await;
    first.configure(config("bot")).expect("configuring");
    for index in 0..5 {
        assert_eq!(first.enqueue(message("bot", &format!("m{index}"))), EnqueueOutcome::Accepted);
    }
    first.wait_durable(Duration::from_secs(5)).await.expect("committed");
    let flushed = first.flush(Duration::from_secs(10)).await;
    assert!(flushed.is_ok(), "{flushed:?}, database: {:?}", first.database_error());
    assert_eq!(transport.texts(), ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(first.pending_in_database(None).await.expect("counting"), 0);
    let _ = second.shutdown(Duration::from_secs(1)).await;
    let report = first.shutdown(Duration::from_secs(1)).await;
    assert!(report.undelivered.is_empty());
}

/// Events committed together share a row; calls cut it: each call takes
/// the oldest events, a failed one is sent again as it was, and every event
/// leaves once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_a_row_of_events_committed_together_and_each_event_leaves_once_in_order() {
    let Some(test) = migrated("calls_cut_a_row_of_events_committed_together").await else { return };
    let transport = Arc::new(ScriptedTransport::default());
    *transport.answers.lock().unwrap() = VecDeque::from([200, 500]);
    let process = dispatcher(&test, Arc::clone(&transport)).await;
    let config = settings("bot", Duration::from_millis(30)).max_batch_events(10).build().expect("a valid config");
    process.configure(config).expect("configuring");
    let texts: Vec<String> = (0..25).map(|index| format!("m{index}")).collect();
    for text in &texts {
        assert_eq!(process.enqueue(message("bot", text)), EnqueueOutcome::Accepted);
    }
    process.wait_durable(Duration::from_secs(5)).await.expect("committed");
    let client = test.connect().await;
    let schema = test.quoted();
    let rows: i64 =
        client.query_one(&format!("SELECT count(*) FROM {schema}.events"), &[]).await.expect("counting rows").get(0);
    assert!(rows <= 1, "25 events committed together are in one row, not {rows}");

    until("every event is delivered", 10, || transport.texts().len() == 35).await;
    let calls: Vec<Vec<String>> = transport.calls.lock().unwrap().iter().map(|(_, texts, _)| texts.clone()).collect();
    assert_eq!(calls, [&texts[0..10], &texts[10..20], &texts[10..20], &texts[20..25]]);
    // The last call's settlement (its ledger row, its events' deletion) follows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while process.pending_in_database(None).await.expect("counting") > 0 {
        assert!(Instant::now() < deadline, "the last settlement committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ledger: Vec<(i32, String)> = client
        .query(&format!("SELECT events, outcome FROM {schema}.calls ORDER BY id"), &[])
        .await
        .expect("reading the ledger")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let outcomes: Vec<(i32, &str)> = ledger.iter().map(|(events, outcome)| (*events, outcome.as_str())).collect();
    assert_eq!(outcomes, [(10, "delivered"), (10, "failed_status"), (10, "delivered"), (5, "delivered")]);
    let _ = process.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_every_process_within_the_poll_interval_and_configuring_again_re_enables_everywhere() {
    let Some(test) = migrated("settings_reach_every_process").await else { return };
    let transport = ScriptedTransport::answering(500);
    let first = dispatcher(&test, Arc::clone(&transport)).await;
    let second = dispatcher(&test, Arc::clone(&transport)).await;
    first.configure(config("bot")).expect("configuring");
    first.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the second process sees the webhook", 2, || second.webhook_stats("bot").is_some()).await;

    // Eleven failures disable it for both; saving in the second re-enables it for the first.
    let fast = || settings("bot", Duration::from_millis(10)).build().expect("a valid config");
    second.configure(fast()).expect("configuring");
    second.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the first sees the new interval", 2, || {
        first.webhook_stats("bot").is_some() && first.enqueue(message("bot", "x")).is_accepted()
    })
    .await;
    until("both see it disabled", 10, || {
        first.enqueue(message("bot", "late")) == EnqueueOutcome::WebhookDisabled
            && second.enqueue(message("bot", "late")) == EnqueueOutcome::WebhookDisabled
    })
    .await;
    *transport.otherwise.lock().unwrap() = Some(200);
    second.configure(fast()).expect("configuring again");
    second.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the first accepts again", 2, || first.enqueue(message("bot", "again")).is_accepted()).await;

    // Removed in one process, gone from the other.
    second.remove("bot");
    second.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the first forgets it", 2, || first.enqueue(message("bot", "gone")) == EnqueueOutcome::NoWebhook).await;
    let _ = first.shutdown(Duration::from_secs(1)).await;
    let _ = second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_push_a_bot_once_per_interval() {
    let Some(test) = migrated("two_processes_push_a_bot_once_per_interval").await else { return };
    let transport = Arc::new(ScriptedTransport::default());
    let first = dispatcher(&test, Arc::clone(&transport)).await;
    let second = dispatcher(&test, Arc::clone(&transport)).await;
    first.configure(config("bot")).expect("configuring");
    first.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the second process sees the webhook", 2, || second.webhook_stats("bot").is_some()).await;
    // Both processes enqueue for a while; 200 ms intervals, never a full batch.
    let mut sent = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        for process in [&first, &second] {
            assert!(process.enqueue(message("bot", &format!("m{sent}"))).is_accepted());
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until("everything arrived", 10, || transport.texts().len() >= sent).await;
    let calls = transport.calls.lock().unwrap().clone();
    for pair in calls.windows(2) {
        let gap = pair[1].2 - pair[0].2;
        assert!(gap >= Duration::from_millis(180), "two calls {gap:?} apart over {} calls", calls.len());
    }
    let mut texts = transport.texts();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), sent, "each event once");
    let _ = first.shutdown(Duration::from_secs(1)).await;
    let _ = second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_count_over_every_process_and_the_alert_comes_once_with_its_ledger() {
    let Some(test) = migrated("failures_count_over_every_process").await else { return };
    let transport = ScriptedTransport::answering(503);
    let alerts = Arc::new(Alerts::default());
    let processes = [
        builder(&test, transport.clone()).alert_sink(alerts.clone()).build().await.expect("building"),
        builder(&test, transport.clone()).alert_sink(alerts.clone()).build().await.expect("building"),
        builder(&test, transport.clone()).alert_sink(alerts.clone()).build().await.expect("building"),
    ];
    let fast = settings("bot", Duration::from_millis(20)).build().expect("a valid config");
    processes[0].configure(fast).expect("configuring");
    processes[0].wait_durable(Duration::from_secs(5)).await.expect("committed");
    for process in &processes {
        until("every process sees the webhook", 2, || process.webhook_stats("bot").is_some()).await;
    }
    for (index, process) in processes.iter().enumerate() {
        assert!(process.enqueue(message("bot", &format!("from {index}"))).is_accepted());
    }
    until("the alert", 10, || !alerts.0.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(transport.calls.lock().unwrap().len(), 11, "11 calls over all processes");
    assert_eq!(alerts.0.lock().unwrap().len(), 1, "one alert over all processes");
    let calls_made: u64 = processes.iter().map(|process| process.stats().totals.calls).sum();
    assert_eq!(calls_made, 11);
    let client = test.connect().await;
    let ledger = client
        .query_one(&format!("SELECT count(*), count(*) FILTER (WHERE status = 503) FROM {}.calls", test.quoted()), &[])
        .await
        .expect("reading the ledger");
    assert_eq!((ledger.get::<_, i64>(0), ledger.get::<_, i64>(1)), (11, 11), "one ledger row per call");
    let pending = processes[0].pending_in_database(None).await.expect("counting");
    assert_eq!(pending, 0, "the disabled webhook's events are dropped");
    let dropped: u64 = processes.iter().map(|process| process.stats().totals.dropped_total()).sum();
    assert_eq!(dropped, 3);
    for process in &processes {
        let _ = process.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_abandoned_by_a_dead_process_is_sent_again_by_another_after_its_lease() {
    let Some(test) = migrated("a_call_abandoned_by_a_dead_process").await else { return };
    let hanging = ScriptedTransport::answering(0);
    let short = settings("bot", Duration::from_millis(50))
        .request_timeout(Duration::from_millis(200))
        .build()
        .expect("a valid config");
    let dying =
        builder(&test, hanging.clone()).lease_margin(Duration::from_millis(100)).build().await.expect("building");
    dying.configure(short).expect("configuring");
    assert!(dying.enqueue(message("bot", "once")).is_accepted());
    dying.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the dying process calls", 5, || !hanging.calls.lock().unwrap().is_empty()).await;
    // It dies mid-call: its tasks stop, its lease stays.
    let _ = dying.shutdown(Duration::ZERO).await;
    let transport = Arc::new(ScriptedTransport::default());
    let survivor = dispatcher(&test, Arc::clone(&transport)).await;
    until("the survivor sends the abandoned call", 5, || transport.texts() == ["once"]).await;
    // Its settlement, after the call, deletes the event.
    let deadline = Instant::now() + Duration::from_secs(5);
    while survivor.pending_in_database(None).await.expect("counting") != 0 {
        assert!(Instant::now() < deadline, "the abandoned call's event is still pending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(transport.texts(), ["once"], "sent once by the survivor");
    let _ = survivor.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_returning_user_gate_holds_across_processes() {
    let Some(test) = migrated("the_returning_user_gate_holds_across_processes").await else { return };
    let transport = Arc::new(ScriptedTransport::default());
    let first = dispatcher(&test, Arc::clone(&transport)).await;
    let second = dispatcher(&test, Arc::clone(&transport)).await;
    let (a, b) = tokio::join!(
        first.returning_user_should_fire("bot", "user-1"),
        second.returning_user_should_fire("bot", "user-1")
    );
    assert_ne!(a.expect("asking"), b.expect("asking"), "one process of two gets yes");
    assert!(!first.returning_user_should_fire("bot", "user-1").await.expect("asking"));
    assert!(second.returning_user_should_fire("other-bot", "user-1").await.expect("asking"), "per bot");
    let client = test.connect().await;
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {}.returning_users WHERE user_key = $1", test.quoted()),
            &[&"user-1".as_bytes()],
        )
        .await
        .expect("reading");
    assert_eq!(row.get::<_, i64>(0), 0, "the user id is not kept");
    let _ = first.shutdown(Duration::from_secs(1)).await;
    let _ = second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_bound_holds_over_the_cluster_as_of_the_last_poll() {
    let Some(test) = migrated("the_queue_bound_holds_over_the_cluster").await else { return };
    let transport = Arc::new(ScriptedTransport::default());
    let first = dispatcher(&test, Arc::clone(&transport)).await;
    let second = dispatcher(&test, Arc::clone(&transport)).await;
    let bounded = settings("bot", Duration::from_secs(3600)).queue_capacity(5).build().expect("a valid config");
    first.configure(bounded).expect("configuring");
    for index in 0..5 {
        assert!(first.enqueue(message("bot", &format!("m{index}"))).is_accepted());
    }
    assert!(matches!(first.enqueue(message("bot", "sixth")), EnqueueOutcome::QueueFull(_)));
    first.wait_durable(Duration::from_secs(5)).await.expect("committed");
    until("the second process sees the queue full", 3, || {
        matches!(second.enqueue(message("bot", "from the second")), EnqueueOutcome::QueueFull(_))
    })
    .await;
    let _ = first.shutdown(Duration::from_secs(1)).await;
    let _ = second.shutdown(Duration::from_secs(1)).await;
}

/// A TCP proxy on 127.0.0.1 in front of the database, which a test can cut:
/// every connection through it drops, and new ones are refused, until it is
/// restored.
struct CuttableProxy {
    address: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl CuttableProxy {
    async fn start(upstream: std::net::SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (accepting_cut, accepting_generation) = (Arc::clone(&cut), Arc::clone(&generation));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accepting_cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let mut cuts = accepting_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        CuttableProxy { address, cut, generation }
    }

    /// A proxy in front of the test's database, and the URL of that database through it.
    async fn in_front_of(test: &TestSchema) -> (CuttableProxy, String) {
        let config: tokio_postgres::Config = test.url().parse().expect("DATABASE_URL parses");
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let proxy = CuttableProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
        let url = format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            config.get_user().unwrap_or_default(),
            String::from_utf8_lossy(config.get_password().unwrap_or_default()),
            proxy.address.port(),
            config.get_dbname().unwrap_or_default()
        );
        (proxy, url)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            self.generation.send_modify(|generation| *generation += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_loses_nothing_accepted_and_refusals_are_named() {
    let Some(test) = migrated("losing_the_database_loses_nothing_accepted").await else { return };
    let (proxy, url) = CuttableProxy::in_front_of(&test).await;
    let transport = Arc::new(ScriptedTransport::default());
    let dispatcher = PostgresDispatcher::builder(&url)
        .schema(test.schema.clone())
        .transport(transport.clone())
        .poll_interval(Duration::from_millis(50))
        .max_buffered_events(20)
        .build()
        .await
        .expect("building through the proxy");
    dispatcher
        .configure(settings("bot", Duration::from_millis(50)).build().expect("a valid config"))
        .expect("configuring");
    assert!(dispatcher.enqueue(message("bot", "before")).is_accepted());
    dispatcher.wait_durable(Duration::from_secs(5)).await.expect("committed");

    proxy.set_cut(true);
    let mut accepted = vec!["before".to_owned()];
    let mut refused = 0;
    for index in 0..40 {
        let text = format!("during {index}");
        match dispatcher.enqueue(message("bot", &text)) {
            EnqueueOutcome::Accepted => accepted.push(text),
            EnqueueOutcome::StoreUnavailable(_) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(accepted.len(), 21, "the buffer bound: 20 accepted while the database is away");
    assert_eq!(refused, 20);
    assert_eq!(dispatcher.stats().totals.refused(eventhook::dispatch::Refusal::StoreUnavailable), 20);
    let waited = dispatcher.wait_durable(Duration::from_millis(300)).await;
    assert!(waited.is_err(), "not durable while the database is away");
    until("the error is named", 5, || dispatcher.database_error().is_some()).await;

    proxy.set_cut(false);
    dispatcher.wait_durable(Duration::from_secs(10)).await.expect("the buffer drains once the database is back");
    until("every accepted event arrived", 10, || {
        let mut texts = transport.texts();
        texts.sort();
        texts.dedup();
        let mut expected = accepted.clone();
        expected.sort();
        texts == expected
    })
    .await;
    let report = dispatcher.shutdown(Duration::from_secs(2)).await;
    assert!(report.undelivered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_without_the_database_hands_back_what_it_could_not_commit() {
    let Some(test) = migrated("a_shutdown_without_the_database_hands_back").await else { return };
    let (proxy, url) = CuttableProxy::in_front_of(&test).await;
    let transport = Arc::new(ScriptedTransport::default());
    let dispatcher = PostgresDispatcher::builder(&url)
        .schema(test.schema.clone())
        .transport(transport)
        .build()
        .await
        .expect("building through the proxy");
    dispatcher
        .configure(settings("bot", Duration::from_millis(50)).build().expect("a valid config"))
        .expect("configuring");
    dispatcher.wait_durable(Duration::from_secs(5)).await.expect("committed");
    proxy.set_cut(true);
    for text in ["one", "two", "three"] {
        assert!(dispatcher.enqueue(message("bot", text)).is_accepted());
    }
    let report = dispatcher.shutdown(Duration::from_millis(300)).await;
    assert_eq!(report.undelivered.len(), 3, "handed back, not lost");
    assert_eq!(report.stats.totals.dropped(eventhook::dispatch::DropReason::Shutdown), 3);
    assert!(matches!(dispatcher.enqueue(message("bot", "late")), EnqueueOutcome::Closed(_)));
}

#[tokio::test]
async fn building_checks_the_schema_and_the_settings_and_never_shows_the_password() {
    let Some(test) = TestSchema::new("building_checks_the_schema_and_the_settings") else { return };
    let transport = Arc::new(ScriptedTransport::default());
    let error = builder(&test, transport.clone()).build().await.expect_err("not migrated yet");
    let shown = error.to_string();
    assert!(shown.contains("version 0") && shown.contains("migrate"), "{shown}");
    migrate(&mut test.connect().await, &test.schema).await.expect("migrating");
    let error = builder(&test, transport.clone()).max_buffered_events(0).build().await.expect_err("0 events");
    assert_eq!(error.to_string(), "max_buffered_events must be at least 1");
    let error = builder(&test, transport.clone()).poll_interval(Duration::ZERO).build().await.expect_err("no poll");
    assert_eq!(error.to_string(), "poll_interval must be at least 1 ms");
    let error =
        PostgresDispatcher::builder("postgres://user:pw@127.0.0.1:notaport/db").build().await.expect_err("bad URL");
    assert!(error.to_string().starts_with("invalid PostgreSQL connection string"), "{error}");

    // Choosing PostgreSQL is one call on the usual builder.
    let dispatcher = eventhook::dispatch::WebhookDispatcher::builder()
        .transport(transport)
        .postgres(test.url())
        .schema(test.schema.clone())
        .build()
        .await
        .expect("building from the usual builder");
    let password = test.password().expect("DATABASE_URL has a password");
    let builder_shown = format!("{:?}", PostgresDispatcher::builder(test.url()));
    let shown = format!("{dispatcher:?}");
    assert!(!shown.contains(&password) && !builder_shown.contains(&password), "{shown} {builder_shown}");
    dispatcher.configure(config("bot")).expect("configuring");
    dispatcher.wait_durable(Duration::from_secs(5)).await.expect("committed");
    let client = test.connect().await;
    let row = client.query_one(&format!("SELECT secret FROM {}.webhooks", test.quoted()), &[]).await.expect("reading");
    assert_eq!(row.get::<_, String>(0), "bot-secret", "the bot's secret is in its row");
    assert!(!format!("{dispatcher:?}").contains("bot-secret"));
    let _ = dispatcher.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_rows_older_than_the_retention_are_pruned() {
    let Some(test) = migrated("ledger_rows_older_than_the_retention_are_pruned").await else { return };
    let transport = Arc::new(ScriptedTransport::default());
    let first = dispatcher(&test, Arc::clone(&transport)).await;
    first.configure(config("bot")).expect("configuring");
    assert!(first.enqueue(message("bot", "billed")).is_accepted());
    first.flush(Duration::from_secs(10)).await.expect("flushed");
    let client = test.connect().await;
    let count = || async {
        let row =
            client.query_one(&format!("SELECT count(*) FROM {}.calls", test.quoted()), &[]).await.expect("reading");
        row.get::<_, i64>(0)
    };
    assert_eq!(count().await, 1, "one row for the one call");
    let _ = first.shutdown(Duration::from_secs(1)).await;
    // A process whose retention is shorter than the row's age prunes it when it starts.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pruning =
        builder(&test, transport.clone()).ledger_retention(Duration::from_millis(10)).build().await.expect("building");
    let deadline = Instant::now() + Duration::from_secs(5);
    while count().await != 0 {
        assert!(Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = pruning.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_committed_by_a_process_that_died_is_delivered_once_by_another() {
    let Some(test) = migrated("an_alert_committed_by_a_process_that_died").await else { return };
    // As a process leaves it that committed the disabling and died before
    // delivering (no lease) or while delivering (a lease that has expired).
    let client = test.connect().await;
    let payload = |bot: &str| {
        serde_json::json!({
            "bot_token": bot, "account_name": "Account", "url": "https://hooks.example.com/events",
            "failures_in_row": 11, "last_failure": "answered 500 Internal Server Error",
            "disabled_at": "2026-12-01T10:00:00.123456789Z",
        })
    };
    let statement = format!(
        "INSERT INTO {}.alerts (bot_token, payload, lease_until) VALUES ($1, $2, NULL), ($3, $4, now() - interval '1 s')",
        test.quoted()
    );
    client.execute(&statement, &[&"bot-a", &payload("bot-a"), &"bot-b", &payload("bot-b")]).await.expect("inserting");
    let alerts = Arc::new(Alerts::default());
    let transport = Arc::new(ScriptedTransport::default());
    let first = builder(&test, transport.clone()).alert_sink(alerts.clone()).build().await.expect("building");
    let second = builder(&test, transport.clone()).alert_sink(alerts.clone()).build().await.expect("building");
    until("both alerts", 5, || alerts.0.lock().unwrap().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = alerts.0.lock().unwrap().clone();
    let mut bots: Vec<&str> = delivered.iter().map(|alert| alert.bot_token.as_str()).collect();
    bots.sort();
    assert_eq!(bots, ["bot-a", "bot-b"], "each once over both processes");
    assert_eq!(delivered[0].failures_in_row, 11);
    assert!(delivered[0].alert_id().ends_with("@2026-12-01T10:00:00.123456789Z"), "{}", delivered[0].alert_id());
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}.alerts WHERE delivered_at IS NULL", test.quoted()), &[])
        .await
        .expect("reading");
    assert_eq!(row.get::<_, i64>(0), 0, "marked delivered");
    let _ = first.shutdown(Duration::from_secs(1)).await;
    let _ = second.shutdown(Duration::from_secs(1)).await;
}
/// Records alerts, slowly: shutdown comes while the sink still holds one.
#[derive(Debug, Default)]
struct SlowAlerts(Mutex<Vec<String>>);

impl AlertSink for SlowAlerts {
    fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
        std::thread::sleep(Duration::from_millis(300));
        self.0.lock().unwrap().push(alert.bot_token.clone());
    }
}

/// Tells of the 11th call, the one that disables.
#[derive(Debug, Default)]
struct Eleventh {
    calls: std::sync::atomic::AtomicUsize,
    made: tokio::sync::Notify,
}

impl DeliveryObserver for Eleventh {
    fn call_made(&self, _: &CallRecord) {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 11 {
            self.made.notify_one();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_right_after_disabling_hands_the_alert_over_and_marks_it_delivered() {
    let Some(test) = migrated("shutdown_right_after_disabling_hands_the_alert_over").await else { return };
    let alerts = Arc::new(SlowAlerts::default());
    let eleventh = Arc::new(Eleventh::default());
    let dispatcher = builder(&test, ScriptedTransport::answering(500))
        .alert_sink(alerts.clone())
        .observer(eleventh.clone())
        .build()
        .await
        .expect("building the dispatcher");
    let fast = settings("bot", Duration::from_millis(20)).build().expect("a valid config");
    dispatcher.configure(fast).expect("configuring");
    assert_eq!(dispatcher.enqueue(message("bot", "m")), EnqueueOutcome::Accepted);
    tokio::time::timeout(Duration::from_secs(20), eleventh.made.notified()).await.expect("the 11th call");
    let _ = dispatcher.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*alerts.0.lock().unwrap(), ["bot"], "the alert reached the sink once");
    let statement = format!("SELECT count(*) FROM {}.alerts WHERE delivered_at IS NULL", test.quoted());
    let left: i64 = test.connect().await.query_one(&statement, &[]).await.expect("counting alerts").get(0);
    assert_eq!(left, 0, "and is marked delivered, so no other process delivers it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_while_a_settlement_disables_their_webhook_are_dropped_not_left_behind() {
    let Some(test) = migrated("events_committed_while_a_settlement_disables").await else { return };
    let dispatcher = dispatcher(&test, ScriptedTransport::answering(200)).await;
    dispatcher.configure(config("bot")).expect("configuring");
    dispatcher.wait_durable(Duration::from_secs(5)).await.expect("committed");
    // Another process's settlement of the 11th failure, under way: the row locked, the webhook disabled.
    let mut settling = test.connect().await;
    let settlement = settling.transaction().await.expect("beginning");
    let schema = test.quoted();
    settlement
        .query(&format!("SELECT 1 FROM {schema}.webhooks WHERE bot_token = 'bot' FOR NO KEY UPDATE"), &[])
        .await
        .expect("locking the webhook");
    settlement
        .execute(&format!("UPDATE {schema}.webhooks SET disabled = true, due_at = NULL WHERE bot_token = 'bot'"), &[])
        .await
        .expect("disabling");
    assert_eq!(dispatcher.enqueue(message("bot", "meanwhile")), EnqueueOutcome::Accepted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    settlement.commit().await.expect("committing the settlement");
    dispatcher.wait_durable(Duration::from_secs(5)).await.expect("committed");
    // Dropped by the delivery task once the disabling is committed, within a poll interval.
    let statement = format!("SELECT coalesce(sum(events), 0)::bigint FROM {schema}.events WHERE bot_token = 'bot'");
    let client = test.connect().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 = client.query_one(&statement, &[]).await.expect("counting events").get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "an event stays in a disabled webhook");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until("the event is counted dropped", 5, || {
        dispatcher.stats().totals.dropped(eventhook::dispatch::DropReason::Disabled) == 1
    })
    .await;
    assert_eq!(dispatcher.stats().totals.accepted, 1);
    let _ = dispatcher.shutdown(Duration::from_secs(1)).await;
}

/// Answers its first call with 200 after `first`, and every later call
/// after an hour: a call under way for as long as a test needs.
#[derive(Debug)]
struct FirstCallAnswers {
    first: Duration,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Transport for FirstCallAnswers {
    async fn send(&self, _request: http::Request<Vec<u8>>) -> Result<StatusCode, TransportError> {
        let first = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        tokio::time::sleep(if first { self.first } else { Duration::from_secs(3600) }).await;
        Ok(StatusCode::OK)
    }
}

/// Removing a webhook while its call is under way, the call settling before
/// the removal commits: the call's events count as delivered, the rest as
/// removed, and the counts balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_settles_before_its_webhooks_removal_commits_counts_its_events_delivered() {
    let Some(test) = migrated("a_call_that_settles_before_its_webhooks_removal_commits").await else { return };
    let transport = Arc::new(FirstCallAnswers { first: Duration::from_millis(100), calls: Default::default() });
    let process = builder(&test, transport.clone())
        // The removal waits for the writer's next commit: long after the call settles.
        .commit_window(Duration::from_millis(1500))
        .build()
        .await
        .expect("building");
    let config = settings("bot", Duration::from_secs(3600)).max_batch_events(2).build().expect("a valid config");
    process.configure(config).expect("configuring");
    for text in ["a", "b", "c"] {
        assert_eq!(process.enqueue(message("bot", text)), EnqueueOutcome::Accepted);
    }
    process.wait_durable(Duration::from_secs(5)).await.expect("committed");
    let flushing = process.flush(Duration::from_millis(50));
    let _ = flushing.await;
    until("the first call is under way", 5, || transport.calls.load(std::sync::atomic::Ordering::SeqCst) > 0).await;
    assert!(process.remove("bot").is_empty(), "the events are in the database");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let totals = process.stats().totals;
        let removed = totals.dropped(eventhook::dispatch::DropReason::Removed);
        if (totals.pending, totals.in_flight, totals.delivered + removed) == (0, 0, 3) {
            assert_eq!((totals.accepted, totals.delivered, removed), (3, 2, 1), "{totals:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the counts balance: {totals:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = process.shutdown(Duration::from_millis(200)).await;
}

/// A commit that configures webhooks locks their rows in token order, as
/// settlements and the scheduling do, whatever the order of the calls: with
/// `bot-a` held by another transaction, a round that configures `bot-b` and
/// then `bot-a` waits for `bot-a` without holding `bot-b` (holding it would
/// let a settlement of both wait for it in a cycle, a deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_locks_the_webhooks_it_configures_in_token_order() {
    let Some(test) = migrated("a_commit_locks_the_webhooks_it_configures_in_token_order").await else { return };
    let process = builder(&test, Arc::new(ScriptedTransport::default()))
        // Both configurations of the second step fall in one round.
        .commit_window(Duration::from_millis(300))
        .build()
        .await
        .expect("building");
    process.configure(config("bot-a")).expect("configuring");
    process.configure(config("bot-b")).expect("configuring");
    process.wait_durable(Duration::from_secs(5)).await.expect("committed");

    let holder = test.connect().await;
    let holder_pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.expect("a pid").get(0);
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {}.webhooks WHERE bot_token = 'bot-a' FOR NO KEY UPDATE",
            test.quoted()
        ))
        .await
        .expect("holding bot-a");
    let slower = |bot| settings(bot, Duration::from_millis(700)).build().expect("a valid config");
    process.configure(slower("bot-b")).expect("configuring");
    process.configure(slower("bot-a")).expect("configuring");

    let prober = test.connect().await;
    let blocked = blocked_by(&prober, holder_pid).await;
    let probe = prober
        .execute(
            &format!("SELECT 1 FROM {}.webhooks WHERE bot_token = 'bot-b' FOR NO KEY UPDATE NOWAIT", test.quoted()),
            &[],
        )
        .await;
    // Released before asserting: a failed assertion must not leave the schema locked.
    holder.batch_execute("ROLLBACK").await.expect("releasing bot-a");
    assert!(blocked, "timed out waiting until the commit waits for bot-a");
    assert!(probe.is_ok(), "the waiting commit holds bot-b: {probe:?}");
    process.wait_durable(Duration::from_secs(5)).await.expect("committed");
    let intervals = push_intervals(&prober, &test).await;
    assert_eq!(intervals, [700, 700]);
    let _ = process.shutdown(Duration::from_millis(200)).await;
}

/// The stored webhooks' push intervals (ms), in bot-token order.
async fn push_intervals(client: &tokio_postgres::Client, test: &TestSchema) -> Vec<i64> {
    let statement = format!("SELECT push_interval_ms FROM {}.webhooks ORDER BY bot_token", test.quoted());
    client.query(&statement, &[]).await.expect("reading the settings").iter().map(|row| row.get(0)).collect()
}

/// Whether a session waits for backend `holder_pid` within 10 s.
async fn blocked_by(prober: &tokio_postgres::Client, holder_pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let blocked: bool = prober
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
                &[&holder_pid],
            )
            .await
            .expect("reading the waits")
            .get(0);
        if blocked {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Two processes configuring the same new webhooks in different orders
/// must not deadlock on the rows' inserts: a commit takes the webhooks'
/// advisory locks in token order before inserting any, as `save_webhook`
/// does. Here a transaction elsewhere has saved bot-a and not committed: a
/// commit configuring bot-b, then bot-a, waits for bot-a before it inserts
/// bot-b, so bot-b stays free for others meanwhile.
#[tokio::test]
async fn a_commit_configuring_new_webhooks_waits_for_them_in_token_order_before_inserting_any() {
    let Some(test) = migrated("a_commit_configuring_new_webhooks_waits_for_them_in_token_order").await else {
        return;
    };
    let process = builder(&test, Arc::new(ScriptedTransport::default()))
        // Both configurations fall in one round.
        .commit_window(Duration::from_millis(300))
        .build()
        .await
        .expect("building");
    let mut holder = test.connect().await;
    let holder_pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.expect("a pid").get(0);
    let holding = holder.transaction().await.expect("BEGIN");
    let elsewhere = |bot| settings(bot, Duration::from_millis(900)).build().expect("a valid config");
    save_webhook(&holding, &test.schema, &elsewhere("bot-a")).await.expect("saving bot-a elsewhere");

    process.configure(config("bot-b")).expect("configuring");
    process.configure(config("bot-a")).expect("configuring");
    let mut prober = test.connect().await;
    let blocked = blocked_by(&prober, holder_pid).await;
    let probing = prober.transaction().await.expect("BEGIN");
    probing.batch_execute("SET LOCAL lock_timeout = '500ms'").await.expect("a lock timeout");
    let probe = save_webhook(&probing, &test.schema, &elsewhere("bot-b")).await;
    probing.rollback().await.expect("ROLLBACK");
    // Released before asserting: a failed assertion must not leave the schema locked.
    holding.commit().await.expect("committing bot-a elsewhere");
    assert!(blocked, "timed out waiting until the commit waits for bot-a");
    assert!(probe.is_ok(), "the waiting commit has inserted nothing yet: {probe:?}");
    process.wait_durable(Duration::from_secs(5)).await.expect("committed");
    let intervals = push_intervals(&prober, &test).await;
    let configured = i64::try_from(config("bot-a").push_interval().as_millis()).expect("milliseconds");
    assert_eq!(intervals, [configured, configured], "the process's settings, saved after the other's");
    let _ = process.shutdown(Duration::from_millis(200)).await;
}

/// A process's calls take the events it committed from memory (`max_kept_bytes`),
/// not from the database; with nothing kept, they read them there. Shown by
/// rewriting the stored events behind the dispatchers' backs (which nothing
/// else does: a committed row's events never change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_take_the_events_a_process_committed_from_memory_and_others_from_the_database() {
    let Some(test) = migrated("calls_take_kept_events_from_memory").await else { return };
    let client = test.connect().await;
    let rewrite = format!(
        "UPDATE {}.events SET body = convert_to(replace(convert_from(body, 'UTF8'), 'original', 'replaced'), 'UTF8')",
        test.quoted()
    );
    // An hour's interval: nothing falls due before the flush.
    let hourly = |bot: &str| settings(bot, Duration::from_secs(3600)).build().expect("a valid config");
    for (bot, kept_bytes, expected) in [("bot-keeps", None, "original"), ("bot-keeps-none", Some(0), "replaced")] {
        let transport = Arc::new(ScriptedTransport::default());
        let mut builder = builder(&test, Arc::clone(&transport) as Arc<dyn Transport>);
        if let Some(bytes) = kept_bytes {
            builder = builder.max_kept_bytes(bytes);
        }
        let process = builder.build().await.expect("building the dispatcher");
        process.configure(hourly(bot)).expect("configuring");
        assert_eq!(process.enqueue(message(bot, "original")), EnqueueOutcome::Accepted);
        process.wait_durable(Duration::from_secs(5)).await.expect("committed");
        let rewritten = client.execute(&rewrite, &[]).await.expect("rewriting the stored events");
        assert_eq!(rewritten, 1, "one row of events stored for {bot}");
        assert!(transport.texts().is_empty(), "{bot} was pushed before its flush");
        let flushed = process.flush(Duration::from_secs(10)).await;
        assert!(flushed.is_ok(), "{flushed:?}, database: {:?}", process.database_error());
        assert_eq!(transport.texts(), [expected], "{bot}'s call");
        let _ = process.shutdown(Duration::from_secs(1)).await;
    }
}
