//! The receiver on any request: the first byte picks the `Authorization`
//! header (right bearer, wrong one, malformed, none) and the rest is the
//! body. It never panics, accepts only the right bearer, and accepts a body
//! exactly when `parse_push` does, with the same events.
#![no_main]

use eventhook::receiver::WebhookReceiver;
use eventhook::BotSecret;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-bot-secret";

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else { return };
    let mut headers = HeaderMap::new();
    let authorization: Option<&[u8]> = match selector % 5 {
        0 => Some(b"Bearer fuzz-bot-secret"),
        1 => Some(b"bearer fuzz-bot-secret"),
        2 => Some(b"Bearer fuzz-bot-secreT"),
        3 => Some(b"Basic fuzz-bot-secret"),
        _ => None,
    };
    if let Some(value) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(value).expect("a valid header value"));
    }
    let Ok(secret) = BotSecret::new(SECRET) else { return };
    let receiver = WebhookReceiver::new(secret);
    let authorized = receiver.verify(&headers).is_ok();
    match receiver.receive(&headers, body) {
        Ok(events) => {
            assert!(authorized, "accepted without the right bearer");
            assert_eq!(eventhook::wire::parse_push(body).ok(), Some(events), "the receiver and parse_push disagree");
        }
        Err(_) => {
            if authorized && body.len() <= receiver.body_limit() {
                assert!(eventhook::wire::parse_push(body).is_err(), "refused a push parse_push accepts");
            }
        }
    }
});
