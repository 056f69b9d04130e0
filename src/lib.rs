//! # eventhook
//!
//! Batched, authenticated **events webhooks** for chatbot platforms, on both
//! sides of the wire.
//!
//! - **Sending** (a bot engine): [`enqueue`](dispatch::Dispatcher::enqueue)
//!   each event (messages, errors, intent and entity changes, NLP misses, new
//!   and returning users, take over, hand over, fallback, wrong answers); the
//!   dispatcher batches them per bot and POSTs them to the URL the bot owner
//!   configured about every 30 seconds, with the bot's API secret as bearer
//!   token. After more than 10 failed calls in a row it disables the webhook
//!   and alerts the account.
//! - **Receiving** (a webhook owner): [`receiver`] checks the bearer and
//!   parses a push into typed [`Event`]s.
//!
//! The wire format is the platform's, byte for byte: see [`wire`].
//!
//! ## The whole loop in one example
//!
//! A bot engine configures a bot's webhook and enqueues an event; the
//! dispatcher's push reaches a receiver, which checks the bearer and reads
//! the event back. (This one runs on the sans-IO core with a manual clock,
//! so it needs no network; a real host holds a
//! [`WebhookDispatcher`](dispatch::WebhookDispatcher), which does the same
//! on tokio and reqwest, as the README and `cargo run --example quickstart`
//! show.)
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use eventhook::dispatch::{CoreLimits, DispatchCore};
//! use eventhook::receiver::WebhookReceiver;
//! use eventhook::{BotSecret, ChatContext, Event, ManualClock, WebhookConfig};
//!
//! // The sending side: a bot's settings, then an event of one of its conversations.
//! let clock = Arc::new(ManualClock::new());
//! let (mut core, enqueuer) = DispatchCore::new(clock.clone(), CoreLimits::default());
//! let config = WebhookConfig::builder("bot-1", "Matelab Srl", "https://hooks.example.com/events", "s3cr3t")
//!     .include_variables(["plan"])
//!     .build()?;
//! let bot = config.event_factory();
//! core.configure(config);
//! let chat = ChatContext::new("conversation-42", "TelegramChannel").variable("plan", "gold");
//! assert!(enqueuer.enqueue(Event::UserMessage(bot.message(&chat, "Hello there!"))).is_accepted());
//!
//! // About 30 seconds later the webhook is due: one call, its bearer and a JSON array.
//! core.take_in_all();
//! clock.advance(Duration::from_secs(30));
//! let push = core.poll_push().expect("a push is due");
//! assert_eq!(push.request.headers()["authorization"], "Bearer s3cr3t");
//!
//! // The receiving side: check the bearer, read the events.
//! let receiver = WebhookReceiver::new(BotSecret::new("s3cr3t")?);
//! let events = receiver.receive(push.request.headers(), push.request.body())?;
//! assert_eq!(events[0].variables().get("plan"), Some("gold"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Where to start
//! - A bot engine: [`dispatch::WebhookDispatcher`] behind the
//!   [`dispatch::Dispatcher`] handle, one [`WebhookConfig`] per bot, events
//!   from an [`EventFactory`] and a [`ChatContext`], a
//!   [`dispatch::BotSender`] per bot; [`dispatch::RecordingDispatcher`] in its
//!   tests.
//! - A webhook owner: [`receiver::WebhookReceiver`] (or, with the `axum`
//!   feature, the `receiver::VerifiedPush` extractor), then match on [`Event`].
//! - Another runtime or HTTP client: implement [`Transport`] and [`Runtime`];
//!   a host with its own event loop drives [`dispatch::DispatchCore`] itself.
//!
//! ## Layout
//! - At the top: the event model ([`Event`] and its payloads, [`EventKind`],
//!   [`EventFlags`], [`EventDate`], [`Variables`], [`EventFactory`],
//!   [`ReturningUserGate`]), a bot's webhook settings ([`WebhookConfig`],
//!   [`BotSecret`], [`SigningSecret`], [`WebhookUrl`], [`IncludedVariables`]) and the parts a host
//!   plugs in ([`Transport`], [`Runtime`], [`AlertSink`], [`Clock`]).
//! - [`dispatch`]: the [`Dispatcher`](dispatch::Dispatcher) handle, the driver,
//!   the sans-IO core with every rule, stats and test doubles.
//! - [`wire`]: encoding and parsing pushes.
//! - [`receiver`]: bearer and signature checking and parsing of incoming pushes (and an axum extractor).
//! - [`adapters`]: ready parts for reqwest and tokio (cargo features).
//!
//! Each public item has one path: the top for the vocabulary above, its
//! module for the rest.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod adapters;
mod alert;
mod clock;
mod config;
pub mod dispatch;
mod error_text;
mod event;
#[cfg(feature = "tracing")]
mod log_escape;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod receiver;
mod runtime;
mod signing;
mod transport;
pub mod wire;

pub use alert::{AlertSink, NoAlerts, WebhookDisabledAlert};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BotSecret, ConfigError, IncludedVariables, Plan, WebhookConfig, WebhookConfigBuilder, WebhookUrl};
pub use event::{
    CatalogChange, ChatContext, ConversationEvent, DateError, Event, EventDate, EventFactory, EventFlags, EventKind,
    Message, MissedText, Origin, ReturningUserGate, UnknownEvent, UnknownKindCode, Variables,
};
pub use runtime::Runtime;
pub use signing::SigningSecret;
pub use transport::{Transport, TransportError, TransportErrorKind};

/// The `User-Agent` sent with every push: `eventhook/<crate version>`.
pub const USER_AGENT: &str = concat!("eventhook/", env!("CARGO_PKG_VERSION"));

/// Compiles the README's examples as doc tests, so they cannot rot.
#[cfg(all(
    doctest,
    feature = "reqwest",
    feature = "tokio",
    feature = "axum",
    feature = "metrics",
    feature = "postgres"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
