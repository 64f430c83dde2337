//! W8's Postgres floors, through a plain sqlx pool: one row per statement, and the rows one
//! command's unit of work writes in one statement.
//!
//! Both run in a schema of their own (the pool's `search_path`), with tables of the store's
//! shape: text keys in the "C" collation, JSON payloads, the same primary keys, unique keys
//! and indexes as the store's schema. Neither orders anything globally: sequences come from a
//! process-wide counter, so they are unique in every stream and no two writers ever wait for
//! each other. That is what any design with the same durability (one synchronous commit per
//! command) stays under.

use std::sync::atomic::{AtomicI64, Ordering};

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::domain::{account_id, Deposit};

/// The floors' tables, shaped like the store's.
const TABLES: &[&str] = &[
    "CREATE TABLE bench_raw (stream_id text COLLATE \"C\" NOT NULL, sequence bigint NOT NULL, \
     payload json NOT NULL, PRIMARY KEY (stream_id, sequence))",
    "CREATE TABLE sf_commands (stream_type text COLLATE \"C\" NOT NULL, \
     stream_id text COLLATE \"C\" NOT NULL, sequence bigint NOT NULL, message_id uuid NOT NULL, \
     name text NOT NULL, version bigint NOT NULL, correlation_id uuid NOT NULL, \
     causation_id uuid, created_at timestamptz NOT NULL, payload json NOT NULL, \
     PRIMARY KEY (stream_type, stream_id, sequence), \
     UNIQUE (stream_type, stream_id, message_id))",
    "CREATE TABLE sf_events (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
     stream_type text COLLATE \"C\" NOT NULL, stream_id text COLLATE \"C\" NOT NULL, \
     sequence bigint NOT NULL, command_sequence bigint NOT NULL, message_id uuid NOT NULL, \
     name text NOT NULL, version bigint NOT NULL, correlation_id uuid NOT NULL, \
     causation_id uuid, created_at timestamptz NOT NULL, payload json NOT NULL, \
     UNIQUE (stream_type, stream_id, sequence))",
    "CREATE INDEX sf_events_by_command ON sf_events (stream_type, stream_id, command_sequence)",
    "CREATE INDEX sf_events_by_time ON sf_events (created_at, position)",
    "CREATE TABLE sf_entities (entity_type text COLLATE \"C\" NOT NULL, \
     entity_id text COLLATE \"C\" NOT NULL, version bigint NOT NULL, state json NOT NULL, \
     updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (entity_type, entity_id))",
    "CREATE TABLE sf_view_models (model_type text COLLATE \"C\" NOT NULL, \
     model_id text COLLATE \"C\" NOT NULL, state json NOT NULL, \
     updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (model_type, model_id))",
];

/// One command's rows in one statement: the command row, the entity-state upsert, the event
/// row and the view-model upsert.
const UNIT_OF_WORK: &str = "WITH command AS ( \
       INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
         correlation_id, created_at, payload) \
       VALUES ('bench.Account', $1, $2, $3, 'bench.Deposit', 1, $3, now(), $4::json)), \
     entity AS ( \
       INSERT INTO sf_entities (entity_type, entity_id, version, state) \
       VALUES ('bench.Account', $1, $2, $5::json) \
       ON CONFLICT (entity_type, entity_id) \
       DO UPDATE SET version = excluded.version, state = excluded.state, updated_at = now()), \
     event AS ( \
       INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
         name, version, correlation_id, created_at, payload) \
       VALUES ('bench.Account', $1, $2, $2, $6, 'bench.Deposited', 1, $3, now(), $7::json)) \
     INSERT INTO sf_view_models (model_type, model_id, state) \
     VALUES ('bench.AccountSummary', $1, $8::json) \
     ON CONFLICT (model_type, model_id) DO UPDATE SET state = excluded.state, updated_at = now()";

/// Connection options for `url` with `schema` as the search path: the peers' and the floors'
/// tables each live in a schema of their own.
///
/// # Errors
/// If `url` is not a Postgres URL.
pub fn in_schema(url: &str, schema: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?.options([("search_path", schema)]))
}

/// Creates the floors' tables in the pool's schema (which must be empty).
///
/// # Errors
/// Database errors.
pub async fn create_tables(pool: &PgPool) -> Result<(), sqlx::Error> {
    for ddl in TABLES {
        sqlx::query(ddl).execute(pool).await?;
    }
    Ok(())
}

/// The one-row floor: one ~100-byte row per statement (a transaction of its own).
pub struct RowInsert {
    pool: PgPool,
    next: AtomicI64,
}

impl RowInsert {
    /// The floor on `pool`, whose schema holds [`create_tables`]'s tables.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            next: AtomicI64::new(0),
        }
    }

    /// Inserts the row of the `n`-th deposit to `account`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert(&self, account: u64, n: u64) -> anyhow::Result<()> {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        sqlx::query(
            "INSERT INTO bench_raw (stream_id, sequence, payload) VALUES ($1, $2, $3::json)",
        )
        .bind(account_id(account))
        .bind(sequence)
        .bind(serde_json::to_string(&Deposit::nth(n))?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The unit-of-work floor: the four rows of one command in one statement.
pub struct UnitOfWork {
    pool: PgPool,
    next: AtomicI64,
}

impl UnitOfWork {
    /// The floor on `pool`, whose schema holds [`create_tables`]'s tables.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            next: AtomicI64::new(0),
        }
    }

    /// Writes the rows of the `n`-th deposit to `account`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn commit(&self, account: u64, n: u64) -> anyhow::Result<()> {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let deposit = Deposit::nth(n);
        let balance = deposit.amount * sequence;
        sqlx::query(UNIT_OF_WORK)
            .bind(account_id(account))
            .bind(sequence)
            .bind(uuid::Uuid::now_v7())
            .bind(serde_json::to_string(&deposit)?)
            .bind(format!(r#"{{"balance":{balance},"deposits":{sequence}}}"#))
            .bind(uuid::Uuid::now_v7())
            .bind(format!(
                r#"{{"amount":{},"balance":{balance}}}"#,
                deposit.amount
            ))
            .bind(format!(r#"{{"balance":{balance},"deposits":{sequence}}}"#))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
