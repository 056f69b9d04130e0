//! [`BotSender`]: one bot's way into a dispatcher, with its route resolved once.

use std::fmt;
use std::sync::Arc;

use super::admission::{self, Admission, Gate, SeenSettings};
use super::dispatcher::Dispatcher;
use super::outcome::EnqueueOutcome;
use crate::event::Event;

/// Enqueues one bot's events without looking the bot up on every call.
///
/// The bot engine keeps one per active bot (next to the rest of its per-bot
/// state) and calls [`enqueue`](Self::enqueue) for that bot's events. It
/// answers exactly like [`Dispatcher::enqueue`](super::Dispatcher::enqueue),
/// and follows reconfigurations; it only skips finding the bot's webhook
/// by token, which is most of the cost of a call.
///
/// An event of another bot given to it is routed by its own token, so a
/// sender can never deliver one bot's events to another bot's webhook.
/// A sender made before the bot's webhook was configured, or kept after it
/// was removed, still works: it then finds the webhook by token each time.
///
/// Made by [`Dispatcher::bot_sender`] (every dispatcher has one, the test
/// doubles included), or by [`Enqueuer::bot_sender`](super::Enqueuer::bot_sender)
/// for a host that drives the sans-IO core itself. A dispatcher of the
/// host's own makes one with [`BotSender::through`].
///
/// ```
/// use std::sync::Arc;
/// use eventhook::dispatch::{Dispatcher, RecordingDispatcher};
/// use eventhook::{ChatContext, Event, EventFactory};
///
/// // The same code runs on the real dispatcher; here, on the recording one.
/// let dispatcher: Arc<dyn Dispatcher> = Arc::new(RecordingDispatcher::new());
///
/// // Once per bot, when the engine loads it:
/// let sender = dispatcher.bot_sender("bot-1");
/// let bot = EventFactory::new("bot-1", "Matelab Srl");
/// // For every event of that bot:
/// let chat = ChatContext::new("conversation-9", "TelegramChannel");
/// assert!(sender.enqueue(Event::UserMessage(bot.message(&chat, "Hello!"))).is_accepted());
/// ```
#[derive(Clone)]
pub struct BotSender {
    bot_token: Arc<str>,
    route: Route,
}

#[derive(Clone)]
enum Route {
    /// Straight into a dispatch core's admission.
    Admission {
        admission: Arc<Admission>,
        /// The bot's gate when the sender was made; `None` if it had no webhook then.
        gate: Option<Arc<Gate>>,
        /// The gate's settings as last read, so the common path reads only the sender.
        seen: SeenSettings,
    },
    /// Through another dispatcher's `enqueue`.
    Dispatcher(Arc<dyn Dispatcher>),
}

impl BotSender {
    pub(crate) fn new(admission: Arc<Admission>, bot_token: &str) -> BotSender {
        let gate = admission.gate(bot_token);
        // Its own copy, not the gate's: it lives with the engine's per-bot state,
        // so checking an event's token reads memory the engine has at hand.
        let route = Route::Admission { admission, gate, seen: SeenSettings::default() };
        BotSender { bot_token: Arc::from(bot_token), route }
    }

    /// A sender for `bot_token` that enqueues through `dispatcher`: how a
    /// [`Dispatcher`] other than the crate's makes its
    /// [`bot_sender`](Dispatcher::bot_sender).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use eventhook::dispatch::{BotSender, Dispatcher, EnqueueOutcome, NoopDispatcher};
    /// use eventhook::{Event, MissedText, Origin};
    ///
    /// let sender = BotSender::through(Arc::new(NoopDispatcher), "bot-1");
    /// let event = Event::NlpMissed(MissedText::new(Origin::new("bot-1", "Account"), "?"));
    /// assert_eq!(sender.enqueue(event), EnqueueOutcome::NoWebhook);
    /// ```
    pub fn through(dispatcher: Arc<dyn Dispatcher>, bot_token: &str) -> BotSender {
        BotSender { bot_token: Arc::from(bot_token), route: Route::Dispatcher(dispatcher) }
    }

    /// The bot this sender is for.
    pub fn bot_token(&self) -> &str {
        &self.bot_token
    }

    /// Offers `event` to the bot's webhook; see [`EnqueueOutcome`].
    ///
    /// Never blocks and never panics.
    #[inline]
    pub fn enqueue(&self, event: Event) -> EnqueueOutcome {
        // The common path, checked by reference so that the event moves once, into the intake.
        if let Route::Admission { admission, gate: Some(gate), seen } = &self.route {
            if self.is_own(&event) {
                // Held from the checks to the send, as on the token path: `remove`
                // and `close` shut every `enqueue` out and then drain the intake,
                // so no event can slip in after them (it would be neither handed
                // back nor counted).
                let _shared = admission.shared();
                let epoch = admission.epoch();
                if admission.is_open(epoch, seen.settings(epoch, gate), &event) {
                    return admission.send_open(gate, event);
                }
            }
        }
        self.enqueue_otherwise(event)
    }

    /// Everything but the common path: refusals, counted admission, another
    /// bot's event, a removed webhook, another dispatcher.
    #[inline(never)]
    fn enqueue_otherwise(&self, event: Event) -> EnqueueOutcome {
        match &self.route {
            Route::Dispatcher(dispatcher) => dispatcher.enqueue(event),
            Route::Admission { admission, gate: Some(gate), seen } if self.is_own(&event) => {
                let shared = admission.shared();
                if admission::is_removed(seen.settings(admission.epoch(), gate)) {
                    drop(shared);
                    return admission.enqueue(event);
                }
                admission.admit_counted(gate, event)
            }
            Route::Admission { admission, .. } => admission.enqueue(event),
        }
    }

    /// Whether `event` is of this sender's bot: usually the same shared token.
    #[inline]
    fn is_own(&self, event: &Event) -> bool {
        match event.origin() {
            Some(origin) => Arc::ptr_eq(&origin.bot_token, &self.bot_token) || *origin.bot_token == *self.bot_token,
            None => event.bot_token() == Some(&*self.bot_token),
        }
    }
}

impl fmt::Debug for BotSender {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = formatter.debug_struct("BotSender");
        debug.field("bot_token", &self.bot_token);
        match &self.route {
            Route::Admission { gate, .. } => debug.field("configured", &gate.is_some()),
            Route::Dispatcher(dispatcher) => debug.field("through", dispatcher),
        };
        debug.finish_non_exhaustive()
    }
}
