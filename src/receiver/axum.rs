//! The axum extractor: [`VerifiedPush`].

use ::axum::body::{Body, Bytes};
use ::axum::extract::{FromRef, FromRequest, Request};
use ::axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::StatusCode;

use super::{ReceiveError, VerifiedPush, WebhookReceiver};

/// [`VerifiedPush`] as an axum extractor.
///
/// The [`WebhookReceiver`] comes from the router's state: use a
/// `WebhookReceiver` as the state (it is cheap to clone: the secret is shared
/// behind an `Arc`), or implement `FromRef<YourState> for WebhookReceiver`.
///
/// For each request it checks the bearer first (a wrong or missing one is
/// refused before the body is read), refuses with `413` a body whose
/// `Content-Length` is over the receiver's limit, reads the body while
/// counting (stopping with `413` as soon as it passes the limit, without
/// buffering the rest), checks the signature when the receiver has signing
/// secrets, then parses it. Refusals are [`PushRejection`]s.
/// The handler should answer `StatusCode::OK`: the platform expects exactly
/// `200`.
///
/// ```no_run
/// use axum::routing::post;
/// use axum::Router;
/// use eventhook::receiver::{VerifiedPush, WebhookReceiver};
/// use eventhook::BotSecret;
/// use http::StatusCode;
///
/// async fn events(push: VerifiedPush) -> StatusCode {
///     for event in &push.events {
///         println!("{:?} from bot {:?}", event.kind(), event.bot_token());
///     }
///     StatusCode::OK
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let secret = BotSecret::new(std::env::var("EVENTHOOK_SECRET")?)?;
///     let receiver = WebhookReceiver::new(secret).max_body_bytes(1024 * 1024);
///     let app = Router::new().route("/", post(events)).with_state(receiver);
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
///     axum::serve(listener, app).await?;
///     Ok(())
/// }
/// ```
impl<S> FromRequest<S> for VerifiedPush
where
    WebhookReceiver: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = PushRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let receiver = WebhookReceiver::from_ref(state);
        let (parts, body) = request.into_parts();
        receiver.verify(&parts.headers).map_err(ReceiveError::from)?;
        let limit = receiver.body_limit();
        if let Some(size) = declared_length(&parts.headers) {
            if size > limit as u64 {
                return Err(ReceiveError::BodyTooLarge { size: Some(size), limit }.into());
            }
        }
        let body = read_limited(body, limit, declared_length(&parts.headers)).await?;
        Ok(receiver.check_body(&parts.headers, &body)?)
    }
}

/// The `Content-Length` of a request, when present and a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads `body`, stopping as soon as it has more than `limit` bytes.
/// `declared` (the `Content-Length`, already checked against `limit`) sizes
/// the buffer.
async fn read_limited(body: Body, limit: usize, declared: Option<u64>) -> Result<Vec<u8>, ReceiveError> {
    let mut stream = body.into_data_stream();
    let capacity = declared.map_or(0, |declared| usize::try_from(declared).unwrap_or(limit).min(limit));
    let mut collected: Vec<u8> = Vec::with_capacity(capacity);
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|error| ReceiveError::BodyRead(error.to_string()))?;
        if chunk.len() > limit.saturating_sub(collected.len()) {
            return Err(ReceiveError::BodyTooLarge { size: None, limit });
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected)
}

/// Why [`VerifiedPush`] refused a request; answers as [`ReceiveError::status`]
/// says, with a `text/plain` body.
///
/// - `401 Unauthorized`, body `missing or invalid bearer token` and
///   `WWW-Authenticate: Bearer`, the same for a missing, malformed or wrong
///   bearer; with the body `missing or invalid webhook signature` for any
///   signature problem;
/// - `413 Payload Too Large` for a body over the limit;
/// - `400 Bad Request` for a body that is not a valid push, the body saying
///   what is wrong and where.
///
/// The cause, for logs, is [`error`](PushRejection::error); it never holds
/// the secret or the received token.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PushRejection {
    error: ReceiveError,
}

impl PushRejection {
    /// Why the push was refused.
    pub fn error(&self) -> &ReceiveError {
        &self.error
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// Why the push was refused, by value.
    pub fn into_error(self) -> ReceiveError {
        self.error
    }
}

impl From<ReceiveError> for PushRejection {
    fn from(error: ReceiveError) -> Self {
        PushRejection { error }
    }
}

impl IntoResponse for PushRejection {
    fn into_response(self) -> Response {
        let status = self.error.status();
        let mut response = (status, self.error.public_message()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
