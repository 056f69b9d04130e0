//! Where and how a webhook is called, kept on one cache line with its key,
//! and the request of each attempt of a call to it ([`Endpoint::call_request`]).
//!
//! Every push clones the webhook's URL and `Authorization` value into its
//! request, and every call record shares the URL and the account name. Each
//! of those clones bumps a reference count. Kept as the `WebhookConfig`
//! holds them, the counts sit in three separate allocations, and a push to
//! a webhook whose data is cold (one among 100,000, called every 30 s)
//! waits for three cache misses, one atomic increment after the other.
//!
//! Here the bot token, the URL, the bearer value and the account name are
//! copied into one buffer that starts with its reference count and then the
//! token, and every part is a slice of it. The core's map is keyed by the
//! token slice, so finding the webhook (which compares the token) loads the
//! line that every clone for the push then increments.
//!
//! The buffer also holds the bearer secret. No handle on it can reach
//! beyond its own slice, but a host that keeps call records (which share
//! the buffer through their URL and account name) keeps a replaced secret's
//! bytes allocated until it drops them.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request};

use crate::config::{WebhookConfig, WebhookUrl};
use crate::signing::{self, SigningSecret};

/// The key of the core's webhook map: the bot token, at the head of its
/// endpoint's shared buffer. Looked up by the token's bytes.
#[derive(Clone)]
pub(crate) struct TokenKey(Bytes);

impl TokenKey {
    pub(crate) fn as_str(&self) -> &str {
        // Copied from a `str`: always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Looked up by the token's bytes: comparing bytes needs no UTF-8 check,
/// and `take_in` compares a key for every event it takes in.
impl Borrow<[u8]> for TokenKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for TokenKey {}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the `[u8]` it borrows as, so lookups by bytes find it.
        self.0[..].hash(state);
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), formatter)
    }
}

/// A webhook's URL, `Authorization` value and account name, sharing one
/// buffer (and its reference count) with the webhook's [`TokenKey`].
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) url: WebhookUrl,
    /// `Bearer <secret>`, marked sensitive.
    pub(crate) authorization: HeaderValue,
    pub(crate) account_name: Bytes,
}

/// What signs one attempt of a call (Standard Webhooks): the webhook's
/// secrets, the call's id (the same on every attempt) and the attempt's time.
pub(crate) struct CallSignature<'a> {
    pub(crate) secrets: &'a [SigningSecret],
    pub(crate) call_id: String,
    /// Unix seconds.
    pub(crate) timestamp: i64,
}

impl Endpoint {
    /// The request of one attempt of a call to this endpoint: a `POST` of
    /// `body` with the bearer, the JSON content type and the crate's user
    /// agent, and the Standard Webhooks headers when it is signed.
    pub(crate) fn call_request(&self, body: Vec<u8>, signature: Option<CallSignature<'_>>) -> Request<Vec<u8>> {
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.as_uri().clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT));
        if let Some(CallSignature { secrets, call_id, timestamp }) = signature {
            let signature = signing::signature_header(secrets, &call_id, timestamp, request.body());
            let headers = request.headers_mut();
            headers.insert(signing::WEBHOOK_SIGNATURE, signature);
            headers.insert(signing::WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
            // `msg_` and hexadecimal digits: always a valid header value.
            let id = HeaderValue::from_str(&call_id).unwrap_or_else(|_| HeaderValue::from_static(""));
            headers.insert(signing::WEBHOOK_ID, id);
        }
        request
    }

    /// The endpoint of `config`, and the map key that shares its buffer.
    pub(crate) fn new(config: &WebhookConfig) -> (TokenKey, Endpoint) {
        let token = config.bot_token().as_bytes();
        let uri = config.url().as_uri();
        // Scheme, authority, path and query as parsed, so that parsing them
        // again gives the very same parts (`Display` would add a "/" to an
        // empty path).
        let scheme = uri.scheme_str().unwrap_or_default().as_bytes();
        let authority = uri.authority().map(|authority| authority.as_str()).unwrap_or_default().as_bytes();
        let path_and_query = uri.path_and_query().map(|path| path.as_str()).unwrap_or_default().as_bytes();
        let bearer = config.secret().authorization_header().as_bytes();
        let account = config.account_name().as_bytes();
        let mut text = Vec::with_capacity(
            token.len() + scheme.len() + 3 + authority.len() + path_and_query.len() + bearer.len() + account.len(),
        );
        let mut part = |bytes: &[u8]| {
            text.extend_from_slice(bytes);
            text.len()
        };
        let token_end = part(token);
        part(scheme);
        part(b"://");
        part(authority);
        let url_end = part(path_and_query);
        let bearer_end = part(bearer);
        part(account);
        let buffer = shared_buffer(text);

        let url = config.url().reparse_shared(buffer.slice(token_end..url_end)).unwrap_or_else(|| config.url().clone());
        let given = config.secret().authorization_header();
        let authorization = match HeaderValue::from_maybe_shared(buffer.slice(url_end..bearer_end)) {
            Ok(mut value) if value == given => {
                value.set_sensitive(true);
                value
            }
            _ => given.clone(),
        };
        let account_name = buffer.slice(bearer_end..);
        (TokenKey(buffer.slice(..token_end)), Endpoint { url, authorization, account_name })
    }

    pub(crate) fn account_name(&self) -> &str {
        // Copied from a `str`: always valid UTF-8.
        std::str::from_utf8(&self.account_name).unwrap_or_default()
    }
}

/// The text in one allocation that begins with its reference count and
/// then holds the bytes, for the usual sizes; a plain `Bytes` beyond them.
fn shared_buffer(text: Vec<u8>) -> Bytes {
    match text.len() {
        0..=118 => inline::<118>(&text),
        119..=182 => inline::<182>(&text),
        183..=246 => inline::<246>(&text),
        247..=374 => inline::<374>(&text),
        375..=502 => inline::<502>(&text),
        _ => Bytes::from(text),
    }
}

fn inline<const N: usize>(text: &[u8]) -> Bytes {
    let mut bytes = [0; N];
    bytes[..text.len()].copy_from_slice(text);
    let len = u16::try_from(text.len()).unwrap_or_default();
    Bytes::from_owner(Inline { bytes, len })
}

/// `N` bytes inline; with `Bytes::from_owner` the reference count comes
/// right before them (sizes above: allocations of 128 to 512 bytes).
#[repr(C)]
struct Inline<const N: usize> {
    bytes: [u8; N],
    len: u16,
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_equal_the_config_and_share_one_buffer() {
        let long_path = format!("https://hooks.example.com/{}", "p".repeat(600));
        for url in [
            "https://example.com",
            "HTTPS://Example.COM:8443/a/b?c=d&e",
            "http://127.0.0.1/hook",
            "http://[::1]:80/",
            long_path.as_str(),
        ] {
            let config = WebhookConfig::builder("bot-token", "Account Srl", url, "s3cr3t").build().unwrap();
            let (key, endpoint) = Endpoint::new(&config);
            assert_eq!(key.as_str(), "bot-token");
            assert_eq!(endpoint.url, *config.url());
            let (ours, given) = (endpoint.url.as_uri(), config.url().as_uri());
            assert_eq!(
                ours.path_and_query().map(|path| path.as_str()),
                given.path_and_query().map(|path| path.as_str())
            );
            assert_eq!(endpoint.url.to_string(), config.url().to_string());
            assert_eq!(endpoint.authorization, "Bearer s3cr3t");
            assert!(endpoint.authorization.is_sensitive());
            assert_eq!(endpoint.account_name(), "Account Srl");
        }
    }

    /// Every buffer size (each inline size's edges and the plain `Bytes`
    /// beyond them) gives the right parts, and nothing public shows the secret.
    #[test]
    fn parts_are_exact_at_every_buffer_size_and_never_show_the_secret() {
        use crate::dispatch::outcome::{CallOutcome, CallRecord};
        use std::sync::Arc;
        const SECRET: &str = "S3CR3T-s3cr3t";
        const URL: &str = "https://h.example/p";
        // The shortest buffer: a one-byte account name.
        let fixed = "bot".len() + URL.len() + "Bearer ".len() + SECRET.len() + 1;
        for total in [fixed, 118, 119, 182, 183, 246, 247, 374, 375, 502, 503, 1000] {
            // The account name takes what it may (256 bytes at most), the URL's path the rest.
            let extra = total - fixed;
            let in_account = extra.min(255);
            let account = "a".to_owned() + &"é".repeat(in_account / 2) + &"a".repeat(in_account % 2);
            let url = format!("{URL}{}", "x".repeat(extra - in_account));
            let config = WebhookConfig::builder("bot", account.as_str(), url.as_str(), SECRET).build().unwrap();
            let (key, endpoint) = Endpoint::new(&config);
            assert_eq!(key.as_str(), "bot", "{total}");
            assert_eq!(endpoint.url.to_string(), url, "{total}");
            assert_eq!(endpoint.authorization, format!("Bearer {SECRET}").as_str(), "{total}");
            assert!(endpoint.authorization.is_sensitive(), "{total}");
            assert_eq!(endpoint.account_name(), account, "{total}");
            let record = CallRecord {
                bot_token: Arc::from(key.as_str()),
                account_name: endpoint.account_name.clone(),
                url: endpoint.url.clone(),
                events: 1,
                bytes: 2,
                duration: std::time::Duration::ZERO,
                outcome: CallOutcome::Delivered(http::StatusCode::OK),
            };
            assert_eq!(record.account_name(), account, "{total}");
            for shown in [
                format!("{record:?}"),
                format!("{key:?}"),
                format!("{:?}", endpoint.url),
                format!("{:?}", endpoint.authorization),
                format!("{:?}", endpoint.account_name),
            ] {
                assert!(!shown.contains(SECRET), "{total}: {shown}");
            }
        }
    }

    #[test]
    fn keys_hash_and_compare_as_their_token() {
        use std::collections::HashMap;
        let config = WebhookConfig::builder("bot-é", "Account", "https://example.com/", "s").build().unwrap();
        let (key, _) = Endpoint::new(&config);
        let mut map = HashMap::new();
        map.insert(key.clone(), 1);
        assert_eq!(map.get("bot-é".as_bytes()), Some(&1));
        assert_eq!(map.get("bot-e".as_bytes()), None);
        assert_eq!(format!("{key:?}"), "\"bot-é\"");
    }
}
