//! How values given by users or peers are shown inside error messages.

/// `text` cut to a length fit for an error message (40 characters, then `...`).
pub(crate) fn shortened(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}
