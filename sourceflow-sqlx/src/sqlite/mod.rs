//! The embedded SQLite store: one file, WAL, one writer with group commit, a pool of readers.
//!
//! Every write goes through a single writer thread that owns the only writing connection (a
//! synchronous SQLite connection with its statements prepared once and cached). The writer
//! drains every queued unit of work, runs them in one `BEGIN IMMEDIATE` transaction and one
//! `COMMIT` (one fsync), then answers each caller with its own result; a unit that fails
//! part-way is isolated in a `SAVEPOINT` so that it alone is undone. Readers use a separate
//! sqlx pool and never block the writer (WAL); long reads of one stream (replay's pages) run on
//! read-only `rusqlite` connections of their own. Another process writing the same file is waited
//! for with `busy_timeout`, and a batch that still meets `SQLITE_BUSY` is retried with backoff.
//!
//! The modules: [`open`](self) (the builder, connections and migrations), `writer` (the writer
//! thread, its group commit and how each write is applied), `commit` (a unit of work's rows:
//! the duplicate check, command, events, outbox, models and positions), `keys`, `lifecycle` and
//! `schedule` (the writes of personal-data keys, stream lifecycles and schedules), `statement`
//! (running a cached statement), `streams` (long reads of one stream on connections of their
//! own), `database` (what a connection opens), `queries` (every statement), `columns` (how
//! values are stored as text), `error` (which errors are transient). Imports run one way: the
//! writer takes from the write modules, they take from `commit` and `statement`.

mod columns;
mod commit;
mod database;
mod error;
mod keys;
mod lease;
mod lifecycle;
mod open;
mod queries;
mod schedule;
mod statement;
mod streams;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sourceflow::message::StoredCommand;
use sourceflow::store::StoreError;
use sourceflow::{RecordedEvent, Sequence, StreamId};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::retry::Backoff;
use crate::sql::read::{Param, Query, ReadQueries, StreamQuery};
use crate::sql::write::{Write, Written};
use crate::sql::{Backend, SqlStore};
use columns::bound_text;
use open::Location;
pub use open::{SqliteStoreBuilder, MIGRATOR};
use writer::{Job, WriterStats};

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

/// The embedded SQLite store: one file, WAL, group commit, migrations applied on open.
///
/// Cheap to clone (clones share the writer and the reader pool). Open it with
/// [`SqliteStore::open`], [`SqliteStore::memory`] or [`SqliteStore::builder`]. The file can be
/// inspected with the `sqlite3` tool while the application runs (tables `sf_commands`,
/// `sf_events`, `sf_entities`, `sf_view_models`, `sf_positions`, `sf_outbox`, `sf_schedules`).
///
/// A [`SqlStore`] on the [`Sqlite`] backend.
pub type SqliteStore = SqlStore<Sqlite>;

/// The SQLite backend of a [`SqliteStore`]: the writer thread's queue and the reader pool.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<Job>,
    readers: SqlitePool,
    streams: Arc<streams::StreamReaders>,
    stats: Arc<WriterStats>,
    backoff: Backoff,
    location: String,
}

impl fmt::Debug for Sqlite {
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
        self.backend().stats()
    }

    /// The pool of read-only connections (for tooling and tests; writes go through the store).
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.backend().inner.readers
    }
}

impl Sqlite {
    fn stats(&self) -> SqliteStats {
        let stats = &self.inner.stats;
        SqliteStats {
            transactions: stats.transactions.load(Ordering::Relaxed),
            units: stats.units.load(Ordering::Relaxed),
            largest_batch: stats.largest_batch.load(Ordering::Relaxed),
            unsynced: stats.unsynced.load(Ordering::Relaxed),
        }
    }
}

impl Backend for Sqlite {
    const NAME: &'static str = "sqlite";
    const READS: ReadQueries = queries::READS;
    const INSPECT: crate::sql::inspect::InspectQueries = crate::sql::inspect::SQLITE;
    type Db = sqlx::Sqlite;

    fn readers(&self) -> &SqlitePool {
        &self.inner.readers
    }

    fn backoff(&self) -> &Backoff {
        &self.inner.backoff
    }

    /// UUIDs and timestamps are text.
    fn bind<'q>(query: Query<'q, sqlx::Sqlite>, param: &Param<'q>) -> Query<'q, sqlx::Sqlite> {
        match *param {
            Param::Text(text) => query.bind(text),
            Param::OptionalText(text) => query.bind(text),
            Param::Int(value) => query.bind(value),
            Param::Uuid(id) => query.bind(id.to_string()),
            Param::Time(time) => query.bind(bound_text(&time)),
        }
    }

    fn classify(err: sqlx::Error) -> StoreError {
        error::classify(err)
    }

    /// On the stream readers' own connections.
    async fn stream_commands(
        &self,
        query: StreamQuery,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let inner = &self.inner;
        inner
            .streams
            .read(&inner.backoff, query, stream, from, to)
            .await
    }

    /// On the stream readers' own connections.
    async fn stream_events(
        &self,
        query: StreamQuery,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = &self.inner;
        inner
            .streams
            .read(&inner.backoff, query, stream, from, to)
            .await
    }

    /// Every write goes to the writer thread.
    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(Job { write, reply })
            .await
            .map_err(|_| writer::stopped())?;
        answer.await.map_err(|_| writer::stopped())?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use sourceflow::message::{NewEvent, StoredCommand};
    use sourceflow::store::{ModelWrite, ProjectionCommit, Store, UnitOfWork};
    use sourceflow::{EntityId, Envelope, Position, Sequence, StreamId};
    use uuid::Uuid;

    use super::*;

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
            keys: Vec::new(),
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
            models: vec![ModelWrite {
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
}
