//! Opening a SQLite store: the builder, the connections (the writer's, the migration's, the
//! readers'), and the migrations, applied on open with progress reported for long upgrades.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sourceflow::store::StoreError;
use sqlx::sqlite::{SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::database::Database;
use super::error::{classify, classify_writer, migration_is_busy};
use super::streams::StreamReaders;
use super::writer::{self, WriterStats};
use super::{Inner, Sqlite, SqliteStore, Synchronous};
use crate::retry::Backoff;
use crate::sql::SqlStore;

/// The SQLite migrations, applied by [`SqliteStore::open`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub(super) enum Location {
    File(PathBuf),
    Memory,
}

/// Options for opening a [`SqliteStore`]; start from [`SqliteStore::builder`] or
/// [`SqliteStore::memory_builder`].
#[derive(Clone, Debug)]
pub struct SqliteStoreBuilder {
    location: Location,
    synchronous: Synchronous,
    busy_timeout: Duration,
    readers: u32,
    max_batch: usize,
    backoff: Backoff,
}

impl SqliteStoreBuilder {
    pub(super) fn new(location: Location) -> Self {
        Self {
            location,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            max_batch: 512,
            backoff: Backoff::default(),
        }
    }

    /// `PRAGMA synchronous` for the writer: [`Synchronous::Full`] (default) or the opt-in
    /// [`Synchronous::Normal`] durability trade.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a connection waits for another process's lock before `SQLITE_BUSY`
    /// (default 5 s). A batch that still fails with busy is retried with [`Self::backoff`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Number of pooled reader connections (default 4, at least 1).
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The most units of work committed in one transaction (default 512, at least 1).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Retry policy for transient faults (busy, locked, I/O).
    ///
    /// Takes a [`Backoff`] or a [`sourceflow::RetryPolicy`].
    pub fn backoff(mut self, backoff: impl Into<Backoff>) -> Self {
        self.backoff = backoff.into();
        self
    }

    /// Opens (creating if needed) the database, applies pending migrations and starts the
    /// writer thread. Must be called inside a Tokio runtime.
    ///
    /// Upgrading a file written by an older version can take a while (schema v2 rebuilds the
    /// events table, about 15 s per million events): the upgrade is logged through `tracing`
    /// when it starts, every 10 s while it runs, and when it ends. Another process opening the
    /// same file meanwhile waits for it (up to 30 minutes) instead of failing.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened or migrated.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        let database = match &self.location {
            Location::File(path) => Database::File(path.clone()),
            // A named, shared-cache in-memory database unique to this store: the writer and
            // the readers are separate connections and must all see the same database.
            Location::Memory => Database::Memory(format!("sourceflow-mem-{}", Uuid::new_v4())),
        };
        // The writer's connection first: it keeps an in-memory database alive for as long as
        // the store lives.
        let (synchronous, busy_timeout) = (self.synchronous, self.busy_timeout);
        let connection = self
            .backoff
            .run("sqlite", "open", || {
                let database = database.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        open_writer(&database, synchronous, busy_timeout)
                    })
                    .await
                    .map_err(|e| StoreError::Backend(Box::new(e)))?
                    .map_err(classify_writer)
                }
            })
            .await?;

        let base = database.connect_options().busy_timeout(self.busy_timeout);
        let migrator_options = base.clone().synchronous(match self.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        });
        let mut migrator = self
            .backoff
            .run("sqlite", "open", || {
                let options = migrator_options.clone();
                async move { options.connect().await.map_err(classify) }
            })
            .await?;
        migrate(&mut migrator, &self.backoff).await?;
        if let Err(e) = migrator.close().await {
            tracing::debug!(error = %e, "sqlite migration connection close");
        }

        let streams = Arc::new(StreamReaders::new(
            database.clone(),
            self.busy_timeout,
            self.readers as usize,
        ));
        let reader_options = match database {
            Database::File(_) => base.read_only(true),
            Database::Memory(_) => base,
        };
        let readers = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .min_connections(0)
            .connect_with(reader_options)
            .await
            .map_err(classify)?;

        let stats = Arc::new(WriterStats::default());
        let (sender, receiver) = mpsc::channel(self.max_batch.saturating_mul(4).max(64));
        let (writer_stats, backoff, max_batch) =
            (stats.clone(), self.backoff.clone(), self.max_batch);
        let relax_projections = self.synchronous == Synchronous::Full;
        std::thread::Builder::new()
            .name("sourceflow-sqlite-writer".to_owned())
            .spawn(move || {
                writer::run(
                    connection,
                    receiver,
                    writer_stats,
                    backoff,
                    max_batch,
                    relax_projections,
                )
            })
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let location = match &self.location {
            Location::File(path) => path.display().to_string(),
            Location::Memory => ":memory:".to_owned(),
        };
        Ok(SqlStore::new(Sqlite {
            inner: Arc::new(Inner {
                writer: sender,
                readers,
                streams,
                stats,
                backoff: self.backoff,
                location,
            }),
        }))
    }
}

/// Opens the writer's connection with the settings sqlx gives a connection: the database
/// created if missing, `busy_timeout` set first, then `journal_mode` (WAL for a file, MEMORY in
/// memory), `foreign_keys=ON` and `synchronous`.
fn open_writer(
    database: &Database,
    synchronous: Synchronous,
    busy_timeout: Duration,
) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let (connection, journal_mode) = match database {
        Database::File(path) => (
            rusqlite::Connection::open_with_flags(
                path,
                flags | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE,
            )?,
            "WAL",
        ),
        Database::Memory(name) => (
            rusqlite::Connection::open_with_flags(
                format!("file:{name}?mode=memory&cache=shared"),
                flags | OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE,
            )?,
            "MEMORY",
        ),
    };
    connection.busy_timeout(busy_timeout)?;
    connection.pragma_update(None, "journal_mode", journal_mode)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    let synchronous = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    connection.set_prepared_statement_cache_capacity(writer::STATEMENT_CACHE);
    Ok(connection)
}

async fn migrate(
    connection: &mut sqlx::SqliteConnection,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    // Upgrading an existing file can take a while (v2 rebuilds the events table): say so, and
    // keep saying so while it runs.
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut *connection)
        .await
        .unwrap_or(None);
    let upgrading = applied.is_some_and(|applied| applied < latest);
    if let Some(applied) = applied.filter(|_| upgrading) {
        let events: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM sf_events")
            .fetch_one(&mut *connection)
            .await
            .unwrap_or(0);
        tracing::info!(
            from = applied,
            to = latest,
            events,
            "upgrading the SQLite schema (a v1 file's events table is rebuilt once, about 15 s per million events)"
        );
    }
    let started = Instant::now();
    let mut next_report = Duration::ZERO;
    // Waits for the lock and other failures are counted apart: however long a wait, a
    // migration that then fails because the other process applied it first is run again.
    let (mut waits, mut attempt) = (1, 1);
    loop {
        match with_progress(MIGRATOR.run(&mut *connection), started, upgrading).await {
            Ok(()) => {
                if upgrading {
                    tracing::info!(
                        seconds = started.elapsed().as_secs(),
                        "SQLite schema upgraded"
                    );
                }
                return Ok(());
            }
            // The file's write lock is held, most likely by another process applying this same
            // migration (a rebuild holds it for as long as it runs): wait for it, then find
            // the migration applied. A run that read the applied versions just before the
            // other process committed fails on its first statement instead (a column or table
            // that now exists) and is run again below.
            Err(e) if migration_is_busy(&e) && started.elapsed() < MIGRATION_WAIT => {
                if started.elapsed() >= next_report {
                    tracing::info!(
                        seconds = started.elapsed().as_secs(),
                        "waiting for another connection to release the SQLite file (another process may be upgrading its schema)"
                    );
                    next_report = started.elapsed() + REPORT_EVERY;
                }
                tokio::time::sleep(backoff.delay(waits).max(Duration::from_millis(100))).await;
                waits += 1;
            }
            Err(e) if attempt < backoff.max_attempts().clamp(1, 3) => {
                tracing::debug!(error = %e, attempt, "sqlite migration failed, retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(StoreError::Backend(Box::new(e))),
        }
    }
}

/// How long opening a file waits for another connection's lock during migrations (another
/// process upgrading a large file) before it fails.
const MIGRATION_WAIT: Duration = Duration::from_secs(30 * 60);

/// How often a long migration, or a wait for one, is reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs `migration`, logging every [`REPORT_EVERY`] that it is still running (an upgrade) or
/// waiting.
async fn with_progress<T>(
    migration: impl std::future::Future<Output = T>,
    started: Instant,
    upgrading: bool,
) -> T {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    tokio::pin!(migration);
    loop {
        tokio::select! {
            done = &mut migration => return done,
            _ = ticks.tick() => {
                let seconds = started.elapsed().as_secs();
                if upgrading {
                    tracing::info!(seconds, "still upgrading the SQLite schema");
                } else {
                    tracing::info!(seconds, "still waiting for the SQLite file's lock");
                }
            }
        }
    }
}
