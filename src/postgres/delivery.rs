//! The delivery task: claims due webhooks under a lease, makes their calls
//! with no transaction open, and settles each call in one transaction by
//! the delivery rules; delivers alerts from the outbox; prunes the ledger.
//! Also the cluster-wide flush.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryFutureExt;
use http::StatusCode;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Row, Statement};

use super::connection::{self, doing, Session, Statements, FIRST_RETRY_DELAY};
use super::dispatcher::{lock, Health, Shared, StoreError};
use super::due::Schedule;
use super::runs::{self, StoredRun};
use super::timestamps::{later, since};
use super::webhooks::webhook_from_row;
use super::writer::{count_dropped, decode, delete_events};
use crate::alert::WebhookDisabledAlert;
use crate::config::WebhookConfig;
use crate::dispatch::endpoint::{CallSignature, Endpoint};
use crate::dispatch::rules;
use crate::dispatch::stats::StalledWebhook;
use crate::dispatch::store::{Schedulable, StoredWebhook};
use crate::dispatch::token_hash::TokenMap;
use crate::dispatch::{CallOutcome, CallRecord, DropReason, FlushError, WebhookState};
use crate::signing;
use crate::transport::{TransportError, TransportErrorKind};

/// A flush under way in this process: settlements then push a webhook
/// with events left at once, as in memory.
pub(crate) struct Flush;

/// How long an alert taken for delivery is this process's before another may take it.
const ALERT_LEASE: Duration = Duration::from_secs(60);
/// Alerts and webhooks taken per statement.
const CLAIM_LIMIT: i64 = 64;
/// The most webhooks with kept rows a claim looks up first (each costs the server a lookup).
const KEPT_PREFERRED: usize = 1024;
/// How often the ledger is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The rows of `events` a call's events came from: those it took whole, and
/// the one it ended inside, if any (the oldest events of each, since a
/// webhook's events leave only from its head).
#[derive(Debug, Default)]
struct Taken {
    whole: Vec<i64>,
    partial: Option<PartRow>,
}

/// A row a call took the first `events` waiting events of, `bytes` in all.
#[derive(Debug, Clone, Copy)]
struct PartRow {
    id: i64,
    events: i32,
    bytes: i64,
}

impl Taken {
    /// Which of `rows` (a webhook's oldest, oldest first) its first
    /// `events` waiting events fill.
    fn first(rows: &[StoredRun<'_>], events: usize) -> Taken {
        let mut taken = Taken::default();
        let mut left = events;
        for row in rows {
            if left == 0 {
                break;
            }
            if row.waiting() <= left {
                taken.whole.push(row.id);
                left -= row.waiting();
            } else {
                let bytes: usize = row.bodies().take(left).map(<[u8]>::len).sum();
                taken.partial = Some(PartRow {
                    id: row.id,
                    events: i32::try_from(left).unwrap_or(i32::MAX),
                    bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                });
                left = 0;
            }
        }
        taken
    }
}

/// A call made, waiting for its settlement.
struct CallEnded {
    bot_token: Arc<str>,
    claim_id: i64,
    config: Arc<WebhookConfig>,
    /// The call's endpoint, for its billing record: built once, for the request.
    endpoint: Endpoint,
    /// How many events the call carried, their encoded bytes, and the rows they came from.
    events: usize,
    event_bytes: usize,
    taken: Taken,
    bytes: usize,
    call_id: String,
    started_at: DateTime<Utc>,
    duration: Duration,
    result: Result<StatusCode, TransportError>,
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let (ended_sender, mut ended) = mpsc::unbounded_channel::<CallEnded>();
    let mut session: Option<Session> = None;
    let mut unsettled: VecDeque<CallEnded> = VecDeque::new();
    let mut last_prune: Option<Instant> = None;
    let mut last_sweep: Option<Instant> = None;
    let mut delay = FIRST_RETRY_DELAY;
    let call_id_prefix = signing::call_id_prefix(&*shared.clock);
    loop {
        while let Ok(call) = ended.try_recv() {
            unsettled.push_back(call);
        }
        let wait = match round(
            &shared,
            &mut session,
            &mut unsettled,
            &ended_sender,
            &mut last_prune,
            &mut last_sweep,
            call_id_prefix,
        )
        .await
        {
            Ok(next_due) => {
                delay = FIRST_RETRY_DELAY;
                shared.database_state(None);
                let until_due = next_due.map_or(Duration::MAX, |due| since(due, shared.now()));
                until_due.min(shared.options.poll_interval)
            }
            Err(error) => {
                shared.database_state(Some(error));
                if session.as_ref().is_some_and(|session| session.client.is_closed()) {
                    session = None;
                }
                delay = connection::next_delay(delay);
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.delivery_wake.notified() => {}
            call = ended.recv() => unsettled.extend(call),
        }
        // Shutting down: stop between rounds, never inside one.
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
    }
}

/// One pass: settle ended calls, deliver alerts, prune, claim and start
/// calls. Returns the next due time the database knows of.
async fn round(
    shared: &Arc<Shared>,
    session: &mut Option<Session>,
    unsettled: &mut VecDeque<CallEnded>,
    ended: &mpsc::UnboundedSender<CallEnded>,
    last_prune: &mut Option<Instant>,
    last_sweep: &mut Option<Instant>,
    call_id_prefix: u64,
) -> Result<Option<DateTime<Utc>>, String> {
    if session.is_none() {
        let connected = Session::connect(&shared.database).await.map_err(doing("connecting"))?;
        *session = Some(connected);
    }
    let Some(session) = session.as_mut() else { return Err("no connection".to_owned()) };
    // Calls not settled (the database failed) are tried again next pass.
    settle_all(shared, session, unsettled).await?;
    // What this process committed since, and every poll interval all webhooks.
    let fresh: Vec<Arc<str>> = lock(&shared.fresh).drain().collect();
    if !fresh.is_empty() {
        let tokens: Vec<&str> = fresh.iter().map(|token| &**token).collect();
        if let Err(error) = schedule_idle(shared, session, Some(&tokens)).await {
            lock(&shared.fresh).extend(fresh);
            return Err(error);
        }
    }
    // Every poll interval: all webhooks, and alerts written by any process
    // (one that died after its commit, say); this process's own at once.
    let sweep = last_sweep.is_none_or(|swept| swept.elapsed() >= shared.options.poll_interval);
    if sweep {
        schedule_idle(shared, session, None).await?;
        *last_sweep = Some(Instant::now());
    }
    if shared.alert_written.swap(false, Ordering::AcqRel) || sweep {
        if let Err(error) = deliver_alerts(shared, session).await {
            shared.alert_written.store(true, Ordering::Release);
            return Err(error);
        }
    }
    let client = &session.client;
    if last_prune.is_none_or(|pruned| pruned.elapsed() >= PRUNE_EVERY) {
        prune_ledger(shared, client).await?;
        let window_ms = i64::try_from(shared.options.returning_user_window.as_millis()).unwrap_or(i64::MAX);
        super::returning_users::forget_expired(client, &shared.schema, shared.now(), window_ms)
            .await
            .map_err(doing("forgetting returning users"))?;
        *last_prune = Some(Instant::now());
    }
    if shared.closed.load(Ordering::Acquire) {
        return Ok(None);
    }
    let free = || shared.options.max_concurrent_pushes.saturating_sub(shared.calls_in_flight.load(Ordering::Acquire));
    let claimed_all = free() > 0 && claim_and_call(shared, session, free(), ended, call_id_prefix).await?;
    if free() == 0 {
        // No call can start before one ends, which wakes this task.
        return Ok(None);
    }
    if claimed_all {
        // More may be due: claim again at once.
        return Ok(Some(shared.now()));
    }
    let statement = format!(
        "SELECT min(greatest(due_at, coalesce(lease_until, due_at))) FROM {}.webhooks
         WHERE due_at IS NOT NULL AND NOT disabled",
        shared.schema.quoted()
    );
    let statement = session.prepared(&statement).await.map_err(doing("preparing"))?;
    let row = session.client.query_one(&statement, &[]).await.map_err(doing("reading due times"))?;
    row.try_get(0).map_err(doing("reading due times"))
}

/// Claims up to `free` due webhooks, reads their calls' events in one
/// statement, and starts a call for each that still has events. Returns
/// whether it claimed as many as it could (so that more may be due).
async fn claim_and_call(
    shared: &Arc<Shared>,
    session: &mut Session,
    free: usize,
    ended: &mpsc::UnboundedSender<CallEnded>,
    call_id_prefix: u64,
) -> Result<bool, String> {
    let schema = shared.schema.quoted();
    let now = shared.now();
    let lease_margin_ms = i64::try_from(shared.options.lease_margin.as_millis()).unwrap_or(i64::MAX);
    let limit = i64::try_from(free).unwrap_or(CLAIM_LIMIT).min(CLAIM_LIMIT);
    // Skipping locked rows: processes claiming at once take different
    // webhooks. Due webhooks whose rows this process keeps come first (their
    // calls need not read their events back), then any due, each in due order.
    let claimable = "due_at <= $1 AND NOT disabled AND plan = 'paid' AND (lease_until IS NULL OR lease_until <= $1)";
    let statement = format!(
        "WITH kept AS (
             SELECT bot_token FROM {schema}.webhooks WHERE bot_token = ANY($4) AND {claimable}
             ORDER BY due_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED),
         others AS (
             SELECT bot_token FROM {schema}.webhooks WHERE bot_token <> ALL($4) AND {claimable}
             ORDER BY due_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED),
         due AS (SELECT bot_token FROM kept UNION ALL SELECT bot_token FROM others LIMIT $2)
         UPDATE {schema}.webhooks AS webhook
         SET claim_id = nextval('{schema}.claim_ids'),
             lease_until = $1::timestamptz + make_interval(secs => (webhook.request_timeout_ms * 2 + $3::bigint) / 1000.0)
         FROM due WHERE webhook.bot_token = due.bot_token
         RETURNING webhook.*"
    );
    let kept_webhooks = shared.kept.webhooks(KEPT_PREFERRED);
    let kept_webhooks: Vec<&str> = kept_webhooks.iter().map(|token| &**token).collect();
    let statement = session.prepared(&statement).await.map_err(doing("preparing"))?;
    let rows = session
        .client
        .query(&statement, &[&now, &limit, &lease_margin_ms, &kept_webhooks])
        .await
        .map_err(doing("claiming due webhooks"))?;
    let claimed_all = i64::try_from(rows.len()).is_ok_and(|claimed| claimed == limit);
    if rows.is_empty() {
        return Ok(false);
    }
    let mut claims = Vec::with_capacity(rows.len());
    for row in &rows {
        claims.push(Claim::from_row(row)?);
    }
    // Each claim's oldest rows, as many as hold the most events its call may
    // carry (a row holds at least one): one round trip for all. Rows this
    // process keeps come without their events, taken from memory instead.
    let statement = format!(
        "SELECT claim.bot_token, run.id,
                CASE WHEN run.id = ANY($3) THEN NULL ELSE run.body END,
                CASE WHEN run.id = ANY($3) THEN NULL ELSE run.ends END, run.delivered
         FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS claim (bot_token, events, position)
         CROSS JOIN LATERAL (
             SELECT {columns} FROM (
                 SELECT {columns}, sum(events) OVER (ORDER BY id) - events AS before
                 FROM (SELECT {columns}, events FROM {schema}.events
                       WHERE bot_token = claim.bot_token ORDER BY id LIMIT claim.events) AS oldest
             ) AS counted
             WHERE before < claim.events) AS run
         ORDER BY claim.position, run.id",
        columns = runs::COLUMNS
    );
    let tokens: Vec<&str> = claims.iter().map(|claim| &*claim.bot_token).collect();
    let limits: Vec<i64> = claims.iter().map(|claim| i64::try_from(claim.read_limit()).unwrap_or(i64::MAX)).collect();
    let kept = shared.kept.of(&tokens);
    let kept_ids: Vec<i64> = kept.keys().copied().collect();
    let statement = session.prepared(&statement).await.map_err(doing("preparing"))?;
    let rows = session
        .client
        .query(&statement, &[&tokens, &limits, &kept_ids])
        .await
        .map_err(doing("reading the calls' events"))?;
    // The bodies stay in the rows' buffers (or the kept rows'): no copy per event.
    let mut events: TokenMap<Vec<StoredRun<'_>>, &str> =
        TokenMap::with_capacity_and_hasher(claims.len(), Default::default());
    for row in &rows {
        let token: &str = row.try_get(0).map_err(doing("reading events"))?;
        events.entry(token).or_default().push(StoredRun::from_row_or_kept(row, 1, Some(&kept))?);
    }
    // Kept rows older than a claim's oldest are gone (delivered by another process, say).
    for token in &tokens {
        shared.kept.forget_older(token, events.get(token).and_then(|runs| runs.first()).map(|run| run.id));
    }
    let mut idle = Vec::new();
    for claim in claims {
        let claim_events = events.remove(&*claim.bot_token).unwrap_or_default();
        if let Some(claim) = start_call(shared, claim, &claim_events, ended, call_id_prefix) {
            idle.push(claim);
        }
    }
    if !idle.is_empty() {
        // Delivered or dropped meanwhile: nothing to call. Hand the claims
        // back with nothing scheduled; `schedule_idle` then schedules any of
        // them that got events since, by the same rule as any idle webhook.
        // The rows are locked in token order first, as every writer of them
        // locks them (an update joined to the list locks in the plan's order).
        let tokens: Vec<&str> = idle.iter().map(|claim| &*claim.bot_token).collect();
        let claim_ids: Vec<i64> = idle.iter().map(|claim| claim.claim_id).collect();
        let statement = format!(
            "UPDATE {schema}.webhooks AS webhook SET claim_id = NULL, lease_until = NULL, due_at = NULL
             FROM (SELECT held.bot_token
                   FROM {schema}.webhooks AS held
                   JOIN unnest($1::text[], $2::bigint[]) AS released (bot_token, claim_id)
                     ON held.bot_token = released.bot_token AND held.claim_id = released.claim_id
                   ORDER BY held.bot_token FOR NO KEY UPDATE OF held) AS locked
             WHERE webhook.bot_token = locked.bot_token"
        );
        let statement = session.prepared(&statement).await.map_err(doing("preparing"))?;
        session.client.execute(&statement, &[&tokens, &claim_ids]).await.map_err(doing("releasing claims"))?;
        schedule_idle(shared, session, Some(&tokens)).await?;
    }
    Ok(claimed_all)
}

/// Gives a due time to each webhook (of `tokens`, or all) that has events
/// but nothing scheduled and no call under way, and drops the events of a
/// disabled webhook or one on the free plan: events committed while its
/// disabling or reconfiguration did. The one place webhooks are scheduled
/// after new events; a settlement schedules its own webhook.
///
/// Given `tokens`, locks each of their rows that has events, whatever its
/// state, waiting for a settlement under way, and schedules those the
/// locked row shows idle: a settlement may have counted its events before
/// these were committed (a row claimed as read here would be skipped, and
/// then left unscheduled by that settlement until the next sweep).
async fn schedule_idle(shared: &Shared, session: &mut Session, tokens: Option<&[&str]>) -> Result<(), String> {
    session
        .transaction(async |client, statements| schedule_in_transaction(shared, client, statements, tokens).await)
        .await
}

/// The scheduling's transaction: `BEGIN` with the locking read, then the
/// update with `COMMIT` (more round trips only when events are dropped).
async fn schedule_in_transaction(
    shared: &Shared,
    client: &Client,
    statements: &mut Statements,
    tokens: Option<&[&str]>,
) -> Result<(), String> {
    let schema = shared.schema.quoted();
    let now = shared.now();
    // In token order, as every writer of these rows locks them. A locked
    // row is read as its latest version, so its state is checked here, not
    // in the condition (read as of the statement's start); the sweep
    // checks it in the condition, so as not to lock every webhook.
    let statement = format!(
        "SELECT webhook.bot_token, webhook.disabled, webhook.plan = 'free',
                webhook.anchor_at, webhook.push_interval_ms, webhook.last_push_at,
                webhook.due_at IS NULL AND webhook.claim_id IS NULL
         FROM {schema}.webhooks AS webhook
         WHERE (webhook.bot_token = ANY($1)
                OR ($1::text[] IS NULL AND webhook.due_at IS NULL AND webhook.claim_id IS NULL))
           AND EXISTS (SELECT 1 FROM {schema}.events AS event WHERE event.bot_token = webhook.bot_token)
         ORDER BY webhook.bot_token FOR NO KEY UPDATE OF webhook"
    );
    let statement = statements.get(client, &statement).await.map_err(doing("preparing"))?;
    let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tokens];
    let ((), rows) = futures::try_join!(
        connection::begin(client).map_err(doing("beginning to schedule")),
        client.query(&statement, &parameters).map_err(doing("reading idle webhooks")),
    )?;
    if rows.is_empty() {
        return connection::commit(client).await.map_err(doing("scheduling"));
    }
    let mut due_tokens = Vec::new();
    let mut due_times = Vec::new();
    let mut dropped = Vec::new();
    for row in &rows {
        let read = doing("reading an idle webhook");
        if !row.try_get::<_, bool>(6).map_err(read)? {
            // Due already, or a call is under way: its settlement schedules it.
            continue;
        }
        let token: String = row.try_get(0).map_err(read)?;
        let disabled: bool = row.try_get(1).map_err(read)?;
        let free_plan: bool = row.try_get(2).map_err(read)?;
        if disabled || free_plan {
            let reason = if disabled { DropReason::Disabled } else { DropReason::Reconfigured };
            let bodies = delete_events(client, shared, &token).await?;
            dropped.push((token, reason, bodies));
            continue;
        }
        let schedule = Schedule {
            anchor_at: row.try_get(3).map_err(read)?,
            push_interval_ms: row.try_get(4).map_err(read)?,
            last_push_at: row.try_get(5).map_err(read)?,
        };
        due_times.push(schedule.first_push_at(now));
        due_tokens.push(token);
    }
    if !due_tokens.is_empty() {
        let statement = format!(
            "UPDATE {schema}.webhooks AS webhook SET due_at = due.due_at
             FROM unnest($1::text[], $2::timestamptz[]) AS due (bot_token, due_at)
             WHERE webhook.bot_token = due.bot_token"
        );
        let statement = statements.get(client, &statement).await.map_err(doing("preparing"))?;
        let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&due_tokens, &due_times];
        futures::try_join!(
            client.execute(&statement, &parameters).map_err(doing("scheduling webhooks")),
            connection::commit(client).map_err(doing("scheduling")),
        )?;
    } else {
        connection::commit(client).await.map_err(doing("scheduling"))?;
    }
    for (token, reason, bodies) in dropped {
        count_dropped(shared, shared.webhook(&token).as_deref(), &token, reason, decode(&bodies));
    }
    Ok(())
}

/// A webhook claimed for a call: its settings as the row had them, and the
/// failed call to send again, if any.
struct Claim {
    bot_token: Arc<str>,
    claim_id: i64,
    config: Arc<WebhookConfig>,
    retry_events: Option<i32>,
    retry_call_id: Option<String>,
}

impl Claim {
    fn from_row(row: &Row) -> Result<Claim, String> {
        let read = doing("reading a claimed webhook");
        let stored = webhook_from_row(row).map_err(|error| error.to_string())?;
        let config = Arc::new(stored.config);
        Ok(Claim {
            bot_token: config.shared_bot_token(),
            claim_id: row.try_get("claim_id").map_err(read)?,
            retry_events: row.try_get("retry_events").map_err(read)?,
            retry_call_id: row.try_get("retry_call_id").map_err(read)?,
            config,
        })
    }

    fn limits(&self) -> (usize, usize) {
        rules::batch_limits(
            self.config.one_event_per_call(),
            self.config.max_batch_events(),
            self.config.max_batch_bytes(),
        )
    }

    /// How many of the oldest events to read: the failed call's, or a call's most.
    fn read_limit(&self) -> usize {
        self.retry_events.map_or(self.limits().0, |events| usize::try_from(events).unwrap_or(1))
    }
}

/// Starts the call of `claim` with the oldest events of `rows` (its oldest
/// rows, each its id and events); hands the claim back when there is no
/// event to send.
fn start_call(
    shared: &Arc<Shared>,
    claim: Claim,
    rows: &[StoredRun<'_>],
    ended: &mpsc::UnboundedSender<CallEnded>,
    call_id_prefix: u64,
) -> Option<Claim> {
    let (max_events, max_bytes) = claim.limits();
    let lengths = rows.iter().flat_map(|row| row.bodies().map(<[u8]>::len));
    // The failed call again as it was; otherwise as many of the oldest as fit.
    let failed = claim.retry_events.map(|events| usize::try_from(events).unwrap_or(1));
    let (count, bytes) = rules::call_events(failed, lengths, max_events, max_bytes);
    if count == 0 {
        return Some(claim);
    }
    // Each row's events are joined already: one copy per row.
    let mut body = Vec::with_capacity(rules::array_length(count, bytes));
    body.push(b'[');
    let mut left = count;
    for row in rows {
        if left == 0 {
            break;
        }
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(row.joined(left));
        left -= left.min(row.waiting());
    }
    body.push(b']');
    let Claim { bot_token, claim_id, config, retry_call_id, .. } = claim;
    let call_id = retry_call_id.unwrap_or_else(|| signing::call_id(call_id_prefix, claim_id as u64));
    let (_, endpoint) = Endpoint::new(&config);
    let secrets = config.signing_secrets();
    let signature = (!secrets.is_empty()).then(|| CallSignature {
        secrets,
        call_id: call_id.clone(),
        timestamp: shared.clock.wall_time().timestamp(),
    });
    let request = endpoint.call_request(body, signature);
    let body_length = request.body().len();
    let taken = Taken::first(rows, count);
    let in_call = count as u64;
    shared.calls_in_flight.fetch_add(1, Ordering::AcqRel);
    shared.in_flight.fetch_add(in_call, Ordering::Relaxed);
    if let Some(webhook) = shared.webhook(&bot_token) {
        webhook.live.counters.in_flight.fetch_add(in_call, Ordering::Relaxed);
    }
    let transport = Arc::clone(&shared.transport);
    let ended = ended.clone();
    // The call starts now, not at its claim: the interval runs from here, as in memory.
    let started_at = shared.now();
    let started = Instant::now();
    tokio::spawn(async move {
        let timeout = config.request_timeout();
        // The timeout is applied here so that any transport is bounded.
        let result = match tokio::time::timeout(timeout, transport.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::new(TransportErrorKind::Timeout, format!("no answer within {timeout:?}"))),
        };
        let call = CallEnded {
            bot_token,
            claim_id,
            config,
            endpoint,
            events: count,
            event_bytes: bytes,
            taken,
            bytes: body_length,
            call_id,
            started_at,
            duration: started.elapsed(),
            result,
        };
        let _ = ended.send(call);
    });
    None
}

/// What a committed settlement means for this process's counts and observer.
struct Committed {
    outcome: CallOutcome,
    /// Whether the call still held its lease, so that its outcome is the webhook's.
    ours: bool,
    /// Whether its ledger row is new: a settlement tried again after its commit changes nothing.
    first: bool,
    /// Events the settlement dropped (disabling, or the free plan), with why.
    dropped: Option<(DropReason, Vec<Vec<u8>>)>,
    health: Option<Health>,
}

impl Committed {
    fn disabled(&self) -> bool {
        matches!(self.dropped, Some((DropReason::Disabled, _)))
    }
}

/// Settles every ended call in one transaction (one commit, one WAL flush
/// for all) of a few statements for all of them, in bot-token order, the
/// order in which webhooks' rows are locked everywhere. A webhook has one
/// call under way; should a lost lease have let this process claim it
/// again, its second call waits for the next settlement.
async fn settle_all(shared: &Shared, session: &mut Session, unsettled: &mut VecDeque<CallEnded>) -> Result<(), String> {
    if unsettled.is_empty() {
        return Ok(());
    }
    let mut batch = Vec::with_capacity(unsettled.len());
    let mut later = VecDeque::new();
    let mut tokens = HashSet::new();
    for call in unsettled.drain(..) {
        if tokens.insert(Arc::clone(&call.bot_token)) {
            batch.push(call);
        } else {
            later.push_back(call);
        }
    }
    batch.sort_by(|left, right| left.bot_token.cmp(&right.bot_token));
    match settle_batch(shared, session, &batch).await {
        Ok(committed) => {
            for (call, committed) in batch.iter().zip(committed) {
                apply(shared, call, committed);
                shared.calls_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            *unsettled = later;
            Ok(())
        }
        Err(error) => {
            unsettled.extend(batch);
            unsettled.extend(later);
            Err(error)
        }
    }
}

async fn settle_batch(shared: &Shared, session: &mut Session, calls: &[CallEnded]) -> Result<Vec<Committed>, String> {
    session.transaction(async |client, statements| settle_in_transaction(shared, client, statements, calls).await).await
}

/// The settlement's transaction, in two round trips: `BEGIN` with the
/// ledger and the locking read, then the writes with `COMMIT` (three when
/// a call disables its webhook or drops its waiting events).
async fn settle_in_transaction(
    shared: &Shared,
    client: &Client,
    statements: &mut Statements,
    calls: &[CallEnded],
) -> Result<Vec<Committed>, String> {
    let schema = shared.schema.quoted();
    let now = shared.now();
    let outcomes: Vec<CallOutcome> =
        calls.iter().map(|call| rules::call_outcome(call.result.clone(), call.config.accept_any_2xx())).collect();
    let failures: Vec<Option<String>> =
        outcomes.iter().map(|outcome| (!outcome.is_success()).then(|| outcome.to_string())).collect();
    let tokens: Vec<&str> = calls.iter().map(|call| &*call.bot_token).collect();
    let event_counts: Vec<i32> = calls.iter().map(|call| i32::try_from(call.events).unwrap_or(i32::MAX)).collect();

    // The ledger: a row per call, unless written by an earlier try of this settlement.
    let claim_ids: Vec<i64> = calls.iter().map(|call| call.claim_id).collect();
    let bytes: Vec<i64> = calls.iter().map(|call| i64::try_from(call.bytes).unwrap_or(i64::MAX)).collect();
    let (names, statuses): (Vec<&str>, Vec<Option<i16>>) = outcomes
        .iter()
        .map(|outcome| match outcome {
            CallOutcome::Delivered(status) => ("delivered", Some(status.as_u16() as i16)),
            CallOutcome::FailedStatus(status) => ("failed_status", Some(status.as_u16() as i16)),
            CallOutcome::FailedTransport(_) => ("failed_transport", None),
        })
        .unzip();
    let started: Vec<DateTime<Utc>> = calls.iter().map(|call| call.started_at).collect();
    let ended: Vec<DateTime<Utc>> = calls.iter().map(|call| now.max(call.started_at)).collect();
    let statement = format!(
        "INSERT INTO {schema}.calls (claim_id, bot_token, events, bytes, outcome, status, failure, started_at, ended_at)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::bigint[], $5::text[], $6::smallint[],
                              $7::text[], $8::timestamptz[], $9::timestamptz[])
         ON CONFLICT (claim_id) DO NOTHING RETURNING claim_id"
    );
    let ledger = statements.get(client, &statement).await.map_err(doing("preparing"))?;
    let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
        [&claim_ids, &tokens, &event_counts, &bytes, &names, &statuses, &failures, &started, &ended];

    // The webhooks' rows, locked; then their waiting events and bytes, read
    // by a statement of its own: its snapshot is taken once the locks are
    // held, so it sees every event committed before a scheduling that
    // found the row claimed (see `schedule_in_transaction`).
    let statement = format!(
        "SELECT webhook.failures_in_row, webhook.claim_id, webhook.anchor_at, webhook.push_interval_ms,
                webhook.last_push_at, webhook.max_batch_events, webhook.max_batch_bytes, webhook.one_event_per_call,
                webhook.bot_token, webhook.plan = 'free', webhook.last_failure
         FROM {schema}.webhooks AS webhook
         WHERE webhook.bot_token = ANY($1) ORDER BY webhook.bot_token FOR NO KEY UPDATE OF webhook"
    );
    let locking = statements.get(client, &statement).await.map_err(doing("preparing"))?;
    let statement = format!(
        "SELECT bot_token, sum(events)::bigint, sum(bytes)::bigint FROM {schema}.events
         WHERE bot_token = ANY($1) GROUP BY bot_token"
    );
    let counting = statements.get(client, &statement).await.map_err(doing("preparing"))?;
    // Sent together, answered in order: one round trip for all.
    let token_parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tokens];
    let ((), ledger_rows, rows, counts) = futures::try_join!(
        connection::begin(client).map_err(doing("beginning a settlement")),
        client.query(&ledger, &parameters).map_err(doing("writing the ledger")),
        client.query(&locking, &token_parameters).map_err(doing("locking webhooks")),
        client.query(&counting, &token_parameters).map_err(doing("counting waiting events")),
    )?;
    let mut first = HashSet::with_capacity(ledger_rows.len());
    for row in ledger_rows {
        first.insert(row.try_get::<_, i64>(0).map_err(doing("reading the ledger"))?);
    }
    let mut waiting = HashMap::with_capacity(counts.len());
    for row in &counts {
        let read = doing("counting waiting events");
        let token: &str = row.try_get(0).map_err(read)?;
        let count = |index| row.try_get::<_, i64>(index).map(|count| usize::try_from(count).unwrap_or(usize::MAX));
        waiting.insert(token, (count(1).map_err(read)?, count(2).map_err(read)?));
    }
    let mut locked = HashMap::with_capacity(rows.len());
    for row in &rows {
        let token: String = row.try_get(8).map_err(doing("reading a webhook"))?;
        let waiting = waiting.get(token.as_str()).copied().unwrap_or_default();
        locked.insert(token, LockedWebhook::from_row(row, waiting)?);
    }

    // Each call by the rules, on its webhook's row: disabled now, or its
    // waiting events dropped (rare, alone), and finished.
    let flushing = lock(&shared.flush).is_some();
    let mut committed = Vec::with_capacity(calls.len());
    let mut settling = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let webhook = locked.get(&*call.bot_token);
        let ours = webhook.is_some_and(|webhook| webhook.claim_id == Some(call.claim_id));
        let outcome = outcomes[index].clone();
        let mut settled =
            Committed { outcome, ours, first: first.contains(&call.claim_id), dropped: None, health: None };
        if let Some(webhook) = webhook.filter(|_| settled.ours && settled.first) {
            let mut row = SettlingWebhook::new(webhook, call, now);
            rules::settle_call(&mut row, &settled.outcome, flushing);
            settled.health =
                Some(Health { failures_in_row: row.failures_in_row, last_failure: row.last_failure.clone() });
            settling.push((index, row));
        }
        committed.push(settled);
    }
    // What the calls delivered leaves, and the outcomes of the calls that
    // did not disable their webhook are written, in one round trip; then
    // (rarely) the waiting events the rules dropped, after the delivered
    // ones left.
    let delivered: Vec<(&str, &Taken)> = settling
        .iter()
        .filter(|(_, row)| row.delivered)
        .map(|(_, row)| (&*row.call.bot_token, &row.call.taken))
        .collect();
    let (disabling, finishing): (Vec<_>, Vec<_>) = settling.into_iter().partition(|(_, row)| row.disabled);
    let removal = Removal::prepare(client, statements, shared).await?;
    let finishing_statement = statements.get(client, &finish_statement(shared)).await.map_err(doing("preparing"))?;
    let writes = futures::future::try_join(
        removal.remove_delivered(client, shared, &delivered),
        finish(client, &finishing_statement, &finishing),
    );
    let drops_events = !disabling.is_empty() || finishing.iter().any(|(_, row)| row.drop_waiting.is_some());
    if !drops_events {
        futures::try_join!(writes, connection::commit(client).map_err(doing("committing a settlement")))?;
        return Ok(committed);
    }
    writes.await?;
    for (index, row) in &finishing {
        if let Some(reason) = row.drop_waiting {
            let dropped = delete_events(client, shared, &row.call.bot_token).await?;
            committed[*index].dropped = Some((reason, dropped));
        }
    }
    for (index, row) in disabling {
        let dropped = disable(client, statements, shared, row.call, &row, now).await?;
        committed[index].dropped = Some((DropReason::Disabled, dropped));
    }
    connection::commit(client).await.map_err(doing("committing a settlement"))?;
    Ok(committed)
}

/// A webhook's locked row as the rules see it while they settle its call
/// ([`StoredWebhook`]): what the row and its events say, and what the rules
/// decide, written back by [`finish`] (or [`disable`]) for all calls at once.
struct SettlingWebhook<'a> {
    row: &'a LockedWebhook,
    call: &'a CallEnded,
    now: DateTime<Utc>,
    /// Whether the call's events leave the queue (`end_call` after a success).
    delivered: bool,
    /// Events waiting, and their bytes, as the rules left them.
    waiting: (usize, usize),
    failures_in_row: u32,
    last_failure: Option<String>,
    disabled: bool,
    drop_waiting: Option<DropReason>,
    due_at: Option<DateTime<Utc>>,
}

impl<'a> SettlingWebhook<'a> {
    fn new(row: &'a LockedWebhook, call: &'a CallEnded, now: DateTime<Utc>) -> SettlingWebhook<'a> {
        SettlingWebhook {
            row,
            call,
            now,
            delivered: false,
            waiting: row.waiting,
            failures_in_row: row.failures_in_row,
            last_failure: row.last_failure.clone(),
            disabled: false,
            drop_waiting: None,
            due_at: None,
        }
    }

    /// The row's schedule with this call as its last push.
    fn schedule(&self) -> Schedule {
        Schedule { last_push_at: Some(self.call.started_at), ..self.row.schedule }
    }
}

impl StoredWebhook for SettlingWebhook<'_> {
    fn failures_in_row(&self) -> u32 {
        self.row.failures_in_row
    }

    fn end_call(&mut self, delivered: bool) {
        self.delivered = delivered;
        if delivered {
            let (events, bytes) = self.waiting;
            self.waiting = (events.saturating_sub(self.call.events), bytes.saturating_sub(self.call.event_bytes));
        }
    }

    fn record_health(&mut self, failures_in_row: u32, failure: Option<&CallOutcome>) {
        self.failures_in_row = failures_in_row;
        if let Some(failure) = failure {
            self.last_failure = Some(failure.to_string());
        }
    }

    fn disable(&mut self) {
        self.disabled = true;
    }

    fn free_plan(&self) -> bool {
        self.row.free_plan
    }

    fn drop_waiting(&mut self, reason: DropReason) {
        self.drop_waiting = Some(reason);
        self.waiting = (0, 0);
    }

    fn waiting(&self) -> (usize, usize) {
        self.waiting
    }

    fn batch_limits(&self) -> (usize, usize) {
        (self.row.max_events, self.row.max_bytes)
    }
}

impl Schedulable for SettlingWebhook<'_> {
    fn push_interval(&self) -> Duration {
        self.row.schedule.interval()
    }

    fn since_last_push(&self) -> Option<Duration> {
        self.schedule().since_last_push(self.now)
    }

    fn until_grid(&self) -> Duration {
        self.schedule().until_grid(self.now)
    }

    fn schedule(&mut self, after: Option<Duration>) {
        self.due_at = after.map(|after| later(self.now, after));
    }
}

/// The two statements that remove what successful calls delivered, for
/// all of them: the rows they took whole, and the delivered head of each
/// row a call ended inside, counted in its `delivered` (its undelivered
/// tail stays, as the webhook's oldest).
struct Removal {
    whole: Statement,
    partial: Statement,
}

impl Removal {
    async fn prepare(transaction: &Client, statements: &mut Statements, shared: &Shared) -> Result<Removal, String> {
        let schema = shared.schema.quoted();
        let whole = format!(
            "DELETE FROM {schema}.events
             WHERE (bot_token, id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))"
        );
        let partial = format!(
            "UPDATE {schema}.events AS run
             SET delivered = run.delivered + taken.events, events = run.events - taken.events,
                 bytes = run.bytes - taken.bytes
             FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::bigint[]) AS taken (bot_token, id, events, bytes)
             WHERE run.bot_token = taken.bot_token AND run.id = taken.id"
        );
        Ok(Removal {
            whole: statements.get(transaction, &whole).await.map_err(doing("preparing"))?,
            partial: statements.get(transaction, &partial).await.map_err(doing("preparing"))?,
        })
    }

    /// Both statements (those with anything to do) in one round trip.
    async fn remove_delivered(
        &self,
        transaction: &Client,
        shared: &Shared,
        delivered: &[(&str, &Taken)],
    ) -> Result<(), String> {
        let (mut tokens, mut ids) = (Vec::new(), Vec::new());
        for (token, taken) in delivered {
            // Forgotten now, even if this settlement is tried again: a kept row only saves a read.
            shared.kept.forget(token, &taken.whole);
            tokens.extend(std::iter::repeat_n(*token, taken.whole.len()));
            ids.extend_from_slice(&taken.whole);
        }
        let parts: Vec<(&str, PartRow)> =
            delivered.iter().filter_map(|(token, taken)| Some((*token, taken.partial?))).collect();
        let part_tokens: Vec<&str> = parts.iter().map(|(token, _)| *token).collect();
        let part_ids: Vec<i64> = parts.iter().map(|(_, part)| part.id).collect();
        let part_events: Vec<i32> = parts.iter().map(|(_, part)| part.events).collect();
        let part_bytes: Vec<i64> = parts.iter().map(|(_, part)| part.bytes).collect();
        let whole = async {
            if ids.is_empty() {
                return Ok(0);
            }
            transaction.execute(&self.whole, &[&tokens, &ids]).await
        };
        let partial = async {
            if parts.is_empty() {
                return Ok(0);
            }
            transaction.execute(&self.partial, &[&part_tokens, &part_ids, &part_events, &part_bytes]).await
        };
        futures::try_join!(whole, partial).map_err(doing("deleting delivered events"))?;
        Ok(())
    }
}

/// Writes what the rules decided for calls that did not disable their
/// webhook, in one statement ([`finish_statement`]): failures in a row, the
/// last failure, the failed call to send again (its events and its id), the
/// last push, the next due time (none when no event waits), and the claim
/// handed back.
async fn finish(
    transaction: &Client,
    statement: &Statement,
    settled: &[(usize, SettlingWebhook<'_>)],
) -> Result<(), String> {
    if settled.is_empty() {
        return Ok(());
    }
    let rows = || settled.iter().map(|(_, row)| row);
    let tokens: Vec<&str> = rows().map(|row| &*row.call.bot_token).collect();
    let failures_in_row: Vec<i32> = rows().map(|row| i32::try_from(row.failures_in_row).unwrap_or(i32::MAX)).collect();
    let last_failures: Vec<Option<&str>> = rows().map(|row| row.last_failure.as_deref()).collect();
    // A failed call (not dropped) is kept to be sent again as it was.
    let retry = |row: &SettlingWebhook<'_>| !row.delivered && row.drop_waiting.is_none();
    let retry_events: Vec<Option<i32>> =
        rows().map(|row| retry(row).then(|| i32::try_from(row.call.events).unwrap_or(i32::MAX))).collect();
    let retry_call_ids: Vec<Option<&str>> = rows().map(|row| retry(row).then_some(row.call.call_id.as_str())).collect();
    let last_pushes: Vec<DateTime<Utc>> = rows().map(|row| row.call.started_at).collect();
    let due_times: Vec<Option<DateTime<Utc>>> = rows().map(|row| row.due_at).collect();
    let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
        [&tokens, &failures_in_row, &last_failures, &retry_events, &retry_call_ids, &last_pushes, &due_times];
    transaction.execute(statement, &parameters).await.map_err(doing("recording the calls' outcomes"))?;
    Ok(())
}

/// The statement of [`finish`].
fn finish_statement(shared: &Shared) -> String {
    let schema = shared.schema.quoted();
    format!(
        "UPDATE {schema}.webhooks AS webhook
         SET failures_in_row = settled.failures_in_row, last_failure = settled.last_failure,
             retry_events = settled.retry_events, retry_call_id = settled.retry_call_id,
             last_push_at = settled.last_push_at, due_at = settled.due_at, claim_id = NULL, lease_until = NULL
         FROM unnest($1::text[], $2::integer[], $3::text[], $4::integer[], $5::text[], $6::timestamptz[],
                     $7::timestamptz[])
             AS settled (bot_token, failures_in_row, last_failure, retry_events, retry_call_id, last_push_at, due_at)
         WHERE webhook.bot_token = settled.bot_token"
    )
}

/// Disables a webhook after its call's failure: drops its events (returned
/// for the observer), records its health and writes its alert, in the
/// settlement's transaction.
async fn disable(
    transaction: &Client,
    statements: &mut Statements,
    shared: &Shared,
    call: &CallEnded,
    settled: &SettlingWebhook<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<Vec<u8>>, String> {
    let failure = settled.last_failure.clone();
    let schema = shared.schema.quoted();
    let dropped = delete_events(transaction, shared, &call.bot_token).await?;
    let alert = WebhookDisabledAlert {
        bot_token: call.bot_token.to_string(),
        account_name: call.config.account_name().to_owned(),
        url: call.config.url().to_string(),
        failures_in_row: settled.failures_in_row,
        last_failure: failure.clone().unwrap_or_default(),
        disabled_at: now,
    };
    let failures = i32::try_from(settled.failures_in_row).unwrap_or(i32::MAX);
    let statement = format!(
        "UPDATE {schema}.webhooks SET disabled = true, failures_in_row = $2, last_failure = $3,
             retry_events = NULL, retry_call_id = NULL, last_push_at = $4, due_at = NULL,
             claim_id = NULL, lease_until = NULL
         WHERE bot_token = $1"
    );
    let statement = statements.get(transaction, &statement).await.map_err(doing("preparing"))?;
    transaction
        .execute(&statement, &[&&*call.bot_token, &failures, &failure, &call.started_at])
        .await
        .map_err(doing("disabling a webhook"))?;
    let statement = format!("INSERT INTO {schema}.alerts (bot_token, payload) VALUES ($1, $2)");
    let statement = statements.get(transaction, &statement).await.map_err(doing("preparing"))?;
    transaction
        .execute(&statement, &[&&*call.bot_token, &alert_payload(&alert)])
        .await
        .map_err(doing("writing an alert"))?;
    Ok(dropped)
}

/// A webhook's row as a settlement reads it, locked, with its waiting events.
struct LockedWebhook {
    failures_in_row: u32,
    last_failure: Option<String>,
    claim_id: Option<i64>,
    schedule: Schedule,
    max_events: usize,
    max_bytes: usize,
    free_plan: bool,
    /// Its events (those of the call being settled included) and their bytes.
    waiting: (usize, usize),
}

impl LockedWebhook {
    /// From `failures_in_row, claim_id, anchor_at, push_interval_ms,
    /// last_push_at, max_batch_events, max_batch_bytes, one_event_per_call,
    /// bot_token, plan = 'free', last_failure`, and the waiting events and bytes.
    fn from_row(row: &Row, waiting: (usize, usize)) -> Result<LockedWebhook, String> {
        let read = doing("reading a webhook");
        let max_batch_events: i32 = row.try_get(5).map_err(read)?;
        let max_batch_bytes: i64 = row.try_get(6).map_err(read)?;
        let (max_events, max_bytes) = rules::batch_limits(
            row.try_get(7).map_err(read)?,
            usize::try_from(max_batch_events).unwrap_or(1),
            usize::try_from(max_batch_bytes).unwrap_or(usize::MAX),
        );
        Ok(LockedWebhook {
            failures_in_row: u32::try_from(row.try_get::<_, i32>(0).map_err(read)?).unwrap_or_default(),
            claim_id: row.try_get(1).map_err(read)?,
            schedule: Schedule {
                anchor_at: row.try_get(2).map_err(read)?,
                push_interval_ms: row.try_get(3).map_err(read)?,
                last_push_at: row.try_get(4).map_err(read)?,
            },
            max_events,
            max_bytes,
            free_plan: row.try_get(9).map_err(read)?,
            last_failure: row.try_get(10).map_err(read)?,
            waiting,
        })
    }
}

/// Counts a committed settlement here and tells the observer of the call
/// (in this process, once) and of the events its disabling dropped.
fn apply(shared: &Shared, call: &CallEnded, mut committed: Committed) {
    let in_call = call.events as u64;
    shared.in_flight.fetch_sub(in_call, Ordering::Relaxed);
    let delivered = committed.outcome.is_success();
    let disabled = committed.disabled();
    let webhook = shared.webhook(&call.bot_token);
    // Health first: a host that sees the call counted sees its health too.
    if let Some(webhook) = &webhook {
        webhook.live.settled(disabled, committed.health.take());
    }
    if disabled {
        shared.alert_written.store(true, Ordering::Release);
    }
    // A webhook removed here meanwhile counts its call among the retired counts.
    let counters = webhook.as_ref().map_or(&shared.retired, |webhook| &webhook.live.counters);
    if committed.first {
        counters.calls.fetch_add(1, Ordering::Relaxed);
        if !delivered {
            counters.calls_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    if delivered && committed.ours && committed.first {
        counters.delivered.fetch_add(in_call, Ordering::Relaxed);
    }
    if let Some(webhook) = webhook {
        let counters = &webhook.live.counters;
        counters.in_flight.fetch_sub(in_call.min(counters.in_flight.load(Ordering::Relaxed)), Ordering::Relaxed);
        if delivered && committed.ours && committed.first {
            let pending = webhook.live.pending_in_database.load(Ordering::Relaxed);
            webhook.live.pending_in_database.store(pending.saturating_sub(in_call), Ordering::Relaxed);
        }
        if let Some((reason, dropped)) = committed.dropped.as_ref().filter(|(_, dropped)| !dropped.is_empty()) {
            count_dropped(shared, Some(&webhook), &call.bot_token, *reason, decode(dropped));
        }
    }
    if committed.first {
        shared.observer.call_made(&CallRecord {
            bot_token: Arc::clone(&call.bot_token),
            account_name: call.endpoint.account_name.clone(),
            url: call.endpoint.url.clone(),
            events: call.events,
            bytes: call.bytes,
            duration: call.duration,
            outcome: committed.outcome,
        });
    }
    if disabled {
        shared.delivery_wake.notify_one();
    }
}

fn alert_payload(alert: &WebhookDisabledAlert) -> serde_json::Value {
    serde_json::json!({
        "bot_token": alert.bot_token,
        "account_name": alert.account_name,
        "url": alert.url,
        "failures_in_row": alert.failures_in_row,
        "last_failure": alert.last_failure,
        "disabled_at": alert.disabled_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
    })
}

fn alert_from_payload(payload: &serde_json::Value) -> Option<WebhookDisabledAlert> {
    let text = |field: &str| payload.get(field).and_then(serde_json::Value::as_str).map(str::to_owned);
    Some(WebhookDisabledAlert {
        bot_token: text("bot_token")?,
        account_name: text("account_name")?,
        url: text("url")?,
        failures_in_row: u32::try_from(payload.get("failures_in_row")?.as_u64()?).ok()?,
        last_failure: text("last_failure")?,
        disabled_at: DateTime::parse_from_rfc3339(&text("disabled_at")?).ok()?.with_timezone(&Utc),
    })
}

/// Takes undelivered alerts under a lease, hands each to the sink and
/// marks it delivered: once per alert, unless this process dies between the
/// two (then another delivers it again, with the same id).
async fn deliver_alerts(shared: &Shared, session: &mut Session) -> Result<(), String> {
    let schema = shared.schema.quoted();
    let now = shared.now();
    let statement = format!(
        "UPDATE {schema}.alerts SET lease_until = $2 WHERE id IN (
             SELECT id FROM {schema}.alerts
             WHERE delivered_at IS NULL AND (lease_until IS NULL OR lease_until <= $1)
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
         RETURNING id, payload"
    );
    let statement = session.prepared(&statement).await.map_err(doing("preparing"))?;
    let rows = session
        .client
        .query(&statement, &[&now, &later(now, ALERT_LEASE), &CLAIM_LIMIT])
        .await
        .map_err(doing("taking alerts"))?;
    for row in rows {
        let read = doing("reading an alert");
        let id: i64 = row.try_get(0).map_err(read)?;
        let payload: serde_json::Value = row.try_get(1).map_err(read)?;
        if let Some(alert) = alert_from_payload(&payload) {
            shared.alert_sink.webhook_disabled(&alert);
        }
        let statement = format!("UPDATE {schema}.alerts SET delivered_at = $2 WHERE id = $1");
        let statement = session.prepared(&statement).await.map_err(doing("preparing"))?;
        session.client.execute(&statement, &[&id, &now]).await.map_err(doing("marking an alert"))?;
    }
    Ok(())
}

async fn prune_ledger(shared: &Shared, client: &Client) -> Result<(), String> {
    let cutoff =
        shared.now() - chrono::Duration::from_std(shared.options.ledger_retention).unwrap_or(chrono::Duration::MAX);
    let statement = format!("DELETE FROM {}.calls WHERE ended_at < $1", shared.schema.quoted());
    client.execute(&statement, &[&cutoff]).await.map_err(doing("pruning the ledger"))?;
    Ok(())
}

/// The cluster-wide flush of [`PostgresDispatcher::flush`](super::PostgresDispatcher).
pub(crate) async fn flush(shared: &Shared, timeout: Duration) -> Result<(), FlushError> {
    let deadline = tokio::time::Instant::now() + timeout;
    shared.wait_durable(deadline).await.map_err(|error| match error {
        StoreError::TimedOut { buffered, .. } => {
            FlushError::TimedOut { pending: buffered as u64, webhooks: Vec::new() }
        }
        _ => FlushError::Closed,
    })?;
    *lock(&shared.flush) = Some(Flush);
    let result = flush_committed(shared, deadline).await;
    *lock(&shared.flush) = None;
    result
}

async fn flush_committed(shared: &Shared, deadline: tokio::time::Instant) -> Result<(), FlushError> {
    let database =
        |error: tokio_postgres::Error| FlushError::StoreUnavailable(connection::describe("flushing", &error));
    let client = shared.query_client().await.map_err(database)?;
    let schema = shared.schema.quoted();
    let started_at = shared.now();
    let row =
        client.query_one(&format!("SELECT coalesce(max(id), 0) FROM {schema}.events"), &[]).await.map_err(database)?;
    let newest: i64 = row.try_get(0).map_err(database)?;
    // Locked in token order first, as every writer of these rows locks them.
    let statement = format!(
        "UPDATE {schema}.webhooks AS webhook SET due_at = $1
         FROM (SELECT held.bot_token FROM {schema}.webhooks AS held
               WHERE NOT held.disabled AND held.plan = 'paid' AND (held.due_at IS NULL OR held.due_at > $1)
                 AND EXISTS (SELECT 1 FROM {schema}.events AS event WHERE event.bot_token = held.bot_token)
               ORDER BY held.bot_token FOR NO KEY UPDATE OF held) AS locked
         WHERE webhook.bot_token = locked.bot_token"
    );
    client.execute(&statement, &[&started_at]).await.map_err(database)?;
    shared.delivery_wake.notify_one();
    // A webhook is done when none of its events from before the flush are
    // left, or when a call of it failed since the flush began.
    let statement = format!(
        "SELECT webhook.bot_token, sum(event.events)::bigint, webhook.disabled, webhook.last_failure,
                webhook.failures_in_row > 0 AND webhook.last_push_at >= $2
         FROM {schema}.events AS event JOIN {schema}.webhooks AS webhook USING (bot_token)
         WHERE event.id <= $1
         GROUP BY webhook.bot_token ORDER BY webhook.bot_token"
    );
    loop {
        let rows = client.query(&statement, &[&newest, &started_at]).await.map_err(database)?;
        let mut pending = 0;
        let mut stalled = Vec::new();
        let mut failed = 0;
        for row in &rows {
            let count: i64 = row.try_get(1).map_err(database)?;
            let disabled: bool = row.try_get(2).map_err(database)?;
            let failed_since: bool = row.try_get(4).map_err(database)?;
            let undelivered = u64::try_from(count).unwrap_or_default();
            pending += undelivered;
            failed += usize::from(disabled || failed_since);
            stalled.push(StalledWebhook {
                bot_token: row.try_get(0).map_err(database)?,
                state: if disabled { WebhookState::Disabled } else { WebhookState::Active },
                undelivered,
                last_failure: row.try_get(3).map_err(database)?,
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        if failed == rows.len() {
            return Err(FlushError::Incomplete { pending, webhooks: stalled });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(FlushError::TimedOut { pending, webhooks: stalled });
        }
        shared.delivery_wake.notify_one();
        tokio::time::sleep(Duration::from_millis(10).min(shared.options.poll_interval)).await;
    }
}
