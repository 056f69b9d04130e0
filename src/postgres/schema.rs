//! Where the store's tables live: a checked schema name.

use std::fmt;

use crate::error_text::shortened;

/// The PostgreSQL schema that holds the store's tables (default `eventhook`).
///
/// The name is checked when built: lowercase ASCII letters, digits and `_`,
/// starting with a letter or `_`, at most [`MAX_NAME_BYTES`](Self::MAX_NAME_BYTES),
/// not starting with `pg_` (reserved by PostgreSQL). It is quoted wherever
/// it goes into SQL all the same.
///
/// ```
/// use eventhook::postgres::PostgresSchema;
///
/// assert_eq!(PostgresSchema::default().name(), "eventhook");
/// assert_eq!(PostgresSchema::new("tenant_7")?.name(), "tenant_7");
/// assert!(PostgresSchema::new("Robert'); DROP TABLE students;--").is_err());
/// # Ok::<(), eventhook::postgres::SchemaNameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PostgresSchema {
    name: String,
}

impl PostgresSchema {
    /// The default schema name.
    pub const DEFAULT_NAME: &'static str = "eventhook";
    /// The longest name: PostgreSQL's identifiers hold 63 bytes, and the
    /// notification channels named after the schema (`<schema>.webhooks`)
    /// need room for their suffix.
    pub const MAX_NAME_BYTES: usize = 48;

    /// Checks `name` (see the type's docs for the rules).
    pub fn new(name: impl Into<String>) -> Result<PostgresSchema, SchemaNameError> {
        let name: String = name.into();
        let invalid = |reason| SchemaNameError { name: shortened(&name), reason };
        let mut bytes = name.bytes();
        match bytes.next() {
            None => return Err(invalid("it is empty")),
            Some(first) if !(first.is_ascii_lowercase() || first == b'_') => {
                return Err(invalid("it does not start with a lowercase ASCII letter or `_`"))
            }
            Some(_) => {}
        }
        if !bytes.all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_') {
            return Err(invalid("it holds a character other than lowercase ASCII letters, digits and `_`"));
        }
        if name.len() > Self::MAX_NAME_BYTES {
            return Err(invalid("it is longer than 48 bytes"));
        }
        if name.starts_with("pg_") {
            return Err(invalid("names starting with `pg_` are reserved by PostgreSQL"));
        }
        Ok(PostgresSchema { name })
    }

    /// The schema's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel on which the database announces configured, changed,
    /// disabled and removed webhooks (`LISTEN` to it, quoted): `<schema>.webhooks`.
    /// Each payload is a JSON object with `op` (`insert`, `update` or
    /// `delete`), `bot_token` and `generation`.
    pub fn webhooks_channel(&self) -> String {
        format!("{}.webhooks", self.name)
    }

    /// The name as a quoted SQL identifier. The checked characters need no
    /// escaping; quoting keeps reserved words (`user`, `order`) usable.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.name)
    }

    /// The key of an advisory lock on `what` in this schema: FNV-1a (64 bits)
    /// of `eventhook.<purpose>:<schema>` and, if given, `:<what>`, so that
    /// every process, whatever its crate version, computes the same key, and
    /// schemas lock independently.
    pub(crate) fn advisory_lock_key(&self, purpose: &str, what: Option<&str>) -> i64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let what = what.map(|what| [b":".as_slice(), what.as_bytes()]);
        let hash = [b"eventhook.".as_slice(), purpose.as_bytes(), b":", self.name.as_bytes()]
            .into_iter()
            .chain(what.into_iter().flatten())
            .flatten()
            .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

impl Default for PostgresSchema {
    fn default() -> PostgresSchema {
        PostgresSchema { name: Self::DEFAULT_NAME.to_owned() }
    }
}

impl fmt::Display for PostgresSchema {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.name)
    }
}

/// A schema name that [`PostgresSchema::new`] refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PostgreSQL schema name {name:?}: {reason}")]
pub struct SchemaNameError {
    /// The refused name (its first 40 characters).
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers_and_quotes_them() {
        for name in ["eventhook", "_private", "tenant_7", "user", &"a".repeat(PostgresSchema::MAX_NAME_BYTES)] {
            let schema = PostgresSchema::new(name).unwrap();
            assert_eq!(schema.quoted(), format!("\"{name}\""));
        }
        assert_eq!(PostgresSchema::default().webhooks_channel(), "eventhook.webhooks");
    }

    #[test]
    fn refuses_names_that_are_not_plain_identifiers_naming_them() {
        for (name, reason) in [
            ("", "empty"),
            ("7tenants", "start"),
            ("Eventhook", "start"),
            ("event-hook", "other than"),
            ("event\"hook", "other than"),
            ("évent", "start"),
            ("pg_catalog", "reserved"),
        ] {
            let error = PostgresSchema::new(name).unwrap_err();
            assert_eq!(error.name, name);
            assert!(error.reason.contains(reason), "{name:?}: {}", error.reason);
            assert!(error.to_string().contains(&format!("{name:?}")), "{error}");
        }
        let long = "a".repeat(PostgresSchema::MAX_NAME_BYTES + 1);
        assert!(PostgresSchema::new(long).unwrap_err().reason.contains("longer than 48 bytes"));
    }
}
