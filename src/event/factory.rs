//! Building events for one bot, dated by a clock.

use std::sync::Arc;

use super::{CatalogChange, ConversationEvent, EventDate, Message, MissedText, Origin, Variables};
use crate::clock::{Clock, SystemClock};

/// The conversation an event belongs to, as a bot engine has it at hand.
///
/// Give it the conversation's current variables, all of them: each webhook
/// sends only the names its settings list. Events built from the context
/// share its variables rather than copying them.
///
/// ```
/// use eventhook::{ChatContext, EventFactory};
///
/// let chat = ChatContext::new("conversation-42", "TelegramChannel")
///     .user_name("Ada")
///     .variable("plan", "gold")
///     .variable("email", "ada@example.com");
/// let message = EventFactory::new("bot-token", "Matelab Srl").message(&chat, "Hello there!");
/// assert_eq!(message.variables.get("plan"), Some("gold"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatContext {
    /// `ConversationId`.
    pub conversation_id: String,
    /// `Channel`, e.g. `TelegramChannel`.
    pub channel: String,
    /// `UserName`, when known.
    pub user_name: Option<String>,
    /// The conversation's variables, names to current values as text.
    pub variables: Variables,
}

impl ChatContext {
    /// The conversation `conversation_id` on `channel`.
    pub fn new(conversation_id: impl Into<String>, channel: impl Into<String>) -> ChatContext {
        ChatContext {
            conversation_id: conversation_id.into(),
            channel: channel.into(),
            user_name: None,
            variables: Variables::new(),
        }
    }

    /// Sets the user's name.
    #[must_use]
    pub fn user_name(mut self, user_name: impl Into<String>) -> ChatContext {
        self.user_name = Some(user_name.into());
        self
    }

    /// Sets the conversation's variables, replacing any set before.
    #[must_use]
    pub fn variables(mut self, variables: Variables) -> ChatContext {
        self.variables = variables;
        self
    }

    /// Sets one variable to its current value (see [`Variables::insert`]).
    #[must_use]
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> ChatContext {
        self.variables.insert(name, value);
        self
    }
}

/// Builds the payloads of one bot's events, stamping `Date` from a [`Clock`].
///
/// Wrap a payload in the [`Event`](crate::Event) variant of its kind:
///
/// ```
/// use eventhook::{ChatContext, Event, EventFactory, EventKind};
///
/// let bot = EventFactory::new("bot-token", "Matelab Srl");
/// let chat = ChatContext::new("conversation-42", "TelegramChannel").user_name("Ada");
///
/// let events = vec![
///     Event::NewUser(bot.conversation(&chat)),
///     Event::UserMessage(bot.message(&chat, "Hello there!")),
///     Event::BotMessage(bot.message(&chat, "Hey you, I'm your chatbot!").item_type("Text")),
///     Event::NlpMissed(bot.missed_text(&chat, "asdf")),
///     Event::IntentUpdated(bot.catalog_change("Greeting", "greeting")),
///     Event::ConversationError(bot.conversation(&chat).data("flow 'checkout' failed")),
/// ];
/// assert_eq!(events[1].kind(), Some(EventKind::UserMessage));
/// assert!(events.iter().all(|event| event.date().is_some()));
/// ```
#[derive(Clone)]
pub struct EventFactory {
    origin: Origin,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EventFactory {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("EventFactory").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl EventFactory {
    /// A factory for the bot `bot_token` of `account_name`, dating events by the system clock.
    ///
    /// A bot engine that holds the bot's [`WebhookConfig`](crate::WebhookConfig)
    /// can use [`WebhookConfig::event_factory`](crate::WebhookConfig::event_factory)
    /// instead, so the token and account name come from one place.
    pub fn new(bot_token: impl Into<Arc<str>>, account_name: impl Into<Arc<str>>) -> EventFactory {
        EventFactory { origin: Origin::new(bot_token, account_name), clock: Arc::new(SystemClock) }
    }

    /// Uses `clock` for `Date` instead of the system clock (tests use a
    /// [`ManualClock`](crate::ManualClock)).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> EventFactory {
        self.clock = clock;
        self
    }

    /// The bot and account the events come from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The date now, by this factory's clock.
    pub fn now(&self) -> EventDate {
        EventDate::from_clock(self.clock.wall_time())
    }

    /// A chat message in `chat` (wrap it in `Event::BotMessage` or `Event::UserMessage`).
    pub fn message(&self, chat: &ChatContext, data: impl Into<String>) -> Message {
        let mut message =
            Message::new(self.origin.clone(), chat.conversation_id.clone(), chat.channel.clone(), data, self.now());
        message.user_name = chat.user_name.clone();
        message.variables = chat.variables.clone();
        message
    }

    /// A dated conversation event in `chat` (for `Type` 2 and 8-13).
    pub fn conversation(&self, chat: &ChatContext) -> ConversationEvent {
        let mut event = ConversationEvent::new(self.origin.clone(), chat.conversation_id.clone())
            .date(self.now())
            .channel(chat.channel.clone());
        event.user_name = chat.user_name.clone();
        event.variables = chat.variables.clone();
        event
    }

    /// A dated NLP miss of `text` in `chat`.
    pub fn missed_text(&self, chat: &ChatContext, text: impl Into<String>) -> MissedText {
        MissedText::new(self.origin.clone(), text).date(self.now()).in_chat(chat)
    }

    /// A dated intent or entity change (for `Type` 3-6).
    pub fn catalog_change(&self, name: impl Into<String>, key: impl Into<String>) -> CatalogChange {
        CatalogChange::new(self.origin.clone(), name, key).date(self.now())
    }
}
