//! Where a webhook's pending events and health live: the seam between the
//! delivery rules and the stores that keep what they change.
//!
//! [`StoredWebhook`] is what every store shows the rules of one webhook
//! while they settle its call or schedule it ([`rules::settle_call`],
//! [`rules::schedule`]): its queue's waiting events, the call under way,
//! its failures in a row, disabling, its due time. Two stores implement it:
//! the in-memory core (over [`WebhookStore`], this file's queue of encoded
//! events, and the core's schedule), and the PostgreSQL store (over a
//! webhook's row as its settlement transaction locked it, written back in
//! a few statements for all the calls it settles). The rules are written
//! once, in [`rules`], against the trait; neither store repeats them.
//!
//! Each event's arrival time goes into the in-memory queue and comes out
//! with it (`push`, `finish_batch`), for the delivery-lag metric.

use std::collections::VecDeque;
use std::time::Duration;

use super::metrics::{Arrival, Arrivals};
use super::outcome::CallOutcome;
use super::rules::{self, array_length};
use super::stats::DropReason;

/// A webhook's due time as a store keeps it, and what the rules read to
/// set it ([`rules::schedule_first_push`]). Times are delays from now, so
/// that any clock fits (the core's `Instant`s, a database's timestamps).
pub(crate) trait Schedulable {
    /// The webhook's push interval.
    fn push_interval(&self) -> Duration;
    /// How long ago its last call started, if it made one.
    fn since_last_push(&self) -> Option<Duration>;
    /// How long until the next time on its grid of push times.
    fn until_grid(&self) -> Duration;
    /// Sets when it pushes next, as a delay from now (`None`: nothing to push).
    fn schedule(&mut self, after: Option<Duration>);
}

/// One webhook as a store keeps it, shown to the rules that settle its
/// calls and schedule it ([`rules::settle_call`], [`rules::schedule`]).
/// The rules read and change a webhook's shared state only through this.
pub(crate) trait StoredWebhook: Schedulable {
    /// Failed calls in a row before the call being settled.
    fn failures_in_row(&self) -> u32;
    /// Ends the call under way: after a success its events leave the
    /// queue; after a failure the call stays at its head, to be sent again
    /// as it was (the same events, the same call id).
    fn end_call(&mut self, delivered: bool);
    /// Records the webhook's health: its failures in a row and, after a
    /// failure, the outcome that failed (`None` after a success).
    fn record_health(&mut self, failures_in_row: u32, failure: Option<&CallOutcome>);
    /// Disables the webhook: every event it holds is dropped
    /// ([`DropReason::Disabled`]), nothing is scheduled, and its alert is raised.
    fn disable(&mut self);
    /// Whether the bot is on the free plan, which has no webhook calls.
    fn free_plan(&self) -> bool;
    /// Drops the events waiting for a call, for `reason`.
    fn drop_waiting(&mut self, reason: DropReason);
    /// Events waiting for a call (a failed call's included), and their encoded bytes.
    fn waiting(&self) -> (usize, usize);
    /// The most events and body bytes of one call ([`rules::batch_limits`]).
    fn batch_limits(&self) -> (usize, usize);
}

/// The usual size of a chunk of encoded events: one allocation holds many
/// events (not one per event), and a webhook's partly filled last chunk
/// costs little.
const CHUNK_BYTES: usize = 16 * 1024;

/// Bytes before each stored event: its length.
const LENGTH_BYTES: usize = 4;

/// One webhook's pending events (encoded, oldest first) and call health.
///
/// Events are kept as their encoded JSON, each after its length, in chunks
/// that hold whole events: a pending event then costs its bytes plus four,
/// with one allocation per chunk rather than per event, and a push is a
/// concatenation. The first events belong to the webhook's [`Call`], when it
/// has one: they leave the queue only when that call succeeds. A failed call
/// stays, with its events at the head, and its next attempt sends exactly
/// them again (the same body, rebuilt from the same bytes) under the same
/// serial, so a receiver can tell it already processed that call; events
/// that arrived meanwhile wait for later calls.
#[derive(Debug, Default)]
pub(crate) struct WebhookStore {
    chunks: VecDeque<Vec<u8>>,
    /// Where the oldest pending event's length starts in the first chunk.
    head: usize,
    /// Pending events, in flight or not.
    events: usize,
    /// Encoded bytes of all pending events (lengths not included).
    bytes: usize,
    /// When each event was taken in, for the delivery-lag metric (empty without the feature).
    arrivals: Arrivals,
    call: Option<Call>,
    /// Failed calls since the last success.
    pub(crate) failures_in_row: u32,
    /// Set after too many failures in a row; cleared by reconfiguring.
    pub(crate) disabled: bool,
    /// Why the last failed call failed.
    pub(crate) last_failure: Option<Box<str>>,
}

/// A call formed from the head of the queue: under way, or failed and
/// waiting to be sent again as it is.
#[derive(Debug, Clone, Copy)]
struct Call {
    events: usize,
    /// Encoded bytes of its events.
    bytes: usize,
    /// Identifies the call (not the attempt) among every call of the core.
    serial: u64,
    in_flight: bool,
}

/// A batch taken from the head of a queue.
pub(crate) struct Batch {
    pub(crate) events: usize,
    pub(crate) body: Vec<u8>,
    /// The call's serial: the same on every attempt of the call.
    pub(crate) serial: u64,
}

/// The stored events of a chunk from `offset` on.
fn chunk_events(chunk: &[u8], mut offset: usize) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let length = chunk.get(offset..offset + LENGTH_BYTES)?;
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let start = offset + LENGTH_BYTES;
        offset = start + length;
        chunk.get(start..offset)
    })
}

impl WebhookStore {
    /// The longest event a store keeps (its length must fit the length field).
    pub(crate) const MAX_EVENT_BYTES: usize = u32::MAX as usize;

    /// Adds an event of at most [`MAX_EVENT_BYTES`](Self::MAX_EVENT_BYTES).
    pub(crate) fn push(&mut self, encoded: &[u8], arrival: Arrival) {
        let needed = LENGTH_BYTES + encoded.len();
        let has_room = self.chunks.back().is_some_and(|chunk| chunk.capacity() - chunk.len() >= needed);
        if !has_room {
            self.chunks.push_back(Vec::with_capacity(needed.max(CHUNK_BYTES)));
        }
        let length = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.extend_from_slice(&length.to_le_bytes());
            chunk.extend_from_slice(encoded);
        }
        self.events += 1;
        self.bytes += encoded.len();
        self.arrivals.push(arrival);
    }

    /// Every pending event, oldest first.
    fn stored(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(index, chunk)| chunk_events(chunk, if index == 0 { self.head } else { 0 }))
    }

    /// Events waiting for a call (not in flight).
    pub(crate) fn waiting(&self) -> usize {
        self.events - self.in_flight()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight_call().map_or(0, |call| call.events)
    }

    fn in_flight_call(&self) -> Option<&Call> {
        self.call.as_ref().filter(|call| call.in_flight)
    }

    fn in_flight_bytes(&self) -> usize {
        self.in_flight_call().map_or(0, |call| call.bytes)
    }

    /// The body length of the call under way.
    pub(crate) fn in_flight_body_length(&self) -> usize {
        array_length(self.in_flight(), self.in_flight_bytes())
    }

    /// Encoded bytes of the events waiting for a call (not in flight).
    pub(crate) fn waiting_bytes(&self) -> usize {
        self.bytes - self.in_flight_bytes()
    }

    /// Starts an attempt and returns its batch: the failed call again, when
    /// there is one; otherwise a new call (its serial from `new_serial`) of
    /// the oldest waiting events, as many as fit in `max_events` and a body
    /// of `max_bytes`. Takes at least one event when any waits (callers drop
    /// events that cannot fit alone before they are queued).
    pub(crate) fn start_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
        new_serial: impl FnOnce() -> u64,
    ) -> Batch {
        debug_assert!(self.in_flight_call().is_none(), "one call in flight per webhook");
        let failed = self.call.map(|call| call.events);
        let (events, bytes) = rules::call_events(failed, self.stored().map(<[u8]>::len), max_events, max_bytes);
        let serial = self.call.map_or_else(new_serial, |call| call.serial);
        let call = Call { events, bytes, serial, in_flight: false };
        let mut body = Vec::with_capacity(array_length(call.events, call.bytes));
        body.push(b'[');
        for (index, event) in self.stored().take(call.events).enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(event);
        }
        body.push(b']');
        self.call = Some(Call { in_flight: true, ..call });
        Batch { events: call.events, body, serial: call.serial }
    }

    /// Ends the attempt under way: a success removes its call's events
    /// (telling `arrived` when each run of them was taken in); after a
    /// failure the call stays, to be sent again as it is. Returns how many
    /// events the attempt carried.
    pub(crate) fn finish_batch(&mut self, delivered: bool, arrived: impl FnMut(Arrival, u32)) -> usize {
        let Some(call) = self.call.filter(|call| call.in_flight) else { return 0 };
        if delivered {
            self.call = None;
            self.remove_oldest(call.events, call.bytes);
            self.arrivals.take_front(call.events, arrived);
        } else {
            self.call = Some(Call { in_flight: false, ..call });
        }
        call.events
    }

    /// Removes the `events` oldest events, of `bytes` encoded bytes: a walk
    /// over chunks, not events (each event's length is stored before it).
    fn remove_oldest(&mut self, events: usize, bytes: usize) {
        let mut stored = bytes + events * LENGTH_BYTES;
        while stored > 0 {
            let Some(chunk) = self.chunks.front() else { break };
            let in_chunk = chunk.len() - self.head;
            if stored < in_chunk {
                self.head += stored;
                break;
            }
            stored -= in_chunk;
            self.chunks.pop_front();
            self.head = 0;
        }
        self.events -= events;
        self.bytes -= bytes;
        if self.events == 0 {
            // Give a drained burst's memory back.
            self.chunks.clear();
            self.chunks.shrink_to(4);
            self.head = 0;
        }
    }

    /// Forgets a failed call waiting for its next attempt: its events stay
    /// at the head and go out in a new call, formed with the settings then
    /// in force. A call under way is kept.
    pub(crate) fn release_failed_call(&mut self) {
        self.call = self.call.filter(|call| call.in_flight);
    }

    /// Removes and returns every waiting event (not those in flight).
    pub(crate) fn take_waiting(&mut self) -> Vec<Box<[u8]>> {
        self.release_failed_call();
        let kept = self.in_flight();
        let taken = self.stored().skip(kept).map(Box::from).collect();
        self.keep_oldest(kept);
        taken
    }

    /// Drops every event but the `kept` oldest.
    fn keep_oldest(&mut self, kept: usize) {
        let mut left = kept;
        let mut kept_bytes = 0;
        let mut chunks = 0;
        let mut end = 0;
        for (index, chunk) in self.chunks.iter().enumerate() {
            if left == 0 {
                break;
            }
            end = if index == 0 { self.head } else { 0 };
            for event in chunk_events(chunk, end).take(left) {
                end += LENGTH_BYTES + event.len();
                kept_bytes += event.len();
                left -= 1;
            }
            chunks = index + 1;
        }
        self.chunks.truncate(chunks);
        if let Some(last) = self.chunks.back_mut() {
            last.truncate(end);
        } else {
            self.head = 0;
        }
        self.events = kept;
        self.bytes = kept_bytes;
        self.arrivals.truncate(kept);
    }

    /// Removes and returns every event, in flight or not; abandons the call under way.
    pub(crate) fn take_all(&mut self) -> Vec<Box<[u8]>> {
        let taken = self.stored().map(Box::from).collect();
        self.call = None;
        self.keep_oldest(0);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(events: &[&str]) -> WebhookStore {
        let mut store = WebhookStore::default();
        for event in events {
            store.push(event.as_bytes(), Arrival::default());
        }
        store
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let mut store = store_with(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        let batch = store.start_batch(2, 1024, || 1);
        assert_eq!(batch.body, b"[{\"a\":1},{\"b\":2}]");
        assert_eq!(store.waiting(), 1);
        assert_eq!(store.finish_batch(true, |_, _| {}), 2);
        store.push(b"{\"d\":4}", Arrival::default());
        // 7-byte events: "[" + 7 + "," + 7 + "]" = 17 bytes fits two, not three.
        let batch = store.start_batch(10, 17, || 2);
        assert_eq!((batch.events, batch.body.len(), batch.serial), (2, 17, 2));
        assert_eq!(store.finish_batch(true, |_, _| {}), 2);
        assert_eq!(store.waiting(), 0);
        assert_eq!(store.bytes, 0);
    }

    #[test]
    fn a_failed_call_is_sent_again_as_it_was() {
        let mut store = store_with(&["{\"a\":1}", "{\"b\":2}"]);
        let first = store.start_batch(2, 1024, || 7);
        assert_eq!(store.finish_batch(false, |_, _| {}), 2);
        assert_eq!((store.waiting(), store.in_flight()), (2, 0));
        store.push(b"{\"c\":3}", Arrival::default());
        // Other limits, a new event: the same events, body and serial.
        let retry = store.start_batch(10, 1024, || unreachable!("no new call"));
        assert_eq!((retry.events, retry.serial, &retry.body), (2, 7, &first.body));
        assert_eq!(store.in_flight_body_length(), first.body.len());
        assert_eq!(store.finish_batch(true, |_, _| {}), 2);
        let next = store.start_batch(10, 1024, || 8);
        assert_eq!((next.body.as_slice(), next.serial), (b"[{\"c\":3}]".as_slice(), 8));
    }

    #[test]
    fn a_released_failed_call_is_formed_again() {
        let mut store = store_with(&["{\"a\":1}", "{\"b\":2}"]);
        store.start_batch(1, 1024, || 1);
        store.release_failed_call(); // under way: kept
        store.finish_batch(false, |_, _| {});
        store.release_failed_call();
        let batch = store.start_batch(2, 1024, || 2);
        assert_eq!((batch.events, batch.serial), (2, 2));
    }

    /// Events over many chunks, one larger than a chunk: batches, a call
    /// kept across `take_waiting`, and removal all see the same events.
    #[test]
    fn events_across_chunks_come_out_whole_and_in_order() {
        let events: Vec<String> = (0..2_000)
            .map(|number| {
                let filler = if number == 700 { "x".repeat(3 * CHUNK_BYTES) } else { "y".repeat(number % 50) };
                format!("{{\"n\":{number},\"f\":\"{filler}\"}}")
            })
            .collect();
        let mut store = WebhookStore::default();
        for event in &events {
            store.push(event.as_bytes(), Arrival::default());
        }
        assert!(store.chunks.len() > 3, "{} chunks", store.chunks.len());
        assert_eq!(store.bytes, events.iter().map(String::len).sum::<usize>());
        let stored: Vec<&[u8]> = store.stored().collect();
        assert_eq!(stored, events.iter().map(String::as_bytes).collect::<Vec<_>>());

        let mut delivered = Vec::new();
        let batch = store.start_batch(650, usize::MAX, || 1);
        assert_eq!(batch.events, 650);
        delivered.push(batch.body);
        assert_eq!(store.finish_batch(true, |_, _| {}), 650);
        // A call under way across the large event; the rest is taken back.
        let batch = store.start_batch(100, usize::MAX, || 2);
        let waiting = store.take_waiting();
        assert_eq!(waiting.len(), 2_000 - 750);
        assert_eq!(&*waiting[0], events[750].as_bytes());
        assert_eq!((store.events, store.in_flight()), (100, 100));
        assert_eq!(store.bytes, events[650..750].iter().map(String::len).sum::<usize>());
        assert_eq!(store.finish_batch(true, |_, _| {}), 100);
        delivered.push(batch.body);
        assert_eq!((store.events, store.bytes, store.chunks.len()), (0, 0, 0), "a drained store gives its chunks back");

        let expected = |range: std::ops::Range<usize>| format!("[{}]", events[range].join(",")).into_bytes();
        assert_eq!(delivered, vec![expected(0..650), expected(650..750)]);
    }

    #[test]
    fn waiting_counts_leave_out_the_call_under_way() {
        let mut store = store_with(&["{\"a\":1}", "{\"bb\":2}", "{\"c\":3}"]);
        assert_eq!((store.waiting(), store.waiting_bytes()), (3, 22));
        store.start_batch(1, 1024, || 1);
        assert_eq!((store.waiting(), store.waiting_bytes()), (2, 15));
        store.finish_batch(false, |_, _| {});
        assert_eq!((store.waiting(), store.waiting_bytes()), (3, 22), "a failed call waits again");
    }

    #[test]
    fn take_waiting_leaves_the_call_under_way() {
        let mut store = store_with(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        store.start_batch(1, 1024, || 1);
        assert_eq!(store.take_waiting().len(), 2);
        assert_eq!(store.finish_batch(true, |_, _| {}), 1);
        assert_eq!(store.bytes, 0);
        assert!(store.take_all().is_empty());
    }
}
