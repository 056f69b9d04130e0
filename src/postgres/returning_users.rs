//! The returning-user gate in the database: type 9 at most once per window
//! per user of a bot, over every process.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::schema::PostgresSchema;

/// Whether `user_id` of `bot_token` may fire now, recording the firing when
/// it may: one statement, so of two processes asking at once one gets yes.
pub(crate) async fn should_fire(
    client: &Client,
    schema: &PostgresSchema,
    bot_token: &str,
    user_id: &str,
    now: DateTime<Utc>,
    window_ms: i64,
) -> Result<bool, tokio_postgres::Error> {
    let user_key = Sha256::digest(user_id.as_bytes()).to_vec();
    let statement = format!(
        "INSERT INTO {schema}.returning_users AS remembered (bot_token, user_key, last_fired_at)
         VALUES ($1, $2, $3)
         ON CONFLICT (bot_token, user_key) DO UPDATE SET last_fired_at = EXCLUDED.last_fired_at
         WHERE remembered.last_fired_at <= EXCLUDED.last_fired_at - make_interval(secs => $4::bigint / 1000.0)
         RETURNING 1",
        schema = schema.quoted()
    );
    let fired = client.query_opt(&statement, &[&bot_token, &user_key, &now, &window_ms]).await?;
    Ok(fired.is_some())
}

/// Forgets users whose window has passed: they would fire anyway.
pub(crate) async fn forget_expired(
    client: &Client,
    schema: &PostgresSchema,
    now: DateTime<Utc>,
    window_ms: i64,
) -> Result<u64, tokio_postgres::Error> {
    let statement = format!(
        "DELETE FROM {}.returning_users WHERE last_fired_at <= $1::timestamptz - make_interval(secs => $2::bigint / 1000.0)",
        schema.quoted()
    );
    client.execute(&statement, &[&now, &window_ms]).await
}
