//! The Postgres store: several processes sharing one database, exact JSON payloads, a pool.
//!
//! # One round trip per command
//! A unit of work alone is one statement in its own transaction: the optimistic command append
//! (a resent message id is caught by its unique key), the entity state, the outbox, the events
//! and the inline views' writes. The common shape (one event, no follow-up commands, at most one
//! view writing one model) is a single SQL statement whose steps feed each other; anything else
//! calls the `sf_commit_inline` function (migration `0006`), as does the common shape when the
//! single statement meets events appended to its stream without a command (it reads the
//! stream's last event before it waits for the append lock). Units of concurrent senders share
//! one call and one transaction (see
//! [group commit](#group-commit-concurrent-senders-share-one-transaction)). A first command on
//! a stream reads its entity and the views' models in one more round trip. sqlx prepares each
//! statement once per connection, and the pool does not ping connections before handing them
//! out.
//!
//! # Positions become visible in order (the append lock)
//! A sequence hands out positions in allocation order, but transactions commit in any order: a
//! transaction that took position 10 may commit after one that took 11, and a catch-up reader
//! that saw 11 would then never read 10. To rule this out, every transaction that inserts
//! events first takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`, one key per
//! schema), held until it commits. Positions are therefore allocated and committed one
//! transaction at a time, in lock order: a reader ([`read_all`](sourceflow::store::Store::read_all),
//! `head`, `subscribe`, a view's catch-up) never observes a position before a lower one that is
//! still to commit, and positions stay dense, which lets views apply a process's own fresh
//! events without reading them back.
//!
//! # Group commit: concurrent senders share one transaction
//! The lock is held across the commit's WAL flush, so transactions that append events commit
//! one at a time per schema. To make concurrent commands cost less than one flush each, the
//! units of work that concurrent senders of one process hand over while a commit is under way
//! are committed together: one call of `sf_commit_batch` (migration `0008`), one transaction,
//! one lock hold, one flush, as the SQLite writer batches its units. Senders queue
//! their units and take turns (a fair lock); whoever's turn comes takes every unit queued so
//! far (up to 128). A unit alone takes the path it takes without grouping, so one sender pays
//! nothing for it. The views' projection batches do not queue there (see below). A batch whose
//! units all have the common shape (an entity state, one event, no follow-up commands, no inline
//! views) on distinct streams is one statement per table (`sf_commit_units`, migration `0012`),
//! so the lock covers one insert of all its events; any other batch goes unit by unit through
//! `sf_commit_inline`.
//!
//! Inside a batch, units commit in order, each checked exactly as alone: a unit that meets an
//! earlier one of the same batch (the same stream at the same expected sequence, or the same
//! message id) is a conflict, retried by the bus, or a duplicate, answered with the original
//! receipt; the others commit. An error that aborts the batch (a deadlock with another process
//! writing the same stream at that instant, a dropped connection) costs the batch, not its
//! units: they are committed again one by one, each with the retry policy. Postgres breaks
//! such a deadlock after `deadlock_timeout` (1 s by default), which those units wait on top of
//! their commit; it needs two processes committing the same stream at the same instant. The
//! batch runs on a
//! task of its own, so a sender that stops waiting does not cut its neighbours' commit short.
//!
//! # Group commit with the views' writes
//! The runtime groups its own concurrent commands before they reach the store
//! ([`GroupCommit`](sourceflow::store::GroupCommit), the runtime's `write/group.rs`): whoever's
//! turn comes takes every unit queued, the views this process keeps up with apply the whole
//! group's events as if they landed right after the view's position, and the units and each
//! view's writes go to `sf_commit_units_group` (the common shape, set-based) or
//! `sf_commit_batch_group` (any other), migration `0013`: one transaction, one lock hold, one
//! WAL flush for the commands, their events and their views. A view's writes apply only if
//! every unit committed, the group's events took the positions right after the view's, each
//! unit's first event has the stream sequence the view was told, and the view's position is
//! unchanged (compare-and-set); otherwise the units still commit and the view projects them
//! after the commit, as above. So under load a command costs a share of one transaction, not a
//! transaction of its own plus a projection batch. The view waits for the group's commit while
//! it holds the view, so a group's projection starts where the previous one ended; a command
//! whose group was projected finds its views past its events and returns at once. A group with
//! a subject's first key, or one that fails as a whole, commits unit by unit. A group without
//! views (a write-side worker whose read side [follows](sourceflow::SourceFlow::follow) the
//! log elsewhere) calls `sf_commit_units` or `sf_commit_batch` itself: the wrapper's composite
//! rows and projection pass add ~0.1 ms of server time to a one-unit group whose own writes
//! take ~0.2 ms (`pgbench`, one connection, `synchronous_commit = off`).
//!
//! These group functions are PL/pgSQL (migration `0014`): Postgres parses and analyses the body
//! of an SQL function that writes on every call, which under load was a large share of the
//! server's CPU time per group. `sf_commit_units` is planned once per connection too
//! (migration `0015`, `plan_cache_mode = force_generic_plan`), so a plan made on a young schema
//! must stay right as the tables grow: its stream-head check reads the stream's last command in
//! primary-key order as a scalar subquery (it cannot become a join, and no other index serves
//! that order), and `enable_seqscan = off` keeps both per-unit lookups index scans whatever the
//! table sizes were when the plan was made. (Made from an `EXISTS` check, a cached plan chose a
//! hashed subplan over all of `sf_commands` and grew slower with every command stored; planning
//! per call instead cost ~0.4 ms of a ~2 ms group commit. With the plan kept, W9's direct flow
//! went from ~5,300 to ~7,000 commands/s, steady over 30 rounds.)
//!
//! The same holds for the duplicate lookup that a command sent with its own message id (an
//! idempotency key, a redelivery) makes before it runs. Without statistics an equality on the
//! three columns of the message id's unique key costs the planner the same as one on the first
//! two columns of the primary key, which start the same, and a plan made on a young schema took
//! the primary key and filtered the whole stream (4.3 ms against 0.04 ms for one lookup in a
//! stream of 10,000 commands, for as long as the plan lived: for good on a server without
//! autovacuum). The lookup asks instead for the first key at or after (stream, message id) in
//! that index's order, which no other index gives without a sort, and then for that command's
//! events between two equal keys of their command index. `sf_commit_inline` (migration `0017`)
//! checks the stream's head as `sf_commit_units` does, and looks a refused unit's message id up
//! the same way; a stream's first command loads the views' models it needs one key at a time
//! rather than as a join, which such a plan ran as a scan of every model; the scheduler's poll
//! asks for the earliest ready schedule in the ready index's order, a page of open schedules
//! starts from one row comparison, and saving an entity's state checks the stream's last
//! command in primary-key order (tested in `plans.rs`). The custom plans a connection makes for
//! its first few executions of a statement are made afresh each time; without statistics a few
//! of them (a page of schedules, an entity save, the events of a found duplicate) may still
//! read more than they return.
//!
//! A view batch's commit (`sf_commit_projection`: every batch a follower or a catch-up projects,
//! and the views' writes of every group commit) runs only the writes it has rows for (migration
//! `0018`). Its delete of models joins the table with the keys to delete, and PL/pgSQL kept no
//! plan for it (the plan for the keys given, usually none, always looked cheaper than one for
//! any keys), so until then it was planned on every call of a batch that deleted nothing
//! (`plans.rs` counts the plans the server reports for two batches: none).
//!
//! The trade-offs. Throughput grows with the senders of one process (one flush per batch
//! instead of per command), but processes sharing a schema still take the lock in turn, one
//! batch at a time: more processes add batches, not parallel flushes. Each command waits for the
//! batch ahead of it, so a command's latency under load is up to two batch commits. A batch of
//! units on distinct streams shares its fate only through the retry above.
//!
//! The alternative, positions ordered by transaction id with readers bounded by the oldest
//! running transaction (`pg_snapshot_xmin(pg_current_snapshot())`, as Emmett's store does),
//! would let every commit flush in parallel, across processes too. The store does not take it:
//! - a unit's positions would be known only once its transaction has them, so a view could no
//!   longer project a command's events before the commit and write them in the same
//!   transaction (the inline projection: one transaction per command for one sender, where
//!   projecting after the commit costs a read and a second transaction);
//! - a view's stored position would no longer mean "everything up to here": a transaction with
//!   an older id can still commit events below it, so a view may only move past positions below
//!   the horizon, and `send` would wait for the oldest write transaction of the whole server
//!   (any database) before read-your-writes holds;
//! - positions would no longer be dense, so the views that take `position + 1` as the next
//!   event (reusing a process's fresh events) would read the log back instead.
//!
//! [`PostgresStoreBuilder::group_commit`] turns batching off (every unit its own transaction).
//!
//! # Projection batches commit asynchronously
//! A view's or aggregate's projection batch (its models, reaction commands and position,
//! compare-and-set on the position) takes no append lock, so it does not wait for the turn of
//! the units: it commits on a connection of its own, concurrently with them, and its
//! transaction commits with `synchronous_commit` off (for that transaction only). It is visible
//! to every reader at once; its WAL flush is left to the next synchronous commit or the WAL
//! writer (within `wal_writer_delay`, 200 ms by default). Nothing of the contract depends on
//! that flush: the position commits with the models and the outbox, so a batch lost to a
//! server crash is lost whole, the view's stored position is then the one before it, and
//! catch-up applies those events again (exactly once, as after a process crash). The reaction
//! commands of a lost batch are queued again by that catch-up under the same derived message
//! ids, so one already executed is answered as a duplicate. Commands and their events keep the
//! synchronous commit: `Ok` from `send` still means durable. Before this, a command's
//! projection was a second synchronous commit after its unit, queued behind the next batch of
//! units: at 32 senders the transactions per command doubled and every sender waited two
//! flushes in turn.
//!
//! The modules: `connect` (the builder, the schema and the migrations, with `migrate` for the
//! versions retired from them), `commit` (the commit path), `group` (group commit, and the
//! runtime's groups with their views), `queries`
//! (every statement), `error` (which errors are transient).

mod commit;
mod connect;
mod error;
mod group;
mod keys;
mod lifecycle;
mod migrate;
#[cfg(test)]
mod plans;
mod queries;
mod schedule;

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use sourceflow::message::StoredCommand;
use sourceflow::store::{EntityWithModels, StoreError};
use sourceflow::{EntityId, Sequence, StreamId};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use crate::retry::Backoff;
use crate::sql::lease::{HOLD_LEASE, RELEASE_LEASE};
use crate::sql::read::{Param, Query, ReadQueries};
use crate::sql::rows::{message_name, Columns};
use crate::sql::values::{corrupt, db_int, from_db, payload_text};
use crate::sql::write::{KeyWrite, LeaseWrite};
use crate::sql::write::{Write, Written};
use crate::sql::{Backend, SqlStore};
use commit::BindEnvelope;
pub use connect::{is_valid_schema_name, ConfigError, PostgresStoreBuilder};
use error::{classify, is_unique_violation};
pub use migrate::{UnknownMigration, MIGRATOR, RETIRED};
use queries::*;

/// The Postgres store: one shared log for many processes, exact JSON payloads, a connection
/// pool.
///
/// Cheap to clone (clones share the pool). See the [module docs](self) for how commits take
/// one round trip and how positions become visible in order. A [`SqlStore`] on the
/// [`Postgres`] backend.
pub type PostgresStore = SqlStore<Postgres>;

/// The Postgres backend of a [`PostgresStore`]: the pool, the schema and its append lock key.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    lock_key: i64,
    schema: String,
    backoff: Backoff,
    /// Group commit's shared queue; `None`: every unit of work commits alone.
    group: Option<std::sync::Arc<group::Group>>,
}

impl fmt::Debug for Postgres {
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
    /// Encryption: this crate builds sqlx with a TLS library only with its feature
    /// `tls-rustls` (rustls, ring, the webpki roots) or `tls-native-tls` (the platform's TLS).
    /// Without one, connections are plain and a URL with `sslmode=require` (or stricter) is
    /// refused. With one, the URL's `sslmode` decides: by default (`prefer`, as with `psql`)
    /// a connection is encrypted whenever the server offers TLS, `verify-full` also checks the
    /// server's certificate and name, and `disable` saves the TLS work on a loopback or a
    /// network you trust (2-3% of the server's CPU and 3-4% of the workers' in a profile of
    /// NATS workers and Postgres on one machine).
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
        PostgresStoreBuilder::new(url)
    }

    /// A store over an existing pool; applies pending migrations in the pool's current schema
    /// (its `search_path`). For best latency, build the pool with `test_before_acquire(false)`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the migrations fail or no schema is current.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        Postgres::open(pool, Backoff::default()).await
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.backend().pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.backend().schema
    }

    /// The advisory lock key that serialises event appends in this schema.
    pub fn append_lock_key(&self) -> i64 {
        self.backend().lock_key
    }

    /// Sets the retry policy for transient faults.
    ///
    /// Takes a [`Backoff`] or a [`sourceflow::RetryPolicy`].
    pub fn with_backoff(mut self, backoff: impl Into<Backoff>) -> Self {
        self.backend_mut().backoff = backoff.into();
        self
    }
}

fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
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

    fn name(&self, index: usize) -> Result<Cow<'static, str>, StoreError> {
        get::<&str>(self, index).map(message_name)
    }
}

/// The earliest instant a `timestamptz` holds (4714-11-24 BC, year -4713).
fn earliest_timestamp() -> DateTime<Utc> {
    DateTime::from_timestamp(-210_866_803_200, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn conflict(stream: &StreamId, expected: Sequence) -> StoreError {
    StoreError::Conflict {
        stream: stream.clone(),
        expected,
    }
}

impl Postgres {
    /// Runs the write `sql` with `params` bound in order, retried on transient faults: the
    /// number of rows it changed.
    async fn execute(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        let pool = &self.pool;
        self.backoff
            .run(Self::NAME, what, || async move {
                let query = params.iter().fold(sqlx::query(sql), Self::bind);
                let done = query.execute(pool).await.map_err(classify)?;
                Ok(done.rows_affected())
            })
            .await
    }
}

impl Postgres {
    /// A lease write: one statement, whose one changed row means the lease is held.
    async fn lease(&self, write: LeaseWrite) -> Result<Written, StoreError> {
        match write {
            LeaseWrite::Hold {
                name,
                holder,
                now,
                until,
            } => {
                let params = [
                    Param::Text(&name),
                    Param::Text(&holder),
                    Param::Int(until),
                    Param::Int(now),
                ];
                let changed = self.execute("hold lease", HOLD_LEASE, &params).await?;
                Ok(Written::Held(changed == 1))
            }
            LeaseWrite::Release { name, holder } => {
                let params = [Param::Text(&name), Param::Text(&holder)];
                self.execute_done("release lease", RELEASE_LEASE, &params)
                    .await
            }
        }
    }

    /// As [`execute`](Self::execute), for a write whose answer is only done or failed.
    async fn execute_done(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Written, StoreError> {
        self.execute(what, sql, params).await.map(|_| Written::Done)
    }
}

impl Backend for Postgres {
    const NAME: &'static str = "postgres";
    const READS: ReadQueries = queries::READS;
    const INSPECT: crate::sql::inspect::InspectQueries = crate::sql::inspect::POSTGRES;
    type Db = sqlx::Postgres;

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    fn groups(&self) -> Option<&dyn sourceflow::store::GroupCommit> {
        self.group
            .is_some()
            .then_some(self as &dyn sourceflow::store::GroupCommit)
    }

    fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Every argument with its native Postgres type.
    fn bind<'q>(query: Query<'q, sqlx::Postgres>, param: &Param<'q>) -> Query<'q, sqlx::Postgres> {
        match *param {
            Param::Text(text) => query.bind(text),
            Param::OptionalText(text) => query.bind(text),
            Param::Int(value) => query.bind(value),
            Param::Uuid(id) => query.bind(id),
            // `timestamptz` starts at 4714-11-24 BC; an earlier bound means the same.
            Param::Time(time) => query.bind(time.max(earliest_timestamp())),
        }
    }

    fn classify(err: sqlx::Error) -> StoreError {
        classify(err)
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        match write {
            Write::Commit(unit) => self
                .commit_grouped(unit, Vec::new())
                .await
                .map(|(receipt, _)| Written::Receipt(receipt)),
            Write::CommitInline(unit, projections) => self
                .commit_grouped(unit, projections)
                .await
                .map(|(receipt, applied)| Written::Inline(receipt, applied)),
            Write::AppendCommand { expected, command } => self
                .append_command(expected, command)
                .await
                .map(Written::Sequence),
            Write::AppendEvents {
                stream,
                expected,
                events,
            } => self
                .append_event_batch(&stream, expected, events)
                .await
                .map(Written::Events),
            Write::PutEntity {
                stream,
                expected,
                version,
                state,
            } => self.put_entity(&stream, expected, version, &state).await,
            Write::DeleteEntity { stream } => {
                let key = [
                    Param::Text(&stream.entity_type),
                    Param::Text(stream.id.as_str()),
                ];
                self.execute_done("delete_entity", DELETE_ENTITY, &key)
                    .await
            }
            Write::PutModel {
                model_type,
                id,
                state,
            } => {
                let params = [
                    Param::Text(&model_type),
                    Param::Text(id.as_str()),
                    Param::Text(payload_text(&state, "view model state")?),
                ];
                self.execute_done("put_model", PUT_MODEL, &params).await
            }
            Write::DeleteModel { model_type, id } => {
                let params = [Param::Text(&model_type), Param::Text(id.as_str())];
                self.execute_done("delete_model", DELETE_MODEL, &params)
                    .await
            }
            Write::ClearModels { model_type } => {
                let params = [Param::Text(&model_type)];
                self.execute_done("clear_models", CLEAR_MODELS, &params)
                    .await
            }
            Write::SetPosition { handler, position } => {
                let position = Param::Int(db_int(position.0, "position")?);
                let params = [Param::Text(&handler), position];
                self.execute_done("set_position", SET_POSITION, &params)
                    .await
            }
            Write::CommitProjection(commit) => self.commit_projection_batch(commit).await,
            Write::ResetProjection {
                handler,
                model_types,
            } => self.reset_projection(&handler, &model_types).await,
            Write::RemoveOutbox { ids } => self.outbox_remove(&ids).await,
            Write::Schedules(write) => self.schedules(write).await,
            Write::Keys(KeyWrite::Insert { subject, key, now }) => {
                let params = [Param::Text(&subject), Param::Text(&key), Param::Time(now)];
                self.execute_done("insert subject key", INSERT_KEY, &params)
                    .await
            }
            Write::Keys(KeyWrite::Forget { subject, now }) => {
                let params = [Param::Text(&subject), Param::Time(now)];
                self.execute_done("forget subject", FORGET_SUBJECT, &params)
                    .await
            }
            Write::Leases(write) => self.lease(write).await,
            Write::DeleteStream(unit) => self.change_stream(unit, lifecycle::Change::Delete).await,
            Write::ArchiveStream(unit) => {
                self.change_stream(unit, lifecycle::Change::Archive).await
            }
            Write::RestoreStream(unit) => {
                self.change_stream(unit, lifecycle::Change::Restore).await
            }
        }
    }

    /// The entity and the models in one round trip.
    async fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> Result<EntityWithModels, StoreError> {
        let (pool, sql) = (&self.pool, &get_entity_with_models(models.len()));
        let rows = self
            .backoff
            .run(Self::NAME, "get_entity_with_models", || async move {
                let mut query = sqlx::query(sql)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str());
                for (model_type, id) in models {
                    query = query.bind(*model_type).bind(id.as_str());
                }
                query.fetch_all(pool).await.map_err(classify)
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
}

impl Postgres {
    /// Saves an entity state: a new one (`expected` zero), or compare-and-set on the version.
    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        state: &[u8],
    ) -> Result<Written, StoreError> {
        let mut params = vec![
            Param::Text(&stream.entity_type),
            Param::Text(stream.id.as_str()),
            Param::Int(db_int(version.0, "entity version")?),
            Param::Text(payload_text(state, "entity state")?),
        ];
        let sql = if expected == Sequence::ZERO {
            PUT_ENTITY_NEW
        } else {
            params.push(Param::Int(db_int(expected.0, "entity version")?));
            PUT_ENTITY_CAS
        };
        if self.execute("put_entity", sql, &params).await? == 0 {
            return Err(conflict(stream, expected));
        }
        Ok(Written::Done)
    }

    /// Clears a handler's position and its models in one statement.
    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[String],
    ) -> Result<Written, StoreError> {
        let pool = &self.pool;
        self.backoff
            .run(Self::NAME, "reset_projection", || async move {
                sqlx::query(RESET_PROJECTION)
                    .bind(handler)
                    .bind(model_types)
                    .execute(pool)
                    .await
                    .map_err(classify)
            })
            .await
            .map(|_| Written::Done)
    }

    /// Removes sent outbox entries in one statement.
    async fn outbox_remove(&self, ids: &[u64]) -> Result<Written, StoreError> {
        let ids = ids
            .iter()
            .map(|id| db_int(*id, "outbox id"))
            .collect::<Result<Vec<_>, _>>()?;
        let (ids, pool) = (&ids, &self.pool);
        self.backoff
            .run(Self::NAME, "outbox_remove", || async move {
                sqlx::query(OUTBOX_REMOVE)
                    .bind(ids)
                    .execute(pool)
                    .await
                    .map_err(classify)
            })
            .await
            .map(|_| Written::Done)
    }

    /// Appends one command at `expected + 1`, nothing else.
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
            .backoff
            .run(Self::NAME, "append_command", || async move {
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
                    Err(e) => Err(classify(e)),
                }
            })
            .await?;
        if inserted {
            Ok(expected.next())
        } else {
            Err(conflict(stream, expected))
        }
    }
}
