//! # eventhook
//!
//! Batched, authenticated **events webhooks** for chatbot platforms, on both
//! sides of the wire.
//!
//! - **Sending** (a bot engine): [`enqueue`](Dispatcher::enqueue) each event
//!   (messages, errors, intent and entity changes, NLP misses, new and
//!   returning users, take over, hand over, fallback, wrong answers); the
//!   dispatcher batches them per bot and POSTs them to the URL the bot owner
//!   configured about every 30 seconds, with the bot's API secret as bearer
//!   token. After more than 10 failed calls in a row it disables the webhook
//!   and alerts the account.
//! - **Receiving** (a webhook owner): [`receiver`] checks the bearer and
//!   parses a push into typed [`Event`]s.
//!
//! The wire format is the platform's, byte for byte: see [`wire`].
//!
//! ## Layout
//! - [`event`]: the event model ([`Event`], [`EventKind`], [`EventFlags`], [`EventDate`]).
//! - [`wire`]: encoding and parsing pushes.
//! - [`config`]: a bot's webhook settings ([`WebhookConfig`]).
//! - [`dispatch`]: the [`Dispatcher`] handle, its sans-IO [`DispatchCore`](dispatch::DispatchCore) and driver.
//! - [`Transport`], [`Runtime`], [`AlertSink`], [`Clock`]: the parts a host plugs in.
//! - [`adapters`]: ready parts for reqwest and tokio (cargo features).
//! - [`receiver`]: bearer checking and parsing of incoming pushes (and an axum extractor).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod adapters;
pub mod alert;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod event;
#[cfg(feature = "tracing")]
mod log_escape;
pub mod receiver;
pub mod runtime;
pub mod transport;
pub mod wire;

pub use alert::{AlertSink, NoAlerts, WebhookDisabledAlert};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BotSecret, ConfigError, IncludedVariables, Plan, WebhookConfig, WebhookConfigBuilder, WebhookUrl};
pub use dispatch::{
    DeliveryObserver, Dispatcher, EnqueueOutcome, ReturningUserGate, WebhookDispatcher, WebhookDispatcherBuilder,
};
pub use event::{
    CatalogChange, ChatContext, ConversationEvent, DateError, Event, EventDate, EventFactory, EventFlags, EventKind,
    Message, MissedText, Origin, UnknownEvent, Variables,
};
pub use runtime::Runtime;
pub use transport::{Transport, TransportError, TransportErrorKind};

/// The `User-Agent` sent with every push: `eventhook/<crate version>`.
pub const USER_AGENT: &str = concat!("eventhook/", env!("CARGO_PKG_VERSION"));

/// Compiles the README's examples as doc tests, so they cannot rot.
#[cfg(all(doctest, feature = "reqwest", feature = "tokio", feature = "axum"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
