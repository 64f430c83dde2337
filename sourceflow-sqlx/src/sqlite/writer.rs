//! The single writer and its group commit.
//!
//! One task owns the only writing connection. It waits for a unit of work, takes every other
//! one already queued (up to `max_batch`), and runs them all in one `BEGIN IMMEDIATE`
//! transaction: each unit inside its own `SAVEPOINT`, released on success and rolled back on
//! failure, so a conflict undoes that unit alone. One `COMMIT` (one fsync) then makes the whole
//! batch durable, and only then is each caller answered. If the transaction as a whole fails
//! (another process held the file past `busy_timeout`, an I/O error), nothing of the batch is
//! committed: the batch is retried with backoff when the fault is transient, and every caller
//! gets the error otherwise.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    InlineProjection, ModelWrite, OutboxMessage, ProjectionCommit, StoreError, UnitOfWork,
};
use sourceflow::{CommandReceipt, EntityId, Position, RecordedEvent, Sequence, StreamId};
use sqlx::{Connection, Executor, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{db_err, find_receipt, time_text};
use crate::retry::{is_unique_violation, Backoff};
use crate::sql::{db_int, from_db, last_writes, payload_text};

/// A write the writer task runs on behalf of a caller.
pub(super) enum Write {
    Commit(UnitOfWork),
    CommitInline(UnitOfWork, Vec<InlineProjection>),
    AppendCommand {
        expected: Sequence,
        command: StoredCommand,
    },
    AppendEvents {
        stream: StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    },
    PutEntity {
        stream: StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    },
    DeleteEntity {
        stream: StreamId,
    },
    PutModel {
        model_type: String,
        id: EntityId,
        state: Vec<u8>,
    },
    DeleteModel {
        model_type: String,
        id: EntityId,
    },
    ClearModels {
        model_type: String,
    },
    SetPosition {
        handler: String,
        position: Position,
    },
    CommitProjection(ProjectionCommit),
    ResetProjection {
        handler: String,
        model_types: Vec<String>,
    },
    RemoveOutbox {
        ids: Vec<u64>,
    },
}

/// What a write produced.
#[derive(Debug)]
pub(super) enum Written {
    Receipt(CommandReceipt),
    Inline(CommandReceipt, Vec<bool>),
    Sequence(Sequence),
    Events(Vec<RecordedEvent>),
    Done,
}

/// A queued write and where its answer goes.
pub(super) struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// Counters behind [`SqliteStats`](super::SqliteStats).
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    pub transactions: AtomicU64,
    pub units: AtomicU64,
    pub largest_batch: AtomicU64,
}

/// The writer task is gone (the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer task has stopped")]
struct WriterStopped;

pub(super) fn stopped() -> StoreError {
    StoreError::Backend(Box::new(WriterStopped))
}

/// An answer of the wrong kind: a bug in this module, reported rather than panicking.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer answered with {0}")]
struct UnexpectedAnswer(String);

pub(super) fn unexpected(written: Written) -> StoreError {
    StoreError::Backend(Box::new(UnexpectedAnswer(format!("{written:?}"))))
}

/// A failure of a whole batch, handed to each of its callers.
#[derive(Debug)]
struct BatchFailed(Arc<StoreError>);

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group commit failed: {}", self.0)
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn share(error: &Arc<StoreError>) -> StoreError {
    let shared = Box::new(BatchFailed(error.clone()));
    if error.is_transient() {
        StoreError::Transient(shared)
    } else {
        StoreError::Backend(shared)
    }
}

/// The writer loop: runs until every [`SqliteStore`](super::SqliteStore) handle is dropped.
pub(super) async fn run(
    mut connection: SqliteConnection,
    mut queue: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
    backoff: Backoff,
    max_batch: usize,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(job) = queue.recv().await {
        batch.push(job);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A caller that gave up (dropped its future) cannot learn the outcome: skip its write.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (results, committed) = commit_batch(&mut connection, &batch, &backoff).await;
        if committed {
            let units = batch.len() as u64;
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.units.fetch_add(units, Ordering::Relaxed);
            stats.largest_batch.fetch_max(units, Ordering::Relaxed);
        }
        for (job, result) in batch.drain(..).zip(results) {
            // The caller may have gone away meanwhile; the write stands either way.
            let _ = job.reply.send(result);
        }
    }
    let _ = connection.close().await;
}

/// Commits one batch, retrying the whole transaction on transient faults. The flag says
/// whether a transaction was committed.
async fn commit_batch(
    connection: &mut SqliteConnection,
    batch: &[Job],
    backoff: &Backoff,
) -> (Vec<Result<Written, StoreError>>, bool) {
    let mut attempt = 1;
    loop {
        match try_batch(connection, batch).await {
            Ok(outcome) => return outcome,
            Err(e) if e.is_transient() && attempt < backoff.max_attempts() => {
                tracing::debug!(error = %e, attempt, units = batch.len(), "sqlite batch failed, retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, units = batch.len(), "sqlite batch failed");
                let e = Arc::new(e);
                return (batch.iter().map(|_| Err(share(&e))).collect(), false);
            }
        }
    }
}

/// One attempt: `Err` means nothing of the batch was committed; the flag says whether a
/// transaction was.
async fn try_batch(
    connection: &mut SqliteConnection,
    batch: &[Job],
) -> Result<(Vec<Result<Written, StoreError>>, bool), StoreError> {
    // IMMEDIATE takes the write lock now (waiting up to busy_timeout for another process)
    // rather than at the first write, where a stale read snapshot could not be upgraded.
    connection
        .execute("BEGIN IMMEDIATE")
        .await
        .map_err(db_err)?;
    match run_units(connection, batch).await {
        Ok(Ok(results)) => match connection.execute("COMMIT").await {
            Ok(_) => Ok((results, true)),
            Err(e) => {
                rollback(connection).await;
                Err(db_err(e))
            }
        },
        Ok(Err(refused)) => {
            rollback(connection).await;
            Ok((vec![Err(refused)], false))
        }
        Err(e) => {
            rollback(connection).await;
            Err(e)
        }
    }
}

async fn rollback(connection: &mut SqliteConnection) {
    // Fails harmlessly if SQLite already rolled the transaction back itself.
    if let Err(e) = connection.execute("ROLLBACK").await {
        tracing::debug!(error = %e, "sqlite rollback");
    }
}

/// Runs the batch's units. `Err` aborts the batch: the transaction is unusable or the fault is
/// transient and worth a retry of the whole batch. `Ok(Err(_))` is a lone unit that failed:
/// roll back, and that is its answer.
///
/// Units run without savepoints first: a unit refused with a conflict has written nothing
/// (every write checks its condition in its first statement), so it is answered and the batch
/// goes on. Any other failure of a unit may leave part of it written: then the transaction is
/// rolled back and the batch re-run with each unit in its own savepoint.
async fn run_units(
    connection: &mut SqliteConnection,
    batch: &[Job],
) -> Result<Result<Vec<Result<Written, StoreError>>, StoreError>, StoreError> {
    let mut results = Vec::with_capacity(batch.len());
    if let [job] = batch {
        // Alone in its transaction, a unit needs no savepoint: if it fails, the caller rolls
        // the whole transaction back.
        return match apply(connection, &job.write).await {
            Ok(written) => Ok(Ok(vec![Ok(written)])),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => Ok(Err(e)),
        };
    }
    let mut clean = true;
    for job in batch {
        match apply(connection, &job.write).await {
            Ok(written) => results.push(Ok(written)),
            // (Appending events checks the head first too, but a unique violation on a later
            // event of the same write would come after the first insert.)
            Err(e @ (StoreError::Conflict { .. } | StoreError::PositionConflict { .. }))
                if !matches!(job.write, Write::AppendEvents { .. }) =>
            {
                results.push(Err(e));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(_) => {
                clean = false;
                break;
            }
        }
    }
    if clean {
        return Ok(Ok(results));
    }
    rollback(connection).await;
    connection
        .execute("BEGIN IMMEDIATE")
        .await
        .map_err(db_err)?;
    results.clear();
    for job in batch {
        connection
            .execute("SAVEPOINT sf_unit")
            .await
            .map_err(db_err)?;
        match apply(connection, &job.write).await {
            Ok(written) => {
                connection
                    .execute("RELEASE sf_unit")
                    .await
                    .map_err(db_err)?;
                results.push(Ok(written));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                connection
                    .execute("ROLLBACK TO sf_unit")
                    .await
                    .map_err(db_err)?;
                connection
                    .execute("RELEASE sf_unit")
                    .await
                    .map_err(db_err)?;
                results.push(Err(e));
            }
        }
    }
    Ok(Ok(results))
}

async fn apply(connection: &mut SqliteConnection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::Commit(unit) => commit(connection, unit).await.map(Written::Receipt),
        Write::CommitInline(unit, projections) => {
            let receipt = commit(connection, unit).await?;
            let mut applied = vec![false; projections.len()];
            let (Some(first), Some(last)) = (receipt.events.first(), receipt.events.last()) else {
                return Ok(Written::Inline(receipt, applied));
            };
            if receipt.duplicate {
                return Ok(Written::Inline(receipt, applied));
            }
            let first = (first.position, first.sequence);
            for (projection, applied) in projections.iter().zip(&mut applied) {
                if first != (Position(projection.after.0 + 1), projection.first_sequence) {
                    continue;
                }
                let done = project(
                    connection,
                    &projection.handler,
                    projection.expected,
                    last.position,
                    &projection.models,
                    &[],
                )
                .await;
                *applied = match done {
                    Ok(()) => true,
                    Err(StoreError::PositionConflict { .. }) => false,
                    Err(e) => return Err(e),
                };
            }
            Ok(Written::Inline(receipt, applied))
        }
        Write::AppendCommand { expected, command } => {
            let stream = &command.envelope.stream;
            if insert_command(connection, *expected, command).await? {
                Ok(Written::Sequence(expected.next()))
            } else {
                Err(conflict(stream, *expected))
            }
        }
        Write::AppendEvents {
            stream,
            expected,
            events,
        } => {
            let last = last_event_sequence(connection, stream).await?;
            if last != *expected {
                return Err(conflict(stream, *expected));
            }
            let command_sequence: i64 = sqlx::query_scalar(super::LAST_SEQUENCE)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .fetch_one(&mut *connection)
                .await
                .map_err(db_err)?;
            let command_sequence = Sequence(from_db(command_sequence, "sequence")?);
            insert_events(connection, stream, command_sequence, last, events)
                .await
                .map(Written::Events)
        }
        Write::PutEntity {
            stream,
            expected,
            version,
            state,
        } => {
            let query = if *expected == Sequence::ZERO {
                PUT_ENTITY_NEW
            } else {
                PUT_ENTITY_CAS
            };
            let done = sqlx::query(query)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .bind(db_int(version.0, "entity version")?)
                .bind(payload_text(state, "entity state")?)
                .bind(time_text(&Utc::now()))
                .bind(db_int(expected.0, "entity version")?)
                .execute(&mut *connection)
                .await
                .map_err(db_err)?;
            if done.rows_affected() == 0 {
                return Err(conflict(stream, *expected));
            }
            Ok(Written::Done)
        }
        Write::DeleteEntity { stream } => {
            sqlx::query(DELETE_ENTITY)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .execute(&mut *connection)
                .await
                .map_err(db_err)?;
            Ok(Written::Done)
        }
        Write::PutModel {
            model_type,
            id,
            state,
        } => {
            put_model(connection, model_type, id, state).await?;
            Ok(Written::Done)
        }
        Write::DeleteModel { model_type, id } => {
            delete_model(connection, model_type, id).await?;
            Ok(Written::Done)
        }
        Write::ClearModels { model_type } => {
            clear_models(connection, model_type).await?;
            Ok(Written::Done)
        }
        Write::SetPosition { handler, position } => {
            sqlx::query(SET_POSITION)
                .bind(handler.as_str())
                .bind(db_int(position.0, "position")?)
                .bind(time_text(&Utc::now()))
                .execute(&mut *connection)
                .await
                .map_err(db_err)?;
            Ok(Written::Done)
        }
        Write::CommitProjection(commit) => {
            project(
                connection,
                &commit.handler,
                commit.expected,
                commit.position,
                &commit.models,
                &commit.outbox,
            )
            .await?;
            Ok(Written::Done)
        }
        Write::ResetProjection {
            handler,
            model_types,
        } => {
            for model_type in model_types {
                clear_models(connection, model_type).await?;
            }
            sqlx::query(DELETE_POSITION)
                .bind(handler.as_str())
                .execute(&mut *connection)
                .await
                .map_err(db_err)?;
            Ok(Written::Done)
        }
        Write::RemoveOutbox { ids } => {
            for id in ids {
                sqlx::query(DELETE_OUTBOX)
                    .bind(db_int(*id, "outbox id")?)
                    .execute(&mut *connection)
                    .await
                    .map_err(db_err)?;
            }
            Ok(Written::Done)
        }
    }
}

fn conflict(stream: &StreamId, expected: Sequence) -> StoreError {
    StoreError::Conflict {
        stream: stream.clone(),
        expected,
    }
}

/// One handled command: duplicate check, command, entity, events, outbox.
async fn commit(
    connection: &mut SqliteConnection,
    unit: &UnitOfWork,
) -> Result<CommandReceipt, StoreError> {
    let envelope = &unit.command.envelope;
    let stream = &envelope.stream;
    // The append itself detects a resent message id (the stream moved past `expected`, or the
    // (stream, message id) key exists), so the common case costs no lookup beforehand.
    if !insert_command(connection, unit.expected, &unit.command).await? {
        return match find_receipt(&mut *connection, stream, envelope.message_id).await? {
            Some(receipt) => Ok(receipt),
            None => Err(conflict(stream, unit.expected)),
        };
    }
    let sequence = unit.expected.next();
    if let Some(state) = &unit.entity {
        sqlx::query(UPSERT_ENTITY)
            .bind(&*stream.entity_type)
            .bind(stream.id.as_str())
            .bind(db_int(sequence.0, "entity version")?)
            .bind(payload_text(state, "entity state")?)
            .bind(time_text(&Utc::now()))
            .execute(&mut *connection)
            .await
            .map_err(db_err)?;
    }
    let events = append_next_events(connection, stream, sequence, &unit.events).await?;
    insert_outbox(connection, &unit.outbox).await?;
    Ok(CommandReceipt {
        message_id: envelope.message_id,
        stream: stream.clone(),
        sequence,
        events,
        duplicate: false,
        retries: 0,
    })
}

/// Binds the metadata columns of `envelope` (`message_id, name, version, correlation_id,
/// causation_id, created_at`) as SQLite stores them: UUIDs and times as text.
macro_rules! bind_metadata {
    ($query:expr, $envelope:expr) => {{
        let envelope = $envelope;
        $query
            .bind(envelope.message_id.to_string())
            .bind(&*envelope.name)
            .bind(i64::from(envelope.version))
            .bind(envelope.correlation_id.to_string())
            .bind(envelope.causation_id.map(|id| id.to_string()))
            .bind(time_text(&envelope.timestamp))
    }};
}

/// Inserts `command` at `expected + 1` if the stream's last sequence is `expected`: `false`
/// when the stream has moved on.
async fn insert_command(
    connection: &mut SqliteConnection,
    expected: Sequence,
    command: &StoredCommand,
) -> Result<bool, StoreError> {
    let envelope = &command.envelope;
    let done = bind_metadata!(
        sqlx::query(INSERT_COMMAND)
            .bind(&*envelope.stream.entity_type)
            .bind(envelope.stream.id.as_str())
            .bind(db_int(expected.0, "sequence")?),
        envelope
    )
    .bind(payload_text(&command.payload, "command payload")?)
    .execute(&mut *connection)
    .await;
    match done {
        Ok(done) => Ok(done.rows_affected() == 1),
        // Only another writer of the file could get there first, and it holds the write lock
        // while we check; a unique violation still means "the stream moved on".
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

async fn last_event_sequence(
    connection: &mut SqliteConnection,
    stream: &StreamId,
) -> Result<Sequence, StoreError> {
    let last: i64 = sqlx::query_scalar(LAST_EVENT_SEQUENCE)
        .bind(&*stream.entity_type)
        .bind(stream.id.as_str())
        .fetch_one(&mut *connection)
        .await
        .map_err(db_err)?;
    Ok(Sequence(from_db(last, "event sequence")?))
}

/// Appends `events` after event sequence `last`, emitted by command `command_sequence`.
async fn insert_events(
    connection: &mut SqliteConnection,
    stream: &StreamId,
    command_sequence: Sequence,
    last: Sequence,
    events: &[NewEvent],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut recorded = Vec::with_capacity(events.len());
    let mut sequence = last;
    for event in events {
        sequence = sequence.next();
        let envelope = &event.envelope;
        let position: i64 = bind_metadata!(
            sqlx::query_scalar(INSERT_EVENT)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .bind(db_int(sequence.0, "event sequence")?)
                .bind(db_int(command_sequence.0, "sequence")?),
            envelope
        )
        .bind(payload_text(&event.payload, "event payload")?)
        .fetch_one(&mut *connection)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                conflict(stream, last)
            } else {
                db_err(e)
            }
        })?;
        let mut envelope = envelope.clone();
        envelope.stream = stream.clone();
        recorded.push(RecordedEvent {
            envelope,
            sequence,
            command_sequence,
            position: Position(from_db(position, "position")?),
            payload: event.payload.clone(),
        });
    }
    Ok(recorded)
}

/// Appends `events` after the stream's last event, emitted by command `command_sequence`: each
/// insert takes the next sequence itself (an index lookup), so no separate head query.
async fn append_next_events(
    connection: &mut SqliteConnection,
    stream: &StreamId,
    command_sequence: Sequence,
    events: &[NewEvent],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut recorded = Vec::with_capacity(events.len());
    for event in events {
        let envelope = &event.envelope;
        let (position, sequence): (i64, i64) = bind_metadata!(
            sqlx::query_as(INSERT_NEXT_EVENT)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .bind(db_int(command_sequence.0, "sequence")?),
            envelope
        )
        .bind(payload_text(&event.payload, "event payload")?)
        .fetch_one(&mut *connection)
        .await
        .map_err(db_err)?;
        let mut envelope = envelope.clone();
        envelope.stream = stream.clone();
        recorded.push(RecordedEvent {
            envelope,
            sequence: Sequence(from_db(sequence, "event sequence")?),
            command_sequence,
            position: Position(from_db(position, "position")?),
            payload: event.payload.clone(),
        });
    }
    Ok(recorded)
}

async fn insert_outbox(
    connection: &mut SqliteConnection,
    messages: &[OutboxMessage],
) -> Result<(), StoreError> {
    for message in messages {
        let envelope = &message.envelope;
        bind_metadata!(
            sqlx::query(INSERT_OUTBOX)
                .bind(&*envelope.stream.entity_type)
                .bind(envelope.stream.id.as_str()),
            envelope
        )
        .bind(payload_text(&message.payload, "outbox payload")?)
        .execute(&mut *connection)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

async fn put_model(
    connection: &mut SqliteConnection,
    model_type: &str,
    id: &EntityId,
    state: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(PUT_MODEL)
        .bind(model_type)
        .bind(id.as_str())
        .bind(payload_text(state, "view model state")?)
        .bind(time_text(&Utc::now()))
        .execute(&mut *connection)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn delete_model(
    connection: &mut SqliteConnection,
    model_type: &str,
    id: &EntityId,
) -> Result<(), StoreError> {
    sqlx::query(DELETE_MODEL)
        .bind(model_type)
        .bind(id.as_str())
        .execute(&mut *connection)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn clear_models(
    connection: &mut SqliteConnection,
    model_type: &str,
) -> Result<(), StoreError> {
    sqlx::query(CLEAR_MODELS)
        .bind(model_type)
        .execute(&mut *connection)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Compare-and-set of the handler's position first (a conflict writes nothing), then the
/// models and the outbox.
async fn project(
    connection: &mut SqliteConnection,
    handler: &str,
    expected: Position,
    position: Position,
    models: &[ModelWrite],
    outbox: &[OutboxMessage],
) -> Result<(), StoreError> {
    let query = if expected == Position::START {
        CAS_POSITION_NEW
    } else {
        CAS_POSITION
    };
    let done = sqlx::query(query)
        .bind(handler)
        .bind(db_int(position.0, "position")?)
        .bind(time_text(&Utc::now()))
        .bind(db_int(expected.0, "position")?)
        .execute(&mut *connection)
        .await
        .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::PositionConflict {
            handler: handler.to_owned(),
            expected,
        });
    }
    for write in last_writes(models) {
        match &write.state {
            Some(state) => put_model(connection, &write.model_type, &write.id, state).await?,
            None => delete_model(connection, &write.model_type, &write.id).await?,
        }
    }
    insert_outbox(connection, outbox).await
}

// ---- statements -----------------------------------------------------------------------------

/// The optimistic append: one statement inserts at `?3 + 1` only if `?3` is the stream's last
/// sequence (an index lookup on the primary key); 0 rows means a conflict.
pub(super) const INSERT_COMMAND: &str = concat!(
    "INSERT INTO sf_commands (",
    crate::sql::command_columns!(""),
    ") SELECT ?1, ?2, ?3 + 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10 \
     WHERE (SELECT COALESCE(MAX(sequence), 0) FROM sf_commands \
            WHERE stream_type = ?1 AND stream_id = ?2) = ?3"
);
pub(super) const LAST_EVENT_SEQUENCE: &str =
    "SELECT COALESCE(MAX(sequence), 0) FROM sf_events WHERE stream_type = ?1 AND stream_id = ?2";
const INSERT_EVENT: &str = "INSERT INTO sf_events (stream_type, stream_id, sequence, \
     command_sequence, message_id, name, version, correlation_id, causation_id, created_at, \
     payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING position";
/// An event at the stream's next sequence (`MAX` over the stream's index entries reads one).
pub(super) const INSERT_NEXT_EVENT: &str =
    "INSERT INTO sf_events (stream_type, stream_id, sequence, \
     command_sequence, message_id, name, version, correlation_id, causation_id, created_at, \
     payload) VALUES (?1, ?2, (SELECT COALESCE(MAX(sequence), 0) + 1 FROM sf_events \
     WHERE stream_type = ?1 AND stream_id = ?2), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     RETURNING position, sequence";
const INSERT_OUTBOX: &str = "INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, \
     version, correlation_id, causation_id, created_at, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const UPSERT_ENTITY: &str = "INSERT INTO sf_entities (entity_type, entity_id, version, state, \
     updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (entity_type, entity_id) DO UPDATE \
     SET version = excluded.version, state = excluded.state, updated_at = excluded.updated_at";
/// `put_entity` expecting no stored state (or one stored at version 0).
const PUT_ENTITY_NEW: &str = "INSERT INTO sf_entities (entity_type, entity_id, version, state, \
     updated_at) SELECT ?1, ?2, ?3, ?4, ?5 WHERE ?6 = 0 \
     ON CONFLICT (entity_type, entity_id) DO UPDATE \
     SET version = excluded.version, state = excluded.state, updated_at = excluded.updated_at \
     WHERE sf_entities.version = 0";
pub(super) const PUT_ENTITY_CAS: &str = "UPDATE sf_entities SET version = ?3, state = ?4, \
     updated_at = ?5 WHERE entity_type = ?1 AND entity_id = ?2 AND version = ?6";
const DELETE_ENTITY: &str = "DELETE FROM sf_entities WHERE entity_type = ?1 AND entity_id = ?2";
const PUT_MODEL: &str = "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model_type, model_id) DO UPDATE \
     SET state = excluded.state, updated_at = excluded.updated_at";
pub(super) const DELETE_MODEL: &str =
    "DELETE FROM sf_view_models WHERE model_type = ?1 AND model_id = ?2";
pub(super) const CLEAR_MODELS: &str = "DELETE FROM sf_view_models WHERE model_type = ?1";
const SET_POSITION: &str = "INSERT INTO sf_positions (handler, position, updated_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (handler) DO UPDATE \
     SET position = excluded.position, updated_at = excluded.updated_at";
/// The position compare-and-set when the handler expects to start from the beginning: no row
/// yet, or a row at 0.
const CAS_POSITION_NEW: &str = "INSERT INTO sf_positions (handler, position, updated_at) \
     SELECT ?1, ?2, ?3 WHERE ?4 = 0 ON CONFLICT (handler) DO UPDATE \
     SET position = excluded.position, updated_at = excluded.updated_at \
     WHERE sf_positions.position = 0";
pub(super) const CAS_POSITION: &str = "UPDATE sf_positions SET position = ?2, updated_at = ?3 \
     WHERE handler = ?1 AND position = ?4";
const DELETE_POSITION: &str = "DELETE FROM sf_positions WHERE handler = ?1";
const DELETE_OUTBOX: &str = "DELETE FROM sf_outbox WHERE id = ?1";
