//! Reading pushes straight into typed events with serde's `Deserializer` API:
//! no intermediate `serde_json::Value` for known types, keys matched without
//! allocating, string values borrowed from the body until the event is built.
//!
//! Errors that are about the content (a missing key, a wrong type) are kept in
//! a slot beside the deserializer, which is then stopped with a placeholder
//! error; anything else serde_json reports is a JSON syntax error.
//!
//! Pushes as senders write them (contract keys only, string or `null` values,
//! a known `Type`) are first read by the byte scanner in [`scan`], without
//! serde's layers; whatever it does not take, errors included, is read again
//! by the serde reader here, so every error is still reported by this reader.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::event::{
    CatalogChange, ConversationEvent, Event, EventDate, EventKind, Message, MissedText, Origin, UnknownEvent, Variables,
};

use super::{ParseError, ParseOptions};

mod scan;

/// The JSON type of a value, as named in [`ParseError`] messages.
///
/// ```
/// use eventhook::wire::JsonType;
///
/// assert_eq!(JsonType::of(&serde_json::json!([1])), JsonType::Array);
/// assert_eq!(JsonType::Number.to_string(), "a number");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonType {
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonType {
    /// The type of `value`.
    pub fn of(value: &Value) -> JsonType {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            JsonType::Null => "null",
            JsonType::Boolean => "a boolean",
            JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
        })
    }
}

/// The 12 string keys of the contract besides `Type` and `Variables`, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Field {
    ItemType,
    ItemSubType,
    Data,
    Date,
    BotToken,
    AccountName,
    ConversationId,
    UserName,
    Channel,
    Text,
    Name,
    Key,
}

const FIELD_COUNT: usize = 12;

impl Field {
    const fn name(self) -> &'static str {
        match self {
            Field::ItemType => "ItemType",
            Field::ItemSubType => "ItemSubType",
            Field::Data => "Data",
            Field::Date => "Date",
            Field::BotToken => "BotToken",
            Field::AccountName => "AccountName",
            Field::ConversationId => "ConversationId",
            Field::UserName => "UserName",
            Field::Channel => "Channel",
            Field::Text => "Text",
            Field::Name => "Name",
            Field::Key => "Key",
        }
    }

    const ALL: [Field; FIELD_COUNT] = [
        Field::ItemType,
        Field::ItemSubType,
        Field::Data,
        Field::Date,
        Field::BotToken,
        Field::AccountName,
        Field::ConversationId,
        Field::UserName,
        Field::Channel,
        Field::Text,
        Field::Name,
        Field::Key,
    ];
}

/// An object key, classified without allocating. `Copy` and one byte wide on
/// purpose: it is produced for every key of every entry.
#[derive(Clone, Copy)]
enum KeyClass {
    Type,
    Known(Field),
    /// `Variables`, the one object-valued key of the contract.
    Variables,
    /// A key outside the contract; its name is in [`KeySeed::other`].
    Other,
}

#[inline]
fn classify(bytes: &[u8]) -> KeyClass {
    // Length, first and last byte leave one candidate: a single comparison
    // per key instead of up to thirteen.
    let (candidate, class) = match (bytes.len(), bytes.first(), bytes.last()) {
        (3, Some(b'K'), _) => ("Key", KeyClass::Known(Field::Key)),
        (4, Some(b'T'), Some(b'e')) => ("Type", KeyClass::Type),
        (4, Some(b'T'), Some(b't')) => ("Text", KeyClass::Known(Field::Text)),
        (4, Some(b'D'), Some(b'a')) => ("Data", KeyClass::Known(Field::Data)),
        (4, Some(b'D'), Some(b'e')) => ("Date", KeyClass::Known(Field::Date)),
        (4, Some(b'N'), _) => ("Name", KeyClass::Known(Field::Name)),
        (7, Some(b'C'), _) => ("Channel", KeyClass::Known(Field::Channel)),
        (8, Some(b'I'), _) => ("ItemType", KeyClass::Known(Field::ItemType)),
        (8, Some(b'B'), _) => ("BotToken", KeyClass::Known(Field::BotToken)),
        (8, Some(b'U'), _) => ("UserName", KeyClass::Known(Field::UserName)),
        (9, Some(b'V'), _) => ("Variables", KeyClass::Variables),
        (11, Some(b'A'), _) => ("AccountName", KeyClass::Known(Field::AccountName)),
        (11, Some(b'I'), _) => ("ItemSubType", KeyClass::Known(Field::ItemSubType)),
        (14, Some(b'C'), _) => ("ConversationId", KeyClass::Known(Field::ConversationId)),
        _ => return KeyClass::Other,
    };
    // A byte loop rather than `==`: for keys this short, a call to `memcmp` costs more.
    if bytes.len() == candidate.len() && bytes.iter().zip(candidate.as_bytes()).all(|(left, right)| left == right) {
        class
    } else {
        KeyClass::Other
    }
}

/// Reads a key; the name of a key outside the contract goes to `other`, so
/// that the common case moves no string around.
struct KeySeed<'slot, 'de> {
    other: &'slot mut Option<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, 'de> {
    type Value = KeyClass;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, 'de> {
    type Value = KeyClass;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        let class = classify(name.as_bytes());
        if let KeyClass::Other = class {
            *self.other = Some(Cow::Borrowed(name));
        }
        Ok(class)
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        let class = classify(name.as_bytes());
        if let KeyClass::Other = class {
            // Only keys with escapes get here; they are rare, so owning them is fine.
            *self.other = Some(Cow::Owned(name.to_owned()));
        }
        Ok(class)
    }
}

/// A value read before the entry's `Type` is known: strings are kept borrowed
/// when they can be, anything else as a `Value` (needed for unknown types and
/// for error messages).
enum FieldValue<'de> {
    String(Cow<'de, str>),
    Null,
    Other(Value),
}

impl FieldValue<'_> {
    fn json_type(&self) -> JsonType {
        match self {
            FieldValue::String(_) => JsonType::String,
            FieldValue::Null => JsonType::Null,
            FieldValue::Other(value) => JsonType::of(value),
        }
    }

    fn into_value(self) -> Value {
        match self {
            FieldValue::String(text) => Value::String(text.into_owned()),
            FieldValue::Null => Value::Null,
            FieldValue::Other(value) => value,
        }
    }
}

struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = FieldValue<'de>;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = FieldValue<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    #[inline]
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(FieldValue::String(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(FieldValue::String(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(FieldValue::String(Cow::Owned(text)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(FieldValue::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(FieldValue::Other(Value::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(FieldValue::Other(Value::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(FieldValue::Other(Value::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(FieldValue::Other(Value::from(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(FieldValue::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map)).map(FieldValue::Other)
    }
}

/// The value of `Variables`, read before the entry's `Type` is known: an
/// object's members in the order read (a `Value` would sort them), or
/// whatever else was found, kept for unknown types and error messages.
enum VariablesValue<'de> {
    Object(Vec<(Cow<'de, str>, FieldValue<'de>)>),
    Other(FieldValue<'de>),
}

impl VariablesValue<'_> {
    /// As an unknown event keeps it (a name given twice keeps its last value).
    fn into_value(self) -> Value {
        match self {
            VariablesValue::Object(members) => Value::Object(
                members.into_iter().map(|(name, value)| (name.into_owned(), value.into_value())).collect(),
            ),
            VariablesValue::Other(value) => value.into_value(),
        }
    }
}

struct VariablesSeed;

impl<'de> DeserializeSeed<'de> for VariablesSeed {
    type Value = VariablesValue<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(VariablesVisitor)
    }
}

struct VariablesVisitor;

/// Everything but an object is kept as [`FieldVisitor`] reads it.
macro_rules! forward_to_field_visitor {
    ($($visit:ident($($argument:ident: $type:ty),*);)*) => {
        $(fn $visit<E: de::Error>(self, $($argument: $type),*) -> Result<Self::Value, E> {
            FieldVisitor.$visit($($argument),*).map(VariablesValue::Other)
        })*
    };
}

impl<'de> Visitor<'de> for VariablesVisitor {
    type Value = VariablesValue<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    forward_to_field_visitor! {
        visit_borrowed_str(text: &'de str);
        visit_str(text: &str);
        visit_string(text: String);
        visit_unit();
        visit_bool(value: bool);
        visit_i64(value: i64);
        visit_u64(value: u64);
        visit_f64(value: f64);
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        FieldVisitor.visit_seq(seq).map(VariablesValue::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(name) = map.next_key_seed(NameSeed)? {
            members.push((name, map.next_value_seed(FieldSeed)?));
        }
        Ok(VariablesValue::Object(members))
    }
}

/// An object member's name, borrowed from the body when it has no escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_owned()))
    }
}

/// `Type`: its code, or the value found when it is not a non-negative integer.
struct TypeSeed;

impl<'de> DeserializeSeed<'de> for TypeSeed {
    type Value = Result<u64, FieldValue<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(TypeVisitor)
    }
}

struct TypeVisitor;

impl<'de> Visitor<'de> for TypeVisitor {
    type Value = Result<u64, FieldValue<'de>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Ok(value))
    }

    // Anything else is kept for the error message.
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        FieldVisitor.visit_i64(value).map(Err)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        FieldVisitor.visit_f64(value).map(Err)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        FieldVisitor.visit_bool(value).map(Err)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        FieldVisitor.visit_str(text).map(Err)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        FieldVisitor.visit_unit().map(Err)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        FieldVisitor.visit_seq(seq).map(Err)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        // With serde_json's `arbitrary_precision` feature (which another crate
        // in a build may turn on) numbers arrive as maps: `Value` decodes them.
        Ok(match FieldVisitor.visit_map(map)? {
            FieldValue::Other(Value::Number(number)) => match number.as_u64() {
                Some(code) => Ok(code),
                None => Err(FieldValue::Other(Value::Number(number))),
            },
            other => Err(other),
        })
    }
}

/// Records `error` in the slot and stops the deserializer; the slot's error
/// is the one reported.
fn fail<T, E: de::Error>(slot: &mut Option<ParseError>, error: ParseError) -> Result<T, E> {
    *slot = Some(error);
    Err(E::custom("content error"))
}

/// Visitors that accept only some JSON types, reporting the others through the slot.
trait Reject<'de>: Visitor<'de> + Sized {
    fn reject<E: de::Error>(self) -> Result<Self::Value, E>;
}

/// Implements every scalar and the given container visits as `Reject::reject`.
macro_rules! reject_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            self.reject()
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            self.reject()
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            self.reject()
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            self.reject()
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            self.reject()
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.reject()
        }
    };
}

/// How many preceding entries' origins a new entry may share strings with.
const RECENT_ORIGINS: usize = 4;

/// The top level of a push: an array of entries, or one entry.
struct PushVisitor<'slot> {
    failure: &'slot mut Option<ParseError>,
    /// A guess at the number of events from the body's size, to allocate once.
    expected_events: usize,
}

impl<'de> Reject<'de> for PushVisitor<'_> {
    fn reject<E: de::Error>(self) -> Result<Self::Value, E> {
        fail(self.failure, ParseError::NotAnArray)
    }
}

impl<'de> Visitor<'de> for PushVisitor<'_> {
    type Value = Vec<Event>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON array of event objects, or one event object")
    }

    reject_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(self.expected_events);
        let mut entry = 0;
        while seq
            .next_element_seed(EntrySeed { entry: Some(entry), failure: &mut *self.failure, events: &mut events })?
            .is_some()
        {
            entry += 1;
        }
        Ok(events)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(1);
        EntryVisitor { entry: None, failure: self.failure, events: &mut events }.visit_map(map)?;
        Ok(events)
    }
}

/// One entry: `entry` is its index in the array, `None` for a lone object.
/// The event is pushed onto `events` rather than returned, which saves
/// moving it through serde's layers of `Result` and `Option`.
struct EntrySeed<'slot> {
    entry: Option<usize>,
    failure: &'slot mut Option<ParseError>,
    events: &'slot mut Vec<Event>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // `deserialize_any`, not `deserialize_map`, so that a non-object reaches the visitor.
        deserializer.deserialize_any(EntryVisitor { entry: self.entry, failure: self.failure, events: self.events })
    }
}

struct EntryVisitor<'slot> {
    entry: Option<usize>,
    failure: &'slot mut Option<ParseError>,
    events: &'slot mut Vec<Event>,
}

impl<'de> Reject<'de> for EntryVisitor<'_> {
    fn reject<E: de::Error>(self) -> Result<Self::Value, E> {
        let entry = self.entry;
        fail(self.failure, ParseError::EntryNotObject { entry })
    }
}

/// A key outside the contract, kept in case the entry's type is unknown.
struct Extra<'de> {
    position: usize,
    name: Cow<'de, str>,
    value: Value,
}

impl<'de> Visitor<'de> for EntryVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an event object")
    }

    reject_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.reject()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let entry = self.entry;
        let mut code: Option<u64> = None;
        let mut fields = EntryFields {
            entry,
            values: Default::default(),
            positions: [0; FIELD_COUNT],
            variables: None,
            variables_position: 0,
        };
        let mut extras: Vec<Extra<'de>> = Vec::new();
        // Names of the keys outside the contract, for the duplicate check: a
        // set, not a scan of `extras`, so that an object with many keys cannot
        // make parsing quadratic. Created on the first such key only.
        let mut extra_names: Option<HashSet<Cow<'de, str>>> = None;
        let mut position = 0;
        let mut other_name = None;
        while let Some(key) = map.next_key_seed(KeySeed { other: &mut other_name })? {
            match key {
                KeyClass::Type => {
                    if code.is_some() {
                        return fail(self.failure, ParseError::DuplicateKey { entry, key: "Type".to_owned() });
                    }
                    match map.next_value_seed(TypeSeed)? {
                        Ok(type_code) => code = Some(type_code),
                        Err(other) => {
                            let found = describe(other);
                            return fail(self.failure, ParseError::InvalidType { entry, found });
                        }
                    }
                }
                KeyClass::Known(field) => {
                    let slot = &mut fields.values[field as usize];
                    if slot.is_some() {
                        let key = field.name().to_owned();
                        return fail(self.failure, ParseError::DuplicateKey { entry, key });
                    }
                    *slot = Some(map.next_value_seed(FieldSeed)?);
                    fields.positions[field as usize] = position;
                }
                KeyClass::Variables => {
                    if fields.variables.is_some() {
                        return fail(self.failure, ParseError::DuplicateKey { entry, key: VARIABLES.to_owned() });
                    }
                    fields.variables = Some(map.next_value_seed(VariablesSeed)?);
                    fields.variables_position = position;
                }
                KeyClass::Other => {
                    let name = other_name.take().unwrap_or_default();
                    if !extra_names.get_or_insert_with(HashSet::new).insert(name.clone()) {
                        let key = name.into_owned();
                        return fail(self.failure, ParseError::DuplicateKey { entry, key });
                    }
                    // A known type ignores keys outside the contract, so skip
                    // their values; before `Type` is seen, keep them in case
                    // the type turns out to be unknown.
                    if code.is_some_and(|code| code < KNOWN_CODES) {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        extras.push(Extra { position, name, value: map.next_value::<Value>()? });
                    }
                }
            }
            position += 1;
        }
        let Some(code) = code else {
            return fail(self.failure, ParseError::MissingType { entry });
        };
        // Entries of a push share their bot (or a few): reuse recent origins' strings.
        let recent = &self.events[self.events.len().saturating_sub(RECENT_ORIGINS)..];
        match fields.build(code, extras, recent) {
            Ok(event) => {
                self.events.push(event);
                Ok(())
            }
            Err(error) => fail(self.failure, error),
        }
    }
}

/// `Type` codes 0-13 are the known kinds.
const KNOWN_CODES: u64 = 14;

/// A short JSON rendering of an invalid `Type` value for the error message.
fn describe(value: FieldValue<'_>) -> String {
    crate::error_text::shortened(&value.into_value().to_string())
}

/// `text` as a shared string: the string `pick` finds in one of the `recent`
/// entries' origins when it is the same text, so a push of one bot's events
/// allocates its origin once.
#[inline]
fn share(text: &str, recent: &[Event], pick: impl Fn(&Origin) -> &Arc<str>) -> Arc<str> {
    let known = recent.iter().rev().filter_map(Event::origin).map(pick).find(|known| ***known == *text);
    known.map_or_else(|| Arc::from(text), Arc::clone)
}

/// The key of the conversation variables.
const VARIABLES: &str = "Variables";

/// The contract's keys of one entry, buffered until `Type` is known.
struct EntryFields<'de> {
    entry: Option<usize>,
    values: [Option<FieldValue<'de>>; FIELD_COUNT],
    /// Where each key came in the object, to keep the read order for unknown types.
    positions: [usize; FIELD_COUNT],
    variables: Option<VariablesValue<'de>>,
    variables_position: usize,
}

impl<'de> EntryFields<'de> {
    #[inline]
    fn take(&mut self, field: Field) -> Option<FieldValue<'de>> {
        self.values[field as usize].take()
    }

    #[inline]
    fn wrong_type(&self, field: Field, value: &FieldValue<'_>) -> ParseError {
        ParseError::WrongJsonType {
            entry: self.entry,
            key: field.name(),
            expected: JsonType::String,
            found: value.json_type(),
        }
    }

    /// A required key: absent is an error; `null` is a wrong type, not an absence.
    #[inline]
    fn required(&mut self, field: Field) -> Result<String, ParseError> {
        match self.take(field) {
            Some(FieldValue::String(text)) => Ok(text.into_owned()),
            Some(other) => Err(self.wrong_type(field, &other)),
            None => Err(ParseError::MissingKey { entry: self.entry, key: field.name() }),
        }
    }

    /// An optional key: absent and `null` both give `None`.
    #[inline]
    fn optional(&mut self, field: Field) -> Result<Option<String>, ParseError> {
        match self.take(field) {
            Some(FieldValue::String(text)) => Ok(Some(text.into_owned())),
            None | Some(FieldValue::Null) => Ok(None),
            Some(other) => Err(self.wrong_type(field, &other)),
        }
    }

    #[inline]
    fn date(&self, text: &str) -> Result<EventDate, ParseError> {
        EventDate::parse(text).map_err(|_| ParseError::InvalidDate {
            entry: self.entry,
            key: Field::Date.name(),
            value: text.to_owned(),
        })
    }

    #[inline]
    fn required_date(&mut self) -> Result<EventDate, ParseError> {
        match self.take(Field::Date) {
            Some(FieldValue::String(text)) => self.date(&text),
            Some(other) => Err(self.wrong_type(Field::Date, &other)),
            None => Err(ParseError::MissingKey { entry: self.entry, key: Field::Date.name() }),
        }
    }

    #[inline]
    fn optional_date(&mut self) -> Result<Option<EventDate>, ParseError> {
        match self.take(Field::Date) {
            Some(FieldValue::String(text)) => self.date(&text).map(Some),
            None | Some(FieldValue::Null) => Ok(None),
            Some(other) => Err(self.wrong_type(Field::Date, &other)),
        }
    }

    /// `Variables`: absent and `null` give none; every member must be a
    /// string, and no name may come twice.
    fn variables(&mut self) -> Result<Variables, ParseError> {
        let entry = self.entry;
        let members = match self.variables.take() {
            None | Some(VariablesValue::Other(FieldValue::Null)) => return Ok(Variables::new()),
            Some(VariablesValue::Other(other)) => {
                let (expected, found) = (JsonType::Object, other.json_type());
                return Err(ParseError::WrongJsonType { entry, key: VARIABLES, expected, found });
            }
            Some(VariablesValue::Object(members)) => members,
        };
        // A set, so that an object of many names cannot make this quadratic.
        let mut names = HashSet::with_capacity(members.len());
        let mut variables = Vec::with_capacity(members.len());
        for (name, value) in members {
            let FieldValue::String(value) = value else {
                let found = value.json_type();
                return Err(ParseError::InvalidVariable { entry, name: name.into_owned(), found });
            };
            if !names.insert(name.clone()) {
                return Err(ParseError::DuplicateVariable { entry, name: name.into_owned() });
            }
            variables.push((name.into_owned(), value.into_owned()));
        }
        Ok(Variables::from_distinct(variables))
    }

    /// `BotToken` and `AccountName`, sharing the strings of `recent` entries where equal.
    #[inline]
    fn origin(&mut self, recent: &[Event]) -> Result<Origin, ParseError> {
        let bot_token = self.shared(Field::BotToken, recent, |origin| &origin.bot_token)?;
        let account_name = self.shared(Field::AccountName, recent, |origin| &origin.account_name)?;
        Ok(Origin { bot_token, account_name })
    }

    /// A required key as a shared string: a recent entry's string when the
    /// text is the same, so a push of one bot's events allocates its origin once.
    #[inline]
    fn shared(
        &mut self,
        field: Field,
        recent: &[Event],
        pick: impl Fn(&Origin) -> &Arc<str>,
    ) -> Result<Arc<str>, ParseError> {
        match self.take(field) {
            Some(FieldValue::String(text)) => Ok(share(&text, recent, pick)),
            Some(other) => Err(self.wrong_type(field, &other)),
            None => Err(ParseError::MissingKey { entry: self.entry, key: field.name() }),
        }
    }

    // Keys are checked in wire order so the first error reported is stable.
    fn message(&mut self, recent: &[Event]) -> Result<Message, ParseError> {
        let item_type = self.optional(Field::ItemType)?;
        let item_sub_type = self.optional(Field::ItemSubType)?;
        let data = self.required(Field::Data)?;
        let date = self.required_date()?;
        let origin = self.origin(recent)?;
        let conversation_id = self.required(Field::ConversationId)?;
        let user_name = self.optional(Field::UserName)?;
        let channel = self.required(Field::Channel)?;
        let variables = self.variables()?;
        Ok(Message { origin, item_type, item_sub_type, data, date, conversation_id, user_name, channel, variables })
    }

    fn catalog_change(&mut self, recent: &[Event]) -> Result<CatalogChange, ParseError> {
        let date = self.optional_date()?;
        let origin = self.origin(recent)?;
        let name = self.required(Field::Name)?;
        let key = self.required(Field::Key)?;
        Ok(CatalogChange { origin, date, name, key })
    }

    fn missed_text(&mut self, recent: &[Event]) -> Result<MissedText, ParseError> {
        let date = self.optional_date()?;
        let origin = self.origin(recent)?;
        let conversation_id = self.optional(Field::ConversationId)?;
        let user_name = self.optional(Field::UserName)?;
        let channel = self.optional(Field::Channel)?;
        let text = self.required(Field::Text)?;
        // Variables belong to a conversation; outside one the key is ignored.
        let variables = if conversation_id.is_some() { self.variables()? } else { Variables::new() };
        Ok(MissedText { origin, date, conversation_id, user_name, channel, text, variables })
    }

    fn conversation_event(&mut self, recent: &[Event]) -> Result<ConversationEvent, ParseError> {
        let data = self.optional(Field::Data)?;
        let date = self.optional_date()?;
        let origin = self.origin(recent)?;
        let conversation_id = self.required(Field::ConversationId)?;
        let user_name = self.optional(Field::UserName)?;
        let channel = self.optional(Field::Channel)?;
        let variables = self.variables()?;
        Ok(ConversationEvent { origin, data, date, conversation_id, user_name, channel, variables })
    }

    /// Every key but `Type`, in the order read, values unchecked.
    fn unknown(&mut self, code: u64, extras: Vec<Extra<'_>>) -> UnknownEvent {
        let mut fields: Vec<(usize, String, Value)> = Field::ALL
            .into_iter()
            .filter_map(|field| {
                let position = self.positions[field as usize];
                self.take(field).map(|value| (position, field.name().to_owned(), value.into_value()))
            })
            .collect();
        if let Some(variables) = self.variables.take() {
            fields.push((self.variables_position, VARIABLES.to_owned(), variables.into_value()));
        }
        fields.extend(extras.into_iter().map(|extra| (extra.position, extra.name.into_owned(), extra.value)));
        fields.sort_unstable_by_key(|(position, _, _)| *position);
        UnknownEvent { code, fields: fields.into_iter().map(|(_, name, value)| (name, value)).collect() }
    }

    fn build(&mut self, code: u64, extras: Vec<Extra<'_>>, recent: &[Event]) -> Result<Event, ParseError> {
        match EventKind::from_code(code) {
            Some(kind) => known_event(kind, self, recent),
            None => Ok(Event::Unknown(self.unknown(code, extras))),
        }
    }
}

impl PayloadFields for EntryFields<'_> {
    type Error = ParseError;

    fn message(&mut self, recent: &[Event]) -> Result<Message, ParseError> {
        EntryFields::message(self, recent)
    }

    fn catalog_change(&mut self, recent: &[Event]) -> Result<CatalogChange, ParseError> {
        EntryFields::catalog_change(self, recent)
    }

    fn missed_text(&mut self, recent: &[Event]) -> Result<MissedText, ParseError> {
        EntryFields::missed_text(self, recent)
    }

    fn conversation_event(&mut self, recent: &[Event]) -> Result<ConversationEvent, ParseError> {
        EntryFields::conversation_event(self, recent)
    }
}

/// An entry's keys, as each reader holds them: one method per payload type.
trait PayloadFields {
    /// How a reader fails: a [`ParseError`], or nothing for the fast path,
    /// which then leaves the push to the full reader.
    type Error;
    fn message(&mut self, recent: &[Event]) -> Result<Message, Self::Error>;
    fn catalog_change(&mut self, recent: &[Event]) -> Result<CatalogChange, Self::Error>;
    fn missed_text(&mut self, recent: &[Event]) -> Result<MissedText, Self::Error>;
    fn conversation_event(&mut self, recent: &[Event]) -> Result<ConversationEvent, Self::Error>;
}

/// The event of `kind`, built from the payload type that kind carries: the
/// one place both readers map `Type` codes to `Event` variants.
fn known_event<F: PayloadFields>(kind: EventKind, fields: &mut F, recent: &[Event]) -> Result<Event, F::Error> {
    Ok(match kind {
        EventKind::BotMessage => Event::BotMessage(fields.message(recent)?),
        EventKind::UserMessage => Event::UserMessage(fields.message(recent)?),
        EventKind::ConversationError => Event::ConversationError(fields.conversation_event(recent)?),
        EventKind::IntentUpdated => Event::IntentUpdated(fields.catalog_change(recent)?),
        EventKind::IntentDeleted => Event::IntentDeleted(fields.catalog_change(recent)?),
        EventKind::EntityUpdated => Event::EntityUpdated(fields.catalog_change(recent)?),
        EventKind::EntityDeleted => Event::EntityDeleted(fields.catalog_change(recent)?),
        EventKind::NlpMissed => Event::NlpMissed(fields.missed_text(recent)?),
        EventKind::NewUser => Event::NewUser(fields.conversation_event(recent)?),
        EventKind::ReturningUser => Event::ReturningUser(fields.conversation_event(recent)?),
        EventKind::TakeOver => Event::TakeOver(fields.conversation_event(recent)?),
        EventKind::HandOver => Event::HandOver(fields.conversation_event(recent)?),
        EventKind::Fallback => Event::Fallback(fields.conversation_event(recent)?),
        EventKind::WrongAnswer => Event::WrongAnswer(fields.conversation_event(recent)?),
    })
}

/// A serde_json error as [`ParseError::InvalidJson`], without the position
/// serde_json appends to its message (it is in the fields already).
fn invalid_json(error: &serde_json::Error) -> ParseError {
    let (line, column) = (error.line(), error.column());
    let mut message = error.to_string();
    let position = format!(" at line {line} column {column}");
    if message.ends_with(&position) {
        message.truncate(message.len() - position.len());
    }
    ParseError::InvalidJson { line, column, message }
}

/// Runs `visit` on a deserializer over `text` and checks nothing follows.
fn run<T>(
    text: &str,
    visit: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
        &mut Option<ParseError>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, ParseError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut failure = None;
    let result = visit(&mut deserializer, &mut failure).and_then(|value| deserializer.end().map(|()| value));
    result.map_err(|error| failure.unwrap_or_else(|| invalid_json(&error)))
}

/// Checking UTF-8 up front gives a clear error and lets values borrow `&str`.
fn utf8(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|_| ParseError::InvalidUtf8)
}

/// See [`crate::wire::parse_push_with`].
pub(crate) fn parse_push_with(body: &[u8], options: &ParseOptions) -> Result<Vec<Event>, ParseError> {
    let limit = options.body_limit();
    if body.len() > limit {
        return Err(ParseError::BodyTooLarge { size: body.len(), limit });
    }
    let text = utf8(body)?;
    // A realistic entry takes 200 bytes or more; the cap bounds the memory an
    // unusual body of small entries can make us reserve up front.
    let expected_events = (body.len() / 200).min(1024);
    // The common case first; anything it does not take (including every
    // error) is read again by the full reader, which names what is wrong.
    match scan::push(text, expected_events) {
        Some(events) => Ok(events),
        None => parse_push_slow(text, expected_events),
    }
}

/// The full reader of a push: any entry, any error.
fn parse_push_slow(text: &str, expected_events: usize) -> Result<Vec<Event>, ParseError> {
    run(text, |deserializer, failure| deserializer.deserialize_any(PushVisitor { failure, expected_events }))
}

/// See [`crate::wire::parse_event`].
pub(crate) fn parse_event(json: &[u8]) -> Result<Event, ParseError> {
    let text = utf8(json)?;
    match scan::event(text) {
        Some(event) => Ok(event),
        None => parse_event_slow(text),
    }
}

/// The full reader of one event.
fn parse_event_slow(text: &str) -> Result<Event, ParseError> {
    let mut events = Vec::with_capacity(1);
    run(text, |deserializer, failure| {
        EntrySeed { entry: None, failure, events: &mut events }.deserialize(deserializer)
    })?;
    // A successful run has pushed exactly one event.
    events.pop().ok_or(ParseError::EntryNotObject { entry: None })
}
