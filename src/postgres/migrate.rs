//! The store's schema, versioned: migrations shipped in the crate, applied by
//! an explicit call that several processes may make at once.

use std::fmt;

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient, Transaction};

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
    /// The SHA-256 of its SQL, in lower-case hex: what [`migrate`] records
    /// with it in `schema_migrations`, and checks against on every later
    /// call, so that a schema migrated from different SQL than this crate
    /// ships is an error, not a surprise at run time.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
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

/// Why [`migrate`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database refused or failed a step.
    #[error("migrating PostgreSQL schema {schema:?}: {step}: {source}")]
    Database {
        /// The schema being migrated.
        schema: String,
        /// What was being done, with the migration's version where there is one.
        step: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A migration recorded as applied was applied from different SQL than
    /// this crate ships (an edited migration, or another build of the crate):
    /// the schema is not what this crate expects, and nothing was changed.
    #[error("migrating PostgreSQL schema {schema:?}: {migration}")]
    Changed {
        /// The schema being migrated.
        schema: String,
        /// The migration whose checksum differs.
        migration: ChangedMigration,
    },
}

impl MigrateError {
    /// The schema being migrated.
    pub fn schema(&self) -> &str {
        match self {
            MigrateError::Database { schema, .. } | MigrateError::Changed { schema, .. } => schema,
        }
    }
}

/// A migration recorded in `schema_migrations` with another checksum than
/// this crate's [`Migration::checksum`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "migration {version} ({name}) was applied from different SQL than this crate ships \
     (recorded checksum {recorded}, shipped {shipped})"
)]
pub struct ChangedMigration {
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: &'static str,
    /// The checksum recorded when it was applied.
    pub recorded: String,
    /// This crate's checksum of it.
    pub shipped: String,
}

/// Brings `schema` up to the last of [`migrations`], creating the schema
/// if it does not exist, after checking that the migrations applied before
/// were applied from the SQL this crate ships ([`Migration::checksum`]).
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
        move |source| MigrateError::Database { schema, step, source }
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
        if version >= migration.version {
            let recorded = recorded_checksum(&transaction, schema, migration)
                .await
                .map_err(failed(step("reading its checksum")))?;
            if let Some(changed) = changed(migration, recorded) {
                return Err(MigrateError::Changed { schema: schema.name().to_owned(), migration: changed });
            }
        }
        // Applied before (possibly by a newer crate) unless the version is behind.
        if version < migration.version {
            transaction
                .batch_execute(&format!("SET LOCAL search_path TO {}", schema.quoted()))
                .await
                .map_err(failed(step("setting search_path")))?;
            transaction.batch_execute(migration.sql).await.map_err(failed(step("running its SQL")))?;
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        schema.quoted()
                    ),
                    &[&i64::from(migration.version), &migration.name, &migration.checksum()],
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

/// The version `schema` is migrated to (0 when it has no
/// `schema_migrations`), and the first of this crate's migrations recorded
/// there with another checksum, if any.
pub(crate) async fn applied_version(
    client: &Client,
    schema: &PostgresSchema,
) -> Result<(u32, Option<ChangedMigration>), tokio_postgres::Error> {
    let ledger = format!("{}.schema_migrations", schema.quoted());
    let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&ledger]).await?;
    if !row.try_get::<_, bool>(0)? {
        return Ok((0, None));
    }
    let row = client.query_one(&format!("SELECT COALESCE(max(version), 0) FROM {ledger}"), &[]).await?;
    let version = u32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(u32::MAX);
    for migration in MIGRATIONS.iter().filter(|migration| migration.version <= version) {
        if let Some(changed) = changed(migration, recorded_checksum(client, schema, migration).await?) {
            return Ok((version, Some(changed)));
        }
    }
    Ok((version, None))
}

/// The checksum `schema_migrations` records for `migration` (`None` when it
/// records none).
async fn recorded_checksum(
    client: &impl GenericClient,
    schema: &PostgresSchema,
    migration: &Migration,
) -> Result<Option<String>, tokio_postgres::Error> {
    let statement = format!("SELECT checksum FROM {}.schema_migrations WHERE version = $1", schema.quoted());
    let row = client.query_opt(&statement, &[&i64::from(migration.version)]).await?;
    row.map(|row| row.try_get(0)).transpose().map(Option::flatten)
}

/// `migration` as changed, when its recorded checksum is not the shipped one.
fn changed(migration: &Migration, recorded: Option<String>) -> Option<ChangedMigration> {
    let shipped = migration.checksum();
    let recorded = recorded.unwrap_or_else(|| "none".to_owned());
    (recorded != shipped).then_some(ChangedMigration {
        version: migration.version,
        name: migration.name,
        recorded,
        shipped,
    })
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
                    checksum   text NOT NULL,
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

/// The migrations' advisory lock key: one per schema, the same in every process.
fn lock_key(schema: &PostgresSchema) -> i64 {
    schema.advisory_lock_key("migrate", None)
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
    fn a_checksum_is_the_sha256_of_the_sql_and_a_different_one_is_a_change() {
        let migration = MIGRATIONS[0];
        let checksum = migration.checksum();
        assert_eq!(checksum.len(), 64);
        assert!(checksum.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)), "{checksum}");
        let edited = Migration { sql: "SELECT 1", ..migration };
        assert_ne!(edited.checksum(), checksum);
        assert_eq!(changed(&migration, Some(checksum.clone())), None);
        let change = changed(&edited, Some(checksum.clone())).expect("a change");
        assert_eq!((change.version, change.recorded.as_str()), (1, checksum.as_str()));
        assert!(change.to_string().starts_with("migration 1 (initial) was applied from different SQL"), "{change}");
        assert_eq!(changed(&migration, None).map(|change| change.recorded), Some("none".to_owned()));
    }

    #[test]
    fn lock_keys_are_the_same_for_a_schema_and_differ_between_schemas() {
        let eventhook = lock_key(&PostgresSchema::default());
        assert_eq!(eventhook, lock_key(&PostgresSchema::new("eventhook").unwrap()));
        assert_ne!(eventhook, lock_key(&PostgresSchema::new("eventhook_2").unwrap()));
        // Processes of different crate versions migrating at once must agree on it.
        assert_eq!(eventhook, -8_150_014_847_472_276_802, "FNV-1a of `eventhook.migrate:eventhook`");
    }
}
