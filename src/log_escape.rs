//! Text that reaches a `tracing` record, escaped.
//!
//! Bot tokens, account names and URLs come from the bot engine's settings,
//! and error messages from transports. The settings refuse control
//! characters and line breaks where they are built, but allow bidirectional
//! controls (names may need them), and transports' messages are free text:
//! a CR or LF in one would let it forge lines in a text log, a bidi control
//! would let it hide text. Every such field is recorded through [`Escaped`].

use std::fmt::{self, Write};

/// Displays `T` with control characters, Unicode line and paragraph
/// separators, bidirectional controls and backslashes written as Rust
/// escapes (`\r`, `\n`, `\u{2028}`, `\\`), so that a record stays one line
/// and reads back unambiguously.
pub(crate) struct Escaped<T>(pub(crate) T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(formatter), "{}", self.0)
    }
}

/// Whether `c` is written as an escape.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\\' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| needs_escape(*c)) {
            self.0.write_str(&rest[..at])?;
            write!(self.0, "{}", c.escape_debug())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_separators_and_backslashes_are_escaped() {
        let shown = Escaped("bot\r\nlevel=ERROR forged\u{2028}\u{202e}\\\u{1b}[31m\u{85}é😀").to_string();
        assert_eq!(shown, "bot\\r\\nlevel=ERROR forged\\u{2028}\\u{202e}\\\\\\u{1b}[31m\\u{85}é😀");
        assert_eq!(Escaped("plain-token").to_string(), "plain-token");
    }
}
