//! The intake: how accepted events travel from `enqueue` callers to the core.
//!
//! A preallocated ring (std's bounded channel, the same algorithm as
//! crossbeam's) carries events while the core keeps up: a send there costs
//! about what a bare channel send costs. When a burst fills the ring, events
//! go to an unbounded overflow channel instead, which allocates as it grows,
//! so `enqueue` never blocks and never refuses an event the bounds allow.
//! Memory stays bounded by the dispatcher's pending-event bounds, which
//! admission checks before sending. The core reads the ring first, so during
//! an overflow events may be taken in out of order, which the platform
//! allows ("delivery might differ from execution order").

use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};

use crate::event::Event;

/// Events the ring holds before the overflow takes over: about 850 KB of
/// `Event`s, allocated once, more than the core takes in per poll.
pub(crate) const RING_CAPACITY: usize = 4096;

/// Where a sent event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Ring,
    Overflow,
}

/// The callers' end; cheap to share between threads.
#[derive(Debug)]
pub(crate) struct IntakeSender {
    ring: SyncSender<Event>,
    overflow: Sender<Event>,
}

/// The core's end.
#[derive(Debug)]
pub(crate) struct IntakeReceiver {
    ring: Receiver<Event>,
    overflow: Receiver<Event>,
}

/// A new intake whose ring holds `ring_capacity` events.
pub(crate) fn intake(ring_capacity: usize) -> (IntakeSender, IntakeReceiver) {
    let (ring_sender, ring) = mpsc::sync_channel(ring_capacity);
    let (overflow_sender, overflow) = mpsc::channel();
    (IntakeSender { ring: ring_sender, overflow: overflow_sender }, IntakeReceiver { ring, overflow })
}

impl IntakeSender {
    /// Sends `event` without blocking; hands it back if the core is gone.
    // The event travels by value, as in std's `SendError`; boxing it would allocate on the hot path.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, event: Event) -> Result<Lane, Event> {
        match self.ring.try_send(event) {
            Ok(()) => Ok(Lane::Ring),
            Err(TrySendError::Full(event)) => {
                self.overflow.send(event).map(|()| Lane::Overflow).map_err(|error| error.0)
            }
            Err(TrySendError::Disconnected(event)) => Err(event),
        }
    }
}

impl IntakeReceiver {
    /// The next waiting event, if any.
    pub(crate) fn try_recv(&self) -> Option<Event> {
        self.ring.try_recv().or_else(|_| self.overflow.try_recv()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::event::{ChatContext, EventFactory};
    use crate::ManualClock;

    fn event(number: usize) -> Event {
        let factory = EventFactory::new("bot", "Account").with_clock(Arc::new(ManualClock::new()));
        Event::NewUser(factory.conversation(&ChatContext::new(number.to_string(), "Web")))
    }

    #[test]
    fn a_full_ring_overflows_and_nothing_is_lost() {
        let (sender, receiver) = intake(2);
        let lanes: Vec<Lane> = (0..5).map(|number| sender.send(event(number)).expect("core alive")).collect();
        assert_eq!(lanes, [Lane::Ring, Lane::Ring, Lane::Overflow, Lane::Overflow, Lane::Overflow]);
        let received: Vec<Event> = std::iter::from_fn(|| receiver.try_recv()).collect();
        assert_eq!(received, (0..5).map(event).collect::<Vec<_>>());
    }

    #[test]
    fn a_gone_core_hands_the_event_back() {
        let (sender, receiver) = intake(1);
        drop(receiver);
        assert_eq!(sender.send(event(7)), Err(event(7)));
    }
}
