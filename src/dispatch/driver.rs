//! The driver: runs a [`DispatchCore`] on the host's runtime and transport.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::future::{self, BoxFuture, Either};
use futures::FutureExt;

use super::bot_sender::BotSender;
use super::core::{CoreLimits, DispatchCore, Enqueuer, Notice, Push, PushId};
use super::dispatcher::Dispatcher;
use super::observer::{DeliveryObserver, NoObserver};
use super::outcome::{DispatcherClosed, EnqueueOutcome, FlushError, ShutdownReport};
use super::stats::{DispatcherStats, WebhookStats};
use crate::alert::{AlertSink, NoAlerts};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, WebhookConfig};
use crate::event::Event;
#[cfg(feature = "tracing")]
use crate::log_escape::Escaped;
use crate::runtime::Runtime;
use crate::transport::{Transport, TransportError, TransportErrorKind};

/// The real [`Dispatcher`]: a [`DispatchCore`] driven by one background task
/// on a [`Runtime`], sending through a [`Transport`].
///
/// `enqueue` runs on the caller's thread and only checks and counts; the
/// task encodes, batches, calls webhooks (at most one call per webhook at a
/// time, a global cap over all), and tells the [`AlertSink`] and
/// [`DeliveryObserver`]. Call [`shutdown`](Dispatcher::shutdown) before
/// dropping it: dropping stops the task and loses what was pending.
///
/// ```no_run
/// # #[cfg(all(feature = "reqwest", feature = "tokio"))]
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
/// use eventhook::{ChatContext, Event, EventFactory, WebhookConfig};
///
/// // Inside a tokio runtime: reqwest transport and tokio runtime by default.
/// let dispatcher: Arc<dyn Dispatcher> = Arc::new(WebhookDispatcher::builder().build()?);
/// dispatcher.configure(
///     WebhookConfig::builder("bot-token", "Matelab Srl", "https://hooks.example.com/events", "bot-api-secret")
///         .build()?,
/// )?;
///
/// let bot = EventFactory::new("bot-token", "Matelab Srl");
/// let chat = ChatContext::new("conversation-1", "TelegramChannel");
/// let _ = dispatcher.enqueue(Event::UserMessage(bot.message(&chat, "Hello there!")));
///
/// let report = dispatcher.shutdown(Duration::from_secs(5)).await;
/// println!("{} events to keep for later", report.undelivered.len());
/// # Ok(())
/// # }
/// ```
pub struct WebhookDispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    core: Mutex<DispatchCore>,
    enqueuer: Enqueuer,
    transport: Arc<dyn Transport>,
    runtime: Arc<dyn Runtime>,
    alert_sink: Arc<dyn AlertSink>,
    observer: Arc<dyn DeliveryObserver>,
    clock: Arc<dyn Clock>,
    /// Woken (under the core lock) when a flush completes.
    flush_waiters: Mutex<Vec<oneshot::Sender<()>>>,
    /// Results of calls that ended, for the driver to report to the core.
    ended_calls: Mutex<Vec<CallResult>>,
    stop: AtomicBool,
}

impl Shared {
    fn lock_core(&self) -> MutexGuard<'_, DispatchCore> {
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ring(&self) {
        self.enqueuer.doorbell().ring();
    }

    fn deliver(&self, notices: Vec<Notice>) {
        for notice in notices {
            match notice {
                Notice::Call(call) => {
                    #[cfg(feature = "tracing")]
                    if !call.outcome.is_success() {
                        tracing::warn!(bot_token = %Escaped(&call.bot_token), url = %Escaped(&call.url), outcome = %Escaped(&call.outcome), "webhook call failed");
                    }
                    self.observer.call_made(&call);
                }
                Notice::Dropped(dropped) => {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(bot_token = %Escaped(&dropped.bot_token), reason = %dropped.reason, events = dropped.events.len(), "events dropped");
                    self.observer.events_dropped(&dropped);
                }
                Notice::Disabled(alert) => {
                    #[cfg(feature = "tracing")]
                    tracing::error!(bot_token = %Escaped(&alert.bot_token), url = %Escaped(&alert.url), failures = alert.failures_in_row, "webhook disabled");
                    self.alert_sink.webhook_disabled(&alert);
                }
            }
        }
    }
}

impl fmt::Debug for WebhookDispatcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebhookDispatcher")
            .field("transport", &self.shared.transport)
            .field("runtime", &self.shared.runtime)
            .finish_non_exhaustive()
    }
}

/// A call's result, as its task hands it to the driver.
type CallResult = (PushId, Result<http::StatusCode, TransportError>);

async fn drive(shared: Arc<Shared>) {
    // The timer and the time it is set for; kept while the wake-up time does not change.
    let mut timer: Option<(Instant, BoxFuture<'static, ()>)> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let mut notices = Vec::new();
        let mut flushed = Vec::new();
        let ended = std::mem::take(&mut *shared.ended_calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let wake_at = {
            let mut core = shared.lock_core();
            for (id, result) in ended {
                core.on_push_result(&id, result);
            }
            while let Some(push) = core.poll_push() {
                spawn_call(&shared, push);
            }
            while let Some(notice) = core.poll_notice() {
                notices.push(notice);
            }
            if core.is_flush_complete() {
                let mut waiters = shared.flush_waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                flushed.append(&mut waiters);
            }
            core.next_wakeup()
        };
        // The observer hears of every call a flush waited for before the flush returns.
        shared.deliver(notices);
        for waiter in flushed {
            let _ = waiter.send(());
        }
        match wake_at {
            Some(at) if timer.as_ref().is_some_and(|(set_for, _)| *set_for == at) => {}
            Some(at) => {
                timer = Some((at, shared.runtime.sleep(at.saturating_duration_since(shared.clock.now()))));
            }
            None => timer = None,
        }
        future::poll_fn(|context| {
            if shared.enqueuer.doorbell().poll_rung(context).is_ready() {
                return Poll::Ready(());
            }
            if let Some((_, sleep)) = timer.as_mut() {
                if sleep.poll_unpin(context).is_ready() {
                    timer = None;
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
    }
}

/// Makes the call on a task of its own, so that it progresses while the
/// driver takes events in, on whichever thread the runtime has free; its
/// result goes back to the driver, which the task wakes.
fn spawn_call(shared: &Arc<Shared>, push: Push) {
    let transport = Arc::clone(&shared.transport);
    let deadline = shared.runtime.sleep(push.timeout);
    // Weak: a call still under way when the dispatcher goes does not keep it alive.
    let driver = Arc::downgrade(shared);
    let Push { id, request, timeout, events } = push;
    #[cfg(feature = "tracing")]
    let bot_token = id.bot_token().to_owned();
    let call = async move {
        let send = transport.send(request);
        // The timeout is applied here so that any transport is bounded.
        let result = match future::select(send, deadline).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => {
                Err(TransportError::new(TransportErrorKind::Timeout, format!("no answer within {timeout:?}")))
            }
        };
        if let Some(shared) = driver.upgrade() {
            shared.ended_calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((id, result));
            shared.ring();
        }
    };
    #[cfg(feature = "tracing")]
    let call = tracing::Instrument::instrument(
        call,
        tracing::info_span!("eventhook.push", bot_token = %Escaped(&bot_token), events),
    );
    #[cfg(not(feature = "tracing"))]
    let _ = events;
    shared.runtime.spawn(call.boxed());
}

impl WebhookDispatcher {
    /// Starts building a dispatcher; see [`WebhookDispatcherBuilder`].
    pub fn builder() -> WebhookDispatcherBuilder {
        WebhookDispatcherBuilder::default()
    }

    async fn run_flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut core = self.shared.lock_core();
            core.begin_flush();
            if !core.is_flush_complete() {
                self.shared.flush_waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(sender);
            } else {
                let _ = sender.send(());
            }
        }
        self.shared.ring();
        let completed = match future::select(receiver, self.shared.runtime.sleep(timeout)).await {
            Either::Left((result, _)) => result.is_ok(),
            Either::Right(_) => false,
        };
        let mut core = self.shared.lock_core();
        let totals = core.stats().totals;
        let pending = totals.pending + totals.in_flight;
        let result = if !completed {
            Err(FlushError::TimedOut { pending, webhooks: core.stalled_webhooks() })
        } else if core.flush_failures() > 0 {
            Err(FlushError::Incomplete { pending, webhooks: core.stalled_webhooks() })
        } else {
            Ok(())
        };
        drop(core);
        // The snapshots took in what waited (see `stats`).
        self.shared.ring();
        result
    }
}

impl Drop for WebhookDispatcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ring();
    }
}

#[async_trait]
impl Dispatcher for WebhookDispatcher {
    fn enqueue(&self, event: Event) -> EnqueueOutcome {
        self.shared.enqueuer.enqueue(event)
    }

    fn bot_sender(&self, bot_token: &str) -> BotSender {
        self.shared.enqueuer.bot_sender(bot_token)
    }

    fn configure(&self, config: WebhookConfig) -> Result<(), DispatcherClosed> {
        {
            let mut core = self.shared.lock_core();
            if core.is_closed() {
                return Err(DispatcherClosed);
            }
            #[cfg(feature = "tracing")]
            if core.webhook_stats(config.bot_token()).is_some_and(|stats| stats.state == super::WebhookState::Disabled)
            {
                tracing::info!(bot_token = %Escaped(config.bot_token()), "webhook re-enabled by reconfiguration");
            }
            core.configure(config);
        }
        self.shared.ring();
        Ok(())
    }

    fn remove(&self, bot_token: &str) -> Vec<Event> {
        let events = self.shared.lock_core().remove(bot_token);
        self.shared.ring();
        events
    }

    fn stats(&self) -> DispatcherStats {
        let stats = self.shared.lock_core().stats();
        // The snapshot took in what waited in the intake, clearing the ring
        // that `enqueue` gave the driver: ring again, so that the driver
        // schedules what was taken in.
        self.shared.ring();
        stats
    }

    fn webhook_stats(&self, bot_token: &str) -> Option<WebhookStats> {
        let stats = self.shared.lock_core().webhook_stats(bot_token);
        // As in `stats`.
        self.shared.ring();
        stats
    }

    async fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared.lock_core().is_closed() {
            return Err(FlushError::Closed);
        }
        self.run_flush(timeout).await
    }

    async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.shared.lock_core().close();
        let _ = self.run_flush(timeout).await;
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ring();
        let (undelivered, stalled, stats, notices) = {
            let mut core = self.shared.lock_core();
            let stalled = core.stalled_webhooks();
            let undelivered = core.take_undelivered();
            let notices: Vec<Notice> = std::iter::from_fn(|| core.poll_notice()).collect();
            (undelivered, stalled, core.stats(), notices)
        };
        self.shared.deliver(notices);
        ShutdownReport { undelivered, stalled, stats }
    }
}

/// Builds a [`WebhookDispatcher`].
///
/// Every part has a default: the reqwest transport and the current tokio
/// runtime (with the `reqwest` and `tokio` features), no alerts beyond the
/// stats, the system clock, at most 1,000,000 pending events and 64
/// concurrent calls.
///
// The example uses the reqwest transport: not compiled without its feature.
#[cfg_attr(feature = "reqwest", doc = "```no_run")]
#[cfg_attr(not(feature = "reqwest"), doc = "```ignore")]
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use eventhook::adapters::ReqwestTransport;
/// use eventhook::dispatch::WebhookDispatcher;
/// use eventhook::{AlertSink, WebhookDisabledAlert};
///
/// #[derive(Debug)]
/// struct MailAccount;
///
/// impl AlertSink for MailAccount {
///     fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
///         // Hand it to the platform's mailer; return quickly.
///         eprintln!("to {}: {alert}", alert.account_name);
///     }
/// }
///
/// // Inside a tokio runtime.
/// let dispatcher = WebhookDispatcher::builder()
///     .transport(Arc::new(ReqwestTransport::builder().build()?))
///     .alert_sink(Arc::new(MailAccount))
///     .max_pending_events(200_000) // memory bound over all bots
///     .max_concurrent_pushes(32)
///     .build()?;
/// # let _ = dispatcher;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct WebhookDispatcherBuilder {
    transport: Option<Arc<dyn Transport>>,
    runtime: Option<Arc<dyn Runtime>>,
    alert_sink: Arc<dyn AlertSink>,
    observer: Arc<dyn DeliveryObserver>,
    clock: Arc<dyn Clock>,
    limits: CoreLimits,
}

impl Default for WebhookDispatcherBuilder {
    fn default() -> Self {
        WebhookDispatcherBuilder {
            transport: None,
            runtime: None,
            alert_sink: Arc::new(NoAlerts),
            observer: Arc::new(NoObserver),
            clock: Arc::new(SystemClock),
            limits: CoreLimits::default(),
        }
    }
}

impl fmt::Debug for WebhookDispatcherBuilder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebhookDispatcherBuilder")
            .field("transport", &self.transport)
            .field("runtime", &self.runtime)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl WebhookDispatcherBuilder {
    /// Sends through `transport`.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }
    /// Runs the background task and timers on `runtime`.
    pub fn runtime(mut self, runtime: Arc<dyn Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }
    /// Tells `alert_sink` when a webhook is disabled.
    pub fn alert_sink(mut self, alert_sink: Arc<dyn AlertSink>) -> Self {
        self.alert_sink = alert_sink;
        self
    }
    /// Tells `observer` of every call and every dropped event.
    pub fn observer(mut self, observer: Arc<dyn DeliveryObserver>) -> Self {
        self.observer = observer;
        self
    }
    /// Reads time from `clock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The most events pending over all webhooks (default 1,000,000; at least 1).
    pub fn max_pending_events(mut self, events: usize) -> Self {
        self.limits.max_pending_events = events;
        self
    }
    /// The most calls under way at once (default 64; at least 1).
    pub fn max_concurrent_pushes(mut self, calls: usize) -> Self {
        self.limits.max_concurrent_pushes = calls;
        self
    }

    /// Switches to the store shared by several processes on PostgreSQL
    /// (feature `postgres`): a builder of a
    /// [`PostgresDispatcher`](crate::postgres::PostgresDispatcher) on the
    /// database at `database_url`, with the transport, alert sink, observer,
    /// clock and `max_concurrent_pushes` set here. It runs on tokio (the
    /// runtime set here is not used), and bounds the events waiting for
    /// their commit with its own
    /// [`max_buffered_events`](crate::postgres::PostgresDispatcherBuilder::max_buffered_events)
    /// instead of `max_pending_events`.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let dispatcher: Arc<dyn Dispatcher> =
    ///     Arc::new(WebhookDispatcher::builder().postgres("postgres://bot_engine@127.0.0.1/platform").build().await?);
    /// # let _ = dispatcher;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn postgres(self, database_url: &str) -> crate::postgres::PostgresDispatcherBuilder {
        let mut builder = crate::postgres::PostgresDispatcher::builder(database_url)
            .alert_sink(self.alert_sink)
            .observer(self.observer)
            .clock(self.clock)
            .max_concurrent_pushes(self.limits.max_concurrent_pushes);
        if let Some(transport) = self.transport {
            builder = builder.transport(transport);
        }
        builder
    }

    /// Checks the limits, starts the dispatcher's task on the runtime and
    /// returns its handle. With the `metrics` feature, its metrics are
    /// registered here, with the recorder in force now: install it first.
    ///
    /// ```
    /// use eventhook::dispatch::WebhookDispatcher;
    /// use eventhook::ConfigError;
    ///
    /// let error = WebhookDispatcher::builder().max_pending_events(0).build().unwrap_err();
    /// assert_eq!(error, ConfigError::OutOfRange { setting: "max_pending_events", minimum: "1" });
    /// assert_eq!(error.to_string(), "max_pending_events must be at least 1");
    /// let error = WebhookDispatcher::builder().max_concurrent_pushes(0).build().unwrap_err();
    /// assert_eq!(error.to_string(), "max_concurrent_pushes must be at least 1");
    /// ```
    pub fn build(self) -> Result<WebhookDispatcher, ConfigError> {
        for (setting, value) in [
            ("max_pending_events", self.limits.max_pending_events),
            ("max_concurrent_pushes", self.limits.max_concurrent_pushes),
        ] {
            if value == 0 {
                return Err(ConfigError::OutOfRange { setting, minimum: "1" });
            }
        }
        let transport = match self.transport {
            Some(transport) => transport,
            None => default_transport()?,
        };
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => default_runtime()?,
        };
        let (core, enqueuer) = DispatchCore::new(Arc::clone(&self.clock), self.limits);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            enqueuer,
            transport,
            runtime: Arc::clone(&runtime),
            alert_sink: self.alert_sink,
            observer: self.observer,
            clock: self.clock,
            flush_waiters: Mutex::new(Vec::new()),
            ended_calls: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        runtime.spawn(drive(Arc::clone(&shared)).boxed());
        Ok(WebhookDispatcher { shared })
    }
}

fn default_transport() -> Result<Arc<dyn Transport>, ConfigError> {
    #[cfg(feature = "reqwest")]
    {
        crate::adapters::ReqwestTransport::new()
            .map(|transport| Arc::new(transport) as Arc<dyn Transport>)
            .map_err(|error| ConfigError::DefaultPart { part: "transport", reason: error.to_string() })
    }
    #[cfg(not(feature = "reqwest"))]
    {
        Err(ConfigError::MissingPart { part: "transport", feature: "reqwest" })
    }
}

fn default_runtime() -> Result<Arc<dyn Runtime>, ConfigError> {
    #[cfg(feature = "tokio")]
    {
        crate::adapters::TokioRuntime::try_current().map(|runtime| Arc::new(runtime) as Arc<dyn Runtime>).ok_or_else(
            || ConfigError::DefaultPart {
                part: "runtime",
                reason: "not called inside a tokio runtime; call build() from within one or pass .runtime(...)"
                    .to_owned(),
            },
        )
    }
    #[cfg(not(feature = "tokio"))]
    {
        Err(ConfigError::MissingPart { part: "runtime", feature: "tokio" })
    }
}
