//! The intake: how accepted events travel from `enqueue` callers to the core.
//!
//! Two lanes, std's channels. The ring, preallocated (std's bounded
//! channel, the same algorithm as crossbeam's: crossbeam's own `try_send`
//! copies the 208-byte event once more on its way), carries events that `enqueue` did not count:
//! a send there is the whole cost of an accepted event, and the core counts
//! the event when it takes it in. The counted lane, an unbounded channel,
//! carries events that `enqueue` counted against the bounds itself: those
//! of a webhook near its queue bound (or of a dispatcher near its global
//! one), where the answer must be exact, and those that found the ring full
//! during a burst. The ring holds at most [`RING_CAPACITY`] events, so the
//! uncounted ones never exceed that margin, and admission switches a
//! webhook to counting while its room is smaller (see
//! [`Admission`](super::admission::Admission)). The core reads the ring
//! first, so events may be taken in out of order across lanes, which the
//! platform allows ("delivery might differ from execution order").

use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};

use crate::event::Event;

/// Events the ring holds: about 210 KB of `Event`s, allocated once, as
/// many as the core takes in per poll. Also the margin of room below which a
/// webhook's events are counted by `enqueue` (see the module docs); a
/// smaller ring keeps that margin, and the ring's share of the cache, small.
pub(crate) const RING_CAPACITY: usize = 1024;

/// Which lane an event came by: whether `enqueue` counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The ring: not counted yet; the core counts it at take-in.
    Uncounted,
    /// Counted against the bounds by `enqueue`.
    Counted,
}

/// The callers' end; cheap to share between threads.
#[derive(Debug)]
pub(crate) struct IntakeSender {
    ring: SyncSender<Event>,
    counted: Sender<Event>,
}

/// The core's end.
#[derive(Debug)]
pub(crate) struct IntakeReceiver {
    ring: Receiver<Event>,
    counted: Receiver<Event>,
}

/// A new intake whose ring holds `ring_capacity` events.
pub(crate) fn intake(ring_capacity: usize) -> (IntakeSender, IntakeReceiver) {
    let (ring_sender, ring) = mpsc::sync_channel(ring_capacity);
    let (counted_sender, counted) = mpsc::channel();
    (IntakeSender { ring: ring_sender, counted: counted_sender }, IntakeReceiver { ring, counted })
}

impl IntakeSender {
    /// Sends an event `enqueue` did not count, without blocking; a full
    /// ring or a gone core hands it back. The channel's own error, unmapped:
    /// each layer a 208-byte event passes through can cost a copy of it.
    #[inline]
    #[allow(clippy::result_large_err)]
    pub(crate) fn send_uncounted(&self, event: Event) -> Result<(), TrySendError<Event>> {
        self.ring.try_send(event)
    }

    /// Sends an event `enqueue` counted; hands it back if the core is gone.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send_counted(&self, event: Event) -> Result<(), Event> {
        self.counted.send(event).map_err(|error| error.0)
    }
}

impl IntakeReceiver {
    /// The next waiting event, if any, and the lane it came by.
    pub(crate) fn try_recv(&self) -> Option<(Event, Lane)> {
        match self.ring.try_recv() {
            Ok(event) => Some((event, Lane::Uncounted)),
            Err(_) => self.counted.try_recv().ok().map(|event| (event, Lane::Counted)),
        }
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
    fn a_full_ring_refuses_and_the_counted_lane_takes_the_rest() {
        let (sender, receiver) = intake(2);
        assert!(sender.send_uncounted(event(0)).is_ok());
        assert!(sender.send_uncounted(event(1)).is_ok());
        let Err(TrySendError::Full(third)) = sender.send_uncounted(event(2)) else { panic!("the ring holds two") };
        sender.send_counted(third).expect("core alive");
        let received: Vec<(Event, Lane)> = std::iter::from_fn(|| receiver.try_recv()).collect();
        let expected = vec![(event(0), Lane::Uncounted), (event(1), Lane::Uncounted), (event(2), Lane::Counted)];
        assert_eq!(received, expected);
    }

    #[test]
    fn a_gone_core_hands_the_event_back() {
        let (sender, receiver) = intake(1);
        drop(receiver);
        assert!(
            matches!(sender.send_uncounted(event(7)), Err(TrySendError::Disconnected(returned)) if returned == event(7))
        );
        assert_eq!(sender.send_counted(event(8)), Err(event(8)));
    }
}
