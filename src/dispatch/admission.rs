//! Admission: the part of `enqueue` that runs on the caller's thread.
//!
//! It must cost about a channel send. On the common path an event of an
//! open webhook with room to spare touches only memory that `enqueue`
//! callers read and nobody writes (the dispatcher's epoch, the bot's
//! settings word or a [`BotSender`](super::BotSender)'s copy of it), a lock
//! shard of the caller's thread, and the intake's ring: nothing is counted
//! here, the core counts the event when it takes it in.
//!
//! A webhook with no more room than the ring ([`RING_CAPACITY`]), or a
//! dispatcher near its global bound, is *crowded*: its events are counted
//! here, exactly, against the bounds, and travel by the counted lane. The
//! core marks a webhook crowded with every `enqueue` shut out and the ring
//! drained, so no uncounted event of it is left anywhere; the bound is then
//! exact, and while it is not crowded the ring cannot hold enough of its
//! events to pass it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use super::intake::{IntakeSender, RING_CAPACITY};
use super::metrics::RefusalMetrics;
use super::outcome::EnqueueOutcome;
use super::rules;
use super::stats::{Counters, Refusal};
use super::token_hash::TokenMap;
use crate::config::{Plan, WebhookConfig};
use crate::event::Event;

/// A webhook's admission settings, in one word that `enqueue` reads at once.
/// The low bits are the selected event kinds (bit `1 << code`).
pub(crate) type Settings = u32;
const SELECTED_KINDS: Settings = (1 << 16) - 1;
const FREE_PLAN: Settings = 1 << 16;
const DISABLED: Settings = 1 << 17;
/// The webhook was removed; a new configuration makes a new gate.
const REMOVED: Settings = 1 << 18;
/// Less room than the ring holds: `enqueue` counts this webhook's events.
const CROWDED: Settings = 1 << 19;
/// Any of these sends an event down the counted path, which gives the answer.
const NOT_OPEN: Settings = FREE_PLAN | DISABLED | REMOVED | CROWDED;

/// The dispatcher's state that every `enqueue` reads: two flags and a
/// generation that changes with any settings word, so that a copy of a word
/// taken at one epoch is valid exactly while the epoch stays the same.
pub(crate) type Epoch = u64;
const CLOSED: Epoch = 1;
/// Near the global bound: `enqueue` counts every event.
const GLOBALLY_CROWDED: Epoch = 1 << 1;
const GENERATION_STEP: Epoch = 1 << 2;

/// The admission settings and live counters of one bot's webhook.
///
/// Lives as long as the webhook is configured; reconfiguring updates it in
/// place, so counts carry on.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) bot_token: Arc<str>,
    settings: AtomicU32,
    capacity: AtomicUsize,
    pub(crate) counters: Counters,
}

impl Gate {
    pub(crate) fn new(bot_token: Arc<str>, config: &WebhookConfig) -> Gate {
        let gate = Gate {
            bot_token,
            settings: AtomicU32::new(0),
            capacity: AtomicUsize::new(0),
            counters: Counters::default(),
        };
        gate.apply(config);
        gate
    }

    /// Takes the settings of `config`; a reconfiguration also re-enables.
    /// Call with every `enqueue` shut out and the intake drained, so that the
    /// held count it checks the new capacity against is complete.
    pub(crate) fn apply(&self, config: &WebhookConfig) {
        let selected = config.events().iter().fold(0, |bits, kind| bits | 1 << kind.code());
        let free_plan = if config.plan() == Plan::Free { FREE_PLAN } else { 0 };
        self.capacity.store(config.queue_capacity(), Ordering::Relaxed);
        let crowded = if self.is_short_of_room() { CROWDED } else { 0 };
        self.settings.store(selected | free_plan | crowded, Ordering::Release);
    }

    pub(crate) fn settings(&self) -> Settings {
        self.settings.load(Ordering::Acquire)
    }

    fn set(&self, flag: Settings, on: bool) {
        if on {
            self.settings.fetch_or(flag, Ordering::AcqRel);
        } else {
            self.settings.fetch_and(!flag, Ordering::AcqRel);
        }
    }

    /// Marks the gate as no longer configured; call with every `enqueue` shut out.
    pub(crate) fn retire(&self) {
        self.set(REMOVED, true);
    }

    pub(crate) fn disable(&self) {
        self.set(DISABLED, true);
    }

    fn is_crowded(&self) -> bool {
        self.settings() & CROWDED != 0
    }

    /// No more room than the ring could hold uncounted: must be crowded.
    /// (At exactly a ring's room, the counted path already refuses what it
    /// cannot prove fits, so crowding must begin there, not one event later.)
    pub(crate) fn is_short_of_room(&self) -> bool {
        self.held() + RING_CAPACITY as u64 >= self.capacity.load(Ordering::Relaxed) as u64
    }

    /// Room for two rings: crowding can end without flapping back at once.
    fn has_room_again(&self) -> bool {
        self.held() + 2 * RING_CAPACITY as u64 <= self.capacity.load(Ordering::Relaxed) as u64
    }

    fn held(&self) -> u64 {
        self.counters.held.load(Ordering::Acquire)
    }
}

/// Whether a settings word is of a removed webhook's gate (exact in a copy:
/// removal changes the epoch while every `enqueue` is shut out).
#[inline]
pub(crate) fn is_removed(settings: Settings) -> bool {
    settings & REMOVED != 0
}

#[inline]
fn selects(settings: Settings, event: &Event) -> bool {
    event.kind().is_some_and(|kind| settings & SELECTED_KINDS & (1 << kind.code()) != 0)
}

/// What a [`BotSender`](super::BotSender) remembers of its gate's settings
/// word, and the epoch it read it in: valid while the epoch has not changed.
/// It lives with the sender, among the engine's per-bot state, so the common
/// path does not read the gate at all.
#[derive(Debug, Default)]
pub(crate) struct SeenSettings(AtomicU64);

/// A copy keeps a settings word in its low 24 bits (every flag fits) and
/// the epoch's low 40 bits above them.
const SEEN_SETTINGS_BITS: u32 = 24;
const SEEN_SETTINGS_MASK: u64 = (1 << SEEN_SETTINGS_BITS) - 1;
const SEEN_EPOCH_BITS: u32 = 64 - SEEN_SETTINGS_BITS;

impl SeenSettings {
    /// The gate's settings word as of `epoch`: the copy, or a fresh read.
    #[inline]
    pub(crate) fn settings(&self, epoch: Epoch, gate: &Gate) -> Settings {
        let epoch_bits = epoch & ((1 << SEEN_EPOCH_BITS) - 1);
        let seen = self.0.load(Ordering::Relaxed);
        if seen >> SEEN_SETTINGS_BITS == epoch_bits {
            return (seen & SEEN_SETTINGS_MASK) as Settings;
        }
        let settings = gate.settings();
        self.0.store(epoch_bits << SEEN_SETTINGS_BITS | u64::from(settings) & SEEN_SETTINGS_MASK, Ordering::Relaxed);
        settings
    }
}

impl Clone for SeenSettings {
    fn clone(&self) -> SeenSettings {
        SeenSettings(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

/// Wakes the dispatcher's task when there is new work it must look at.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// Events arrived since the core last began to take in; `enqueue` rings
    /// only when this was clear, so a stream of events costs one wake-up per
    /// take-in, not one per event.
    events: AtomicBool,
    /// Settings, a flush or a shutdown: look now.
    work: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    /// Something other than events needs the core's attention.
    pub(crate) fn ring(&self) {
        self.work.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// An event was sent to the intake.
    #[inline]
    fn ring_for_events(&self) {
        // SeqCst: pairs with `take_events`, so an event sent just after a
        // take-in began either is taken in by it or rings.
        if !self.events.load(Ordering::SeqCst) && !self.events.swap(true, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Called by the core as it begins to take in: later events ring again.
    pub(crate) fn take_events(&self) {
        // Written only when set: a clear flag stays a line the producers share.
        if self.events.load(Ordering::Relaxed) {
            self.events.store(false, Ordering::SeqCst);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Ready once there is work or events since the core last looked.
    pub(crate) fn poll_rung(&self, context: &mut Context<'_>) -> Poll<()> {
        self.waker.register(context.waker());
        if self.work.swap(false, Ordering::AcqRel) || self.events.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Lock shards: `enqueue` read-locks its thread's shard (a cache line that
/// other threads rarely touch), and whoever must shut every `enqueue` out
/// write-locks them all. One shared lock would cost every `enqueue` a write
/// to a line all producers share.
const READER_SHARDS: usize = 32;

/// The configured bots' gates, by token.
type Gates = TokenMap<Arc<Gate>>;

/// One lock shard, holding the gates' map (the same map in every shard), so
/// that finding a gate by token needs no lock but the shard's. `None` only
/// while an [`Exclusive`] holds the map.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ReaderShard(RwLock<Option<Arc<Gates>>>);

/// The shard of the calling thread: threads are spread over the shards in
/// the order they first enqueue.
#[inline]
fn reader_shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX
        .try_with(|index| {
            if index.get() == usize::MAX {
                index.set(NEXT.fetch_add(1, Ordering::Relaxed) % READER_SHARDS);
            }
            index.get()
        })
        .unwrap_or(0) // A thread being torn down: any shard is correct.
}

/// The epoch, alone on its cache line: read by every `enqueue`, written
/// only when settings change.
#[derive(Debug, Default)]
#[repr(align(128))]
struct EpochCell(AtomicU64);

/// The global count, on a cache line of its own: the core changes it for
/// every event it takes in, and that must not move the lines every
/// `enqueue` reads (the epoch, the doorbell) away from the producers.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PendingTotal(AtomicUsize);

/// Held while no `enqueue` may be between its checks and its send: by
/// `configure`, `remove`, `close`, snapshots and crowding. Gives the map:
/// it takes the map out of every shard, so it holds the only reference and
/// changes it in place; dropping it puts the map back.
pub(crate) struct Exclusive<'a> {
    shards: Vec<RwLockWriteGuard<'a, Option<Arc<Gates>>>>,
    gates: Arc<Gates>,
}

impl std::ops::Deref for Exclusive<'_> {
    type Target = Gates;
    fn deref(&self) -> &Gates {
        &self.gates
    }
}

impl std::ops::DerefMut for Exclusive<'_> {
    fn deref_mut(&mut self) -> &mut Gates {
        // The only reference (every shard's was taken), so this never copies.
        Arc::make_mut(&mut self.gates)
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        for shard in &mut self.shards {
            **shard = Some(Arc::clone(&self.gates));
        }
    }
}

/// Held by an `enqueue` from its checks to its send; gives the gates' map.
pub(crate) type Shared<'a> = RwLockReadGuard<'a, Option<Arc<Gates>>>;

/// The shared admission state: configured bots, global bound, intake.
#[derive(Debug)]
pub(crate) struct Admission {
    epoch: EpochCell,
    readers: Box<[ReaderShard]>,
    intake: IntakeSender,
    /// Counted events not yet delivered or dropped, over all webhooks: taken
    /// in by the core (pending or in flight), or counted by `enqueue` on
    /// their way.
    pending_total: PendingTotal,
    max_pending_total: usize,
    pub(crate) doorbell: Doorbell,
    /// Counts of bots no longer configured, and refusals naming no bot.
    pub(crate) retired: Counters,
    refusals: RefusalMetrics,
}

impl Admission {
    pub(crate) fn new(intake: IntakeSender, max_pending_total: usize) -> Admission {
        let admission = Admission {
            epoch: EpochCell::default(),
            readers: {
                let gates = Arc::new(Gates::default());
                (0..READER_SHARDS).map(|_| ReaderShard(RwLock::new(Some(Arc::clone(&gates))))).collect()
            },
            intake,
            pending_total: PendingTotal::default(),
            max_pending_total,
            doorbell: Doorbell::default(),
            retired: Counters::default(),
            refusals: RefusalMetrics::new(),
        };
        if admission.is_short_of_room() {
            admission.epoch.0.fetch_or(GLOBALLY_CROWDED, Ordering::AcqRel);
        }
        admission
    }

    /// Shuts every `enqueue` out until the guard drops.
    pub(crate) fn exclusive(&self) -> Exclusive<'_> {
        let mut shards: Vec<_> =
            self.readers.iter().map(|shard| shard.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())).collect();
        let mut gates = None;
        for shard in &mut shards {
            // The same map in each; keep one, drop the other references.
            gates = shard.take().or(gates);
        }
        Exclusive { shards, gates: gates.unwrap_or_default() }
    }

    /// What an `enqueue` holds from its checks to its send.
    #[inline]
    pub(crate) fn shared(&self) -> Shared<'_> {
        self.readers[reader_shard_index()].0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[inline]
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch.0.load(Ordering::Acquire)
    }

    /// A settings word changed: every copy of one is stale now.
    pub(crate) fn settings_changed(&self) {
        self.epoch.0.fetch_add(GENERATION_STEP, Ordering::AcqRel);
    }

    fn set_epoch_flag(&self, flag: Epoch, on: bool) {
        if on {
            self.epoch.0.fetch_or(flag, Ordering::AcqRel);
        } else {
            self.epoch.0.fetch_and(!flag, Ordering::AcqRel);
        }
    }

    pub(crate) fn close(&self) {
        let _exclusive = self.exclusive();
        self.set_epoch_flag(CLOSED, true);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.epoch() & CLOSED != 0
    }

    /// Counted events not yet delivered or dropped, over all webhooks: pending or in flight.
    pub(crate) fn held(&self) -> usize {
        self.pending_total.0.load(Ordering::Relaxed)
    }

    /// Counts a refusal in `counters` and in the metrics.
    fn refuse(&self, counters: &Counters, refusal: Refusal) {
        counters.refuse(refusal);
        self.refusals.refused(refusal);
    }

    /// The core took in events that `enqueue` did not count: counts them
    /// held against the global bound.
    pub(crate) fn hold(&self, events: usize) {
        self.pending_total.0.fetch_add(events, Ordering::AcqRel);
    }

    /// Events accepted and not yet delivered or dropped, over all webhooks.
    pub(crate) fn release(&self, events: usize) {
        self.pending_total.0.fetch_sub(events, Ordering::AcqRel);
    }

    fn is_short_of_room(&self) -> bool {
        self.held() + RING_CAPACITY >= self.max_pending_total
    }

    /// Whether the global bound or `gate`'s became too close for uncounted
    /// events; the core then crowds them (see [`crowd`](Self::crowd)).
    pub(crate) fn needs_crowding(&self, gate: &Gate) -> bool {
        (!gate.is_crowded() && gate.is_short_of_room())
            || (self.epoch() & GLOBALLY_CROWDED == 0 && self.is_short_of_room())
    }

    /// Counts the events of `gates`, and all events if the global bound is
    /// near, from now on. Call with every `enqueue` shut out and the ring
    /// drained: no uncounted event of theirs is left anywhere then.
    pub(crate) fn crowd(&self, gates: &[Arc<Gate>]) {
        for gate in gates {
            if gate.is_short_of_room() {
                gate.set(CROWDED, true);
            }
        }
        if self.is_short_of_room() {
            self.set_epoch_flag(GLOBALLY_CROWDED, true);
        }
        self.settings_changed();
    }

    /// After `gate`'s held events went down: ends its crowding, and the
    /// global one, once there is room for two rings again.
    pub(crate) fn relieve(&self, gate: &Gate) {
        let mut changed = false;
        if gate.is_crowded() && gate.has_room_again() {
            gate.set(CROWDED, false);
            changed = true;
        }
        if self.epoch() & GLOBALLY_CROWDED != 0 && self.held() + 2 * RING_CAPACITY <= self.max_pending_total {
            self.set_epoch_flag(GLOBALLY_CROWDED, false);
            changed = true;
        }
        if changed {
            self.settings_changed();
        }
    }

    /// The whole of `enqueue` by token: finds the bot's gate, then offers through it.
    pub(crate) fn enqueue(&self, event: Event) -> EnqueueOutcome {
        let shared = self.shared();
        let gate = shared.as_deref().zip(event.bot_token()).and_then(|(gates, token)| gates.get(token));
        let Some(gate) = gate else {
            let refusal = if self.is_closed() { Refusal::Closed } else { Refusal::NoWebhook };
            self.refuse(&self.retired, refusal);
            return match refusal {
                Refusal::Closed => EnqueueOutcome::Closed(event),
                _ => EnqueueOutcome::NoWebhook,
            };
        };
        let epoch = self.epoch();
        if self.is_open(epoch, gate.settings(), &event) {
            return self.send_open(gate, event);
        }
        self.admit_counted(gate, event)
    }

    /// The gate of `bot_token`, if it has a webhook now.
    pub(crate) fn gate(&self, bot_token: &str) -> Option<Arc<Gate>> {
        self.shared().as_deref().and_then(|gates| gates.get(bot_token)).cloned()
    }

    /// Whether an event of a bot whose settings word as of `epoch` is
    /// `settings` takes the common path: the webhook is open and selects it,
    /// nothing is crowded ([`send_open`](Self::send_open) sends it); if not,
    /// [`admit_counted`](Self::admit_counted) gives the answer.
    #[inline]
    pub(crate) fn is_open(&self, epoch: Epoch, settings: Settings, event: &Event) -> bool {
        epoch & (CLOSED | GLOBALLY_CROWDED) == 0 && settings & NOT_OPEN == 0 && selects(settings, event)
    }

    /// Sends an event that [`is_open`](Self::is_open) cleared, uncounted
    /// into the ring; counted after all if the ring is full.
    ///
    /// The caller holds [`shared`](Self::shared) since the checks and has
    /// checked that `gate` is still configured, so that `remove` and `close`
    /// cannot be between their exclusion and their drain of the intake.
    #[inline]
    pub(crate) fn send_open(&self, gate: &Gate, event: Event) -> EnqueueOutcome {
        match self.intake.send_uncounted(event) {
            Ok(()) => {
                self.doorbell.ring_for_events();
                EnqueueOutcome::Accepted
            }
            Err(refused) => self.not_in_ring(gate, refused),
        }
    }

    #[cold]
    #[inline(never)]
    fn not_in_ring(&self, gate: &Gate, refused: TrySendError<Event>) -> EnqueueOutcome {
        match refused {
            TrySendError::Full(event) => self.admit_counted(gate, event),
            TrySendError::Disconnected(event) => {
                self.refuse(&gate.counters, Refusal::Closed);
                EnqueueOutcome::Closed(event)
            }
        }
    }

    /// Checks, bounds, counts and the send by the counted lane, for an event
    /// of `gate`'s bot; read fresh, as this path gives every refusal. The
    /// caller holds [`shared`](Self::shared), as for [`send_open`](Self::send_open).
    pub(crate) fn admit_counted(&self, gate: &Gate, event: Event) -> EnqueueOutcome {
        if self.is_closed() {
            self.refuse(&gate.counters, Refusal::Closed);
            return EnqueueOutcome::Closed(event);
        }
        let settings = gate.settings();
        let refusal = rules::refusal(settings & FREE_PLAN != 0, selects(settings, &event), settings & DISABLED != 0);
        if let Some(refusal) = refusal {
            self.refuse(&gate.counters, refusal);
            return EnqueueOutcome::refused(refusal);
        }
        // Up to a ring of uncounted events may be on their way, unless the
        // bound in question is crowded (the core then drained them all): count
        // them as held, so the bound is never passed. A webhook's own flag
        // decides, not the global one: once the global crowding ends, its
        // events may go uncounted again. This can refuse an event a little
        // early, only for a webhook within a ring of its bound, which the next
        // take-in crowds.
        let globally_crowded = self.epoch() & GLOBALLY_CROWDED != 0;
        let on_their_way = |crowded: bool| if crowded { 0 } else { RING_CAPACITY };
        let webhook_margin = on_their_way(settings & CROWDED != 0) as u64;
        // The bound counts the webhook's batch in flight too: `held` includes it.
        let capacity = gate.capacity.load(Ordering::Relaxed) as u64;
        let held_before = gate.counters.held.fetch_add(1, Ordering::AcqRel);
        if held_before + webhook_margin >= capacity {
            gate.counters.held.fetch_sub(1, Ordering::AcqRel);
            self.refuse(&gate.counters, Refusal::QueueFull);
            return EnqueueOutcome::QueueFull(event);
        }
        let pending_before = self.pending_total.0.fetch_add(1, Ordering::AcqRel);
        if pending_before + on_their_way(globally_crowded) >= self.max_pending_total {
            self.pending_total.0.fetch_sub(1, Ordering::AcqRel);
            gate.counters.held.fetch_sub(1, Ordering::AcqRel);
            self.refuse(&gate.counters, Refusal::QueueFull);
            return EnqueueOutcome::QueueFull(event);
        }
        gate.counters.accepted.fetch_add(1, Ordering::Relaxed);
        // Only the event travels: the core finds its webhook by token, off this thread.
        if let Err(returned) = self.intake.send_counted(event) {
            // The core is gone: undo, and hand the event back.
            gate.counters.accepted.fetch_sub(1, Ordering::Relaxed);
            gate.counters.held.fetch_sub(1, Ordering::AcqRel);
            self.pending_total.0.fetch_sub(1, Ordering::AcqRel);
            self.refuse(&gate.counters, Refusal::Closed);
            return EnqueueOutcome::Closed(returned);
        }
        self.doorbell.ring_for_events();
        EnqueueOutcome::Accepted
    }
}
