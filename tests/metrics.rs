//! With the `metrics` feature: every counter and gauge agrees with the stats
//! after each step of a scripted run on the core with refusals, failures,
//! drops of every reason, a disable and a re-enable, and after a driver's run
//! to shutdown; histograms carry one value per call (or per delivered
//! event), as the manual clock says.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Harness, INTERVAL};
use eventhook::dispatch::{DispatcherStats, DropReason, Refusal, MAX_FAILURES_IN_ROW};
use eventhook::{EventFlags, EventKind, Plan, TransportError, TransportErrorKind};
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// A metric's name and labels, as `name{label=value,...}`.
fn describe_key(key: &Key) -> String {
    let labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every value as it is (metrics-util's `DebuggingRecorder` resets them on each snapshot).
#[derive(Default)]
struct Keeping {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Values>>>,
}

impl Recorder for Keeping {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::clone(self.counters.lock().unwrap().entry(describe_key(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::clone(self.gauges.lock().unwrap().entry(describe_key(key)).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::clone(self.histograms.lock().unwrap().entry(describe_key(key)).or_default()))
    }
}

impl Keeping {
    fn counter(&self, name: &str) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters.get(name).unwrap_or_else(|| panic!("{name} not registered")).load(Ordering::Relaxed)
    }

    fn gauge(&self, name: &str) -> f64 {
        let gauges = self.gauges.lock().unwrap();
        f64::from_bits(gauges.get(name).unwrap_or_else(|| panic!("{name} not registered")).load(Ordering::Relaxed))
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        let histograms = self.histograms.lock().unwrap();
        let values = histograms.get(name).unwrap_or_else(|| panic!("{name} not registered")).0.lock().unwrap().clone();
        values
    }

    /// Every counter and gauge against `stats`.
    fn check(&self, stats: &DispatcherStats, step: &str) {
        let totals = &stats.totals;
        let counted = |name: &str, expected: u64| assert_eq!(self.counter(name), expected, "{step}: {name}");
        counted("eventhook_events_accepted_total", totals.accepted);
        counted("eventhook_events_delivered_total", totals.delivered);
        for reason in DropReason::ALL {
            counted(&format!("eventhook_events_dropped_total{{reason={}}}", reason.name()), totals.dropped(reason));
        }
        for refusal in Refusal::ALL {
            counted(&format!("eventhook_events_refused_total{{reason={}}}", refusal.name()), totals.refused(refusal));
        }
        let calls = ["delivered", "failed_status", "failed_transport"]
            .map(|outcome| self.counter(&format!("eventhook_calls_total{{outcome={outcome}}}")));
        assert_eq!(calls.iter().sum::<u64>(), totals.calls, "{step}: calls");
        assert_eq!(calls[1] + calls[2], totals.calls_failed, "{step}: failed calls");
        assert_eq!(self.gauge("eventhook_events_pending"), totals.pending as f64, "{step}: pending");
        let disabled = stats.disabled_webhooks as f64;
        assert_eq!(self.gauge("eventhook_webhooks{state=disabled}"), disabled, "{step}: disabled");
        let active = (stats.webhooks - stats.disabled_webhooks) as f64;
        assert_eq!(self.gauge("eventhook_webhooks{state=active}"), active, "{step}: active");
        let events: f64 = self.histogram("eventhook_push_events").iter().sum();
        let lags = self.histogram("eventhook_delivery_lag_seconds").len() as u64;
        assert_eq!(self.histogram("eventhook_push_events").len() as u64, totals.calls, "{step}: one value per call");
        assert_eq!(self.histogram("eventhook_call_duration_seconds").len() as u64, totals.calls, "{step}");
        assert_eq!(lags, totals.delivered, "{step}: one lag per delivered event");
        assert!(events >= totals.delivered as f64, "{step}: events in calls cover the delivered ones");
    }
}

#[test]
fn counters_and_gauges_agree_with_the_stats_through_failures_drops_and_a_disable() {
    let recorder = Keeping::default();
    // Handles are registered when the core is made: only that needs the recorder in force.
    let mut harness = metrics::with_local_recorder(&recorder, Harness::new);
    let check = |harness: &mut Harness, step: &str| recorder.check(&harness.core.stats(), step);
    let selected = EventFlags::from_kinds([EventKind::UserMessage]);
    harness.configure(Harness::config("steady").events(selected).max_batch_bytes(1024).build().unwrap());
    harness.configure(Harness::config("flaky").build().unwrap());
    harness.configure(Harness::config("small").queue_capacity(2).build().unwrap());
    harness.configure(Harness::config("free").plan(Plan::Free).build().unwrap());
    check(&mut harness, "configured");

    // Refusals of every kind but closed, and a drop at take-in.
    let _ = harness.enqueue(harness.message("steady", "a"));
    let _ = harness.enqueue(harness.message("steady", &"x".repeat(2000)));
    let chat = eventhook::ChatContext::new("conversation-1", "TelegramChannel");
    let _ = harness.enqueue(eventhook::Event::NewUser(harness.factory("steady").conversation(&chat)));
    let _ = harness.enqueue(harness.message("nobody", "no webhook"));
    let _ = harness.enqueue(harness.message("free", "free plan"));
    for text in ["1", "2", "3"] {
        let _ = harness.enqueue(harness.message("small", text));
    }
    check(&mut harness, "enqueued");
    assert_eq!(recorder.counter("eventhook_events_refused_total{reason=queue_full}"), 1);
    assert_eq!(recorder.counter("eventhook_events_dropped_total{reason=too_large}"), 1);

    // Deliveries: "a" waited exactly until its push was answered, 10 s after it started.
    harness.advance(INTERVAL);
    let pushes = harness.poll_all();
    assert_eq!(recorder.gauge("eventhook_calls_in_flight"), pushes.len() as f64);
    check(&mut harness, "pushes under way");
    harness.advance(Duration::from_secs(10));
    for push in &pushes {
        harness.answer(push, 200);
    }
    assert_eq!(recorder.gauge("eventhook_calls_in_flight"), 0.0);
    check(&mut harness, "delivered");
    assert_eq!(recorder.histogram("eventhook_delivery_lag_seconds"), [40.0; 3]);
    assert_eq!(recorder.histogram("eventhook_call_duration_seconds"), vec![10.0; pushes.len()]);

    // "flaky" fails by status and by transport until it is disabled, dropping what it held.
    for text in ["b", "c"] {
        let _ = harness.enqueue(harness.message("flaky", text));
    }
    for attempt in 0..=MAX_FAILURES_IN_ROW {
        let push = harness.next_push();
        let result = if attempt % 2 == 0 {
            Ok(http::StatusCode::INTERNAL_SERVER_ERROR)
        } else {
            Err(TransportError::new(TransportErrorKind::Io, "connection reset by peer"))
        };
        harness.core.on_push_result(&push.id, result);
        harness.collect_notices();
        check(&mut harness, &format!("failure {attempt}"));
    }
    assert_eq!(recorder.counter("eventhook_webhooks_disabled_total"), 1);
    assert_eq!(recorder.counter("eventhook_events_dropped_total{reason=disabled}"), 2);
    let _ = harness.enqueue(harness.message("flaky", "refused while disabled"));
    check(&mut harness, "disabled");

    // Re-enabled by configuring; moving a bot with pending events to the free plan drops them.
    harness.configure(Harness::config("flaky").build().unwrap());
    let _ = harness.enqueue(harness.message("small", "4"));
    harness.configure(Harness::config("small").plan(Plan::Free).build().unwrap());
    check(&mut harness, "reconfigured");

    // A call abandoned by `remove`, then shutdown with events pending.
    let _ = harness.enqueue(harness.message("flaky", "d"));
    harness.advance(INTERVAL);
    let push = harness.poll_all().pop().expect("flaky is due within an interval");
    assert_eq!(harness.core.remove("flaky").len(), 1);
    harness.answer(&push, 200);
    check(&mut harness, "removed");
    let _ = harness.enqueue(harness.message("steady", "e"));
    harness.core.close();
    let _ = harness.enqueue(harness.message("steady", "after close"));
    assert_eq!(harness.core.take_undelivered().len(), 1);
    check(&mut harness, "shut down");
    let totals = harness.core.stats().totals;
    for reason in DropReason::ALL {
        assert!(totals.dropped(reason) > 0, "the run drops for {reason}");
    }
    // Only a shared store (PostgreSQL) refuses for store_unavailable.
    for refusal in Refusal::ALL.into_iter().filter(|refusal| *refusal != Refusal::StoreUnavailable) {
        assert!(totals.refused(refusal) > 0, "the run refuses for {refusal}");
    }
}

/// Fails every call to a URL ending in `/flaky`, answers 200 to the rest.
#[derive(Debug)]
struct FailsFlaky;

#[async_trait::async_trait]
impl eventhook::Transport for FailsFlaky {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        let failing = request.uri().path().ends_with("/flaky");
        Ok(if failing { http::StatusCode::INTERNAL_SERVER_ERROR } else { http::StatusCode::OK })
    }
}

#[tokio::test]
async fn the_driver_records_what_its_stats_say_through_a_disable_and_shutdown() {
    use eventhook::dispatch::{Dispatcher, WebhookDispatcher, WebhookState};

    let recorder = Keeping::default();
    let dispatcher = metrics::with_local_recorder(&recorder, || {
        let builder = WebhookDispatcher::builder().transport(Arc::new(FailsFlaky));
        builder.runtime(Arc::new(common::TestRuntime)).build().expect("dispatcher")
    });
    let config = |bot: &str| Harness::config(bot).push_interval(Duration::from_millis(5)).build().unwrap();
    dispatcher.configure(config("steady")).unwrap();
    dispatcher.configure(config("flaky")).unwrap();
    let chat = eventhook::ChatContext::new("conversation-1", "TelegramChannel");
    for (bot, count) in [("steady", 20), ("flaky", 3)] {
        let factory = eventhook::EventFactory::new(bot, format!("{bot} account"));
        for index in 0..count {
            let event = eventhook::Event::UserMessage(factory.message(&chat, index.to_string()));
            assert!(dispatcher.enqueue(event).is_accepted());
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dispatcher.webhook_stats("flaky").is_some_and(|stats| stats.state != WebhookState::Disabled) {
        assert!(std::time::Instant::now() < deadline, "flaky was not disabled within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = dispatcher.shutdown(Duration::from_secs(2)).await;
    recorder.check(&report.stats, "after shutdown");
    assert_eq!(recorder.counter("eventhook_events_delivered_total"), 20);
    assert_eq!(recorder.counter("eventhook_events_dropped_total{reason=disabled}"), 3);
    assert_eq!(recorder.counter("eventhook_calls_total{outcome=failed_status}"), u64::from(MAX_FAILURES_IN_ROW) + 1);
    assert_eq!(recorder.counter("eventhook_webhooks_disabled_total"), 1);
}
