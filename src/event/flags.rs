//! The set of event kinds a webhook is configured to receive.

use std::fmt;

use super::EventKind;

/// A set of [`EventKind`]s: the events a bot owner selected for their webhook.
///
/// A copyable bit set, so checking it on every `enqueue` costs one AND.
/// It serializes as a list of kind names, so hosts can keep it in their bot
/// settings as JSON; it reads back from names or from `Type` codes.
///
/// ```
/// use eventhook::{EventFlags, EventKind};
///
/// let flags = EventFlags::from_kinds([EventKind::UserMessage, EventKind::NlpMissed]);
/// assert!(flags.contains(EventKind::NlpMissed));
/// assert!(!flags.contains(EventKind::BotMessage));
/// assert_eq!(serde_json::to_string(&flags).unwrap(), r#"["user_message","nlp_missed"]"#);
///
/// let stored: EventFlags = serde_json::from_str(r#"["nlp_missed", 1]"#).unwrap();
/// assert_eq!(stored, flags);
/// assert_eq!(EventFlags::all().len(), 14);
/// assert!(EventFlags::none().is_empty());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventFlags {
    bits: u16,
}

impl EventFlags {
    const ALL_BITS: u16 = (1 << 14) - 1;

    /// Every kind.
    pub const fn all() -> EventFlags {
        EventFlags { bits: Self::ALL_BITS }
    }

    /// No kind at all.
    pub const fn none() -> EventFlags {
        EventFlags { bits: 0 }
    }

    /// Exactly the given kinds.
    pub fn from_kinds<I: IntoIterator<Item = EventKind>>(kinds: I) -> EventFlags {
        kinds.into_iter().fold(EventFlags::none(), EventFlags::with)
    }

    /// This set with `kind` added.
    #[must_use]
    pub const fn with(self, kind: EventKind) -> EventFlags {
        EventFlags { bits: self.bits | (1 << kind.code()) }
    }

    /// This set with `kind` removed.
    #[must_use]
    pub const fn without(self, kind: EventKind) -> EventFlags {
        EventFlags { bits: self.bits & !(1 << kind.code()) }
    }

    /// Adds `kind` in place.
    pub fn insert(&mut self, kind: EventKind) {
        *self = self.with(kind);
    }

    /// Removes `kind` in place.
    pub fn remove(&mut self, kind: EventKind) {
        *self = self.without(kind);
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: EventKind) -> bool {
        self.bits & (1 << kind.code()) != 0
    }

    /// Whether the set holds no kind.
    pub const fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// How many kinds the set holds.
    pub const fn len(self) -> usize {
        self.bits.count_ones() as usize
    }

    /// The kinds in the set, in code order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL.into_iter().filter(move |kind| self.contains(*kind))
    }
}

impl fmt::Debug for EventFlags {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<EventKind> for EventFlags {
    fn from_iter<I: IntoIterator<Item = EventKind>>(kinds: I) -> Self {
        EventFlags::from_kinds(kinds)
    }
}

impl From<EventKind> for EventFlags {
    fn from(kind: EventKind) -> Self {
        EventFlags::none().with(kind)
    }
}

impl serde::Serialize for EventFlags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for EventFlags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kinds = Vec::<EventKind>::deserialize(deserializer)?;
        Ok(EventFlags::from_kinds(kinds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut flags = EventFlags::none();
        assert!(flags.is_empty());
        flags.insert(EventKind::WrongAnswer);
        flags.insert(EventKind::BotMessage);
        assert_eq!(flags.len(), 2);
        assert!(flags.contains(EventKind::WrongAnswer));
        flags.remove(EventKind::WrongAnswer);
        assert_eq!(flags.iter().collect::<Vec<_>>(), vec![EventKind::BotMessage]);
        assert!(EventKind::ALL.iter().all(|kind| EventFlags::all().contains(*kind)));
        assert_eq!(format!("{:?}", EventFlags::from(EventKind::Fallback)), "{Fallback}");
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&EventFlags::all()).unwrap();
        assert_eq!(serde_json::from_str::<EventFlags>(&json).unwrap(), EventFlags::all());
        assert_eq!(serde_json::from_str::<EventFlags>("[]").unwrap(), EventFlags::none());
        assert!(serde_json::from_str::<EventFlags>("[99]").is_err());
    }
}
