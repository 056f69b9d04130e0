//! Instants as the database keeps them: `timestamptz`, from the dispatcher's
//! clock's wall time, and the rules' durations between them.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `time` plus `duration`, or the latest time chrono holds.
pub(crate) fn later(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|duration| time.checked_add_signed(duration))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How long after `earlier` `later` is; zero when it is not later.
pub(crate) fn since(later: DateTime<Utc>, earlier: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or_default()
}

/// A duration in whole milliseconds of a `bigint` column.
pub(crate) fn milliseconds(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_and_since_are_inverse_and_saturate() {
        let now = Utc::now();
        assert_eq!(since(later(now, Duration::from_millis(1500)), now), Duration::from_millis(1500));
        assert_eq!(since(now, later(now, Duration::from_secs(1))), Duration::ZERO);
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(milliseconds(-5), Duration::ZERO);
    }
}
