//! With the `tracing` feature: a span per push, events for failed calls,
//! dropped events, disabling and re-enabling, and never the secret.
#![cfg(feature = "tracing")]

mod common;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::TestRuntime;
use eventhook::dispatch::{Dispatcher, WebhookDispatcher, WebhookState};
use eventhook::{ChatContext, Event, EventFactory, Transport, TransportError, WebhookConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};

const SECRET: &str = "tracing-test-secret-value";

/// Keeps every span and event as one line of text.
#[derive(Default)]
struct Capture {
    lines: Mutex<Vec<String>>,
    next_span: AtomicU64,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = Line(format!("span {}", span.metadata().name()));
        span.record(&mut line);
        self.lines.lock().unwrap().push(line.0);
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, values: &Record<'_>) {
        let mut line = Line("record".to_owned());
        values.record(&mut line);
        self.lines.lock().unwrap().push(line.0);
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = Line(format!("event {}", event.metadata().level()));
        event.record(&mut line);
        self.lines.lock().unwrap().push(line.0);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[derive(Debug)]
struct AlwaysFailing;

#[async_trait]
impl Transport for AlwaysFailing {
    async fn send(&self, _request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        Ok(http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The one capture of this test binary, installed as the global subscriber
/// by whichever test runs first; tests tell their lines apart by bot token.
fn capture() -> Arc<Capture> {
    static CAPTURE: std::sync::OnceLock<Arc<Capture>> = std::sync::OnceLock::new();
    Arc::clone(CAPTURE.get_or_init(|| {
        let capture = Arc::new(Capture::default());
        tracing::subscriber::set_global_default(CaptureHandle(Arc::clone(&capture))).expect("first subscriber");
        capture
    }))
}

/// Runs `bot_token`'s webhook against an always-failing receiver until it
/// is disabled, then configures it again and shuts down; returns the lines
/// that name the bot (as `named` writes it).
async fn run_until_disabled(bot_token: &str, account_name: &str, named: &str) -> Vec<String> {
    let capture = capture();
    let dispatcher =
        WebhookDispatcher::builder().transport(Arc::new(AlwaysFailing)).runtime(Arc::new(TestRuntime)).build().unwrap();
    let config = || {
        WebhookConfig::builder(bot_token, account_name, "https://hooks.example.com/traced", SECRET)
            .push_interval(Duration::from_millis(5))
            .build()
            .unwrap()
    };
    dispatcher.configure(config()).unwrap();
    let bot = EventFactory::new(bot_token, account_name);
    let _ = dispatcher.enqueue(Event::UserMessage(bot.message(&ChatContext::new("c", "WebChannel"), "hello")));
    tokio::time::timeout(Duration::from_secs(10), async {
        while dispatcher.webhook_stats(bot_token).unwrap().state != WebhookState::Disabled {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("disabled in time");
    dispatcher.configure(config()).unwrap();
    let _ = dispatcher.shutdown(Duration::from_millis(100)).await;
    let lines = capture.lines.lock().unwrap().clone();
    lines.into_iter().filter(|line| line.contains(named)).collect()
}

/// Issue 11: bot tokens and account names with CR/LF reached the records raw.
#[tokio::test]
async fn text_from_settings_is_escaped_in_every_record() {
    // Line breaks never get this far: the settings refuse them.
    let refused = WebhookConfig::builder("evil-bot\r\nlevel=ERROR", "Acme", "https://hooks.example.com/t", SECRET);
    assert!(refused.build().is_err());
    // Bidirectional controls and backslashes are allowed in a token (and in
    // account names, which may need them), so the records escape them.
    let forged = r"evil-bot\u{202e}level=ERROR\\forged";
    let lines = run_until_disabled("evil-bot\u{202e}level=ERROR\\forged", "Acme\u{2066}FAKE", forged).await;
    assert!(lines.len() >= 11 + 11 + 3, "every record names the bot: {lines:#?}");
    for line in &lines {
        assert!(!line.contains(['\r', '\n', '\u{2028}', '\u{202e}', '\u{2066}']), "a raw control in {line:?}");
    }
}

#[tokio::test]
async fn pushes_failures_disabling_and_re_enabling_are_traced_without_the_secret() {
    let lines = run_until_disabled("traced-bot", "Account", "traced-bot").await;
    let count = |needle: &str| lines.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(count("span eventhook.push"), 11, "{lines:#?}");
    assert_eq!(count("webhook call failed"), 11);
    assert_eq!(count("events dropped"), 1);
    assert_eq!(count("webhook disabled"), 1);
    assert_eq!(count("webhook re-enabled"), 1);
    assert!(capture().lines.lock().unwrap().iter().all(|line| !line.contains(SECRET)), "the secret never appears");
}

/// `set_global_default` takes the subscriber by value; this shares the capture.
struct CaptureHandle(Arc<Capture>);

impl Subscriber for CaptureHandle {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.0.record_follows_from(span, follows)
    }
    fn event(&self, event: &tracing::Event<'_>) {
        self.0.event(event)
    }
    fn enter(&self, span: &Id) {
        self.0.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.0.exit(span)
    }
}
