//! Metrics a scraper can read, through the `metrics` facade (feature `metrics`).
//!
//! Recorded here only, from the same points that update the stats, so that
//! every counter and gauge agrees with [`stats`](super::DispatchCore::stats)
//! whenever the core has taken in what `enqueue` accepted (the driver does
//! within one wake-up). Handles are registered once, when the core is made,
//! with the recorder in force then; recording is then an atomic add on a
//! handle, never a lookup by name.
//!
//! Only refusals are recorded on the callers' threads (`enqueue` answers
//! them there, and nothing else sees them); acceptances are counted when the
//! core takes the events in, off those threads, and that is also when each
//! event's delivery lag starts ([`Arrivals`]).
//!
//! Without the feature every type here is empty and every method does nothing.

/// When the core took an event in, as nanoseconds since the core was made
/// (8 bytes instead of an `Instant`'s 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Arrival(#[cfg(feature = "metrics")] u64);

#[cfg(feature = "metrics")]
mod recorded {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use metrics::{Counter, Gauge, Histogram, Unit};

    use super::Arrival;
    use crate::dispatch::outcome::CallOutcome;
    use crate::dispatch::stats::{DropReason, Refusal};

    /// The refusal counters, shared with the callers' threads.
    #[derive(Debug)]
    pub(crate) struct RefusalMetrics {
        refused: [Counter; Refusal::ALL.len()],
    }

    impl RefusalMetrics {
        pub(crate) fn new() -> RefusalMetrics {
            metrics::describe_counter!(
                "eventhook_events_refused_total",
                Unit::Count,
                "Events enqueue did not accept, by reason."
            );
            RefusalMetrics {
                refused: Refusal::ALL
                    .map(|refusal| metrics::counter!("eventhook_events_refused_total", "reason" => refusal.name())),
            }
        }

        pub(crate) fn refused(&self, refusal: Refusal) {
            self.refused[refusal as usize].increment(1);
        }
    }

    /// Outcome labels of `eventhook_calls_total`, in [`outcome_index`] order.
    const OUTCOMES: [&str; 3] = ["delivered", "failed_status", "failed_transport"];

    fn outcome_index(outcome: &CallOutcome) -> usize {
        match outcome {
            CallOutcome::Delivered(_) => 0,
            CallOutcome::FailedStatus(_) => 1,
            CallOutcome::FailedTransport(_) => 2,
        }
    }

    /// Everything the core records, and the one figure it keeps for a gauge.
    #[derive(Debug)]
    pub(crate) struct CoreMetrics {
        epoch: Instant,
        /// Events in calls under way: the stats' `in_flight`, which the
        /// pending gauge leaves out.
        events_in_flight: usize,
        accepted: Counter,
        delivered: Counter,
        dropped: [Counter; DropReason::ALL.len()],
        calls: [Counter; OUTCOMES.len()],
        disabled: Counter,
        pending: Gauge,
        calls_in_flight: Gauge,
        webhooks_active: Gauge,
        webhooks_disabled: Gauge,
        call_duration: Histogram,
        push_events: Histogram,
        delivery_lag: Histogram,
    }

    impl CoreMetrics {
        pub(crate) fn new(now: Instant) -> CoreMetrics {
            describe();
            let counter = |name: &'static str| metrics::counter!(name);
            CoreMetrics {
                epoch: now,
                events_in_flight: 0,
                accepted: counter("eventhook_events_accepted_total"),
                delivered: counter("eventhook_events_delivered_total"),
                dropped: DropReason::ALL
                    .map(|reason| metrics::counter!("eventhook_events_dropped_total", "reason" => reason.name())),
                calls: OUTCOMES.map(|outcome| metrics::counter!("eventhook_calls_total", "outcome" => outcome)),
                disabled: counter("eventhook_webhooks_disabled_total"),
                pending: metrics::gauge!("eventhook_events_pending"),
                calls_in_flight: metrics::gauge!("eventhook_calls_in_flight"),
                webhooks_active: metrics::gauge!("eventhook_webhooks", "state" => "active"),
                webhooks_disabled: metrics::gauge!("eventhook_webhooks", "state" => "disabled"),
                call_duration: metrics::histogram!("eventhook_call_duration_seconds"),
                push_events: metrics::histogram!("eventhook_push_events"),
                delivery_lag: metrics::histogram!("eventhook_delivery_lag_seconds"),
            }
        }

        pub(crate) fn arrival(&self, now: Instant) -> Arrival {
            Arrival(u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX))
        }

        pub(crate) fn accepted(&self, events: usize) {
            self.accepted.increment(events as u64);
        }

        pub(crate) fn dropped(&self, reason: DropReason, events: usize) {
            self.dropped[reason as usize].increment(events as u64);
        }

        pub(crate) fn call_started(&mut self, events: usize) {
            self.events_in_flight += events;
        }

        /// A call under way was abandoned (its webhook removed, or shutdown); it is not counted as a call.
        pub(crate) fn call_abandoned(&mut self, events: usize) {
            self.events_in_flight -= events;
        }

        pub(crate) fn call_ended(&mut self, outcome: &CallOutcome, events: usize, duration: Duration) {
            self.events_in_flight -= events;
            self.calls[outcome_index(outcome)].increment(1);
            self.call_duration.record(duration);
            self.push_events.record(events as f64);
            if outcome.is_success() {
                self.delivered.increment(events as u64);
            }
        }

        /// `events` taken in at `arrival` were delivered by a 200 received at `now`.
        pub(crate) fn delivered_since(&self, now: Instant, arrival: Arrival, events: u32) {
            let lag = Duration::from_nanos(self.arrival(now).0.saturating_sub(arrival.0));
            self.delivery_lag.record_many(lag, events as usize);
        }

        pub(crate) fn webhook_disabled(&self) {
            self.disabled.increment(1);
        }

        /// Sets every gauge; `pending_and_in_flight` is the admission's total of held events.
        pub(crate) fn gauges(&self, pending_and_in_flight: usize, calls: usize, webhooks: usize, disabled: usize) {
            self.pending.set(pending_and_in_flight.saturating_sub(self.events_in_flight) as f64);
            self.calls_in_flight.set(calls as f64);
            self.webhooks_active.set(webhooks.saturating_sub(disabled) as f64);
            self.webhooks_disabled.set(disabled as f64);
        }
    }

    fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_counter!("eventhook_events_accepted_total", Unit::Count, "Events enqueue accepted.");
        describe_counter!("eventhook_events_delivered_total", Unit::Count, "Events delivered by a successful call.");
        describe_counter!("eventhook_events_refused_total", Unit::Count, "Events enqueue refused, by reason.");
        describe_counter!(
            "eventhook_events_dropped_total",
            Unit::Count,
            "Accepted events that will not be delivered, by reason."
        );
        describe_counter!("eventhook_calls_total", Unit::Count, "Webhook calls made, by outcome.");
        describe_counter!("eventhook_webhooks_disabled_total", Unit::Count, "Webhooks disabled after failed calls.");
        describe_gauge!("eventhook_events_pending", Unit::Count, "Accepted events waiting for a call.");
        describe_gauge!("eventhook_calls_in_flight", Unit::Count, "Webhook calls under way.");
        describe_gauge!("eventhook_webhooks", Unit::Count, "Configured webhooks, by state.");
        describe_histogram!("eventhook_call_duration_seconds", Unit::Seconds, "Time from a call's start to its end.");
        describe_histogram!("eventhook_push_events", Unit::Count, "Events per call.");
        describe_histogram!(
            "eventhook_delivery_lag_seconds",
            Unit::Seconds,
            "Per delivered event: time from its acceptance to the answer that delivered it."
        );
    }

    /// The arrival times of one webhook's queued events, one entry per run
    /// of events taken in together (oldest first, in step with the queue).
    #[derive(Debug, Default)]
    pub(crate) struct Arrivals {
        runs: VecDeque<(u64, u32)>,
    }

    impl Arrivals {
        pub(crate) fn push(&mut self, arrival: Arrival) {
            match self.runs.back_mut() {
                Some((time, count)) if *time == arrival.0 && *count < u32::MAX => *count += 1,
                _ => self.runs.push_back((arrival.0, 1)),
            }
        }

        /// Removes the oldest `events`, telling `delivered` each run's arrival and size.
        pub(crate) fn take_front(&mut self, mut events: usize, mut delivered: impl FnMut(Arrival, u32)) {
            while events > 0 {
                let Some((time, count)) = self.runs.front_mut() else { return };
                let taken = (*count as usize).min(events) as u32;
                delivered(Arrival(*time), taken);
                *count -= taken;
                events -= taken as usize;
                if *count == 0 {
                    self.runs.pop_front();
                }
            }
            if self.runs.is_empty() {
                // Give a drained burst's memory back.
                self.runs.shrink_to(4);
            }
        }

        /// Keeps the oldest `events` only.
        pub(crate) fn truncate(&mut self, mut events: usize) {
            let mut runs = 0;
            for (_, count) in self.runs.iter_mut() {
                if events == 0 {
                    break;
                }
                runs += 1;
                let kept = (*count as usize).min(events);
                *count = kept as u32;
                events -= kept;
            }
            self.runs.truncate(runs);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use recorded::{Arrivals, CoreMetrics, RefusalMetrics};

/// Without the feature: nothing recorded, nothing kept.
#[cfg(not(feature = "metrics"))]
mod unrecorded {
    use std::time::{Duration, Instant};

    use super::Arrival;
    use crate::dispatch::outcome::CallOutcome;
    use crate::dispatch::stats::{DropReason, Refusal};

    #[derive(Debug)]
    pub(crate) struct RefusalMetrics;

    impl RefusalMetrics {
        pub(crate) fn new() -> RefusalMetrics {
            RefusalMetrics
        }

        pub(crate) fn refused(&self, _: Refusal) {}
    }

    #[derive(Debug)]
    pub(crate) struct CoreMetrics;

    impl CoreMetrics {
        pub(crate) fn new(_: Instant) -> CoreMetrics {
            CoreMetrics
        }

        pub(crate) fn arrival(&self, _: Instant) -> Arrival {
            Arrival()
        }

        pub(crate) fn accepted(&self, _: usize) {}

        pub(crate) fn dropped(&self, _: DropReason, _: usize) {}

        pub(crate) fn call_started(&mut self, _: usize) {}

        pub(crate) fn call_abandoned(&mut self, _: usize) {}

        pub(crate) fn call_ended(&mut self, _: &CallOutcome, _: usize, _: Duration) {}

        pub(crate) fn delivered_since(&self, _: Instant, _: Arrival, _: u32) {}

        pub(crate) fn webhook_disabled(&self) {}

        pub(crate) fn gauges(&self, _: usize, _: usize, _: usize, _: usize) {}
    }

    #[derive(Debug, Default)]
    pub(crate) struct Arrivals;

    impl Arrivals {
        pub(crate) fn push(&mut self, _: Arrival) {}

        pub(crate) fn take_front(&mut self, _: usize, _: impl FnMut(Arrival, u32)) {}

        pub(crate) fn truncate(&mut self, _: usize) {}
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) use unrecorded::{Arrivals, CoreMetrics, RefusalMetrics};

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::{Arrival, Arrivals};

    fn runs(arrivals: &mut Arrivals, events: usize) -> Vec<(Arrival, u32)> {
        let mut runs = Vec::new();
        arrivals.take_front(events, |arrival, count| runs.push((arrival, count)));
        runs
    }

    #[test]
    fn arrivals_keep_one_entry_per_run_and_stay_in_step_with_the_queue() {
        let mut arrivals = Arrivals::default();
        for time in [1, 1, 1, 2, 3, 3] {
            arrivals.push(Arrival(time));
        }
        assert_eq!(runs(&mut arrivals, 2), [(Arrival(1), 2)]);
        assert_eq!(runs(&mut arrivals, 2), [(Arrival(1), 1), (Arrival(2), 1)]);
        // Keep the oldest one (a call under way), drop the rest.
        arrivals.truncate(1);
        arrivals.push(Arrival(4));
        assert_eq!(runs(&mut arrivals, 10), [(Arrival(3), 1), (Arrival(4), 1)]);
        assert!(runs(&mut arrivals, 1).is_empty());
    }
}
