//! The dispatcher and the reqwest transport against misbehaving receivers on
//! 127.0.0.1 (see `faults`): each fault ends the way the platform's rules
//! say, within the webhook's timeout, and no event is lost.
#![cfg(all(feature = "reqwest", feature = "tokio"))]

mod common;
mod faults;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestRuntime;
use eventhook::adapters::ReqwestTransport;
use eventhook::dispatch::{Dispatcher, WebhookDispatcher, WebhookState};
use eventhook::{ChatContext, Event, EventFactory, WebhookConfig, WebhookConfigBuilder};
use faults::{Behaviour, FaultyReceiver, HUGE_BODY_BYTES, SECRET};

/// The webhooks' request timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(1000);
/// A bound for a whole test, far above what it needs.
const TEST_LIMIT: Duration = Duration::from_secs(20);

fn dispatcher(transport_timeout: Duration) -> WebhookDispatcher {
    let transport = ReqwestTransport::builder()
        .allow_private_networks(true)
        .request_timeout(transport_timeout)
        .build()
        .expect("transport");
    WebhookDispatcher::builder().transport(Arc::new(transport)).runtime(Arc::new(TestRuntime)).build().unwrap()
}

fn config(bot: &str, url: &str) -> WebhookConfigBuilder {
    WebhookConfig::builder(bot, "Account", url, SECRET).request_timeout(TIMEOUT)
}

fn enqueue(dispatcher: &WebhookDispatcher, bot: &str, count: usize) -> Vec<String> {
    let factory = EventFactory::new(bot, "Account");
    let chat = ChatContext::new("conversation", "TelegramChannel");
    (0..count)
        .map(|index| {
            let text = format!("{bot}-{index}");
            assert!(dispatcher.enqueue(Event::UserMessage(factory.message(&chat, text.as_str()))).is_accepted());
            text
        })
        .collect()
}

/// One case: a receiver's behaviour and how the one call to it must end.
struct Case {
    name: &'static str,
    behaviour: Option<Behaviour>,
    accept_any_2xx: bool,
    delivered: bool,
    /// Text the failure must name (`last_failure`).
    failure: &'static str,
}

fn case(name: &'static str, behaviour: Behaviour, delivered: bool, failure: &'static str) -> Case {
    Case { name, behaviour: Some(behaviour), accept_any_2xx: false, delivered, failure }
}

/// Every fault of issue 11 at once, one webhook each, one flush (one attempt per webhook).
#[tokio::test]
async fn each_fault_ends_the_call_as_the_rules_say_within_the_timeout() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cases = vec![
            case("ok", Behaviour::Status(200), true, ""),
            case("status-500", Behaviour::Status(500), false, "answered 500"),
            case("status-404", Behaviour::Status(404), false, "answered 404"),
            case("status-204", Behaviour::Status(204), false, "answered 204"),
            Case { accept_any_2xx: true, ..case("status-204-any-2xx", Behaviour::Status(204), true, "") },
            case("redirect-301", Behaviour::Status(301), false, "answered 301"),
            case("slower-than-timeout", Behaviour::Slow(TIMEOUT * 2), false, "timed out"),
            case("just-under-timeout", Behaviour::Slow(TIMEOUT / 2), true, ""),
            case("reset-before-reply", Behaviour::Reset, false, ""),
            Case { name: "refused", behaviour: None, accept_any_2xx: false, delivered: false, failure: "connection" },
            case("headers-then-stall", Behaviour::HeadersThenStall, false, "timed out"),
            case("ok-then-stalled-body", Behaviour::OkThenStalledBody, true, ""),
            case("huge-body", Behaviour::HugeBody, true, ""),
            case("garbage", Behaviour::Garbage, false, ""),
        ];
        let dispatcher = dispatcher(Duration::from_secs(10));
        let mut receivers = Vec::new();
        for case in &cases {
            let receiver = match case.behaviour {
                Some(behaviour) => Some(FaultyReceiver::start(behaviour).await),
                None => None,
            };
            let url = receiver.as_ref().map_or_else(faults::refused_url, FaultyReceiver::url);
            dispatcher.configure(config(case.name, &url).accept_any_2xx(case.accept_any_2xx).build().unwrap()).unwrap();
            receivers.push(receiver);
        }
        let sent: Vec<Vec<String>> = cases.iter().map(|case| enqueue(&dispatcher, case.name, 3)).collect();

        let started = Instant::now();
        let _ = dispatcher.flush(TEST_LIMIT).await;
        let took = started.elapsed();
        // Every call is over within one timeout (plus scheduling), however its receiver misbehaves.
        assert!(took < TIMEOUT * 3, "flush took {took:?}");

        for ((case, receiver), sent) in cases.iter().zip(&receivers).zip(&sent) {
            let stats = dispatcher.webhook_stats(case.name).unwrap();
            assert_eq!(stats.state, WebhookState::Active, "{}", case.name);
            assert_eq!(stats.counts.calls, 1, "{}: one attempt", case.name);
            assert!(stats.counts.is_balanced(), "{}: {:?}", case.name, stats.counts);
            if case.delivered {
                assert_eq!((stats.counts.delivered, stats.counts.calls_failed), (3, 0), "{}: {stats:?}", case.name);
            } else {
                let failure = stats.last_failure.clone().unwrap_or_default();
                assert_eq!((stats.counts.pending, stats.counts.calls_failed), (3, 1), "{}: {stats:?}", case.name);
                assert!(failure.contains(case.failure), "{}: {failure}", case.name);
                if !case.failure.starts_with("answered") {
                    assert!(!failure.starts_with("answered"), "{}: no status arrived: {failure}", case.name);
                }
            }
            if let Some(receiver) = receiver {
                assert_eq!(receiver.state.requests.load(Ordering::SeqCst), 1, "{}", case.name);
                assert!(
                    receiver.state.refused.lock().unwrap().is_empty(),
                    "{}: the crate's receiver accepts the push",
                    case.name
                );
                if case.behaviour.is_some_and(Behaviour::answers_200) {
                    assert_eq!(&receiver.acknowledged(), sent, "{}", case.name);
                }
            }
        }
        let huge = receivers[cases.iter().position(|case| case.name == "huge-body").unwrap()].as_ref().unwrap();
        let written = huge.state.huge_bytes_written.load(Ordering::SeqCst);
        assert!(written < HUGE_BODY_BYTES / 2, "the 50 MB body was not read: {written} bytes written");

        let report = dispatcher.shutdown(Duration::from_millis(10)).await;
        assert!(report.stats.totals.is_balanced());
        let undelivered = cases.iter().filter(|case| !case.delivered).count() * 3;
        assert_eq!(report.undelivered.len(), undelivered, "the failed calls' events are handed back");
    })
    .await
    .expect("bounded in time");
}

/// Issue 11: `200 OK` then a body that never ends was counted failed (the
/// webhook's 1 s deadline fired while the transport read the body), the batch
/// was sent again, and the call held the webhook's only call slot until the
/// transport's own 10 s timeout. The status decides, within one timeout.
#[tokio::test]
async fn a_200_whose_body_stalls_is_delivered_at_once_and_frees_the_webhook() {
    tokio::time::timeout(TEST_LIMIT, async {
        // The transport's timeout longer than the webhook's (the reported case), then equal.
        for transport_timeout in [Duration::from_secs(10), TIMEOUT] {
            let stalling = FaultyReceiver::start(Behaviour::OkThenStalledBody).await;
            let good = FaultyReceiver::start(Behaviour::Status(200)).await;
            let dispatcher = dispatcher(transport_timeout);
            dispatcher.configure(config("bot", &stalling.url()).build().unwrap()).unwrap();
            let first = enqueue(&dispatcher, "bot", 5);

            let started = Instant::now();
            let flushed = dispatcher.flush(TEST_LIMIT).await;
            let took = started.elapsed();
            assert_eq!(flushed, Ok(()), "{transport_timeout:?}");
            assert!(took < TIMEOUT, "{transport_timeout:?}: decided by the status, not a timeout: {took:?}");
            let counts = dispatcher.webhook_stats("bot").unwrap().counts;
            assert_eq!((counts.delivered, counts.calls, counts.calls_failed, counts.in_flight), (5, 1, 0, 0));
            assert_eq!(stalling.acknowledged(), first, "sent once");

            // The webhook's call slot is free: the next flush delivers to the new receiver.
            dispatcher.configure(config("bot", &good.url()).build().unwrap()).unwrap();
            let second = enqueue(&dispatcher, "bot", 5);
            assert_eq!(dispatcher.flush(TEST_LIMIT).await, Ok(()));
            assert_eq!(good.acknowledged(), second);
            assert_eq!(dispatcher.webhook_stats("bot").unwrap().counts.delivered, 10);
            assert_eq!(stalling.state.requests.load(Ordering::SeqCst), 1, "no duplicate");
            let _ = dispatcher.shutdown(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("bounded in time");
}
