//! The fourteen kinds of event the platform defines (`Type` 0-13).

use std::fmt;

/// The kind of an event: the `Type` code on the wire.
///
/// The codes and meanings come from the platform's integration settings page
/// (`Type` 0-13). A code outside that range is not an `EventKind`; receivers
/// keep such events as [`Event::Unknown`](crate::Event::Unknown).
///
/// ```
/// use eventhook::EventKind;
///
/// assert_eq!(EventKind::from_code(7), Some(EventKind::NlpMissed));
/// assert_eq!(EventKind::NlpMissed.code(), 7);
/// assert_eq!(EventKind::ALL.len(), 14);
/// assert_eq!(EventKind::from_code(14), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// 0: a chatbot chat message (sent by the bot or a human operator).
    BotMessage = 0,
    /// 1: a user chat message.
    UserMessage = 1,
    /// 2: a conversation error has occurred.
    ConversationError = 2,
    /// 3: an intent was updated.
    IntentUpdated = 3,
    /// 4: an intent was deleted.
    IntentDeleted = 4,
    /// 5: an entity was updated.
    EntityUpdated = 5,
    /// 6: an entity was deleted.
    EntityDeleted = 6,
    /// 7: a user message was not detected by automatic intent redirection (NLP missed text).
    NlpMissed = 7,
    /// 8: a new user connected: never contacted the bot before, or was forgotten.
    NewUser = 8,
    /// 9: a user returned; fired at most once every 24 hours per user
    /// (see [`ReturningUserGate`](crate::ReturningUserGate)).
    ReturningUser = 9,
    /// 10: take over happened.
    TakeOver = 10,
    /// 11: hand over happened.
    HandOver = 11,
    /// 12: the conversation hit a fallback interaction.
    Fallback = 12,
    /// 13: the conversation hit a wrong question reply.
    WrongAnswer = 13,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 14] = [
        EventKind::BotMessage,
        EventKind::UserMessage,
        EventKind::ConversationError,
        EventKind::IntentUpdated,
        EventKind::IntentDeleted,
        EventKind::EntityUpdated,
        EventKind::EntityDeleted,
        EventKind::NlpMissed,
        EventKind::NewUser,
        EventKind::ReturningUser,
        EventKind::TakeOver,
        EventKind::HandOver,
        EventKind::Fallback,
        EventKind::WrongAnswer,
    ];

    /// The `Type` code sent on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a `Type` code, or `None` for a code the crate does not know.
    pub const fn from_code(code: u64) -> Option<EventKind> {
        if code < 14 {
            Some(Self::ALL[code as usize])
        } else {
            None
        }
    }

    /// A stable, human-readable name in snake case, e.g. `"nlp_missed"`.
    ///
    /// Used by [`EventFlags`](crate::EventFlags) when stored as JSON and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::BotMessage => "bot_message",
            EventKind::UserMessage => "user_message",
            EventKind::ConversationError => "conversation_error",
            EventKind::IntentUpdated => "intent_updated",
            EventKind::IntentDeleted => "intent_deleted",
            EventKind::EntityUpdated => "entity_updated",
            EventKind::EntityDeleted => "entity_deleted",
            EventKind::NlpMissed => "nlp_missed",
            EventKind::NewUser => "new_user",
            EventKind::ReturningUser => "returning_user",
            EventKind::TakeOver => "take_over",
            EventKind::HandOver => "hand_over",
            EventKind::Fallback => "fallback",
            EventKind::WrongAnswer => "wrong_answer",
        }
    }

    /// The kind with the given [`name`](EventKind::name), if any.
    pub fn from_name(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// What the platform's page says the kind means.
    pub const fn description(self) -> &'static str {
        match self {
            EventKind::BotMessage => "Chatbot chat message (bot or human operator)",
            EventKind::UserMessage => "User chat message",
            EventKind::ConversationError => "A conversation error has occurred",
            EventKind::IntentUpdated => "An intent was updated",
            EventKind::IntentDeleted => "An intent was deleted",
            EventKind::EntityUpdated => "An entity was updated",
            EventKind::EntityDeleted => "An entity was deleted",
            EventKind::NlpMissed => "A user chat message was not detected by automatic intent redirection",
            EventKind::NewUser => "New user connected to the chatbot",
            EventKind::ReturningUser => "A user returned to talk with the chatbot",
            EventKind::TakeOver => "Take over happened",
            EventKind::HandOver => "Hand over happened",
            EventKind::Fallback => "The conversation hit a fallback interaction",
            EventKind::WrongAnswer => "The conversation hit a wrong question reply",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl From<EventKind> for u8 {
    fn from(kind: EventKind) -> u8 {
        kind.code()
    }
}

/// The error for a `Type` code outside 0-13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type code {0} (known codes are 0-13)")]
pub struct UnknownKindCode(pub u64);

impl TryFrom<u8> for EventKind {
    type Error = UnknownKindCode;

    fn try_from(code: u8) -> Result<Self, Self::Error> {
        EventKind::from_code(u64::from(code)).ok_or(UnknownKindCode(u64::from(code)))
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl serde::de::Visitor<'_> for KindVisitor {
            type Value = EventKind;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an event kind name such as \"user_message\", or a code 0-13")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<EventKind, E> {
                EventKind::from_name(name).ok_or_else(|| E::custom(format_args!("unknown event kind name {name:?}")))
            }
            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<EventKind, E> {
                EventKind::from_code(code).ok_or_else(|| E::custom(UnknownKindCode(code)))
            }
            fn visit_i64<E: serde::de::Error>(self, code: i64) -> Result<EventKind, E> {
                u64::try_from(code)
                    .ok()
                    .and_then(EventKind::from_code)
                    .ok_or_else(|| E::custom(format_args!("unknown event type code {code}")))
            }
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_are_unique() {
        for (index, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(usize::from(kind.code()), index);
            assert_eq!(EventKind::from_code(index as u64), Some(*kind));
            assert_eq!(EventKind::from_name(kind.name()), Some(*kind));
            assert_eq!(EventKind::try_from(kind.code()), Ok(*kind));
        }
        assert_eq!(EventKind::try_from(14u8), Err(UnknownKindCode(14)));
        let mut names: Vec<_> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 14);
    }

    #[test]
    fn serde_uses_names_and_accepts_codes() {
        assert_eq!(serde_json::to_string(&EventKind::HandOver).unwrap(), "\"hand_over\"");
        assert_eq!(serde_json::from_str::<EventKind>("\"fallback\"").unwrap(), EventKind::Fallback);
        assert_eq!(serde_json::from_str::<EventKind>("13").unwrap(), EventKind::WrongAnswer);
        assert!(serde_json::from_str::<EventKind>("14").is_err());
        assert!(serde_json::from_str::<EventKind>("\"nope\"").is_err());
    }
}
