//! The Postgres schema's migrations, and the versions retired from them.
//!
//! `sqlx::migrate!` refuses a database that records a migration the migrator does not have
//! (and one whose recorded checksum differs from its file's). Versions 2 to 5 only replaced the
//! commit path's server-side functions; migration 6 holds their result and their files are
//! gone. A database migrated through them still records them, so the store accepts exactly
//! those versions as retired, refuses any other version it does not know (a database written by
//! a newer release), and applies the rest as usual. Migration 1 keeps its file byte for byte:
//! existing databases record its checksum.

use std::collections::BTreeSet;

use sourceflow::store::StoreError;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

use super::error::{backend, classify};

/// The Postgres migrations, applied by [`PostgresStore::connect`](super::PostgresStore::connect)
/// and [`PostgresStore::from_pool`](super::PostgresStore::from_pool).
///
/// A database migrated by an earlier release may record the retired versions 2 to 5, which this
/// set does not have: run it with [`Migrator::set_ignore_missing`] on such a database, or let
/// the store apply it (the store checks that no version other than those is missing).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Versions whose migrations only replaced functions, folded into migration 6.
pub const RETIRED: [i64; 4] = [2, 3, 4, 5];

/// A database records a migration this release does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database records schema migration {0}, which this release of sourceflow-sqlx does not \
     have (it was migrated by a newer release)"
)]
pub struct UnknownMigration(pub i64);

/// Applies pending migrations, accepting the retired versions.
///
/// # Errors
/// [`StoreError::Backend`] with [`UnknownMigration`] as the source when the database records a
/// migration that is neither in [`MIGRATOR`] nor retired; a failed migration.
pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let known: BTreeSet<i64> = MIGRATOR.iter().map(|m| m.version).chain(RETIRED).collect();
    for version in applied(pool).await? {
        if !known.contains(&version) {
            return Err(backend(UnknownMigration(version)));
        }
    }
    let migrator = Migrator {
        migrations: MIGRATOR.migrations.clone(),
        ignore_missing: true,
        ..Migrator::DEFAULT
    };
    migrator.run(pool).await.map_err(backend)
}

/// The versions the database records as applied (none in a new schema).
async fn applied(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(classify)?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(pool)
        .await
        .map_err(classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Existing databases record migration 1's checksum: its file must not change.
    #[test]
    fn migration_1_is_unchanged() {
        let first = MIGRATOR
            .iter()
            .find(|m| m.version == 1)
            .expect("migration 1");
        let hex: String = first.checksum.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "cd6758adf17029982303e6ca52ca5bc895554b5e0a787263ea35a3620f31fde4\
             da8317804568f933254611d5c717637c"
        );
    }

    #[test]
    fn retired_versions_have_no_migration() {
        for version in RETIRED {
            assert!(MIGRATOR.iter().all(|m| m.version != version), "{version}");
        }
    }
}
