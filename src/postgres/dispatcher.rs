//! [`PostgresDispatcher`]: the [`Dispatcher`] of one process of a cluster
//! whose webhooks, queues and health live in PostgreSQL.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};

use super::delivery::{self, Flush};
use super::kept::KeptRows;
use super::schema::PostgresSchema;
use super::writer::{self, Entry};
use super::{connection, sync};
use crate::alert::{AlertSink, NoAlerts};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Plan, WebhookConfig};
use crate::dispatch::rules;
use crate::dispatch::stats::Counters;
use crate::dispatch::token_hash::TokenMap;
use crate::dispatch::{
    BotSender, DeliveryObserver, Dispatcher, DispatcherClosed, DispatcherStats, EnqueueOutcome, FlushError, NoObserver,
    Refusal, ShutdownReport, WebhookState, WebhookStats,
};
use crate::event::Event;
use crate::transport::Transport;

/// One process's [`Dispatcher`] on a store shared by several processes in
/// PostgreSQL (feature `postgres`): the platform's rules hold per bot over
/// the whole cluster, and a crash loses nothing committed.
///
/// - **Settings**: [`configure`](Dispatcher::configure) and
///   [`remove`](Dispatcher::remove) take effect in this process at once and
///   are written to the `webhooks` table in the next commit; every other
///   process sees them on the table's NOTIFY, or at its next poll at the
///   latest ([`poll_interval`](PostgresDispatcherBuilder::poll_interval),
///   1 s by default). Configuring again re-enables the webhook everywhere.
/// - **`enqueue`** never touches the database: it checks this process's
///   copy of the settings and sends the event to the writer task, which
///   commits what arrived together in one transaction (group commit) within
///   [`commit_window`](PostgresDispatcherBuilder::commit_window) (10 ms by
///   default; longer in a burst, see there).
///   [`wait_durable`](Self::wait_durable) waits until everything accepted so
///   far is committed. At most
///   [`max_buffered_events`](PostgresDispatcherBuilder::max_buffered_events)
///   accepted events wait for their commit; past that (the database is
///   unreachable or slower than the events) `enqueue` refuses with
///   [`EnqueueOutcome::StoreUnavailable`], and the buffer drains once the
///   database is back.
/// - **Pushes**: due times live in the database. A process claims due
///   webhooks (`FOR UPDATE SKIP LOCKED`) under a lease, calls with no
///   transaction open, and settles the call in one transaction: delivered
///   events deleted, next due time, failures in a row, disabled, the call's
///   ledger row. So each bot is pushed once per interval over all processes.
///   A process that dies mid-call leaves a lease that expires (twice the
///   webhook's request timeout, plus [`lease_margin`](PostgresDispatcherBuilder::lease_margin));
///   another process then sends those events again: only such an abandoned
///   call can arrive twice.
/// - **Health**: the 11th failed call in a row, over all processes, disables
///   the webhook and drops its events ([`DropReason::Disabled`](crate::dispatch::DropReason::Disabled),
///   handed to this process's [`DeliveryObserver`]); the alert is written in
///   the same transaction and delivered to an [`AlertSink`] once by whichever
///   process takes it (see [`WebhookDisabledAlert::alert_id`](crate::WebhookDisabledAlert::alert_id)).
/// - **Billing**: every call has its row in `calls`, written with its
///   outcome; the observer hears each call in the process that made it.
///   Rows older than [`ledger_retention`](PostgresDispatcherBuilder::ledger_retention)
///   (90 days by default) are pruned.
///
/// The delivery rules are those of [`WebhookDispatcher`](crate::dispatch::WebhookDispatcher),
/// applied by the same functions.
///
/// **Counts** ([`stats`](Dispatcher::stats)) are this process's: the events
/// it accepted and refused, the calls it made and what they delivered, what
/// it dropped; `pending` is the webhook's events in the database as of the
/// last poll plus those this process has not committed yet. Summed over the
/// processes, `accepted` equals `delivered + dropped` once nothing is pending.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use eventhook::dispatch::Dispatcher;
/// use eventhook::postgres::{migrate, PostgresDispatcher, PostgresSchema};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://bot_engine:secret@127.0.0.1/platform";
/// // Once at start-up, by each process or by a deploy step: safe when several run at once.
/// let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
/// tokio::spawn(connection);
/// migrate(&mut client, &PostgresSchema::default()).await?;
///
/// let dispatcher: Arc<dyn Dispatcher> = Arc::new(PostgresDispatcher::builder(url).build().await?);
/// // ... configure, enqueue as with any dispatcher ...
/// let report = dispatcher.shutdown(Duration::from_secs(10)).await;
/// assert!(report.undelivered.is_empty(), "every accepted event was committed");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresDispatcher {
    shared: Arc<Shared>,
}

/// What the handle, the writer, the delivery task and the settings' sync share.
pub(crate) struct Shared {
    pub(crate) schema: PostgresSchema,
    pub(crate) database: tokio_postgres::Config,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) alert_sink: Arc<dyn AlertSink>,
    pub(crate) observer: Arc<dyn DeliveryObserver>,
    pub(crate) options: Options,
    /// This process's copy of every webhook's settings, for `enqueue`.
    pub(crate) webhooks: RwLock<TokenMap<Arc<LocalWebhook>>>,
    /// Counts of webhooks removed, and refusals of events naming no webhook.
    pub(crate) retired: Counters,
    /// To the writer, in order: events, settings, syncs. Unbounded: `buffered`
    /// bounds the events, and settings and syncs are few.
    pub(crate) intake: mpsc::UnboundedSender<Entry>,
    /// Accepted events not committed yet, over all webhooks.
    pub(crate) buffered: AtomicUsize,
    pub(crate) closed: AtomicBool,
    /// The highest event id this process committed.
    pub(crate) committed_up_to: AtomicI64,
    /// Wakes the delivery task: events committed, a call ended, a setting changed.
    pub(crate) delivery_wake: Notify,
    /// Wakes the settings' sync: a NOTIFY arrived.
    pub(crate) sync_wake: Notify,
    /// Set when this process commits a disabling: its alert goes to the sink
    /// in the delivery task's next pass, not at its next sweep.
    pub(crate) alert_written: AtomicBool,
    /// Events in this process's calls under way.
    pub(crate) in_flight: AtomicU64,
    pub(crate) calls_in_flight: AtomicUsize,
    /// The last database error, until a later statement succeeds.
    pub(crate) database_error: Mutex<Option<String>>,
    /// Set while a flush is under way in this process.
    pub(crate) flush: Mutex<Option<Flush>>,
    /// Undelivered events the writer could not commit before it stopped.
    pub(crate) uncommitted: Mutex<Vec<Event>>,
    /// Rows this process committed, kept for its own calls ([`KeptRows`]).
    pub(crate) kept: KeptRows,
    /// Webhooks removed here whose removal is not committed yet: the
    /// settings' sync must not bring them back meanwhile.
    pub(crate) removing: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Webhooks whose events or settings this process committed since its
    /// delivery task last scheduled them.
    pub(crate) fresh: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Set by `shutdown` when the writer is to stop, committed or not.
    pub(crate) stopping: AtomicBool,
    pub(crate) writer_stop: Notify,
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    query_client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
}

/// Tuning of a [`PostgresDispatcher`]; see its builder.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) commit_window: Duration,
    pub(crate) max_commit_events: usize,
    pub(crate) max_buffered_events: usize,
    pub(crate) max_kept_bytes: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) lease_margin: Duration,
    pub(crate) ledger_retention: Duration,
    pub(crate) max_concurrent_pushes: usize,
    pub(crate) returning_user_window: Duration,
}

/// This process's copy of one webhook: its settings for `enqueue`, and
/// what outlives a reconfiguration ([`Live`]).
pub(crate) struct LocalWebhook {
    pub(crate) config: WebhookConfig,
    /// The settings' generation in the database; 0 until first committed.
    pub(crate) generation: AtomicU64,
    pub(crate) live: Arc<Live>,
}

/// A webhook's health and pending counts as of the last poll, and this
/// process's counts: one value, shared by every copy of the webhook's
/// settings, so that an event accepted under old settings is counted on
/// the same webhook when it is committed under new ones.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) disabled: AtomicBool,
    pub(crate) pending_in_database: AtomicU64,
    /// This process's accepted events of this webhook not committed yet.
    pub(crate) buffered: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) health: Mutex<Health>,
    /// Settlements of this process recorded here ([`Live::settled`]): a
    /// poll whose read began before one of them holds older health.
    pub(crate) settlements: AtomicU64,
}

impl Live {
    /// Records the health (and a disabling) a settlement of this process committed.
    pub(crate) fn settled(&self, disabled: bool, health: Option<Health>) {
        let mut current = lock(&self.health);
        if disabled {
            self.disabled.store(true, Ordering::Relaxed);
        }
        if let Some(health) = health {
            *current = health;
        }
        self.settlements.fetch_add(1, Ordering::Relaxed);
    }

    /// Records health and `disabled` as a poll read them, unless a
    /// settlement of this process recorded newer ones after the read began
    /// (`settlements_before`: [`Live::settlements`] then; `None` for a
    /// webhook this process did not know then).
    pub(crate) fn polled(&self, settlements_before: Option<u64>, disabled: bool, health: Health) {
        let mut current = lock(&self.health);
        if settlements_before.is_none_or(|before| before == self.settlements.load(Ordering::Relaxed)) {
            self.disabled.store(disabled, Ordering::Relaxed);
            *current = health;
        }
    }
}

/// Failures in a row and the last failure, as the database last said.
#[derive(Debug, Default, Clone)]
pub(crate) struct Health {
    pub(crate) failures_in_row: u32,
    pub(crate) last_failure: Option<String>,
}

impl LocalWebhook {
    pub(crate) fn new(config: WebhookConfig, generation: u64, disabled: bool) -> LocalWebhook {
        let live = Live { disabled: AtomicBool::new(disabled), ..Live::default() };
        LocalWebhook { config, generation: AtomicU64::new(generation), live: Arc::new(live) }
    }

    /// The webhook with new settings, the same [`Live`] state.
    pub(crate) fn reconfigured(&self, config: WebhookConfig, generation: u64, disabled: bool) -> LocalWebhook {
        self.live.disabled.store(disabled, Ordering::Relaxed);
        LocalWebhook { config, generation: AtomicU64::new(generation), live: Arc::clone(&self.live) }
    }

    fn stats(&self, bot_token: &str) -> WebhookStats {
        let health = lock(&self.live.health).clone();
        let state = if self.live.disabled.load(Ordering::Relaxed) {
            WebhookState::Disabled
        } else if self.config.plan() == Plan::Free {
            WebhookState::FreePlan
        } else {
            WebhookState::Active
        };
        WebhookStats {
            bot_token: bot_token.to_owned(),
            state,
            counts: self.counts(),
            failures_in_row: health.failures_in_row,
            last_failure: health.last_failure,
        }
    }

    fn counts(&self) -> crate::dispatch::EventCounts {
        let mut counts = self.live.counters.snapshot();
        counts.pending =
            self.live.pending_in_database.load(Ordering::Relaxed) + self.live.buffered.load(Ordering::Relaxed);
        counts.in_flight = self.live.counters.in_flight.load(Ordering::Relaxed);
        counts
    }
}

/// A lock whose holder panicked is still good here: every value behind one is whole.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn webhook(&self, bot_token: &str) -> Option<Arc<LocalWebhook>> {
        self.webhooks.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(bot_token).cloned()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.wall_time()
    }

    /// [`PostgresDispatcher::wait_durable`], until `deadline`.
    pub(crate) async fn wait_durable(&self, deadline: tokio::time::Instant) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        if self.intake.send(Entry::Sync(done)).is_err() {
            return Err(StoreError::Closed);
        }
        match tokio::time::timeout_at(deadline, committed).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::TimedOut {
                buffered: self.buffered.load(Ordering::Relaxed),
                last_error: lock(&self.database_error).clone(),
            }),
        }
    }

    /// The connection of the host's own questions (pending counts, the
    /// returning-user gate, flushes): one, shared, made again when dropped.
    pub(crate) async fn query_client(&self) -> Result<Arc<tokio_postgres::Client>, tokio_postgres::Error> {
        let mut client = self.query_client.lock().await;
        if let Some(connected) = client.as_ref().filter(|connected| !connected.is_closed()) {
            return Ok(Arc::clone(connected));
        }
        let connected = Arc::new(connection::connect(&self.database, || {}).await?);
        *client = Some(Arc::clone(&connected));
        Ok(connected)
    }

    /// Records a database error (shown in stats and errors) or, with `None`, that the database answers.
    pub(crate) fn database_state(&self, error: Option<String>) {
        *lock(&self.database_error) = error;
    }
}

impl fmt::Debug for PostgresDispatcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The database's password stays out: only the schema and the counts.
        formatter
            .debug_struct("PostgresDispatcher")
            .field("schema", &self.shared.schema.name())
            .field("webhooks", &self.shared.webhooks.read().map(|webhooks| webhooks.len()).unwrap_or_default())
            .field("buffered", &self.shared.buffered.load(Ordering::Relaxed))
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PostgresDispatcher {
    /// A builder for a dispatcher on the database at `database_url`
    /// (`postgres://user:password@host:port/database`, or key-value form).
    pub fn builder(database_url: &str) -> PostgresDispatcherBuilder {
        PostgresDispatcherBuilder::new(database_url)
    }

    /// Waits until every event accepted so far is committed (or dropped),
    /// for at most `timeout`; says why not otherwise.
    pub async fn wait_durable(&self, timeout: Duration) -> Result<(), StoreError> {
        self.shared.wait_durable(tokio::time::Instant::now() + timeout).await
    }

    /// The last error the database gave this process's tasks, until one of
    /// their statements succeeds again: `None` while the database answers.
    pub fn database_error(&self) -> Option<String> {
        lock(&self.shared.database_error).clone()
    }

    /// Events in the database not delivered yet, of the bots named (all bots
    /// for `None`): what every process of the cluster still has to push.
    pub async fn pending_in_database(&self, bot_tokens: Option<&[&str]>) -> Result<u64, StoreError> {
        let client = self.shared.query_client().await.map_err(StoreError::database)?;
        let schema = self.shared.schema.quoted();
        let row = match bot_tokens {
            None => {
                client.query_one(&format!("SELECT coalesce(sum(events), 0)::bigint FROM {schema}.events"), &[]).await
            }
            Some(tokens) => {
                let statement =
                    format!("SELECT coalesce(sum(events), 0)::bigint FROM {schema}.events WHERE bot_token = ANY($1)");
                client.query_one(&statement, &[&tokens]).await
            }
        };
        let count: i64 = row.and_then(|row| row.try_get(0)).map_err(StoreError::database)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Events this process accepted that are neither delivered nor dropped
    /// yet, by any process: those not committed, and those in the database
    /// no newer than the newest this process committed (so the count can
    /// include older events of other processes, never leave one out).
    pub async fn undelivered(&self) -> Result<u64, StoreError> {
        let buffered = self.shared.buffered.load(Ordering::Relaxed) as u64;
        let newest = self.shared.committed_up_to.load(Ordering::Acquire);
        if newest == 0 {
            return Ok(buffered);
        }
        let client = self.shared.query_client().await.map_err(StoreError::database)?;
        let statement = format!(
            "SELECT coalesce(sum(events), 0)::bigint FROM {}.events WHERE id <= $1",
            self.shared.schema.quoted()
        );
        let row = client.query_one(&statement, &[&newest]).await.map_err(StoreError::database)?;
        let count: i64 = row.try_get(0).map_err(StoreError::database)?;
        Ok(buffered + u64::try_from(count).unwrap_or_default())
    }

    /// The returning-user rule (type 9 at most once per window, 24 hours by
    /// default, per user of a bot) over every process of the cluster:
    /// whether a `ReturningUser` event for `user_id` of `bot_token` may fire
    /// now. Answering yes records the firing, in one statement, so two
    /// processes asking at once get one yes. The table keeps a SHA-256 of
    /// the user id, not the id.
    pub async fn returning_user_should_fire(&self, bot_token: &str, user_id: &str) -> Result<bool, StoreError> {
        let client = self.shared.query_client().await.map_err(StoreError::database)?;
        let now = self.shared.now();
        let window_ms = i64::try_from(self.shared.options.returning_user_window.as_millis()).unwrap_or(i64::MAX);
        super::returning_users::should_fire(&client, &self.shared.schema, bot_token, user_id, now, window_ms)
            .await
            .map_err(StoreError::database)
    }

    fn counted_refusal(&self, webhook: Option<&LocalWebhook>, refusal: Refusal) {
        let counters = webhook.map_or(&self.shared.retired, |webhook| &webhook.live.counters);
        counters.refuse(refusal);
    }
}

#[async_trait]
impl Dispatcher for PostgresDispatcher {
    fn enqueue(&self, event: Event) -> EnqueueOutcome {
        let shared = &*self.shared;
        let webhook = event.bot_token().and_then(|token| shared.webhook(token));
        let Some(webhook) = webhook else {
            self.counted_refusal(None, Refusal::NoWebhook);
            return EnqueueOutcome::NoWebhook;
        };
        if shared.closed.load(Ordering::Acquire) {
            self.counted_refusal(Some(&webhook), Refusal::Closed);
            return EnqueueOutcome::Closed(event);
        }
        let refusal = rules::refusal(
            webhook.config.plan() == Plan::Free,
            event.kind().is_some_and(|kind| webhook.config.events().contains(kind)),
            webhook.live.disabled.load(Ordering::Relaxed),
        );
        if let Some(refusal) = refusal {
            self.counted_refusal(Some(&webhook), refusal);
            return EnqueueOutcome::refused(refusal);
        }
        // The bound over the cluster, as of the last poll: approximate, never blocking.
        let queued =
            webhook.live.pending_in_database.load(Ordering::Relaxed) + webhook.live.buffered.load(Ordering::Relaxed);
        if queued >= webhook.config.queue_capacity() as u64 {
            self.counted_refusal(Some(&webhook), Refusal::QueueFull);
            return EnqueueOutcome::QueueFull(event);
        }
        if shared.buffered.fetch_add(1, Ordering::AcqRel) >= shared.options.max_buffered_events {
            shared.buffered.fetch_sub(1, Ordering::AcqRel);
            self.counted_refusal(Some(&webhook), Refusal::StoreUnavailable);
            return EnqueueOutcome::StoreUnavailable(event);
        }
        webhook.live.buffered.fetch_add(1, Ordering::Relaxed);
        webhook.live.counters.accepted.fetch_add(1, Ordering::Relaxed);
        match shared.intake.send(Entry::Event(Arc::clone(&webhook), event)) {
            Ok(()) => EnqueueOutcome::Accepted,
            Err(mpsc::error::SendError(entry)) => {
                // The writer has stopped: undo, and hand the event back.
                webhook.live.counters.accepted.fetch_sub(1, Ordering::Relaxed);
                webhook.live.buffered.fetch_sub(1, Ordering::Relaxed);
                shared.buffered.fetch_sub(1, Ordering::AcqRel);
                self.counted_refusal(Some(&webhook), Refusal::Closed);
                entry.into_event().map_or(EnqueueOutcome::NoWebhook, EnqueueOutcome::Closed)
            }
        }
    }

    fn bot_sender(&self, bot_token: &str) -> BotSender {
        BotSender::through(Arc::new(self.clone()), bot_token)
    }

    fn configure(&self, config: WebhookConfig) -> Result<(), DispatcherClosed> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(DispatcherClosed);
        }
        let token = config.shared_bot_token();
        {
            lock(&shared.removing).remove(&token);
            let mut webhooks = shared.webhooks.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let webhook = match webhooks.get(&token) {
                Some(old) => old.reconfigured(config.clone(), old.generation.load(Ordering::Relaxed), false),
                None => LocalWebhook::new(config.clone(), 0, false),
            };
            webhooks.insert(token, Arc::new(webhook));
        }
        // In order with the events: the row is written before events accepted after this.
        shared.intake.send(Entry::Configure(Box::new(config))).map_err(|_| DispatcherClosed)
    }

    /// Removes the bot's webhook here at once and from the database at the
    /// next commit. Its events are deleted with its row and handed to the
    /// observer as dropped ([`DropReason::Removed`](crate::dispatch::DropReason::Removed)):
    /// they are in the database, not in this process, so this returns none.
    fn remove(&self, bot_token: &str) -> Vec<Event> {
        let shared = &*self.shared;
        let removed = shared.webhooks.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(bot_token);
        if let Some(webhook) = removed {
            // A call under way is not counted here: its events are dropped
            // when the removal commits, or delivered by a settlement that
            // commits first (which then counts among the retired).
            let mut counts = webhook.live.counters.snapshot();
            counts.in_flight = 0;
            shared.retired.absorb(&counts);
        }
        lock(&shared.removing).insert(Arc::from(bot_token));
        let _ = shared.intake.send(Entry::Remove(Arc::from(bot_token)));
        Vec::new()
    }

    fn stats(&self) -> DispatcherStats {
        let webhooks = self.shared.webhooks.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut totals = self.shared.retired.snapshot();
        let mut disabled_webhooks = 0;
        for webhook in webhooks.values() {
            totals.add(&webhook.counts());
            disabled_webhooks += usize::from(webhook.live.disabled.load(Ordering::Relaxed));
        }
        DispatcherStats { webhooks: webhooks.len(), disabled_webhooks, totals }
    }

    fn webhook_stats(&self, bot_token: &str) -> Option<WebhookStats> {
        self.shared.webhook(bot_token).map(|webhook| webhook.stats(bot_token))
    }

    /// Commits what was accepted, makes every webhook with events due now,
    /// and waits until the events in the database then are delivered or a
    /// call of their webhook failed, whichever process makes the calls.
    async fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(FlushError::Closed);
        }
        delivery::flush(&self.shared, timeout).await
    }

    /// Stops accepting events, commits what was accepted, waits for this
    /// process's calls to settle and hands the alerts they raised to the
    /// [`AlertSink`], for at most `timeout` in all. Events in
    /// the database stay there for the other processes, or for this one's
    /// successor: only events that could not be committed are undelivered.
    async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + timeout;
        let _ = shared.wait_durable(deadline).await;
        shared.delivery_wake.notify_one();
        while shared.calls_in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The writer first: it hands back what it could not commit, then ends.
        shared.stopping.store(true, Ordering::Release);
        shared.writer_stop.notify_one();
        let mut tasks = std::mem::take(&mut *lock(&shared.tasks)).into_iter();
        if let Some(writer) = tasks.next() {
            let _ = writer.await;
        }
        // The delivery task next, at the end of its round rather than inside
        // one: an alert it handed to the sink is marked delivered (aborted in
        // between, another process would deliver it again), and alerts its
        // last settlements wrote are handed over.
        if let Some(mut delivery) = tasks.next() {
            shared.delivery_wake.notify_one();
            if tokio::time::timeout_at(deadline, &mut delivery).await.is_err() {
                delivery.abort();
                let _ = delivery.await;
            }
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let undelivered = std::mem::take(&mut *lock(&shared.uncommitted));
        ShutdownReport { undelivered, stalled: Vec::new(), stats: self.stats() }
    }
}

/// Why a [`PostgresDispatcher`] could not do what was asked of the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("PostgreSQL store: {0}")]
    Database(String),
    /// Not everything was committed in time.
    #[error("PostgreSQL store: {buffered} accepted events not committed in time{}", last_error.as_deref().map(|error| format!("; last error: {error}")).unwrap_or_default())]
    TimedOut {
        /// Accepted events still waiting for their commit.
        buffered: usize,
        /// The last database error, if the database is failing.
        last_error: Option<String>,
    },
    /// The dispatcher is shut down.
    #[error("PostgreSQL store: the dispatcher is shut down")]
    Closed,
}

impl StoreError {
    pub(crate) fn database(error: tokio_postgres::Error) -> StoreError {
        StoreError::Database(connection::describe("querying the store", &error))
    }
}

/// Builds a [`PostgresDispatcher`]; every setting has a default.
pub struct PostgresDispatcherBuilder {
    database_url: String,
    schema: PostgresSchema,
    transport: Option<Arc<dyn Transport>>,
    alert_sink: Arc<dyn AlertSink>,
    observer: Arc<dyn DeliveryObserver>,
    clock: Arc<dyn Clock>,
    options: Options,
}

impl fmt::Debug for PostgresDispatcherBuilder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL can hold the database's password: left out.
        formatter
            .debug_struct("PostgresDispatcherBuilder")
            .field("schema", &self.schema.name())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PostgresDispatcherBuilder {
    fn new(database_url: &str) -> PostgresDispatcherBuilder {
        PostgresDispatcherBuilder {
            database_url: database_url.to_owned(),
            schema: PostgresSchema::default(),
            transport: None,
            alert_sink: Arc::new(NoAlerts),
            observer: Arc::new(NoObserver),
            clock: Arc::new(SystemClock),
            options: Options {
                commit_window: Duration::from_millis(10),
                max_commit_events: 65_536,
                max_buffered_events: 100_000,
                max_kept_bytes: 64 * 1024 * 1024,
                poll_interval: Duration::from_secs(1),
                lease_margin: Duration::from_secs(5),
                ledger_retention: Duration::from_secs(90 * 24 * 60 * 60),
                max_concurrent_pushes: 64,
                returning_user_window: crate::ReturningUserGate::DEFAULT_WINDOW,
            },
        }
    }

    /// The schema that [`migrate`](super::migrate) set up (default `eventhook`).
    pub fn schema(mut self, schema: PostgresSchema) -> Self {
        self.schema = schema;
        self
    }

    /// How calls are made (default: [`ReqwestTransport`](crate::adapters::ReqwestTransport) with its defaults).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Where webhook-disabled alerts go (default: nowhere).
    pub fn alert_sink(mut self, alert_sink: Arc<dyn AlertSink>) -> Self {
        self.alert_sink = alert_sink;
        self
    }

    /// Who hears of this process's calls and dropped events (default: no one).
    pub fn observer(mut self, observer: Arc<dyn DeliveryObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The clock whose wall time stamps due times, leases and rows (default:
    /// the system's). Processes of a cluster need clocks that agree (NTP).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The longest an accepted event waits for its commit when the database
    /// keeps up (default 10 ms): events arriving together share one transaction.
    ///
    /// In a burst that arrives faster than the writer encodes it, a round
    /// takes what is already waiting until it holds 65,536 events, so the
    /// burst's first events also wait for that round's encoding (in
    /// `benches/postgres`, about 170 ms for 65,536 events of 450 bytes): large
    /// rounds are what lets the database keep up with a burst.
    pub fn commit_window(mut self, window: Duration) -> Self {
        self.options.commit_window = window;
        self
    }

    /// Accepted events that may wait for their commit (default 100,000; at least 1);
    /// past that `enqueue` answers [`EnqueueOutcome::StoreUnavailable`].
    pub fn max_buffered_events(mut self, events: usize) -> Self {
        self.options.max_buffered_events = events;
        self
    }

    /// How many bytes of the events this process committed it keeps in
    /// memory for its own calls (default 64 MiB; 0 keeps none): a call whose
    /// events this process wrote takes them from here instead of reading
    /// them back, which spares the database server decompressing and
    /// sending them. Calls read which events to send, and how many were
    /// delivered, from the database all the same: a process's calls of
    /// events another process wrote read them there. A process claims the
    /// due webhooks whose rows it keeps before any other due ones (each in
    /// due order), so that in a cluster a webhook's events are mostly
    /// delivered by the process that accepted them. When the budget is
    /// full the oldest kept go first.
    pub fn max_kept_bytes(mut self, bytes: usize) -> Self {
        self.options.max_kept_bytes = bytes;
        self
    }

    /// How often settings, health and due times are read from the database
    /// when no NOTIFY comes first (default 1 s; at least 1 ms): the bound
    /// on how long a change takes to reach every process.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.options.poll_interval = interval;
        self
    }

    /// What a call's lease adds to twice the webhook's request timeout
    /// (default 5 s): how long after a process died its call is sent again.
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.options.lease_margin = margin;
        self
    }

    /// How long the ledger keeps a call's row (default 90 days).
    pub fn ledger_retention(mut self, retention: Duration) -> Self {
        self.options.ledger_retention = retention;
        self
    }

    /// Calls this process makes at once (default 64; at least 1).
    pub fn max_concurrent_pushes(mut self, calls: usize) -> Self {
        self.options.max_concurrent_pushes = calls;
        self
    }

    /// The returning-user window (default 24 hours).
    pub fn returning_user_window(mut self, window: Duration) -> Self {
        self.options.returning_user_window = window;
        self
    }

    /// Connects, checks that the schema is migrated, loads the webhooks and
    /// starts this process's tasks on the current tokio runtime.
    pub async fn build(self) -> Result<PostgresDispatcher, BuildError> {
        for (setting, value, minimum) in [
            ("max_buffered_events", self.options.max_buffered_events, "1"),
            ("max_concurrent_pushes", self.options.max_concurrent_pushes, "1"),
            ("poll_interval", usize::from(self.options.poll_interval >= Duration::from_millis(1)), "1 ms"),
        ] {
            if value == 0 {
                return Err(BuildError::Config(ConfigError::OutOfRange { setting, minimum }));
            }
        }
        let database: tokio_postgres::Config = self
            .database_url
            .parse()
            .map_err(|error: tokio_postgres::Error| BuildError::DatabaseUrl(error.to_string()))?;
        let transport = match self.transport {
            Some(transport) => transport,
            None => default_transport()?,
        };
        let client = connection::connect(&database, || {})
            .await
            .map(Arc::new)
            .map_err(|error| BuildError::Database(connection::describe("connecting", &error)))?;
        let (version, changed) = super::migrate::applied_version(&client, &self.schema)
            .await
            .map_err(|error| BuildError::Database(connection::describe("reading the schema's version", &error)))?;
        let expected = super::migrate::migrations().last().map_or(0, |migration| migration.version());
        if version < expected {
            return Err(BuildError::NotMigrated { schema: self.schema.name().to_owned(), version, expected });
        }
        if let Some(migration) = changed {
            return Err(BuildError::MigrationChanged { schema: self.schema.name().to_owned(), migration });
        }
        let (intake, receiver) = mpsc::unbounded_channel();
        let kept = KeptRows::new(self.options.max_kept_bytes);
        let shared = Arc::new(Shared {
            schema: self.schema,
            database,
            clock: self.clock,
            transport,
            alert_sink: self.alert_sink,
            observer: self.observer,
            options: self.options,
            webhooks: RwLock::new(TokenMap::default()),
            retired: Counters::default(),
            intake,
            buffered: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            committed_up_to: AtomicI64::new(0),
            delivery_wake: Notify::new(),
            sync_wake: Notify::new(),
            alert_written: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            calls_in_flight: AtomicUsize::new(0),
            database_error: Mutex::new(None),
            flush: Mutex::new(None),
            uncommitted: Mutex::new(Vec::new()),
            kept,
            removing: Mutex::new(std::collections::HashSet::new()),
            fresh: Mutex::new(std::collections::HashSet::new()),
            stopping: AtomicBool::new(false),
            writer_stop: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            // The connection that checked the schema serves the host's questions next.
            query_client: tokio::sync::Mutex::new(Some(Arc::clone(&client))),
        });
        sync::refresh(&shared, &client).await.map_err(BuildError::Database)?;
        let tasks = vec![
            tokio::spawn(writer::run(Arc::clone(&shared), receiver)),
            tokio::spawn(delivery::run(Arc::clone(&shared))),
            tokio::spawn(sync::run(Arc::clone(&shared))),
        ];
        *lock(&shared.tasks) = tasks;
        Ok(PostgresDispatcher { shared })
    }
}

#[cfg(feature = "reqwest")]
fn default_transport() -> Result<Arc<dyn Transport>, BuildError> {
    let transport = crate::adapters::ReqwestTransport::builder().build();
    Ok(Arc::new(transport.map_err(|error| BuildError::Transport(error.to_string()))?))
}

#[cfg(not(feature = "reqwest"))]
fn default_transport() -> Result<Arc<dyn Transport>, BuildError> {
    Err(BuildError::Transport("none given, and the `reqwest` feature that provides the default is off".to_owned()))
}

/// Why a [`PostgresDispatcher`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database URL does not parse (tokio-postgres's reason; it never quotes the password).
    #[error("invalid PostgreSQL connection string: {0}")]
    DatabaseUrl(String),
    /// The default transport could not be built.
    #[error("no transport: {0}")]
    Transport(String),
    /// The database could not be reached or refused.
    #[error("PostgreSQL store: {0}")]
    Database(String),
    /// The schema is not migrated to this version of the crate: call
    /// [`migrate`](super::migrate) first.
    #[error("PostgreSQL schema {schema:?} is at version {version}, this crate needs {expected}: call eventhook::postgres::migrate first")]
    NotMigrated {
        /// The schema.
        schema: String,
        /// Its version (0: never migrated).
        version: u32,
        /// The version this crate needs.
        expected: u32,
    },
    /// The schema was migrated from different SQL than this crate ships
    /// (see [`Migration::checksum`](super::Migration::checksum)).
    #[error("PostgreSQL schema {schema:?}: {migration}")]
    MigrationChanged {
        /// The schema.
        schema: String,
        /// The migration whose checksum differs.
        migration: super::ChangedMigration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(failures_in_row: u32) -> Health {
        Health { failures_in_row, last_failure: Some("status 500".to_owned()) }
    }

    #[test]
    fn a_poll_read_before_a_settlement_leaves_the_settlement_s_health() {
        let live = Live::default();
        live.settled(false, Some(failing(1)));
        // A poll's read begins, and sees the failure; a success settles meanwhile.
        let read_began = live.settlements.load(Ordering::Relaxed);
        live.settled(false, Some(Health::default()));
        live.polled(Some(read_began), true, failing(1));
        assert_eq!(lock(&live.health).failures_in_row, 0, "the success stays");
        assert!(!live.disabled.load(Ordering::Relaxed));
        // A poll whose read began after it: what other processes settled.
        let read_began = live.settlements.load(Ordering::Relaxed);
        live.polled(Some(read_began), true, failing(11));
        assert_eq!(lock(&live.health).failures_in_row, 11);
        assert!(live.disabled.load(Ordering::Relaxed));
        // A webhook this process did not know when the read began.
        let unknown = Live::default();
        unknown.polled(None, false, failing(3));
        assert_eq!(lock(&unknown.health).failures_in_row, 3);
    }
}
