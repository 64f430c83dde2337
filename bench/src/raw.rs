//! The physical floors (plain `rusqlite`, as the store's writer, on the same file and pragmas)
//! and fast seeding of large logs straight into the store's tables (with sqlx).
//!
//! Seeding writes rows that match `sourceflow-sqlx`'s SQLite schema (its migrations),
//! generated inside SQLite by a recursive CTE: a million events take seconds instead of the
//! minutes the commit API needs. Every workload reads a seeded row back through the store
//! before measuring, so a schema change shows up as a readable error, not as wrong numbers.
//!
//! [`postgres`] holds W8's Postgres floors, [`nats`] W9's.

pub mod nats;
pub mod postgres;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::domain::{Account, Deposit, Deposited, SUMMARY_VIEW};
use sourceflow::{Entity, Message};

/// The fixed timestamp of seeded rows (fixed-width RFC 3339 UTC, as the store writes them).
const SEED_TIME: &str = "2026-01-01T00:00:00.000000000Z";

/// A connection with the store's pragmas: WAL, `synchronous=FULL`, a 5 s busy timeout.
///
/// # Errors
/// If the file cannot be opened.
pub async fn connect(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A `rusqlite` connection set up as the store's writer sets up its own: WAL,
/// `synchronous=FULL`, a 5 s busy timeout, foreign keys on, a private cache.
///
/// # Errors
/// If the file cannot be opened.
pub fn open_writer(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let connection = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE,
    )?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

/// How many commits take [`RawInsert`]'s WAL past its first checkpoint.
const WARM_UP_COMMITS: u64 = 600;

/// W2's floor: one ~100-byte row per durable transaction, in a file of its own on the store's
/// file system, through a `rusqlite` connection set up like the store's writer (a cached
/// prepared statement, no driver thread).
pub struct RawInsert {
    connection: rusqlite::Connection,
    next: i64,
}

impl RawInsert {
    /// Opens the file with the store's pragmas and creates the floor's own table.
    ///
    /// # Errors
    /// Database errors.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let connection = open_writer(path)?;
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (stream_id TEXT NOT NULL, \
             sequence INTEGER NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (stream_id, sequence))",
            [],
        )?;
        Ok(Self {
            connection,
            next: 0,
        })
    }

    /// Commits rows until the file's write-ahead log has been checkpointed once, as the store's
    /// has after a few hundred commands: until its first checkpoint a WAL grows with every
    /// commit, and an fsync that also records a file's new size costs more than one that does
    /// not.
    ///
    /// # Errors
    /// Database errors.
    pub fn warm_up(&mut self, payload: &str) -> Result<(), rusqlite::Error> {
        // The WAL is checkpointed at 1,000 pages and each of these commits writes two.
        for n in 0..WARM_UP_COMMITS {
            self.insert(&format!("warm-up-{}", n % 100), payload)?;
        }
        Ok(())
    }

    /// One transaction inserting one row; returns how long it took.
    ///
    /// # Errors
    /// Database errors.
    pub fn insert(&mut self, stream_id: &str, payload: &str) -> Result<Duration, rusqlite::Error> {
        self.next += 1;
        let started = Instant::now();
        let tx = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO bench_raw (stream_id, sequence, payload) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![stream_id, self.next, payload])?;
        tx.commit()?;
        Ok(started.elapsed())
    }
}

/// The rows one command's unit of work writes, in the store's own tables and under their
/// indexes, with `rusqlite` and no framework: a command row, an entity upsert and an event row,
/// and with [`RawUnit::with_view`] the view's model upsert and position too. The gap between
/// this and [`RawInsert`] is the physical cost of the schema; the gap between the framework and
/// this is the framework.
pub struct RawUnit {
    connection: rusqlite::Connection,
    next: i64,
    view: bool,
}

impl RawUnit {
    /// Opens the file (already migrated by the store) with the store's pragmas; units without
    /// view writes.
    ///
    /// # Errors
    /// Database errors.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        Ok(Self {
            connection: open_writer(path)?,
            next: 0,
            view: false,
        })
    }

    /// Units that also upsert the view's model and move its position, as a command whose view
    /// is applied with it does.
    pub fn with_view(mut self) -> Self {
        self.view = true;
        self
    }

    /// One transaction writing `units` commands' rows, each to a fresh stream
    /// `("raw.Account", raw-N)` (so sequences are always 1). Returns the time.
    ///
    /// # Errors
    /// Database errors.
    pub fn commit(
        &mut self,
        units: u64,
        payload: &str,
        state: &str,
        event: &str,
    ) -> Result<Duration, rusqlite::Error> {
        use rusqlite::params;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let started = Instant::now();
        let tx = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for _ in 0..units {
            self.next += 1;
            let stream_id = format!("raw-{:09}", self.next);
            let id = uuid::Uuid::now_v7().to_string();
            tx.prepare_cached(
                "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, \
                 version, correlation_id, causation_id, created_at, payload, first_event, \
                 last_event) \
                 VALUES ('raw.Account', ?1, 1, ?2, 'bench.Deposit', 1, ?2, NULL, ?3, ?4, 1, 1)",
            )?
            .execute(params![stream_id, id, now, payload])?;
            tx.prepare_cached(
                "INSERT INTO sf_entities (entity_type, entity_id, version, state, updated_at) \
                 VALUES ('raw.Account', ?1, 1, ?2, ?3) ON CONFLICT (entity_type, entity_id) \
                 DO UPDATE SET version = excluded.version, state = excluded.state",
            )?
            .execute(params![stream_id, state, now])?;
            let position: i64 = tx
                .prepare_cached(
                    "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, \
                     message_id, name, version, correlation_id, causation_id, created_at, \
                     payload) \
                     VALUES ('raw.Account', ?1, 1, 1, ?2, 'bench.Deposited', 1, ?2, NULL, ?3, \
                     ?4) RETURNING position",
                )?
                .query_row(params![stream_id, id, now, event], |row| row.get(0))?;
            if self.view {
                tx.prepare_cached(
                    "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
                     VALUES ('raw.AccountSummary', ?1, ?2, ?3) \
                     ON CONFLICT (model_type, model_id) \
                     DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                )?
                .execute(params![stream_id, state, now])?;
                tx.prepare_cached(
                    "INSERT INTO sf_positions (handler, position, updated_at) \
                     VALUES ('raw.AccountSummary', ?1, ?2) ON CONFLICT (handler) \
                     DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                )?
                .execute(params![position, now])?;
            }
        }
        tx.commit()?;
        Ok(started.elapsed())
    }
}

/// Appends `count` deposit commands to stream `(Account, stream_id)`, sequences 1..=count, in
/// one transaction. The store must have been opened on `path` first (it migrates).
///
/// # Errors
/// Database errors (including a schema that no longer matches).
pub async fn seed_commands(path: &Path, stream_id: &str, count: u64) -> Result<(), sqlx::Error> {
    seed_commands_named(path, stream_id, count, Deposit::NAME).await
}

/// [`seed_commands`] with the payloads of [`Deposit`] stored as version 1 of the command named
/// `name` (W6 seeds [`Credit`](crate::domain::Credit) rows this way, which need an upcaster).
///
/// # Errors
/// Database errors.
pub async fn seed_commands_named(
    path: &Path,
    stream_id: &str,
    count: u64,
    name: &str,
) -> Result<(), sqlx::Error> {
    seed_command_rows(path, stream_id, count, name, &Deposit::sqlite_json("i")).await
}

/// Appends `count` commands named `name` to stream `(Account, stream_id)`, sequences
/// 1..=count, in one transaction, each with the payload the SQLite expression `json` gives
/// for the row number `i`.
///
/// # Errors
/// Database errors.
pub async fn seed_command_rows(
    path: &Path,
    stream_id: &str,
    count: u64,
    name: &str,
    json: &str,
) -> Result<(), sqlx::Error> {
    let mut connection = connect(path).await?;
    let mut tx = connection.begin().await?;
    let sql = format!(
        "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
         correlation_id, causation_id, created_at, payload) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3) \
         SELECT ?1, ?2, i, printf('00000000-0000-7000-8000-%012x', i), ?4, 1, \
         printf('00000000-0000-7000-8000-%012x', i), NULL, ?5, {json} FROM n"
    );
    sqlx::query(&sql)
        .bind(Account::NAME)
        .bind(stream_id)
        .bind(db_count(count))
        .bind(name)
        .bind(SEED_TIME)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    connection.close().await
}

/// The sum of `Deposit::nth(i).amount` for `i` in `1..=count`: what a replay must find.
pub fn seeded_balance(count: u64) -> i64 {
    (1..=count).map(|i| Deposit::nth(i).amount).sum()
}

/// Appends `count` `Deposited` events spread round-robin over `streams` accounts
/// (`account_id(0..streams)`), in transactions of 100,000, and moves the view's position to
/// the end so that building a flow does not project them (only `rebuild` does). `progress` is
/// called after each transaction with the number written so far.
///
/// # Errors
/// Database errors.
pub async fn seed_events(
    path: &Path,
    count: u64,
    streams: u64,
    mut progress: impl FnMut(u64),
) -> Result<(), sqlx::Error> {
    const CHUNK: u64 = 100_000;
    let mut connection = connect(path).await?;
    let sql = "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, \
         message_id, name, version, correlation_id, causation_id, created_at, payload) \
         WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         SELECT ?4, printf('acct-%06d', i % ?3), i / ?3 + 1, i / ?3 + 1, \
         printf('00000000-0000-7000-8000-%012x', i), ?5, 1, \
         printf('00000000-0000-7000-8000-%012x', i), NULL, ?6, \
         printf('{\"amount\":50,\"balance\":%d}', (i / ?3 + 1) * 50) FROM n";
    let mut written = 0;
    while written < count {
        let end = (written + CHUNK).min(count);
        let mut tx = connection.begin().await?;
        sqlx::query(sql)
            .bind(db_count(written))
            .bind(db_count(end - 1))
            .bind(db_count(streams))
            .bind(Account::NAME)
            .bind(Deposited::NAME)
            .bind(SEED_TIME)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        written = end;
        progress(written);
    }
    sqlx::query(
        "INSERT INTO sf_positions (handler, position, updated_at) \
         SELECT ?1, COALESCE(MAX(position), 0), ?2 FROM sf_events WHERE true \
         ON CONFLICT (handler) DO UPDATE SET position = excluded.position",
    )
    .bind(SUMMARY_VIEW)
    .bind(SEED_TIME)
    .execute(&mut connection)
    .await?;
    connection.close().await
}

/// W6's floor: reads the same rows as `load_commands` (same columns, same order) through a
/// `rusqlite` connection, JSON-decodes each payload into [`Deposit`] and folds the balance.
///
/// # Errors
/// Database errors, or a payload that does not decode.
pub fn replay_floor(
    connection: &rusqlite::Connection,
    stream_id: &str,
) -> anyhow::Result<(u64, i64)> {
    let mut statement = connection.prepare_cached(
        "SELECT stream_type, stream_id, sequence, message_id, name, version, correlation_id, \
         causation_id, created_at, payload FROM sf_commands WHERE stream_type = ?1 \
         AND stream_id = ?2 AND sequence >= ?3 AND sequence <= ?4 ORDER BY sequence",
    )?;
    let mut rows = statement.query(rusqlite::params![Account::NAME, stream_id, 1_i64, i64::MAX])?;
    let (mut count, mut balance) = (0u64, 0i64);
    while let Some(row) = rows.next()? {
        let payload = row.get_ref(9)?.as_str()?;
        let deposit: Deposit = serde_json::from_str(payload)?;
        balance += deposit.amount;
        count += 1;
    }
    Ok((count, balance))
}

fn db_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{self, AccountSummary, Components, SummaryView};

    /// Seeded rows read back through the store, and the view's position key is right: the
    /// flow's build projects nothing, `rebuild` projects everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeded_logs_match_the_store_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.db");
        let store = sourceflow_sqlx::SqliteStore::open(&path)
            .await
            .expect("open");
        seed_commands(&path, "replay-0", 50)
            .await
            .expect("seed commands");
        seed_events(&path, 1_000, 10, |_| {})
            .await
            .expect("seed events");

        let sagas = domain::flow(store.clone(), Components::SagaOnly)
            .await
            .expect("build");
        let account: Account = sagas.replay("replay-0").await.expect("replay");
        assert_eq!(account.balance, seeded_balance(50));
        assert_eq!(account.deposits, 50);
        let flow = domain::flow(store, Components::ViewOnly)
            .await
            .expect("build");
        assert_eq!(
            flow.stats().events_projected,
            0,
            "build projected seeded events"
        );
        assert_eq!(flow.rebuild::<SummaryView>().await.expect("rebuild"), 1_000);
        let summary: AccountSummary = flow
            .view_model(domain::account_id(3))
            .await
            .expect("read")
            .expect("projected");
        assert_eq!((summary.deposits, summary.balance), (100, 100 * 50));

        let connection = open_writer(&path).expect("connect");
        let floor = replay_floor(&connection, "replay-0").expect("floor");
        assert_eq!(floor, (50, seeded_balance(50)));
    }
}
