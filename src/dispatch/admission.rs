//! Admission: the part of `enqueue` that runs on the caller's thread.
//!
//! It must cost about a channel send, so it only reads a shared map under a
//! read lock, checks a few atomics and sends the event to the core's intake.
//! Encoding and queueing happen later, on the dispatcher's task.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use super::intake::{IntakeSender, Lane};
use super::metrics::RefusalMetrics;
use super::outcome::EnqueueOutcome;
use super::stats::{Counters, Refusal};
use super::token_hash::TokenMap;
use crate::config::{Plan, WebhookConfig};
use crate::event::Event;

/// The admission settings and live counters of one bot's webhook.
///
/// Lives as long as the webhook is configured; reconfiguring updates it in
/// place, so counts carry on.
///
/// `repr(C)` keeps what `enqueue` reads and writes in the first 48 bytes,
/// so that an admission touches one or two cache lines, not four.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Gate {
    pub(crate) bot_token: Arc<str>,
    selected: AtomicU16,
    free_plan: AtomicBool,
    pub(crate) disabled: AtomicBool,
    /// Set when the bot's webhook is removed; a new configuration makes a new gate.
    removed: AtomicBool,
    capacity: AtomicUsize,
    pub(crate) counters: Counters,
}

impl Gate {
    pub(crate) fn new(bot_token: Arc<str>, config: &WebhookConfig) -> Gate {
        let gate = Gate {
            bot_token,
            selected: AtomicU16::new(0),
            free_plan: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            capacity: AtomicUsize::new(0),
            counters: Counters::default(),
        };
        gate.apply(config);
        gate
    }

    /// Takes the settings of `config`; a reconfiguration also re-enables.
    pub(crate) fn apply(&self, config: &WebhookConfig) {
        let selected = config.events().iter().fold(0u16, |bits, kind| bits | 1 << kind.code());
        self.selected.store(selected, Ordering::Relaxed);
        self.free_plan.store(config.plan() == Plan::Free, Ordering::Relaxed);
        self.capacity.store(config.queue_capacity(), Ordering::Relaxed);
        self.disabled.store(false, Ordering::Relaxed);
    }

    /// Marks the gate as no longer configured; call with the gates' write lock held.
    pub(crate) fn retire(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    fn selects(&self, event: &Event) -> bool {
        event.kind().is_some_and(|kind| self.selected.load(Ordering::Relaxed) & (1 << kind.code()) != 0)
    }
}

/// Wakes the dispatcher's task when there is new work it must look at.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    pub(crate) fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the bell has rung since the last time it was answered.
    pub(crate) fn poll_rung(&self, context: &mut Context<'_>) -> Poll<()> {
        self.waker.register(context.waker());
        if self.rung.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The shared admission state: configured bots, global bound, intake.
#[derive(Debug)]
pub(crate) struct Admission {
    gates: RwLock<TokenMap<Arc<Gate>>>,
    intake: IntakeSender,
    /// Accepted events not yet delivered or dropped, over all webhooks.
    pending_total: AtomicUsize,
    max_pending_total: usize,
    closed: AtomicBool,
    pub(crate) doorbell: Doorbell,
    /// Counts of bots no longer configured, and refusals naming no bot.
    pub(crate) retired: Counters,
    refusals: RefusalMetrics,
}

impl Admission {
    pub(crate) fn new(intake: IntakeSender, max_pending_total: usize) -> Admission {
        Admission {
            gates: RwLock::new(TokenMap::default()),
            intake,
            pending_total: AtomicUsize::new(0),
            max_pending_total,
            closed: AtomicBool::new(false),
            doorbell: Doorbell::default(),
            retired: Counters::default(),
            refusals: RefusalMetrics::new(),
        }
    }

    pub(crate) fn read_gates(&self) -> RwLockReadGuard<'_, TokenMap<Arc<Gate>>> {
        self.gates.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holding this guarantees no `enqueue` is between its checks and its send.
    pub(crate) fn write_gates(&self) -> RwLockWriteGuard<'_, TokenMap<Arc<Gate>>> {
        self.gates.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn close(&self) {
        let _exclusive = self.write_gates();
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Accepted events not yet delivered or dropped, over all webhooks: pending or in flight.
    pub(crate) fn held(&self) -> usize {
        self.pending_total.load(Ordering::Relaxed)
    }

    /// Counts a refusal in `counters` and in the metrics.
    fn refuse(&self, counters: &Counters, refusal: Refusal) {
        counters.refuse(refusal);
        self.refusals.refused(refusal);
    }

    /// Events accepted and not yet delivered or dropped, over all webhooks.
    pub(crate) fn release(&self, events: usize) {
        self.pending_total.fetch_sub(events, Ordering::Relaxed);
    }

    /// The whole of `enqueue`: finds the bot's gate, then admits through it.
    pub(crate) fn enqueue(&self, event: Event) -> EnqueueOutcome {
        let gates = self.read_gates();
        let Some(gate) = event.bot_token().and_then(|token| gates.get(token)) else {
            let refusal = if self.is_closed() { Refusal::Closed } else { Refusal::NoWebhook };
            self.refuse(&self.retired, refusal);
            return match refusal {
                Refusal::Closed => EnqueueOutcome::Closed(event),
                _ => EnqueueOutcome::NoWebhook,
            };
        };
        self.admit(gate, event)
    }

    /// The gate of `bot_token`, if it has a webhook now.
    pub(crate) fn gate(&self, bot_token: &str) -> Option<Arc<Gate>> {
        self.read_gates().get(bot_token).cloned()
    }

    /// Checks, bounds, counts and the send to the core, for an event of `gate`'s bot.
    ///
    /// The caller holds the gates' read lock and has checked that `gate` is
    /// still configured, so that `remove` and `close` cannot be between
    /// their write lock and their drain of the intake.
    pub(crate) fn admit(&self, gate: &Gate, event: Event) -> EnqueueOutcome {
        if self.closed.load(Ordering::Acquire) {
            self.refuse(&gate.counters, Refusal::Closed);
            return EnqueueOutcome::Closed(event);
        }
        let refusal = if gate.free_plan.load(Ordering::Relaxed) {
            Some((Refusal::FreePlan, EnqueueOutcome::FreePlan))
        } else if !gate.selects(&event) {
            Some((Refusal::NotSelected, EnqueueOutcome::NotSelected))
        } else if gate.disabled.load(Ordering::Relaxed) {
            Some((Refusal::WebhookDisabled, EnqueueOutcome::WebhookDisabled))
        } else {
            None
        };
        if let Some((refusal, outcome)) = refusal {
            self.refuse(&gate.counters, refusal);
            return outcome;
        }
        // The bound counts the webhook's batch in flight too: `held` includes it.
        let capacity = gate.capacity.load(Ordering::Relaxed) as u64;
        let held_before = gate.counters.held.fetch_add(1, Ordering::AcqRel);
        if held_before >= capacity {
            gate.counters.held.fetch_sub(1, Ordering::AcqRel);
            self.refuse(&gate.counters, Refusal::QueueFull);
            return EnqueueOutcome::QueueFull(event);
        }
        if self.pending_total.fetch_add(1, Ordering::AcqRel) >= self.max_pending_total {
            self.pending_total.fetch_sub(1, Ordering::AcqRel);
            gate.counters.held.fetch_sub(1, Ordering::AcqRel);
            self.refuse(&gate.counters, Refusal::QueueFull);
            return EnqueueOutcome::QueueFull(event);
        }
        gate.counters.accepted.fetch_add(1, Ordering::Relaxed);
        // Only the event travels: the core finds its webhook by token, off this thread.
        let lane = match self.intake.send(event) {
            Ok(lane) => lane,
            Err(returned) => {
                // The core is gone: undo, and hand the event back.
                gate.counters.accepted.fetch_sub(1, Ordering::Relaxed);
                gate.counters.held.fetch_sub(1, Ordering::AcqRel);
                self.pending_total.fetch_sub(1, Ordering::AcqRel);
                self.refuse(&gate.counters, Refusal::Closed);
                return EnqueueOutcome::Closed(returned);
            }
        };
        if held_before == 0 || lane == Lane::Overflow {
            // The webhook was idle (nothing queued, no call), or the ring is full: the core must take in.
            self.doorbell.ring();
        }
        EnqueueOutcome::Accepted
    }
}
