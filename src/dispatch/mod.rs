//! Dispatching events to webhooks: the [`Dispatcher`] handle a bot engine
//! holds, the sans-IO [`DispatchCore`] with every rule, and the driver
//! ([`WebhookDispatcher`]) that runs the core on a [`Runtime`](crate::Runtime)
//! and a [`Transport`](crate::Transport).
//!
//! The rules, from the platform's page and the wire contract:
//! - events are pushed per bot about every 30 seconds (the webhook's
//!   interval), only when some are pending, first pushes spread over the
//!   interval; a full batch still pending after a success is pushed at once;
//! - exactly `200 OK` is success; anything else keeps the events, in order,
//!   for the next interval; the 11th failure in a row disables the webhook,
//!   drops its pending events (counted, handed to the [`DeliveryObserver`])
//!   and alerts the account once; configuring the webhook again re-enables it;
//! - every call is reported for billing ([`CallRecord`]);
//! - a bot on the free plan has no webhook: nothing is queued or sent.

mod admission;
mod bot_sender;
mod core;
mod dispatcher;
mod driver;
pub(crate) mod endpoint;
mod intake;
mod metrics;
mod noop;
mod observer;
mod outcome;
mod recording;
pub(crate) mod rules;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod token_hash;

#[cfg(feature = "postgres")]
pub(crate) use self::core::decode_stored;
pub use self::core::{CoreLimits, DispatchCore, Enqueuer, Notice, Push, PushId};
pub use bot_sender::BotSender;
pub use dispatcher::Dispatcher;
pub use driver::{WebhookDispatcher, WebhookDispatcherBuilder};
pub use noop::NoopDispatcher;
pub use observer::{DeliveryObserver, NoObserver};
pub use outcome::{
    CallOutcome, CallRecord, DispatcherClosed, DroppedEvents, EnqueueOutcome, FlushError, ShutdownReport,
};
pub use recording::RecordingDispatcher;
pub use rules::MAX_FAILURES_IN_ROW;
pub use stats::{DispatcherStats, DropReason, EventCounts, Refusal, StalledWebhook, WebhookState, WebhookStats};
