//! Shared helpers for the dispatch tests: a core on a manual clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use eventhook::dispatch::{CoreLimits, DispatchCore, Enqueuer, Notice, Push};
use eventhook::{ChatContext, Event, EventFactory, ManualClock, WebhookConfig, WebhookConfigBuilder};

pub const SECRET: &str = "bot-api-secret-value";
pub const INTERVAL: Duration = Duration::from_secs(30);

pub struct Harness {
    pub clock: Arc<ManualClock>,
    pub core: DispatchCore,
    pub enqueuer: Enqueuer,
    pub notices: Vec<Notice>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_limits(CoreLimits::default())
    }

    pub fn with_limits(limits: CoreLimits) -> Harness {
        Harness::with_clock_and_limits(Arc::new(ManualClock::new()), limits)
    }

    /// A core on `clock` (for example one showing the real time, for checks that read it).
    pub fn with_clock(clock: Arc<ManualClock>) -> Harness {
        Harness::with_clock_and_limits(clock, CoreLimits::default())
    }

    fn with_clock_and_limits(clock: Arc<ManualClock>, limits: CoreLimits) -> Harness {
        let (core, enqueuer) = DispatchCore::new(clock.clone(), limits);
        Harness { clock, core, enqueuer, notices: Vec::new() }
    }

    pub fn configure(&mut self, config: WebhookConfig) {
        self.core.configure(config);
        self.check_balance();
    }

    /// A paid webhook for `bot` with every kind selected, default settings.
    pub fn config(bot: &str) -> WebhookConfigBuilder {
        WebhookConfig::builder(bot, format!("{bot} account"), format!("https://hooks.example.com/{bot}"), SECRET)
    }

    pub fn factory(&self, bot: &str) -> EventFactory {
        EventFactory::new(bot, format!("{bot} account")).with_clock(self.clock.clone())
    }

    /// A user message of `bot` whose text is `text`.
    pub fn message(&self, bot: &str, text: &str) -> Event {
        let chat = ChatContext::new("conversation-1", "TelegramChannel");
        Event::UserMessage(self.factory(bot).message(&chat, text))
    }

    pub fn enqueue(&mut self, event: Event) -> eventhook::dispatch::EnqueueOutcome {
        let outcome = self.enqueuer.enqueue(event);
        // As the driver does when the doorbell rings: take the event in now.
        self.core.next_wakeup();
        self.check_balance();
        outcome
    }

    pub fn advance(&mut self, duration: Duration) {
        self.clock.advance(duration);
    }

    pub fn poll_all(&mut self) -> Vec<Push> {
        let pushes: Vec<Push> = std::iter::from_fn(|| self.core.poll_push()).collect();
        self.collect_notices();
        self.check_balance();
        pushes
    }

    /// Moves the clock to the next due time, as the driver's timer does, and
    /// returns the pushes due then. Panics if the wait is over one interval.
    pub fn next_pushes(&mut self) -> Vec<Push> {
        let now = eventhook::Clock::now(&*self.clock);
        let due = self.core.next_wakeup().expect("a push is scheduled");
        let wait = due.saturating_duration_since(now);
        assert!(wait <= INTERVAL, "waited {wait:?}, more than one interval");
        self.clock.advance(wait);
        let pushes = self.poll_all();
        assert!(!pushes.is_empty(), "a push is due at the wake-up time");
        pushes
    }

    /// The one push due next (see [`next_pushes`](Self::next_pushes)).
    pub fn next_push(&mut self) -> Push {
        let mut pushes = self.next_pushes();
        assert_eq!(pushes.len(), 1, "one push due");
        pushes.remove(0)
    }

    /// Polls and answers every due push with `status` until none is due.
    pub fn answer_all(&mut self, status: u16) -> usize {
        let mut answered = 0;
        loop {
            let pushes = self.poll_all();
            if pushes.is_empty() {
                return answered;
            }
            for push in &pushes {
                self.answer(push, status);
                answered += 1;
            }
        }
    }

    pub fn answer(&mut self, push: &Push, status: u16) {
        let status = http::StatusCode::from_u16(status).expect("valid status");
        self.core.on_push_result(&push.id, Ok(status));
        self.collect_notices();
        self.check_balance();
    }

    pub fn collect_notices(&mut self) {
        while let Some(notice) = self.core.poll_notice() {
            self.notices.push(notice);
        }
    }

    pub fn check_balance(&mut self) {
        let totals = self.core.stats().totals;
        assert!(totals.is_balanced(), "accepted != delivered + pending + in flight + dropped: {totals:?}");
    }
}

/// The `Data` of every message in a push body, in order.
pub fn texts(push: &Push) -> Vec<String> {
    eventhook::wire::parse_push(push.request.body())
        .expect("the core writes valid pushes")
        .into_iter()
        .map(|event| match event {
            Event::UserMessage(message) | Event::BotMessage(message) => message.data,
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

/// Runs the dispatcher's task and timers on the test's tokio runtime.
#[derive(Debug)]
pub struct TestRuntime;

impl eventhook::Runtime for TestRuntime {
    fn spawn(&self, task: futures::future::BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }
    fn sleep(&self, duration: Duration) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Records every alert, call and drop a dispatcher reports.
#[derive(Debug, Default)]
pub struct Recorder {
    pub alerts: std::sync::Mutex<Vec<eventhook::WebhookDisabledAlert>>,
    pub calls: std::sync::Mutex<Vec<eventhook::dispatch::CallRecord>>,
    pub dropped: std::sync::Mutex<Vec<eventhook::dispatch::DroppedEvents>>,
}

impl eventhook::AlertSink for Recorder {
    fn webhook_disabled(&self, alert: &eventhook::WebhookDisabledAlert) {
        self.alerts.lock().unwrap().push(alert.clone());
    }
}

impl eventhook::dispatch::DeliveryObserver for Recorder {
    fn call_made(&self, call: &eventhook::dispatch::CallRecord) {
        self.calls.lock().unwrap().push(call.clone());
    }
    fn events_dropped(&self, dropped: &eventhook::dispatch::DroppedEvents) {
        self.dropped.lock().unwrap().push(dropped.clone());
    }
}
