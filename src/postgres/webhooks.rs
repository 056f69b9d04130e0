//! The webhooks' settings in the `webhooks` table: saved from, and loaded
//! back into, [`WebhookConfig`]s, with each row's health and generation.
//!
//! Loading builds every config through [`WebhookConfig::builder`], so a row
//! obeys exactly the rules a configured webhook does, written once there.
//! The columns hold what the builder takes: durations in whole
//! milliseconds, the selected kinds as [`EventFlags`] bits (bit `n` is the
//! kind whose wire code is `n`), the plan as `free` or `paid`, the secrets as
//! their text (`whsec_...` for signing secrets).

use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use super::schema::PostgresSchema;
use super::timestamps::later;
use crate::config::{ConfigError, Plan, WebhookConfig};
use crate::dispatch::rules;
use crate::error_text::shortened;
use crate::event::{EventFlags, EventKind};

/// A webhook as its row holds it: the settings, their health and generation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredWebhook {
    /// The settings, checked by [`WebhookConfig::builder`] as they were read.
    pub config: WebhookConfig,
    /// Whether the webhook is disabled (after the 11th failed call in a row).
    pub disabled: bool,
    /// The failed calls in a row since the last success or save.
    pub failures_in_row: u32,
    /// What the last failed call met, if a call failed since the last save.
    pub last_failure: Option<String>,
    /// Bumped by the database whenever the settings or `disabled` change, so
    /// a process can tell the row was reconfigured since it last read it.
    pub generation: u64,
}

/// What went wrong saving, loading or removing a webhook, and for which bot.
///
/// Never holds a secret: database errors keep only their SQLSTATE and
/// primary message (a PostgreSQL `DETAIL` can quote the whole row, secret
/// included), and [`ConfigError`]s never hold one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookStoreError {
    /// The database refused or could not run a statement.
    #[error("{operation}{}: {message}", for_bot(bot_token))]
    Database {
        /// What was being done, e.g. `saving the webhook`.
        operation: &'static str,
        /// The bot concerned, when the statement was about one.
        bot_token: Option<String>,
        /// The SQLSTATE, when the database answered with an error.
        code: Option<SqlState>,
        /// The database's primary message (never its `DETAIL`), or the client's error.
        message: String,
    },
    /// A setting that the table's column cannot hold as it is.
    #[error("cannot save the webhook of bot {bot_token:?}: column {column}: {reason}")]
    Unstorable {
        /// The bot (shortened when long).
        bot_token: String,
        /// The column, e.g. `push_interval_ms`.
        column: &'static str,
        /// Why the value does not fit.
        reason: &'static str,
    },
    /// A row whose settings [`WebhookConfig::builder`] refuses, e.g. after an
    /// edit by hand in SQL.
    #[error("the stored webhook of bot {bot_token:?} is invalid: column {column}: {source}")]
    InvalidRow {
        /// The row's bot token (shortened when long).
        bot_token: String,
        /// The column holding the refused value.
        column: &'static str,
        /// The builder's verdict.
        #[source]
        source: ConfigError,
    },
    /// A row holding a value that is no setting at all (a negative count, an
    /// unknown plan or event kind), so the builder cannot even be given it.
    #[error("the stored webhook of bot {bot_token:?} is invalid: column {column}: {reason}")]
    UnreadableRow {
        /// The row's bot token (shortened when long).
        bot_token: String,
        /// The column holding the value.
        column: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn for_bot(bot_token: &Option<String>) -> String {
    bot_token.as_ref().map(|token| format!(" for bot {token:?}")).unwrap_or_default()
}

impl WebhookStoreError {
    fn database<'a>(
        operation: &'static str,
        bot_token: Option<&'a str>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Self + 'a {
        move |error| {
            let (code, message) = match error.as_db_error() {
                Some(db) => (Some(db.code().clone()), format!("{}: {}", db.severity(), db.message())),
                None => (error.code().cloned(), error.to_string()),
            };
            WebhookStoreError::Database { operation, bot_token: bot_token.map(shortened), code, message }
        }
    }
}

/// The setting columns, in the order [`save_webhook`] binds them and
/// [`webhook_from_row`] reads them.
const SETTING_COLUMNS: [&str; 15] = [
    "bot_token",
    "account_name",
    "url",
    "secret",
    "signing_secrets",
    "events",
    "plan",
    "push_interval_ms",
    "max_batch_events",
    "max_batch_bytes",
    "one_event_per_call",
    "request_timeout_ms",
    "queue_capacity",
    "accept_any_2xx",
    "included_variables",
];

/// Writes `config` into its bot's row, inserting the row or updating every
/// setting column of it, and returns the row's generation afterwards.
///
/// Saving re-enables the webhook, as saving the bot's settings does on the
/// platform: `disabled` becomes false, `failures_in_row` 0 and
/// `last_failure` NULL. The schedule (`due_at`), the lease of a call under
/// way (`claim_id`, `lease_until`) and the queued events are left as they
/// are. The generation is bumped when a setting or `disabled` changed, and
/// the change is announced on [`PostgresSchema::webhooks_channel`].
///
/// A duration that is not a whole number of milliseconds, or a count too
/// large for its column, is refused rather than rounded, so what loads is
/// what was saved.
///
/// Called in a transaction, it first takes the webhook's advisory lock until
/// the transaction ends, as the dispatchers' commits do for every webhook
/// they configure or remove ([`remove_webhook`] too): a transaction that
/// saves or removes several webhooks in bot-token order then never waits
/// for a dispatcher's commit in a cycle, even for webhooks not yet stored.
pub async fn save_webhook(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    config: &WebhookConfig,
) -> Result<u64, WebhookStoreError> {
    lock_webhooks(client, schema, &[config.bot_token()]).await?;
    save_webhook_at(client, schema, config, chrono::Utc::now()).await
}

/// Takes the advisory locks of the webhooks of `bot_tokens` (in bot-token
/// order, without repeats) until the transaction ends.
///
/// Whoever saves or removes webhooks takes these first, in bot-token order,
/// so that two transactions writing the same webhooks wait for each other
/// in that order: row locks alone would not do it for webhooks not stored
/// yet, whose inserts wait for each other in the order of the writes (a
/// deadlock, broken by the server only after `deadlock_timeout`).
pub(crate) async fn lock_webhooks(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    bot_tokens: &[&str],
) -> Result<(), WebhookStoreError> {
    let keys: Vec<i64> = bot_tokens.iter().map(|token| schema.advisory_lock_key("webhook", Some(token))).collect();
    // `unnest` yields the keys in the array's order, so they are locked in it.
    client
        .execute("SELECT pg_advisory_xact_lock(key) FROM unnest($1::bigint[]) AS key", &[&keys])
        .await
        // Named only when it is the one: the first of several is not the one that failed.
        .map_err(WebhookStoreError::database(
            "locking the webhooks",
            bot_tokens.first().copied().filter(|_| bot_tokens.len() == 1),
        ))?;
    Ok(())
}

/// [`save_webhook`] as of `now` (the dispatcher's clock): the webhook's grid
/// of push times starts at `now` plus its phase, as in memory.
pub(crate) async fn save_webhook_at(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    config: &WebhookConfig,
    now: DateTime<Utc>,
) -> Result<u64, WebhookStoreError> {
    let unstorable =
        |column, reason| WebhookStoreError::Unstorable { bot_token: shortened(config.bot_token()), column, reason };
    let milliseconds = |column, duration: Duration| {
        if !duration.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(unstorable(column, "it is not a whole number of milliseconds"));
        }
        i64::try_from(duration.as_millis())
            .map_err(|_| unstorable(column, "it is too long for a bigint of milliseconds"))
    };
    let integer = |column, value: usize| {
        i32::try_from(value).map_err(|_| unstorable(column, "it is larger than an integer column holds"))
    };
    let push_interval_ms = milliseconds("push_interval_ms", config.push_interval())?;
    let request_timeout_ms = milliseconds("request_timeout_ms", config.request_timeout())?;
    let max_batch_events = integer("max_batch_events", config.max_batch_events())?;
    let queue_capacity = integer("queue_capacity", config.queue_capacity())?;
    let max_batch_bytes = i64::try_from(config.max_batch_bytes())
        .map_err(|_| unstorable("max_batch_bytes", "it is larger than a bigint column holds"))?;
    let signing_secrets: Vec<String> = config.signing_secrets().iter().map(|secret| secret.expose()).collect();
    let included_variables: Vec<&str> = config.included_variables().iter().collect();
    let url = config.url().to_string();
    let anchor_at = later(now, rules::phase(config.bot_token(), config.push_interval()));

    let columns = format!("{}, anchor_at", SETTING_COLUMNS.join(", "));
    let placeholders: Vec<String> = (1..=SETTING_COLUMNS.len() + 1).map(|index| format!("${index}")).collect();
    let updates: Vec<String> =
        SETTING_COLUMNS[1..].iter().map(|column| format!("{column} = EXCLUDED.{column}")).collect();
    let statement = format!(
        "INSERT INTO {schema}.webhooks ({columns}) VALUES ({placeholders})
         ON CONFLICT (bot_token) DO UPDATE SET {updates}, anchor_at = EXCLUDED.anchor_at,
             disabled = false, failures_in_row = 0, last_failure = NULL,
             retry_events = NULL, retry_call_id = NULL
         RETURNING generation",
        schema = schema.quoted(),
        placeholders = placeholders.join(", "),
        updates = updates.join(", "),
    );
    let row = client
        .query_one(
            &statement,
            &[
                &config.bot_token(),
                &config.account_name(),
                &url,
                &config.secret().expose(),
                &signing_secrets,
                &event_bits(config.events()),
                &plan_text(config.plan()),
                &push_interval_ms,
                &max_batch_events,
                &max_batch_bytes,
                &config.one_event_per_call(),
                &request_timeout_ms,
                &queue_capacity,
                &config.accept_any_2xx(),
                &included_variables,
                &anchor_at,
            ],
        )
        .await
        .map_err(WebhookStoreError::database("saving the webhook", Some(config.bot_token())))?;
    let generation: i64 = row
        .try_get(0)
        .map_err(WebhookStoreError::database("reading the saved generation", Some(config.bot_token())))?;
    // The column starts at 1 and only grows.
    Ok(u64::try_from(generation).unwrap_or_default())
}

/// Deletes the row of bot `bot_token`; its queued events go with it (the
/// `events` table's foreign key cascades), its billing rows and alerts stay.
/// Takes the webhook's advisory lock first, as [`save_webhook`] does.
/// Returns whether there was a row. The deletion is announced on
/// [`PostgresSchema::webhooks_channel`].
pub async fn remove_webhook(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    bot_token: &str,
) -> Result<bool, WebhookStoreError> {
    lock_webhooks(client, schema, &[bot_token]).await?;
    let removed = client
        .execute(&format!("DELETE FROM {}.webhooks WHERE bot_token = $1", schema.quoted()), &[&bot_token])
        .await
        .map_err(WebhookStoreError::database("removing the webhook", Some(bot_token)))?;
    Ok(removed > 0)
}

/// Every stored webhook, in bot-token order. The first row that does not
/// make a valid [`WebhookConfig`] fails the whole load, naming its bot and
/// column.
pub async fn load_webhooks(
    client: &impl GenericClient,
    schema: &PostgresSchema,
) -> Result<Vec<StoredWebhook>, WebhookStoreError> {
    let rows = client
        .query(&format!("{} ORDER BY bot_token", select_statement(schema)), &[])
        .await
        .map_err(WebhookStoreError::database("loading the webhooks", None))?;
    rows.iter().map(webhook_from_row).collect()
}

/// The stored webhook of bot `bot_token`, or `None` when it has no row.
pub async fn load_webhook(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    bot_token: &str,
) -> Result<Option<StoredWebhook>, WebhookStoreError> {
    let row = client
        .query_opt(&format!("{} WHERE bot_token = $1", select_statement(schema)), &[&bot_token])
        .await
        .map_err(WebhookStoreError::database("loading the webhook", Some(bot_token)))?;
    row.as_ref().map(webhook_from_row).transpose()
}

/// The stored webhooks of `bot_tokens` that have a row, in one statement (a
/// process joining a cluster loads thousands at once).
pub(crate) async fn load_webhooks_of(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    bot_tokens: &[&str],
) -> Result<Vec<StoredWebhook>, WebhookStoreError> {
    let rows = client
        .query(&format!("{} WHERE bot_token = ANY($1)", select_statement(schema)), &[&bot_tokens])
        .await
        .map_err(WebhookStoreError::database("loading the changed webhooks", None))?;
    rows.iter().map(webhook_from_row).collect()
}

fn select_statement(schema: &PostgresSchema) -> String {
    format!(
        "SELECT {}, disabled, failures_in_row, last_failure, generation FROM {}.webhooks",
        SETTING_COLUMNS.join(", "),
        schema.quoted()
    )
}

/// A row of [`select_statement`] as a [`StoredWebhook`], its settings checked by the builder.
pub(crate) fn webhook_from_row(row: &Row) -> Result<StoredWebhook, WebhookStoreError> {
    let bot_token: String =
        row.try_get("bot_token").map_err(WebhookStoreError::database("reading a webhook's bot_token", None))?;
    let get = |column| WebhookStoreError::database(column, Some(&bot_token));
    let unreadable =
        |column, reason| WebhookStoreError::UnreadableRow { bot_token: shortened(&bot_token), column, reason };
    let count = |column, value: i64| usize::try_from(value).map_err(|_| unreadable(column, "it is negative"));
    let duration = |column, value: i64| {
        u64::try_from(value).map(Duration::from_millis).map_err(|_| unreadable(column, "it is negative"))
    };

    let account_name: String = row.try_get("account_name").map_err(get("reading column account_name"))?;
    let url: String = row.try_get("url").map_err(get("reading column url"))?;
    let secret: String = row.try_get("secret").map_err(get("reading column secret"))?;
    let signing_secrets: Vec<String> = row.try_get("signing_secrets").map_err(get("reading column signing_secrets"))?;
    let events: i32 = row.try_get("events").map_err(get("reading column events"))?;
    let plan: String = row.try_get("plan").map_err(get("reading column plan"))?;
    let push_interval_ms: i64 = row.try_get("push_interval_ms").map_err(get("reading column push_interval_ms"))?;
    let max_batch_events: i32 = row.try_get("max_batch_events").map_err(get("reading column max_batch_events"))?;
    let max_batch_bytes: i64 = row.try_get("max_batch_bytes").map_err(get("reading column max_batch_bytes"))?;
    let one_event_per_call: bool =
        row.try_get("one_event_per_call").map_err(get("reading column one_event_per_call"))?;
    let request_timeout_ms: i64 =
        row.try_get("request_timeout_ms").map_err(get("reading column request_timeout_ms"))?;
    let queue_capacity: i32 = row.try_get("queue_capacity").map_err(get("reading column queue_capacity"))?;
    let accept_any_2xx: bool = row.try_get("accept_any_2xx").map_err(get("reading column accept_any_2xx"))?;
    let included_variables: Vec<String> =
        row.try_get("included_variables").map_err(get("reading column included_variables"))?;
    let disabled: bool = row.try_get("disabled").map_err(get("reading column disabled"))?;
    let failures_in_row: i32 = row.try_get("failures_in_row").map_err(get("reading column failures_in_row"))?;
    let last_failure: Option<String> = row.try_get("last_failure").map_err(get("reading column last_failure"))?;
    let generation: i64 = row.try_get("generation").map_err(get("reading column generation"))?;

    let config = WebhookConfig::builder(bot_token.as_str(), account_name, url, secret)
        .signing_secrets(signing_secrets)
        .events(event_flags(events).ok_or_else(|| unreadable("events", "it holds a bit that is no event kind"))?)
        .plan(plan_from_text(&plan).ok_or_else(|| unreadable("plan", "it is neither `free` nor `paid`"))?)
        .push_interval(duration("push_interval_ms", push_interval_ms)?)
        .max_batch_events(count("max_batch_events", max_batch_events.into())?)
        .max_batch_bytes(count("max_batch_bytes", max_batch_bytes)?)
        .one_event_per_call(one_event_per_call)
        .request_timeout(duration("request_timeout_ms", request_timeout_ms)?)
        .queue_capacity(count("queue_capacity", queue_capacity.into())?)
        .accept_any_2xx(accept_any_2xx)
        .include_variables(included_variables)
        .build()
        .map_err(|source| WebhookStoreError::InvalidRow {
            bot_token: shortened(&bot_token),
            column: column_of(&source),
            source,
        })?;
    Ok(StoredWebhook {
        config,
        disabled,
        failures_in_row: u32::try_from(failures_in_row).map_err(|_| unreadable("failures_in_row", "it is negative"))?,
        last_failure,
        generation: u64::try_from(generation).map_err(|_| unreadable("generation", "it is negative"))?,
    })
}

/// The column whose value the builder refused with `error`.
fn column_of(error: &ConfigError) -> &'static str {
    match error {
        ConfigError::InvalidBotToken { .. } => "bot_token",
        ConfigError::InvalidAccountName { .. } => "account_name",
        ConfigError::InvalidUrl { .. } => "url",
        ConfigError::InvalidSecret { .. } => "secret",
        ConfigError::InvalidSigningSecret { .. } => "signing_secrets",
        ConfigError::InvalidVariableName { .. } | ConfigError::TooManyVariables { .. } => "included_variables",
        ConfigError::OutOfRange { setting, .. } => match *setting {
            "push_interval" => "push_interval_ms",
            "request_timeout" => "request_timeout_ms",
            "max_batch_events" => "max_batch_events",
            "max_batch_bytes" => "max_batch_bytes",
            "queue_capacity" => "queue_capacity",
            // A setting added to the builder without a column here.
            _ => "settings",
        },
        // Not returned by `build`, which makes no secret and needs no part.
        ConfigError::NoRandomness { .. } | ConfigError::MissingPart { .. } | ConfigError::DefaultPart { .. } => {
            "settings"
        }
    }
}

/// `events` as the `events` column's bits: bit `n` for the kind with wire code `n`.
fn event_bits(events: EventFlags) -> i32 {
    events.iter().fold(0, |bits, kind| bits | (1 << kind.code()))
}

/// The `events` column's bits as flags, or `None` if a bit names no kind.
fn event_flags(bits: i32) -> Option<EventFlags> {
    let flags: EventFlags = EventKind::ALL.into_iter().filter(|kind| bits & (1 << kind.code()) != 0).collect();
    (event_bits(flags) == bits).then_some(flags)
}

fn plan_text(plan: Plan) -> &'static str {
    match plan {
        Plan::Free => "free",
        Plan::Paid => "paid",
    }
}

fn plan_from_text(text: &str) -> Option<Plan> {
    [Plan::Free, Plan::Paid].into_iter().find(|plan| plan_text(*plan) == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bits_round_trip_and_unknown_bits_are_refused() {
        for flags in [EventFlags::all(), EventFlags::none(), EventFlags::from_kinds([EventKind::WrongAnswer])] {
            assert_eq!(event_flags(event_bits(flags)), Some(flags));
        }
        assert_eq!(event_bits(EventFlags::all()), (1 << 14) - 1);
        assert_eq!(event_flags(1 << 14), None);
        assert_eq!(event_flags(-1), None);
    }

    #[test]
    fn plans_round_trip_through_their_text() {
        for plan in [Plan::Free, Plan::Paid] {
            assert_eq!(plan_from_text(plan_text(plan)), Some(plan));
        }
        assert_eq!(plan_from_text("Paid"), None);
    }
}
