//! A row of `events`: a run of one bot's events committed together, held
//! as a push's body holds them (the encoded events joined by commas), with
//! where each event ends and how many of the oldest a call has delivered.
//!
//! One value per row, not an array of one value per event: the server
//! stores, compresses and sends it whole, and a call copies a row's events
//! into its body in one piece.

use std::error::Error;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Row;

use super::connection::doing;
use super::kept::KeptRow;
use crate::dispatch::token_hash::TokenMap;

/// The columns [`StoredRun::from_row`] reads, in its order.
pub(crate) const COLUMNS: &str = "id, body, ends, delivered";

/// A run being gathered for its row: one bot's events, oldest first, as
/// slices of the round's buffer (joined only as the row is sent).
#[derive(Debug, Default)]
pub(crate) struct NewRun<'batch> {
    events: Vec<&'batch [u8]>,
    /// Where each event ends in the joined body.
    pub(crate) ends: Vec<i32>,
    /// The events' bytes, the commas left out.
    pub(crate) bytes: usize,
}

impl<'batch> NewRun<'batch> {
    /// Appends one encoded event.
    pub(crate) fn push(&mut self, event: &'batch [u8]) {
        let start = self.ends.last().map_or(0, |&end| usize::try_from(end).unwrap_or(0) + 1);
        // Rows hold at most `RUN_BYTES` (an event larger goes alone and is
        // bounded by its webhook's batch bytes), far below `i32::MAX`.
        self.ends.push(i32::try_from(start + event.len()).unwrap_or(i32::MAX));
        self.bytes += event.len();
        self.events.push(event);
    }

    /// The events' bytes with the one about to join: what the row's limit counts.
    pub(crate) fn bytes_with(&self, event: &[u8]) -> usize {
        self.bytes + event.len()
    }

    /// The `body` column: the events joined by commas, written straight
    /// into the statement's buffer (no copy of its own).
    pub(crate) fn body(&self) -> JoinedEvents<'_> {
        JoinedEvents(&self.events)
    }

    /// The `body` column in a buffer of its own, for a row kept after its commit.
    pub(crate) fn joined(&self) -> Vec<u8> {
        let mut joined = Vec::with_capacity(self.bytes + self.events.len().saturating_sub(1));
        self.body().join_into(&mut joined);
        joined
    }
}

/// Events joined by commas, as a `bytea`.
#[derive(Debug)]
pub(crate) struct JoinedEvents<'a>(&'a [&'a [u8]]);

impl JoinedEvents<'_> {
    fn join_into(&self, out: &mut impl BufMut) {
        for (index, event) in self.0.iter().enumerate() {
            if index > 0 {
                out.put_u8(b',');
            }
            out.put_slice(event);
        }
    }
}

impl ToSql for JoinedEvents<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.reserve(self.0.iter().map(|event| event.len() + 1).sum());
        self.join_into(out);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::BYTEA
    }

    to_sql_checked!();
}

/// A row of `events` as read back: its id, its events joined, where each
/// ends, and how many of the oldest were delivered already (a call ended
/// inside the row: they stay until the row goes).
#[derive(Debug)]
pub(crate) struct StoredRun<'row> {
    pub(crate) id: i64,
    body: &'row [u8],
    ends: Vec<usize>,
    delivered: usize,
}

impl<'row> StoredRun<'row> {
    /// Checks the row's columns agree, so that slicing it later cannot fail.
    pub(crate) fn new(id: i64, body: &'row [u8], ends: &[i32], delivered: i32) -> Result<StoredRun<'row>, String> {
        let unreadable = |what: &str| format!("row {id} of events is unreadable: {what}");
        let delivered = usize::try_from(delivered).map_err(|_| unreadable("`delivered` is negative"))?;
        let mut checked = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in ends {
            let end = usize::try_from(end).map_err(|_| unreadable("an end is negative"))?;
            if end < start || end > body.len() || (end < body.len() && body[end] != b',') {
                return Err(unreadable("`ends` do not match `body`"));
            }
            checked.push(end);
            start = end + 1;
        }
        if checked.last().copied().unwrap_or(0) != body.len() {
            return Err(unreadable("`ends` do not cover `body`"));
        }
        if delivered >= checked.len() {
            return Err(unreadable("`delivered` leaves no event waiting"));
        }
        Ok(StoredRun { id, body, ends: checked, delivered })
    }

    /// A row read as [`COLUMNS`], from its column `first` on, whose `body`
    /// and `ends` are NULL when read for a row of `kept` (taken from there).
    pub(crate) fn from_row_or_kept(
        row: &'row Row,
        first: usize,
        kept: Option<&'row TokenMap<Arc<KeptRow>, i64>>,
    ) -> Result<StoredRun<'row>, String> {
        let read = doing("reading events");
        let id: i64 = row.try_get(first).map_err(read)?;
        let delivered: i32 = row.try_get(first + 3).map_err(read)?;
        match row.try_get::<_, Option<&[u8]>>(first + 1).map_err(read)? {
            Some(body) => {
                let ends: Vec<i32> = row.try_get(first + 2).map_err(read)?;
                StoredRun::new(id, body, &ends, delivered)
            }
            None => {
                let kept = kept
                    .and_then(|kept| kept.get(&id))
                    .ok_or_else(|| format!("row {id} of events was read without its events"))?;
                StoredRun::new(id, &kept.body, &kept.ends, delivered)
            }
        }
    }

    /// A row read as [`COLUMNS`], from its column `first` on.
    pub(crate) fn from_row(row: &'row Row, first: usize) -> Result<StoredRun<'row>, String> {
        StoredRun::from_row_or_kept(row, first, None)
    }

    /// How many events wait in the row.
    pub(crate) fn waiting(&self) -> usize {
        self.ends.len() - self.delivered
    }

    fn start(&self, index: usize) -> usize {
        if index == 0 {
            0
        } else {
            self.ends[index - 1] + 1
        }
    }

    /// The waiting events' bodies, oldest first.
    pub(crate) fn bodies(&self) -> impl Iterator<Item = &'row [u8]> + '_ {
        let body = self.body;
        (self.delivered..self.ends.len()).map(move |index| &body[self.start(index)..self.ends[index]])
    }

    /// The oldest `count` waiting events joined by commas (all of them if fewer wait).
    pub(crate) fn joined(&self, count: usize) -> &'row [u8] {
        if count == 0 {
            return &[];
        }
        let last = self.delivered + count.min(self.waiting()) - 1;
        &self.body[self.start(self.delivered)..self.ends[last]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `events` as its row holds it: `body` and `ends`.
    fn run(events: &[&'static str]) -> (Vec<u8>, Vec<i32>) {
        let mut run = NewRun::default();
        for event in events {
            run.push(event.as_bytes());
        }
        let mut body = BytesMut::new();
        run.body().to_sql_checked(&Type::BYTEA, &mut body).expect("a bytea");
        (body.to_vec(), run.ends)
    }

    #[test]
    fn a_run_counts_its_events_bytes_without_the_commas() {
        let mut written = NewRun::default();
        written.push(b"{}");
        written.push(b"[1]");
        assert_eq!((written.ends.as_slice(), written.bytes, written.bytes_with(b"4444")), (&[2, 6][..], 5, 9));
    }

    #[test]
    fn a_run_reads_back_as_it_was_written() {
        let (body, ends) = run(&[r#"{"a":1}"#, r#"{"b":22}"#, r#"{"c":333}"#]);
        assert_eq!(body, br#"{"a":1},{"b":22},{"c":333}"#);
        let stored = StoredRun::new(7, &body, &ends, 0).expect("consistent");
        assert_eq!(stored.waiting(), 3);
        let bodies: Vec<&[u8]> = stored.bodies().collect();
        assert_eq!(bodies, [&br#"{"a":1}"#[..], br#"{"b":22}"#, br#"{"c":333}"#]);
        assert_eq!(stored.joined(2), br#"{"a":1},{"b":22}"#);
        assert_eq!(stored.joined(9), &body[..]);
        assert_eq!(stored.joined(0), b"");
    }

    #[test]
    fn delivered_events_are_skipped() {
        let (body, ends) = run(&["1", "22", "333"]);
        let stored = StoredRun::new(1, &body, &ends, 2).expect("consistent");
        assert_eq!(stored.waiting(), 1);
        assert_eq!(stored.bodies().collect::<Vec<_>>(), [b"333"]);
        assert_eq!(stored.joined(5), b"333");
    }

    #[test]
    fn rows_whose_columns_disagree_are_refused_not_sliced() {
        let (body, _) = run(&["1", "22"]);
        for (ends, delivered) in [
            (vec![1, 9], 0),  // past the body
            (vec![2, 4], 0),  // not at a comma
            (vec![1], 0),     // the body not covered
            (vec![-1, 4], 0), // negative
            (vec![1, 4], 2),  // nothing left
            (vec![1, 4], -1), // negative
            (vec![], 0),      // no event
        ] {
            let error = StoredRun::new(3, &body, &ends, delivered).expect_err("inconsistent");
            assert!(error.starts_with("row 3 of events is unreadable"), "{error}");
        }
    }
}
