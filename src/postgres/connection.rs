//! Connections of the PostgreSQL dispatcher's tasks: each task holds its
//! own, and makes a new one when the database drops it.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Client, Config, GenericClient, NoTls, Statement};

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

/// Turns a database error met while `doing` something into its description
/// ([`describe`]), for `map_err`.
pub(crate) fn doing(doing: &'static str) -> impl Fn(tokio_postgres::Error) -> String + Copy {
    move |error| describe(doing, &error)
}

/// Begins a transaction on `client` for statements sent with it: polled
/// together (`try_join`), statements are sent together and answered in
/// order, so the `BEGIN` costs no round trip of its own. A transaction
/// begun so ends with [`commit`] (see [`Session::transaction`]).
pub(crate) async fn begin(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await
}

/// Commits what [`begin`] began; sent with the last statements, it costs no
/// round trip of its own either: a statement that fails before it aborts
/// the transaction, and the `COMMIT` then rolls it back.
pub(crate) async fn commit(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("COMMIT").await
}

/// A task's connection and the statements it has prepared on it: a
/// statement the task runs again costs one round trip, not two.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) statements: Statements,
}

impl Session {
    pub(crate) async fn connect(config: &Config) -> Result<Session, tokio_postgres::Error> {
        Ok(Session { client: connect(config, || {}).await?, statements: Statements::default() })
    }

    pub(crate) async fn prepared(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        self.statements.get(&self.client, sql).await
    }

    /// Runs `transaction`, which [`begin`]s and [`commit`]s on the
    /// connection; after a failure, rolls back what it left open, so that
    /// the connection serves the next one (a closed one is replaced anyway).
    pub(crate) async fn transaction<T>(
        &mut self,
        transaction: impl AsyncFnOnce(&Client, &mut Statements) -> Result<T, String>,
    ) -> Result<T, String> {
        let outcome = transaction(&self.client, &mut self.statements).await;
        if outcome.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        outcome
    }
}

/// Statements prepared on one connection, by their SQL.
#[derive(Default)]
pub(crate) struct Statements(HashMap<String, Statement>);

impl Statements {
    pub(crate) async fn get(
        &mut self,
        client: &impl GenericClient,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        self.0.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}
