//! The embedded SQLite store: one file, WAL, one writer with group commit, a pool of readers.
//!
//! Every write goes through a single writer thread that owns the only writing connection (a
//! synchronous SQLite connection with its statements prepared once and cached). The writer
//! drains every queued unit of work, runs them in one `BEGIN IMMEDIATE` transaction and one
//! `COMMIT` (one fsync), then answers each caller with its own result; a unit that fails
//! part-way is isolated in a `SAVEPOINT` so that it alone is undone. Readers use a separate
//! sqlx pool and never block the writer (WAL). Another process writing the same file is waited
//! for with `busy_timeout`, and a batch that still meets `SQLITE_BUSY` is retried with backoff.

mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    InlineProjection, Page, PendingCommand, ProjectionCommit, Store, StoreAdmin, StoreError,
    UnitOfWork,
};
use sourceflow::{CommandReceipt, EntityId, Position, RecordedEvent, Sequence, StreamId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::retry::{classify, classify_sqlite, Backoff, Dialect};
use crate::sql::{
    command_columns, corrupt, db_int, db_limit, entity_row, event_columns, from_db, log_events,
    model_row, outbox_row, receipt, stream_commands, stream_events, Columns,
};
use writer::{Job, Write, WriterStats, Written};

/// The SQLite migrations, applied by [`SqliteStore::open`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How hard SQLite pushes each commit to disk (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is on disk when it returns: survives a process kill and a power loss.
    /// The default.
    #[default]
    Full,
    /// A durability trade for throughput: in WAL mode a commit survives a process kill, but
    /// the last commits before a power loss or OS crash may be lost (never corrupted).
    Normal,
}

/// What a [`SqliteStore`]'s writer has done: how many units of work it committed in how many
/// transactions. Fewer transactions than units means group commit shared fsyncs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Transactions committed (one fsync each with [`Synchronous::Full`]).
    pub transactions: u64,
    /// Units of work (commits, projection commits, single writes) that went through them,
    /// including those that failed with a conflict inside their savepoint.
    pub units: u64,
    /// The most units committed in one transaction.
    pub largest_batch: u64,
    /// Transactions of projection commits alone, which did not wait for an fsync of their own
    /// (with [`Synchronous::Full`]; see [`SqliteStore`]).
    pub unsynced: u64,
}

#[derive(Clone, Debug)]
enum Location {
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
    fn new(location: Location) -> Self {
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
            .run("sqlite.open", || {
                let database = database.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        open_writer(&database, synchronous, busy_timeout)
                    })
                    .await
                    .map_err(|e| StoreError::Backend(Box::new(e)))?
                    .map_err(classify_sqlite)
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
            .run("sqlite.open", || {
                let options = migrator_options.clone();
                async move {
                    options
                        .connect()
                        .await
                        .map_err(|e| classify(e, Dialect::Sqlite))
                }
            })
            .await?;
        migrate(&mut migrator, &self.backoff).await?;
        if let Err(e) = migrator.close().await {
            tracing::debug!(error = %e, "sqlite migration connection close");
        }

        let reader_options = match database {
            Database::File(_) => base.read_only(true),
            Database::Memory(_) => base,
        };
        let readers = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .min_connections(0)
            .connect_with(reader_options)
            .await
            .map_err(|e| classify(e, Dialect::Sqlite))?;

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
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: sender,
                readers,
                stats,
                backoff: self.backoff,
                location,
            }),
        })
    }
}

/// The database a store's connections open.
#[derive(Clone, Debug)]
enum Database {
    /// A file, created if missing.
    File(PathBuf),
    /// A named in-memory database in SQLite's shared cache, alive while a connection to it is
    /// open.
    Memory(String),
}

impl Database {
    /// The sqlx options of the migration and reader connections.
    fn connect_options(&self) -> SqliteConnectOptions {
        match self {
            Database::File(path) => SqliteConnectOptions::new().filename(path),
            Database::Memory(name) => SqliteConnectOptions::new()
                .filename(format!("file:{name}"))
                .in_memory(true)
                .shared_cache(true),
        }
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

/// True when a migration failed because another connection holds the file's lock.
fn migration_is_busy(err: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    matches!(
        err,
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _)
            if crate::retry::is_transient(e, Dialect::Sqlite)
    )
}

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

/// The embedded SQLite store: one file, WAL, group commit, migrations applied on open.
///
/// Cheap to clone (clones share the writer and the reader pool). Open it with
/// [`SqliteStore::open`], [`SqliteStore::memory`] or [`SqliteStore::builder`]. The file can be
/// inspected with the `sqlite3` tool while the application runs (tables `sf_commands`,
/// `sf_events`, `sf_entities`, `sf_view_models`, `sf_positions`, `sf_outbox`).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<Job>,
    readers: SqlitePool,
    stats: Arc<WriterStats>,
    backoff: Backoff,
    location: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.location)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database file at `path` with the defaults (created if missing, WAL,
    /// `synchronous=FULL`, 5 s busy timeout) and applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::builder(path).open().await
    }

    /// A private in-memory database, gone when the store is dropped. For tests.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if SQLite cannot allocate it.
    pub async fn memory() -> Result<Self, StoreError> {
        Self::memory_builder().open().await
    }

    /// Options for opening the database file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(Location::File(path.as_ref().to_path_buf()))
    }

    /// Options for a private in-memory database.
    pub fn memory_builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(Location::Memory)
    }

    /// What the writer has done so far (group commit at work).
    pub fn stats(&self) -> SqliteStats {
        let stats = &self.inner.stats;
        SqliteStats {
            transactions: stats.transactions.load(Ordering::Relaxed),
            units: stats.units.load(Ordering::Relaxed),
            largest_batch: stats.largest_batch.load(Ordering::Relaxed),
            unsynced: stats.unsynced.load(Ordering::Relaxed),
        }
    }

    /// The pool of read-only connections (for tooling and tests; writes go through the store).
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.inner.readers
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(Job { write, reply })
            .await
            .map_err(|_| writer::stopped())?;
        answer.await.map_err(|_| writer::stopped())?
    }

    async fn read<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.inner.backoff.run(what, op).await
    }

    /// The rows `query` returns for `stream` (bound first, as `stream_type, stream_id`) and
    /// the integers `bounds` bound after it, retried on transient faults.
    async fn stream_rows(
        &self,
        what: &'static str,
        query: &'static str,
        stream: &StreamId,
        bounds: &[i64],
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let pool = &self.inner.readers;
        self.read(what, || async move {
            let query = sqlx::query(query)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str());
            bounds
                .iter()
                .fold(query, |query, bound| query.bind(*bound))
                .fetch_all(pool)
                .await
                .map_err(db_err)
        })
        .await
    }
}

// ---- encoding -------------------------------------------------------------------------------

/// Timestamps as fixed-width UTC text: readable, and text order is time order.
pub(crate) fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("bad uuid {text:?}: {e}")))
}

impl Columns for SqliteRow {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn optional_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        parse_uuid(&self.text(index)?)
    }

    fn optional_uuid(&self, index: usize) -> Result<Option<Uuid>, StoreError> {
        let value: Option<String> = self.try_get(index).map_err(corrupt)?;
        value.as_deref().map(parse_uuid).transpose()
    }

    fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError> {
        parse_time(&self.text(index)?)
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    classify(e, Dialect::Sqlite)
}

// ---- queries --------------------------------------------------------------------------------
// Every query the store runs is here; `tests::hot_queries_use_indexes` checks their plans.

pub(crate) const LAST_SEQUENCE: &str =
    "SELECT COALESCE(MAX(sequence), 0) FROM sf_commands WHERE stream_type = ?1 AND stream_id = ?2";
pub(crate) const LOAD_COMMANDS: &str = concat!(
    "SELECT ",
    command_columns!(""),
    " FROM sf_commands WHERE stream_type = ?1 AND stream_id = ?2 \
     AND sequence >= ?3 AND sequence <= ?4 ORDER BY sequence"
);
/// The receipt of a command: its sequence and its events (the range of stream sequences the
/// command row records), in one query.
pub(crate) const FIND_RECEIPT: &str = concat!(
    "SELECT c.sequence, ",
    event_columns!("e.", ""),
    " FROM sf_commands c LEFT JOIN sf_events e \
     ON e.stream_type = c.stream_type AND e.stream_id = c.stream_id \
     AND e.sequence BETWEEN c.first_event AND c.last_event \
     WHERE c.stream_type = ?1 AND c.stream_id = ?2 AND c.message_id = ?3 ORDER BY e.sequence"
);
pub(crate) const READ_STREAM_RANGE: &str = concat!(
    "SELECT ",
    event_columns!("", ""),
    " FROM sf_events WHERE stream_type = ?1 AND stream_id = ?2 AND sequence >= ?3 \
     AND sequence <= ?4 ORDER BY sequence"
);
pub(crate) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!("", ""),
    " FROM sf_events WHERE position > ?1 ORDER BY position LIMIT ?2"
);
pub(crate) const READ_BETWEEN: &str = concat!(
    "SELECT ",
    event_columns!("", ""),
    " FROM sf_events WHERE created_at >= ?1 AND created_at < ?2 AND position > ?3 \
     ORDER BY position LIMIT ?4"
);
pub(crate) const HEAD: &str = "SELECT COALESCE(MAX(position), 0) FROM sf_events";
pub(crate) const GET_ENTITY: &str =
    "SELECT version, state FROM sf_entities WHERE entity_type = ?1 AND entity_id = ?2";
pub(crate) const GET_MODEL: &str =
    "SELECT state FROM sf_view_models WHERE model_type = ?1 AND model_id = ?2";
pub(crate) const LIST_MODELS_FIRST: &str = "SELECT model_id, state FROM sf_view_models \
     WHERE model_type = ?1 ORDER BY model_id LIMIT ?2";
pub(crate) const LIST_MODELS_AFTER: &str = "SELECT model_id, state FROM sf_view_models \
     WHERE model_type = ?1 AND model_id > ?2 ORDER BY model_id LIMIT ?3";
pub(crate) const GET_POSITION: &str = "SELECT position FROM sf_positions WHERE handler = ?1";
pub(crate) const OUTBOX_PENDING: &str = "SELECT id, stream_type, stream_id, message_id, name, \
     version, correlation_id, causation_id, created_at, payload FROM sf_outbox ORDER BY id LIMIT ?1";
/// A loose index scan: one index seek per entity type, however many commands each has.
pub(crate) const ENTITY_TYPES: &str = "WITH RECURSIVE types(t) AS ( \
       SELECT MIN(stream_type) FROM sf_commands \
       UNION ALL \
       SELECT (SELECT MIN(stream_type) FROM sf_commands WHERE stream_type > types.t) \
       FROM types WHERE types.t IS NOT NULL) \
     SELECT t FROM types WHERE t IS NOT NULL";
/// A loose index scan over the stream ids of one type, `?3` of them after `?2`.
pub(crate) const STREAM_IDS_AFTER: &str = "WITH RECURSIVE ids(id, n) AS ( \
       SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND stream_id > ?2), 1 \
       UNION ALL \
       SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND stream_id > ids.id), n + 1 \
       FROM ids WHERE ids.id IS NOT NULL AND n < ?3) \
     SELECT id FROM ids WHERE id IS NOT NULL";
/// As [`STREAM_IDS_AFTER`], from the first id (`?2` is unused but bound).
pub(crate) const STREAM_IDS_FIRST: &str = "WITH RECURSIVE ids(id, n) AS ( \
       SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND ?2 IS NULL), 1 \
       UNION ALL \
       SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND stream_id > ids.id), n + 1 \
       FROM ids WHERE ids.id IS NOT NULL AND n < ?3) \
     SELECT id FROM ids WHERE id IS NOT NULL";

/// The receipt of `message_id` in `stream`, if that command was accepted.
pub(crate) async fn find_receipt<'c, E>(
    executor: E,
    stream: &StreamId,
    message_id: Uuid,
) -> Result<Option<CommandReceipt>, StoreError>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = sqlx::query(FIND_RECEIPT)
        .bind(&*stream.entity_type)
        .bind(stream.id.as_str())
        .bind(message_id.to_string())
        .fetch_all(executor)
        .await
        .map_err(db_err)?;
    receipt(&rows, stream, message_id)
}

// ---- the contract ---------------------------------------------------------------------------

fn unexpected(written: Written) -> StoreError {
    writer::unexpected(written)
}

#[async_trait]
impl Store for SqliteStore {
    async fn load_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let bounds = [
            db_int(from.0, "sequence")?,
            to.map_or(Ok(i64::MAX), |to| db_int(to.0, "sequence"))?,
        ];
        let rows = self
            .stream_rows("sqlite.load_commands", LOAD_COMMANDS, stream, &bounds)
            .await?;
        stream_commands(&rows, stream, from)
    }

    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError> {
        let pool = &self.inner.readers;
        let last: i64 = self
            .read("sqlite.last_sequence", || async move {
                sqlx::query_scalar(LAST_SEQUENCE)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(Sequence(from_db(last, "sequence")?))
    }

    async fn find_receipt(
        &self,
        stream: &StreamId,
        message_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError> {
        let pool = &self.inner.readers;
        self.read("sqlite.find_receipt", || {
            find_receipt(pool, stream, message_id)
        })
        .await
    }

    async fn read_stream_range(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let bounds = [db_int(from.0, "sequence")?, db_int(to.0, "sequence")?];
        let rows = self
            .stream_rows(
                "sqlite.read_stream_range",
                READ_STREAM_RANGE,
                stream,
                &bounds,
            )
            .await?;
        stream_events(&rows, stream, from)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = db_int(after.0, "position")?;
        let pool = &self.inner.readers;
        let rows = self
            .read("sqlite.read_all", || async move {
                sqlx::query(READ_ALL)
                    .bind(after)
                    .bind(db_limit(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        log_events(&rows)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let pool = &self.inner.readers;
        let head: i64 = self
            .read("sqlite.head", || async move {
                sqlx::query_scalar(HEAD)
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(Position(from_db(head, "position")?))
    }

    async fn get_entity(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        let pool = &self.inner.readers;
        let row = self
            .read("sqlite.get_entity", || async move {
                sqlx::query(GET_ENTITY)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        row.as_ref().map(entity_row).transpose()
    }

    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let write = Write::PutEntity {
            stream: stream.clone(),
            expected,
            version,
            state,
        };
        self.write(write).await.map(drop)
    }

    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = &self.inner.readers;
        let state: Option<String> = self
            .read("sqlite.get_model", || async move {
                sqlx::query_scalar(GET_MODEL)
                    .bind(model_type)
                    .bind(id.as_str())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(state.map(String::into_bytes))
    }

    async fn list_models(
        &self,
        model_type: &str,
        page: Page,
    ) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError> {
        let pool = &self.inner.readers;
        let after = page.after.as_ref().map(EntityId::as_str);
        let limit = db_limit(page.limit);
        let rows = self
            .read("sqlite.list_models", || async move {
                let query = match after {
                    Some(after) => sqlx::query(LIST_MODELS_AFTER)
                        .bind(model_type)
                        .bind(after)
                        .bind(limit),
                    None => sqlx::query(LIST_MODELS_FIRST).bind(model_type).bind(limit),
                };
                query.fetch_all(pool).await.map_err(db_err)
            })
            .await?;
        rows.iter().map(model_row).collect()
    }

    async fn get_position(&self, handler: &str) -> Result<Position, StoreError> {
        let pool = &self.inner.readers;
        let position: Option<i64> = self
            .read("sqlite.get_position", || async move {
                sqlx::query_scalar(GET_POSITION)
                    .bind(handler)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(Position(from_db(position.unwrap_or(0), "position")?))
    }

    async fn set_position(&self, handler: &str, position: Position) -> Result<(), StoreError> {
        self.write(Write::SetPosition {
            handler: handler.to_owned(),
            position,
        })
        .await
        .map(drop)
    }

    #[tracing::instrument(name = "sourceflow.sqlite.commit", skip_all, fields(stream = %unit.command.envelope.stream, expected = %unit.expected))]
    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        match self.write(Write::Commit(unit)).await? {
            Written::Receipt(receipt) => Ok(receipt),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(name = "sourceflow.sqlite.commit_inline", skip_all, fields(stream = %unit.command.envelope.stream, expected = %unit.expected))]
    async fn commit_inline(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        match self.write(Write::CommitInline(unit, projections)).await? {
            Written::Inline(receipt, applied) => Ok((receipt, applied)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(name = "sourceflow.sqlite.commit_projection", skip_all, fields(handler = %commit.handler, position = %commit.position))]
    async fn commit_projection(&self, commit: ProjectionCommit) -> Result<(), StoreError> {
        self.write(Write::CommitProjection(commit)).await.map(drop)
    }

    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[&str],
    ) -> Result<(), StoreError> {
        self.write(Write::ResetProjection {
            handler: handler.to_owned(),
            model_types: model_types.iter().map(|t| (*t).to_owned()).collect(),
        })
        .await
        .map(drop)
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError> {
        let pool = &self.inner.readers;
        let rows = self
            .read("sqlite.outbox_pending", || async move {
                sqlx::query(OUTBOX_PENDING)
                    .bind(db_limit(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    async fn outbox_remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(Write::RemoveOutbox { ids: ids.to_vec() })
            .await
            .map(drop)
    }

    fn admin(&self) -> Option<&dyn StoreAdmin> {
        Some(self)
    }
}

#[async_trait]
impl StoreAdmin for SqliteStore {
    async fn append_command(
        &self,
        expected: Sequence,
        command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        match self
            .write(Write::AppendCommand { expected, command })
            .await?
        {
            Written::Sequence(sequence) => Ok(sequence),
            other => Err(unexpected(other)),
        }
    }

    async fn append_events(
        &self,
        stream: &StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let write = Write::AppendEvents {
            stream: stream.clone(),
            expected,
            events,
        };
        match self.write(write).await? {
            Written::Events(events) => Ok(events),
            other => Err(unexpected(other)),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // To the end: the highest sequence a column of the schema holds.
        self.read_stream_range(stream, from, Sequence(i64::MAX as u64))
            .await
    }

    async fn read_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = db_int(after.0, "position")?;
        let (from, to) = (time_text(&from), time_text(&to));
        let (from, to) = (from.as_str(), to.as_str());
        let pool = &self.inner.readers;
        let rows = self
            .read("sqlite.read_between", || async move {
                sqlx::query(READ_BETWEEN)
                    .bind(from)
                    .bind(to)
                    .bind(after)
                    .bind(db_limit(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        log_events(&rows)
    }

    async fn delete_entity(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.write(Write::DeleteEntity {
            stream: stream.clone(),
        })
        .await
        .map(drop)
    }

    async fn put_model(
        &self,
        model_type: &str,
        id: &EntityId,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let write = Write::PutModel {
            model_type: model_type.to_owned(),
            id: id.clone(),
            state,
        };
        self.write(write).await.map(drop)
    }

    async fn delete_model(&self, model_type: &str, id: &EntityId) -> Result<(), StoreError> {
        let write = Write::DeleteModel {
            model_type: model_type.to_owned(),
            id: id.clone(),
        };
        self.write(write).await.map(drop)
    }

    async fn clear_models(&self, model_type: &str) -> Result<(), StoreError> {
        self.write(Write::ClearModels {
            model_type: model_type.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        let pool = &self.inner.readers;
        self.read("sqlite.entity_types", || async move {
            sqlx::query_scalar(ENTITY_TYPES)
                .fetch_all(pool)
                .await
                .map_err(db_err)
        })
        .await
    }

    async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, StoreError> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let pool = &self.inner.readers;
        let after = page.after.as_ref().map(EntityId::as_str);
        let limit = db_limit(page.limit);
        let ids: Vec<String> = self
            .read("sqlite.stream_ids", || async move {
                let query = if after.is_some() {
                    STREAM_IDS_AFTER
                } else {
                    STREAM_IDS_FIRST
                };
                sqlx::query_scalar(query)
                    .bind(entity_type)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(ids.into_iter().map(EntityId::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sourceflow::Envelope;

    fn unit(stream: &StreamId, event_payload: &[u8]) -> UnitOfWork {
        let envelope = |name: &'static str| Envelope {
            message_id: Uuid::now_v7(),
            name: name.into(),
            version: 1,
            stream: stream.clone(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            timestamp: Utc::now(),
        };
        UnitOfWork {
            expected: Sequence::ZERO,
            command: StoredCommand {
                envelope: envelope("t.Do"),
                sequence: Sequence::ZERO,
                payload: br#"{"do":1}"#.to_vec(),
            },
            entity: Some(br#"{"done":1}"#.to_vec()),
            events: vec![NewEvent {
                envelope: envelope("t.Done"),
                payload: event_payload.to_vec(),
            }],
            outbox: vec![],
        }
    }

    /// A unit that fails after its first writes, inside a batch, is undone alone: the batch
    /// is re-run with a savepoint per unit and the other units commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_unit_failing_part_way_is_undone_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("batch.db");
        let store = SqliteStore::open(&path).await.expect("open");
        // Another connection holds the write lock, so the units queue up behind the first.
        let blocker = rusqlite::Connection::open(&path).expect("blocker");
        blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let commit = |id: &str, payload: &'static [u8]| {
            let store = store.clone();
            let stream = StreamId::new("t", id);
            tokio::spawn(async move { store.commit(unit(&stream, payload)).await })
        };
        let first = commit("first", br#"{"n":0}"#);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let batch = [
            commit("good-1", br#"{"n":1}"#),
            commit("bad", &[0xff, 0xfe]),
            commit("good-2", br#"{"n":2}"#),
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        blocker.execute_batch("COMMIT").expect("unlock");

        first.await.expect("join").expect("first commits");
        let [good_1, bad, good_2] = batch;
        good_1.await.expect("join").expect("good-1 commits");
        good_2.await.expect("join").expect("good-2 commits");
        let refused = bad.await.expect("join").expect_err("bad is refused");
        assert!(!refused.is_transient(), "{refused:?}");
        for (id, commands) in [("first", 1), ("good-1", 1), ("bad", 0), ("good-2", 1)] {
            let stream = StreamId::new("t", id);
            assert_eq!(
                store.last_sequence(&stream).await.expect("read"),
                Sequence(commands)
            );
            assert_eq!(
                store.get_entity(&stream).await.expect("read").is_some(),
                commands == 1
            );
        }
        assert_eq!(
            store
                .read_all(Position::START, 10)
                .await
                .expect("read")
                .len(),
            3
        );
        let stats = store.stats();
        assert_eq!(
            (stats.transactions, stats.units, stats.largest_batch),
            (2, 4, 3)
        );
    }

    /// With `synchronous=FULL`, a transaction holding only projection commits does not wait
    /// for an fsync of its own (the next command's commit makes it durable); a transaction
    /// with a command always does, also when a projection commit shares it. With `NORMAL`
    /// there is nothing to relax.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn projection_commits_alone_skip_their_own_fsync() {
        let projection = |expected: u64, position: u64| ProjectionCommit {
            handler: "t.View".into(),
            expected: Position(expected),
            position: Position(position),
            models: vec![sourceflow::store::ModelWrite {
                model_type: "t.Model".into(),
                id: EntityId::from("a"),
                state: Some(format!(r#"{{"at":{position}}}"#).into_bytes()),
            }],
            outbox: vec![],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relaxed.db");
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .commit(unit(&StreamId::new("t", "a"), br#"{"n":1}"#))
            .await
            .expect("commit");
        assert_eq!(store.stats().unsynced, 0);
        store
            .commit_projection(projection(0, 1))
            .await
            .expect("project");
        assert_eq!(store.stats().unsynced, 1);
        assert_eq!(
            store.get_position("t.View").await.expect("read"),
            Position(1)
        );
        assert_eq!(
            store
                .get_model("t.Model", &EntityId::from("a"))
                .await
                .expect("read"),
            Some(br#"{"at":1}"#.to_vec())
        );

        // A projection commit queued with a command shares the command's synchronous commit.
        let blocker = rusqlite::Connection::open(&path).expect("blocker");
        blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let first = {
            let store = store.clone();
            tokio::spawn(async move { store.commit(unit(&StreamId::new("t", "b"), b"{}")).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let together = {
            let (a, b) = (store.clone(), store.clone());
            [
                tokio::spawn(async move {
                    a.commit(unit(&StreamId::new("t", "c"), b"{}"))
                        .await
                        .map(drop)
                }),
                tokio::spawn(async move { b.commit_projection(projection(1, 2)).await }),
            ]
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        blocker.execute_batch("COMMIT").expect("unlock");
        first.await.expect("join").expect("first commits");
        for task in together {
            task.await.expect("join").expect("commits");
        }
        let stats = store.stats();
        assert_eq!((stats.transactions, stats.unsynced), (4, 1));
        store
            .commit(unit(&StreamId::new("t", "d"), b"{}"))
            .await
            .expect("commit");
        assert_eq!(store.stats().unsynced, 1);

        let normal = SqliteStore::builder(dir.path().join("normal.db"))
            .synchronous(Synchronous::Normal)
            .open()
            .await
            .expect("open");
        normal
            .commit_projection(projection(0, 1))
            .await
            .expect("project");
        assert_eq!(normal.stats().unsynced, 0);
    }

    /// The plan of every hot query uses an index: no full `SCAN` of the logs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_queries_use_indexes() {
        let store = SqliteStore::memory().await.expect("open");
        let pool = store.reader_pool();
        let queries: &[(&str, &str)] = &[
            ("last_sequence", LAST_SEQUENCE),
            ("load_commands", LOAD_COMMANDS),
            ("find_receipt", FIND_RECEIPT),
            ("read_stream_range", READ_STREAM_RANGE),
            ("read_all", READ_ALL),
            ("read_between", READ_BETWEEN),
            ("head", HEAD),
            ("get_entity", GET_ENTITY),
            ("get_model", GET_MODEL),
            ("list_models_first", LIST_MODELS_FIRST),
            ("list_models_after", LIST_MODELS_AFTER),
            ("get_position", GET_POSITION),
            ("entity_types", ENTITY_TYPES),
            ("stream_ids_first", STREAM_IDS_FIRST),
            ("stream_ids_after", STREAM_IDS_AFTER),
            ("insert_command", writer::INSERT_COMMAND),
            ("last_event_sequence", writer::LAST_EVENT_SEQUENCE),
            ("extend_command_events", writer::EXTEND_COMMAND_EVENTS),
            ("put_entity_cas", writer::PUT_ENTITY_CAS),
            ("cas_position", writer::CAS_POSITION),
            ("delete_model", writer::DELETE_MODEL),
            ("clear_models", writer::CLEAR_MODELS),
        ];
        for (name, query) in queries {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            eprintln!("{name}: {plan:?}");
            for step in &plan {
                for table in [
                    "sf_commands",
                    "sf_events",
                    "sf_entities",
                    "sf_view_models",
                    "sf_positions",
                ] {
                    // `SCAN t` is a full table scan, `SCAN t USING ... INDEX` a full index scan.
                    let scan = format!("SCAN {table}");
                    assert!(
                        !(*step == scan || step.starts_with(&format!("{scan} "))),
                        "{name} scans {table}: {plan:?}"
                    );
                }
            }
            assert!(
                plan.iter().any(|s| s.starts_with("SEARCH")),
                "{name} searches no index: {plan:?}"
            );
        }
    }
}
