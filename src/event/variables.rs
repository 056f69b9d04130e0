//! Conversation variables: the values a webhook may include with an event.

use std::fmt;
use std::sync::Arc;

/// A conversation's variables, names to text values, in insertion order:
/// `Variables` on the wire.
///
/// A bot engine sets them on the [`ChatContext`](crate::ChatContext) (or on an
/// event) with every value the conversation has; each webhook then sends
/// only the names its settings list
/// ([`WebhookConfigBuilder::include_variables`](crate::WebhookConfigBuilder::include_variables)),
/// in that list's order. A receiver gets back the object as sent, in order.
///
/// Cheap to clone and to carry: the entries are shared, so every event of a
/// conversation points at the same ones, and an empty set allocates nothing
/// (one null pointer on the event).
///
/// ```
/// use eventhook::Variables;
///
/// let mut variables = Variables::new().with("plan", "gold").with("email", "ada@example.com");
/// assert_eq!(variables.get("plan"), Some("gold"));
///
/// // Setting a name again replaces its value and keeps its place.
/// variables.insert("plan", "platinum");
/// let names: Vec<&str> = variables.iter().map(|(name, _)| name).collect();
/// assert_eq!(names, ["plan", "email"]);
/// assert_eq!(format!("{variables:?}"), r#"{"plan": "platinum", "email": "ada@example.com"}"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Variables {
    /// `None` when empty: an event without variables carries one null pointer.
    entries: Option<Arc<Vec<(String, String)>>>,
}

impl Variables {
    /// No variables.
    pub const fn new() -> Variables {
        Variables { entries: None }
    }

    /// Sets `name` to `value` (see [`insert`](Self::insert)) and returns the set.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Variables {
        self.insert(name, value);
        self
    }

    /// Sets `name` to `value`: a new name goes last, a known one keeps its
    /// place. Returns the value it replaced.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let (name, value) = (name.into(), value.into());
        // Copies the entries only when another event still shares them.
        let entries = Arc::make_mut(self.entries.get_or_insert_with(Default::default));
        match entries.iter_mut().find(|(known, _)| *known == name) {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                entries.push((name, value));
                None
            }
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.as_slice().iter().find(|(known, _)| known == name).map(|(_, value)| value.as_str())
    }

    /// The names and values, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.as_slice().iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// How many variables are set.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[(String, String)] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Builds from entries already known to have distinct names (the readers check).
    pub(crate) fn from_distinct(entries: Vec<(String, String)>) -> Variables {
        Variables { entries: (!entries.is_empty()).then(|| Arc::new(entries)) }
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Variables {
    /// Collects names and values; a name given twice keeps its first place and its last value.
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Variables {
        let mut variables = Variables::new();
        for (name, value) in iter {
            variables.insert(name, value);
        }
        variables
    }
}

impl fmt::Debug for Variables {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_map().entries(self.iter()).finish()
    }
}
