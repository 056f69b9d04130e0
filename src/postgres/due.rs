//! When a webhook pushes next, as the database keeps it: a row's anchor,
//! interval and last push, shown to the delivery rules as a
//! [`Schedulable`](crate::dispatch::store::Schedulable).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::timestamps::{later, milliseconds, since};
use crate::dispatch::rules;
use crate::dispatch::store::Schedulable;

/// What a webhook's row says about its grid and its last push.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) anchor_at: DateTime<Utc>,
    pub(crate) push_interval_ms: i64,
    pub(crate) last_push_at: Option<DateTime<Utc>>,
}

impl Schedule {
    pub(crate) fn interval(&self) -> Duration {
        milliseconds(self.push_interval_ms)
    }

    /// How long before `now` the last call started, if one did.
    pub(crate) fn since_last_push(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.last_push_at.map(|started| since(now, started))
    }

    /// How long from `now` to the next time on the grid.
    pub(crate) fn until_grid(&self, now: DateTime<Utc>) -> Duration {
        if now <= self.anchor_at {
            return since(self.anchor_at, now);
        }
        match rules::next_grid_offset(since(now, self.anchor_at), self.interval()) {
            Some(offset) => since(later(self.anchor_at, offset), now),
            None => Duration::ZERO,
        }
    }

    /// When the webhook, idle until events came, pushes first
    /// ([`rules::schedule_first_push`]).
    pub(crate) fn first_push_at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut row = ScheduledRow { schedule: self, now, due_at: None };
        rules::schedule_first_push(&mut row);
        row.due_at.unwrap_or(now)
    }
}

/// A row's schedule at `now`, and the due time the rules set.
struct ScheduledRow {
    schedule: Schedule,
    now: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
}

impl Schedulable for ScheduledRow {
    fn push_interval(&self) -> Duration {
        self.schedule.interval()
    }

    fn since_last_push(&self) -> Option<Duration> {
        self.schedule.since_last_push(self.now)
    }

    fn until_grid(&self) -> Duration {
        self.schedule.until_grid(self.now)
    }

    fn schedule(&mut self, after: Option<Duration>) {
        self.due_at = after.map(|after| later(self.now, after));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_push_is_at_the_next_grid_time_and_an_interval_after_the_last_push() {
        let anchor_at = Utc::now();
        let schedule = Schedule { anchor_at, push_interval_ms: 30_000, last_push_at: None };
        assert_eq!(schedule.first_push_at(anchor_at - chrono::Duration::seconds(5)), anchor_at);
        let later_on = anchor_at + chrono::Duration::seconds(40);
        assert_eq!(schedule.first_push_at(later_on), anchor_at + chrono::Duration::seconds(60));
        let pushed = Schedule { last_push_at: Some(later_on), ..schedule };
        let now = later_on + chrono::Duration::seconds(2);
        assert_eq!(
            pushed.first_push_at(now),
            later(later_on, Duration::from_secs(30)),
            "an interval after the last push"
        );
    }
}
