//! The PostgreSQL schema's migrations against a real database: every version
//! applied once, also when several processes migrate at once; the tables
//! and triggers migration 1 creates; schema names and errors.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::collections::BTreeMap;
use std::time::Duration;

use eventhook::postgres::{
    migrate, migrations, BuildError, MigrateError, MigrationReport, PostgresDispatcher, PostgresSchema,
};
use postgres_support::TestSchema;

fn shipped_versions() -> Vec<u32> {
    migrations().iter().map(|migration| migration.version()).collect()
}

/// The `schema_migrations` rows: version, name and when it was applied.
async fn ledger(client: &tokio_postgres::Client, test: &TestSchema) -> Vec<(i64, String, String)> {
    client
        .query(
            &format!(
                "SELECT version, name, applied_at::text FROM {}.schema_migrations ORDER BY version",
                test.quoted()
            ),
            &[],
        )
        .await
        .expect("reading schema_migrations")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

#[tokio::test]
async fn migrate_applies_every_shipped_version_in_a_new_schema() {
    let Some(test) = TestSchema::new("migrate_applies_every_shipped_version_in_a_new_schema") else { return };
    let mut client = test.connect().await;

    let report = migrate(&mut client, &test.schema).await.expect("migrating");

    let last = *shipped_versions().last().expect("at least one migration");
    assert_eq!(report, MigrationReport { applied: shipped_versions(), version: last });
    let recorded: Vec<(i64, String)> =
        ledger(&client, &test).await.into_iter().map(|(version, name, _)| (version, name)).collect();
    let shipped: Vec<(i64, String)> =
        migrations().iter().map(|migration| (i64::from(migration.version()), migration.name().to_owned())).collect();
    assert_eq!(recorded, shipped);
}

/// A migration is recorded with the SHA-256 of its SQL; a schema whose
/// record differs (migrated from an edited migration) fails `migrate` with
/// the version, and so does building a dispatcher on it.
#[tokio::test]
async fn a_migration_applied_from_different_sql_fails_migrate_and_the_build() {
    let Some(test) = TestSchema::new("a_migration_applied_from_different_sql_fails_migrate_and_the_build") else {
        return;
    };
    let mut client = test.connect().await;
    migrate(&mut client, &test.schema).await.expect("migrating");
    let recorded: Vec<String> = client
        .query(&format!("SELECT checksum FROM {}.schema_migrations ORDER BY version", test.quoted()), &[])
        .await
        .expect("reading the checksums")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let shipped: Vec<String> = migrations().iter().map(|migration| migration.checksum()).collect();
    assert_eq!(recorded, shipped);

    client
        .batch_execute(&format!("UPDATE {}.schema_migrations SET checksum = 'edited' WHERE version = 1", test.quoted()))
        .await
        .expect("changing the record");
    let error = migrate(&mut client, &test.schema).await.expect_err("a changed migration");
    let MigrateError::Changed { migration, .. } = &error else { panic!("not a change: {error:?}") };
    assert_eq!((migration.version, migration.recorded.as_str()), (1, "edited"));
    let shown = error.to_string();
    assert!(shown.contains("migration 1 (initial) was applied from different SQL"), "{shown}");
    let build = PostgresDispatcher::builder(test.url()).schema(test.schema.clone()).build().await;
    let Err(error) = build else { panic!("built on a changed schema") };
    assert!(matches!(error, BuildError::MigrationChanged { .. }), "{error:?}");
    assert!(error.to_string().contains("migration 1 (initial)"), "{error}");
}

#[tokio::test]
async fn migrating_again_changes_nothing() {
    let Some(test) = TestSchema::new("migrating_again_changes_nothing") else { return };
    let mut client = test.connect().await;
    let first = migrate(&mut client, &test.schema).await.expect("migrating");
    let ledger_after_first = ledger(&client, &test).await;

    let second = migrate(&mut client, &test.schema).await.expect("migrating again");

    assert_eq!(second, MigrationReport { applied: Vec::new(), version: first.version });
    assert_eq!(ledger(&client, &test).await, ledger_after_first, "the same rows, with their first applied_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_all_succeed_and_apply_each_version_once() {
    let Some(test) = TestSchema::new("concurrent_migrations_all_succeed_and_apply_each_version_once") else { return };
    // Connected first, so that the four start migrating together.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(test.connect().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let schema = test.schema.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                migrate(&mut client, &schema).await
            })
        })
        .collect();

    let mut applied = Vec::new();
    for task in tasks {
        let report = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a migration finished within 30 s")
            .expect("the task did not panic")
            .expect("every concurrent migration succeeds");
        assert_eq!(report.version, *shipped_versions().last().expect("at least one migration"));
        applied.extend(report.applied);
    }
    applied.sort_unstable();
    assert_eq!(applied, shipped_versions(), "each version applied by exactly one of the four");
    let client = test.connect().await;
    assert_eq!(ledger(&client, &test).await.len(), shipped_versions().len());
}

#[test]
fn a_schema_name_that_is_not_a_plain_identifier_is_refused_naming_it() {
    for name in ["", "Eventhook", "event-hook", "x\"; DROP SCHEMA public; --", "pg_temp_3", &"a".repeat(49)] {
        let error = PostgresSchema::new(name).expect_err(name);
        let shown = error.to_string();
        assert!(shown.contains(&format!("{:?}", error.name)), "{shown}");
        assert!(name.starts_with(error.name.trim_end_matches("...")), "{name:?} shown as {:?}", error.name);
        assert!(!error.reason.is_empty());
    }
}

/// A column: name, type as `information_schema` names it, nullable.
type Column = (&'static str, &'static str, bool);

/// Every column migration 1 creates, per table.
const EXPECTED_COLUMNS: &[(&str, &[Column])] = &[
    (
        "alerts",
        &[
            ("id", "bigint", false),
            ("bot_token", "text", false),
            ("payload", "jsonb", false),
            ("created_at", "timestamp with time zone", false),
            ("lease_until", "timestamp with time zone", true),
            ("delivered_at", "timestamp with time zone", true),
        ],
    ),
    (
        "calls",
        &[
            ("id", "bigint", false),
            ("claim_id", "bigint", false),
            ("bot_token", "text", false),
            ("events", "integer", false),
            ("bytes", "bigint", false),
            ("outcome", "text", false),
            ("status", "smallint", true),
            ("failure", "text", true),
            ("started_at", "timestamp with time zone", false),
            ("ended_at", "timestamp with time zone", false),
        ],
    ),
    (
        "events",
        &[
            ("id", "bigint", false),
            ("bot_token", "text", false),
            ("body", "bytea", false),
            ("ends", "ARRAY", false),
            ("delivered", "integer", false),
            ("events", "integer", false),
            ("bytes", "bigint", false),
            ("accepted_at", "timestamp with time zone", false),
        ],
    ),
    (
        "returning_users",
        &[
            ("bot_token", "text", false),
            ("user_key", "bytea", false),
            ("last_fired_at", "timestamp with time zone", false),
        ],
    ),
    (
        "schema_migrations",
        &[
            ("version", "bigint", false),
            ("name", "text", false),
            ("checksum", "text", false),
            ("applied_at", "timestamp with time zone", false),
        ],
    ),
    (
        "webhooks",
        &[
            ("bot_token", "text", false),
            ("account_name", "text", false),
            ("url", "text", false),
            ("secret", "text", false),
            ("signing_secrets", "ARRAY", false),
            ("events", "integer", false),
            ("plan", "text", false),
            ("push_interval_ms", "bigint", false),
            ("max_batch_events", "integer", false),
            ("max_batch_bytes", "bigint", false),
            ("one_event_per_call", "boolean", false),
            ("request_timeout_ms", "bigint", false),
            ("queue_capacity", "integer", false),
            ("accept_any_2xx", "boolean", false),
            ("included_variables", "ARRAY", false),
            ("disabled", "boolean", false),
            ("failures_in_row", "integer", false),
            ("last_failure", "text", true),
            ("anchor_at", "timestamp with time zone", false),
            ("due_at", "timestamp with time zone", true),
            ("last_push_at", "timestamp with time zone", true),
            ("retry_events", "integer", true),
            ("retry_call_id", "text", true),
            ("claim_id", "bigint", true),
            ("lease_until", "timestamp with time zone", true),
            ("generation", "bigint", false),
        ],
    ),
];

#[tokio::test]
async fn migration_one_creates_the_tables_with_their_columns() {
    let Some(test) = TestSchema::new("migration_one_creates_the_tables_with_their_columns") else { return };
    let mut client = test.connect().await;
    migrate(&mut client, &test.schema).await.expect("migrating");

    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'YES'
             FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
            &[&test.schema.name()],
        )
        .await
        .expect("reading information_schema.columns");
    let mut found: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for row in &rows {
        found.entry(row.get(0)).or_default().push((row.get(1), row.get(2), row.get(3)));
    }
    let expected: BTreeMap<String, Vec<(String, String, bool)>> = EXPECTED_COLUMNS
        .iter()
        .map(|(table, columns)| {
            let columns = columns.iter().map(|(name, kind, null)| (name.to_string(), kind.to_string(), *null));
            (table.to_string(), columns.collect())
        })
        .collect();
    assert_eq!(found, expected);

    let sequence = client
        .query_opt(
            "SELECT 1 FROM information_schema.sequences WHERE sequence_schema = $1 AND sequence_name = 'claim_ids'",
            &[&test.schema.name()],
        )
        .await
        .expect("reading information_schema.sequences");
    assert!(sequence.is_some(), "the claim_ids sequence exists");
}

/// The next notification, as (channel, payload as JSON), waiting at most 10 s.
async fn next_notification(
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
) -> (String, serde_json::Value) {
    let notification = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the listening connection is open");
    let payload = serde_json::from_str(notification.payload()).expect("the payload is JSON");
    (notification.channel().to_owned(), payload)
}

#[tokio::test]
async fn settings_changes_bump_the_generation_and_are_announced_bookkeeping_is_not() {
    let Some(test) = TestSchema::new("settings_changes_bump_the_generation_and_are_announced_bookkeeping_is_not")
    else {
        return;
    };
    let mut writer = test.connect().await;
    migrate(&mut writer, &test.schema).await.expect("migrating");
    let (listener, mut notifications) = test.connect_listening().await;
    let channel = test.schema.webhooks_channel();
    listener.batch_execute(&format!("LISTEN \"{channel}\"")).await.expect("listening on the webhooks channel");
    // The writer's search_path is not the schema's: the triggers must not depend on it.
    let table = format!("{}.webhooks", test.quoted());
    let generation = || async {
        let row = writer.query_one(&format!("SELECT generation FROM {table}"), &[]).await.expect("reading generation");
        row.get::<_, i64>(0)
    };
    let announced = |op: &str, generation: i64| {
        (channel.clone(), serde_json::json!({ "op": op, "bot_token": "bot-1", "generation": generation }))
    };
    let execute = |statement: String| {
        let writer = &writer;
        async move { writer.batch_execute(&statement).await.expect(&statement) }
    };

    // The bump fires on updates of every column but the bookkeeping ones
    // (the same list as its comparison), so a column added later is counted
    // as a setting unless it is named bookkeeping in both places. Updates are
    // announced when the bump changed the generation (checked below).
    const BOOKKEEPING: [&str; 9] = [
        "failures_in_row",
        "last_failure",
        "anchor_at",
        "due_at",
        "last_push_at",
        "retry_events",
        "retry_call_id",
        "claim_id",
        "lease_until",
    ];
    let columns = writer
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 \
             AND NOT attisdropped ORDER BY attname",
            &[&table],
        )
        .await
        .expect("reading the columns");
    let settings: Vec<String> = columns
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|column| !BOOKKEEPING.contains(&column.as_str()))
        .collect();
    let fired_by = writer
        .query(
            "SELECT attname::text FROM pg_trigger JOIN pg_attribute ON attrelid = tgrelid AND attnum = ANY (tgattr) \
             WHERE tgrelid = $1::text::regclass AND tgname = 'webhooks_bump_generation' ORDER BY attname",
            &[&table],
        )
        .await
        .expect("reading the bump trigger's columns");
    let fired_by: Vec<String> = fired_by.iter().map(|row| row.get(0)).collect();
    assert_eq!(fired_by, settings, "the columns whose update fires the generation's bump");

    execute(format!(
        "INSERT INTO {table} (bot_token, account_name, url, secret, events, plan, push_interval_ms,
            max_batch_events, max_batch_bytes, one_event_per_call, request_timeout_ms, queue_capacity, accept_any_2xx,
            anchor_at)
        VALUES ('bot-1', 'Matelab Srl', 'https://hooks.example.com/events', 's3cr3t', 16383, 'paid', 30000,
            500, 1048576, false, 10000, 10000, false, now())"
    ))
    .await;
    assert_eq!(generation().await, 1);
    assert_eq!(next_notification(&mut notifications).await, announced("insert", 1));

    // A claim, a failed call and a new due time: bookkeeping, neither bumped nor announced.
    execute(format!(
        "UPDATE {table} SET claim_id = nextval('{schema}.claim_ids'), lease_until = now() + interval '30 s',
            due_at = now() + interval '30 s', failures_in_row = 1, last_failure = 'answered 500',
            anchor_at = now(), last_push_at = now(), retry_events = 3, retry_call_id = 'msg_1'",
        schema = test.quoted()
    ))
    .await;
    // Nor can a writer set the generation by hand.
    execute(format!("UPDATE {table} SET generation = 100")).await;
    assert_eq!(generation().await, 1);

    // A new URL, then the disable: each bumps and is announced, and the URL's
    // announcement is the next one, so the bookkeeping above announced nothing.
    execute(format!("UPDATE {table} SET url = 'https://hooks.example.com/v2'")).await;
    assert_eq!(generation().await, 2);
    assert_eq!(next_notification(&mut notifications).await, announced("update", 2));
    execute(format!("UPDATE {table} SET disabled = true")).await;
    assert_eq!(next_notification(&mut notifications).await, announced("update", 3));

    execute(format!("DELETE FROM {table}")).await;
    assert_eq!(next_notification(&mut notifications).await, announced("delete", 3));
}

#[tokio::test]
async fn a_failed_migration_names_the_schema_and_the_step_and_shows_no_password() {
    let Some(test) = TestSchema::new("a_failed_migration_names_the_schema_and_the_step_and_shows_no_password") else {
        return;
    };
    let mut client = test.connect().await;
    // A schema_migrations this crate did not make: its versions are not numbers.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.schema_migrations (version text, name text, applied_at timestamptz)",
            schema = test.quoted()
        ))
        .await
        .expect("creating a foreign schema_migrations");

    let error = migrate(&mut client, &test.schema).await.expect_err("the ledger cannot be read");

    let shown = error.to_string();
    assert_eq!(error.schema(), test.schema.name());
    assert!(shown.contains(&format!("{:?}", test.schema.name())), "{shown}");
    assert!(shown.contains("migration 1 (initial): reading schema_migrations"), "{shown}");
    if let Some(password) = test.password() {
        assert!(!shown.contains(&password) && !format!("{error:?}").contains(&password), "{error:?}");
    }
}
