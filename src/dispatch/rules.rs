//! The platform's delivery rules, as pure functions of a webhook's state and
//! the time: what counts as a success, when a webhook is disabled, how many
//! events a call carries, and when a webhook pushes next.
//!
//! Written once, here, for whatever keeps the state: the in-memory core
//! applies them to its webhooks; a store shared by several processes applies
//! the same functions to the rows it settles. Times are offsets from a
//! webhook's anchor or durations, so that they hold whatever clock a store
//! keeps (the core's `Instant`s, or a database's timestamps).

use std::time::Duration;

use http::StatusCode;

use super::outcome::CallOutcome;
use super::stats::{DropReason, Refusal};
use super::store::{Schedulable, StoredWebhook};
use crate::transport::TransportError;

/// Failed calls in a row a webhook survives; the next failure disables it
/// ("more than 10 times", as the platform says).
pub const MAX_FAILURES_IN_ROW: u32 = 10;

/// How a call ended: exactly `200 OK` is a success (any `2xx` when the
/// webhook accepts them); any other status, or no answer, is a failure.
pub(crate) fn call_outcome(result: Result<StatusCode, TransportError>, accept_any_2xx: bool) -> CallOutcome {
    match result {
        Ok(status) if status == StatusCode::OK || (accept_any_2xx && status.is_success()) => {
            CallOutcome::Delivered(status)
        }
        Ok(status) => CallOutcome::FailedStatus(status),
        Err(error) => CallOutcome::FailedTransport(error),
    }
}

/// Failed calls in a row after one more failure, and whether that one
/// disables the webhook (the 11th).
fn after_failure(failures_in_row: u32) -> (u32, bool) {
    let failures_in_row = failures_in_row.saturating_add(1);
    (failures_in_row, failures_in_row > MAX_FAILURES_IN_ROW)
}

/// What a settled call leaves of a webhook's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// Failed calls in a row after this one.
    pub(crate) failures_in_row: u32,
    /// Whether this call disables the webhook (its events are then dropped).
    pub(crate) disables: bool,
    /// What happened, for [`next_push`].
    pub(crate) settled: Settled,
}

/// The settlement of a call that `delivered` (or not) on a webhook with
/// `failures_in_row` before it: a success resets the count; a failure
/// keeps the call's events for the same call again, and the 11th disables.
pub(crate) fn settlement(delivered: bool, failures_in_row: u32) -> Settlement {
    if delivered {
        return Settlement { failures_in_row: 0, disables: false, settled: Settled::Delivered };
    }
    let (failures_in_row, disables) = after_failure(failures_in_row);
    Settlement { failures_in_row, disables, settled: Settled::Failed }
}

/// Settles the call under way of `webhook` that ended with `outcome`, in
/// whichever store keeps it: its events leave (or stay, for the same call
/// again), its health is recorded, and the 11th failure in a row disables
/// it; otherwise it is scheduled ([`schedule`]). `flushing`: whether a flush
/// wants the webhook's events now.
pub(crate) fn settle_call(webhook: &mut impl StoredWebhook, outcome: &CallOutcome, flushing: bool) -> Settlement {
    let delivered = outcome.is_success();
    let settlement = settlement(delivered, webhook.failures_in_row());
    webhook.end_call(delivered);
    webhook.record_health(settlement.failures_in_row, (!delivered).then_some(outcome));
    if settlement.disables {
        webhook.disable();
    } else {
        schedule(webhook, settlement.settled, flushing);
    }
    settlement
}

/// Schedules a webhook with no call under way after `settled` (a call, a
/// reconfiguration): a webhook on the free plan drops what waits; one with
/// nothing waiting has nothing scheduled; otherwise it pushes by [`next_push`].
pub(crate) fn schedule(webhook: &mut impl StoredWebhook, settled: Settled, flushing: bool) {
    if webhook.free_plan() {
        webhook.drop_waiting(DropReason::Reconfigured);
        webhook.schedule(None);
        return;
    }
    let (events, bytes) = webhook.waiting();
    if events == 0 {
        webhook.schedule(None);
        return;
    }
    let (max_events, max_bytes) = webhook.batch_limits();
    let full_batch = is_full_batch(events, bytes, max_events, max_bytes);
    let view = &*webhook;
    let after =
        next_push(settled, flushing, full_batch, view.push_interval(), view.since_last_push(), || view.until_grid());
    webhook.schedule(Some(after));
}

/// Schedules a webhook that just got events after having none (no call
/// under way, nothing scheduled): at its next grid time, and an interval
/// after its last push at the earliest.
pub(crate) fn schedule_first_push(webhook: &mut impl Schedulable) {
    let view = &*webhook;
    let after =
        next_push(Settled::Idle, false, false, view.push_interval(), view.since_last_push(), || view.until_grid());
    webhook.schedule(Some(after));
}

/// Why an event of a webhook is refused before its bounds are checked: a
/// bot on the free plan has no webhook; a kind not selected is not wanted;
/// a disabled webhook takes nothing until it is configured again.
pub(crate) fn refusal(free_plan: bool, selected: bool, disabled: bool) -> Option<Refusal> {
    if free_plan {
        Some(Refusal::FreePlan)
    } else if !selected {
        Some(Refusal::NotSelected)
    } else if disabled {
        Some(Refusal::WebhookDisabled)
    } else {
        None
    }
}

/// The most events and body bytes of one call.
pub(crate) fn batch_limits(
    one_event_per_call: bool,
    max_batch_events: usize,
    max_batch_bytes: usize,
) -> (usize, usize) {
    (if one_event_per_call { 1 } else { max_batch_events }, max_batch_bytes)
}

/// The length of a JSON array holding `events` elements of `bytes` in total.
pub(crate) fn array_length(events: usize, bytes: usize) -> usize {
    bytes + events.max(1) + 1
}

/// Whether `events` waiting events of `bytes` in total make a full batch:
/// more than one call carries, so a backlog to drain at once after a success.
pub(crate) fn is_full_batch(events: usize, bytes: usize, max_events: usize, max_bytes: usize) -> bool {
    events >= max_events || array_length(events, bytes) > max_bytes
}

/// Whether an event of `length` encoded bytes fits in a call alone; one that
/// does not is dropped when it is taken in ([`DropReason::TooLarge`](super::DropReason::TooLarge)).
pub(crate) fn fits_alone(length: usize, max_batch_bytes: usize) -> bool {
    array_length(1, length) <= max_batch_bytes
}

/// How many of the oldest events (their encoded `lengths`, oldest first)
/// one call carries, and their encoded bytes: as many as `max_events` and a
/// body of `max_bytes` allow, and at least one.
pub(crate) fn fitting(lengths: impl IntoIterator<Item = usize>, max_events: usize, max_bytes: usize) -> (usize, usize) {
    let mut events = 0;
    let mut body_length = 1; // '['
    let mut event_bytes = 0;
    for length in lengths {
        let next_length = body_length + length + 1; // ',' or ']'
        if events == max_events || (events > 0 && next_length > max_bytes) {
            break;
        }
        body_length = next_length;
        event_bytes += length;
        events += 1;
    }
    (events, event_bytes)
}

/// How many of a webhook's oldest events (their encoded `lengths`, oldest
/// first) its next call carries, and their encoded bytes: a failed call's
/// `failed` events again, as it was, whatever the limits are now; otherwise
/// as many as fit ([`fitting`]).
pub(crate) fn call_events(
    failed: Option<usize>,
    lengths: impl IntoIterator<Item = usize>,
    max_events: usize,
    max_bytes: usize,
) -> (usize, usize) {
    match failed {
        Some(events) => {
            lengths.into_iter().take(events).fold((0, 0), |(count, bytes), length| (count + 1, bytes + length))
        }
        None => fitting(lengths, max_events, max_bytes),
    }
}

/// Where a webhook's grid of push times starts, after its anchor: spread
/// over the interval, the same way for the same bot in every process.
pub(crate) fn phase(bot_token: &str, interval: Duration) -> Duration {
    // FNV-1a: deterministic across processes, unlike std's RandomState.
    let hash = bot_token
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    let interval_nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(hash % interval_nanos)
}

/// The first grid time at or after `earliest`, both as offsets from the
/// grid's start; `None` past what a `Duration` holds.
pub(crate) fn next_grid_offset(earliest: Duration, interval: Duration) -> Option<Duration> {
    let interval = interval.as_nanos().max(1);
    let steps = earliest.as_nanos().div_ceil(interval);
    u64::try_from(steps * interval).ok().map(Duration::from_nanos)
}

/// What just happened to a webhook with no call under way, for [`next_push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// It was configured (again), or got events after having none.
    Idle,
    /// A call succeeded.
    Delivered,
    /// A call failed.
    Failed,
}

/// When a webhook with events waiting pushes next, as a delay from now:
/// - at once during a flush (but after a failure), or when a whole batch waits after a success or
///   a reconfiguration (a backlog drains at network speed);
/// - after a call, one interval after it started (`since_last_push`);
///   after a failed call always so, full batch or not: the 11th failure in a
///   row must take 10 intervals after the first, not 11 round trips;
/// - when idle, at its next grid time (`until_grid`, read only then), and
///   at least an interval after its last push.
pub(crate) fn next_push(
    settled: Settled,
    flushing: bool,
    full_batch: bool,
    interval: Duration,
    since_last_push: Option<Duration>,
    until_grid: impl FnOnce() -> Duration,
) -> Duration {
    // A flush makes one attempt per webhook: after a failure the failure rule paces retries.
    let failed = matches!(settled, Settled::Failed);
    let backlog = full_batch && !failed;
    if (flushing && !failed) || backlog {
        return Duration::ZERO;
    }
    let after_last_push = since_last_push.map_or(Duration::ZERO, |since| interval.saturating_sub(since));
    match settled {
        Settled::Delivered | Settled::Failed => after_last_push,
        Settled::Idle => until_grid().max(after_last_push),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settlement_resets_on_success_and_disables_on_the_eleventh_failure() {
        assert_eq!(
            settlement(true, 7),
            Settlement { failures_in_row: 0, disables: false, settled: Settled::Delivered }
        );
        assert_eq!(settlement(false, 9), Settlement { failures_in_row: 10, disables: false, settled: Settled::Failed });
        assert_eq!(settlement(false, 10), Settlement { failures_in_row: 11, disables: true, settled: Settled::Failed });
    }

    #[test]
    fn the_free_plan_comes_before_selection_and_selection_before_disabling() {
        assert_eq!(refusal(true, false, true), Some(Refusal::FreePlan));
        assert_eq!(refusal(false, false, true), Some(Refusal::NotSelected));
        assert_eq!(refusal(false, true, true), Some(Refusal::WebhookDisabled));
        assert_eq!(refusal(false, true, false), None);
    }

    #[test]
    fn the_eleventh_failure_in_a_row_disables() {
        let mut failures = 0;
        for attempt in 1..=11 {
            let (after, disables) = after_failure(failures);
            assert_eq!((after, disables), (attempt, attempt == 11));
            failures = after;
        }
    }

    #[test]
    fn grid_offsets_round_up_to_the_interval() {
        let interval = Duration::from_secs(30);
        assert_eq!(next_grid_offset(Duration::ZERO, interval), Some(Duration::ZERO));
        assert_eq!(next_grid_offset(Duration::from_secs(1), interval), Some(interval));
        assert_eq!(next_grid_offset(interval, interval), Some(interval));
        assert_eq!(next_grid_offset(Duration::from_secs(31), interval), Some(2 * interval));
    }

    #[test]
    fn a_backlog_drains_at_once_except_after_a_failure() {
        let interval = Duration::from_secs(30);
        let since = Some(Duration::from_secs(1));
        let grid = || Duration::from_secs(5);
        assert_eq!(next_push(Settled::Delivered, false, true, interval, since, grid), Duration::ZERO);
        assert_eq!(next_push(Settled::Idle, false, true, interval, since, grid), Duration::ZERO);
        assert_eq!(next_push(Settled::Failed, false, true, interval, since, grid), Duration::from_secs(29));
        assert_eq!(
            next_push(Settled::Failed, true, true, interval, since, grid),
            Duration::from_secs(29),
            "a flush makes one attempt per webhook"
        );
        assert_eq!(next_push(Settled::Delivered, true, false, interval, since, grid), Duration::ZERO, "a flush");
        assert_eq!(next_push(Settled::Delivered, false, false, interval, since, grid), Duration::from_secs(29));
        assert_eq!(next_push(Settled::Idle, false, false, interval, None, grid), grid());
        assert_eq!(next_push(Settled::Idle, false, false, interval, since, grid), Duration::from_secs(29));
    }

    #[test]
    fn a_failed_call_carries_its_events_again_whatever_the_limits() {
        assert_eq!(call_events(Some(3), [7, 7, 7, 7], 1, 8), (3, 21));
        assert_eq!(call_events(None, [7, 7, 7, 7], 2, 1024), (2, 14));
    }

    #[test]
    fn a_call_carries_what_fits_and_at_least_one() {
        assert_eq!(fitting([7, 7, 7], 2, 1024), (2, 14));
        assert_eq!(fitting([7, 7, 7], 10, 17), (2, 14)); // "[" + 7 + "," + 7 + "]"
        assert_eq!(fitting([100], 10, 17), (1, 100));
        assert!(fits_alone(1022, 1024) && !fits_alone(1023, 1024));
    }
}
