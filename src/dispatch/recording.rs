//! A dispatcher that keeps what it is given, for the host's own tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::bot_sender::BotSender;
use super::dispatcher::Dispatcher;
use super::outcome::{DispatcherClosed, EnqueueOutcome, FlushError, ShutdownReport};
use super::stats::{DispatcherStats, WebhookStats};
use crate::config::WebhookConfig;
use crate::event::Event;

/// A [`Dispatcher`] that accepts and keeps every event, and every
/// configuration, so a host can assert what its bot engine enqueued.
///
/// Its clones, and its [`bot_sender`](Dispatcher::bot_sender)s, record into
/// the same lists.
///
/// ```
/// use eventhook::dispatch::{Dispatcher, RecordingDispatcher};
/// use eventhook::{ChatContext, Event, EventFactory};
///
/// let recorder = RecordingDispatcher::new();
/// let bot = EventFactory::new("bot", "Account");
/// let _ = recorder.enqueue(Event::Fallback(bot.conversation(&ChatContext::new("c", "WebChannel"))));
/// assert_eq!(recorder.events().len(), 1);
/// assert_eq!(recorder.take_events().len(), 1);
/// assert!(recorder.events().is_empty());
/// ```
#[derive(Debug, Default, Clone)]
pub struct RecordingDispatcher {
    events: Arc<Mutex<Vec<Event>>>,
    configs: Arc<Mutex<Vec<WebhookConfig>>>,
}

impl RecordingDispatcher {
    /// An empty recorder.
    pub fn new() -> RecordingDispatcher {
        RecordingDispatcher::default()
    }

    /// The events enqueued so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Takes the events enqueued so far, leaving none.
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The configurations given so far, in order.
    pub fn configurations(&self) -> Vec<WebhookConfig> {
        self.configs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

#[async_trait]
impl Dispatcher for RecordingDispatcher {
    fn enqueue(&self, event: Event) -> EnqueueOutcome {
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(event);
        EnqueueOutcome::Accepted
    }

    fn bot_sender(&self, bot_token: &str) -> BotSender {
        BotSender::through(Arc::new(self.clone()), bot_token)
    }

    fn configure(&self, config: WebhookConfig) -> Result<(), DispatcherClosed> {
        self.configs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(config);
        Ok(())
    }

    fn remove(&self, bot_token: &str) -> Vec<Event> {
        self.configs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|config| config.bot_token() != bot_token);
        Vec::new()
    }

    fn stats(&self) -> DispatcherStats {
        DispatcherStats::default()
    }

    fn webhook_stats(&self, _bot_token: &str) -> Option<WebhookStats> {
        None
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), FlushError> {
        Ok(())
    }

    async fn shutdown(&self, _timeout: Duration) -> ShutdownReport {
        ShutdownReport::default()
    }
}
