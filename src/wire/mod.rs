//! The wire codec: events to and from the platform's JSON, byte for byte.

use crate::event::Event;

/// The default most bytes a push body may have when parsed: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Appends the JSON object of `event` to `out`.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    let _ = (event, out);
    todo!("wire codec")
}

/// The JSON array body of a push carrying `events`.
pub fn encode_push(events: &[Event]) -> Vec<u8> {
    let _ = events;
    todo!("wire codec")
}

/// Parses a push body (an array of events, or one event object) with the default limits.
pub fn parse_push(body: &[u8]) -> Result<Vec<Event>, ParseError> {
    let _ = body;
    todo!("wire codec")
}

/// Parses one event object.
pub fn parse_event(json: &[u8]) -> Result<Event, ParseError> {
    let _ = json;
    todo!("wire codec")
}

/// Why a push body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid push")]
pub struct ParseError {
    _private: (),
}
