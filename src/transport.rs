//! The HTTP transport: sends one push and reports the status.

use std::fmt;

use async_trait::async_trait;

/// Sends one push (one HTTP call) and returns the response's status.
///
/// The dispatcher builds the complete request: `POST`, the webhook URL, the
/// `Authorization: Bearer` header (marked sensitive), `Content-Type`,
/// `User-Agent` and the JSON body. A transport only carries it: it must not
/// follow redirects (a `3xx` is a failed push), and need not read the
/// response body. The dispatcher applies the webhook's request timeout around
/// [`send`](Transport::send), so a transport without its own timeout is still
/// bounded.
///
/// With the `reqwest` feature, [`ReqwestTransport`](crate::adapters::ReqwestTransport)
/// is ready to use. Implement it yourself for another client (see the
/// `custom_transport` example), as with sentry's `Transport`.
///
/// ```
/// use async_trait::async_trait;
/// use eventhook::{Transport, TransportError};
///
/// /// A transport for hosts that have no network, answering every push with 200.
/// #[derive(Debug)]
/// struct AlwaysOk;
///
/// #[async_trait]
/// impl Transport for AlwaysOk {
///     async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
///         assert_eq!(request.method(), http::Method::POST);
///         Ok(http::StatusCode::OK)
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends `request` and returns its status, or why no status was received.
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError>;
}

/// Why a push got no HTTP status.
///
/// Its message never holds the bot secret: transports must not put request
/// headers into it. [`new`](Self::new) also takes out any password a URL
/// in the message carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransportError {
    /// The broad cause, for stats and retry decisions.
    pub kind: TransportErrorKind,
    /// A human-readable description (host, address, underlying error).
    pub message: String,
}

impl TransportError {
    /// An error of `kind` described by `message`, with the user-info
    /// (`user:password@`) of any URL in it replaced by `***@`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> TransportError {
        let message = message.into();
        let message = match crate::config::redact_user_info(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(redacted) => redacted,
        };
        TransportError { kind, message }
    }
}

/// The broad cause of a [`TransportError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made (refused, unreachable, DNS failure, TLS failure).
    Connect,
    /// The call did not complete within the request timeout.
    Timeout,
    /// The address guard refused the destination (loopback, private, ...).
    BlockedAddress,
    /// The connection broke while sending or receiving.
    Io,
    /// Anything else.
    Other,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            TransportErrorKind::Connect => "connection failed",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::BlockedAddress => "destination address blocked",
            TransportErrorKind::Io => "connection broken",
            TransportErrorKind::Other => "transport error",
        })
    }
}
