//! Connections of the PostgreSQL dispatcher's tasks: each task holds its
//! own, and makes a new one when the database drops it.

use std::time::Duration;

use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

/// The first wait before trying the database again; it doubles up to [`MAX_RETRY_DELAY`].
pub(crate) const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two tries.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The next wait after `delay` failed.
pub(crate) fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_RETRY_DELAY)
}

/// A connection driven on its own task. Notifications (`LISTEN`) call
/// `on_notification`, which must not block.
pub(crate) async fn connect(
    config: &Config,
    on_notification: impl Fn() + Send + 'static,
) -> Result<Client, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // Ends with the client; an error then reaches its user through the client.
        while let Some(Ok(message)) = std::future::poll_fn(|context| connection.poll_message(context)).await {
            if let AsyncMessage::Notification(_) = message {
                on_notification();
            }
        }
    });
    Ok(client)
}

/// A database error as the dispatcher reports it: what it was doing, and
/// PostgreSQL's message without its DETAIL (which can quote a row, and so
/// a secret).
pub(crate) fn describe(doing: &str, error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(database) => format!("{doing}: {} ({})", database.message(), database.code().code()),
        None if error.is_closed() => format!("{doing}: the connection is closed"),
        // tokio-postgres names the failure (and never the password) here.
        None => format!("{doing}: {error}"),
    }
}
