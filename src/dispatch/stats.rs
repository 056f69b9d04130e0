//! Counting every event: accepted, delivered, pending, in flight, dropped or refused.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an accepted event was dropped instead of delivered.
///
/// Every dropped event is counted under its reason and, except for
/// [`Removed`](DropReason::Removed) and [`Shutdown`](DropReason::Shutdown)
/// (whose events are handed back to the caller), handed to the
/// [`DeliveryObserver`](crate::dispatch::DeliveryObserver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The webhook was disabled after too many failed calls in a row.
    Disabled,
    /// The bot's webhook was removed; its events were returned by `remove`.
    Removed,
    /// The event alone is larger than the webhook's batch byte limit.
    TooLarge,
    /// The bot was reconfigured onto the free plan, which has no webhook.
    Reconfigured,
    /// The dispatcher shut down; the events were returned by `shutdown`.
    Shutdown,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Disabled,
        DropReason::Removed,
        DropReason::TooLarge,
        DropReason::Reconfigured,
        DropReason::Shutdown,
    ];

    /// A stable snake-case name, e.g. `"too_large"`.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Disabled => "disabled",
            DropReason::Removed => "removed",
            DropReason::TooLarge => "too_large",
            DropReason::Reconfigured => "reconfigured",
            DropReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Why `enqueue` did not accept an event (it was never counted as accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The event's kind is not selected for the bot's webhook.
    NotSelected,
    /// The bot is on the free plan.
    FreePlan,
    /// The bot has no webhook configured (or the event names no bot).
    NoWebhook,
    /// The webhook is disabled.
    WebhookDisabled,
    /// The webhook's queue or the dispatcher's global bound is full.
    QueueFull,
    /// The dispatcher is shut down.
    Closed,
    /// The shared store has not taken the events buffered before this one.
    StoreUnavailable,
}

impl Refusal {
    /// Every refusal, in a fixed order.
    pub const ALL: [Refusal; 7] = [
        Refusal::NotSelected,
        Refusal::FreePlan,
        Refusal::NoWebhook,
        Refusal::WebhookDisabled,
        Refusal::QueueFull,
        Refusal::Closed,
        Refusal::StoreUnavailable,
    ];

    /// A stable snake-case name, e.g. `"queue_full"`.
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::NotSelected => "not_selected",
            Refusal::FreePlan => "free_plan",
            Refusal::NoWebhook => "no_webhook",
            Refusal::WebhookDisabled => "webhook_disabled",
            Refusal::QueueFull => "queue_full",
            Refusal::Closed => "closed",
            Refusal::StoreUnavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Live counters, shared between `enqueue` callers and the dispatcher core.
///
/// A configured webhook's `delivered`, `in_flight`, `calls` and
/// `calls_failed` stay zero here: only the core changes those, so it keeps
/// them with the webhook's other state ([`CallCounts`]) and adds them to
/// snapshots. The retired counters use every field.
///
/// `held` counts the events in flight too, so that the queue bound that
/// `enqueue` checks against it covers the batch in a call; a snapshot shows
/// `held - in_flight` as pending.
///
/// `repr(C)`: the two that `enqueue` updates come first, next to the gate's settings.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    /// Accepted events not yet delivered or dropped: waiting, or in a call.
    pub(crate) held: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) dropped: [AtomicU64; DropReason::ALL.len()],
    pub(crate) refused: [AtomicU64; Refusal::ALL.len()],
    pub(crate) calls: AtomicU64,
    pub(crate) calls_failed: AtomicU64,
}

/// The counts of one webhook that only the core changes, kept with its
/// state instead of as atomics beside the ones `enqueue` callers update.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CallCounts {
    pub(crate) delivered: u64,
    pub(crate) calls: u64,
    pub(crate) calls_failed: u64,
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

fn subtract(counter: &AtomicU64, amount: u64) {
    counter.fetch_sub(amount, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn refuse(&self, refusal: Refusal) {
        add(&self.refused[refusal as usize], 1);
    }

    /// Events accepted and not yet delivered or dropped: counted by the core
    /// as it takes in events that `enqueue` sent uncounted.
    pub(crate) fn accept_held(&self, events: u64) {
        add(&self.accepted, events);
        add(&self.held, events);
    }

    /// Held events were delivered (the core counts them as delivered).
    pub(crate) fn release_delivered(&self, events: u64) {
        subtract(&self.held, events);
    }

    /// Held events, waiting or in an abandoned call, are dropped.
    #[cfg(feature = "postgres")]
    pub(crate) fn add_dropped(&self, events: u64, reason: DropReason) {
        add(&self.dropped[reason as usize], events);
    }

    pub(crate) fn held_to_dropped(&self, events: u64, reason: DropReason) {
        add(&self.dropped[reason as usize], events);
        subtract(&self.held, events);
    }

    /// Adds the counts of a webhook that is going away.
    pub(crate) fn absorb(&self, counts: &EventCounts) {
        add(&self.accepted, counts.accepted);
        add(&self.delivered, counts.delivered);
        add(&self.held, counts.pending + counts.in_flight);
        add(&self.in_flight, counts.in_flight);
        add(&self.calls, counts.calls);
        add(&self.calls_failed, counts.calls_failed);
        for (counter, value) in self.dropped.iter().zip(counts.dropped) {
            add(counter, value);
        }
        for (counter, value) in self.refused.iter().zip(counts.refused) {
            add(counter, value);
        }
    }

    /// A configured webhook's counts: these counters plus what the core keeps.
    pub(crate) fn snapshot_with(&self, in_flight: usize, calls: &CallCounts) -> EventCounts {
        let mut counts = self.snapshot();
        counts.pending = counts.pending.saturating_sub(in_flight as u64);
        counts.in_flight += in_flight as u64;
        counts.delivered += calls.delivered;
        counts.calls += calls.calls;
        counts.calls_failed += calls.calls_failed;
        counts
    }

    pub(crate) fn snapshot(&self) -> EventCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let in_flight = load(&self.in_flight);
        EventCounts {
            accepted: load(&self.accepted),
            delivered: load(&self.delivered),
            pending: load(&self.held).saturating_sub(in_flight),
            in_flight,
            dropped: self.dropped.each_ref().map(load),
            refused: self.refused.each_ref().map(load),
            calls: load(&self.calls),
            calls_failed: load(&self.calls_failed),
        }
    }
}

/// A snapshot of event and call counts, for one webhook or in total.
///
/// Every accepted event is in exactly one place:
/// `accepted == delivered + pending + in_flight + dropped_total()`, in every
/// snapshot (one is taken while no `enqueue` is half-way).
///
/// `Debug` labels every count, drops and refusals by their reason:
///
/// ```
/// use eventhook::dispatch::EventCounts;
///
/// let text = format!("{:?}", EventCounts::default());
/// assert!(text.contains("dropped: {disabled: 0, removed: 0, too_large: 0, reconfigured: 0, shutdown: 0}"), "{text}");
/// assert!(text.contains("refused: {not_selected: 0, free_plan: 0,"), "{text}");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCounts {
    /// Events `enqueue` accepted.
    pub accepted: u64,
    /// Events delivered by a successful call.
    pub delivered: u64,
    /// Events waiting for a call (including ones not yet taken from the intake).
    pub pending: u64,
    /// Events in a call not yet answered.
    pub in_flight: u64,
    dropped: [u64; DropReason::ALL.len()],
    refused: [u64; Refusal::ALL.len()],
    /// Calls made (each one billable outgoing message).
    pub calls: u64,
    /// Calls that failed.
    pub calls_failed: u64,
}

/// Counts by reason, shown as `{name: count, ...}`.
struct ByReason<'a, R> {
    reasons: &'a [R],
    counts: &'a [u64],
    name: fn(R) -> &'static str,
}

impl<R: Copy> fmt::Debug for ByReason<'_, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = formatter.debug_map();
        for (reason, count) in self.reasons.iter().zip(self.counts) {
            map.key(&format_args!("{}", (self.name)(*reason))).value(count);
        }
        map.finish()
    }
}

impl fmt::Debug for EventCounts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EventCounts")
            .field("accepted", &self.accepted)
            .field("delivered", &self.delivered)
            .field("pending", &self.pending)
            .field("in_flight", &self.in_flight)
            .field("dropped", &ByReason { reasons: &DropReason::ALL, counts: &self.dropped, name: DropReason::name })
            .field("refused", &ByReason { reasons: &Refusal::ALL, counts: &self.refused, name: Refusal::name })
            .field("calls", &self.calls)
            .field("calls_failed", &self.calls_failed)
            .finish()
    }
}

impl EventCounts {
    /// Accepted events dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// Accepted events dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Events `enqueue` refused for `refusal`.
    pub fn refused(&self, refusal: Refusal) -> u64 {
        self.refused[refusal as usize]
    }

    /// Whether `accepted == delivered + pending + in_flight + dropped_total()`.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.delivered + self.pending + self.in_flight + self.dropped_total()
    }

    pub(crate) fn add(&mut self, other: &EventCounts) {
        self.accepted += other.accepted;
        self.delivered += other.delivered;
        self.pending += other.pending;
        self.in_flight += other.in_flight;
        self.calls += other.calls;
        self.calls_failed += other.calls_failed;
        for (total, value) in self.dropped.iter_mut().zip(other.dropped) {
            *total += value;
        }
        for (total, value) in self.refused.iter_mut().zip(other.refused) {
            *total += value;
        }
    }
}

/// Whether a webhook is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookState {
    /// Pushes are made.
    Active,
    /// Disabled after too many failed calls in a row; configure it again to re-enable.
    Disabled,
    /// The bot is on the free plan: nothing is queued or sent.
    FreePlan,
}

/// A snapshot of one webhook.
///
/// ```no_run
/// # fn example(dispatcher: &dyn eventhook::dispatch::Dispatcher) {
/// use eventhook::dispatch::{DropReason, Refusal, WebhookState};
///
/// if let Some(stats) = dispatcher.webhook_stats("bot-1") {
///     let counts = stats.counts;
///     println!(
///         "{:?}: {} delivered of {} accepted, {} waiting, {} dropped ({} too large), {} calls ({} failed)",
///         stats.state,
///         counts.delivered,
///         counts.accepted,
///         counts.pending + counts.in_flight,
///         counts.dropped_total(),
///         counts.dropped(DropReason::TooLarge),
///         counts.calls,
///         counts.calls_failed,
///     );
///     println!("{} not selected by the webhook's settings", counts.refused(Refusal::NotSelected));
///     if stats.state == WebhookState::Disabled {
///         println!("disabled; last failure: {:?}", stats.last_failure);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStats {
    /// The bot.
    pub bot_token: String,
    /// Whether it is called.
    pub state: WebhookState,
    /// Its event and call counts.
    pub counts: EventCounts,
    /// Failed calls since the last success.
    pub failures_in_row: u32,
    /// Why the last failed call failed, if any call failed.
    pub last_failure: Option<String>,
}

/// A webhook that still holds undelivered events, and why: what a flush or a
/// shutdown that could not deliver everything names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledWebhook {
    /// The bot.
    pub bot_token: String,
    /// Its state.
    pub state: WebhookState,
    /// Events pending or in flight.
    pub undelivered: u64,
    /// Why its last failed call failed, if one did.
    pub last_failure: Option<String>,
}

impl fmt::Display for StalledWebhook {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {} undelivered", self.bot_token, self.undelivered)?;
        match &self.last_failure {
            Some(failure) => write!(formatter, ", last failure: {failure}"),
            None => formatter.write_str(", no call failed yet"),
        }
    }
}

/// A snapshot of the whole dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DispatcherStats {
    /// Configured webhooks.
    pub webhooks: usize,
    /// Of those, disabled ones.
    pub disabled_webhooks: usize,
    /// Counts over every webhook, including removed ones, plus refusals of
    /// events that named no configured bot.
    pub totals: EventCounts,
}
