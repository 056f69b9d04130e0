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

/// Limits applied when parsing a push.
///
/// Placeholder of the codec's type (branch `codec`), so the receiver builds
/// before the codec lands; the codec's version replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// The most bytes a body may have (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { max_body_bytes: DEFAULT_MAX_BODY_BYTES }
    }
}

impl ParseOptions {
    /// Sets the most bytes a body may have.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

/// Parses a push body with `options`.
pub fn parse_push_with(body: &[u8], options: &ParseOptions) -> Result<Vec<Event>, ParseError> {
    let _ = (body, options);
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
