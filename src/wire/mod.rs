//! The wire codec: events to and from the platform's JSON, byte for byte.
//!
//! A push body is a JSON array of event objects. Each object has PascalCase
//! keys in this order, a key whose value is absent being left out (never
//! `null`): `Type`, `ItemType`, `ItemSubType`, `Data`, `Date`, `BotToken`,
//! `AccountName`, `ConversationId`, `UserName`, `Channel`, `Text`, `Name`,
//! `Key`, `Variables`. `Type` is the [`EventKind`](crate::EventKind) code;
//! `Date` is an [`EventDate`](crate::EventDate); `Variables`, carried by the
//! events of a conversation (those with a `ConversationId`), is an object of
//! string values ([`Variables`](crate::Variables)), in the order the webhook's
//! settings list the names ([`encode_event_including`]).
//!
//! # Writing
//!
//! [`encode_push`] and [`encode_event`] write compact JSON, strings escaped as
//! serde_json escapes them (non-ASCII is written as UTF-8, `/` is not escaped).
//!
//! ```
//! use eventhook::wire;
//! use eventhook::{CatalogChange, Event, Origin};
//!
//! let event = Event::IntentUpdated(CatalogChange::new(Origin::new("bot-1", "Matelab Srl"), "Greeting", "greeting"));
//! let body = wire::encode_push(&[event]);
//! assert_eq!(
//!     body,
//!     br#"[{"Type":3,"BotToken":"bot-1","AccountName":"Matelab Srl","Name":"Greeting","Key":"greeting"}]"#
//! );
//! ```
//!
//! # Reading
//!
//! [`parse_push`] reads an array of event objects, or a single object as an
//! array of one. It is a tolerant reader, so that receivers keep working when
//! the platform adds to the format:
//!
//! - keys are matched exactly (case-sensitive); keys outside the fourteen
//!   above (`SubType`, the name an earlier contract gave `ItemSubType`, among
//!   them), and keys of the fourteen that the event's kind does not carry
//!   (e.g. `Name` on a message, `Variables` outside a conversation), are
//!   ignored, whatever their value;
//! - `null` for an optional key means the key is absent;
//! - a `Type` of 14 or more gives [`Event::Unknown`]
//!   with every other key and value in the order read, unchecked, and never
//!   fails the batch.
//!
//! It is strict about what it does use: a missing or invalid `Type`, a
//! missing required key, a key of the wrong JSON type (including `null` for a
//! required key), an invalid `Date`, a key given twice and a `Variables` member
//! that is not a string (or a name given twice in it) are errors naming the
//! entry and the key, and the variable ([`ParseError`]). The body size is checked before
//! anything else ([`ParseOptions`]).
//!
//! ```
//! use eventhook::wire::{self, ParseError};
//! use eventhook::{Event, EventKind};
//!
//! let body = br#"[{"Type":7,"BotToken":"bot-1","AccountName":"Matelab Srl","Text":"asdf","Extra":[1]}]"#;
//! let events = wire::parse_push(body).unwrap();
//! assert_eq!(events[0].kind(), Some(EventKind::NlpMissed));
//!
//! let error = wire::parse_push(br#"[{"Type":7,"BotToken":"bot-1","AccountName":"Matelab Srl"}]"#).unwrap_err();
//! assert_eq!(error, ParseError::MissingKey { entry: Some(0), key: "Text" });
//! assert_eq!(error.to_string(), r#"entry 0: missing key "Text""#);
//! ```

use std::fmt;

use crate::config::IncludedVariables;
use crate::event::Event;
use encode::Selection;

mod encode;
mod parse;

pub use parse::JsonType;

/// The default most bytes a push body may have when parsed: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Appends the JSON object of `event` to `out`.
///
/// Known kinds write their fields in the contract's order, leaving absent
/// ones out. An [`Event::Unknown`] writes `Type` and then its fields in their
/// stored order (a field named `Type` among them is skipped: `Type` is its
/// `code`).
///
/// ```
/// use eventhook::wire::encode_event;
/// use eventhook::{Event, MissedText, Origin};
///
/// let mut out = Vec::new();
/// encode_event(&Event::NlpMissed(MissedText::new(Origin::new("bot-1", "Acme"), "say \"hi\"")), &mut out);
/// assert_eq!(out, br#"{"Type":7,"BotToken":"bot-1","AccountName":"Acme","Text":"say \"hi\""}"#);
/// ```
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    encode::encode_event(event, Selection::All, out);
}

/// Appends the JSON object of `event` as a webhook that includes `included`
/// sends it: its `Variables` hold only the listed names the event has a
/// value for, in the list's order, and are left out when none has one.
/// This is what the dispatcher writes for each event it queues.
///
/// ```
/// use eventhook::wire::encode_event_including;
/// use eventhook::{ChatContext, Event, EventFactory, IncludedVariables};
///
/// let chat = ChatContext::new("c-1", "WebChannel").variable("email", "ada@example.com").variable("plan", "gold");
/// let event = Event::NewUser(EventFactory::new("bot-1", "Acme").conversation(&chat));
///
/// let mut out = Vec::new();
/// encode_event_including(&event, &IncludedVariables::new(["plan", "locale"]).unwrap(), &mut out);
/// assert!(out.ends_with(br#""Variables":{"plan":"gold"}}"#));
///
/// out.clear();
/// encode_event_including(&event, &IncludedVariables::default(), &mut out);
/// assert!(!out.windows(9).any(|window| window == b"Variables"));
/// ```
pub fn encode_event_including(event: &Event, included: &IncludedVariables, out: &mut Vec<u8>) {
    encode::encode_event(event, Selection::Listed(included), out);
}

/// The JSON array body of a push carrying `events`: `[]` when there are none.
///
/// ```
/// assert_eq!(eventhook::wire::encode_push(&[]), b"[]");
/// ```
pub fn encode_push(events: &[Event]) -> Vec<u8> {
    encode::encode_push(events, Selection::All)
}

/// The JSON array body of a push carrying `events` for a webhook that
/// includes `included` (see [`encode_event_including`]).
///
/// ```
/// use eventhook::wire::encode_push_including;
/// use eventhook::IncludedVariables;
///
/// assert_eq!(encode_push_including(&[], &IncludedVariables::default()), b"[]");
/// ```
pub fn encode_push_including(events: &[Event], included: &IncludedVariables) -> Vec<u8> {
    encode::encode_push(events, Selection::Listed(included))
}

/// Parses a push body (an array of events, or one event object) with the
/// default limits ([`DEFAULT_MAX_BODY_BYTES`]).
///
/// ```
/// use eventhook::wire::parse_push;
///
/// assert!(parse_push(b"[]").unwrap().is_empty());
/// let events = parse_push(br#"{"Type":8,"BotToken":"b","AccountName":"a","ConversationId":"c"}"#).unwrap();
/// assert_eq!(events.len(), 1);
/// ```
pub fn parse_push(body: &[u8]) -> Result<Vec<Event>, ParseError> {
    parse::parse_push_with(body, &ParseOptions::default())
}

/// Parses a push body with the given options.
///
/// ```
/// use eventhook::wire::{parse_push_with, ParseError, ParseOptions};
///
/// let options = ParseOptions::new().max_body_bytes(4);
/// assert_eq!(parse_push_with(b"[ ]", &options).unwrap(), vec![]);
/// assert_eq!(parse_push_with(b"[   ]", &options), Err(ParseError::BodyTooLarge { size: 5, limit: 4 }));
/// ```
pub fn parse_push_with(body: &[u8], options: &ParseOptions) -> Result<Vec<Event>, ParseError> {
    parse::parse_push_with(body, options)
}

/// Parses one event object. Errors carry no entry index.
///
/// No size limit applies here: it is for callers that already hold one
/// event's bytes, not for bodies from the network (use [`parse_push`]).
///
/// ```
/// use eventhook::wire::{parse_event, ParseError};
/// use eventhook::EventKind;
///
/// let event = parse_event(br#"{"Type":10,"BotToken":"b","AccountName":"a","ConversationId":"c"}"#).unwrap();
/// assert_eq!(event.kind(), Some(EventKind::TakeOver));
/// assert_eq!(parse_event(b"[]"), Err(ParseError::EntryNotObject { entry: None }));
/// ```
pub fn parse_event(json: &[u8]) -> Result<Event, ParseError> {
    parse::parse_event(json)
}

/// Options for [`parse_push_with`].
///
/// ```
/// use eventhook::wire::{ParseOptions, DEFAULT_MAX_BODY_BYTES};
///
/// assert_eq!(ParseOptions::default().body_limit(), DEFAULT_MAX_BODY_BYTES);
/// assert_eq!(ParseOptions::new().max_body_bytes(64 * 1024).body_limit(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParseOptions {
    max_body_bytes: usize,
}

impl ParseOptions {
    /// The default options.
    pub fn new() -> ParseOptions {
        ParseOptions { max_body_bytes: DEFAULT_MAX_BODY_BYTES }
    }

    /// Sets the most bytes a body may have; a longer one is rejected before
    /// any parsing with [`ParseError::BodyTooLarge`].
    #[must_use]
    pub fn max_body_bytes(mut self, limit: usize) -> ParseOptions {
        self.max_body_bytes = limit;
        self
    }

    /// The most bytes a body may have.
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes
    }
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions::new()
    }
}

/// Why a push body could not be parsed: what went wrong and where.
///
/// `entry` is the index of the entry in the push's array, or `None` when the
/// body is a single object. [`entry`](ParseError::entry) and
/// [`key`](ParseError::key) give them for any variant.
///
/// ```
/// use eventhook::wire::{parse_push, ParseError};
///
/// let body = br#"[{"Type":3,"BotToken":"b","AccountName":"a","Name":"n","Key":"k","Date":"2019-07-10"}]"#;
/// let error = parse_push(body).unwrap_err();
/// assert_eq!((error.entry(), error.key()), (Some(0), Some("Date")));
/// assert_eq!(
///     error.to_string(),
///     r#"entry 0: key "Date": invalid date "2019-07-10": not an RFC 3339 date-time with an offset"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is longer than the limit; nothing was parsed.
    BodyTooLarge {
        /// The body's length in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// The body is not valid JSON (syntax, truncation, trailing data, or
    /// nesting deeper than serde_json's recursion limit).
    InvalidJson {
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1 (0 at the very end of the input).
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// The top level is neither an array nor an object.
    NotAnArray,
    /// An entry (or the body given to [`parse_event`]) is not an object.
    EntryNotObject {
        /// The entry's index.
        entry: Option<usize>,
    },
    /// An entry has no `Type`.
    MissingType {
        /// The entry's index.
        entry: Option<usize>,
    },
    /// An entry's `Type` is not a non-negative integer (e.g. `-1`, `1.5`, `"1"`, `null`).
    InvalidType {
        /// The entry's index.
        entry: Option<usize>,
        /// The value found, as JSON, shortened when long.
        found: String,
    },
    /// A key the entry's kind requires is absent.
    MissingKey {
        /// The entry's index.
        entry: Option<usize>,
        /// The key.
        key: &'static str,
    },
    /// A key the entry's kind uses has the wrong JSON type.
    WrongJsonType {
        /// The entry's index.
        entry: Option<usize>,
        /// The key.
        key: &'static str,
        /// The type the contract gives the key.
        expected: JsonType,
        /// The type found.
        found: JsonType,
    },
    /// A date key's string is not an RFC 3339 date-time with an offset.
    InvalidDate {
        /// The entry's index.
        entry: Option<usize>,
        /// The key (`Date`).
        key: &'static str,
        /// The string found.
        value: String,
    },
    /// A key appears twice in an entry.
    DuplicateKey {
        /// The entry's index.
        entry: Option<usize>,
        /// The key.
        key: String,
    },
    /// A member of `Variables` is not a string.
    InvalidVariable {
        /// The entry's index.
        entry: Option<usize>,
        /// The variable's name.
        name: String,
        /// The type found.
        found: JsonType,
    },
    /// A name appears twice in `Variables`.
    DuplicateVariable {
        /// The entry's index.
        entry: Option<usize>,
        /// The variable's name.
        name: String,
    },
}

impl ParseError {
    /// The index of the entry at fault, when the error is about one entry of an array.
    pub fn entry(&self) -> Option<usize> {
        match self {
            ParseError::BodyTooLarge { .. }
            | ParseError::InvalidUtf8
            | ParseError::InvalidJson { .. }
            | ParseError::NotAnArray => None,
            ParseError::EntryNotObject { entry }
            | ParseError::MissingType { entry }
            | ParseError::InvalidType { entry, .. }
            | ParseError::MissingKey { entry, .. }
            | ParseError::WrongJsonType { entry, .. }
            | ParseError::InvalidDate { entry, .. }
            | ParseError::DuplicateKey { entry, .. }
            | ParseError::InvalidVariable { entry, .. }
            | ParseError::DuplicateVariable { entry, .. } => *entry,
        }
    }

    /// The key at fault, when the error is about one key (`Type` for the `Type` errors).
    pub fn key(&self) -> Option<&str> {
        match self {
            ParseError::MissingType { .. } | ParseError::InvalidType { .. } => Some("Type"),
            ParseError::MissingKey { key, .. }
            | ParseError::WrongJsonType { key, .. }
            | ParseError::InvalidDate { key, .. } => Some(key),
            ParseError::DuplicateKey { key, .. } => Some(key),
            ParseError::InvalidVariable { .. } | ParseError::DuplicateVariable { .. } => Some("Variables"),
            _ => None,
        }
    }
}

/// Writes `entry N: ` for an entry of an array, nothing for a lone object.
struct EntryPrefix(Option<usize>);

impl fmt::Display for EntryPrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(entry) => write!(formatter, "entry {entry}: "),
            None => Ok(()),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BodyTooLarge { size, limit } => {
                write!(formatter, "body of {size} bytes is larger than the limit of {limit} bytes")
            }
            ParseError::InvalidUtf8 => formatter.write_str("body is not valid UTF-8"),
            ParseError::InvalidJson { line, column, message } => {
                write!(formatter, "invalid JSON at line {line}, column {column}: {message}")
            }
            ParseError::NotAnArray => formatter.write_str("body is neither a JSON array nor a JSON object"),
            ParseError::EntryNotObject { entry } => write!(formatter, "{}not a JSON object", EntryPrefix(*entry)),
            ParseError::MissingType { entry } => write!(formatter, "{}missing key \"Type\"", EntryPrefix(*entry)),
            ParseError::InvalidType { entry, found } => {
                write!(formatter, "{}key \"Type\": expected a non-negative integer, found {found}", EntryPrefix(*entry))
            }
            ParseError::MissingKey { entry, key } => {
                write!(formatter, "{}missing key \"{key}\"", EntryPrefix(*entry))
            }
            ParseError::WrongJsonType { entry, key, expected, found } => {
                write!(formatter, "{}key \"{key}\": expected {expected}, found {found}", EntryPrefix(*entry))
            }
            ParseError::InvalidDate { entry, key, value } => write!(
                formatter,
                "{}key \"{key}\": invalid date {value:?}: not an RFC 3339 date-time with an offset",
                EntryPrefix(*entry)
            ),
            ParseError::DuplicateKey { entry, key } => {
                write!(formatter, "{}duplicate key {key:?}", EntryPrefix(*entry))
            }
            ParseError::InvalidVariable { entry, name, found } => write!(
                formatter,
                "{}key \"Variables\": variable {name:?}: expected a string, found {found}",
                EntryPrefix(*entry)
            ),
            ParseError::DuplicateVariable { entry, name } => {
                write!(formatter, "{}key \"Variables\": duplicate variable {name:?}", EntryPrefix(*entry))
            }
        }
    }
}

impl std::error::Error for ParseError {}
