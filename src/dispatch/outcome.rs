//! What dispatching reports back: for each event, each call, each flush and
//! the shutdown. The core, the driver and the host all read these types.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::stats::{DispatcherStats, DropReason, Refusal, StalledWebhook};
use crate::config::WebhookUrl;
use crate::event::Event;
use crate::transport::TransportError;

/// What [`Dispatcher::enqueue`](super::Dispatcher::enqueue) did with an event.
///
/// Every refusal is also counted in the stats under its [`Refusal`]. Only
/// `QueueFull`, `Closed` and `StoreUnavailable` hand the event back: the bot's webhook exists
/// and wants it, so keep it (or count it lost); the other refusals mean the
/// webhook does not want it, and dropping it is right.
///
/// ```
/// use eventhook::dispatch::{Dispatcher, EnqueueOutcome, RecordingDispatcher};
/// use eventhook::{ChatContext, Event, EventFactory};
///
/// fn offer(dispatcher: &dyn Dispatcher, event: Event, spill: &mut Vec<Event>) {
///     match dispatcher.enqueue(event) {
///         EnqueueOutcome::Accepted => {}
///         // Handed back: the queue is full or the dispatcher is shutting down.
///         EnqueueOutcome::QueueFull(event)
///         | EnqueueOutcome::Closed(event)
///         | EnqueueOutcome::StoreUnavailable(event) => spill.push(event),
///         // Not wanted by the bot's webhook: nothing to keep.
///         EnqueueOutcome::NotSelected
///         | EnqueueOutcome::FreePlan
///         | EnqueueOutcome::NoWebhook
///         | EnqueueOutcome::WebhookDisabled => {}
///     }
/// }
///
/// let mut spill = Vec::new();
/// let bot = EventFactory::new("bot-1", "Matelab Srl");
/// let event = Event::NewUser(bot.conversation(&ChatContext::new("c-1", "WebChannel")));
/// offer(&RecordingDispatcher::new(), event, &mut spill);
/// assert!(spill.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an event refused as QueueFull or Closed is handed back and lost if ignored"]
pub enum EnqueueOutcome {
    /// Accepted: it will be delivered, or dropped for a counted reason.
    Accepted,
    /// Its kind is not selected for the bot's webhook.
    NotSelected,
    /// The bot is on the free plan, which has no webhook.
    FreePlan,
    /// The bot has no webhook configured (or the event names no bot).
    NoWebhook,
    /// The bot's webhook is disabled after too many failed calls.
    WebhookDisabled,
    /// The webhook's queue or the global bound is full; here is the event back.
    QueueFull(Event),
    /// The dispatcher is shut down; here is the event back.
    Closed(Event),
    /// A shared store (PostgreSQL) has not taken the events accepted before
    /// it, up to the dispatcher's buffer bound: the database is unreachable
    /// or slower than the events arrive. Here is the event back.
    StoreUnavailable(Event),
}

impl EnqueueOutcome {
    /// Whether the event was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, EnqueueOutcome::Accepted)
    }

    /// The outcome of a refusal that hands nothing back (the webhook does not want the event).
    pub(crate) fn refused(refusal: Refusal) -> EnqueueOutcome {
        match refusal {
            Refusal::NotSelected => EnqueueOutcome::NotSelected,
            Refusal::FreePlan => EnqueueOutcome::FreePlan,
            Refusal::WebhookDisabled => EnqueueOutcome::WebhookDisabled,
            Refusal::NoWebhook | Refusal::QueueFull | Refusal::Closed | Refusal::StoreUnavailable => {
                EnqueueOutcome::NoWebhook
            }
        }
    }

    /// The refusal, or `None` when accepted.
    pub fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            EnqueueOutcome::Accepted => return None,
            EnqueueOutcome::NotSelected => Refusal::NotSelected,
            EnqueueOutcome::FreePlan => Refusal::FreePlan,
            EnqueueOutcome::NoWebhook => Refusal::NoWebhook,
            EnqueueOutcome::WebhookDisabled => Refusal::WebhookDisabled,
            EnqueueOutcome::QueueFull(_) => Refusal::QueueFull,
            EnqueueOutcome::Closed(_) => Refusal::Closed,
            EnqueueOutcome::StoreUnavailable(_) => Refusal::StoreUnavailable,
        })
    }
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// `200 OK` (or any `2xx` where the webhook accepts them): its events are delivered.
    Delivered(http::StatusCode),
    /// Any other status, redirects included.
    FailedStatus(http::StatusCode),
    /// No status: connection error, timeout, refused address.
    FailedTransport(TransportError),
}

impl CallOutcome {
    /// Whether the call delivered its events.
    pub fn is_success(&self) -> bool {
        matches!(self, CallOutcome::Delivered(_))
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallOutcome::Delivered(status) => write!(formatter, "delivered ({status})"),
            CallOutcome::FailedStatus(status) => write!(formatter, "answered {status}"),
            CallOutcome::FailedTransport(error) => write!(formatter, "{error}"),
        }
    }
}

/// One call made to a webhook: one billable outgoing message, however many
/// events it carried.
///
/// Made for every call, so it shares the webhook's strings instead of
/// copying them: the token, and one buffer that holds the URL and the
/// account name (read with [`account_name`](Self::account_name)).
///
/// That buffer also holds the webhook's `Authorization` value, so that a push
/// touches one cache line for all of them. No method, `Debug` or `Display`
/// reaches it, but a record keeps the buffer allocated: a host that keeps
/// records long after a bot's secret was replaced keeps the old secret's
/// bytes in its memory until it drops them. Copy out what you store.
#[derive(Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The bot billed.
    pub bot_token: Arc<str>,
    pub(crate) account_name: bytes::Bytes,
    /// Where the call went.
    pub url: WebhookUrl,
    /// Events in the body.
    pub events: usize,
    /// Body size in bytes.
    pub bytes: usize,
    /// How long the call took.
    pub duration: Duration,
    /// How it ended.
    pub outcome: CallOutcome,
}

impl CallRecord {
    /// The bot's account.
    pub fn account_name(&self) -> &str {
        // Copied from a `str` when the webhook was configured: always valid UTF-8.
        std::str::from_utf8(&self.account_name).unwrap_or_default()
    }
}

impl fmt::Debug for CallRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CallRecord")
            .field("bot_token", &self.bot_token)
            .field("account_name", &self.account_name())
            .field("url", &self.url)
            .field("events", &self.events)
            .field("bytes", &self.bytes)
            .field("duration", &self.duration)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// Accepted events that will not be delivered, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedEvents {
    /// The bot they were for.
    pub bot_token: String,
    /// Why they were dropped.
    pub reason: DropReason,
    /// The events themselves, so the host can keep them.
    pub events: Vec<Event>,
}

/// Why a flush did not deliver everything, naming the webhooks that still
/// hold events and why their last call failed.
///
/// ```
/// use eventhook::dispatch::{FlushError, StalledWebhook, WebhookState};
///
/// let error = FlushError::Incomplete {
///     pending: 140,
///     webhooks: vec![StalledWebhook {
///         bot_token: "bot-1".to_owned(),
///         state: WebhookState::Active,
///         undelivered: 140,
///         last_failure: Some("answered 500 Internal Server Error".to_owned()),
///     }],
/// };
/// assert_eq!(
///     error.to_string(),
///     "flush ended with 140 events still pending after failed calls: \
///      bot-1: 140 undelivered, last failure: answered 500 Internal Server Error"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The deadline passed first.
    #[error("flush timed out with {pending} events still pending{}", Stalled(webhooks))]
    TimedOut {
        /// Events pending or in flight when it gave up.
        pending: u64,
        /// The webhooks that still hold them.
        webhooks: Vec<StalledWebhook>,
    },
    /// Some calls failed; their events wait for the next interval.
    #[error("flush ended with {pending} events still pending after failed calls{}", Stalled(webhooks))]
    Incomplete {
        /// Events pending or in flight at the end.
        pending: u64,
        /// The webhooks that still hold them.
        webhooks: Vec<StalledWebhook>,
    },
    /// The dispatcher is shut down.
    #[error("the dispatcher is shut down")]
    Closed,
    /// The shared store (PostgreSQL) did not answer; its error, without secrets.
    #[error("flush could not reach the store: {0}")]
    StoreUnavailable(String),
}

/// `: a; b; c` for the first few stalled webhooks, `and N more` after them.
struct Stalled<'a>(&'a [StalledWebhook]);

impl fmt::Display for Stalled<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 3;
        for (index, webhook) in self.0.iter().take(SHOWN).enumerate() {
            formatter.write_str(if index == 0 { ": " } else { "; " })?;
            write!(formatter, "{webhook}")?;
        }
        if self.0.len() > SHOWN {
            write!(formatter, "; and {} more webhooks", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// The dispatcher is shut down and takes no more settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dispatcher is shut down")]
pub struct DispatcherClosed;

/// What [`Dispatcher::shutdown`](super::Dispatcher::shutdown) hands back.
///
/// ```no_run
/// # async fn example(dispatcher: &dyn eventhook::dispatch::Dispatcher) {
/// use std::time::Duration;
///
/// let report = dispatcher.shutdown(Duration::from_secs(10)).await;
/// for webhook in &report.stalled {
///     eprintln!("not delivered: {webhook}"); // e.g. "bot-1: 140 undelivered, last failure: ..."
/// }
/// // Keep what could not be sent, e.g. to enqueue it again after a restart.
/// let to_keep: Vec<Vec<u8>> = report.undelivered.iter().map(|event| {
///     let mut json = Vec::new();
///     eventhook::wire::encode_event(event, &mut json);
///     json
/// }).collect();
/// # let _ = to_keep;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShutdownReport {
    /// Every event not delivered, for the host to persist (at-least-once:
    /// events of a call abandoned at the deadline may also have arrived).
    pub undelivered: Vec<Event>,
    /// The webhooks those events were for, and why their last call failed.
    pub stalled: Vec<StalledWebhook>,
    /// The final counts.
    pub stats: DispatcherStats,
}
