//! The store shared by several bot-engine processes, on PostgreSQL
//! (feature `postgres`): [`PostgresDispatcher`], the [`Dispatcher`](crate::dispatch::Dispatcher)
//! of one process of such a cluster, and the schema it stands on: versioned
//! migrations shipped in the crate and the explicit call that applies them.
//!
//! Every process's dispatcher works on one schema of the PostgreSQL the host
//! already runs: the webhooks' settings, queues, due times, leases, health,
//! the billing ledger, the alerts and the returning-user gate live there, so
//! the platform's rules hold per bot over the whole cluster, and a crash
//! loses nothing committed. The rules are the in-memory dispatcher's, applied
//! by the same functions; [`PostgresDispatcher`] says how each holds across
//! processes.
//!
//! ```no_run
//! use eventhook::postgres::{migrate, PostgresSchema};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut client, connection) =
//!     tokio_postgres::connect("postgres://eventhook@127.0.0.1/platform", tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let report = migrate(&mut client, &PostgresSchema::default()).await?;
//! println!("schema eventhook at version {}, applied now: {:?}", report.version, report.applied);
//! # Ok(())
//! # }
//! ```
//!
//! ## Migrations
//! [`migrate`] creates the schema if needed and applies each of
//! [`migrations`] not yet recorded in its `schema_migrations` table
//! (`version`, `name`, `checksum`, `applied_at`), each in its own
//! transaction under an advisory lock keyed on the schema, so processes that
//! start together apply each version once. Call it at start-up, before the
//! store is used. A migration recorded with another checksum (the SHA-256 of
//! its SQL, [`Migration::checksum`]) than this crate ships fails `migrate`
//! and the dispatcher's build with the version that differs.
//!
//! ## Tables (migration 1)
//! - `webhooks`: one row per configured bot, keyed by `bot_token`: the
//!   settings of its `WebhookConfig` as columns (`account_name`, `url`, the
//!   bot's API `secret`, `signing_secrets`, the selected `events` as
//!   `EventFlags` bits, `plan`, `push_interval_ms`, `max_batch_events`,
//!   `max_batch_bytes`, `one_event_per_call`, `request_timeout_ms`,
//!   `queue_capacity`, `accept_any_2xx`, `included_variables`); its health
//!   (`disabled`, `failures_in_row`, `last_failure`); its schedule
//!   (`anchor_at`, where its grid of push times starts; `due_at`, NULL when
//!   nothing is scheduled, indexed for enabled webhooks; `last_push_at`);
//!   the failed call to send again as it was (`retry_events`, the number of
//!   oldest events it carried, and `retry_call_id`, its `webhook-id`); the lease
//!   of the call under way (`claim_id` from the `claim_ids` sequence and
//!   `lease_until`, both set or both NULL); and `generation`, which a trigger
//!   bumps whenever the settings or `disabled` change (not on leases, due
//!   times or failure counts), so a process can tell a reconfiguration
//!   happened during its call.
//! - `events`: the accepted events waiting for delivery, a row per run of
//!   one bot's events committed together (up to 64 KiB of them): `id` in
//!   acceptance order, `bot_token`, `body` (the encoded events, oldest
//!   first, joined by commas; compressed with lz4 where the server has it),
//!   `ends` (where each event ends in `body`), `delivered` (how many of the
//!   oldest a call delivered), the count of the others `events` and their
//!   `bytes`, `accepted_at`. A settlement deletes the rows its call
//!   delivered and counts the delivered head of a row the call ended inside
//!   in `delivered`. The primary key (`bot_token`, `id`) is the claim's
//!   ordered read. Removing a webhook deletes its events. To see them, as
//!   one JSON array per row:
//!   `SELECT bot_token, ('[' || convert_from(substr(body, coalesce(ends[delivered] + 2, 1)), 'UTF8') || ']')::jsonb FROM events`.
//! - `calls`: the billing ledger, one row per call made (`id`, the unique
//!   `claim_id`, `bot_token`, `events`, `bytes`, `outcome` of `delivered`,
//!   `failed_status` or `failed_transport`, the HTTP `status` when there was
//!   one, `failure`, `started_at`, `ended_at`); kept after the webhook is
//!   removed, indexed for billing by bot and period and for pruning by age.
//! - `alerts`: webhook-disabled alerts waiting for the `AlertSink` (a stable
//!   `id` a sink can use to ignore a repeat, `bot_token`, the alert's fields
//!   as `payload`, `created_at`, the delivering process's `lease_until`,
//!   `delivered_at`).
//! - `returning_users`: the returning-user gate shared by all processes:
//!   when each user of a bot last fired (`bot_token`, `user_key`, the
//!   SHA-256 of the user id, so no user id is kept, and `last_fired_at`).
//!
//! ## Webhooks' settings
//! [`save_webhook`] writes a [`WebhookConfig`](crate::WebhookConfig) into its
//! bot's `webhooks` row (an upsert of every setting column that also
//! re-enables the webhook, as saving the bot's settings does on the
//! platform); [`remove_webhook`] deletes the row, and its queued events with
//! it; [`load_webhooks`] and [`load_webhook`] read rows back as
//! [`StoredWebhook`]s, each config built through
//! [`WebhookConfig::builder`](crate::WebhookConfig::builder), so a row edited
//! by hand obeys the same rules and is refused naming its bot and column.
//!
//! Every change of a webhook's settings or `disabled`, and every configured
//! or removed webhook, is announced on the channel
//! [`PostgresSchema::webhooks_channel`] (`<schema>.webhooks`) when its
//! transaction commits.
//!
//! ## Privileges
//! The role that calls [`migrate`] needs `CREATE` on the database when the
//! schema does not exist yet (or create the schema beforehand with
//! `CREATE SCHEMA eventhook AUTHORIZATION that_role`), and `CREATE` on the
//! schema while a migration is pending; owning the schema covers both. On an
//! up-to-date schema `migrate` only reads, so it also works as a check for
//! the role below. The role the store runs as needs `USAGE` on the schema;
//! `SELECT`, `INSERT`, `UPDATE` and `DELETE` on `webhooks`, `events`,
//! `calls`, `alerts` and `returning_users`; `SELECT` on `schema_migrations`;
//! and `USAGE` on the sequences `claim_ids` and `events_id_seq` (the ids of
//! `events`, which the writer takes before it inserts). For example:
//!
//! ```sql
//! GRANT USAGE ON SCHEMA eventhook TO bot_engine;
//! GRANT SELECT, INSERT, UPDATE, DELETE ON eventhook.webhooks, eventhook.events, eventhook.calls,
//!     eventhook.alerts, eventhook.returning_users TO bot_engine;
//! GRANT SELECT ON eventhook.schema_migrations TO bot_engine;
//! GRANT USAGE ON SEQUENCE eventhook.claim_ids, eventhook.events_id_seq TO bot_engine;
//! ```
//!
//! The `webhooks` table holds each bot's API secret and signing secrets, as
//! the platform's own database does; grant it to no one else. No type here
//! holds a secret.

mod connection;
mod delivery;
mod dispatcher;
mod due;
mod kept;
mod migrate;
mod returning_users;
mod runs;
mod schema;
mod sync;
mod timestamps;
mod webhooks;
mod writer;

pub use dispatcher::{BuildError, PostgresDispatcher, PostgresDispatcherBuilder, StoreError};
pub use migrate::{migrate, migrations, ChangedMigration, MigrateError, Migration, MigrationReport};
pub use schema::{PostgresSchema, SchemaNameError};
pub use webhooks::{load_webhook, load_webhooks, remove_webhook, save_webhook, StoredWebhook, WebhookStoreError};
