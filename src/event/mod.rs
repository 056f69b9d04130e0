//! The event model: what a bot engine enqueues and what a webhook receives.
//!
//! [`Event`] has one variant per [`EventKind`], each carrying a payload whose
//! required fields are not optional, so an event the platform could not have
//! sent cannot be built. [`Event::Unknown`] keeps, for receivers, an event
//! whose `Type` this crate does not know yet, with every field.

use std::sync::Arc;

mod date;
mod factory;
mod flags;
mod kind;
mod returning_user;
mod variables;

pub(crate) use date::MAX_DATE_LEN;
pub use date::{DateError, EventDate};
pub use factory::{ChatContext, EventFactory};
pub use flags::EventFlags;
pub use kind::{EventKind, UnknownKindCode};
pub use returning_user::ReturningUserGate;
pub use variables::Variables;

/// Who produced an event: on every event (`BotToken`, `AccountName`).
///
/// Shared strings: every event of a bot carries the same two values, so
/// cloning an origin (as [`EventFactory`] does per event, and the parser per
/// entry of a push) copies two pointers instead of allocating.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `BotToken`: the bot's unique token. The dispatcher routes events by it.
    pub bot_token: Arc<str>,
    /// `AccountName`: the full name of the account that owns the bot.
    pub account_name: Arc<str>,
}

impl Origin {
    /// The origin for a bot of an account.
    ///
    /// ```
    /// use eventhook::Origin;
    ///
    /// let origin = Origin::new("bot-token", String::from("Matelab Srl"));
    /// assert_eq!(&*origin.bot_token, "bot-token");
    /// ```
    pub fn new(bot_token: impl Into<Arc<str>>, account_name: impl Into<Arc<str>>) -> Origin {
        Origin { bot_token: bot_token.into(), account_name: account_name.into() }
    }
}

/// A chat message: `Type` 0 (sent by the bot or an operator) or 1 (sent by the user).
///
/// ```
/// use eventhook::{Event, EventDate, Message, Origin};
///
/// let date: EventDate = "2019-07-10T15:47:58.580873+00:00".parse().unwrap();
/// let message = Message::new(Origin::new("bot-1", "Matelab Srl"), "conv-9", "TelegramChannel", "Hello!", date)
///     .user_name("Ada");
/// let event = Event::UserMessage(message);
/// assert_eq!(event.bot_token(), Some("bot-1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `BotToken` and `AccountName`.
    pub origin: Origin,
    /// `ItemType`: the item's visual type, e.g. `Text`.
    pub item_type: Option<String>,
    /// `ItemSubType`: the subtype of the visual type.
    pub item_sub_type: Option<String>,
    /// `Data`: the message text; for a button click, its text and its payload.
    pub data: String,
    /// `Date`: when the message was sent.
    pub date: EventDate,
    /// `ConversationId`: the conversation it belongs to.
    pub conversation_id: String,
    /// `UserName`: the conversation user's name.
    pub user_name: Option<String>,
    /// `Channel`: the channel that carried it, e.g. `TelegramChannel`.
    pub channel: String,
    /// `Variables`: the conversation's variables (a webhook sends those its settings list).
    pub variables: Variables,
}

impl Message {
    /// A message with its required fields; set the optional ones with the builder methods.
    pub fn new(
        origin: Origin,
        conversation_id: impl Into<String>,
        channel: impl Into<String>,
        data: impl Into<String>,
        date: EventDate,
    ) -> Message {
        Message {
            origin,
            item_type: None,
            item_sub_type: None,
            data: data.into(),
            date,
            conversation_id: conversation_id.into(),
            user_name: None,
            channel: channel.into(),
            variables: Variables::new(),
        }
    }

    /// Sets `ItemType`.
    #[must_use]
    pub fn item_type(mut self, item_type: impl Into<String>) -> Message {
        self.item_type = Some(item_type.into());
        self
    }

    /// Sets `ItemSubType`.
    #[must_use]
    pub fn item_sub_type(mut self, item_sub_type: impl Into<String>) -> Message {
        self.item_sub_type = Some(item_sub_type.into());
        self
    }

    /// Sets `UserName`.
    #[must_use]
    pub fn user_name(mut self, user_name: impl Into<String>) -> Message {
        self.user_name = Some(user_name.into());
        self
    }

    /// Sets the conversation's variables.
    #[must_use]
    pub fn variables(mut self, variables: Variables) -> Message {
        self.variables = variables;
        self
    }
}

/// An intent or entity change: `Type` 3-6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChange {
    /// `BotToken` and `AccountName`.
    pub origin: Origin,
    /// `Date`: when it changed (the platform's own example leaves it out).
    pub date: Option<EventDate>,
    /// `Name`: the intent's or entity's name.
    pub name: String,
    /// `Key`: the intent's or entity's key.
    pub key: String,
}

impl CatalogChange {
    /// A change of the intent or entity `name` with `key`, without a date.
    pub fn new(origin: Origin, name: impl Into<String>, key: impl Into<String>) -> CatalogChange {
        CatalogChange { origin, date: None, name: name.into(), key: key.into() }
    }

    /// Sets `Date`.
    #[must_use]
    pub fn date(mut self, date: EventDate) -> CatalogChange {
        self.date = Some(date);
        self
    }
}

/// A user message the NLP did not recognise: `Type` 7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedText {
    /// `BotToken` and `AccountName`.
    pub origin: Origin,
    /// `Date`: when it was missed (the platform's own example leaves it out).
    pub date: Option<EventDate>,
    /// `ConversationId`, when known.
    pub conversation_id: Option<String>,
    /// `UserName`, when known.
    pub user_name: Option<String>,
    /// `Channel`, when known.
    pub channel: Option<String>,
    /// `Text`: the text that was not recognised.
    pub text: String,
    /// `Variables`: the conversation's variables; sent only with a `ConversationId`.
    pub variables: Variables,
}

impl MissedText {
    /// A miss of `text`, with no date or conversation.
    pub fn new(origin: Origin, text: impl Into<String>) -> MissedText {
        MissedText {
            origin,
            date: None,
            conversation_id: None,
            user_name: None,
            channel: None,
            text: text.into(),
            variables: Variables::new(),
        }
    }

    /// Sets `Date`.
    #[must_use]
    pub fn date(mut self, date: EventDate) -> MissedText {
        self.date = Some(date);
        self
    }

    /// Sets `ConversationId`, `Channel`, `UserName` and the variables from a chat.
    #[must_use]
    pub fn in_chat(mut self, chat: &ChatContext) -> MissedText {
        self.conversation_id = Some(chat.conversation_id.clone());
        self.channel = Some(chat.channel.clone());
        self.user_name = chat.user_name.clone();
        self.variables = chat.variables.clone();
        self
    }
}

/// Something that happened in a conversation: `Type` 2 and 8-13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEvent {
    /// `BotToken` and `AccountName`.
    pub origin: Origin,
    /// `Data`: details, e.g. the error of a conversation error.
    pub data: Option<String>,
    /// `Date`: when it happened.
    pub date: Option<EventDate>,
    /// `ConversationId`: the conversation it happened in.
    pub conversation_id: String,
    /// `UserName`, when known.
    pub user_name: Option<String>,
    /// `Channel`, when known.
    pub channel: Option<String>,
    /// `Variables`: the conversation's variables (a webhook sends those its settings list).
    pub variables: Variables,
}

impl ConversationEvent {
    /// An event of the conversation `conversation_id`, with nothing else set.
    pub fn new(origin: Origin, conversation_id: impl Into<String>) -> ConversationEvent {
        ConversationEvent {
            origin,
            data: None,
            date: None,
            conversation_id: conversation_id.into(),
            user_name: None,
            channel: None,
            variables: Variables::new(),
        }
    }

    /// Sets `Data`.
    #[must_use]
    pub fn data(mut self, data: impl Into<String>) -> ConversationEvent {
        self.data = Some(data.into());
        self
    }

    /// Sets `Date`.
    #[must_use]
    pub fn date(mut self, date: EventDate) -> ConversationEvent {
        self.date = Some(date);
        self
    }

    /// Sets `Channel`.
    #[must_use]
    pub fn channel(mut self, channel: impl Into<String>) -> ConversationEvent {
        self.channel = Some(channel.into());
        self
    }

    /// Sets `UserName`.
    #[must_use]
    pub fn user_name(mut self, user_name: impl Into<String>) -> ConversationEvent {
        self.user_name = Some(user_name.into());
        self
    }

    /// Sets the conversation's variables.
    #[must_use]
    pub fn variables(mut self, variables: Variables) -> ConversationEvent {
        self.variables = variables;
        self
    }
}

/// An event whose `Type` this crate does not know (for example one the
/// platform added later), kept by receivers with every field.
///
/// Encoding it writes `Type` first, then the other fields in the order they
/// were read.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    /// The `Type` code, 14 or more.
    pub code: u64,
    /// Every field but `Type`, in the order read.
    pub fields: Vec<(String, serde_json::Value)>,
}

impl UnknownEvent {
    /// The value of the field `key`, if present.
    pub fn field(&self, key: &str) -> Option<&serde_json::Value> {
        self.fields.iter().find(|(name, _)| name == key).map(|(_, value)| value)
    }
}

/// One event, as enqueued by a bot engine and as received by a webhook.
///
/// Build events with an [`EventFactory`] (which stamps `Date` from a clock),
/// or from the payload types' constructors. On the wire an event is one JSON
/// object of a push's array; see [`wire`](crate::wire).
///
/// ```
/// use eventhook::{ChatContext, Event, EventFactory, EventKind};
///
/// let bot = EventFactory::new("bot-1", "Matelab Srl");
/// let chat = ChatContext::new("conversation-42", "TelegramChannel").user_name("Ada");
/// let event = Event::HandOver(bot.conversation(&chat).data("to the support team"));
///
/// // What a receiver usually looks at, whatever the kind:
/// assert_eq!(event.kind(), Some(EventKind::HandOver));
/// assert_eq!(event.code(), 11);
/// assert_eq!(event.bot_token(), Some("bot-1"));
/// assert!(event.date().is_some());
///
/// // And the payload, by kind:
/// match &event {
///     Event::UserMessage(message) | Event::BotMessage(message) => println!("said: {}", message.data),
///     Event::HandOver(handover) => assert_eq!(handover.data.as_deref(), Some("to the support team")),
///     Event::Unknown(unknown) => println!("a newer kind, Type {}", unknown.code),
///     _ => {}
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `Type` 0: a chatbot chat message (bot or human operator).
    BotMessage(Message),
    /// `Type` 1: a user chat message.
    UserMessage(Message),
    /// `Type` 2: a conversation error has occurred.
    ConversationError(ConversationEvent),
    /// `Type` 3: an intent was updated.
    IntentUpdated(CatalogChange),
    /// `Type` 4: an intent was deleted.
    IntentDeleted(CatalogChange),
    /// `Type` 5: an entity was updated.
    EntityUpdated(CatalogChange),
    /// `Type` 6: an entity was deleted.
    EntityDeleted(CatalogChange),
    /// `Type` 7: a user message was not recognised by the NLP.
    NlpMissed(MissedText),
    /// `Type` 8: a new user connected.
    NewUser(ConversationEvent),
    /// `Type` 9: a user returned (at most once per 24 hours per user).
    ReturningUser(ConversationEvent),
    /// `Type` 10: take over happened.
    TakeOver(ConversationEvent),
    /// `Type` 11: hand over happened.
    HandOver(ConversationEvent),
    /// `Type` 12: the conversation hit a fallback interaction.
    Fallback(ConversationEvent),
    /// `Type` 13: the conversation hit a wrong question reply.
    WrongAnswer(ConversationEvent),
    /// A `Type` this crate does not know; only receivers produce it.
    Unknown(UnknownEvent),
}

impl Event {
    /// The event's kind, or `None` for [`Event::Unknown`].
    #[inline]
    pub fn kind(&self) -> Option<EventKind> {
        Some(match self {
            Event::BotMessage(_) => EventKind::BotMessage,
            Event::UserMessage(_) => EventKind::UserMessage,
            Event::ConversationError(_) => EventKind::ConversationError,
            Event::IntentUpdated(_) => EventKind::IntentUpdated,
            Event::IntentDeleted(_) => EventKind::IntentDeleted,
            Event::EntityUpdated(_) => EventKind::EntityUpdated,
            Event::EntityDeleted(_) => EventKind::EntityDeleted,
            Event::NlpMissed(_) => EventKind::NlpMissed,
            Event::NewUser(_) => EventKind::NewUser,
            Event::ReturningUser(_) => EventKind::ReturningUser,
            Event::TakeOver(_) => EventKind::TakeOver,
            Event::HandOver(_) => EventKind::HandOver,
            Event::Fallback(_) => EventKind::Fallback,
            Event::WrongAnswer(_) => EventKind::WrongAnswer,
            Event::Unknown(_) => return None,
        })
    }

    /// The `Type` code on the wire.
    pub fn code(&self) -> u64 {
        match self {
            Event::Unknown(unknown) => unknown.code,
            known => known.kind().map_or(0, |kind| u64::from(kind.code())),
        }
    }

    /// The event's payload, whatever its kind: one place that knows which
    /// variants share a payload type.
    pub(crate) fn payload(&self) -> Payload<'_> {
        match self {
            Event::BotMessage(message) | Event::UserMessage(message) => Payload::Message(message),
            Event::IntentUpdated(change)
            | Event::IntentDeleted(change)
            | Event::EntityUpdated(change)
            | Event::EntityDeleted(change) => Payload::CatalogChange(change),
            Event::NlpMissed(missed) => Payload::MissedText(missed),
            Event::ConversationError(conversation)
            | Event::NewUser(conversation)
            | Event::ReturningUser(conversation)
            | Event::TakeOver(conversation)
            | Event::HandOver(conversation)
            | Event::Fallback(conversation)
            | Event::WrongAnswer(conversation) => Payload::Conversation(conversation),
            Event::Unknown(unknown) => Payload::Unknown(unknown),
        }
    }

    /// `BotToken` and `AccountName`, for every known kind.
    #[inline]
    pub fn origin(&self) -> Option<&Origin> {
        match self.payload() {
            Payload::Message(message) => Some(&message.origin),
            Payload::CatalogChange(change) => Some(&change.origin),
            Payload::MissedText(missed) => Some(&missed.origin),
            Payload::Conversation(conversation) => Some(&conversation.origin),
            Payload::Unknown(_) => None,
        }
    }

    /// `BotToken`: the bot the event belongs to. For an unknown event, its
    /// `BotToken` field when that is a string.
    #[inline]
    pub fn bot_token(&self) -> Option<&str> {
        match self {
            Event::Unknown(unknown) => unknown.field("BotToken").and_then(serde_json::Value::as_str),
            known => known.origin().map(|origin| &*origin.bot_token),
        }
    }

    /// `Variables`: the conversation's variables, empty for kinds outside a
    /// conversation and for unknown events.
    ///
    /// ```
    /// use eventhook::{ChatContext, Event, EventFactory};
    ///
    /// let chat = ChatContext::new("c-1", "WebChannel").variable("plan", "gold");
    /// let event = Event::HandOver(EventFactory::new("bot-1", "Acme").conversation(&chat));
    /// assert_eq!(event.variables().get("plan"), Some("gold"));
    /// ```
    pub fn variables(&self) -> &Variables {
        static NONE: Variables = Variables::new();
        match self.payload() {
            Payload::Message(message) => &message.variables,
            Payload::MissedText(missed) if missed.conversation_id.is_some() => &missed.variables,
            Payload::Conversation(conversation) => &conversation.variables,
            Payload::MissedText(_) | Payload::CatalogChange(_) | Payload::Unknown(_) => &NONE,
        }
    }

    /// `Date`, when the event has one.
    pub fn date(&self) -> Option<EventDate> {
        match self.payload() {
            Payload::Message(message) => Some(message.date),
            Payload::CatalogChange(change) => change.date,
            Payload::MissedText(missed) => missed.date,
            Payload::Conversation(conversation) => conversation.date,
            Payload::Unknown(unknown) => {
                unknown.field("Date").and_then(serde_json::Value::as_str).and_then(|text| EventDate::parse(text).ok())
            }
        }
    }
}

/// A borrowed view of an [`Event`]'s payload, one case per payload type.
pub(crate) enum Payload<'a> {
    Message(&'a Message),
    CatalogChange(&'a CatalogChange),
    MissedText(&'a MissedText),
    Conversation(&'a ConversationEvent),
    Unknown(&'a UnknownEvent),
}
