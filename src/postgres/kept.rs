//! Rows of `events` this process committed, kept in memory up to a byte
//! budget, so that its own calls need not read their events back: the
//! server then neither decompresses nor sends them (in `benches/postgres`,
//! sending rows back was the server's largest cost after storing them).
//!
//! Sound without any invalidation protocol: a row's `body` and `ends` never
//! change once committed (a call's progress is `delivered`, always read from
//! the database), and ids come from a sequence, so never return. A kept row
//! is therefore either the database's row or one that is gone, which the
//! read simply does not return. What a call reads is decided by the
//! database; this only saves the bytes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::dispatcher::lock;
use crate::dispatch::token_hash::TokenMap;

/// A committed row's immutable columns.
#[derive(Debug)]
pub(crate) struct KeptRow {
    /// The events joined by commas, as in `body`.
    pub(crate) body: Vec<u8>,
    /// Where each event ends, as in `ends`.
    pub(crate) ends: Vec<i32>,
}

impl KeptRow {
    /// What keeping the row costs, as the budget counts it.
    pub(crate) fn cost(&self) -> usize {
        // The map entries and `Arc` around it: a rough, fixed allowance.
        const ENTRY: usize = 96;
        self.body.len() + self.ends.len() * std::mem::size_of::<i32>() + ENTRY
    }
}

/// The rows kept, per webhook, oldest first; the oldest go first when the budget is full.
pub(crate) struct KeptRows {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_webhook: TokenMap<BTreeMap<i64, Arc<KeptRow>>>,
    /// Every row kept, in the order kept; entries of rows forgotten since
    /// stay until they reach the front or the queue is compacted.
    order: VecDeque<(Arc<str>, i64)>,
    rows: usize,
    cost: usize,
}

impl KeptRows {
    /// Keeps rows costing up to `budget` bytes in all (0: none).
    pub(crate) fn new(budget: usize) -> KeptRows {
        KeptRows { budget, inner: Mutex::new(Inner::default()) }
    }

    /// The budget, for the writer to stop copying a round's rows at (0: it copies none).
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Keeps committed rows, oldest first, making room by forgetting the
    /// oldest kept; a row costing more than the whole budget is not kept.
    pub(crate) fn keep(&self, rows: Vec<(Arc<str>, i64, KeptRow)>) {
        if rows.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        for (token, id, row) in rows {
            let cost = row.cost();
            if cost > self.budget {
                continue;
            }
            while inner.cost + cost > self.budget {
                let Some((oldest, oldest_id)) = inner.order.pop_front() else { break };
                inner.remove(&oldest, |kept| kept.remove(&oldest_id).into_iter().collect());
            }
            inner.order.push_back((Arc::clone(&token), id));
            inner.by_webhook.entry(token).or_default().insert(id, Arc::new(row));
            inner.rows += 1;
            inner.cost += cost;
        }
    }

    /// The kept rows of these webhooks, by id (shared: forgetting them
    /// meanwhile does not take them from a read under way).
    pub(crate) fn of(&self, tokens: &[&str]) -> TokenMap<Arc<KeptRow>, i64> {
        let inner = lock(&self.inner);
        let mut found = TokenMap::default();
        for token in tokens {
            if let Some(kept) = inner.by_webhook.get(*token) {
                found.extend(kept.iter().map(|(&id, row)| (id, Arc::clone(row))));
            }
        }
        found
    }

    /// Up to `most` webhooks that have rows kept, for the claim to prefer.
    pub(crate) fn webhooks(&self, most: usize) -> Vec<Arc<str>> {
        lock(&self.inner).by_webhook.keys().take(most).cloned().collect()
    }

    /// Forgets rows deleted (or seen gone) by their ids.
    pub(crate) fn forget(&self, token: &str, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        lock(&self.inner).remove(token, |kept| ids.iter().filter_map(|id| kept.remove(id)).collect());
    }

    /// Forgets a webhook's rows older than `oldest` (all of them if `None`):
    /// a read of its oldest rows found none of those.
    pub(crate) fn forget_older(&self, token: &str, oldest: Option<i64>) {
        lock(&self.inner).remove(token, |kept| match oldest {
            Some(oldest) => {
                let newer = kept.split_off(&oldest);
                std::mem::replace(kept, newer).into_values().collect()
            }
            None => std::mem::take(kept).into_values().collect(),
        });
    }

    /// How many rows, and what cost, are kept (for tests).
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        (inner.rows, inner.cost)
    }
}

impl Inner {
    /// Removes what `take` takes out of a webhook's rows, and counts it.
    fn remove(&mut self, token: &str, take: impl FnOnce(&mut BTreeMap<i64, Arc<KeptRow>>) -> Vec<Arc<KeptRow>>) {
        let Some(kept) = self.by_webhook.get_mut(token) else { return };
        let removed = take(kept);
        if kept.is_empty() {
            self.by_webhook.remove(token);
        }
        for row in &removed {
            self.rows -= 1;
            self.cost -= row.cost();
        }
        // Entries of forgotten rows wait in `order`; past twice the rows
        // kept, drop them so the queue stays bounded by what is kept.
        if self.order.len() > 2 * self.rows + 64 {
            let by_webhook = &self.by_webhook;
            self.order.retain(|(token, id)| by_webhook.get(token).is_some_and(|kept| kept.contains_key(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bytes: usize) -> KeptRow {
        KeptRow { body: vec![b'x'; bytes], ends: vec![i32::try_from(bytes).expect("small")] }
    }

    fn ids(kept: &KeptRows, token: &str) -> Vec<i64> {
        let mut ids: Vec<i64> = kept.of(&[token]).into_keys().collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn rows_are_kept_per_webhook_and_found_by_id() {
        let kept = KeptRows::new(10_000);
        kept.keep(vec![(Arc::from("a"), 1, row(10)), (Arc::from("b"), 2, row(20)), (Arc::from("a"), 3, row(30))]);
        assert_eq!(ids(&kept, "a"), [1, 3]);
        assert_eq!(kept.of(&["a", "b"]).len(), 3);
        assert_eq!(kept.of(&["b"])[&2].body.len(), 20);
        assert!(kept.of(&["c"]).is_empty());
    }

    #[test]
    fn the_webhooks_with_rows_kept_are_listed_up_to_a_bound() {
        let kept = KeptRows::new(10_000);
        kept.keep((1..=3).map(|id| (Arc::from(format!("bot-{id}")), id, row(10))).collect());
        let mut listed: Vec<String> = kept.webhooks(10).iter().map(|token| token.to_string()).collect();
        listed.sort();
        assert_eq!(listed, ["bot-1", "bot-2", "bot-3"]);
        assert_eq!(kept.webhooks(2).len(), 2);
        kept.forget_older("bot-2", None);
        assert_eq!(kept.webhooks(10).len(), 2);
    }

    #[test]
    fn the_oldest_rows_make_room_and_the_budget_holds() {
        let cost = row(100).cost();
        let kept = KeptRows::new(3 * cost);
        kept.keep((1..=5).map(|id| (Arc::from(if id % 2 == 0 { "a" } else { "b" }), id, row(100))).collect());
        assert_eq!(kept.size(), (3, 3 * cost));
        assert_eq!((ids(&kept, "a"), ids(&kept, "b")), (vec![4], vec![3, 5]));
        // Larger than the whole budget: not kept, nothing evicted for it.
        kept.keep(vec![(Arc::from("a"), 6, row(4 * cost))]);
        assert_eq!(kept.size(), (3, 3 * cost));
        let none = KeptRows::new(0);
        none.keep(vec![(Arc::from("a"), 7, row(0))]);
        assert_eq!(none.size(), (0, 0));
    }

    #[test]
    fn forgotten_rows_are_gone_and_free_their_cost() {
        let kept = KeptRows::new(100_000);
        kept.keep((1..=6).map(|id| (Arc::from("a"), id, row(10))).collect());
        kept.forget("a", &[2, 9]);
        assert_eq!(ids(&kept, "a"), [1, 3, 4, 5, 6]);
        kept.forget_older("a", Some(4));
        assert_eq!(ids(&kept, "a"), [4, 5, 6]);
        kept.forget_older("a", None);
        assert!(ids(&kept, "a").is_empty());
        assert_eq!(kept.size(), (0, 0));
        kept.forget_older("unknown", None);
    }

    #[test]
    fn the_order_queue_stays_bounded_by_what_is_kept() {
        let kept = KeptRows::new(usize::MAX);
        for id in 0..10_000 {
            kept.keep(vec![(Arc::from("a"), id, row(1))]);
            kept.forget("a", &[id]);
        }
        let inner = lock(&kept.inner);
        assert!(inner.order.len() <= 64 + 1, "{} entries queued", inner.order.len());
    }
}
