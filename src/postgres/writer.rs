//! The writer task: what `enqueue`, `configure` and `remove` hand over,
//! committed in order, many at once (group commit).
//!
//! A round gathers what arrives within the commit window (or up to its
//! event limit), encodes each event once, and commits everything in one
//! transaction: settings rows, removals and events (the delivery task then
//! schedules the webhooks given events). What arrives while a round commits
//! is gathered and encoded for the next, so that the database and the
//! encoding work at the same time. A failed round is tried again, whole,
//! until the database takes it; meanwhile `enqueue` keeps accepting until
//! the buffer bound, then refuses with a named reason.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Transaction};

use super::connection::{self, doing, Session, Statements, FIRST_RETRY_DELAY};
use super::dispatcher::{lock, LocalWebhook, Shared};
use super::kept::KeptRow;
use super::runs::{self, NewRun, StoredRun};
use super::webhooks::{lock_webhooks, save_webhook_at};
use crate::config::{Plan, WebhookConfig};
use crate::dispatch::rules;
use crate::dispatch::token_hash::TokenMap;
use crate::dispatch::{DropReason, DroppedEvents};
use crate::event::Event;
use crate::wire;

/// The most event bytes a row of `events` holds (an event larger goes alone):
/// enough for many events per row, little to rewrite when a call ends inside one.
const RUN_BYTES: usize = 64 * 1024;

/// What the writer is handed, in the order it was.
pub(crate) enum Entry {
    /// An accepted event, with the webhook it was accepted for.
    Event(Arc<LocalWebhook>, Event),
    /// A webhook's settings to save (which re-enables it).
    Configure(Box<WebhookConfig>),
    /// A webhook to delete, with its events.
    Remove(Arc<str>),
    /// Answered once everything handed over before it is committed.
    Sync(oneshot::Sender<()>),
}

impl Entry {
    pub(crate) fn into_event(self) -> Option<Event> {
        match self {
            Entry::Event(_, event) => Some(event),
            _ => None,
        }
    }
}

/// A round, prepared once and committed (or tried again) as a whole.
#[derive(Default)]
struct Round {
    steps: Vec<Step>,
    syncs: Vec<oneshot::Sender<()>>,
    /// Accepted events of the round, each webhook's and in all, committed or dropped with it.
    accepted: TokenMap<(Arc<LocalWebhook>, u64)>,
    accepted_total: usize,
}

enum Step {
    Configure(Box<WebhookConfig>),
    Remove(Arc<str>),
    Events(EventBatch),
}

/// Events in order, each its webhook's token and its encoded body: the
/// bodies one after another in one buffer (one allocation for the batch,
/// not one per event).
#[derive(Default)]
struct EventBatch {
    tokens: Vec<Arc<str>>,
    encoded: Vec<u8>,
    /// Where each event's body ends in `encoded`.
    ends: Vec<usize>,
}

impl EventBatch {
    fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.encoded[start..end])
    }

    fn events(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.tokens.iter().map(|token| &**token).zip(self.bodies())
    }
}

/// What a committed round did, to count once it is committed.
#[derive(Default)]
struct Committed {
    /// Events inserted per webhook.
    inserted: TokenMap<u64, String>,
    newest_id: i64,
    /// Dropped events, per bot and reason, with their stored bodies.
    dropped: Vec<(String, DropReason, Vec<Vec<u8>>)>,
    /// Generations of saved webhooks.
    generations: Vec<(Arc<str>, u64)>,
    /// Webhooks given events or settings: the delivery task schedules them.
    fresh: Vec<String>,
    /// Copies of the rows inserted, for [`Shared::kept`] (up to its budget).
    kept: Vec<(Arc<str>, i64, KeptRow)>,
}

/// Runs until told to stop ([`Shared::stop_writer`]); then hands what it
/// could not commit to [`Shared::uncommitted`].
pub(crate) async fn run(shared: Arc<Shared>, mut receiver: mpsc::UnboundedReceiver<Entry>) {
    let mut session: Option<Session> = None;
    let mut next: Option<Gathering> = None;
    loop {
        let Some(round) = gather(&shared, &mut receiver, next.take()).await else {
            hand_back(&shared, Round::default(), &mut receiver);
            return;
        };
        // What arrives while a round commits is gathered, and encoded, for
        // the next: the database and the encoding work at the same time.
        let committed = {
            let mut commit = std::pin::pin!(commit_until_stopped(&shared, &mut session, &round));
            let mut open = true;
            loop {
                let gathering = open && next.as_ref().is_none_or(|next| !next.round.is_full(&shared));
                tokio::select! {
                    biased;
                    committed = &mut commit => break committed,
                    entry = receiver.recv(), if gathering => match entry {
                        Some(entry) => add(&shared, &mut next.get_or_insert_with(|| Gathering::new(&shared)).round, entry),
                        None => open = false,
                    },
                }
            }
        };
        let Some(committed) = committed else {
            let mut round = round;
            if let Some(next) = next {
                round.append(next.round);
            }
            hand_back(&shared, round, &mut receiver);
            return;
        };
        shared.database_state(None);
        settle_round(&shared, round, committed);
    }
}

/// Commits `round`, trying again until the database takes it; `None` if
/// told to stop first.
async fn commit_until_stopped(shared: &Shared, session: &mut Option<Session>, round: &Round) -> Option<Committed> {
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match commit(shared, session, round).await {
            Ok(committed) => return Some(committed),
            Err(error) => {
                shared.database_state(Some(error));
                if session.as_ref().is_some_and(|session| session.client.is_closed()) {
                    *session = None;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.writer_stop.notified() => {}
                }
                if shared.stopping.load(Ordering::Acquire) {
                    return None;
                }
                delay = connection::next_delay(delay);
            }
        }
    }
}

/// A round being gathered, and when its commit window closes.
struct Gathering {
    round: Round,
    deadline: tokio::time::Instant,
}

impl Gathering {
    /// From its first entry on: the window runs from now.
    fn new(shared: &Shared) -> Gathering {
        Gathering { round: Round::default(), deadline: tokio::time::Instant::now() + shared.options.commit_window }
    }
}

impl Round {
    /// Whether the round takes no more entries: it holds a sync (answered
    /// once this much is committed) or its event limit.
    fn is_full(&self, shared: &Shared) -> bool {
        !self.syncs.is_empty() || self.accepted_total >= shared.options.max_commit_events
    }

    /// Adds what `later` holds after what this round holds.
    fn append(&mut self, later: Round) {
        self.steps.extend(later.steps);
        self.syncs.extend(later.syncs);
        for (token, (webhook, accepted)) in later.accepted {
            self.accepted.entry(token).or_insert_with(|| (webhook, 0)).1 += accepted;
        }
        self.accepted_total += later.accepted_total;
    }
}

/// Gathers a round until its commit window closes (or it is full),
/// continuing `started` if given, else from the first entry to come;
/// `None` when told to stop first.
async fn gather(
    shared: &Shared,
    receiver: &mut mpsc::UnboundedReceiver<Entry>,
    started: Option<Gathering>,
) -> Option<Round> {
    let Gathering { mut round, deadline } = match started {
        Some(started) => started,
        None => {
            let first = tokio::select! {
                first = receiver.recv() => first?,
                () = shared.writer_stop.notified() => return None,
            };
            let mut gathering = Gathering::new(shared);
            add(shared, &mut gathering.round, first);
            gathering
        }
    };
    loop {
        while !round.is_full(shared) {
            let Ok(entry) = receiver.try_recv() else { break };
            add(shared, &mut round, entry);
        }
        if round.is_full(shared) {
            return Some(round);
        }
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(entry)) => add(shared, &mut round, entry),
            Ok(None) | Err(_) => return Some(round),
        }
    }
}

/// Adds one entry to the round, encoding an event once, for every try.
fn add(shared: &Shared, round: &mut Round, entry: Entry) {
    match entry {
        Entry::Event(webhook, event) => {
            let token = webhook.config.shared_bot_token();
            round.accepted_total += 1;
            // Looked up before inserting: no reference count changes for a webhook seen already.
            match round.accepted.get_mut(&*token) {
                Some((_, accepted)) => *accepted += 1,
                None => {
                    round.accepted.insert(Arc::clone(&token), (Arc::clone(&webhook), 1));
                }
            }
            if !matches!(round.steps.last(), Some(Step::Events(_))) {
                round.steps.push(Step::Events(EventBatch::default()));
            }
            let Some(Step::Events(batch)) = round.steps.last_mut() else { return };
            let start = batch.encoded.len();
            wire::encode_event_including(&event, webhook.config.included_variables(), &mut batch.encoded);
            if !rules::fits_alone(batch.encoded.len() - start, webhook.config.max_batch_bytes()) {
                batch.encoded.truncate(start);
                count_dropped(shared, Some(&webhook), &token, DropReason::TooLarge, vec![event]);
                return;
            }
            batch.ends.push(batch.encoded.len());
            batch.tokens.push(token);
        }
        Entry::Configure(config) => round.steps.push(Step::Configure(config)),
        Entry::Remove(token) => round.steps.push(Step::Remove(token)),
        Entry::Sync(done) => round.syncs.push(done),
    }
}

async fn commit(shared: &Shared, session: &mut Option<Session>, round: &Round) -> Result<Committed, String> {
    if session.is_none() {
        let connected = Session::connect(&shared.database).await.map_err(doing("connecting"))?;
        *session = Some(connected);
    }
    let Some(Session { client, statements }) = session.as_mut() else { return Err("no connection".to_owned()) };
    let transaction = client.transaction().await.map_err(doing("beginning a commit"))?;
    let now = shared.now();
    let mut committed = Committed::default();
    lock_changed_webhooks(&transaction, shared, &round.steps).await?;
    for step in &round.steps {
        match step {
            Step::Configure(config) => {
                let generation = save_webhook_at(&transaction, &shared.schema, config, now)
                    .await
                    .map_err(|error| format!("saving a webhook: {error}"))?;
                committed.generations.push((config.shared_bot_token(), generation));
                let reason = (config.plan() == Plan::Free).then_some(DropReason::Reconfigured);
                if let Some(reason) = reason {
                    let bodies = delete_events(&transaction, shared, config.bot_token()).await?;
                    committed.dropped.push((config.bot_token().to_owned(), reason, bodies));
                } else {
                    committed.fresh.push(config.bot_token().to_owned());
                }
            }
            Step::Remove(token) => {
                let bodies = delete_events(&transaction, shared, token).await?;
                committed.dropped.push((token.to_string(), DropReason::Removed, bodies));
                let statement = format!("DELETE FROM {}.webhooks WHERE bot_token = $1", shared.schema.quoted());
                transaction.execute(&statement, &[&&**token]).await.map_err(doing("removing a webhook"))?;
            }
            Step::Events(batch) => insert_events(&transaction, statements, shared, batch, now, &mut committed).await?,
        }
    }
    transaction.commit().await.map_err(doing("committing"))?;
    Ok(committed)
}

/// Locks the webhooks the round configures or removes, in token order,
/// before any step writes: first their advisory locks, which every writer
/// of webhooks takes ([`lock_webhooks`]; other processes' commits configuring
/// the same new webhooks then wait in this order, not in their calls'), then
/// their existing rows, in the order in which settlements and the
/// scheduling lock them too. So none of these waits for another in a cycle
/// (the server would break it only after `deadlock_timeout`). The steps then
/// write in the order of the calls.
async fn lock_changed_webhooks(transaction: &Transaction<'_>, shared: &Shared, steps: &[Step]) -> Result<(), String> {
    let mut tokens: Vec<&str> = steps
        .iter()
        .filter_map(|step| match step {
            Step::Configure(config) => Some(config.bot_token()),
            Step::Remove(token) => Some(&**token),
            Step::Events(_) => None,
        })
        .collect();
    if tokens.is_empty() {
        return Ok(());
    }
    // Byte order, as the tokens' collation ("C") sorts them.
    tokens.sort_unstable();
    tokens.dedup();
    lock_webhooks(transaction, &shared.schema, &tokens)
        .await
        .map_err(|error| format!("locking the webhooks to change: {error}"))?;
    let statement = format!(
        "SELECT 1 FROM {}.webhooks WHERE bot_token = ANY($1) ORDER BY bot_token FOR NO KEY UPDATE",
        shared.schema.quoted()
    );
    transaction.execute(&statement, &[&tokens]).await.map_err(doing("locking the webhooks to change"))?;
    Ok(())
}

/// Inserts a batch in order, skipping the events of webhooks removed or
/// disabled (counted as dropped). Takes no lock on the webhooks, so that
/// writers and settlements of several processes do not wait for each
/// other: the delivery task then schedules these webhooks, and drops the
/// events of one whose disabling committed meanwhile ([`super::delivery`]).
async fn insert_events(
    transaction: &Transaction<'_>,
    statements: &mut Statements,
    shared: &Shared,
    batch: &EventBatch,
    now: DateTime<Utc>,
    committed: &mut Committed,
) -> Result<(), String> {
    if batch.tokens.is_empty() {
        return Ok(());
    }
    let schema = shared.schema.quoted();
    let mut tokens: Vec<&str> = batch.tokens.iter().map(|token| &**token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    let statement = format!("SELECT bot_token, disabled FROM {schema}.webhooks WHERE bot_token = ANY($1)");
    let statement = statements.get(transaction, &statement).await.map_err(doing("preparing"))?;
    let rows = transaction.query(&statement, &[&tokens]).await.map_err(doing("reading the events' webhooks"))?;
    let mut open: TokenMap<bool, String> = TokenMap::with_capacity_and_hasher(rows.len(), Default::default());
    for row in &rows {
        let read = doing("reading a webhook");
        open.insert(row.try_get(0).map_err(read)?, !row.try_get::<_, bool>(1).map_err(read)?);
    }
    // Each webhook's events of the batch, in order, in runs of up to
    // `RUN_BYTES`, a row each: one row, not one per event, for the server to write, read
    // and delete.
    let mut new_runs: Vec<(&str, NewRun)> = Vec::new();
    let mut open_run: TokenMap<usize, &str> = TokenMap::default();
    let mut skipped: TokenMap<Vec<Vec<u8>>, &str> = TokenMap::default();
    let mut inserted: TokenMap<u64, &str> = TokenMap::default();
    for (token, body) in batch.events() {
        if !open.get(token).copied().unwrap_or(false) {
            skipped.entry(token).or_default().push(body.to_vec());
            continue;
        }
        *inserted.entry(token).or_default() += 1;
        let run = match open_run.get(token) {
            Some(&index) if new_runs[index].1.bytes_with(body) <= RUN_BYTES => index,
            _ => {
                new_runs.push((token, NewRun::default()));
                open_run.insert(token, new_runs.len() - 1);
                new_runs.len() - 1
            }
        };
        new_runs[run].1.push(body);
    }
    if !new_runs.is_empty() {
        // The rows' ids, taken from the table's sequence first so that this
        // process knows each row's id (to keep it, [`Shared::kept`]); in
        // the order taken, which is the batch's (acceptance order).
        let statement = format!(
            "SELECT nextval(sequence) FROM (SELECT pg_get_serial_sequence('{schema}.events', 'id')::regclass AS sequence) \
             AS events_ids CROSS JOIN generate_series(1, $1::integer)"
        );
        let statement = statements.get(transaction, &statement).await.map_err(doing("preparing"))?;
        let rows_wanted = i32::try_from(new_runs.len()).unwrap_or(i32::MAX);
        let rows = transaction.query(&statement, &[&rows_wanted]).await.map_err(doing("taking the events' ids"))?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get::<_, i64>(0).map_err(doing("taking the events' ids"))?);
        }
        ids.sort_unstable();
        if ids.len() != new_runs.len() {
            return Err(format!("taking the events' ids: {} ids for {} rows", ids.len(), new_runs.len()));
        }
        // COPY: the cheapest way in. A webhook removed since the read above
        // fails the foreign key, and the round is tried again.
        let statement =
            format!("COPY {schema}.events (id, bot_token, body, ends, events, bytes, accepted_at) FROM STDIN BINARY");
        let sink = transaction.copy_in(&statement).await.map_err(doing("inserting events"))?;
        let types = [Type::INT8, Type::TEXT, Type::BYTEA, Type::INT4_ARRAY, Type::INT4, Type::INT8, Type::TIMESTAMPTZ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        let mut writer = std::pin::pin!(writer);
        for ((token, run), id) in new_runs.iter().zip(&ids) {
            let events = i32::try_from(run.ends.len()).unwrap_or(i32::MAX);
            let bytes = i64::try_from(run.bytes).unwrap_or(i64::MAX);
            writer
                .as_mut()
                .write(&[id, token, &run.body(), &run.ends, &events, &bytes, &now])
                .await
                .map_err(doing("inserting events"))?;
        }
        writer.finish().await.map_err(doing("inserting events"))?;
        committed.newest_id = committed.newest_id.max(ids.last().copied().unwrap_or(0));
        // Copies for this process's own calls, the oldest first, up to the budget
        // (the rest would only push them out again).
        let mut kept_cost = 0;
        for ((token, run), &id) in new_runs.iter().zip(&ids) {
            if kept_cost >= shared.kept.budget() {
                break;
            }
            let row = KeptRow { body: run.joined(), ends: run.ends.clone() };
            kept_cost += row.cost();
            committed.kept.push((Arc::from(*token), id, row));
        }
    }
    for (token, bodies) in skipped {
        let reason = if open.contains_key(token) { DropReason::Disabled } else { DropReason::Removed };
        committed.dropped.push((token.to_owned(), reason, bodies));
    }
    for (token, count) in inserted {
        committed.fresh.push(token.to_owned());
        *committed.inserted.entry(token.to_owned()).or_default() += count;
    }
    Ok(())
}

/// Deletes every event of a webhook, returning their bodies oldest first.
pub(crate) async fn delete_events(
    transaction: &impl GenericClient,
    shared: &Shared,
    bot_token: &str,
) -> Result<Vec<Vec<u8>>, String> {
    shared.kept.forget_older(bot_token, None);
    let statement =
        format!("DELETE FROM {}.events WHERE bot_token = $1 RETURNING {}", shared.schema.quoted(), runs::COLUMNS);
    let rows = transaction.query(&statement, &[&bot_token]).await.map_err(doing("deleting a webhook's events"))?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        stored.push(StoredRun::from_row(row, 0)?);
    }
    stored.sort_unstable_by_key(|run| run.id);
    Ok(stored.iter().flat_map(StoredRun::bodies).map(<[u8]>::to_vec).collect())
}

/// Counts a committed round: pending and buffered counts, drops (to the
/// observer), generations, and answers the syncs.
fn settle_round(shared: &Shared, round: Round, committed: Committed) {
    for (token, (webhook, accepted)) in &round.accepted {
        webhook.live.buffered.fetch_sub(*accepted, Ordering::Relaxed);
        let inserted = committed.inserted.get(&**token).copied().unwrap_or_default();
        webhook.live.pending_in_database.fetch_add(inserted, Ordering::Relaxed);
    }
    shared.buffered.fetch_sub(round.accepted_total, Ordering::AcqRel);
    shared.committed_up_to.fetch_max(committed.newest_id, Ordering::AcqRel);
    shared.kept.keep(committed.kept);
    for step in &round.steps {
        if let Step::Remove(token) = step {
            lock(&shared.removing).remove(token);
        }
    }
    for (token, generation) in committed.generations {
        if let Some(webhook) = shared.webhook(&token) {
            webhook.generation.fetch_max(generation, Ordering::Relaxed);
        }
    }
    for (token, reason, bodies) in committed.dropped {
        if bodies.is_empty() {
            continue;
        }
        count_dropped(shared, shared.webhook(&token).as_deref(), &token, reason, decode(&bodies));
    }
    lock(&shared.fresh).extend(committed.fresh.into_iter().map(Arc::from));
    for done in round.syncs {
        let _ = done.send(());
    }
    shared.delivery_wake.notify_one();
}

/// Counts dropped events of a webhook (of a removed one, `None`: among the
/// retired counts) and hands them to the observer (all but those the host
/// gets back, as in memory).
pub(crate) fn count_dropped(
    shared: &Shared,
    webhook: Option<&LocalWebhook>,
    token: &str,
    reason: DropReason,
    events: Vec<Event>,
) {
    let count = events.len() as u64;
    match webhook {
        Some(webhook) => {
            webhook.live.counters.add_dropped(count, reason);
            let in_database = webhook.live.pending_in_database.load(Ordering::Relaxed);
            if reason != DropReason::TooLarge {
                webhook.live.pending_in_database.store(in_database.saturating_sub(count), Ordering::Relaxed);
            }
        }
        None => shared.retired.add_dropped(count, reason),
    }
    if reason != DropReason::Shutdown {
        shared.observer.events_dropped(&DroppedEvents { bot_token: token.to_owned(), reason, events });
    }
}

/// Stored events back as events, one for one (see the core's `decode`).
pub(crate) fn decode(bodies: &[Vec<u8>]) -> Vec<Event> {
    bodies.iter().map(|body| crate::dispatch::decode_stored(body)).collect()
}

/// Hands the events of `round` and of every entry still waiting to
/// [`Shared::uncommitted`], for `shutdown` to return, counted as dropped
/// ([`DropReason::Shutdown`]); answers the syncs by dropping them.
fn hand_back(shared: &Shared, round: Round, receiver: &mut mpsc::UnboundedReceiver<Entry>) {
    receiver.close();
    let mut undelivered = Vec::new();
    let mut per_webhook: TokenMap<(Arc<LocalWebhook>, u64)> = round.accepted;
    let mut total = round.accepted_total;
    for step in round.steps {
        if let Step::Events(batch) = step {
            undelivered.extend(batch.bodies().map(crate::dispatch::decode_stored));
        }
    }
    while let Ok(entry) = receiver.try_recv() {
        if let Entry::Event(webhook, event) = entry {
            total += 1;
            per_webhook.entry(webhook.config.shared_bot_token()).or_insert_with(|| (Arc::clone(&webhook), 0)).1 += 1;
            undelivered.push(event);
        }
    }
    for (webhook, accepted) in per_webhook.values() {
        webhook.live.buffered.fetch_sub(*accepted, Ordering::Relaxed);
    }
    shared.buffered.fetch_sub(total, Ordering::AcqRel);
    // Counted per webhook: the events too large were counted when gathered.
    let mut counted: TokenMap<u64, &str> = TokenMap::default();
    for event in &undelivered {
        if let Some(token) = event.bot_token() {
            *counted.entry(token).or_default() += 1;
        }
    }
    for (token, count) in counted {
        match shared.webhook(token) {
            Some(webhook) => webhook.live.counters.add_dropped(count, DropReason::Shutdown),
            None => shared.retired.add_dropped(count, DropReason::Shutdown),
        }
    }
    lock(&shared.uncommitted).extend(undelivered);
}
