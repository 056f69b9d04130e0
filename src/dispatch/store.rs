//! Where a webhook's pending events and health live.
//!
//! This is the seam for storage: today an in-memory queue per webhook; a
//! durable store shared by several bot-engine processes (PostgreSQL) would
//! implement the same operations. The core touches a webhook's events and
//! health only through [`WebhookStore`]. Each event's arrival time goes in
//! and comes out with it (`push`, `finish_batch`), so a durable store feeds
//! the delivery-lag metric, and every other metric, under the same names.

use std::collections::VecDeque;

use super::metrics::{Arrival, Arrivals};

/// One webhook's pending events (encoded, oldest first) and call health.
///
/// Events are kept as their encoded JSON: a pending event then costs its
/// bytes plus one boxed-slice pointer, and a push is a concatenation. The
/// first `in_flight` events belong to the call under way; they leave the
/// queue only when that call succeeds, so a failed call keeps its events, in
/// order, at the head.
#[derive(Debug, Default)]
pub(crate) struct WebhookStore {
    events: VecDeque<Box<[u8]>>,
    /// When each event was taken in, for the delivery-lag metric (empty without the feature).
    arrivals: Arrivals,
    /// Encoded bytes of all events in `events`.
    bytes: usize,
    in_flight: usize,
    in_flight_bytes: usize,
    /// Failed calls since the last success.
    pub(crate) failures_in_row: u32,
    /// Set after too many failures in a row; cleared by reconfiguring.
    pub(crate) disabled: bool,
    /// Why the last failed call failed.
    pub(crate) last_failure: Option<Box<str>>,
}

/// A batch taken from the head of a queue.
pub(crate) struct Batch {
    pub(crate) events: usize,
    pub(crate) body: Vec<u8>,
}

impl WebhookStore {
    pub(crate) fn push(&mut self, encoded: Box<[u8]>, arrival: Arrival) {
        self.bytes += encoded.len();
        self.events.push_back(encoded);
        self.arrivals.push(arrival);
    }

    /// Events waiting for a call (not in flight).
    pub(crate) fn waiting(&self) -> usize {
        self.events.len() - self.in_flight
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The body length of the call under way.
    pub(crate) fn in_flight_body_length(&self) -> usize {
        array_length(self.in_flight, self.in_flight_bytes)
    }

    /// Whether the waiting events fill at least one whole batch.
    pub(crate) fn has_full_batch(&self, max_events: usize, max_bytes: usize) -> bool {
        let waiting_bytes = self.bytes - self.in_flight_bytes;
        self.waiting() >= max_events || array_length(self.waiting(), waiting_bytes) > max_bytes
    }

    /// Marks the oldest waiting events as in flight, as many as fit in
    /// `max_events` and a body of `max_bytes`, and returns the push body.
    /// Takes at least one event when any waits (callers drop events that
    /// cannot fit alone before they are queued).
    pub(crate) fn start_batch(&mut self, max_events: usize, max_bytes: usize) -> Batch {
        debug_assert_eq!(self.in_flight, 0, "one call in flight per webhook");
        let mut events = 0;
        let mut body_length = 1; // '['
        let mut event_bytes = 0;
        for event in &self.events {
            let next_length = body_length + event.len() + 1; // ',' or ']'
            if events == max_events || (events > 0 && next_length > max_bytes) {
                break;
            }
            body_length = next_length;
            event_bytes += event.len();
            events += 1;
        }
        let mut body = Vec::with_capacity(body_length.max(2));
        body.push(b'[');
        for (index, event) in self.events.iter().take(events).enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(event);
        }
        body.push(b']');
        self.in_flight = events;
        self.in_flight_bytes = event_bytes;
        Batch { events, body }
    }

    /// Ends the call under way: a success removes its events (telling
    /// `arrived` when each run of them was taken in), a failure returns them
    /// to the head. Returns how many events the call carried.
    pub(crate) fn finish_batch(&mut self, delivered: bool, arrived: impl FnMut(Arrival, u32)) -> usize {
        let events = std::mem::take(&mut self.in_flight);
        if delivered {
            self.bytes -= self.in_flight_bytes;
            self.events.drain(..events);
            self.arrivals.take_front(events, arrived);
            if self.events.is_empty() {
                // Give a drained burst's memory back.
                self.events.shrink_to(16);
            }
        }
        self.in_flight_bytes = 0;
        events
    }

    /// Removes and returns every waiting event (not those in flight).
    pub(crate) fn take_waiting(&mut self) -> Vec<Box<[u8]>> {
        let taken: Vec<_> = self.events.drain(self.in_flight..).collect();
        self.arrivals.truncate(self.in_flight);
        self.bytes = self.in_flight_bytes;
        taken
    }

    /// Removes and returns every event, in flight or not; abandons the call under way.
    pub(crate) fn take_all(&mut self) -> Vec<Box<[u8]>> {
        self.in_flight = 0;
        self.in_flight_bytes = 0;
        self.bytes = 0;
        self.arrivals.truncate(0);
        self.events.drain(..).collect()
    }
}

/// The length of a JSON array holding `events` elements of `bytes` in total.
pub(crate) fn array_length(events: usize, bytes: usize) -> usize {
    bytes + events.max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(events: &[&str]) -> WebhookStore {
        let mut store = WebhookStore::default();
        for event in events {
            store.push(event.as_bytes().into(), Arrival::default());
        }
        store
    }

    #[test]
    fn batches_respect_count_and_bytes_and_keep_order_on_failure() {
        let mut store = store_with(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        let batch = store.start_batch(2, 1024);
        assert_eq!(batch.body, b"[{\"a\":1},{\"b\":2}]");
        assert_eq!(store.waiting(), 1);
        assert_eq!(store.finish_batch(false, |_, _| {}), 2);
        assert_eq!(store.waiting(), 3);
        // 7-byte events: "[" + 7 + "," + 7 + "]" = 17 bytes fits two, not three.
        let batch = store.start_batch(10, 17);
        assert_eq!(batch.events, 2);
        assert_eq!(batch.body.len(), 17);
        assert_eq!(store.finish_batch(true, |_, _| {}), 2);
        assert_eq!(store.start_batch(10, 17).body, b"[{\"c\":3}]");
        store.finish_batch(true, |_, _| {});
        assert_eq!(store.waiting(), 0);
        assert_eq!(store.bytes, 0);
    }

    #[test]
    fn full_batch_detection() {
        let store = store_with(&["{\"a\":1}", "{\"b\":2}"]);
        assert!(store.has_full_batch(2, 1024));
        assert!(!store.has_full_batch(3, 1024));
        assert!(store.has_full_batch(3, 16));
    }

    #[test]
    fn take_waiting_leaves_the_call_under_way() {
        let mut store = store_with(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        store.start_batch(1, 1024);
        assert_eq!(store.take_waiting().len(), 2);
        assert_eq!(store.finish_batch(true, |_, _| {}), 1);
        assert_eq!(store.bytes, 0);
        assert!(store.take_all().is_empty());
    }
}
