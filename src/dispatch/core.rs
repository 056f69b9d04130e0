//! The sans-IO dispatch core: every rule of the events webhook, no I/O.
//!
//! Like quinn-proto, the core does no networking, spawns nothing and never
//! sleeps. It takes events (through its [`Enqueuer`]), webhook settings and
//! call outcomes; it hands out ready HTTP requests ([`Push`]), says when it
//! next needs to be polled, and queues [`Notice`]s (calls to bill, dropped
//! events, alerts) for the host. Time comes from the [`Clock`] it is given,
//! so tests drive it deterministically with a [`ManualClock`](crate::ManualClock).
//!
//! [`WebhookDispatcher`](super::WebhookDispatcher) drives it on a runtime.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};

use super::admission::{Admission, Gate};
use super::bot_sender::BotSender;
use super::endpoint::{CallSignature, Endpoint, TokenKey};
use super::intake::{self, IntakeReceiver, Lane};
use super::metrics::CoreMetrics;
use super::outcome::{CallOutcome, CallRecord, DroppedEvents, EnqueueOutcome};
use super::rules::{self, Settled};
use super::stats::{
    CallCounts, Counters, DispatcherStats, DropReason, EventCounts, StalledWebhook, WebhookState, WebhookStats,
};
use super::store::{Schedulable, StoredWebhook, WebhookStore};
use super::token_hash::BuildTokenHasher;
use crate::alert::WebhookDisabledAlert;
use crate::clock::Clock;
use crate::config::{IncludedVariables, Plan, WebhookConfig};
use crate::event::Event;
use crate::signing::{self, SigningSecret};
use crate::transport::TransportError;
use crate::wire;

/// Events taken in from the intake per poll during a burst.
const INTAKE_SHARE: usize = 1024;

/// Limits that protect the host, over all webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreLimits {
    /// The most events pending (queued or in flight) over all webhooks.
    pub max_pending_events: usize,
    /// The most calls under way at once over all webhooks (0 is taken as 1:
    /// the [`WebhookDispatcher`](super::WebhookDispatcher)'s builder refuses it).
    pub max_concurrent_pushes: usize,
}

impl Default for CoreLimits {
    fn default() -> Self {
        CoreLimits { max_pending_events: 1_000_000, max_concurrent_pushes: 64 }
    }
}

/// Identifies one call handed out by [`DispatchCore::poll_push`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushId {
    sequence: u64,
    bot_token: Arc<str>,
}

impl PushId {
    /// The bot whose webhook is called.
    pub fn bot_token(&self) -> &str {
        &self.bot_token
    }
}

/// One call to make: send `request`, then report with [`DispatchCore::on_push_result`].
#[derive(Debug)]
pub struct Push {
    /// Pass back with the outcome.
    pub id: PushId,
    /// The complete request (its `Authorization` header is marked sensitive).
    pub request: Request<Vec<u8>>,
    /// How many events the body carries.
    pub events: usize,
    /// How long the call may take before it counts as failed.
    pub timeout: Duration,
}

/// Something the host should hear about, from [`DispatchCore::poll_notice`].
#[derive(Debug, Clone)]
pub enum Notice {
    /// A call was answered or failed: one billable outgoing message.
    Call(CallRecord),
    /// Accepted events that will not be delivered.
    Dropped(DroppedEvents),
    /// A webhook was disabled; tell the account.
    Disabled(WebhookDisabledAlert),
}

/// The settings of a [`WebhookConfig`] that the core reads after `configure`
/// (the config itself is not kept: its URL, secret and account name live in
/// the webhook's [`Endpoint`], its token in the gate).
struct Settings {
    plan: Plan,
    one_event_per_call: bool,
    accept_any_2xx: bool,
    max_batch_events: usize,
    max_batch_bytes: usize,
    push_interval: Duration,
    request_timeout: Duration,
    included_variables: IncludedVariables,
    /// Empty for a webhook that does not sign its calls.
    signing_secrets: Box<[SigningSecret]>,
}

// Read through the same accessors as a `WebhookConfig` where that is shorter.
impl Settings {
    fn new(config: &WebhookConfig) -> Settings {
        Settings {
            plan: config.plan(),
            one_event_per_call: config.one_event_per_call(),
            accept_any_2xx: config.accept_any_2xx(),
            max_batch_events: config.max_batch_events(),
            max_batch_bytes: config.max_batch_bytes(),
            push_interval: config.push_interval(),
            request_timeout: config.request_timeout(),
            included_variables: config.included_variables().clone(),
            signing_secrets: config.signing_secrets().into(),
        }
    }

    fn plan(&self) -> Plan {
        self.plan
    }

    fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    fn push_interval(&self) -> Duration {
        self.push_interval
    }
}

/// One configured webhook: everything a push reads or writes is here, in
/// one allocation (the map holds a pointer to it), or on the first cache
/// line of its endpoint's buffer, which the map's key shares (see [`Endpoint`]).
struct Webhook {
    config: Settings,
    gate: Arc<Gate>,
    store: WebhookStore,
    /// The first push time; later ones follow on a grid of `push_interval` from it.
    anchor: Instant,
    /// When the last call started, including the call under way.
    last_push_started: Option<Instant>,
    /// The ticket of this webhook's live schedule entry.
    scheduled: Option<NonZeroU64>,
    /// The sequence number of the call under way.
    call: Option<u64>,
    /// Events still to deliver for the flush under way.
    flush_remaining: usize,
    /// Delivered events and calls, counted here rather than on the gate
    /// that `enqueue` callers update from other threads.
    calls: CallCounts,
    /// URL, `Authorization` value and account name, ready to clone.
    endpoint: Endpoint,
}

impl Webhook {
    fn counts(&self) -> EventCounts {
        self.gate.counters.snapshot_with(self.store.in_flight(), &self.calls)
    }

    fn state(&self) -> WebhookState {
        if self.store.disabled {
            WebhookState::Disabled
        } else if self.config.plan == Plan::Free {
            WebhookState::FreePlan
        } else {
            WebhookState::Active
        }
    }

    fn batch_limits(&self) -> (usize, usize) {
        rules::batch_limits(self.config.one_event_per_call, self.config.max_batch_events, self.config.max_batch_bytes)
    }

    /// The first grid time at or after `earliest`.
    fn next_grid_time(&self, earliest: Instant) -> Instant {
        if earliest <= self.anchor {
            return self.anchor;
        }
        rules::next_grid_offset(earliest - self.anchor, self.config.push_interval())
            .and_then(|offset| self.anchor.checked_add(offset))
            .unwrap_or(earliest)
    }
}

/// Due times of webhooks with events waiting: a min-heap with lazy deletion
/// (an entry counts while its ticket is its webhook's `scheduled`).
struct DueTimes {
    heap: BinaryHeap<Reverse<(Instant, NonZeroU64, Arc<str>)>>,
    /// Tickets start at 1, so that a webhook's live one fits in a `NonZeroU64`.
    next_ticket: NonZeroU64,
}

impl DueTimes {
    fn set(&mut self, webhook: &mut Webhook, token: &Arc<str>, due: Instant) {
        let ticket = self.next_ticket;
        self.next_ticket = ticket.saturating_add(1);
        webhook.scheduled = Some(ticket);
        self.heap.push(Reverse((due, ticket, Arc::clone(token))));
    }
}

/// What the rules asked of a webhook that the core does after them: it
/// needs more of the core than the webhook (the global bound, notices).
#[derive(Debug, Clone, Copy)]
enum Deferred {
    Disable,
    DropWaiting(DropReason),
}

/// A webhook of the core as the rules see it ([`StoredWebhook`]): its queue
/// and health in its [`WebhookStore`], its due time in the core's schedule.
struct CoreWebhook<'a> {
    webhook: &'a mut Webhook,
    token: &'a Arc<str>,
    now: Instant,
    metrics: &'a CoreMetrics,
    due_times: &'a mut DueTimes,
    /// Events of the call `end_call` ended.
    ended: usize,
    deferred: Option<Deferred>,
}

impl<'a> CoreWebhook<'a> {
    fn new(
        webhook: &'a mut Webhook,
        token: &'a Arc<str>,
        now: Instant,
        metrics: &'a CoreMetrics,
        due_times: &'a mut DueTimes,
    ) -> CoreWebhook<'a> {
        CoreWebhook { webhook, token, now, metrics, due_times, ended: 0, deferred: None }
    }
}

impl StoredWebhook for CoreWebhook<'_> {
    fn failures_in_row(&self) -> u32 {
        self.webhook.store.failures_in_row
    }

    fn end_call(&mut self, delivered: bool) {
        let (metrics, now) = (self.metrics, self.now);
        self.ended =
            self.webhook.store.finish_batch(delivered, |arrival, events| metrics.delivered_since(now, arrival, events));
    }

    fn record_health(&mut self, failures_in_row: u32, failure: Option<&CallOutcome>) {
        self.webhook.store.failures_in_row = failures_in_row;
        if let Some(failure) = failure {
            self.webhook.store.last_failure = Some(failure.to_string().into());
        }
    }

    fn disable(&mut self) {
        self.deferred = Some(Deferred::Disable);
    }

    fn free_plan(&self) -> bool {
        self.webhook.config.plan() == Plan::Free
    }

    fn drop_waiting(&mut self, reason: DropReason) {
        self.deferred = Some(Deferred::DropWaiting(reason));
    }

    fn waiting(&self) -> (usize, usize) {
        let store = &self.webhook.store;
        (store.waiting(), store.waiting_bytes())
    }

    fn batch_limits(&self) -> (usize, usize) {
        self.webhook.batch_limits()
    }
}

impl Schedulable for CoreWebhook<'_> {
    fn push_interval(&self) -> Duration {
        self.webhook.config.push_interval()
    }

    fn since_last_push(&self) -> Option<Duration> {
        self.webhook.last_push_started.map(|started| self.now.saturating_duration_since(started))
    }

    fn until_grid(&self) -> Duration {
        self.webhook.next_grid_time(self.now).saturating_duration_since(self.now)
    }

    fn schedule(&mut self, after: Option<Duration>) {
        match after {
            Some(after) => self.due_times.set(self.webhook, self.token, self.now + after),
            None => self.webhook.scheduled = None,
        }
    }
}

/// Accepts events for a [`DispatchCore`] from any thread, without blocking.
///
/// Cheap to clone; every clone feeds the same core.
#[derive(Debug, Clone)]
pub struct Enqueuer {
    admission: Arc<Admission>,
}

impl Enqueuer {
    /// Offers `event` to its bot's webhook; see [`EnqueueOutcome`].
    ///
    /// Never blocks on a full queue and never panics. For an open webhook
    /// that selects the event and has room to spare it only reads settings
    /// and sends the event to the core's intake, uncounted (the core counts
    /// it when it takes it in); otherwise it checks the bounds exactly and
    /// gives the answer. It waits a moment while the core holds every
    /// `enqueue` off (`configure`, `remove`, `close`, snapshots, and when a
    /// webhook comes near its bound).
    pub fn enqueue(&self, event: Event) -> EnqueueOutcome {
        self.admission.enqueue(event)
    }

    /// A [`BotSender`] for `bot_token`: its route resolved once, for a bot
    /// engine that enqueues many events of the same bot.
    pub fn bot_sender(&self, bot_token: &str) -> BotSender {
        BotSender::new(Arc::clone(&self.admission), bot_token)
    }

    pub(crate) fn doorbell(&self) -> &super::admission::Doorbell {
        &self.admission.doorbell
    }
}

/// The dispatch state machine: every rule of the events webhook, no I/O.
///
/// Like quinn-proto, the core does no networking, spawns nothing and never
/// sleeps. It takes events (through its [`Enqueuer`]), webhook settings and
/// call outcomes; it hands out ready HTTP requests ([`Push`]), says when it
/// next needs to be polled ([`next_wakeup`](Self::next_wakeup)), and queues
/// [`Notice`]s (calls to bill, dropped events, alerts) for the host. Time
/// comes from the [`Clock`] it is given, so tests drive it deterministically
/// with a [`ManualClock`](crate::ManualClock).
/// [`WebhookDispatcher`](super::WebhookDispatcher) drives it on a runtime;
/// a host with its own event loop can drive it directly.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use eventhook::dispatch::{CoreLimits, DispatchCore, EnqueueOutcome};
/// use eventhook::{ChatContext, Event, EventFactory, ManualClock, WebhookConfig};
///
/// let clock = Arc::new(ManualClock::new());
/// let (mut core, enqueuer) = DispatchCore::new(clock.clone(), CoreLimits::default());
/// core.configure(WebhookConfig::builder("bot", "Account", "https://example.com/hook", "secret").build().unwrap());
///
/// let bot = EventFactory::new("bot", "Account").with_clock(clock.clone());
/// let chat = ChatContext::new("conversation", "TelegramChannel");
/// assert_eq!(enqueuer.enqueue(Event::UserMessage(bot.message(&chat, "hi"))), EnqueueOutcome::Accepted);
///
/// assert!(core.poll_push().is_none()); // not due yet
/// clock.advance(Duration::from_secs(30));
/// let push = core.poll_push().expect("due within one interval");
/// assert_eq!(push.events, 1);
/// core.on_push_result(&push.id, Ok(http::StatusCode::OK));
/// assert_eq!(core.stats().totals.delivered, 1);
/// ```
pub struct DispatchCore {
    admission: Arc<Admission>,
    intake: IntakeReceiver,
    /// Boxed: the map's spare capacity then costs a key and a pointer per
    /// slot, not a whole webhook. Keyed by the token at the head of each
    /// webhook's endpoint buffer (see [`Endpoint`]).
    webhooks: std::collections::HashMap<TokenKey, Box<Webhook>, BuildTokenHasher>,
    due_times: DueTimes,
    next_call: u64,
    /// Serials of calls (not attempts), for their `webhook-id`s.
    next_call_serial: u64,
    /// Random for each core, so that `webhook-id`s do not repeat after a restart.
    call_id_prefix: u64,
    calls_in_flight: usize,
    limits: CoreLimits,
    clock: Arc<dyn Clock>,
    notices: std::collections::VecDeque<Notice>,
    flushing_webhooks: usize,
    flush_failures: usize,
    /// Whether the last take-in stopped at its limit with events left behind.
    intake_backlog: bool,
    /// Configured webhooks that are disabled.
    disabled_webhooks: usize,
    metrics: CoreMetrics,
}

impl fmt::Debug for DispatchCore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DispatchCore")
            .field("webhooks", &self.webhooks.len())
            .field("calls_in_flight", &self.calls_in_flight)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl DispatchCore {
    /// A core with no webhooks, and the [`Enqueuer`] that feeds it.
    ///
    /// With the `metrics` feature, its metrics (see the README's Metrics
    /// section) are registered here, with the recorder in force now.
    pub fn new(clock: Arc<dyn Clock>, limits: CoreLimits) -> (DispatchCore, Enqueuer) {
        let (sender, intake) = intake::intake(intake::RING_CAPACITY);
        let admission = Arc::new(Admission::new(sender, limits.max_pending_events));
        let metrics = CoreMetrics::new(clock.now());
        let core = DispatchCore {
            admission: Arc::clone(&admission),
            intake,
            webhooks: std::collections::HashMap::default(),
            due_times: DueTimes { heap: BinaryHeap::new(), next_ticket: NonZeroU64::MIN },
            next_call: 0,
            next_call_serial: 0,
            call_id_prefix: signing::call_id_prefix(&*clock),
            calls_in_flight: 0,
            limits: CoreLimits { max_concurrent_pushes: limits.max_concurrent_pushes.max(1), ..limits },
            clock: Arc::clone(&clock),
            notices: std::collections::VecDeque::new(),
            flushing_webhooks: 0,
            flush_failures: 0,
            intake_backlog: false,
            disabled_webhooks: 0,
            metrics,
        };
        (core, Enqueuer { admission })
    }

    /// Sets up or replaces a bot's webhook. Replacing re-enables a disabled
    /// webhook with no failures counted, keeps its pending events (sent with
    /// the new settings) and its counts.
    pub fn configure(&mut self, config: WebhookConfig) {
        let now = self.clock.now();
        let admission = Arc::clone(&self.admission);
        let mut gates = admission.exclusive();
        // Complete held counts for the capacity the gate checks the new settings against.
        self.take_in_shut_out();
        let token = config.shared_bot_token();
        let anchor = now + rules::phase(&token, config.push_interval());
        let (key, endpoint) = Endpoint::new(&config);
        match self.webhooks.remove(token.as_bytes()) {
            Some(mut webhook) => {
                webhook.gate.apply(&config);
                self.disabled_webhooks -= usize::from(webhook.store.disabled);
                webhook.store.disabled = false;
                webhook.store.failures_in_row = 0;
                webhook.store.last_failure = None;
                // Saving the settings forms the failed call again, with them.
                webhook.store.release_failed_call();
                webhook.anchor = anchor;
                webhook.config = Settings::new(&config);
                webhook.endpoint = endpoint;
                // Re-keyed: the key shares the new endpoint's buffer.
                self.webhooks.insert(key, webhook);
            }
            None => {
                let gate = Arc::new(Gate::new(Arc::clone(&token), &config));
                gates.insert(Arc::clone(&token), Arc::clone(&gate));
                let webhook = Webhook {
                    config: Settings::new(&config),
                    gate,
                    store: WebhookStore::default(),
                    anchor,
                    last_push_started: None,
                    scheduled: None,
                    call: None,
                    flush_remaining: 0,
                    calls: CallCounts::default(),
                    endpoint,
                };
                self.webhooks.insert(key, Box::new(webhook));
            }
        }
        admission.settings_changed();
        drop(gates);
        self.settle(&token, now, Settled::Idle);
        self.publish_gauges();
    }

    /// Removes a bot's webhook and returns its undelivered events (counted
    /// as dropped with reason [`DropReason::Removed`]). A call under way is
    /// abandoned: its events are returned too, and may also arrive.
    pub fn remove(&mut self, bot_token: &str) -> Vec<Event> {
        let admission = Arc::clone(&self.admission);
        let mut gates = admission.exclusive();
        if let Some(gate) = gates.remove(bot_token) {
            gate.retire();
            admission.settings_changed();
        }
        // No enqueue is mid-way now, so the intake holds every event this bot will get.
        self.take_in_shut_out();
        drop(gates);
        let Some(mut webhook) = self.webhooks.remove(bot_token.as_bytes()) else {
            return Vec::new();
        };
        if webhook.call.take().is_some() {
            self.calls_in_flight -= 1;
            self.metrics.call_abandoned(webhook.store.in_flight());
        }
        if webhook.flush_remaining > 0 {
            self.flushing_webhooks -= 1;
        }
        self.disabled_webhooks -= usize::from(webhook.store.disabled);
        let events = self.take_all_events(&mut webhook, DropReason::Removed);
        self.admission.retired.absorb(&webhook.counts());
        self.publish_gauges();
        events
    }

    /// Takes in every event waiting in the intake now, encoding each into
    /// its webhook's queue. [`poll_push`](Self::poll_push) and
    /// [`next_wakeup`](Self::next_wakeup) take a bounded share per call, so
    /// that during a burst pushes leave while the rest is encoded;
    /// `next_wakeup` returns the current time while a share is left.
    pub fn take_in_all(&mut self) {
        self.drain_intake();
    }

    /// The next call to make now, if any webhook is due and the concurrency
    /// cap allows. Call repeatedly until `None`.
    pub fn poll_push(&mut self) -> Option<Push> {
        self.take_in_some();
        if self.calls_in_flight >= self.limits.max_concurrent_pushes {
            return None;
        }
        let now = self.clock.now();
        while let Some(Reverse((due, ticket, _))) = self.due_times.heap.peek() {
            if *due > now {
                return None;
            }
            let ticket = *ticket;
            let Some(Reverse((_, _, token))) = self.due_times.heap.pop() else { break };
            let Some(webhook) = self.webhooks.get_mut(token.as_bytes()) else { continue };
            if webhook.scheduled != Some(ticket) {
                continue; // superseded by a later scheduling
            }
            webhook.scheduled = None;
            if webhook.call.is_some() || webhook.store.disabled || webhook.store.waiting() == 0 {
                continue;
            }
            let sequence = self.next_call;
            self.next_call += 1;
            self.calls_in_flight += 1;
            let call_ids = CallIds { prefix: self.call_id_prefix, next_serial: &mut self.next_call_serial };
            let push = start_push(webhook, &token, sequence, now, call_ids, &*self.clock);
            self.metrics.call_started(push.events);
            self.publish_gauges();
            return Some(push);
        }
        None
    }

    /// Reports how the call `id` ended: the status received, or why none was.
    ///
    /// Exactly `200 OK` is a success (any `2xx` when the webhook accepts
    /// them); anything else fails the call, and the 11th failure in a row
    /// disables the webhook. The next attempt after a failure sends the same
    /// call again: its events, its body and (signed) its `webhook-id`, with
    /// a new timestamp and signature; events that arrived meanwhile go in
    /// later calls. Results of calls abandoned by `remove` or
    /// `take_undelivered` are ignored.
    pub fn on_push_result(&mut self, id: &PushId, result: Result<StatusCode, TransportError>) {
        self.settle_call(id, result);
        self.publish_gauges();
    }

    /// [`on_push_result`](Self::on_push_result) but for the gauges.
    fn settle_call(&mut self, id: &PushId, result: Result<StatusCode, TransportError>) {
        // Events waiting in the intake count when deciding whether a full batch is left.
        self.take_in_some();
        let now = self.clock.now();
        let Some(webhook) = self.webhooks.get_mut(id.bot_token.as_bytes()) else { return };
        if webhook.call.take_if(|sequence| *sequence == id.sequence).is_none() {
            return;
        }
        self.calls_in_flight -= 1;
        let started = webhook.last_push_started.unwrap_or(now);
        let bytes = webhook.store.in_flight_body_length();
        let outcome = rules::call_outcome(result, webhook.config.accept_any_2xx);
        let delivered = outcome.is_success();
        // A flush makes one attempt per webhook; after a success it goes on while its events last.
        if webhook.flush_remaining > 0 {
            let ends = if delivered {
                webhook.flush_remaining = webhook.flush_remaining.saturating_sub(webhook.store.in_flight());
                webhook.flush_remaining == 0 || webhook.store.waiting() == 0
            } else {
                self.flush_failures += 1;
                true
            };
            if ends {
                webhook.flush_remaining = 0;
                self.flushing_webhooks -= 1;
            }
        }
        let flushing = webhook.flush_remaining > 0;
        let mut stored = CoreWebhook::new(webhook, &id.bot_token, now, &self.metrics, &mut self.due_times);
        rules::settle_call(&mut stored, &outcome, flushing);
        let CoreWebhook { ended: events, deferred, .. } = stored;
        let duration = now.saturating_duration_since(started);
        self.metrics.call_ended(&outcome, events, duration);
        webhook.calls.calls += 1;
        self.notices.push_back(Notice::Call(CallRecord {
            bot_token: Arc::clone(&id.bot_token),
            account_name: webhook.endpoint.account_name.clone(),
            url: webhook.endpoint.url.clone(),
            events,
            bytes,
            duration,
            outcome,
        }));
        if delivered {
            webhook.gate.counters.release_delivered(events as u64);
            webhook.calls.delivered += events as u64;
            self.admission.release(events);
            self.admission.relieve(&webhook.gate);
        } else {
            webhook.calls.calls_failed += 1;
        }
        if let Some(deferred) = deferred {
            let token = Arc::clone(&id.bot_token);
            self.carry_out(&token, deferred);
        }
    }

    /// Takes in newly enqueued events, then says when the core next has a
    /// push due, if any; poll again then (or sooner, after new events,
    /// settings or results). `None` means nothing
    /// is scheduled, or the concurrency cap is reached and only a call's
    /// result can free a slot.
    pub fn next_wakeup(&mut self) -> Option<Instant> {
        self.take_in_some();
        if self.intake_backlog {
            // More events wait in the intake: come back at once.
            return Some(self.clock.now());
        }
        if self.calls_in_flight >= self.limits.max_concurrent_pushes {
            return None;
        }
        while let Some(Reverse((due, ticket, token))) = self.due_times.heap.peek() {
            let live = self.webhooks.get(token.as_bytes()).is_some_and(|webhook| webhook.scheduled == Some(*ticket));
            if live {
                return Some(*due);
            }
            self.due_times.heap.pop();
        }
        None
    }

    /// Makes every webhook with pending events due now, and keeps pushing
    /// each at once after a success until the events pending now are
    /// delivered or a call fails. See [`is_flush_complete`](Self::is_flush_complete).
    pub fn begin_flush(&mut self) {
        self.drain_intake();
        self.flush_failures = 0;
        let now = self.clock.now();
        let tokens: Vec<Arc<str>> = self
            .webhooks
            .iter()
            .filter(|(_, webhook)| !webhook.store.disabled && webhook.store.waiting() + webhook.store.in_flight() > 0)
            .map(|(_, webhook)| Arc::clone(&webhook.gate.bot_token))
            .collect();
        for token in tokens {
            let Some(webhook) = self.webhooks.get_mut(token.as_bytes()) else { continue };
            if webhook.flush_remaining == 0 {
                self.flushing_webhooks += 1;
            }
            webhook.flush_remaining = webhook.store.waiting() + webhook.store.in_flight();
            if webhook.call.is_none() {
                self.schedule_at(&token, now);
            }
        }
    }

    /// Whether the flush begun last has ended for every webhook.
    pub fn is_flush_complete(&self) -> bool {
        self.flushing_webhooks == 0
    }

    /// Webhooks whose call failed during the flush begun last.
    pub fn flush_failures(&self) -> usize {
        self.flush_failures
    }

    /// Takes every undelivered event of every webhook (queued, or in calls,
    /// which are abandoned), counted as dropped with reason
    /// [`DropReason::Shutdown`]. Used at shutdown, after the last flush.
    pub fn take_undelivered(&mut self) -> Vec<Event> {
        self.drain_intake();
        let tokens: Vec<TokenKey> = self.webhooks.keys().cloned().collect();
        let mut undelivered = Vec::new();
        for token in tokens {
            let Some(mut webhook) = self.webhooks.remove::<[u8]>(token.borrow()) else { continue };
            if webhook.call.take().is_some() {
                self.calls_in_flight -= 1;
                self.metrics.call_abandoned(webhook.store.in_flight());
            }
            webhook.scheduled = None;
            webhook.flush_remaining = 0;
            undelivered.extend(self.take_all_events(&mut webhook, DropReason::Shutdown));
            self.webhooks.insert(token, webhook);
        }
        self.flushing_webhooks = 0;
        self.publish_gauges();
        undelivered
    }

    /// The next notice for the host (calls to bill, dropped events, alerts), oldest first.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Stops accepting events: every later `enqueue` returns [`EnqueueOutcome::Closed`].
    pub fn close(&mut self) {
        self.admission.close();
    }

    /// Whether the dispatcher has been closed.
    pub fn is_closed(&self) -> bool {
        self.admission.is_closed()
    }

    /// Calls under way.
    pub fn calls_in_flight(&self) -> usize {
        self.calls_in_flight
    }

    /// A snapshot of one bot's webhook. It balances (see [`EventCounts`]):
    /// it waits for any `enqueue` half-way through, and counts every event
    /// accepted so far (it takes in what waits in the intake).
    pub fn webhook_stats(&mut self, bot_token: &str) -> Option<WebhookStats> {
        // `enqueue` raises two counters while shared; the core moves events only under `&mut self`.
        let admission = Arc::clone(&self.admission);
        let _no_enqueue_half_way = admission.exclusive();
        self.take_in_shut_out();
        self.webhooks.get(bot_token.as_bytes()).map(|webhook| WebhookStats {
            bot_token: bot_token.to_owned(),
            state: webhook.state(),
            counts: webhook.counts(),
            failures_in_row: webhook.store.failures_in_row,
            last_failure: webhook.store.last_failure.as_deref().map(str::to_owned),
        })
    }

    /// The webhooks that still hold undelivered events, with their last
    /// failure (after taking in what waits in the intake).
    pub fn stalled_webhooks(&mut self) -> Vec<StalledWebhook> {
        self.drain_intake();
        let mut stalled: Vec<StalledWebhook> = self
            .webhooks
            .values()
            .filter_map(|webhook| {
                let counts = webhook.counts();
                let undelivered = counts.pending + counts.in_flight;
                (undelivered > 0).then(|| {
                    let bot_token = webhook.gate.bot_token.to_string();
                    let last_failure = webhook.store.last_failure.as_deref().map(str::to_owned);
                    StalledWebhook { bot_token, state: webhook.state(), undelivered, last_failure }
                })
            })
            .collect();
        stalled.sort_by(|left, right| left.bot_token.cmp(&right.bot_token));
        stalled
    }

    /// A snapshot of every webhook, in total (including removed ones). It
    /// balances (see [`EventCounts`]): it waits for any `enqueue` half-way
    /// through, and counts every event accepted so far (it takes in what
    /// waits in the intake, which may schedule a push: ask
    /// [`next_wakeup`](Self::next_wakeup) again afterwards).
    pub fn stats(&mut self) -> DispatcherStats {
        // As in `webhook_stats`.
        let admission = Arc::clone(&self.admission);
        let _no_enqueue_half_way = admission.exclusive();
        self.take_in_shut_out();
        let mut totals: EventCounts = self.admission.retired.snapshot();
        for webhook in self.webhooks.values() {
            totals.add(&webhook.counts());
        }
        DispatcherStats { webhooks: self.webhooks.len(), disabled_webhooks: self.disabled_webhooks, totals }
    }

    /// Sets the metrics' gauges from the counts as they are now.
    fn publish_gauges(&self) {
        self.metrics.gauges(self.admission.held(), self.calls_in_flight, self.webhooks.len(), self.disabled_webhooks);
    }

    /// Takes in every event waiting in the intake.
    fn drain_intake(&mut self) {
        self.take_in(usize::MAX);
    }

    /// Takes in a bounded share of the intake, so that during a burst pushes
    /// leave while the rest is still being encoded.
    fn take_in_some(&mut self) {
        self.take_in(INTAKE_SHARE);
    }

    /// Takes in up to `limit` events; then crowds the webhooks that came too
    /// near their bound, with every `enqueue` shut out for that moment.
    fn take_in(&mut self, limit: usize) {
        let mut crowding = Vec::new();
        self.take_in_events(limit, &mut crowding);
        if !crowding.is_empty() {
            let admission = Arc::clone(&self.admission);
            let _exclusive = admission.exclusive();
            self.take_in_events(usize::MAX, &mut crowding);
            admission.crowd(&crowding);
        }
    }

    /// Takes in every event, crowding as needed; the caller has every
    /// `enqueue` shut out (see [`Admission::exclusive`]).
    fn take_in_shut_out(&mut self) {
        let mut crowding = Vec::new();
        self.take_in_events(usize::MAX, &mut crowding);
        if !crowding.is_empty() {
            self.admission.crowd(&crowding);
        }
    }

    /// Moves up to `limit` accepted events from the intake into their
    /// webhooks' queues, encoding them once here, off the callers' threads.
    /// Counts the events `enqueue` did not, and adds to `crowding` the gates
    /// that now have too little room for uncounted events (the caller crowds
    /// them with every `enqueue` shut out and the ring drained).
    fn take_in_events(&mut self, limit: usize, crowding: &mut Vec<Arc<Gate>>) {
        let now = self.clock.now();
        self.admission.doorbell.take_events();
        // One arrival time per take-in: the events taken in together share a run in each queue.
        let arrival = self.metrics.arrival(now);
        let mut encoded = Vec::new();
        let mut taken = 0;
        while taken < limit {
            let Some((event, lane)) = self.intake.try_recv() else { break };
            taken += 1;
            let webhook = event.bot_token().and_then(|token| self.webhooks.get_mut(token.as_bytes()));
            let Some(webhook) = webhook else {
                // Unreachable by the locking protocol of `remove`, which counted
                // the event as pending among the retired counts; never lost silently.
                if lane == Lane::Uncounted {
                    hold_taken_in(&self.admission, &self.admission.retired);
                }
                count_dropped_in(&self.admission, &self.metrics, &self.admission.retired, 1, DropReason::Removed);
                continue;
            };
            // Borrowed, not cloned: a clone would write the gate's cache line, which `enqueue` reads.
            let gate = &webhook.gate;
            if lane == Lane::Uncounted {
                hold_taken_in(&self.admission, &gate.counters);
            }
            // Counted events too: a webhook filled while `enqueue` counted
            // everything must be crowded before its events go uncounted again.
            let already = crowding.last().is_some_and(|last| Arc::ptr_eq(last, gate));
            if !already && self.admission.needs_crowding(gate) {
                crowding.push(Arc::clone(gate));
            }
            let drop_reason = if webhook.store.disabled {
                Some(DropReason::Disabled)
            } else if webhook.config.plan() == Plan::Free {
                Some(DropReason::Reconfigured)
            } else {
                encoded.clear();
                wire::encode_event_including(&event, &webhook.config.included_variables, &mut encoded);
                let too_large = !rules::fits_alone(encoded.len(), webhook.config.max_batch_bytes())
                    || encoded.len() > WebhookStore::MAX_EVENT_BYTES;
                too_large.then_some(DropReason::TooLarge)
            };
            if let Some(reason) = drop_reason {
                count_dropped(&self.admission, &self.metrics, gate, 1, reason);
                push_dropped(&mut self.notices, &gate.bot_token, reason, vec![event]);
                continue;
            }
            webhook.store.push(&encoded, arrival);
            let idle = webhook.scheduled.is_none() && webhook.call.is_none();
            if idle {
                let token = Arc::clone(&gate.bot_token);
                let mut stored = CoreWebhook::new(webhook, &token, now, &self.metrics, &mut self.due_times);
                rules::schedule_first_push(&mut stored);
            }
        }
        // Stopping at the limit may leave events behind.
        self.intake_backlog = taken == limit;
        if taken > 0 {
            self.metrics.accepted(taken);
            self.publish_gauges();
        }
    }

    fn schedule_at(&mut self, token: &Arc<str>, due: Instant) {
        let Some(webhook) = self.webhooks.get_mut(token.as_bytes()) else { return };
        self.due_times.set(webhook, token, due);
    }

    /// Schedules a webhook that has no call under way, after a
    /// reconfiguration, by [`rules::schedule`].
    fn settle(&mut self, token: &Arc<str>, now: Instant, settled: Settled) {
        let Some(webhook) = self.webhooks.get_mut(token.as_bytes()) else { return };
        if webhook.call.is_some() || webhook.store.disabled {
            return;
        }
        let flushing = webhook.flush_remaining > 0;
        let mut stored = CoreWebhook::new(webhook, token, now, &self.metrics, &mut self.due_times);
        rules::schedule(&mut stored, settled, flushing);
        if let Some(deferred) = stored.deferred {
            self.carry_out(token, deferred);
        }
    }

    /// Does what the rules asked of a webhook that needs more of the core
    /// than the webhook itself (see [`CoreWebhook`]).
    fn carry_out(&mut self, token: &Arc<str>, deferred: Deferred) {
        match deferred {
            Deferred::Disable => self.disable(token),
            Deferred::DropWaiting(reason) => {
                let Some(webhook) = self.webhooks.get_mut(token.as_bytes()) else { return };
                if webhook.flush_remaining > 0 {
                    webhook.flush_remaining = 0;
                    self.flushing_webhooks -= 1;
                }
                let events = webhook.store.take_waiting();
                if !events.is_empty() {
                    count_dropped(&self.admission, &self.metrics, &webhook.gate, events.len(), reason);
                    push_dropped(&mut self.notices, token, reason, decode(&events));
                }
            }
        }
    }

    fn disable(&mut self, token: &Arc<str>) {
        let wall_time = self.clock.wall_time();
        let Some(webhook) = self.webhooks.get_mut(token.as_bytes()) else { return };
        webhook.store.disabled = true;
        webhook.gate.disable();
        self.admission.settings_changed();
        self.disabled_webhooks += 1;
        self.metrics.webhook_disabled();
        webhook.scheduled = None;
        let alert = WebhookDisabledAlert {
            bot_token: webhook.gate.bot_token.to_string(),
            account_name: webhook.endpoint.account_name().to_owned(),
            url: webhook.endpoint.url.to_string(),
            failures_in_row: webhook.store.failures_in_row,
            last_failure: webhook.store.last_failure.as_deref().unwrap_or_default().to_owned(),
            disabled_at: wall_time,
        };
        let events = webhook.store.take_all();
        let count = events.len();
        count_dropped(&self.admission, &self.metrics, &webhook.gate, count, DropReason::Disabled);
        if count > 0 {
            push_dropped(&mut self.notices, token, DropReason::Disabled, decode(&events));
        }
        self.notices.push_back(Notice::Disabled(alert));
    }

    fn take_all_events(&mut self, webhook: &mut Webhook, reason: DropReason) -> Vec<Event> {
        let events = webhook.store.take_all();
        count_dropped(&self.admission, &self.metrics, &webhook.gate, events.len(), reason);
        decode(&events)
    }
}

/// Counts an event that `enqueue` sent uncounted, now taken in, as accepted
/// and held: in `counters` and against the global bound.
fn hold_taken_in(admission: &Admission, counters: &Counters) {
    counters.accept_held(1);
    admission.hold(1);
}

/// Counts `events` held by `counters` as dropped for `reason`: in the
/// stats, against the global bound and in the metrics.
fn count_dropped_in(
    admission: &Admission,
    metrics: &CoreMetrics,
    counters: &Counters,
    events: usize,
    reason: DropReason,
) {
    counters.held_to_dropped(events as u64, reason);
    admission.release(events);
    metrics.dropped(reason, events);
}

/// [`count_dropped_in`] a configured webhook's gate, whose crowding (and
/// the global one) may end with the room freed.
fn count_dropped(admission: &Admission, metrics: &CoreMetrics, gate: &Gate, events: usize, reason: DropReason) {
    count_dropped_in(admission, metrics, &gate.counters, events, reason);
    admission.relieve(gate);
}

/// Where a new call's serial comes from, and the core's `webhook-id` prefix.
struct CallIds<'a> {
    prefix: u64,
    next_serial: &'a mut u64,
}

/// Marks a batch of `webhook` as in flight and builds its request: a failed
/// call again (see [`WebhookStore::start_batch`]), or a new one. A webhook
/// with signing secrets also gets the Standard Webhooks headers, signed for
/// this attempt's time.
fn start_push(
    webhook: &mut Webhook,
    token: &Arc<str>,
    sequence: u64,
    now: Instant,
    call_ids: CallIds<'_>,
    clock: &dyn Clock,
) -> Push {
    let (max_events, max_bytes) = webhook.batch_limits();
    let batch = webhook.store.start_batch(max_events, max_bytes, || {
        let serial = *call_ids.next_serial;
        *call_ids.next_serial += 1;
        serial
    });
    webhook.last_push_started = Some(now);
    webhook.call = Some(sequence);
    let secrets = &webhook.config.signing_secrets;
    let signature = (!secrets.is_empty()).then(|| CallSignature {
        secrets,
        call_id: signing::call_id(call_ids.prefix, batch.serial),
        timestamp: clock.wall_time().timestamp(),
    });
    let request = webhook.endpoint.call_request(batch.body, signature);
    Push {
        id: PushId { sequence, bot_token: Arc::clone(token) },
        request,
        events: batch.events,
        timeout: webhook.config.request_timeout,
    }
}

/// Decodes stored events to hand them back, one for one: the counts say
/// that many were dropped or returned.
///
/// The codec reads back every event it writes (property-tested, and an
/// [`EventDate`](crate::EventDate) holds only dates it can write). Should
/// one still not parse, it is handed back as an [`Event::Unknown`] with the
/// fields it was stored with, never left out.
fn decode(encoded: &[Box<[u8]>]) -> Vec<Event> {
    encoded.iter().map(|bytes| decode_stored(bytes)).collect()
}

/// One stored event back as an event (see [`decode`]).
pub(crate) fn decode_stored(bytes: &[u8]) -> Event {
    wire::parse_event(bytes).unwrap_or_else(|_| stored_fields(bytes))
}

/// An event the parser refused, as its stored JSON object's fields.
fn stored_fields(encoded: &[u8]) -> Event {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(encoded).unwrap_or_default();
    let code = object.remove("Type").and_then(|code| code.as_u64()).unwrap_or_default();
    Event::Unknown(crate::event::UnknownEvent { code, fields: object.into_iter().collect() })
}

/// Adds dropped events to the notices, merging with the last notice when it
/// is for the same bot and reason.
fn push_dropped(
    notices: &mut std::collections::VecDeque<Notice>,
    bot_token: &str,
    reason: DropReason,
    events: Vec<Event>,
) {
    if let Some(Notice::Dropped(last)) = notices.back_mut() {
        if last.bot_token == bot_token && last.reason == reason {
            last.events.extend(events);
            return;
        }
    }
    notices.push_back(Notice::Dropped(DroppedEvents { bot_token: bot_token.to_owned(), reason, events }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: an event that failed to decode was left out of what
    /// `shutdown` returned (2 counted dropped, 1 handed back).
    #[test]
    fn an_event_that_does_not_parse_back_is_handed_back_not_left_out() {
        let stored: Vec<Box<[u8]>> = vec![
            br#"{"Type":7,"BotToken":"bot","AccountName":"Account","Date":"9999-02-29T12:00:00+00:00","Text":"t"}"#
                .as_slice()
                .into(),
            br#"{"Type":14,"BotToken":"bot"}"#.as_slice().into(),
        ];
        let events = decode(&stored);
        assert_eq!(events.len(), 2);
        let Event::Unknown(refused) = &events[0] else { panic!("{:?}", events[0]) };
        assert_eq!(refused.code, 7);
        assert_eq!(refused.field("Date"), Some(&serde_json::Value::from("9999-02-29T12:00:00+00:00")));
        assert_eq!(events[0].bot_token(), Some("bot"));
        assert_eq!(events[1].code(), 14);
    }
}
