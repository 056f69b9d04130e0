//! A bot's webhook settings, checked when they are configured.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::Uri;

use crate::event::EventFlags;

const BEARER_PREFIX: &str = "Bearer ";

/// The bot's API secret, sent as `Authorization: Bearer <secret>`.
///
/// Checked when built (no CR, LF or other byte that is illegal in a header
/// value, so no header injection) and never shown: `Debug` prints
/// `BotSecret(<redacted>)` and there is no `Display`.
///
/// ```
/// use eventhook::BotSecret;
///
/// let secret = BotSecret::new("s3cr3t").unwrap();
/// assert_eq!(format!("{secret:?}"), "BotSecret(<redacted>)");
/// assert!(BotSecret::new("a\r\nX-Injected: 1").is_err());
/// ```
#[derive(Clone)]
pub struct BotSecret {
    /// `Bearer <secret>`: the secret is kept only here, to keep configured webhooks small.
    authorization: HeaderValue,
}

impl BotSecret {
    /// Checks `secret` and keeps it with its ready `Authorization` header value.
    pub fn new(secret: impl Into<String>) -> Result<BotSecret, ConfigError> {
        let secret: String = secret.into();
        if secret.is_empty() {
            return Err(ConfigError::InvalidSecret { reason: "it is empty" });
        }
        // Visible ASCII only: anything else is illegal in, or ambiguous inside, a header.
        if let Some(position) = secret.bytes().position(|byte| !(0x21..=0x7e).contains(&byte)) {
            return Err(ConfigError::InvalidSecret {
                reason: if matches!(secret.as_bytes()[position], b'\r' | b'\n') {
                    "it holds a line break (CR or LF)"
                } else {
                    "it holds a byte that is not visible ASCII (space, control or non-ASCII)"
                },
            });
        }
        let mut authorization = HeaderValue::from_str(&format!("{BEARER_PREFIX}{secret}"))
            .map_err(|_| ConfigError::InvalidSecret { reason: "it is not a valid header value" })?;
        authorization.set_sensitive(true);
        Ok(BotSecret { authorization })
    }

    /// The secret itself, for comparing with a received bearer.
    pub fn expose(&self) -> &str {
        // Built from "Bearer " and visible ASCII, so both steps always succeed.
        self.authorization.to_str().ok().and_then(|value| value.strip_prefix(BEARER_PREFIX)).unwrap_or_default()
    }

    /// `Bearer <secret>`, marked sensitive so HTTP libraries do not log it.
    pub fn authorization_header(&self) -> &HeaderValue {
        &self.authorization
    }
}

impl fmt::Debug for BotSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BotSecret(<redacted>)")
    }
}

/// A webhook URL: `http` or `https`, with a host and no user-info.
///
/// ```
/// use eventhook::WebhookUrl;
///
/// assert!(WebhookUrl::parse("https://hooks.example.com/bot?x=1").is_ok());
/// assert!(WebhookUrl::parse("ftp://example.com/").is_err());
/// assert!(WebhookUrl::parse("https://user:pass@example.com/").is_err());
/// assert!(WebhookUrl::parse("/relative").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    uri: Uri,
}

impl WebhookUrl {
    /// Parses and checks `url`.
    pub fn parse(url: &str) -> Result<WebhookUrl, ConfigError> {
        let invalid =
            |reason: &'static str| ConfigError::InvalidUrl { url: redact_user_info(url).into_owned(), reason };
        if url.contains('#') {
            return Err(invalid("it has a fragment (#...), which is never sent"));
        }
        let uri: Uri = url.parse().map_err(|_| invalid("it is not a valid absolute URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            Some(_) => return Err(invalid("its scheme is not http or https")),
            None => return Err(invalid("it is not absolute (no http:// or https://)")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("it has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("it has user-info (user:password@); send credentials only as the bot secret"));
        }
        if authority.host().is_empty() {
            return Err(invalid("it has no host"));
        }
        Ok(WebhookUrl { uri })
    }

    /// The URL as an [`http::Uri`].
    pub fn as_uri(&self) -> &Uri {
        &self.uri
    }

    /// The same URL parsed again from `text` (a slice of a caller's shared
    /// buffer), or `None` if that does not give the same URL.
    pub(crate) fn reparse_shared(&self, text: bytes::Bytes) -> Option<WebhookUrl> {
        let uri = Uri::from_maybe_shared(text).ok()?;
        (uri == self.uri).then_some(WebhookUrl { uri })
    }

    /// The host name or IP address.
    pub fn host(&self) -> &str {
        self.uri.host().unwrap_or_default()
    }
}

/// `text` with the user-info of every URL in it (the `user:password@`
/// before a host) replaced by `***@`, so that no error or log line carries a
/// password given in a URL. An authority starts after each `://`, or at the
/// start of a text that has none (a URL given without its scheme), and ends
/// at the first `/`, `?`, `#` or whitespace; its user-info is everything up
/// to its last `@`.
pub(crate) fn redact_user_info(text: &str) -> std::borrow::Cow<'_, str> {
    let mut starts: Vec<usize> = text.match_indices("://").map(|(at, separator)| at + separator.len()).collect();
    if starts.is_empty() {
        starts.push(0);
    }
    let mut redacted = String::new();
    let mut copied = 0;
    for start in starts {
        let rest = &text[start..];
        let authority_length =
            rest.find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace()).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_length].rfind('@') {
            redacted.push_str(&text[copied..start]);
            redacted.push_str("***");
            copied = start + at;
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    redacted.push_str(&text[copied..]);
    std::borrow::Cow::Owned(redacted)
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uri, formatter)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "WebhookUrl({})", self.uri)
    }
}

impl std::str::FromStr for WebhookUrl {
    type Err = ConfigError;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        WebhookUrl::parse(url)
    }
}

/// The bot's plan. The platform ignores the webhook of a bot on the free plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// A free plan: nothing is queued or sent; `enqueue` is a counted no-op.
    Free,
    /// A paid plan: the webhook is called.
    #[default]
    Paid,
}

/// A bot's webhook settings. Build with [`WebhookConfig::builder`].
///
/// ```
/// use std::time::Duration;
/// use eventhook::{EventFlags, EventKind, WebhookConfig};
///
/// let config = WebhookConfig::builder("bot-token", "Matelab Srl", "https://hooks.example.com/events", "s3cr3t")
///     .events(EventFlags::from_kinds([EventKind::UserMessage, EventKind::NlpMissed]))
///     .push_interval(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(config.request_timeout(), Duration::from_secs(10));
/// assert!(!format!("{config:?}").contains("s3cr3t"));
/// ```
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub(crate) bot_token: Arc<str>,
    pub(crate) account_name: Arc<str>,
    pub(crate) url: WebhookUrl,
    pub(crate) secret: BotSecret,
    pub(crate) events: EventFlags,
    pub(crate) plan: Plan,
    pub(crate) push_interval: Duration,
    pub(crate) max_batch_events: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) one_event_per_call: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) accept_any_2xx: bool,
}

impl WebhookConfig {
    /// The default push interval: about every 30 seconds, as the platform does.
    pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(30);
    /// The default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default most events in one push.
    pub const DEFAULT_MAX_BATCH_EVENTS: usize = 500;
    /// The default most bytes in one push body: the receiver's default limit.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;
    /// The default most events pending for one webhook.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

    /// Starts the settings of bot `bot_token` of `account_name`, sending to
    /// `url` with `secret`; every kind selected, paid plan, defaults above.
    /// Checks happen in [`build`](WebhookConfigBuilder::build).
    pub fn builder(
        bot_token: impl Into<String>,
        account_name: impl Into<String>,
        url: impl Into<String>,
        secret: impl Into<String>,
    ) -> WebhookConfigBuilder {
        WebhookConfigBuilder {
            bot_token: bot_token.into(),
            account_name: account_name.into(),
            url: url.into(),
            secret: SecretText(secret.into()),
            events: EventFlags::all(),
            plan: Plan::Paid,
            push_interval: Self::DEFAULT_PUSH_INTERVAL,
            max_batch_events: Self::DEFAULT_MAX_BATCH_EVENTS,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            one_event_per_call: false,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            accept_any_2xx: false,
        }
    }

    /// The bot whose events this webhook receives.
    pub fn bot_token(&self) -> &str {
        &self.bot_token
    }

    /// The bot token, shared rather than copied by the dispatcher.
    pub(crate) fn shared_bot_token(&self) -> Arc<str> {
        Arc::clone(&self.bot_token)
    }

    /// The account that owns the bot (named in alerts).
    pub fn account_name(&self) -> &str {
        &self.account_name
    }
    /// Where pushes go.
    pub fn url(&self) -> &WebhookUrl {
        &self.url
    }
    /// The bot secret sent as bearer.
    pub fn secret(&self) -> &BotSecret {
        &self.secret
    }
    /// The selected event kinds.
    pub fn events(&self) -> EventFlags {
        self.events
    }
    /// The bot's plan.
    pub fn plan(&self) -> Plan {
        self.plan
    }
    /// How often a webhook with pending events is pushed.
    pub fn push_interval(&self) -> Duration {
        self.push_interval
    }
    /// The most events in one push.
    pub fn max_batch_events(&self) -> usize {
        self.max_batch_events
    }
    /// The most bytes in one push body.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }
    /// Whether every push carries exactly one event.
    pub fn one_event_per_call(&self) -> bool {
        self.one_event_per_call
    }
    /// How long one call may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// The most events this webhook holds: waiting, or in the call under way.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
    /// Whether any `2xx` counts as success (by default only `200`).
    pub fn accept_any_2xx(&self) -> bool {
        self.accept_any_2xx
    }
}

/// Holds the secret text until `build` checks it, without ever printing it.
#[derive(Clone)]
struct SecretText(String);

impl fmt::Debug for SecretText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// Builds a [`WebhookConfig`]; see [`WebhookConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct WebhookConfigBuilder {
    bot_token: String,
    account_name: String,
    url: String,
    secret: SecretText,
    events: EventFlags,
    plan: Plan,
    push_interval: Duration,
    max_batch_events: usize,
    max_batch_bytes: usize,
    one_event_per_call: bool,
    request_timeout: Duration,
    queue_capacity: usize,
    accept_any_2xx: bool,
}

impl WebhookConfigBuilder {
    /// The event kinds to send (default: all).
    pub fn events(mut self, events: EventFlags) -> Self {
        self.events = events;
        self
    }
    /// The bot's plan (default: [`Plan::Paid`]).
    pub fn plan(mut self, plan: Plan) -> Self {
        self.plan = plan;
        self
    }
    /// How often to push (default 30 s; at least 1 ms).
    pub fn push_interval(mut self, interval: Duration) -> Self {
        self.push_interval = interval;
        self
    }
    /// The most events in one push (default 500; at least 1).
    pub fn max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events;
        self
    }
    /// The most bytes in one push body (default 1 MiB; at least 1 KiB).
    /// An event too large to fit alone is dropped with reason `too_large`.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }
    /// Sends every event in its own call, as an array of one (default: off).
    pub fn one_event_per_call(mut self, enabled: bool) -> Self {
        self.one_event_per_call = enabled;
        self
    }
    /// How long one call may take before it counts as failed (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// The most events this webhook holds, waiting or in the call under way
    /// (default 10,000; at least 1); `enqueue` refuses more with `QueueFull`.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }
    /// Counts any `2xx` reply as success instead of only `200 OK` (default: off).
    pub fn accept_any_2xx(mut self, enabled: bool) -> Self {
        self.accept_any_2xx = enabled;
        self
    }

    /// Checks every setting and returns the configuration, or the first
    /// problem found.
    pub fn build(self) -> Result<WebhookConfig, ConfigError> {
        if self.bot_token.is_empty() {
            return Err(ConfigError::EmptyBotToken);
        }
        let url = WebhookUrl::parse(&self.url)?;
        let secret = BotSecret::new(self.secret.0)?;
        let at_least = |setting: &'static str, ok: bool, minimum: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { setting, minimum })
            }
        };
        at_least("push_interval", self.push_interval >= Duration::from_millis(1), "1 ms")?;
        at_least("request_timeout", self.request_timeout >= Duration::from_millis(1), "1 ms")?;
        at_least("max_batch_events", self.max_batch_events >= 1, "1")?;
        at_least("max_batch_bytes", self.max_batch_bytes >= 1024, "1024")?;
        at_least("queue_capacity", self.queue_capacity >= 1, "1")?;
        Ok(WebhookConfig {
            bot_token: Arc::from(self.bot_token),
            account_name: Arc::from(self.account_name),
            url,
            secret,
            events: self.events,
            plan: self.plan,
            push_interval: self.push_interval,
            max_batch_events: self.max_batch_events,
            max_batch_bytes: self.max_batch_bytes,
            one_event_per_call: self.one_event_per_call,
            request_timeout: self.request_timeout,
            queue_capacity: self.queue_capacity,
            accept_any_2xx: self.accept_any_2xx,
        })
    }
}

/// A setting that cannot be used. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The webhook URL is unusable.
    #[error("invalid webhook URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, its user-info (`user:password@`) replaced by `***@`.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The bot secret cannot be sent as a bearer token.
    #[error("invalid bot secret: {reason}")]
    InvalidSecret {
        /// What is wrong with it (never the secret itself).
        reason: &'static str,
    },
    /// The bot token is empty.
    #[error("the bot token is empty")]
    EmptyBotToken,
    /// A numeric setting is below its minimum.
    #[error("{setting} must be at least {minimum}")]
    OutOfRange {
        /// The setting's name.
        setting: &'static str,
        /// Its smallest allowed value.
        minimum: &'static str,
    },
    /// A dispatcher part is missing (for example no transport without the `reqwest` feature).
    #[error("no {part} was given and no default is compiled in (enable the {feature:?} feature or set one)")]
    MissingPart {
        /// The part, e.g. `transport`.
        part: &'static str,
        /// The cargo feature that provides a default.
        feature: &'static str,
    },
    /// A default part could not be set up.
    #[error("the default {part} could not be set up: {reason}")]
    DefaultPart {
        /// The part, e.g. `runtime`.
        part: &'static str,
        /// Why not.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_redacted_wherever_a_url_is() {
        for (text, redacted) in [
            ("http://user:PASSWORD@host/", "http://***@host/"),
            ("https://PASSWORD@host:8443/path?q=a@b", "https://***@host:8443/path?q=a@b"),
            ("user:PASSWORD@host/hook", "***@host/hook"),
            ("ftp://u:p%40ss@w@host", "ftp://***@host"),
            (
                "error for url (http://u:PASSWORD@127.0.0.1:1/): refused",
                "error for url (http://***@127.0.0.1:1/): refused",
            ),
            ("a http://u:PASSWORD@a/ and https://v:PASSWORD@b/", "a http://***@a/ and https://***@b/"),
            ("http://host/path@not-user-info", "http://host/path@not-user-info"),
            ("no url here", "no url here"),
        ] {
            assert_eq!(redact_user_info(text), redacted, "{text}");
        }
    }

    fn builder() -> WebhookConfigBuilder {
        WebhookConfig::builder("bot", "Account", "https://example.com/hook", "secret-value")
    }

    #[test]
    fn secrets_with_header_breaking_bytes_are_refused_without_echo() {
        for bad in ["", "a\rb", "a\nb", "with space", "tab\there", "caf\u{e9}", "nul\0"] {
            let error = BotSecret::new(bad).unwrap_err();
            assert!(matches!(error, ConfigError::InvalidSecret { .. }), "{bad:?}");
            if !bad.is_empty() {
                assert!(!error.to_string().contains(bad), "{error}");
            }
        }
        let secret = BotSecret::new("abc.DEF-123_~").unwrap();
        assert_eq!(secret.authorization_header(), "Bearer abc.DEF-123_~");
        assert!(secret.authorization_header().is_sensitive());
    }

    #[test]
    fn urls_are_checked() {
        for (url, fragment) in [
            ("ftp://example.com/hook", "scheme"),
            ("mailto:x@example.com", "http"),
            ("https:///path", "valid"),
            ("http://u@example.com/", "user-info"),
            ("https://example.com/#frag", "fragment"),
            ("example.com/hook", "absolute"),
        ] {
            let error = WebhookUrl::parse(url).unwrap_err().to_string();
            assert!(error.contains(fragment), "{url}: {error}");
        }
        let url = WebhookUrl::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(url.host(), "127.0.0.1");
        assert_eq!(url.to_string(), "http://127.0.0.1:8080/hook");
    }

    #[test]
    fn builder_checks_ranges_and_hides_the_secret() {
        assert!(matches!(
            builder().max_batch_events(0).build(),
            Err(ConfigError::OutOfRange { setting: "max_batch_events", .. })
        ));
        assert!(matches!(
            builder().push_interval(Duration::ZERO).build(),
            Err(ConfigError::OutOfRange { setting: "push_interval", .. })
        ));
        assert_eq!(
            WebhookConfig::builder("", "a", "https://example.com", "s").build().unwrap_err(),
            ConfigError::EmptyBotToken
        );
        let pending = builder();
        assert!(!format!("{pending:?}").contains("secret-value"));
        let config = pending.build().unwrap();
        assert!(!format!("{config:?}").contains("secret-value"));
        assert_eq!(config.push_interval(), Duration::from_secs(30));
    }
}
