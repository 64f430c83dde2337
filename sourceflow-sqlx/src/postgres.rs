//! The Postgres store: several processes sharing one database, JSONB payloads, a pool.
//!
//! # One round trip per command
//! A unit of work is one statement in its own transaction: the optimistic command append (a
//! resent message id is caught by its unique key), the entity state, the outbox, the events and
//! the inline views' writes. The common shape (one event, no follow-up commands, at most one
//! view writing one model) is a single SQL statement whose steps feed each other; anything else
//! calls the `sf_commit_inline` function (migration `0005`), as does the common shape when the
//! single statement meets events appended to its stream without a command (it reads the
//! stream's last event before it waits for the append lock). A first command on a stream reads
//! its entity and the views' models in one more round trip. sqlx prepares each statement once per
//! connection, and the pool does not ping connections before handing them out.
//!
//! # Positions become visible in order (serialised appends)
//! A sequence hands out positions in allocation order, but transactions commit in any order: a
//! transaction that took position 10 may commit after one that took 11, and a catch-up reader
//! that saw 11 would then never read 10. To rule this out, every transaction that inserts
//! events first takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`), held until
//! it commits. Positions are therefore allocated and committed one transaction at a time, in
//! lock order, and a reader can never observe a position before a lower one that is still to
//! commit.
//!
//! The trade-off: appends of events are serialised across the database (per schema: the lock
//! key is derived from the schema name). The lock is taken as late as possible (after the
//! command, entity and outbox writes, right before the event rows) so only the event inserts and
//! the commit itself are serialised; commands on different streams still run their checks and
//! writes concurrently. Throughput of event-producing commits is bounded by one commit (one WAL
//! flush) at a time. A transaction-id snapshot rule (readers hold back until older transactions
//! finish) would avoid the lock at the cost of more complex and laggier reads.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    EntityWithModels, InlineProjection, OutboxMessage, Page, PendingCommand, ProjectionCommit,
    Store, StoreAdmin, StoreError, UnitOfWork,
};
use sourceflow::{CommandReceipt, EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Executor, Postgres, Row};
use uuid::Uuid;

use crate::retry::{classify, is_unique_violation, Backoff, Dialect};
use crate::sql::{
    command_columns, corrupt, db_int, db_limit, entity_row, event_columns, from_db, last_writes,
    log_events, model_row, outbox_row, payload_text, receipt, stream_commands, stream_events,
    Columns,
};

/// The Postgres migrations, applied by [`PostgresStore::connect`] and
/// [`PostgresStore::from_pool`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Why a store could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Schema names are spliced into `CREATE SCHEMA` and `search_path`, so only plain
    /// identifiers are accepted.
    #[error("invalid schema name {0:?}: use 1 to 63 ASCII letters, digits or underscores, not starting with a digit")]
    InvalidSchema(String),
    /// The connection's `search_path` names no existing schema.
    #[error("the connection has no current schema (check search_path)")]
    NoSchema,
}

/// True for a name usable as an unquoted Postgres identifier (and so safe to splice).
pub fn is_valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Options for connecting a [`PostgresStore`]; start from [`PostgresStore::builder`].
#[derive(Clone, Debug)]
pub struct PostgresStoreBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    backoff: Backoff,
}

impl PostgresStoreBuilder {
    /// Keep the tables in `schema`, created if missing: every pooled connection gets
    /// `search_path = schema`. Validated as an identifier.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Pool size (default 10).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// How long to wait for a pooled connection before a transient error (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Retry policy for transient faults (serialization failures, deadlocks, dropped
    /// connections, server restarts).
    ///
    /// Takes a [`Backoff`] or a [`sourceflow::RetryPolicy`].
    pub fn backoff(mut self, backoff: impl Into<Backoff>) -> Self {
        self.backoff = backoff.into();
        self
    }

    /// Connects, creates the schema if one was given, and applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a bad URL or schema name, a refused connection or a failed
    /// migration; [`StoreError::Transient`] if the server stays unreachable.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let mut options = PgConnectOptions::from_str(&self.url).map_err(backend)?;
        if let Some(schema) = &self.schema {
            if !is_valid_schema_name(schema) {
                return Err(backend(ConfigError::InvalidSchema(schema.clone())));
            }
            create_schema(&options, schema, &self.backoff).await?;
            // A startup parameter: set once per connection, no extra round trip.
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // A ping per checkout would double the round trips; broken connections surface as
            // I/O errors, which are retried.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        PostgresStore::open(pool, self.backoff).await
    }
}

async fn create_schema(
    options: &PgConnectOptions,
    schema: &str,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    backoff
        .run("postgres.create_schema", || async move {
            let mut connection = options.connect().await.map_err(db_err)?;
            // The name is a validated identifier; DDL cannot take it as a parameter.
            let created = connection
                .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                .await;
            let _ = connection.close().await;
            match created {
                Ok(_) => Ok(()),
                // Two connections creating the same schema at once: the loser sees a unique
                // violation on pg_namespace, and the schema exists.
                Err(e) if is_unique_violation(&e) => Ok(()),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
}

/// The Postgres store: one shared log for many processes, JSONB payloads, a connection pool.
///
/// Cheap to clone (clones share the pool). See the [module docs](self) for how commits take
/// one round trip and how positions become visible in order.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    lock_key: i64,
    schema: String,
    backoff: Backoff,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("lock_key", &self.lock_key)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (e.g. `postgres://user@host/db`) with a pool of 10 connections and
    /// applies pending migrations, in the connection's default schema.
    ///
    /// # Errors
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// As [`connect`](Self::connect), with the tables in `schema` (created if missing).
    ///
    /// # Errors
    /// As [`PostgresStoreBuilder::connect`]; a schema name that is not a plain identifier is
    /// refused with [`ConfigError::InvalidSchema`] as the source.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::builder(url).schema(schema).connect().await
    }

    /// Options for connecting to `url`.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_owned(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
        }
    }

    /// A store over an existing pool; applies pending migrations in the pool's current schema
    /// (its `search_path`). For best latency, build the pool with `test_before_acquire(false)`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the migrations fail or no schema is current.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        Self::open(pool, Backoff::default()).await
    }

    async fn open(pool: PgPool, backoff: Backoff) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await.map_err(backend)?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .map_err(db_err)?;
        let schema = schema.ok_or_else(|| backend(ConfigError::NoSchema))?;
        Ok(Self {
            lock_key: append_lock_key(&schema),
            pool,
            schema,
            backoff,
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The advisory lock key that serialises event appends in this schema.
    pub fn append_lock_key(&self) -> i64 {
        self.lock_key
    }

    /// Sets the retry policy for transient faults.
    ///
    /// Takes a [`Backoff`] or a [`sourceflow::RetryPolicy`].
    pub fn with_backoff(mut self, backoff: impl Into<Backoff>) -> Self {
        self.backoff = backoff.into();
        self
    }

    async fn retry<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.backoff.run(what, op).await
    }

    /// The rows `query` returns for `stream` (bound first, as `stream_type, stream_id`) and
    /// the integers `bounds` bound after it, retried on transient faults.
    async fn stream_rows(
        &self,
        what: &'static str,
        query: &'static str,
        stream: &StreamId,
        bounds: &[i64],
    ) -> Result<Vec<PgRow>, StoreError> {
        let pool = &self.pool;
        self.retry(what, || async move {
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

/// The advisory lock key of a schema: FNV-1a of `sourceflow.events/<schema>`, so that every
/// process sharing a schema uses the same key and different schemas do not contend.
fn append_lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "sourceflow.events/".bytes().chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn db_err(e: sqlx::Error) -> StoreError {
    classify(e, Dialect::Postgres)
}

/// Postgres keeps microseconds: receipts report what was stored.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

// ---- row mapping ----------------------------------------------------------------------------

fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(index).map_err(corrupt)
}

impl Columns for PgRow {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        get(self, index)
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        get(self, index)
    }

    fn optional_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        get(self, index)
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        get(self, index)
    }

    fn optional_uuid(&self, index: usize) -> Result<Option<Uuid>, StoreError> {
        get(self, index)
    }

    fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError> {
        get(self, index)
    }
}

/// The columns of new events, as arrays for one function call.
struct EventArrays<'a> {
    ids: Vec<Uuid>,
    names: Vec<&'a str>,
    versions: Vec<i64>,
    correlations: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<&'a str>,
}

impl<'a> EventArrays<'a> {
    fn new(events: &'a [NewEvent]) -> Result<Self, StoreError> {
        Ok(Self {
            ids: events.iter().map(|e| e.envelope.message_id).collect(),
            names: events.iter().map(|e| &*e.envelope.name).collect(),
            versions: events
                .iter()
                .map(|e| i64::from(e.envelope.version))
                .collect(),
            correlations: events.iter().map(|e| e.envelope.correlation_id).collect(),
            causations: events.iter().map(|e| e.envelope.causation_id).collect(),
            times: events.iter().map(|e| e.envelope.timestamp).collect(),
            payloads: events
                .iter()
                .map(|e| payload_text(&e.payload, "event payload"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The recorded events, once the store has given them sequences after `last`,
    /// `positions`, and stored `payloads` (JSONB text: what a later read returns).
    fn recorded(
        events: &[NewEvent],
        stream: &StreamId,
        command_sequence: Sequence,
        last: Sequence,
        (positions, payloads): (Vec<i64>, Vec<String>),
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if positions.len() != events.len() || payloads.len() != events.len() {
            return Err(StoreError::Corrupt(format!(
                "{} positions and {} payloads returned for {} events",
                positions.len(),
                payloads.len(),
                events.len()
            )));
        }
        events
            .iter()
            .zip(positions.into_iter().zip(payloads))
            .enumerate()
            .map(|(i, (event, (position, payload)))| {
                let mut envelope = event.envelope.clone();
                envelope.stream = stream.clone();
                envelope.timestamp = micros(envelope.timestamp);
                Ok(RecordedEvent {
                    envelope,
                    sequence: Sequence(last.0 + i as u64 + 1),
                    command_sequence,
                    position: Position(from_db(position, "position")?),
                    payload: payload.into_bytes(),
                })
            })
            .collect()
    }
}

/// The columns of outbox messages, as arrays for one function call.
struct OutboxArrays<'a> {
    stream_types: Vec<&'a str>,
    stream_ids: Vec<&'a str>,
    ids: Vec<Uuid>,
    names: Vec<&'a str>,
    versions: Vec<i64>,
    correlations: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<&'a str>,
}

impl<'a> OutboxArrays<'a> {
    fn new(messages: &'a [OutboxMessage]) -> Result<Self, StoreError> {
        Ok(Self {
            stream_types: messages
                .iter()
                .map(|m| &*m.envelope.stream.entity_type)
                .collect(),
            stream_ids: messages
                .iter()
                .map(|m| m.envelope.stream.id.as_str())
                .collect(),
            ids: messages.iter().map(|m| m.envelope.message_id).collect(),
            names: messages.iter().map(|m| &*m.envelope.name).collect(),
            versions: messages
                .iter()
                .map(|m| i64::from(m.envelope.version))
                .collect(),
            correlations: messages.iter().map(|m| m.envelope.correlation_id).collect(),
            causations: messages.iter().map(|m| m.envelope.causation_id).collect(),
            times: messages.iter().map(|m| m.envelope.timestamp).collect(),
            payloads: messages
                .iter()
                .map(|m| payload_text(&m.payload, "outbox payload"))
                .collect::<Result<_, _>>()?,
        })
    }
}

// ---- queries --------------------------------------------------------------------------------

const COMMIT_INLINE: &str = "SELECT r_status, r_sequence, r_first_event, r_positions, \
     r_payloads, r_projected FROM sf_commit_inline(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
     $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, \
     $38, $39)";
/// The common unit of work as one statement: a command with an entity state and one event,
/// no follow-up commands, and at most one inline view writing one model (`$20` NULL: none).
/// Each step feeds the next, so the append lock is taken before the event's position is
/// allocated, as in `sf_commit_inline`; the view's compare-and-set also checks that the event
/// landed where the projection assumed (`$22 + 1`, stream sequence `$23`). No row: nothing
/// written, a resent message id or a moved stream (the caller looks the message id up).
const COMMIT_ONE: &str = "WITH cmd AS ( \
       INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
                                correlation_id, causation_id, created_at, payload) \
       SELECT $2, $3, $4 + 1, $5, $6, $7, $8, $9, $10, $11::jsonb \
        WHERE coalesce((SELECT c.sequence FROM sf_commands c \
                         WHERE c.stream_type = $2 AND c.stream_id = $3 \
                         ORDER BY c.sequence DESC LIMIT 1), 0) = $4 \
       ON CONFLICT DO NOTHING \
       RETURNING sequence), \
     ent AS ( \
       INSERT INTO sf_entities AS s (entity_type, entity_id, version, state, updated_at) \
       SELECT $2, $3, cmd.sequence, $12::jsonb, now() FROM cmd \
       ON CONFLICT (entity_type, entity_id) DO UPDATE \
       SET version = EXCLUDED.version, state = EXCLUDED.state, \
           updated_at = EXCLUDED.updated_at), \
     lk AS (SELECT cmd.sequence, pg_advisory_xact_lock($1) FROM cmd), \
     ev AS ( \
       INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
                              name, version, correlation_id, causation_id, created_at, payload) \
       SELECT $2, $3, coalesce((SELECT e.sequence FROM sf_events e \
                                 WHERE e.stream_type = $2 AND e.stream_id = $3 \
                                 ORDER BY e.sequence DESC LIMIT 1), 0) + 1, \
              lk.sequence, $13, $14, $15, $16, $17, $18, $19::jsonb FROM lk \
       RETURNING position, sequence, payload::text AS payload), \
     pos AS ( \
       UPDATE sf_positions s SET position = ev.position, updated_at = now() FROM ev \
        WHERE $21 <> 0 AND s.handler = $20 AND s.position = $21 \
          AND ev.position = $22 + 1 AND ev.sequence = $23 \
       RETURNING 1), \
     pos0 AS ( \
       INSERT INTO sf_positions AS s (handler, position, updated_at) \
       SELECT $20, ev.position, now() FROM ev \
        WHERE $21 = 0 AND ev.position = $22 + 1 AND ev.sequence = $23 \
       ON CONFLICT (handler) DO UPDATE \
       SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at \
       WHERE s.position = 0 \
       RETURNING 1), \
     moved AS (SELECT 1 FROM pos UNION ALL SELECT 1 FROM pos0), \
     mdl AS ( \
       INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at) \
       SELECT $24, $25, $26::jsonb, now() FROM moved \
       ON CONFLICT (model_type, model_id) DO UPDATE \
       SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at) \
     SELECT cmd.sequence, ev.position, ev.sequence, ev.payload, EXISTS (SELECT 1 FROM moved) \
       FROM cmd, ev";
const APPEND_EVENTS: &str = "SELECT r_ok, r_command_sequence, r_positions, r_payloads FROM \
     sf_append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const COMMIT_PROJECTION: &str = "SELECT sf_commit_projection($1, $2, $3, $4, $5, $6, $7, $8, \
     $9, $10, $11, $12, $13, $14, $15, $16, $17)";
const INSERT_COMMAND: &str = "INSERT INTO sf_commands (stream_type, stream_id, sequence, \
     message_id, name, version, correlation_id, causation_id, created_at, payload) \
     SELECT $1, $2, $3 + 1, $4, $5, $6, $7, $8, $9, $10::jsonb \
     WHERE COALESCE((SELECT sequence FROM sf_commands WHERE stream_type = $1 \
            AND stream_id = $2 ORDER BY sequence DESC LIMIT 1), 0) = $3";
const LAST_SEQUENCE: &str =
    "SELECT COALESCE((SELECT sequence FROM sf_commands WHERE stream_type = $1 \
     AND stream_id = $2 ORDER BY sequence DESC LIMIT 1), 0)";
const LOAD_COMMANDS: &str = concat!(
    "SELECT ",
    command_columns!("::text"),
    " FROM sf_commands WHERE stream_type = $1 AND stream_id = $2 \
     AND sequence >= $3 AND sequence <= $4 ORDER BY sequence"
);
const FIND_RECEIPT: &str = concat!(
    "SELECT c.sequence, ",
    event_columns!("e.", "::text"),
    " FROM sf_commands c LEFT JOIN sf_events e ON e.stream_type = c.stream_type \
     AND e.stream_id = c.stream_id AND e.command_sequence = c.sequence \
     WHERE c.stream_type = $1 AND c.stream_id = $2 AND c.message_id = $3 ORDER BY e.sequence"
);
const READ_STREAM_RANGE: &str = concat!(
    "SELECT ",
    event_columns!("", "::text"),
    " FROM sf_events WHERE stream_type = $1 AND stream_id = $2 AND sequence >= $3 \
     AND sequence <= $4 ORDER BY sequence"
);
const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!("", "::text"),
    " FROM sf_events WHERE position > $1 ORDER BY position LIMIT $2"
);
const READ_BETWEEN: &str = concat!(
    "SELECT ",
    event_columns!("", "::text"),
    " FROM sf_events WHERE created_at >= $1 AND created_at < $2 AND position > $3 \
     ORDER BY position LIMIT $4"
);
const HEAD: &str = "SELECT COALESCE(MAX(position), 0) FROM sf_events";
const GET_ENTITY: &str = "SELECT version, state::text FROM sf_entities \
     WHERE entity_type = $1 AND entity_id = $2";
const PUT_ENTITY_NEW: &str = "INSERT INTO sf_entities AS s (entity_type, entity_id, version, \
     state, updated_at) VALUES ($1, $2, $3, $4::jsonb, now()) \
     ON CONFLICT (entity_type, entity_id) DO UPDATE \
     SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at \
     WHERE s.version = 0";
const PUT_ENTITY_CAS: &str = "UPDATE sf_entities SET version = $3, state = $4::jsonb, \
     updated_at = now() WHERE entity_type = $1 AND entity_id = $2 AND version = $5";
const DELETE_ENTITY: &str = "DELETE FROM sf_entities WHERE entity_type = $1 AND entity_id = $2";
/// The entity (row `n = 0`) and the present ones of the asked models (row `n` = 1-based index).
const GET_ENTITY_WITH_MODELS: &str = "SELECT 0::bigint AS n, version, state::text \
     FROM sf_entities WHERE entity_type = $1 AND entity_id = $2 \
     UNION ALL SELECT u.n, NULL::bigint, m.state::text \
     FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(model_type, model_id, n) \
     JOIN sf_view_models m ON m.model_type = u.model_type AND m.model_id = u.model_id";
const GET_MODEL: &str =
    "SELECT state::text FROM sf_view_models WHERE model_type = $1 AND model_id = $2";
const PUT_MODEL: &str = "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
     VALUES ($1, $2, $3::jsonb, now()) ON CONFLICT (model_type, model_id) DO UPDATE \
     SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at";
const DELETE_MODEL: &str = "DELETE FROM sf_view_models WHERE model_type = $1 AND model_id = $2";
const LIST_MODELS_FIRST: &str = "SELECT model_id, state::text FROM sf_view_models \
     WHERE model_type = $1 ORDER BY model_id LIMIT $2";
const LIST_MODELS_AFTER: &str = "SELECT model_id, state::text FROM sf_view_models \
     WHERE model_type = $1 AND model_id > $2 ORDER BY model_id LIMIT $3";
const CLEAR_MODELS: &str = "DELETE FROM sf_view_models WHERE model_type = $1";
const GET_POSITION: &str = "SELECT position FROM sf_positions WHERE handler = $1";
const SET_POSITION: &str = "INSERT INTO sf_positions (handler, position, updated_at) \
     VALUES ($1, $2, now()) ON CONFLICT (handler) DO UPDATE \
     SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at";
/// One statement, so one transaction: the models and the position go together.
const RESET_PROJECTION: &str = "WITH models AS (DELETE FROM sf_view_models \
     WHERE model_type = ANY($2)) DELETE FROM sf_positions WHERE handler = $1";
const OUTBOX_PENDING: &str = "SELECT id, stream_type, stream_id, message_id, name, version, \
     correlation_id, causation_id, created_at, payload::text FROM sf_outbox ORDER BY id LIMIT $1";
const OUTBOX_REMOVE: &str = "DELETE FROM sf_outbox WHERE id = ANY($1)";
/// A loose index scan: one index probe per entity type.
const ENTITY_TYPES: &str = "WITH RECURSIVE types(t) AS ( \
       SELECT MIN(stream_type) FROM sf_commands \
       UNION ALL \
       SELECT (SELECT MIN(stream_type) FROM sf_commands WHERE stream_type > types.t) \
       FROM types WHERE types.t IS NOT NULL) \
     SELECT t FROM types WHERE t IS NOT NULL";
/// A loose index scan over the stream ids of type `$1`: `$3` of them after `$2` (or from the
/// first when `$2` is null).
const STREAM_IDS: &str = "WITH RECURSIVE ids(id, n) AS ( \
       SELECT (SELECT MIN(stream_id) FROM sf_commands \
               WHERE stream_type = $1 AND ($2::text IS NULL OR stream_id > $2::text)), 1 \
       UNION ALL \
       SELECT (SELECT MIN(stream_id) FROM sf_commands \
               WHERE stream_type = $1 AND stream_id > ids.id), n + 1 \
       FROM ids WHERE ids.id IS NOT NULL AND n < $3) \
     SELECT id FROM ids WHERE id IS NOT NULL";

async fn find_receipt<'c, E>(
    executor: E,
    stream: &StreamId,
    message_id: Uuid,
) -> Result<Option<CommandReceipt>, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    let rows = sqlx::query(FIND_RECEIPT)
        .bind(&*stream.entity_type)
        .bind(stream.id.as_str())
        .bind(message_id)
        .fetch_all(executor)
        .await
        .map_err(db_err)?;
    receipt(&rows, stream, message_id)
}

fn conflict(stream: &StreamId, expected: Sequence) -> StoreError {
    StoreError::Conflict {
        stream: stream.clone(),
        expected,
    }
}

// ---- the contract ---------------------------------------------------------------------------

impl PostgresStore {
    /// One round trip: the common shape as one statement (`COMMIT_ONE`), anything else through
    /// `sf_commit_inline`.
    async fn commit_unit(
        &self,
        unit: UnitOfWork,
        projections: &[InlineProjection],
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        let envelope = &unit.command.envelope;
        let stream = &envelope.stream;
        let expected = db_int(unit.expected.0, "sequence")?;
        let payload = payload_text(&unit.command.payload, "command payload")?;
        let entity = unit
            .entity
            .as_deref()
            .map(|state| payload_text(state, "entity state"))
            .transpose()?;
        let events = EventArrays::new(&unit.events)?;
        let outbox = OutboxArrays::new(&unit.outbox)?;
        let (events, outbox) = (&events, &outbox);
        let (pool, lock_key) = (&self.pool, self.lock_key);
        let inline = InlineArrays::new(projections)?;
        let inline = &inline;
        enum Outcome {
            Committed(Sequence, Sequence, (Vec<i64>, Vec<String>), Vec<bool>),
            Duplicate(CommandReceipt),
        }
        // Both statements start with the command: lock key, stream, expected sequence, the
        // command's envelope and payload, the entity state (`$1`-`$12`).
        let command = |sql: &'static str| {
            sqlx::query(sql)
                .bind(lock_key)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .bind(expected)
                .bind_envelope(envelope)
                .bind(payload)
                .bind(entity)
        };
        let command = &command;
        // Nothing was written: a resent message id (answered with its receipt) or a stream
        // that moved on (also when a concurrent commit to the stream got there first).
        let not_written = || async move {
            match find_receipt(pool, stream, envelope.message_id).await? {
                Some(receipt) => Ok(Outcome::Duplicate(receipt)),
                None => Err(conflict(stream, unit.expected)),
            }
        };
        let not_written = &not_written;
        // The common shape goes as one statement (`COMMIT_ONE`), the rest through the function.
        let one = entity.is_some()
            && unit.events.len() == 1
            && unit.outbox.is_empty()
            && projections.len() <= 1
            && inline.delete_owners.is_empty()
            && inline.put_owners.len() == projections.len();
        let outcome = self
            .retry("postgres.commit", || async move {
                if one {
                    let row = command(COMMIT_ONE)
                        .bind(events.ids[0])
                        .bind(events.names[0])
                        .bind(events.versions[0])
                        .bind(events.correlations[0])
                        .bind(events.causations[0])
                        .bind(events.times[0])
                        .bind(events.payloads[0])
                        .bind(inline.handlers.first().copied())
                        .bind(inline.expected.first().copied())
                        .bind(inline.after.first().copied())
                        .bind(inline.first_sequences.first().copied())
                        .bind(inline.put_types.first().copied())
                        .bind(inline.put_ids.first().copied())
                        .bind(inline.put_states.first().copied())
                        .fetch_optional(pool)
                        .await;
                    let outcome = match row {
                        Ok(Some(row)) => {
                            let sequence = Sequence(from_db(get(&row, 0)?, "sequence")?);
                            let first: i64 = get(&row, 2)?;
                            let last_event = Sequence(from_db(first - 1, "event sequence")?);
                            let stored = (vec![get(&row, 1)?], vec![get(&row, 3)?]);
                            let projected: bool = get(&row, 4)?;
                            let projected = if projections.is_empty() {
                                Vec::new()
                            } else {
                                vec![projected]
                            };
                            Some(Ok(Outcome::Committed(
                                sequence, last_event, stored, projected,
                            )))
                        }
                        Ok(None) => Some(not_written().await),
                        // The statement read the stream's last event before it waited for the
                        // append lock, and events appended without a command (`append_events`)
                        // committed meanwhile: nothing was written, and the function, which
                        // reads under the lock, commits the unit.
                        Err(e) if is_event_sequence_taken(&e) => None,
                        Err(e) if is_unique_violation(&e) => Some(not_written().await),
                        Err(e) => Some(Err(db_err(e))),
                    };
                    if let Some(outcome) = outcome {
                        return outcome;
                    }
                }
                let query = command(COMMIT_INLINE)
                    .bind(&events.ids)
                    .bind(&events.names)
                    .bind(&events.versions)
                    .bind(&events.correlations)
                    .bind(&events.causations)
                    .bind(&events.times)
                    .bind(&events.payloads)
                    .bind(&outbox.stream_types)
                    .bind(&outbox.stream_ids)
                    .bind(&outbox.ids)
                    .bind(&outbox.names)
                    .bind(&outbox.versions)
                    .bind(&outbox.correlations)
                    .bind(&outbox.causations)
                    .bind(&outbox.times)
                    .bind(&outbox.payloads)
                    .bind(&inline.handlers)
                    .bind(&inline.expected)
                    .bind(&inline.after)
                    .bind(&inline.first_sequences)
                    .bind(&inline.put_owners)
                    .bind(&inline.put_types)
                    .bind(&inline.put_ids)
                    .bind(&inline.put_states)
                    .bind(&inline.delete_owners)
                    .bind(&inline.delete_types)
                    .bind(&inline.delete_ids);
                let row = query.fetch_one(pool).await;
                let row = match row {
                    Ok(row) => row,
                    // A concurrent commit to the same stream got there first: either the same
                    // message id (a concurrent duplicate, answered with its receipt) or the
                    // same sequence (a conflict).
                    Err(e) if is_unique_violation(&e) => return not_written().await,
                    Err(e) => return Err(db_err(e)),
                };
                let status: String = get(&row, 0)?;
                match status.as_str() {
                    "ok" => {
                        let sequence = Sequence(from_db(get(&row, 1)?, "sequence")?);
                        let first: i64 = get(&row, 2)?;
                        let last_event = Sequence(from_db(first - 1, "event sequence")?);
                        let stored = (get(&row, 3)?, get(&row, 4)?);
                        let projected: Vec<bool> = get(&row, 5)?;
                        Ok(Outcome::Committed(sequence, last_event, stored, projected))
                    }
                    "duplicate" => match find_receipt(pool, stream, envelope.message_id).await? {
                        Some(receipt) => Ok(Outcome::Duplicate(receipt)),
                        None => Err(StoreError::Corrupt(format!(
                            "command {} in {stream} vanished",
                            envelope.message_id
                        ))),
                    },
                    "conflict" => Err(conflict(stream, unit.expected)),
                    other => Err(StoreError::Corrupt(format!(
                        "sf_commit returned status {other:?}"
                    ))),
                }
            })
            .await?;
        match outcome {
            Outcome::Duplicate(receipt) => Ok((receipt, vec![false; projections.len()])),
            Outcome::Committed(sequence, last_event, stored, mut projected) => {
                projected.resize(projections.len(), false);
                let receipt = CommandReceipt {
                    message_id: envelope.message_id,
                    stream: stream.clone(),
                    sequence,
                    events: EventArrays::recorded(
                        &unit.events,
                        stream,
                        sequence,
                        last_event,
                        stored,
                    )?,
                    duplicate: false,
                    retries: 0,
                };
                Ok((receipt, projected))
            }
        }
    }
}

/// Binds an envelope's columns in the order every command statement lists them: message id,
/// name, version, correlation id, causation id, time.
trait BindEnvelope<'q> {
    fn bind_envelope(self, envelope: &'q Envelope) -> Self;
}

impl<'q> BindEnvelope<'q> for sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    fn bind_envelope(self, envelope: &'q Envelope) -> Self {
        self.bind(envelope.message_id)
            .bind(&*envelope.name)
            .bind(i64::from(envelope.version))
            .bind(envelope.correlation_id)
            .bind(envelope.causation_id)
            .bind(envelope.timestamp)
    }
}

/// True when `err` is the stream's event sequence already being taken (`COMMIT_ONE` computed
/// it from a snapshot older than the append lock).
fn is_event_sequence_taken(err: &sqlx::Error) -> bool {
    is_unique_violation(err)
        && err
            .as_database_error()
            .and_then(|db| db.constraint())
            .is_some_and(|name| name == "sf_events_stream_sequence_key")
}

/// Inline projections as the parallel arrays `sf_commit_inline` takes; model writes are tagged
/// with the 1-based index of their projection.
#[derive(Default)]
struct InlineArrays<'a> {
    handlers: Vec<&'a str>,
    expected: Vec<i64>,
    after: Vec<i64>,
    first_sequences: Vec<i64>,
    put_owners: Vec<i32>,
    put_types: Vec<&'a str>,
    put_ids: Vec<&'a str>,
    put_states: Vec<&'a str>,
    delete_owners: Vec<i32>,
    delete_types: Vec<&'a str>,
    delete_ids: Vec<&'a str>,
}

impl<'a> InlineArrays<'a> {
    fn new(projections: &'a [InlineProjection]) -> Result<Self, StoreError> {
        let mut arrays = Self::default();
        for (index, projection) in projections.iter().enumerate() {
            let owner = i32::try_from(index + 1).unwrap_or(i32::MAX);
            arrays.handlers.push(&projection.handler);
            arrays
                .expected
                .push(db_int(projection.expected.0, "position")?);
            arrays.after.push(db_int(projection.after.0, "position")?);
            arrays
                .first_sequences
                .push(db_int(projection.first_sequence.0, "event sequence")?);
            for write in last_writes(&projection.models) {
                match &write.state {
                    Some(state) => {
                        arrays.put_owners.push(owner);
                        arrays.put_types.push(&write.model_type);
                        arrays.put_ids.push(write.id.as_str());
                        arrays
                            .put_states
                            .push(payload_text(state, "view model state")?);
                    }
                    None => {
                        arrays.delete_owners.push(owner);
                        arrays.delete_types.push(&write.model_type);
                        arrays.delete_ids.push(write.id.as_str());
                    }
                }
            }
        }
        Ok(arrays)
    }
}

#[async_trait]
impl Store for PostgresStore {
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
            .stream_rows("postgres.load_commands", LOAD_COMMANDS, stream, &bounds)
            .await?;
        stream_commands(&rows, stream, from)
    }

    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError> {
        let pool = &self.pool;
        let last: i64 = self
            .retry("postgres.last_sequence", || async move {
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
        let pool = &self.pool;
        self.retry("postgres.find_receipt", || {
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
                "postgres.read_stream_range",
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
        let pool = &self.pool;
        let rows = self
            .retry("postgres.read_all", || async move {
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
        let pool = &self.pool;
        let head: i64 = self
            .retry("postgres.head", || async move {
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
        let pool = &self.pool;
        let row = self
            .retry("postgres.get_entity", || async move {
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
        let state = payload_text(&state, "entity state")?;
        let version = db_int(version.0, "entity version")?;
        let expected_value = db_int(expected.0, "entity version")?;
        let pool = &self.pool;
        let done = self
            .retry("postgres.put_entity", || async move {
                let query = if expected_value == 0 {
                    sqlx::query(PUT_ENTITY_NEW)
                } else {
                    sqlx::query(PUT_ENTITY_CAS)
                };
                let query = query
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .bind(version)
                    .bind(state);
                let query = if expected_value == 0 {
                    query
                } else {
                    query.bind(expected_value)
                };
                query.execute(pool).await.map_err(db_err)
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(conflict(stream, expected));
        }
        Ok(())
    }

    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = &self.pool;
        let state: Option<String> = self
            .retry("postgres.get_model", || async move {
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
        let pool = &self.pool;
        let after = page.after.as_ref().map(EntityId::as_str);
        let limit = db_limit(page.limit);
        let rows = self
            .retry("postgres.list_models", || async move {
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
        let pool = &self.pool;
        let position: Option<i64> = self
            .retry("postgres.get_position", || async move {
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
        let position = db_int(position.0, "position")?;
        let pool = &self.pool;
        self.retry("postgres.set_position", || async move {
            sqlx::query(SET_POSITION)
                .bind(handler)
                .bind(position)
                .execute(pool)
                .await
                .map_err(db_err)
        })
        .await
        .map(drop)
    }

    #[tracing::instrument(name = "sourceflow.postgres.commit", skip_all, fields(stream = %unit.command.envelope.stream, expected = %unit.expected))]
    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        Ok(self.commit_unit(unit, &[]).await?.0)
    }

    #[tracing::instrument(name = "sourceflow.postgres.commit_inline", skip_all, fields(stream = %unit.command.envelope.stream, expected = %unit.expected))]
    async fn commit_inline(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        self.commit_unit(unit, &projections).await
    }

    async fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> Result<EntityWithModels, StoreError> {
        let types: Vec<&str> = models.iter().map(|(t, _)| *t).collect();
        let ids: Vec<&str> = models.iter().map(|(_, id)| id.as_str()).collect();
        let (pool, types, ids) = (&self.pool, &types, &ids);
        let rows = self
            .retry("postgres.get_entity_with_models", || async move {
                sqlx::query(GET_ENTITY_WITH_MODELS)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .bind(types)
                    .bind(ids)
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        let mut entity = None;
        let mut found = vec![None; models.len()];
        for row in &rows {
            let n: i64 = get(row, 0)?;
            let state: String = get(row, 2)?;
            match usize::try_from(n) {
                Ok(0) => {
                    let version: i64 = get(row, 1)?;
                    entity = Some((
                        Sequence(from_db(version, "entity version")?),
                        state.into_bytes(),
                    ));
                }
                Ok(n) if n <= models.len() => found[n - 1] = Some(state.into_bytes()),
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "model row {n} of {}",
                        models.len()
                    )))
                }
            }
        }
        Ok((entity, found))
    }

    #[tracing::instrument(name = "sourceflow.postgres.commit_projection", skip_all, fields(handler = %commit.handler, position = %commit.position))]
    async fn commit_projection(&self, commit: ProjectionCommit) -> Result<(), StoreError> {
        let writes = last_writes(&commit.models);
        let mut puts: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
        let mut deletes: (Vec<&str>, Vec<&str>) = Default::default();
        for write in writes {
            match &write.state {
                Some(state) => {
                    puts.0.push(&write.model_type);
                    puts.1.push(write.id.as_str());
                    puts.2.push(payload_text(state, "view model state")?);
                }
                None => {
                    deletes.0.push(&write.model_type);
                    deletes.1.push(write.id.as_str());
                }
            }
        }
        let outbox = OutboxArrays::new(&commit.outbox)?;
        let (puts, deletes, outbox) = (&puts, &deletes, &outbox);
        let expected = db_int(commit.expected.0, "position")?;
        let position = db_int(commit.position.0, "position")?;
        let handler = &*commit.handler;
        let pool = &self.pool;
        let applied: bool = self
            .retry("postgres.commit_projection", || async move {
                sqlx::query_scalar(COMMIT_PROJECTION)
                    .bind(handler)
                    .bind(expected)
                    .bind(position)
                    .bind(&puts.0)
                    .bind(&puts.1)
                    .bind(&puts.2)
                    .bind(&deletes.0)
                    .bind(&deletes.1)
                    .bind(&outbox.stream_types)
                    .bind(&outbox.stream_ids)
                    .bind(&outbox.ids)
                    .bind(&outbox.names)
                    .bind(&outbox.versions)
                    .bind(&outbox.correlations)
                    .bind(&outbox.causations)
                    .bind(&outbox.times)
                    .bind(&outbox.payloads)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            // Two first batches of one handler raced to insert its position.
                            StoreError::PositionConflict {
                                handler: handler.to_owned(),
                                expected: commit.expected,
                            }
                        } else {
                            db_err(e)
                        }
                    })
            })
            .await?;
        if applied {
            Ok(())
        } else {
            Err(StoreError::PositionConflict {
                handler: commit.handler.into_owned(),
                expected: commit.expected,
            })
        }
    }

    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[&str],
    ) -> Result<(), StoreError> {
        let pool = &self.pool;
        self.retry("postgres.reset_projection", || async move {
            sqlx::query(RESET_PROJECTION)
                .bind(handler)
                .bind(model_types)
                .execute(pool)
                .await
                .map_err(db_err)
        })
        .await
        .map(drop)
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError> {
        let pool = &self.pool;
        let rows = self
            .retry("postgres.outbox_pending", || async move {
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
        let ids = ids
            .iter()
            .map(|id| db_int(*id, "outbox id"))
            .collect::<Result<Vec<_>, _>>()?;
        let (ids, pool) = (&ids, &self.pool);
        self.retry("postgres.outbox_remove", || async move {
            sqlx::query(OUTBOX_REMOVE)
                .bind(ids)
                .execute(pool)
                .await
                .map_err(db_err)
        })
        .await
        .map(drop)
    }

    fn admin(&self) -> Option<&dyn StoreAdmin> {
        Some(self)
    }
}

#[async_trait]
impl StoreAdmin for PostgresStore {
    async fn append_command(
        &self,
        expected: Sequence,
        command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        let envelope = &command.envelope;
        let stream = &envelope.stream;
        let expected_value = db_int(expected.0, "sequence")?;
        let payload = payload_text(&command.payload, "command payload")?;
        let pool = &self.pool;
        let inserted = self
            .retry("postgres.append_command", || async move {
                let done = sqlx::query(INSERT_COMMAND)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .bind(expected_value)
                    .bind_envelope(envelope)
                    .bind(payload)
                    .execute(pool)
                    .await;
                match done {
                    Ok(done) => Ok(done.rows_affected() == 1),
                    Err(e) if is_unique_violation(&e) => Ok(false),
                    Err(e) => Err(db_err(e)),
                }
            })
            .await?;
        if inserted {
            Ok(expected.next())
        } else {
            Err(conflict(stream, expected))
        }
    }

    async fn append_events(
        &self,
        stream: &StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let arrays = EventArrays::new(&events)?;
        let arrays = &arrays;
        let expected_value = db_int(expected.0, "sequence")?;
        let (pool, lock_key) = (&self.pool, self.lock_key);
        let row = self
            .retry("postgres.append_events", || async move {
                sqlx::query(APPEND_EVENTS)
                    .bind(lock_key)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .bind(expected_value)
                    .bind(&arrays.ids)
                    .bind(&arrays.names)
                    .bind(&arrays.versions)
                    .bind(&arrays.correlations)
                    .bind(&arrays.causations)
                    .bind(&arrays.times)
                    .bind(&arrays.payloads)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            conflict(stream, expected)
                        } else {
                            db_err(e)
                        }
                    })
            })
            .await?;
        if !get::<bool>(&row, 0)? {
            return Err(conflict(stream, expected));
        }
        let command_sequence = Sequence(from_db(get(&row, 1)?, "sequence")?);
        let stored = (get(&row, 2)?, get(&row, 3)?);
        EventArrays::recorded(&events, stream, command_sequence, expected, stored)
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
        let pool = &self.pool;
        let rows = self
            .retry("postgres.read_between", || async move {
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
        let pool = &self.pool;
        self.retry("postgres.delete_entity", || async move {
            sqlx::query(DELETE_ENTITY)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .execute(pool)
                .await
                .map_err(db_err)
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
        let state = payload_text(&state, "view model state")?;
        let pool = &self.pool;
        self.retry("postgres.put_model", || async move {
            sqlx::query(PUT_MODEL)
                .bind(model_type)
                .bind(id.as_str())
                .bind(state)
                .execute(pool)
                .await
                .map_err(db_err)
        })
        .await
        .map(drop)
    }

    async fn delete_model(&self, model_type: &str, id: &EntityId) -> Result<(), StoreError> {
        let pool = &self.pool;
        self.retry("postgres.delete_model", || async move {
            sqlx::query(DELETE_MODEL)
                .bind(model_type)
                .bind(id.as_str())
                .execute(pool)
                .await
                .map_err(db_err)
        })
        .await
        .map(drop)
    }

    async fn clear_models(&self, model_type: &str) -> Result<(), StoreError> {
        let pool = &self.pool;
        self.retry("postgres.clear_models", || async move {
            sqlx::query(CLEAR_MODELS)
                .bind(model_type)
                .execute(pool)
                .await
                .map_err(db_err)
        })
        .await
        .map(drop)
    }

    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        let pool = &self.pool;
        self.retry("postgres.entity_types", || async move {
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
        let pool = &self.pool;
        let after = page.after.as_ref().map(EntityId::as_str);
        let limit = db_limit(page.limit);
        let ids: Vec<String> = self
            .retry("postgres.stream_ids", || async move {
                sqlx::query_scalar(STREAM_IDS)
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

    #[test]
    fn schema_names_are_identifiers() {
        for ok in ["t_abc", "_x", "Schema1"] {
            assert!(is_valid_schema_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"; DROP TABLE x; --",
            &"x".repeat(64),
        ] {
            assert!(!is_valid_schema_name(bad), "{bad}");
        }
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_eq!(append_lock_key("public"), append_lock_key("public"));
        assert_ne!(append_lock_key("public"), append_lock_key("t_abc"));
    }
}
