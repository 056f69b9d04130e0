//! A bot's webhook settings, checked when they are configured.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::Uri;

use crate::error_text::shortened;
use crate::event::EventFlags;
use crate::signing::SigningSecret;

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

/// The conversation variables a webhook includes in its pushes: a list of
/// names, checked when built (1-128 bytes each, at most 64, no duplicates).
///
/// Every event of a conversation then carries `Variables` with those of the
/// listed names that the conversation has a value for, in this list's order;
/// an empty list (the default) sends no `Variables` at all.
///
/// ```
/// use eventhook::{ConfigError, IncludedVariables};
///
/// let names = IncludedVariables::new(["plan", "email"]).unwrap();
/// assert_eq!(names.iter().collect::<Vec<_>>(), ["plan", "email"]);
/// assert_eq!(
///     IncludedVariables::new(["plan", "plan"]).unwrap_err().to_string(),
///     r#"included variable "plan": listed twice"#
/// );
/// assert!(matches!(IncludedVariables::new([""]), Err(ConfigError::InvalidVariableName { .. })));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct IncludedVariables {
    /// `None` when empty: most webhooks list none, and each configured
    /// webhook keeps its list, so an empty one costs a null pointer.
    names: Option<Arc<Box<[Box<str>]>>>,
}

impl IncludedVariables {
    /// The most names a webhook may list.
    pub const MAX_NAMES: usize = 64;
    /// The longest name, in bytes.
    pub const MAX_NAME_BYTES: usize = 128;

    /// Checks `names` and keeps them in order.
    pub fn new<I, S>(names: I) -> Result<IncludedVariables, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.len() > Self::MAX_NAMES {
            return Err(ConfigError::TooManyVariables { count: names.len(), limit: Self::MAX_NAMES });
        }
        for (index, name) in names.iter().enumerate() {
            let invalid = |reason| ConfigError::InvalidVariableName { name: shortened(name), reason };
            if name.is_empty() {
                return Err(invalid("it is empty"));
            }
            if name.len() > Self::MAX_NAME_BYTES {
                return Err(invalid("it is longer than 128 bytes"));
            }
            // At most 64 names: a scan is cheaper than a set.
            if names[..index].contains(name) {
                return Err(invalid("listed twice"));
            }
        }
        let names: Box<[Box<str>]> = names.into_iter().map(String::into_boxed_str).collect();
        Ok(IncludedVariables { names: (!names.is_empty()).then(|| Arc::new(names)) })
    }

    fn as_slice(&self) -> &[Box<str>] {
        self.names.as_deref().map_or(&[], |names| &names[..])
    }

    /// The names, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.as_slice().iter().map(|name| &**name)
    }

    /// How many names are listed.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether no name is listed (pushes then carry no `Variables`).
    pub fn is_empty(&self) -> bool {
        self.names.is_none()
    }
}

impl fmt::Debug for IncludedVariables {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_list().entries(self.iter()).finish()
    }
}

/// The longest bot token, in bytes.
pub(crate) const MAX_BOT_TOKEN_BYTES: usize = 256;
/// The longest account name, in bytes: every event carries it, and an event
/// must fit the smallest batch (1 KiB) with room for its own fields.
pub(crate) const MAX_ACCOUNT_NAME_BYTES: usize = 256;

fn check_bot_token(token: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidBotToken { token: shortened(token), reason };
    if token.is_empty() {
        return Err(invalid("it is empty"));
    }
    if token.len() > MAX_BOT_TOKEN_BYTES {
        return Err(invalid("it is longer than 256 bytes"));
    }
    if token.chars().any(|character| character.is_whitespace() || character.is_control()) {
        return Err(invalid("it holds whitespace or a control character"));
    }
    Ok(())
}

fn check_account_name(name: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidAccountName { name: shortened(name), reason };
    if name.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_ACCOUNT_NAME_BYTES {
        return Err(invalid("it is longer than 256 bytes"));
    }
    if name.chars().any(|character| character.is_control() || matches!(character, '\u{2028}' | '\u{2029}')) {
        return Err(invalid("it holds a control character or a line break"));
    }
    Ok(())
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
    pub(crate) included_variables: IncludedVariables,
    pub(crate) signing_secrets: Box<[SigningSecret]>,
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
            included_variables: Vec::new(),
            signing_secrets: Vec::new(),
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

    /// An [`EventFactory`](crate::EventFactory) for this webhook's bot: its
    /// events carry this token and account name, so both have one source
    /// (the settings the bot owner saved) and cannot disagree.
    ///
    /// ```
    /// use eventhook::{ChatContext, WebhookConfig};
    ///
    /// let config = WebhookConfig::builder("bot-1", "Matelab Srl", "https://hooks.example.com/e", "s3cr3t").build()?;
    /// let bot = config.event_factory();
    /// let message = bot.message(&ChatContext::new("c-1", "WebChannel"), "hi");
    /// assert_eq!(&*message.origin.account_name, "Matelab Srl");
    /// # Ok::<(), eventhook::ConfigError>(())
    /// ```
    pub fn event_factory(&self) -> crate::EventFactory {
        crate::EventFactory::new(Arc::clone(&self.bot_token), Arc::clone(&self.account_name))
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
    /// The conversation variables each event of a conversation carries.
    pub fn included_variables(&self) -> &IncludedVariables {
        &self.included_variables
    }
    /// The secrets every call is signed with (none: calls are not signed).
    pub fn signing_secrets(&self) -> &[SigningSecret] {
        &self.signing_secrets
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
    included_variables: Vec<String>,
    signing_secrets: Vec<SecretText>,
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
    /// The conversation variables to include in every event of a
    /// conversation, in this order (default: none). Checked in `build`, as
    /// [`IncludedVariables::new`] checks them.
    ///
    /// ```
    /// use eventhook::WebhookConfig;
    ///
    /// let config = WebhookConfig::builder("bot-token", "Matelab Srl", "https://hooks.example.com/events", "s3cr3t")
    ///     .include_variables(["plan", "email"])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.included_variables().len(), 2);
    /// ```
    pub fn include_variables<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.included_variables = names.into_iter().map(Into::into).collect();
        self
    }

    /// Signs every call with these Standard Webhooks secrets (`whsec_...`,
    /// see [`SigningSecret`]), one signature each; several during a rotation
    /// (default: none, and calls carry no signature headers). Checked in
    /// `build`.
    ///
    /// ```
    /// use eventhook::{SigningSecret, WebhookConfig};
    ///
    /// let secret = SigningSecret::generate()?.expose();
    /// let config = WebhookConfig::builder("bot-token", "Matelab Srl", "https://hooks.example.com/events", "s3cr3t")
    ///     .signing_secrets([secret.as_str()])
    ///     .build()?;
    /// assert_eq!(config.signing_secrets().len(), 1);
    /// assert!(!format!("{config:?}").contains(&secret[6..]));
    /// # Ok::<(), eventhook::ConfigError>(())
    /// ```
    pub fn signing_secrets<I, S>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.signing_secrets = secrets.into_iter().map(|secret| SecretText(secret.into())).collect();
        self
    }

    /// Checks every setting and returns the configuration, or the first
    /// problem found.
    pub fn build(self) -> Result<WebhookConfig, ConfigError> {
        check_bot_token(&self.bot_token)?;
        check_account_name(&self.account_name)?;
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
        let included_variables = IncludedVariables::new(self.included_variables)?;
        let signing_secrets =
            self.signing_secrets.iter().map(|secret| SigningSecret::new(&secret.0)).collect::<Result<_, _>>()?;
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
            included_variables,
            signing_secrets,
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
    /// A Standard Webhooks signing secret is unusable.
    #[error("invalid signing secret: {reason}")]
    InvalidSigningSecret {
        /// What is wrong with it (never the secret itself).
        reason: &'static str,
    },
    /// The operating system's random source failed, so no secret could be made.
    #[error("no random bytes for a new signing secret: {reason}")]
    NoRandomness {
        /// The operating system's error.
        reason: String,
    },
    /// The bot token is unusable: empty, too long, or holding whitespace or
    /// control characters (it is sent on every event and named in logs).
    #[error("invalid bot token {token:?}: {reason}")]
    InvalidBotToken {
        /// The token as given (shortened when long).
        token: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The account name is unusable: empty, too long for a batch, or holding
    /// control characters.
    #[error("invalid account name {name:?}: {reason}")]
    InvalidAccountName {
        /// The name as given (shortened when long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A numeric setting is below its minimum.
    #[error("{setting} must be at least {minimum}")]
    OutOfRange {
        /// The setting's name.
        setting: &'static str,
        /// Its smallest allowed value.
        minimum: &'static str,
    },
    /// A name in the webhook's included variables is unusable.
    #[error("included variable {name:?}: {reason}")]
    InvalidVariableName {
        /// The name as given (shortened when long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The webhook lists more included variables than allowed.
    #[error("{count} included variables listed; at most {limit} are allowed")]
    TooManyVariables {
        /// How many were listed.
        count: usize,
        /// The most allowed.
        limit: usize,
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
            ConfigError::InvalidBotToken { token: String::new(), reason: "it is empty" }
        );
        let pending = builder();
        assert!(!format!("{pending:?}").contains("secret-value"));
        let config = pending.build().unwrap();
        assert!(!format!("{config:?}").contains("secret-value"));
        assert_eq!(config.push_interval(), Duration::from_secs(30));
    }

    #[test]
    fn bot_tokens_and_account_names_are_checked_and_named() {
        let token = |token: &str| WebhookConfig::builder(token, "Account", "https://example.com/h", "s").build();
        for (bad, expected) in [
            ("bot 1", r#"invalid bot token "bot 1": it holds whitespace or a control character"#.to_owned()),
            (
                "bot\r\nX: 1",
                r#"invalid bot token "bot\r\nX: 1": it holds whitespace or a control character"#.to_owned(),
            ),
            ("bot\t", r#"invalid bot token "bot\t": it holds whitespace or a control character"#.to_owned()),
            (&"b".repeat(257), format!("invalid bot token \"{}...\": it is longer than 256 bytes", "b".repeat(40))),
        ] {
            assert_eq!(token(bad).unwrap_err().to_string(), expected);
        }
        assert!(token(&"b".repeat(256)).is_ok());
        assert!(token("6f1c0e6a-2d4b-4c8e-9a57-1d2e3f4a5b6c").is_ok());

        let account = |name: &str| WebhookConfig::builder("bot", name, "https://example.com/h", "s").build();
        for (bad, reason) in [
            ("", "it is empty"),
            ("  ", "it is empty"),
            ("Matelab\r\nSrl", "it holds a control character or a line break"),
            ("Matelab\u{2028}Srl", "it holds a control character or a line break"),
            (&"a".repeat(10 * 1024 * 1024), "it is longer than 256 bytes"),
        ] {
            let error = account(bad).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidAccountName { reason: found, .. } if found == reason),
                "{error}"
            );
            assert!(error.to_string().len() < 200, "the error stays short: {error}");
        }
        assert!(account("Matelab Srl — Società à r.l.").is_ok());
    }

    #[test]
    fn included_variables_are_checked_and_the_bad_one_named() {
        let config = builder().include_variables(["plan", "e-mail", "名前"]).build().unwrap();
        assert_eq!(config.included_variables().iter().collect::<Vec<_>>(), ["plan", "e-mail", "名前"]);
        assert!(builder().build().unwrap().included_variables().is_empty());

        let long = "x".repeat(129);
        for (names, expected) in [
            (vec!["plan".to_owned(), String::new()], r#"included variable "": it is empty"#.to_owned()),
            (vec![long.clone()], format!("included variable \"{}...\": it is longer than 128 bytes", &long[..40])),
            (vec!["a".to_owned(), "b".to_owned(), "a".to_owned()], r#"included variable "a": listed twice"#.to_owned()),
            (
                (0..65).map(|index| format!("v{index}")).collect(),
                "65 included variables listed; at most 64 are allowed".to_owned(),
            ),
        ] {
            let error = builder().include_variables(names).build().unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
        // The bounds themselves are allowed.
        let most: Vec<String> = (0..64).map(|index| format!("{index:0>128}")).collect();
        assert_eq!(builder().include_variables(most).build().unwrap().included_variables().len(), 64);
    }
}
