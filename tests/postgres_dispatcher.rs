//! The PostgreSQL dispatcher's rules across processes, against a real
//! PostgreSQL: several dispatchers on one schema stand for several processes.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventhook::dispatch::{Dispatcher, EnqueueOutcome};
use eventhook::postgres::{migrate, PostgresDispatcher};
use eventhook::{ChatContext, Event, EventFactory, Transport, TransportError, WebhookConfig};
use http::StatusCode;
use postgres_support::TestSchema;

/// Answers calls with scripted statuses (then 200), recording each body's event texts.
#[derive(Debug, Default)]
struct ScriptedTransport {
    answers: Mutex<VecDeque<u16>>,
    calls: Mutex<Vec<(String, Vec<String>, Option<String>)>>,
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<StatusCode, TransportError> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(request.body()).expect("a JSON array");
        let texts = events.iter().map(|event| event["Data"].as_str().unwrap_or_default().to_owned()).collect();
        let bot = events[0]["BotToken"].as_str().unwrap_or_default().to_owned();
        let id = request.headers().get("webhook-id").map(|id| id.to_str().unwrap_or_default().to_owned());
        self.calls.lock().unwrap().push((bot, texts, id));
        let status = self.answers.lock().unwrap().pop_front().unwrap_or(200);
        Ok(StatusCode::from_u16(status).expect("a status"))
    }
}

fn config(bot: &str) -> WebhookConfig {
    WebhookConfig::builder(bot, "Account", "http://127.0.0.1:9/events", "bot-secret")
        .push_interval(Duration::from_millis(200))
        .build()
        .expect("a valid config")
}

fn message(bot: &str, text: &str) -> Event {
    let factory = EventFactory::new(bot, "Account");
    Event::UserMessage(factory.message(&ChatContext::new("c-1", "WebChannel"), text))
}

async fn dispatcher(test: &TestSchema, transport: Arc<ScriptedTransport>) -> PostgresDispatcher {
    PostgresDispatcher::builder(test.url())
        .schema(test.schema.clone())
        .transport(transport)
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .expect("building the dispatcher")
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
    let calls = transport.calls.lock().unwrap().clone();
    let texts: Vec<String> = calls.iter().flat_map(|(_, texts, _)| texts.clone()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(first.pending_in_database(None).await.expect("counting"), 0);
    let _ = second.shutdown(Duration::from_secs(1)).await;
    let report = first.shutdown(Duration::from_secs(1)).await;
    assert!(report.undelivered.is_empty());
}
