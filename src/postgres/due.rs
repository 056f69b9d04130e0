//! When a webhook pushes next, as the database keeps it: the delivery rules'
//! [`next_push`](crate::dispatch::rules::next_push) on a row's anchor and last push.

use chrono::{DateTime, Utc};

use super::timestamps::{later, milliseconds, since};
use crate::dispatch::rules::{self, Settled};

/// What a webhook's row says about its grid and its last push.
pub(crate) struct Schedule {
    pub(crate) anchor_at: DateTime<Utc>,
    pub(crate) push_interval_ms: i64,
    pub(crate) last_push_at: Option<DateTime<Utc>>,
}

impl Schedule {
    /// When the webhook, with events waiting and no call under way, pushes next after `settled`.
    pub(crate) fn next_push_at(
        &self,
        settled: Settled,
        now: DateTime<Utc>,
        flushing: bool,
        full_batch: bool,
    ) -> DateTime<Utc> {
        let interval = milliseconds(self.push_interval_ms);
        let since_last_push = self.last_push_at.map(|started| since(now, started));
        let until_grid = || {
            if now <= self.anchor_at {
                return since(self.anchor_at, now);
            }
            match rules::next_grid_offset(since(now, self.anchor_at), interval) {
                Some(offset) => since(later(self.anchor_at, offset), now),
                None => std::time::Duration::ZERO,
            }
        };
        later(now, rules::next_push(settled, flushing, full_batch, interval, since_last_push, until_grid))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_idle_webhook_is_due_at_its_next_grid_time_and_a_failed_one_an_interval_after_its_call() {
        let anchor_at = Utc::now();
        let schedule = Schedule { anchor_at, push_interval_ms: 30_000, last_push_at: None };
        assert_eq!(
            schedule.next_push_at(Settled::Idle, anchor_at - chrono::Duration::seconds(5), false, false),
            anchor_at
        );
        let later_on = anchor_at + chrono::Duration::seconds(40);
        assert_eq!(
            schedule.next_push_at(Settled::Idle, later_on, false, false),
            anchor_at + chrono::Duration::seconds(60)
        );
        let pushed = Schedule { last_push_at: Some(later_on), ..schedule };
        let now = later_on + chrono::Duration::seconds(2);
        assert_eq!(pushed.next_push_at(Settled::Failed, now, false, true), later(later_on, Duration::from_secs(30)));
        assert_eq!(pushed.next_push_at(Settled::Delivered, now, false, true), now, "a full batch drains at once");
    }
}
