//! Time: a monotonic instant for scheduling and a wall-clock time for dates.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Where the crate reads the time.
///
/// The dispatcher schedules pushes with [`now`](Clock::now) and dates alerts
/// and events with [`wall_time`](Clock::wall_time). Tests drive both with a
/// [`ManualClock`].
pub trait Clock: Send + Sync + Debug + 'static {
    /// A monotonic instant, for intervals and timeouts.
    fn now(&self) -> Instant;
    /// The calendar time, for `Date` fields and alerts.
    fn wall_time(&self) -> DateTime<Utc>;
}

/// The system's clocks: [`Instant::now`] and [`Utc::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_time(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to, for deterministic tests.
///
/// ```
/// use std::time::Duration;
/// use eventhook::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now() - start, Duration::from_secs(30));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Instant, DateTime<Utc>)>,
}

impl ManualClock {
    /// A clock at an arbitrary instant and at 2019-07-10T15:47:58Z.
    pub fn new() -> ManualClock {
        let wall = DateTime::parse_from_rfc3339("2019-07-10T15:47:58Z")
            .map(|date| date.with_timezone(&Utc))
            .unwrap_or_default();
        ManualClock::starting_at(wall)
    }

    /// A clock whose wall time starts at `wall_time`.
    pub fn starting_at(wall_time: DateTime<Utc>) -> ManualClock {
        ManualClock { state: Mutex::new((Instant::now(), wall_time)) }
    }

    /// Moves both clocks forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 += duration;
        state.1 += chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).0
    }

    fn wall_time(&self) -> DateTime<Utc> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1
    }
}
