//! The receiving side: checking the bearer and parsing pushes.
//!
//! The platform POSTs each push to the bot owner's URL with
//! `Authorization: Bearer <bot API secret>` and a JSON array of events as
//! body. A [`WebhookReceiver`] holds the bot's secret and, for one request,
//! checks the bearer first (in constant time, before looking at the body),
//! then the body's size, then parses it into typed [`Event`]s:
//!
//! ```
//! use eventhook::receiver::WebhookReceiver;
//! use eventhook::BotSecret;
//! use http::{header, HeaderMap, HeaderValue, StatusCode};
//!
//! let receiver = WebhookReceiver::new(BotSecret::new("s3cr3t").unwrap()).max_body_bytes(64 * 1024);
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
//! let error = receiver.receive(&headers, b"[]").unwrap_err();
//! assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
//! assert!(!format!("{error} {error:?}").contains("s3cr3t"));
//! ```
//!
//! How to answer: `200 OK` (exactly; the body is ignored) when
//! [`receive`](WebhookReceiver::receive) succeeds, otherwise
//! [`ReceiveError::status`] with [`ReceiveError::public_message`]. Any other
//! answer than `200` is a failed push that the platform retries, and more
//! than 10 in a row disable the webhook.
//!
//! With the `axum` feature, [`VerifiedPush`] does all of this as an axum
//! extractor, answering with a `PushRejection` when it refuses a push.
//!
//! A receiver given the webhook's signing secrets
//! ([`signing_secrets`](WebhookReceiver::signing_secrets)) also checks the
//! Standard Webhooks headers of every push, after the bearer and the body's
//! size and before parsing: a `webhook-signature` made with one of the
//! secrets over `webhook-id`, `webhook-timestamp` and the body (compared in
//! constant time), and a timestamp within a tolerance of the receiver's
//! clock (5 minutes by default). The push's `webhook-id`, the same on every
//! attempt of a call, is handed over with its events
//! ([`VerifiedPush::webhook_id`]), so that a call already processed can be
//! dropped when it comes again:
//!
//! ```
//! use eventhook::receiver::{ReceiveError, SignatureError, WebhookReceiver};
//! use eventhook::{BotSecret, SigningSecret};
//! use http::{HeaderMap, HeaderValue, StatusCode};
//!
//! let signing = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let receiver = WebhookReceiver::new(BotSecret::new("s3cr3t")?).signing_secrets([signing]);
//! let mut headers = HeaderMap::new();
//! headers.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
//! let error = receiver.receive_push(&headers, b"[]").unwrap_err(); // no signature
//! assert!(matches!(error, ReceiveError::BadSignature(SignatureError::Missing { header: "webhook-id" })));
//! assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `Content-Type` is not checked: the platform always sends
//! `application/json; charset=utf-8`, the body is parsed strictly anyway, and
//! refusing a push because a proxy rewrote the header would lose it for no
//! gain in safety (the bearer is what authenticates the call).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, AUTHORIZATION};
use http::StatusCode;

use crate::clock::{Clock, SystemClock};
use crate::config::BotSecret;
use crate::event::Event;
use crate::signing::{self, SigningSecret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use crate::wire::{self, ParseError, ParseOptions};

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "axum")]
pub use self::axum::PushRejection;

/// The default most bytes of a push body: 1 MiB, as [`wire::DEFAULT_MAX_BODY_BYTES`].
pub const DEFAULT_MAX_BODY_BYTES: usize = wire::DEFAULT_MAX_BODY_BYTES;

/// The body of every `401` answer, the same whatever was wrong with the bearer.
pub const UNAUTHORIZED_MESSAGE: &str = "missing or invalid bearer token";

/// The body of every `401` answer for a push whose signature was refused,
/// the same whatever was wrong (the reason is in the [`SignatureError`]).
pub const SIGNATURE_REJECTED_MESSAGE: &str = "missing or invalid webhook signature";

/// How far a push's `webhook-timestamp` may be from the receiver's clock,
/// either way, by default: 5 minutes, as the Standard Webhooks libraries.
pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a push's Standard Webhooks signature was refused.
///
/// The variants tell the causes apart for logs; an HTTP answer does not
/// (every one is a `401` with [`SIGNATURE_REJECTED_MESSAGE`]). No variant
/// holds a secret or a received signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A `webhook-*` header is missing.
    #[error("no {header} header")]
    Missing {
        /// The header's name.
        header: &'static str,
    },
    /// A `webhook-*` header is given more than once.
    #[error("more than one {header} header")]
    Multiple {
        /// The header's name.
        header: &'static str,
    },
    /// A `webhook-*` header is empty, not visible ASCII, or (the timestamp)
    /// not a number of seconds.
    #[error("the {header} header is malformed")]
    Malformed {
        /// The header's name.
        header: &'static str,
    },
    /// The timestamp is older than the tolerance allows: a replay, or a clock far behind.
    #[error("the webhook-timestamp is {seconds} s old; at most {tolerance} s are allowed")]
    TooOld {
        /// How old, in seconds.
        seconds: u64,
        /// The receiver's tolerance, in seconds.
        tolerance: u64,
    },
    /// The timestamp is further ahead than the tolerance allows.
    #[error("the webhook-timestamp is {seconds} s in the future; at most {tolerance} s are allowed")]
    InFuture {
        /// How far ahead, in seconds.
        seconds: u64,
        /// The receiver's tolerance, in seconds.
        tolerance: u64,
    },
    /// No `v1` signature matches any of the receiver's secrets for this id,
    /// timestamp and body.
    #[error("no v1 signature in webhook-signature matches the signing secrets")]
    NoMatch,
}

/// Why a request's bearer was refused.
///
/// The variants tell the causes apart for logs; an HTTP answer must not
/// (every one is a `401` with [`UNAUTHORIZED_MESSAGE`]). No variant holds the
/// received token or the expected secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    Multiple,
    /// The header value is not visible ASCII.
    #[error("the Authorization header is not visible ASCII")]
    NotAscii,
    /// The scheme is not `Bearer`.
    #[error("the Authorization scheme is not Bearer")]
    NotBearer,
    /// `Bearer` without a token.
    #[error("the Authorization header has no bearer token")]
    EmptyToken,
    /// The token is not the bot secret.
    #[error("the bearer token does not match the bot secret")]
    WrongToken,
}

/// Checks that `headers` carry exactly one `Authorization: Bearer <secret>`.
///
/// The scheme is matched case-insensitively; spaces or tabs may separate it
/// from the token, and spaces or tabs after the token are ignored. The token
/// is compared with the secret in time that does not depend on their content
/// (only on their lengths).
///
/// ```
/// use eventhook::receiver::{verify_bearer, AuthError};
/// use eventhook::BotSecret;
/// use http::{header, HeaderMap, HeaderValue};
///
/// let secret = BotSecret::new("s3cr3t").unwrap();
/// let mut headers = HeaderMap::new();
/// assert_eq!(verify_bearer(&headers, &secret), Err(AuthError::Missing));
/// headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer s3cr3t"));
/// assert_eq!(verify_bearer(&headers, &secret), Ok(()));
/// ```
pub fn verify_bearer(headers: &HeaderMap, secret: &BotSecret) -> Result<(), AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Multiple);
    }
    let value = value.to_str().map_err(|_| AuthError::NotAscii)?;
    let token = bearer_token(value)?;
    if constant_time_eq(token.as_bytes(), secret.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::WrongToken)
    }
}

/// The token of a `Bearer <token>` header value.
fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let is_blank = |character: char| character == ' ' || character == '\t';
    let value = value.trim_matches(is_blank);
    let (scheme, token) = match value.find(is_blank) {
        Some(position) => (&value[..position], value[position..].trim_start_matches(is_blank)),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(AuthError::NotBearer);
    }
    if token.is_empty() {
        return Err(AuthError::EmptyToken);
    }
    Ok(token)
}

/// Whether `left` and `right` are equal, in time that depends on their
/// lengths only, never on their content: every byte up to the longer length
/// is compared (the shorter one padded with zeros) and the length difference
/// is folded in, with no early exit.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    let length = left.len().max(right.len());
    let mut difference: u8 = 0;
    for index in 0..length {
        let left_byte = left.get(index).copied().unwrap_or(0);
        let right_byte = right.get(index).copied().unwrap_or(0);
        difference |= left_byte ^ right_byte;
    }
    let length_difference = (left.len() ^ right.len()) as u64;
    std::hint::black_box(u64::from(difference) | length_difference) == 0
}

/// Why a push was refused, with the HTTP status to answer.
///
/// Never holds the bot secret or the received token. A framework other than
/// axum answers with [`status`](Self::status) and
/// [`public_message`](Self::public_message), and logs the error itself:
///
/// ```
/// use eventhook::receiver::WebhookReceiver;
/// use eventhook::BotSecret;
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// let receiver = WebhookReceiver::new(BotSecret::new("s3cr3t").unwrap());
/// // What any HTTP framework hands its handler: the headers and the body.
/// fn handle(receiver: &WebhookReceiver, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
///     match receiver.receive(headers, body) {
///         Ok(events) => (StatusCode::OK, format!("{} events", events.len())),
///         Err(error) => {
///             eprintln!("refused push: {error}"); // the full reason, for your logs
///             (error.status(), error.public_message())
///         }
///     }
/// }
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(handle(&receiver, &headers, b"[]").0, StatusCode::UNAUTHORIZED);
/// headers.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
/// assert_eq!(handle(&receiver, &headers, b"[]"), (StatusCode::OK, "0 events".to_owned()));
/// assert_eq!(handle(&receiver, &headers, b"[{}]").0, StatusCode::BAD_REQUEST);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The bearer is missing or wrong: `401`.
    #[error("{UNAUTHORIZED_MESSAGE} ({0})")]
    Unauthorized(#[from] AuthError),
    /// The receiver checks signatures and this push's is missing, wrong or
    /// out of date: `401`.
    #[error("{SIGNATURE_REJECTED_MESSAGE} ({0})")]
    BadSignature(#[from] SignatureError),
    /// The body is larger than the receiver's limit: `413`.
    #[error("push body too large: {} (the limit is {limit} bytes)", describe_size(*size))]
    BodyTooLarge {
        /// The body's size in bytes, when known (from `Content-Length` or a
        /// complete body; unknown when reading stopped at the limit).
        size: Option<u64>,
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not a valid push: `400`. The message says what is wrong
    /// and where (entry index and key).
    #[error("invalid push body: {0}")]
    InvalidBody(#[source] ParseError),
    /// The body could not be read (the connection failed): `400`.
    #[error("the push body could not be read: {0}")]
    BodyRead(String),
}

fn describe_size(size: Option<u64>) -> String {
    match size {
        Some(size) => format!("{size} bytes"),
        None => "more bytes than allowed".to_owned(),
    }
}

impl ReceiveError {
    /// The status to answer: `401` for any bearer or signature problem,
    /// `413` for a body over the limit, `400` for a body that is not a valid push.
    pub fn status(&self) -> StatusCode {
        match self {
            ReceiveError::Unauthorized(_) | ReceiveError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ReceiveError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ReceiveError::InvalidBody(_) | ReceiveError::BodyRead(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The text to answer with: [`UNAUTHORIZED_MESSAGE`] for every bearer
    /// problem (so a caller cannot tell a missing bearer from a wrong one),
    /// [`SIGNATURE_REJECTED_MESSAGE`] for every signature problem (a replay
    /// is not told its timestamp is stale), otherwise the error's message.
    pub fn public_message(&self) -> String {
        match self {
            ReceiveError::Unauthorized(_) => UNAUTHORIZED_MESSAGE.to_owned(),
            ReceiveError::BadSignature(_) => SIGNATURE_REJECTED_MESSAGE.to_owned(),
            other => other.to_string(),
        }
    }
}

/// A push whose bearer (and signature, when the receiver checks them) was
/// verified and whose body was parsed: what
/// [`WebhookReceiver::receive_push`] returns, and, with the `axum` feature,
/// an axum extractor that answers a refused push with a `PushRejection`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedPush {
    /// The push's events, in the order of the array.
    pub events: Vec<Event>,
    /// The call's `webhook-id`, when the receiver checks signatures: the
    /// same on every attempt of a call, so a push whose id was already
    /// processed can be answered `200` and dropped. `None` when the
    /// receiver has no signing secrets.
    pub webhook_id: Option<String>,
}

/// Verifies and parses the pushes of one bot.
///
/// Cheap to clone (the secrets are shared); `Debug` does not show them.
///
/// ```
/// use eventhook::receiver::WebhookReceiver;
/// use eventhook::BotSecret;
///
/// let receiver = WebhookReceiver::new(BotSecret::new("s3cr3t").unwrap());
/// assert_eq!(receiver.body_limit(), 1024 * 1024);
/// assert!(!format!("{receiver:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct WebhookReceiver {
    secret: Arc<BotSecret>,
    max_body_bytes: usize,
    /// Empty: signatures are not checked.
    signing_secrets: Arc<[SigningSecret]>,
    timestamp_tolerance: Duration,
    clock: Arc<dyn Clock>,
}

impl WebhookReceiver {
    /// A receiver for the bot whose API secret is `secret`, with a body limit
    /// of [`DEFAULT_MAX_BODY_BYTES`], checking no signatures.
    pub fn new(secret: BotSecret) -> WebhookReceiver {
        WebhookReceiver {
            secret: Arc::new(secret),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            signing_secrets: Arc::new([]),
            timestamp_tolerance: DEFAULT_TIMESTAMP_TOLERANCE,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the most bytes a push body may have (default 1 MiB); a larger
    /// body is refused with `413`. Keep it at least the sender's batch limit.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> WebhookReceiver {
        self.max_body_bytes = bytes;
        self
    }

    /// Checks the Standard Webhooks signature of every push against these
    /// secrets (the webhook's, all of them during a rotation): a push must
    /// carry a signature made with one of them. No secrets (the default):
    /// signatures are not checked.
    #[must_use]
    pub fn signing_secrets(mut self, secrets: impl IntoIterator<Item = SigningSecret>) -> WebhookReceiver {
        self.signing_secrets = secrets.into_iter().collect();
        self
    }

    /// How far a push's `webhook-timestamp` may be from the receiver's
    /// clock, either way (default [`DEFAULT_TIMESTAMP_TOLERANCE`], 5 minutes).
    /// Seconds count: fractions are dropped.
    #[must_use]
    pub fn timestamp_tolerance(mut self, tolerance: Duration) -> WebhookReceiver {
        self.timestamp_tolerance = tolerance;
        self
    }

    /// The clock timestamps are checked against (default [`SystemClock`];
    /// tests use a [`ManualClock`](crate::ManualClock)).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> WebhookReceiver {
        self.clock = clock;
        self
    }

    /// The most bytes a push body may have.
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes
    }

    /// Checks the bearer of a request; see [`verify_bearer`].
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        verify_bearer(headers, &self.secret)
    }

    /// Checks a push's Standard Webhooks headers against the receiver's
    /// signing secrets and returns its `webhook-id`; `Ok(None)` when the
    /// receiver has no signing secrets. The timestamp is checked first, then
    /// every `v1` signature against every secret, in constant time.
    pub fn verify_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, SignatureError> {
        if self.signing_secrets.is_empty() {
            return Ok(None);
        }
        let id = single_header(headers, WEBHOOK_ID)?;
        let timestamp = single_header(headers, WEBHOOK_TIMESTAMP)?;
        let signatures = single_header(headers, WEBHOOK_SIGNATURE)?;
        let timestamp: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed { header: WEBHOOK_TIMESTAMP })?;
        let now = self.clock.wall_time().timestamp();
        let tolerance = self.timestamp_tolerance.as_secs();
        let age = i128::from(now) - i128::from(timestamp);
        let seconds = u64::try_from(age.unsigned_abs()).unwrap_or(u64::MAX);
        if seconds > tolerance {
            return Err(if age > 0 {
                SignatureError::TooOld { seconds, tolerance }
            } else {
                SignatureError::InFuture { seconds, tolerance }
            });
        }
        let received: Vec<Vec<u8>> = signatures.split(' ').filter_map(signing::decode_signature).collect();
        // Every pair is compared, with no early exit, so the time taken does
        // not tell which secret or signature matched.
        let mut matched = false;
        for secret in self.signing_secrets.iter() {
            let expected = secret.tag(id, timestamp, body);
            for signature in &received {
                matched |= constant_time_eq(signature, &expected);
            }
        }
        if matched {
            Ok(Some(id.to_owned()))
        } else {
            Err(SignatureError::NoMatch)
        }
    }

    /// Checks a push: the bearer first (the body is not looked at when it is
    /// wrong), then the body's size, then the signature when the receiver
    /// has signing secrets, then parses the body.
    pub fn receive_push(&self, headers: &HeaderMap, body: &[u8]) -> Result<VerifiedPush, ReceiveError> {
        self.verify(headers)?;
        self.check_body(headers, body)
    }

    /// Checks a push as [`receive_push`](Self::receive_push) does and
    /// returns its events.
    pub fn receive(&self, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, ReceiveError> {
        self.receive_push(headers, body).map(|push| push.events)
    }

    /// Checks the size and the signature of an already authenticated body,
    /// and parses it.
    pub(crate) fn check_body(&self, headers: &HeaderMap, body: &[u8]) -> Result<VerifiedPush, ReceiveError> {
        if body.len() > self.max_body_bytes {
            return Err(ReceiveError::BodyTooLarge { size: Some(body.len() as u64), limit: self.max_body_bytes });
        }
        let webhook_id = self.verify_signature(headers, body)?;
        let options = ParseOptions::default().max_body_bytes(self.max_body_bytes);
        let events = wire::parse_push_with(body, &options).map_err(|error| match error {
            ParseError::BodyTooLarge { size, limit } => ReceiveError::BodyTooLarge { size: Some(size as u64), limit },
            other => ReceiveError::InvalidBody(other),
        })?;
        Ok(VerifiedPush { events, webhook_id })
    }
}

/// The value of a header that must be given exactly once, non-empty.
fn single_header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(SignatureError::Missing { header: name })?;
    if values.next().is_some() {
        return Err(SignatureError::Multiple { header: name });
    }
    value.to_str().ok().filter(|value| !value.is_empty()).ok_or(SignatureError::Malformed { header: name })
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebhookReceiver")
            .field("secret", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("signing_secrets", &self.signing_secrets.len())
            .field("timestamp_tolerance", &self.timestamp_tolerance)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "bot-api-secret-value";

    fn secret() -> BotSecret {
        BotSecret::new(SECRET).unwrap()
    }

    fn headers_with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn check(value: &[u8]) -> Result<(), AuthError> {
        verify_bearer(&headers_with(&[value]), &secret())
    }

    #[test]
    fn constant_time_eq_truth_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"", b"", true),
            (b"a", b"a", true),
            (b"secret", b"secret", true),
            (b"", b"a", false),
            (b"a", b"", false),
            (b"a", b"b", false),
            (b"secret", b"secreT", false),
            (b"secret", b"Secret", false),
            (b"secret", b"secret\0", false),
            (b"secret\0", b"secret", false),
            (b"abc", b"abcd", false),
            (b"\0", b"", false),
            (b"\xff\x00", b"\x00\xff", false),
        ];
        for (left, right, expected) in cases {
            assert_eq!(constant_time_eq(left, right), *expected, "{left:?} vs {right:?}");
        }
    }

    #[test]
    fn bearer_parsing() {
        let right = format!("Bearer {SECRET}");
        assert_eq!(check(right.as_bytes()), Ok(()));
        assert_eq!(check(format!("bearer {SECRET}").as_bytes()), Ok(()));
        assert_eq!(check(format!("BEARER {SECRET}").as_bytes()), Ok(()));
        assert_eq!(check(format!("Bearer   {SECRET}").as_bytes()), Ok(()));
        assert_eq!(check(format!("Bearer\t{SECRET}").as_bytes()), Ok(()));
        assert_eq!(check(format!("Bearer {SECRET}  ").as_bytes()), Ok(()));
        assert_eq!(check(format!("Bearer {SECRET}\t").as_bytes()), Ok(()));

        assert_eq!(verify_bearer(&HeaderMap::new(), &secret()), Err(AuthError::Missing));
        assert_eq!(check(b"Basic Ym90OnNlY3JldA=="), Err(AuthError::NotBearer));
        assert_eq!(check(format!("Basic {SECRET}").as_bytes()), Err(AuthError::NotBearer));
        assert_eq!(check(SECRET.as_bytes()), Err(AuthError::NotBearer));
        assert_eq!(check(format!("Bearer{SECRET}").as_bytes()), Err(AuthError::NotBearer));
        assert_eq!(check(b"Bearer"), Err(AuthError::EmptyToken));
        assert_eq!(check(b"Bearer "), Err(AuthError::EmptyToken));
        assert_eq!(check(b""), Err(AuthError::NotBearer));
        assert_eq!(check(b"Bearer wrong"), Err(AuthError::WrongToken));
        assert_eq!(check(format!("Bearer {SECRET}x").as_bytes()), Err(AuthError::WrongToken));
        assert_eq!(check(format!("Bearer {}", &SECRET[1..]).as_bytes()), Err(AuthError::WrongToken));
        assert_eq!(check(format!("Bearer {}", SECRET.to_uppercase()).as_bytes()), Err(AuthError::WrongToken));
        assert_eq!(check(format!("Bearer {SECRET} extra").as_bytes()), Err(AuthError::WrongToken));
        assert_eq!(check(format!("Bearer {SECRET}\u{e9}").as_bytes()), Err(AuthError::NotAscii));
        assert_eq!(check(b"Bearer caf\xe9"), Err(AuthError::NotAscii));
        let both = format!("Bearer {SECRET}");
        assert_eq!(
            verify_bearer(&headers_with(&[both.as_bytes(), both.as_bytes()]), &secret()),
            Err(AuthError::Multiple)
        );
    }

    #[test]
    fn auth_failures_answer_401_identically() {
        let receiver = WebhookReceiver::new(secret());
        let cases: [&[u8]; 4] = [b"Bearer wrong", b"Basic abc", b"Bearer", b"bearer  nope"];
        let mut answers = vec![receiver.receive(&HeaderMap::new(), b"[]").unwrap_err()];
        answers.extend(cases.iter().map(|value| receiver.receive(&headers_with(&[value]), b"[]").unwrap_err()));
        for error in &answers {
            assert_eq!(error.status(), StatusCode::UNAUTHORIZED, "{error}");
            assert_eq!(error.public_message(), UNAUTHORIZED_MESSAGE);
        }
    }

    #[test]
    fn auth_is_checked_before_the_body() {
        let receiver = WebhookReceiver::new(secret()).max_body_bytes(4);
        let error = receiver.receive(&headers_with(&[b"Bearer wrong"]), b"not json and too long").unwrap_err();
        assert!(matches!(error, ReceiveError::Unauthorized(AuthError::WrongToken)), "{error:?}");
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let receiver = WebhookReceiver::new(secret()).max_body_bytes(8);
        let headers = headers_with(&[format!("Bearer {SECRET}").as_bytes()]);
        let error = receiver.receive(&headers, b"[{\"Type\": 1}, {\"Type\": 2}]").unwrap_err();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(matches!(error, ReceiveError::BodyTooLarge { size: Some(26), limit: 8 }), "{error:?}");
        assert_eq!(error.to_string(), "push body too large: 26 bytes (the limit is 8 bytes)");
    }

    #[test]
    fn errors_never_show_secrets() {
        let receiver = WebhookReceiver::new(secret());
        let sent_token = "received-token-value";
        let wrong = headers_with(&[format!("Bearer {sent_token}").as_bytes()]);
        let near = headers_with(&[format!("Bearer {SECRET}-").as_bytes()]);
        for headers in [wrong, near, HeaderMap::new()] {
            let error = receiver.receive(&headers, b"[]").unwrap_err();
            for text in [error.to_string(), format!("{error:?}"), error.public_message()] {
                assert!(!text.contains(SECRET), "{text}");
                assert!(!text.contains(sent_token), "{text}");
            }
        }
        for error in [
            AuthError::Missing,
            AuthError::Multiple,
            AuthError::NotAscii,
            AuthError::NotBearer,
            AuthError::EmptyToken,
            AuthError::WrongToken,
        ] {
            assert!(!format!("{error} {error:?}").contains(SECRET));
        }
        let text = format!("{receiver:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    fn sample_events() -> Vec<Event> {
        use crate::event::{ConversationEvent, EventDate, Message, Origin};
        let date: EventDate = "2019-07-10T15:47:58.580873+00:00".parse().unwrap();
        let origin = Origin::new("bot-1", "Matelab Srl");
        vec![
            Event::UserMessage(Message::new(origin.clone(), "conv-9", "TelegramChannel", "Hello there!", date)),
            Event::NewUser(ConversationEvent::new(origin, "conv-9").date(date)),
        ]
    }

    fn right_headers() -> HeaderMap {
        headers_with(&[format!("Bearer {SECRET}").as_bytes()])
    }

    // Needs the wire codec (branch `codec`).
    #[test]
    fn a_valid_push_is_parsed() {
        let receiver = WebhookReceiver::new(secret());
        let events = sample_events();
        let received = receiver.receive(&right_headers(), &wire::encode_push(&events)).unwrap();
        assert_eq!(received, events);
    }

    // Needs the wire codec (branch `codec`).
    #[test]
    fn an_invalid_body_is_400_saying_what_is_wrong() {
        let receiver = WebhookReceiver::new(secret());
        let error = receiver.receive(&right_headers(), br#"[{"Type": "one"}]"#).unwrap_err();
        assert!(matches!(error, ReceiveError::InvalidBody(_)), "{error:?}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            error.public_message(),
            r#"invalid push body: entry 0: key "Type": expected a non-negative integer, found "one""#
        );
        let error = receiver.receive(&right_headers(), b"[{").unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }

    // Needs the wire codec (branch `codec`): the receiver's limit is passed on.
    #[test]
    fn a_limit_above_the_codec_default_is_honoured() {
        let receiver = WebhookReceiver::new(secret()).max_body_bytes(4 * DEFAULT_MAX_BODY_BYTES);
        let mut events = Vec::new();
        let mut body = Vec::new();
        while body.len() <= DEFAULT_MAX_BODY_BYTES {
            for _ in 0..500 {
                events.extend(sample_events());
            }
            body = wire::encode_push(&events);
        }
        let received = receiver.receive(&right_headers(), &body).unwrap();
        assert_eq!(received.len(), events.len());
    }

    #[test]
    fn status_codes() {
        let too_large = ReceiveError::BodyTooLarge { size: None, limit: 1024 };
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_large.to_string(), "push body too large: more bytes than allowed (the limit is 1024 bytes)");
        assert_eq!(ReceiveError::from(AuthError::Missing).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ReceiveError::BodyRead("reset".into()).status(), StatusCode::BAD_REQUEST);
    }
}
