//! A fresh PostgreSQL schema for each test, so the tests run in parallel on
//! one database.
//!
//! The database is `DATABASE_URL` (`.ci/run` starts a local one and sets
//! it). Without it a test says on stderr that it was skipped and why, and
//! returns; with `EVENTHOOK_REQUIRE_POSTGRES=1` it fails instead.
#![allow(dead_code)]

use eventhook::postgres::PostgresSchema;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// A schema with a random name that no test shares; dropped with everything
/// in it when this value is, even when the test panics.
pub struct TestSchema {
    pub schema: PostgresSchema,
    url: String,
}

impl TestSchema {
    /// A fresh schema name for `test` (the schema itself is created by
    /// whatever the test does first, usually `migrate`), or `None` when the
    /// test is to be skipped.
    pub fn new(test: &str) -> Option<TestSchema> {
        let url = database_url(test)?;
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).expect("random bytes for a schema name");
        let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let schema = PostgresSchema::new(format!("eventhook_test_{suffix}")).expect("a valid schema name");
        Some(TestSchema { schema, url })
    }

    /// The schema's name, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.schema.name())
    }

    /// A new connection to the test database, driven on the current runtime.
    pub async fn connect(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.expect("connecting to DATABASE_URL");
        tokio::spawn(async move {
            // Ends when the client is dropped; an error then is the test's to see through the client.
            let _ = connection.await;
        });
        client
    }

    /// A new connection whose notifications (`LISTEN`) arrive on the returned channel.
    pub async fn connect_listening(&self) -> (Client, tokio::sync::mpsc::UnboundedReceiver<Notification>) {
        let (client, mut connection) =
            tokio_postgres::connect(&self.url, NoTls).await.expect("connecting to DATABASE_URL");
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = std::future::poll_fn(|context| connection.poll_message(context)).await {
                if let AsyncMessage::Notification(notification) = message {
                    let _ = sender.send(notification);
                }
            }
        });
        (client, receiver)
    }

    /// `DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The password in `DATABASE_URL`, for checking that nothing shows it.
    pub fn password(&self) -> Option<String> {
        let config: tokio_postgres::Config = self.url.parse().expect("DATABASE_URL is a connection string");
        config.get_password().map(|password| String::from_utf8_lossy(password).into_owned())
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the current thread:
        // a thread of its own with a runtime of its own drops the schema.
        let url = self.url.clone();
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.quoted());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                let driver = tokio::spawn(connection);
                client.batch_execute(&statement).await?;
                drop(client);
                let _ = driver.await;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: drop it by hand", self.schema.name());
        }
    }
}

/// `DATABASE_URL`, or `None` after saying that `test` is skipped; panics
/// when `EVENTHOOK_REQUIRE_POSTGRES=1` asks for a database.
fn database_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("EVENTHOOK_REQUIRE_POSTGRES").is_ok_and(|value| value == "1") => {
            panic!("{test}: EVENTHOOK_REQUIRE_POSTGRES=1 but DATABASE_URL is not set")
        }
        _ => {
            // Straight to stderr, not `eprintln!`, which the test harness captures for passing tests.
            let line =
                format!("SKIPPED {test}: DATABASE_URL is not set; this test needs PostgreSQL (.ci/run starts one)\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            None
        }
    }
}
