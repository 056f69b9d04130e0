//! Keeps this process's copy of the webhooks' settings, health and pending
//! counts in step with the database: at once on the `webhooks` table's
//! NOTIFY, and every poll interval in any case (a NOTIFY can be missed
//! while the connection is down).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_postgres::Client;

use super::connection::{self, doing, FIRST_RETRY_DELAY};
use super::dispatcher::{lock, Health, LocalWebhook, Shared};
use super::webhooks::load_webhooks_of;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut client: Option<Client> = None;
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let wait = match listen_and_refresh(&shared, &mut client).await {
            Ok(()) => {
                delay = FIRST_RETRY_DELAY;
                shared.options.poll_interval
            }
            Err(error) => {
                shared.database_state(Some(error));
                if client.as_ref().is_some_and(Client::is_closed) {
                    client = None;
                }
                delay = connection::next_delay(delay);
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.sync_wake.notified() => {}
        }
    }
}

async fn listen_and_refresh(shared: &Arc<Shared>, client: &mut Option<Client>) -> Result<(), String> {
    if client.is_none() {
        let woken = Arc::downgrade(shared);
        let connected = connection::connect(&shared.database, move || {
            if let Some(shared) = woken.upgrade() {
                shared.sync_wake.notify_one();
            }
        })
        .await
        .map_err(doing("connecting to listen"))?;
        let channel = shared.schema.webhooks_channel().replace('"', "\"\"");
        connected.batch_execute(&format!("LISTEN \"{channel}\"")).await.map_err(doing("listening for settings"))?;
        *client = Some(connected);
    }
    let Some(client) = client.as_ref() else { return Err("no connection".to_owned()) };
    refresh(shared, client).await
}

/// Reads every webhook's generation, health and pending count; loads the
/// settings of those whose generation this process has not seen; forgets
/// those removed.
pub(crate) async fn refresh(shared: &Shared, client: &Client) -> Result<(), String> {
    let schema = shared.schema.quoted();
    // What this process had committed and settled before the read: a
    // webhook whose settings it commits during the read is new to the
    // database, not removed; health it settles during the read is newer
    // than the read's.
    let before: HashMap<Arc<str>, (u64, u64)> = shared
        .webhooks
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|(token, webhook)| {
            let settlements = webhook.live.settlements.load(Ordering::Relaxed);
            (Arc::clone(token), (webhook.generation.load(Ordering::Relaxed), settlements))
        })
        .collect();
    let settlements_before = |token: &str| before.get(token).map(|(_, settlements)| *settlements);
    let statement = format!(
        "SELECT webhook.bot_token, webhook.generation, webhook.disabled, webhook.failures_in_row,
                webhook.last_failure, coalesce(pending.events, 0)
         FROM {schema}.webhooks AS webhook
         LEFT JOIN (SELECT bot_token, sum(events)::bigint AS events FROM {schema}.events GROUP BY bot_token) AS pending
             USING (bot_token)"
    );
    let rows = client.query(&statement, &[]).await.map_err(doing("reading webhooks"))?;
    let mut in_database = HashSet::with_capacity(rows.len());
    let mut changed = HashMap::new();
    for row in &rows {
        let read = doing("reading a webhook");
        let token: String = row.try_get(0).map_err(read)?;
        let generation = u64::try_from(row.try_get::<_, i64>(1).map_err(read)?).unwrap_or_default();
        let disabled: bool = row.try_get(2).map_err(read)?;
        let failures_in_row = u32::try_from(row.try_get::<_, i32>(3).map_err(read)?).unwrap_or_default();
        let last_failure: Option<String> = row.try_get(4).map_err(read)?;
        let pending = u64::try_from(row.try_get::<_, i64>(5).map_err(read)?).unwrap_or_default();
        match shared.webhook(&token) {
            Some(webhook) if webhook.generation.load(Ordering::Relaxed) >= generation => {
                webhook.live.pending_in_database.store(pending, Ordering::Relaxed);
                webhook.live.polled(settlements_before(&token), disabled, Health { failures_in_row, last_failure });
            }
            _ => {
                changed.insert(token.clone(), (pending, Health { failures_in_row, last_failure }));
            }
        }
        in_database.insert(token);
    }
    // A webhook removed since the first read has no row here: the next refresh forgets it.
    let mut loaded = Vec::with_capacity(changed.len());
    if !changed.is_empty() {
        let tokens: Vec<&str> = changed.keys().map(String::as_str).collect();
        let stored = load_webhooks_of(client, &shared.schema, &tokens).await.map_err(|error| error.to_string())?;
        for webhook in stored {
            if let Some((pending, health)) = changed.remove(webhook.config.bot_token()) {
                loaded.push((webhook, pending, health));
            }
        }
    }
    let removing = lock(&shared.removing);
    let mut webhooks = shared.webhooks.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (stored, pending, health) in loaded {
        let token = stored.config.shared_bot_token();
        if removing.contains(&*token) {
            continue;
        }
        let webhook = match webhooks.get(&*token) {
            // Settings saved here but not committed yet stay until their commit.
            Some(old) if old.generation.load(Ordering::Relaxed) == 0 => continue,
            Some(old) => old.reconfigured(stored.config, stored.generation, stored.disabled),
            None => LocalWebhook::new(stored.config, stored.generation, stored.disabled),
        };
        webhook.live.pending_in_database.store(pending, Ordering::Relaxed);
        webhook.live.polled(settlements_before(&token), stored.disabled, health);
        webhooks.insert(token, Arc::new(webhook));
    }
    // Removed by another process; not one configured here and still on its
    // way (generation 0), or committed here since the read.
    webhooks.retain(|token, webhook| {
        let generation = webhook.generation.load(Ordering::Relaxed);
        let committed_since = before.get(token).map(|(committed, _)| *committed) != Some(generation);
        let keep = in_database.contains(&**token) || generation == 0 || committed_since;
        if !keep {
            shared.retired.absorb(&webhook.live.counters.snapshot());
        }
        keep
    });
    Ok(())
}
