//! A dispatcher that sends nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::bot_sender::BotSender;
use super::dispatcher::Dispatcher;
use super::outcome::{DispatcherClosed, EnqueueOutcome, FlushError, ShutdownReport};
use super::stats::{DispatcherStats, WebhookStats};
use crate::config::WebhookConfig;
use crate::event::Event;

/// A [`Dispatcher`] for hosts with webhooks turned off: every event is
/// refused as [`EnqueueOutcome::NoWebhook`] and nothing is kept.
///
/// ```
/// use eventhook::dispatch::{Dispatcher, EnqueueOutcome, NoopDispatcher};
/// use eventhook::{Event, MissedText, Origin};
///
/// let outcome = NoopDispatcher.enqueue(Event::NlpMissed(MissedText::new(Origin::new("bot", "Account"), "?")));
/// assert_eq!(outcome, EnqueueOutcome::NoWebhook);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopDispatcher;

#[async_trait]
impl Dispatcher for NoopDispatcher {
    fn enqueue(&self, _event: Event) -> EnqueueOutcome {
        EnqueueOutcome::NoWebhook
    }

    fn bot_sender(&self, bot_token: &str) -> BotSender {
        BotSender::through(Arc::new(NoopDispatcher), bot_token)
    }

    fn configure(&self, _config: WebhookConfig) -> Result<(), DispatcherClosed> {
        Ok(())
    }

    fn remove(&self, _bot_token: &str) -> Vec<Event> {
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
