//! The [`Dispatcher`] trait: the one handle a bot engine holds.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::bot_sender::BotSender;
use super::outcome::{DispatcherClosed, EnqueueOutcome, FlushError, ShutdownReport};
use super::stats::{DispatcherStats, WebhookStats};
use crate::config::WebhookConfig;
use crate::event::Event;

/// The handle a bot engine holds, usually as `Arc<dyn Dispatcher>`.
///
/// Implementations: [`WebhookDispatcher`](super::WebhookDispatcher) (the real one),
/// [`RecordingDispatcher`](super::RecordingDispatcher) (keeps what was enqueued, for the host's own
/// tests) and [`NoopDispatcher`](super::NoopDispatcher) (for hosts with webhooks turned off).
///
/// ```
/// use std::sync::Arc;
/// use eventhook::dispatch::{Dispatcher, RecordingDispatcher};
/// use eventhook::{ChatContext, Event, EventFactory};
///
/// fn on_user_message(dispatcher: &dyn Dispatcher, bot: &EventFactory, chat: &ChatContext, text: &str) {
///     // Never blocks; a refusal is counted in the stats.
///     let _ = dispatcher.enqueue(Event::UserMessage(bot.message(chat, text)));
/// }
///
/// let dispatcher: Arc<dyn Dispatcher> = Arc::new(RecordingDispatcher::new());
/// let bot = EventFactory::new("bot", "Account");
/// on_user_message(&*dispatcher, &bot, &ChatContext::new("c-1", "WebChannel"), "hi");
/// ```
#[async_trait]
pub trait Dispatcher: Send + Sync + fmt::Debug {
    /// Offers an event to its bot's webhook. Never blocks on I/O or on a
    /// full queue, never panics; on the [`WebhookDispatcher`](super::WebhookDispatcher)
    /// it may wait a moment while the dispatcher is reconfigured, takes a
    /// snapshot (`stats`) or switches a webhook near its bound to exact counting.
    fn enqueue(&self, event: Event) -> EnqueueOutcome;

    /// A sender for one bot's events, which a bot engine keeps in that bot's
    /// state: it answers exactly like [`enqueue`](Self::enqueue), and on the
    /// [`WebhookDispatcher`](super::WebhookDispatcher) skips finding the bot's webhook by token on
    /// every call. See [`BotSender`].
    fn bot_sender(&self, bot_token: &str) -> BotSender;

    /// Sets up or replaces a bot's webhook (replacing re-enables a disabled one).
    fn configure(&self, config: WebhookConfig) -> Result<(), DispatcherClosed>;

    /// Removes a bot's webhook and returns its undelivered events.
    fn remove(&self, bot_token: &str) -> Vec<Event>;

    /// Counts over all webhooks.
    fn stats(&self) -> DispatcherStats;

    /// Counts and state of one bot's webhook.
    fn webhook_stats(&self, bot_token: &str) -> Option<WebhookStats>;

    /// Pushes everything pending now, waiting at most `timeout`.
    async fn flush(&self, timeout: Duration) -> Result<(), FlushError>;

    /// Stops accepting events, flushes for at most `timeout`, stops, and
    /// returns every event it could not deliver.
    async fn shutdown(&self, timeout: Duration) -> ShutdownReport;
}
