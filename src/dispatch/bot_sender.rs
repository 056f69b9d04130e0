//! [`BotSender`]: one bot's way into a dispatcher, with its route resolved once.

use std::fmt;
use std::sync::Arc;

use super::admission::{Admission, Gate};
use super::EnqueueOutcome;
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
/// Made by [`WebhookDispatcher::bot_sender`](super::WebhookDispatcher::bot_sender)
/// or [`Enqueuer::bot_sender`](super::Enqueuer::bot_sender).
///
/// ```
/// use std::sync::Arc;
/// use eventhook::dispatch::{CoreLimits, DispatchCore, EnqueueOutcome};
/// use eventhook::{ChatContext, Event, EventFactory, ManualClock, WebhookConfig};
///
/// let (mut core, enqueuer) = DispatchCore::new(Arc::new(ManualClock::new()), CoreLimits::default());
/// core.configure(WebhookConfig::builder("bot-1", "Account", "https://example.com/hook", "secret").build().unwrap());
///
/// let sender = enqueuer.bot_sender("bot-1");
/// let chat = ChatContext::new("conversation", "TelegramChannel");
/// let event = Event::UserMessage(EventFactory::new("bot-1", "Account").message(&chat, "hi"));
/// assert_eq!(sender.enqueue(event), EnqueueOutcome::Accepted);
/// ```
#[derive(Clone)]
pub struct BotSender {
    admission: Arc<Admission>,
    bot_token: Arc<str>,
    /// The bot's gate when the sender was made; `None` if it had no webhook then.
    gate: Option<Arc<Gate>>,
}

impl BotSender {
    pub(crate) fn new(admission: Arc<Admission>, bot_token: &str) -> BotSender {
        let gate = admission.gate(bot_token);
        // Its own copy, not the gate's: it lives with the engine's per-bot state,
        // so checking an event's token reads memory the engine has at hand.
        BotSender { admission, bot_token: Arc::from(bot_token), gate }
    }

    /// The bot this sender is for.
    pub fn bot_token(&self) -> &str {
        &self.bot_token
    }

    /// Offers `event` to the bot's webhook; see [`EnqueueOutcome`].
    ///
    /// Never blocks and never panics.
    pub fn enqueue(&self, event: Event) -> EnqueueOutcome {
        match &self.gate {
            Some(gate) if self.is_own(&event) => {
                // The read lock, as on the token path: `remove` and `close` take
                // the write lock and then drain the intake, so no event can
                // slip in after them (it would be neither handed back nor counted).
                let consistent = self.admission.read_gates();
                if gate.is_removed() {
                    drop(consistent);
                    return self.admission.enqueue(event);
                }
                let outcome = self.admission.admit(gate, event);
                drop(consistent);
                outcome
            }
            _ => self.admission.enqueue(event),
        }
    }

    /// Whether `event` is of this sender's bot: usually the same shared token.
    fn is_own(&self, event: &Event) -> bool {
        match event.origin() {
            Some(origin) => Arc::ptr_eq(&origin.bot_token, &self.bot_token) || *origin.bot_token == *self.bot_token,
            None => event.bot_token() == Some(&*self.bot_token),
        }
    }
}

impl fmt::Debug for BotSender {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BotSender")
            .field("bot_token", &self.bot_token)
            .field("configured", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}
