//! The reqwest transport.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address_guard::{AddressGuard, BlockedAddress};
use crate::transport::{Transport, TransportError, TransportErrorKind};

/// The error type reqwest's resolver interface expects.
type BoxError = Box<dyn StdError + Send + Sync>;

/// A [`Transport`] over reqwest: rustls, pooled connections, no redirects, no
/// proxies, and an [`AddressGuard`] on every address it connects to.
///
/// - A `3xx` reply is returned as its status, never followed (a redirect is a
///   failed push, and following it would let a webhook reach a refused host).
/// - Proxy settings from the environment are ignored: a proxy would connect on
///   the transport's behalf and bypass the guard.
/// - The guard checks the addresses a host name resolves to, at connect time
///   (so a name cannot resolve to a public address when checked and to a
///   private one when used), and IP-literal hosts before sending. Unless
///   private networks are allowed, `http://localhost/` and
///   `http://127.0.0.1/` are refused with [`TransportErrorKind::BlockedAddress`].
/// - [`send`](Transport::send) returns as soon as the status has arrived: the
///   status decides the push, so a `200` whose body stalls is delivered, and
///   the dispatcher's timeout covers only the wait for the status.
/// - Then at most [`max_response_body_bytes`](ReqwestTransportBuilder::max_response_body_bytes)
///   of the reply body is read, and discarded, so a short reply leaves the
///   connection reusable and a huge one costs nothing. A body that has not
///   fully arrived with the status is read on a background task, ended by
///   the [`request_timeout`](ReqwestTransportBuilder::request_timeout); at
///   most 64 such reads run at once, past that the connection is closed.
///
/// The request's method, URI, headers and body are sent as they are; reqwest
/// adds only `accept: */*` when there is no `Accept` header, and HTTP/1.1
/// framing (`host`, `content-length`).
///
/// `Debug` shows the settings only; error messages never hold request headers
/// (the `Authorization` header carries the bot secret).
///
/// ```
/// use std::time::Duration;
/// use eventhook::adapters::ReqwestTransport;
///
/// let transport = ReqwestTransport::builder()
///     .request_timeout(Duration::from_secs(5))
///     .build()
///     .expect("the HTTP client");
/// println!("{transport:?}");
/// ```
pub struct ReqwestTransport {
    client: reqwest::Client,
    guard: AddressGuard,
    settings: Settings,
    /// Reply bodies being read on background tasks.
    draining: Arc<AtomicUsize>,
}

/// The most reply bodies read on background tasks at once: a receiver that
/// stalls every body cannot make the transport hold more connections than this.
const MAX_BACKGROUND_DRAINS: usize = 64;

/// The builder's choices, kept for `Debug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    allow_private_networks: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_response_body_bytes: usize,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow_private_networks: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_response_body_bytes: 64 * 1024,
            // reqwest's own defaults.
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: usize::MAX,
        }
    }
}

impl ReqwestTransport {
    /// A transport with the default settings (see [`ReqwestTransportBuilder`]).
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let transport = ReqwestTransport::new().expect("the HTTP client");
    /// # let _ = transport;
    /// ```
    pub fn new() -> Result<ReqwestTransport, ReqwestTransportBuildError> {
        ReqwestTransport::builder().build()
    }

    /// A builder starting from the default settings.
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let transport = ReqwestTransport::builder().max_response_body_bytes(1024).build().expect("the HTTP client");
    /// # let _ = transport;
    /// ```
    pub fn builder() -> ReqwestTransportBuilder {
        ReqwestTransportBuilder { settings: Settings::default() }
    }

    /// The guard applied to every destination.
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let transport = ReqwestTransport::new().expect("the HTTP client");
    /// assert!(!transport.address_guard().allows_private_networks());
    /// ```
    pub fn address_guard(&self) -> AddressGuard {
        self.guard
    }

    /// Refuses an IP-literal host the guard refuses (reqwest resolves only names).
    fn check_literal_host(&self, url: &reqwest::Url) -> Result<(), TransportError> {
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        // The URL parser normalises IPv4 spellings (`0x7f.1`), and brackets IPv6.
        let bare_host = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
        match bare_host.parse::<IpAddr>() {
            Ok(address) => match self.guard.check(address) {
                Ok(()) => Ok(()),
                Err(refusal) => {
                    let refusal = GuardRefusal { host: host.to_owned(), refusals: vec![refusal] };
                    refusal.trace();
                    Err(TransportError::new(TransportErrorKind::BlockedAddress, refusal.to_string()))
                }
            },
            Err(_) => Ok(()),
        }
    }

    /// Reads and discards at most about the cap of the reply body, so that
    /// the connection can go back to the pool, without holding the push:
    /// what has not arrived with the status is read on a background task.
    fn drain_body(&self, response: reqwest::Response) {
        let cap = self.settings.max_response_body_bytes;
        // Past the cap the connection cannot be reused anyway: do not read at all.
        if cap == 0 || response.content_length().is_some_and(|length| length > u64::try_from(cap).unwrap_or(u64::MAX)) {
            return;
        }
        let mut drain = read_up_to(response, cap).boxed();
        // A short body usually comes with the status: then no task is needed.
        if (&mut drain).now_or_never().is_some() {
            return;
        }
        // Without a runtime to run it, or past the limit, dropping the response closes the connection.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Some(slot) = DrainSlot::take(&self.draining) else { return };
        // reqwest's request timeout ends the read if the body stalls.
        runtime.spawn(async move {
            drain.await;
            drop(slot);
        });
    }
}

/// Reads and discards `response`'s body until its end, an error, or past `cap` bytes.
async fn read_up_to(mut response: reqwest::Response, cap: usize) {
    let mut read: usize = 0;
    while read <= cap {
        match response.chunk().await {
            Ok(Some(chunk)) => read = read.saturating_add(chunk.len()),
            // The status has arrived: a broken body does not change the push's outcome.
            Ok(None) | Err(_) => return,
        }
    }
}

/// One of the [`MAX_BACKGROUND_DRAINS`] background reads; given back when dropped.
struct DrainSlot(Arc<AtomicUsize>);

impl DrainSlot {
    fn take(draining: &Arc<AtomicUsize>) -> Option<DrainSlot> {
        draining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < MAX_BACKGROUND_DRAINS).then_some(running + 1)
            })
            .ok()
            .map(|_| DrainSlot(Arc::clone(draining)))
    }
}

impl Drop for DrainSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for ReqwestTransport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        formatter
            .debug_struct("ReqwestTransport")
            .field("allow_private_networks", &settings.allow_private_networks)
            .field("connect_timeout", &settings.connect_timeout)
            .field("request_timeout", &settings.request_timeout)
            .field("max_response_body_bytes", &settings.max_response_body_bytes)
            .field("pool_idle_timeout", &settings.pool_idle_timeout)
            .field("pool_max_idle_per_host", &settings.pool_max_idle_per_host)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        let request = reqwest::Request::try_from(request).map_err(|error| transport_error(&error))?;
        self.check_literal_host(request.url())?;
        let response = self.client.execute(request).await.map_err(|error| transport_error(&error))?;
        // The status decides the push; the body only matters for reusing the connection.
        let status = response.status();
        self.drain_body(response);
        Ok(status)
    }
}

/// Builds a [`ReqwestTransport`].
///
/// | setting | default |
/// |---|---|
/// | [`allow_private_networks`](Self::allow_private_networks) | `false` |
/// | [`connect_timeout`](Self::connect_timeout) | 5 s |
/// | [`request_timeout`](Self::request_timeout) | 10 s |
/// | [`max_response_body_bytes`](Self::max_response_body_bytes) | 64 KiB |
/// | [`pool_idle_timeout`](Self::pool_idle_timeout) | 90 s |
/// | [`pool_max_idle_per_host`](Self::pool_max_idle_per_host) | unlimited |
///
/// ```
/// use std::time::Duration;
/// use eventhook::adapters::ReqwestTransport;
///
/// let transport = ReqwestTransport::builder()
///     .allow_private_networks(true)
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(5))
///     .max_response_body_bytes(4096)
///     .pool_idle_timeout(Duration::from_secs(30))
///     .pool_max_idle_per_host(4)
///     .build()
///     .expect("the HTTP client");
/// assert!(transport.address_guard().allows_private_networks());
/// ```
#[derive(Debug, Clone)]
pub struct ReqwestTransportBuilder {
    settings: Settings,
}

impl ReqwestTransportBuilder {
    /// Whether loopback, private and other special addresses may be contacted
    /// (see [`AddressGuard`]). Off by default; for tests and on-premise hosts.
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let builder = ReqwestTransport::builder().allow_private_networks(true);
    /// # let _ = builder;
    /// ```
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.settings.allow_private_networks = allow;
        self
    }

    /// How long establishing a connection (TCP and TLS) may take.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let builder = ReqwestTransport::builder().connect_timeout(Duration::from_secs(2));
    /// # let _ = builder;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long a whole exchange may take, from connecting to the end of the
    /// (capped) reply body. It bounds the wait for the status, together with
    /// each webhook's own timeout that the dispatcher applies around
    /// [`send`](Transport::send) (the shorter one ends the push), and the
    /// background read of a body that came after its status.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let builder = ReqwestTransport::builder().request_timeout(Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// How much of a reply body is read (and discarded). A body of at most
    /// this size is read to its end so the connection goes back to the pool;
    /// reading stops as soon as more than this has arrived (one network chunk
    /// at most past the cap), and a body announced as larger is not read.
    /// `0` reads nothing.
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let builder = ReqwestTransport::builder().max_response_body_bytes(16 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_response_body_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_response_body_bytes = bytes;
        self
    }

    /// How long an idle pooled connection is kept.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let builder = ReqwestTransport::builder().pool_idle_timeout(Duration::from_secs(30));
    /// # let _ = builder;
    /// ```
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per host.
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let builder = ReqwestTransport::builder().pool_max_idle_per_host(4);
    /// # let _ = builder;
    /// ```
    pub fn pool_max_idle_per_host(mut self, connections: usize) -> Self {
        self.settings.pool_max_idle_per_host = connections;
        self
    }

    /// The transport, or why reqwest could not build its client (e.g. the TLS
    /// backend failed to initialise).
    ///
    /// ```
    /// use eventhook::adapters::ReqwestTransport;
    ///
    /// let transport = ReqwestTransport::builder().build().expect("the HTTP client");
    /// # let _ = transport;
    /// ```
    pub fn build(self) -> Result<ReqwestTransport, ReqwestTransportBuildError> {
        let settings = self.settings;
        let guard =
            if settings.allow_private_networks { AddressGuard::allow_private_networks() } else { AddressGuard::new() };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .dns_resolver(Arc::new(GuardedResolver { guard }))
            .build()
            .map_err(|source| ReqwestTransportBuildError { source })?;
        Ok(ReqwestTransport { client, guard, settings, draining: Arc::new(AtomicUsize::new(0)) })
    }
}

/// reqwest could not build its HTTP client.
///
/// ```
/// use eventhook::adapters::{ReqwestTransport, ReqwestTransportBuildError};
///
/// let built: Result<ReqwestTransport, ReqwestTransportBuildError> = ReqwestTransport::new();
/// assert!(built.is_ok());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("could not build the reqwest client: {source}")]
pub struct ReqwestTransportBuildError {
    #[source]
    source: reqwest::Error,
}

/// Resolves with the system resolver and keeps only the addresses the guard allows.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    guard: AddressGuard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup_host = host.clone();
            // getaddrinfo blocks: run it off the async workers, as hyper's own resolver does.
            let addresses: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (lookup_host.as_str(), 0).to_socket_addrs().map(Vec::from_iter))
                    .await
                    .map_err(|error| Box::new(error) as BoxError)?
                    .map_err(|error| Box::new(error) as BoxError)?;
            match allowed_addresses(guard, host, addresses) {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as Addrs),
                Err(refusal) => {
                    refusal.trace();
                    Err(Box::new(refusal) as BoxError)
                }
            }
        })
    }
}

/// The addresses of `host` the guard allows; an error only when it refused them all.
fn allowed_addresses(
    guard: AddressGuard,
    host: String,
    addresses: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, GuardRefusal> {
    let mut refusals: Vec<BlockedAddress> = Vec::new();
    let mut allowed: Vec<SocketAddr> = Vec::with_capacity(addresses.len());
    for address in addresses {
        match guard.check(address.ip()) {
            Ok(()) => allowed.push(address),
            Err(refusal) if !refusals.contains(&refusal) => refusals.push(refusal),
            Err(_) => {}
        }
    }
    if allowed.is_empty() && !refusals.is_empty() {
        return Err(GuardRefusal { host, refusals });
    }
    // An empty answer without refusals stays empty: the connector reports it as a DNS failure.
    Ok(allowed)
}

/// Every address of `host` was refused by the guard.
#[derive(Debug, Clone)]
struct GuardRefusal {
    host: String,
    refusals: Vec<BlockedAddress>,
}

impl GuardRefusal {
    fn trace(&self) {
        #[cfg(feature = "tracing")]
        tracing::debug!(host = %crate::log_escape::Escaped(&self.host), reason = %crate::log_escape::Escaped(self), "address guard refused a webhook destination");
    }
}

impl fmt::Display for GuardRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "refused to connect to {}: ", self.host)?;
        for (index, refusal) in self.refusals.iter().enumerate() {
            if index > 0 {
                formatter.write_str("; ")?;
            }
            write!(formatter, "{refusal}")?;
        }
        // Said where the failure shows (stats, flush errors, alerts), for the
        // host that points a webhook at its own machine or network on purpose.
        formatter.write_str(
            " (the outgoing-address guard refuses private networks by default; \
             ReqwestTransport::builder().allow_private_networks(true) allows them)",
        )
    }
}

impl StdError for GuardRefusal {}

/// Maps a reqwest error to the transport's error kinds. reqwest's messages
/// hold the URL and the underlying causes, never the request headers.
fn transport_error(error: &reqwest::Error) -> TransportError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<GuardRefusal>() {
            return TransportError::new(TransportErrorKind::BlockedAddress, refusal.to_string());
        }
        source = cause.source();
    }
    let kind = if error.is_timeout() {
        TransportErrorKind::Timeout
    } else if error.is_connect() {
        TransportErrorKind::Connect
    } else if error.is_body() || error.is_request() || error.is_decode() {
        TransportErrorKind::Io
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, describe(error))
}

/// The error and its causes, in one line, without repeating a cause already shown.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_settings_only() {
        let transport = ReqwestTransport::new().unwrap_or_else(|error| panic!("{error}"));
        let shown = format!("{transport:?}");
        assert!(shown.starts_with("ReqwestTransport {"), "{shown}");
        assert!(shown.contains("allow_private_networks: false"), "{shown}");
        assert!(shown.contains("max_response_body_bytes: 65536"), "{shown}");
        assert!(!shown.contains("client"), "{shown}");
    }

    #[test]
    fn builder_defaults() {
        let settings = ReqwestTransport::builder().settings;
        assert_eq!(settings, Settings::default());
        assert!(!settings.allow_private_networks);
        assert_eq!(settings.connect_timeout, Duration::from_secs(5));
        assert_eq!(settings.request_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_response_body_bytes, 65536);
    }

    #[test]
    fn guard_refusal_names_the_host_and_every_reason() {
        let guard = AddressGuard::new();
        let refusals = ["127.0.0.1", "::1"]
            .iter()
            .filter_map(|address| address.parse().ok())
            .filter_map(|address| guard.check(address).err())
            .collect();
        let refusal = GuardRefusal { host: "localhost".to_owned(), refusals };
        assert_eq!(
            refusal.to_string(),
            "refused to connect to localhost: 127.0.0.1 is a loopback address; ::1 is a loopback address \
             (the outgoing-address guard refuses private networks by default; \
             ReqwestTransport::builder().allow_private_networks(true) allows them)"
        );
    }

    fn socket_addresses(addresses: &[&str]) -> Vec<SocketAddr> {
        addresses
            .iter()
            .map(|address| address.parse().unwrap_or_else(|error| panic!("test address {address}: {error}")))
            .collect()
    }

    #[test]
    fn resolved_addresses_are_filtered_by_the_guard() {
        let mixed = socket_addresses(&["10.0.0.5:0", "93.184.215.14:0", "[::1]:0", "[2606:4700::1111]:0"]);
        let allowed = allowed_addresses(AddressGuard::new(), "mixed.example".to_owned(), mixed.clone());
        assert_eq!(allowed.ok(), Some(socket_addresses(&["93.184.215.14:0", "[2606:4700::1111]:0"])));

        let everything = allowed_addresses(AddressGuard::allow_private_networks(), "mixed.example".to_owned(), mixed);
        assert_eq!(everything.map(|allowed| allowed.len()).ok(), Some(4));

        let private = socket_addresses(&["10.0.0.5:0", "10.0.0.5:0", "[fd00::1]:0"]);
        let refusal = allowed_addresses(AddressGuard::new(), "internal.example".to_owned(), private)
            .err()
            .map(|refusal| refusal.to_string());
        assert!(
            refusal.as_deref().is_some_and(|refusal| refusal.starts_with(
                "refused to connect to internal.example: 10.0.0.5 is a private address; fd00::1 is a unique local address ("
            )),
            "{refusal:?}"
        );

        let nothing = allowed_addresses(AddressGuard::new(), "empty.example".to_owned(), Vec::new());
        assert_eq!(nothing.ok(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_by_default() {
        let resolver = GuardedResolver { guard: AddressGuard::new() };
        let name: Name = "localhost".parse().unwrap_or_else(|_| panic!("a valid name"));
        let outcome = resolver.resolve(name).await;
        let error = outcome.err().unwrap_or_else(|| panic!("localhost must be refused"));
        let refusal = error.downcast_ref::<GuardRefusal>();
        assert!(refusal.is_some(), "{error}");
    }

    #[tokio::test]
    async fn resolver_allows_localhost_with_private_networks() {
        let resolver = GuardedResolver { guard: AddressGuard::allow_private_networks() };
        let name: Name = "localhost".parse().unwrap_or_else(|_| panic!("a valid name"));
        let addresses: Vec<SocketAddr> =
            resolver.resolve(name).await.unwrap_or_else(|error| panic!("{error}")).collect();
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(|address| address.ip().is_loopback()));
    }

    #[tokio::test]
    async fn literal_hosts_are_checked() {
        let transport = ReqwestTransport::new().unwrap_or_else(|error| panic!("{error}"));
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://0x7f.1/",
            "http://[::ffff:10.0.0.1]/",
            "http://2130706433/",
        ] {
            let url = reqwest::Url::parse(url).unwrap_or_else(|error| panic!("{url}: {error}"));
            let error = transport.check_literal_host(&url).err();
            assert_eq!(error.map(|error| error.kind), Some(TransportErrorKind::BlockedAddress), "{url}");
        }
        let public = reqwest::Url::parse("https://93.184.215.14/").unwrap_or_else(|error| panic!("{error}"));
        assert!(transport.check_literal_host(&public).is_ok());
    }

    #[tokio::test]
    async fn a_request_without_scheme_is_another_error() {
        let transport = ReqwestTransport::new().unwrap_or_else(|error| panic!("{error}"));
        let request = http::Request::post("/relative").body(Vec::new()).unwrap_or_else(|error| panic!("{error}"));
        let error = transport.send(request).await.err().map(|error| error.kind);
        assert_eq!(error, Some(TransportErrorKind::Other));
    }
}
