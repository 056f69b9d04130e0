//! Standard Webhooks signatures, against the `standardwebhooks` crate both
//! ways and the spec's test vector; then signed pushes over 127.0.0.1 from
//! the dispatcher to the axum extractor, a failed call and its retry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Harness, SECRET};
use eventhook::dispatch::Push;
use eventhook::receiver::{ReceiveError, SignatureError, WebhookReceiver, SIGNATURE_REJECTED_MESSAGE};
use eventhook::{BotSecret, Clock, ManualClock, SigningSecret};
use http::{HeaderMap, HeaderValue, StatusCode};

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SIGNING_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn signing(secret: &str) -> SigningSecret {
    SigningSecret::new(secret).unwrap()
}

fn reference(secret: &str) -> standardwebhooks::Webhook {
    standardwebhooks::Webhook::new(secret).unwrap()
}

fn at(unix_seconds: i64) -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(DateTime::<Utc>::from_timestamp(unix_seconds, 0).unwrap()))
}

fn receiver(clock: Arc<ManualClock>, secrets: &[&str]) -> WebhookReceiver {
    WebhookReceiver::new(BotSecret::new(SECRET).unwrap())
        .signing_secrets(secrets.iter().map(|secret| signing(secret)))
        .clock(clock)
}

fn signed_headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap());
    headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert("webhook-signature", HeaderValue::from_str(signature).unwrap());
    headers
}

/// The spec's example (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
#[test]
fn the_spec_test_vector_is_what_the_reference_signs_and_what_we_accept() {
    let (id, timestamp, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(reference(SIGNING_SECRET).sign(id, timestamp, body).unwrap(), expected);
    let receiver = receiver(at(timestamp), &[SIGNING_SECRET]);
    let headers = signed_headers(id, timestamp, expected);
    assert_eq!(receiver.verify_signature(&headers, body), Ok(Some(id.to_owned())));
    // One byte of the body changed.
    assert_eq!(receiver.verify_signature(&headers, br#"{"test": 2432232315}"#), Err(SignatureError::NoMatch));
}

/// A core whose wall clock is the real time, as the reference verifies against it.
fn signed_push(secrets: &[&str]) -> (Harness, Push) {
    let mut harness = Harness::with_clock(Arc::new(ManualClock::starting_at(Utc::now())));
    harness.configure(Harness::config("bot").signing_secrets(secrets.iter().copied()).build().unwrap());
    for text in ["Hello there!", "é ✓ \u{1F600}"] {
        let _ = harness.enqueue(harness.message("bot", text));
    }
    let push = harness.next_push();
    (harness, push)
}

#[test]
fn the_reference_verifies_our_pushes_and_their_retries() {
    let (mut harness, push) = signed_push(&[SIGNING_SECRET]);
    reference(SIGNING_SECRET).verify(push.request.body(), push.request.headers()).unwrap();
    assert!(reference(OTHER_SIGNING_SECRET).verify(push.request.body(), push.request.headers()).is_err());
    harness.answer(&push, 500);
    let retry = harness.next_push();
    reference(SIGNING_SECRET).verify(retry.request.body(), retry.request.headers()).unwrap();
    assert_eq!(retry.request.headers()["webhook-id"], push.request.headers()["webhook-id"]);
}

#[test]
fn during_a_rotation_the_reference_verifies_with_either_secret() {
    let (_harness, push) = signed_push(&[OTHER_SIGNING_SECRET, SIGNING_SECRET]);
    for secret in [OTHER_SIGNING_SECRET, SIGNING_SECRET] {
        reference(secret).verify(push.request.body(), push.request.headers()).unwrap();
    }
}

#[test]
fn our_receiver_accepts_what_the_reference_signs() {
    let (harness, push) = signed_push(&[]);
    let body = push.request.body();
    let now = harness.clock.wall_time().timestamp();
    let signature = reference(SIGNING_SECRET).sign("msg_2Lh9KRb0pzN4LePd3XYs", now, body).unwrap();
    let headers = signed_headers("msg_2Lh9KRb0pzN4LePd3XYs", now, &signature);
    let received = receiver(harness.clock.clone(), &[SIGNING_SECRET]).receive_push(&headers, body).unwrap();
    assert_eq!(received.webhook_id.as_deref(), Some("msg_2Lh9KRb0pzN4LePd3XYs"));
    assert_eq!(received.events, eventhook::wire::parse_push(body).unwrap());
    // With the secrets rotated, the old one still listed.
    let rotated = receiver(harness.clock.clone(), &[OTHER_SIGNING_SECRET, SIGNING_SECRET]);
    assert!(rotated.receive_push(&headers, body).is_ok());
    // Several signatures, one of them right, one of an unknown scheme.
    let several = format!("v1,{} v2,abc {signature}", "A".repeat(44));
    assert!(rotated.receive_push(&signed_headers("msg_2Lh9KRb0pzN4LePd3XYs", now, &several), body).is_ok());
}

fn refusal(receiver: &WebhookReceiver, headers: &HeaderMap, body: &[u8]) -> SignatureError {
    let error = receiver.receive_push(headers, body).unwrap_err();
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED, "{error}");
    assert_eq!(error.public_message(), SIGNATURE_REJECTED_MESSAGE, "the reason is not in the answer");
    let ReceiveError::BadSignature(reason) = error else { panic!("{error:?}") };
    reason
}

#[test]
fn missing_wrong_and_stale_signatures_are_401_with_the_reason_in_the_error() {
    let clock = at(1_700_000_000);
    let now = 1_700_000_000;
    let body = b"[]";
    let receiver = receiver(clock.clone(), &[SIGNING_SECRET]);
    let sign = |timestamp: i64| reference(SIGNING_SECRET).sign("msg_1", timestamp, body).unwrap();
    assert!(receiver.receive_push(&signed_headers("msg_1", now, &sign(now)), body).is_ok());

    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut headers = signed_headers("msg_1", now, &sign(now));
        headers.remove(header);
        assert_eq!(refusal(&receiver, &headers, body), SignatureError::Missing { header });
        let mut headers = signed_headers("msg_1", now, &sign(now));
        headers.append(header, HeaderValue::from_static("1"));
        assert_eq!(refusal(&receiver, &headers, body), SignatureError::Multiple { header });
    }
    let mut headers = signed_headers("msg_1", now, &sign(now));
    headers.insert("webhook-timestamp", HeaderValue::from_static("soon"));
    assert_eq!(refusal(&receiver, &headers, body), SignatureError::Malformed { header: "webhook-timestamp" });

    let other = reference(OTHER_SIGNING_SECRET).sign("msg_1", now, body).unwrap();
    assert_eq!(refusal(&receiver, &signed_headers("msg_1", now, &other), body), SignatureError::NoMatch);
    assert_eq!(refusal(&receiver, &signed_headers("msg_2", now, &sign(now)), body), SignatureError::NoMatch);
    assert_eq!(refusal(&receiver, &signed_headers("msg_1", now, &sign(now)), b"[ ]"), SignatureError::NoMatch);
    assert_eq!(refusal(&receiver, &signed_headers("msg_1", now, "v1,"), body), SignatureError::NoMatch);
    // Signed for one time, sent with another.
    assert_eq!(refusal(&receiver, &signed_headers("msg_1", now - 1, &sign(now)), body), SignatureError::NoMatch);

    // A replay after the tolerance, and a timestamp too far ahead.
    let old = now - 301;
    let reason = refusal(&receiver, &signed_headers("msg_1", old, &sign(old)), body);
    assert_eq!(reason, SignatureError::TooOld { seconds: 301, tolerance: 300 });
    assert!(receiver.receive_push(&signed_headers("msg_1", now - 300, &sign(now - 300)), body).is_ok());
    let ahead = now + 301;
    let reason = refusal(&receiver, &signed_headers("msg_1", ahead, &sign(ahead)), body);
    assert_eq!(reason, SignatureError::InFuture { seconds: 301, tolerance: 300 });
    assert_eq!(
        refusal(&receiver, &signed_headers("msg_1", i64::MIN, &sign(i64::MIN)), body),
        SignatureError::TooOld { seconds: 1_700_000_000 + (1 << 63), tolerance: 300 }
    );

    // The tolerance is configurable, and the clock moves.
    let strict = receiver.clone().timestamp_tolerance(Duration::from_secs(10));
    let reason = refusal(&strict, &signed_headers("msg_1", now - 11, &sign(now - 11)), body);
    assert_eq!(reason, SignatureError::TooOld { seconds: 11, tolerance: 10 });
    let headers = signed_headers("msg_1", now, &sign(now));
    clock.advance(Duration::from_secs(301));
    assert_eq!(refusal(&receiver, &headers, body), SignatureError::TooOld { seconds: 301, tolerance: 300 });
}

#[test]
fn the_bearer_stays_checked_first_and_unsigned_receivers_ignore_signatures() {
    let now = 1_700_000_000;
    let signature = reference(SIGNING_SECRET).sign("msg_1", now, b"[]").unwrap();
    let mut headers = signed_headers("msg_1", now, &signature);
    headers.insert("authorization", HeaderValue::from_static("Bearer wrong"));
    let error = receiver(at(now), &[SIGNING_SECRET]).receive_push(&headers, b"[]").unwrap_err();
    assert!(matches!(error, ReceiveError::Unauthorized(_)), "{error:?}");

    let unsigned = WebhookReceiver::new(BotSecret::new(SECRET).unwrap());
    let headers = signed_headers("msg_1", now, "v1,not-checked");
    let push = unsigned.receive_push(&headers, b"[]").unwrap();
    assert_eq!(push.webhook_id, None);
    assert!(unsigned.receive(&headers, b"[]").unwrap().is_empty());
}

#[test]
fn errors_and_debug_never_show_signing_secrets() {
    let receiver = receiver(at(0), &[SIGNING_SECRET]);
    let key = SIGNING_SECRET.trim_start_matches("whsec_");
    let error = receiver.receive_push(&signed_headers("msg_1", 0, "v1,AAAA"), b"[]").unwrap_err();
    let config = Harness::config("bot").signing_secrets([SIGNING_SECRET]).build().unwrap();
    let bad = Harness::config("bot").signing_secrets([format!("{SIGNING_SECRET}!")]).build().unwrap_err();
    for shown in
        [format!("{receiver:?}"), format!("{error} {error:?}"), format!("{config:?}"), format!("{bad} {bad:?}")]
    {
        assert!(!shown.contains(key), "{shown}");
    }
    assert_eq!(bad.to_string(), "invalid signing secret: what follows \"whsec_\" is not base64");
}

/// Signed pushes from the dispatcher (reqwest, tokio) to the axum extractor
/// on 127.0.0.1: the first call is answered 500 after its id was seen, the
/// retry carries the same id and body and is accepted.
#[cfg(all(feature = "reqwest", feature = "tokio", feature = "axum"))]
#[tokio::test]
async fn over_http_a_retry_reaches_the_extractor_with_the_same_id() {
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::routing::post;
    use eventhook::adapters::{ReqwestTransport, TokioRuntime};
    use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
    use eventhook::receiver::VerifiedPush;
    use eventhook::{ChatContext, WebhookConfig};

    type Seen = Arc<Mutex<Vec<(Option<String>, usize)>>>;
    #[derive(Clone)]
    struct App {
        receiver: WebhookReceiver,
        seen: Seen,
    }
    impl axum::extract::FromRef<App> for WebhookReceiver {
        fn from_ref(app: &App) -> WebhookReceiver {
            app.receiver.clone()
        }
    }
    async fn handler(State(app): State<App>, push: VerifiedPush) -> StatusCode {
        let mut seen = app.seen.lock().unwrap();
        seen.push((push.webhook_id, push.events.len()));
        // The first call fails after it was seen, as from a receiver that crashed mid-way.
        if seen.len() == 1 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }

    fn seen_count(seen: &Seen) -> usize {
        seen.lock().unwrap().len()
    }

    let receiver = WebhookReceiver::new(BotSecret::new(SECRET).unwrap()).signing_secrets([signing(SIGNING_SECRET)]);
    let seen: Seen = Arc::default();
    let app = axum::Router::new().route("/events", post(handler)).with_state(App { receiver, seen: seen.clone() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let transport = ReqwestTransport::builder().allow_private_networks(true).build().unwrap();
    let dispatcher = WebhookDispatcher::builder()
        .transport(Arc::new(transport))
        .runtime(Arc::new(TokioRuntime::current()))
        .build()
        .unwrap();
    let config = WebhookConfig::builder("bot", "Matelab Srl", format!("http://{address}/events"), SECRET)
        .push_interval(Duration::from_millis(40))
        .signing_secrets([SIGNING_SECRET])
        .build()
        .unwrap();
    let factory = config.event_factory();
    dispatcher.configure(config).unwrap();
    let chat = ChatContext::new("conversation-1", "TelegramChannel");
    for text in ["one", "two", "three"] {
        assert!(dispatcher.enqueue(eventhook::Event::UserMessage(factory.message(&chat, text))).is_accepted());
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        while dispatcher.stats().totals.delivered < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("delivered in time");
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], calls[1], "the same call twice: id and events");
    assert!(calls[0].0.as_deref().is_some_and(|id| id.starts_with("msg_")), "{calls:?}");
    assert_eq!(dispatcher.stats().totals.calls_failed, 1);

    // Bearer right, no signature: 401, and the answer does not say which check failed or why.
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{address}/events"))
        .header("authorization", format!("Bearer {SECRET}"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(answer.text().await.unwrap(), SIGNATURE_REJECTED_MESSAGE);
    assert_eq!(seen_count(&seen), 2, "the handler never saw it");
    server.abort();
}
