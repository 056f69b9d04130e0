//! The store's schema, versioned: migrations shipped in the crate, applied by
//! an explicit call that several processes may make at once.

use std::fmt;

use tokio_postgres::{Client, Transaction};

use super::schema::PostgresSchema;

/// One version of the store's schema, shipped in the crate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    version: u32,
    name: &'static str,
    sql: &'static str,
}

impl Migration {
    /// Its version: 1, 2, ... in the order they apply.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// A short name (the file's, without number and extension).
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// Its SQL, with unqualified names: [`migrate`] runs it with `search_path`
    /// set to the schema (a host applying it with its own tool does the same).
    pub fn sql(&self) -> &'static str {
        self.sql
    }
}

impl fmt::Debug for Migration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Migration").field("version", &self.version).field("name", &self.name).finish()
    }
}

const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "initial", sql: include_str!("migrations/0001_initial.sql") }];

/// Every migration this crate ships, oldest first.
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The versions this call applied, in order (empty when the schema was up to date).
    pub applied: Vec<u32>,
    /// The schema's version afterwards: the highest applied, by any process.
    /// Higher than the last of [`migrations`] when a newer version of the
    /// crate migrated the schema; the host decides whether to run on.
    pub version: u32,
}

/// A migration that failed: which schema, which step, and the database's error.
#[derive(Debug, thiserror::Error)]
#[error("migrating PostgreSQL schema {schema:?}: {step}: {source}")]
pub struct MigrateError {
    /// The schema being migrated.
    pub schema: String,
    /// What was being done, with the migration's version where there is one.
    pub step: String,
    /// The database's error.
    #[source]
    pub source: tokio_postgres::Error,
}

/// Brings `schema` up to the last of [`migrations`], creating the schema
/// if it does not exist.
///
/// Safe when several processes start at once: each migration runs in its own
/// transaction that first takes an advisory lock keyed on the schema (held
/// until that transaction ends), then checks the `schema_migrations` table;
/// a version is applied, and recorded with its time, exactly once. An error
/// rolls back the migration it happened in; those before it stay applied.
/// When the schema is up to date it only reads, so a role without `CREATE`
/// may call it to check.
pub async fn migrate(client: &mut Client, schema: &PostgresSchema) -> Result<MigrationReport, MigrateError> {
    let failed = |step: String| {
        let schema = schema.name().to_owned();
        move |source| MigrateError { schema, step, source }
    };
    let lock_key = lock_key(schema);
    let mut applied = Vec::new();
    let mut version = 0;
    for migration in MIGRATIONS {
        let step = |what: &str| format!("migration {} ({}): {what}", migration.version, migration.name);
        let transaction = client.transaction().await.map_err(failed(step("beginning its transaction")))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key])
            .await
            .map_err(failed(step("taking the advisory lock")))?;
        prepare_ledger(&transaction, schema)
            .await
            .map_err(failed(step("creating the schema and schema_migrations")))?;
        version = current_version(&transaction, schema).await.map_err(failed(step("reading schema_migrations")))?;
        // Applied before (possibly by a newer crate) unless the version is behind.
        if version < migration.version {
            transaction
                .batch_execute(&format!("SET LOCAL search_path TO {}", schema.quoted()))
                .await
                .map_err(failed(step("setting search_path")))?;
            transaction.batch_execute(migration.sql).await.map_err(failed(step("running its SQL")))?;
            transaction
                .execute(
                    &format!("INSERT INTO {}.schema_migrations (version, name) VALUES ($1, $2)", schema.quoted()),
                    &[&i64::from(migration.version), &migration.name],
                )
                .await
                .map_err(failed(step("recording it in schema_migrations")))?;
            applied.push(migration.version);
            version = migration.version;
        }
        transaction.commit().await.map_err(failed(step("committing")))?;
    }
    Ok(MigrationReport { applied, version })
}

/// The version `schema` is migrated to: 0 when it has no `schema_migrations`.
pub(crate) async fn applied_version(client: &Client, schema: &PostgresSchema) -> Result<u32, tokio_postgres::Error> {
    let ledger = format!("{}.schema_migrations", schema.quoted());
    let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&ledger]).await?;
    if !row.try_get::<_, bool>(0)? {
        return Ok(0);
    }
    let row = client.query_one(&format!("SELECT COALESCE(max(version), 0) FROM {ledger}"), &[]).await?;
    Ok(u32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(u32::MAX))
}

/// Creates the schema and its `schema_migrations` table when missing; checks
/// first, so that an up-to-date schema needs no `CREATE` privilege.
async fn prepare_ledger(transaction: &Transaction<'_>, schema: &PostgresSchema) -> Result<(), tokio_postgres::Error> {
    let ledger = format!("{}.schema_migrations", schema.quoted());
    let row = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), to_regclass($2) IS NOT NULL",
            &[&schema.name(), &ledger],
        )
        .await?;
    let (schema_exists, ledger_exists): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    if !schema_exists {
        transaction.batch_execute(&format!("CREATE SCHEMA {}", schema.quoted())).await?;
    }
    if !ledger_exists {
        transaction
            .batch_execute(&format!(
                "CREATE TABLE {ledger} (
                    version    bigint PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )"
            ))
            .await?;
    }
    Ok(())
}

async fn current_version(transaction: &Transaction<'_>, schema: &PostgresSchema) -> Result<u32, tokio_postgres::Error> {
    let row = transaction
        .query_one(&format!("SELECT COALESCE(max(version), 0) FROM {}.schema_migrations", schema.quoted()), &[])
        .await?;
    let version: i64 = row.try_get(0)?;
    // Versions are written from `u32`s; anything else saturates rather than wraps.
    Ok(u32::try_from(version).unwrap_or(u32::MAX))
}

/// The advisory lock's key: FNV-1a (64 bits) of a fixed prefix and the schema
/// name, so every process computes the same key for a schema and different
/// schemas migrate independently.
fn lock_key(schema: &PostgresSchema) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = b"eventhook.migrate:"
        .iter()
        .chain(schema.name().as_bytes())
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{migration:?}");
            assert!(!migration.sql.trim().is_empty(), "{migration:?}");
        }
    }

    #[test]
    fn lock_keys_are_the_same_for_a_schema_and_differ_between_schemas() {
        let eventhook = lock_key(&PostgresSchema::default());
        assert_eq!(eventhook, lock_key(&PostgresSchema::new("eventhook").unwrap()));
        assert_ne!(eventhook, lock_key(&PostgresSchema::new("eventhook_2").unwrap()));
    }
}
