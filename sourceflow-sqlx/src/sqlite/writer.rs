//! The single writer and its group commit.
//!
//! One OS thread owns the only writing connection, a synchronous SQLite connection whose
//! statements are prepared once and reused. It waits for a unit of work, takes every other one
//! already queued (up to `max_batch`), and runs them all in one `BEGIN IMMEDIATE` transaction.
//! Units run one after another without savepoints: a unit refused with a conflict has written
//! nothing and is answered on the spot. If a unit fails part-way, the transaction is rolled
//! back and the batch re-run with each unit inside its own `SAVEPOINT`, released on success and
//! rolled back on failure, so a failure undoes that unit alone. One `COMMIT` (one fsync) then
//! makes the whole batch durable, and only then is each caller answered. If the transaction as
//! a whole fails (another process held the file past `busy_timeout`, an I/O error), nothing of
//! the batch is committed: the batch is retried with backoff when the fault is transient, and
//! every caller gets the error otherwise.
//!
//! Callers on the async side reach the thread through a bounded Tokio channel and get their
//! answer back through a oneshot channel; the thread ends once every sender is dropped. Rows are
//! written exactly as the readers (sqlx) read them: UUIDs and timestamps as text, payloads as
//! UTF-8 JSON text.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use rusqlite::types::Value;
use rusqlite::{params, Connection, Params};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{ModelWrite, OutboxMessage, StoreError, UnitOfWork};
use sourceflow::{CommandReceipt, EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::columns::{time_text, ValueRow};
use super::error::{classify_writer, is_unique_violation_writer};
use super::queries::*;
use crate::retry::Backoff;
use crate::sql::last_writes;
use crate::sql::queries::LAST_SEQUENCE;
use crate::sql::rows::receipt;
use crate::sql::values::{db_int, from_db, micros, payload_text};
use crate::sql::write::{Write, Written};

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
    pub unsynced: AtomicU64,
}

/// The writer thread is gone (it could not be started, or it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer thread has stopped")]
struct WriterStopped;

pub(super) fn stopped() -> StoreError {
    StoreError::Backend(Box::new(WriterStopped))
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

/// How many prepared statements the writer's connection keeps: every statement it runs.
pub(super) const STATEMENT_CACHE: usize = 64;

/// The writer loop, run on the writer thread: returns once every
/// [`SqliteStore`](super::SqliteStore) handle is dropped, closing the connection.
///
/// With `relax_projections` (the connection runs `synchronous=FULL`), a batch made only
/// of projection commits is committed with `synchronous=NORMAL`: it does not wait for an fsync
/// of its own. The WAL is one append-only file, so the next synchronous commit's fsync makes
/// it durable too, and a power failure before that loses it whole (position and effects
/// together; the events are projected again from the log). The commands' own commits keep
/// waiting for their fsync.
pub(super) fn run(
    connection: Connection,
    mut queue: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
    backoff: Backoff,
    max_batch: usize,
    relax_projections: bool,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(job) = queue.blocking_recv() {
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
        let unsynced = relax_projections
            && batch.iter().all(|job| is_projection(&job.write))
            && match connection.pragma_update(None, "synchronous", "NORMAL") {
                Ok(()) => true,
                Err(e) => {
                    // Committed with its own fsync, then.
                    tracing::warn!(error = %e, "sqlite writer: could not relax synchronous");
                    false
                }
            };
        let (results, committed) = commit_batch(&connection, &batch, &backoff);
        if unsynced {
            if let Err(e) = connection.pragma_update(None, "synchronous", "FULL") {
                // Later commits would not wait for their fsync: stop writing instead (every
                // write then fails with "the SQLite writer thread has stopped").
                tracing::error!(error = %e, "sqlite writer: could not restore synchronous=FULL; stopping");
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
                return;
            }
            if committed {
                stats.unsynced.fetch_add(1, Ordering::Relaxed);
            }
        }
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
    if let Err((_, e)) = connection.close() {
        tracing::debug!(error = %e, "sqlite writer close");
    }
}

/// Commits one batch, retrying the whole transaction on transient faults. The flag says
/// whether a transaction was committed.
fn commit_batch(
    connection: &Connection,
    batch: &[Job],
    backoff: &Backoff,
) -> (Vec<Result<Written, StoreError>>, bool) {
    let mut attempt = 1;
    loop {
        match try_batch(connection, batch) {
            Ok(outcome) => return outcome,
            Err(e) if e.is_transient() && attempt < backoff.max_attempts() => {
                tracing::debug!(error = %e, attempt, units = batch.len(), "sqlite batch failed, retrying");
                std::thread::sleep(backoff.delay(attempt));
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
fn try_batch(
    connection: &Connection,
    batch: &[Job],
) -> Result<(Vec<Result<Written, StoreError>>, bool), StoreError> {
    // IMMEDIATE takes the write lock now (waiting up to busy_timeout for another process)
    // rather than at the first write, where a stale read snapshot could not be upgraded.
    control(connection, "BEGIN IMMEDIATE")?;
    match run_units(connection, batch) {
        Ok(Ok(results)) => match control(connection, "COMMIT") {
            Ok(()) => Ok((results, true)),
            Err(e) => {
                rollback(connection);
                Err(e)
            }
        },
        Ok(Err(refused)) => {
            rollback(connection);
            Ok((vec![Err(refused)], false))
        }
        Err(e) => {
            rollback(connection);
            Err(e)
        }
    }
}

fn rollback(connection: &Connection) {
    // Fails harmlessly if SQLite already rolled the transaction back itself.
    if let Err(e) = control(connection, "ROLLBACK") {
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
#[allow(clippy::type_complexity)]
fn run_units(
    connection: &Connection,
    batch: &[Job],
) -> Result<Result<Vec<Result<Written, StoreError>>, StoreError>, StoreError> {
    let mut results = Vec::with_capacity(batch.len());
    if let [job] = batch {
        // Alone in its transaction, a unit needs no savepoint: if it fails, the caller rolls
        // the whole transaction back.
        return match apply(connection, &job.write) {
            Ok(written) => Ok(Ok(vec![Ok(written)])),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => Ok(Err(e)),
        };
    }
    let mut clean = true;
    for job in batch {
        match apply(connection, &job.write) {
            Ok(written) => results.push(Ok(written)),
            Err(e @ (StoreError::Conflict { .. } | StoreError::PositionConflict { .. })) => {
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
    rollback(connection);
    control(connection, "BEGIN IMMEDIATE")?;
    results.clear();
    for job in batch {
        control(connection, "SAVEPOINT sf_unit")?;
        match apply(connection, &job.write) {
            Ok(written) => {
                control(connection, "RELEASE sf_unit")?;
                results.push(Ok(written));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                control(connection, "ROLLBACK TO sf_unit")?;
                control(connection, "RELEASE sf_unit")?;
                results.push(Err(e));
            }
        }
    }
    Ok(Ok(results))
}

// ---- statement execution --------------------------------------------------------------------

pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    classify_writer(e)
}

/// Runs `sql` (prepared once, then taken from the connection's cache) with `params`: the
/// number of rows it changed.
pub(super) fn execute(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<usize, rusqlite::Error> {
    connection.prepare_cached(sql)?.execute(params)
}

/// A transaction control statement (`BEGIN`, `COMMIT`, `SAVEPOINT`, ...).
fn control(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    execute(connection, sql, []).map(drop).map_err(db_err)
}

/// The single integer `sql` returns.
fn scalar(connection: &Connection, sql: &str, params: impl Params) -> Result<i64, StoreError> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.query_row(params, |row| row.get(0)))
        .map_err(db_err)
}

/// The metadata columns of an envelope (`message_id, name, version, correlation_id,
/// causation_id, created_at`) as SQLite stores them: UUIDs and times as text.
pub(super) struct Metadata<'a> {
    pub(super) message_id: String,
    pub(super) name: &'a str,
    pub(super) version: i64,
    pub(super) correlation_id: String,
    pub(super) causation_id: Option<String>,
    pub(super) created_at: String,
}

impl<'a> Metadata<'a> {
    pub(super) fn of(envelope: &'a Envelope) -> Self {
        Self {
            message_id: envelope.message_id.to_string(),
            name: &envelope.name,
            version: i64::from(envelope.version),
            correlation_id: envelope.correlation_id.to_string(),
            causation_id: envelope.causation_id.map(|id| id.to_string()),
            created_at: time_text(&envelope.timestamp),
        }
    }
}

/// The receipt of `message_id` in `stream`, read inside the writer's transaction (so it sees
/// the batch's earlier units): `None` if no such command was accepted.
fn find_receipt(
    connection: &Connection,
    stream: &StreamId,
    message_id: Uuid,
) -> Result<Option<CommandReceipt>, StoreError> {
    let rows = connection
        .prepare_cached(READS.find_receipt)
        .and_then(|mut statement| {
            let columns = statement.column_count();
            statement
                .query_map(
                    params![
                        &*stream.entity_type,
                        stream.id.as_str(),
                        message_id.to_string()
                    ],
                    |row| {
                        (0..columns)
                            .map(|index| row.get::<_, Value>(index))
                            .collect::<Result<Vec<_>, _>>()
                            .map(ValueRow)
                    },
                )?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db_err)?;
    receipt(&rows, stream, message_id)
}

// ---- the writes -----------------------------------------------------------------------------

fn apply(connection: &Connection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::Commit(unit) => commit(connection, unit).map(Written::Receipt),
        Write::CommitInline(unit, projections) => {
            let receipt = commit(connection, unit)?;
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
                );
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
            if insert_command(connection, *expected, command, None)? {
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
            let last = last_event_sequence(connection, stream)?;
            if last != *expected {
                return Err(conflict(stream, *expected));
            }
            let command_sequence = scalar(
                connection,
                LAST_SEQUENCE,
                params![&*stream.entity_type, stream.id.as_str()],
            )?;
            let command_sequence = Sequence(from_db(command_sequence, "sequence")?);
            let recorded = insert_events(connection, stream, command_sequence, last, events)?;
            if let (Some(first), Some(last)) = (recorded.first(), recorded.last()) {
                // The events are recorded under the stream's last command: its receipt lists
                // them too, as on every store.
                execute(
                    connection,
                    EXTEND_COMMAND_EVENTS,
                    params![
                        &*stream.entity_type,
                        stream.id.as_str(),
                        db_int(command_sequence.0, "sequence")?,
                        db_int(first.sequence.0, "event sequence")?,
                        db_int(last.sequence.0, "event sequence")?,
                    ],
                )
                .map_err(db_err)?;
            }
            Ok(Written::Events(recorded))
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
            let changed = execute(
                connection,
                query,
                params![
                    &*stream.entity_type,
                    stream.id.as_str(),
                    db_int(version.0, "entity version")?,
                    payload_text(state, "entity state")?,
                    time_text(&Utc::now()),
                    db_int(expected.0, "entity version")?,
                ],
            )
            .map_err(db_err)?;
            if changed == 0 {
                return Err(conflict(stream, *expected));
            }
            Ok(Written::Done)
        }
        Write::DeleteEntity { stream } => {
            execute(
                connection,
                DELETE_ENTITY,
                params![&*stream.entity_type, stream.id.as_str()],
            )
            .map_err(db_err)?;
            Ok(Written::Done)
        }
        Write::PutModel {
            model_type,
            id,
            state,
        } => {
            put_model(connection, model_type, id, state)?;
            Ok(Written::Done)
        }
        Write::DeleteModel { model_type, id } => {
            delete_model(connection, model_type, id)?;
            Ok(Written::Done)
        }
        Write::ClearModels { model_type } => {
            clear_models(connection, model_type)?;
            Ok(Written::Done)
        }
        Write::SetPosition { handler, position } => {
            execute(
                connection,
                SET_POSITION,
                params![
                    handler.as_str(),
                    db_int(position.0, "position")?,
                    time_text(&Utc::now()),
                ],
            )
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
            )?;
            Ok(Written::Done)
        }
        Write::ResetProjection {
            handler,
            model_types,
        } => {
            for model_type in model_types {
                clear_models(connection, model_type)?;
            }
            execute(connection, DELETE_POSITION, params![handler.as_str()]).map_err(db_err)?;
            Ok(Written::Done)
        }
        Write::Schedules(write) => super::schedule::apply(connection, write),
        Write::Keys(write) => super::keys::apply(connection, write),
        Write::DeleteStream(unit) => {
            super::lifecycle::delete_stream(connection, unit).map(Written::Receipt)
        }
        Write::ArchiveStream(unit) => {
            super::lifecycle::archive_stream(connection, unit).map(Written::Receipt)
        }
        Write::RestoreStream(unit) => {
            super::lifecycle::restore_stream(connection, unit).map(Written::Receipt)
        }
        Write::RemoveOutbox { ids } => {
            for id in ids {
                execute(
                    connection,
                    DELETE_OUTBOX,
                    params![db_int(*id, "outbox id")?],
                )
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
pub(super) fn commit(
    connection: &Connection,
    unit: &UnitOfWork,
) -> Result<CommandReceipt, StoreError> {
    let envelope = &unit.command.envelope;
    let stream = &envelope.stream;
    // The command row records the stream sequences its events take, after the stream's last.
    let last_event = match unit.events.len() {
        0 => None,
        _ => Some(last_event_sequence(connection, stream)?),
    };
    let range = last_event.map(|last| (last.next(), Sequence(last.0 + unit.events.len() as u64)));
    // A subject's first key lost to another unit's: refused before anything is written (a
    // resent unit finds its receipt below, on its retry with the winning key).
    if !unit.keys.is_empty() && super::keys::taken(connection, &unit.keys)? {
        return match find_receipt(connection, stream, envelope.message_id)? {
            Some(receipt) => Ok(receipt),
            None => Err(conflict(stream, unit.expected)),
        };
    }
    // The append itself detects a resent message id (the stream moved past `expected`, or the
    // (stream, message id) key exists), so the common case costs no lookup beforehand.
    if !insert_command(connection, unit.expected, &unit.command, range)? {
        return match find_receipt(connection, stream, envelope.message_id)? {
            Some(receipt) => Ok(receipt),
            None => Err(conflict(stream, unit.expected)),
        };
    }
    if !unit.keys.is_empty() {
        super::keys::insert(connection, &unit.keys)?;
    }
    let sequence = unit.expected.next();
    if let Some(state) = &unit.entity {
        execute(
            connection,
            UPSERT_ENTITY,
            params![
                &*stream.entity_type,
                stream.id.as_str(),
                db_int(sequence.0, "entity version")?,
                payload_text(state, "entity state")?,
                time_text(&Utc::now()),
            ],
        )
        .map_err(db_err)?;
    }
    let events = match last_event {
        Some(last) => insert_events(connection, stream, sequence, last, &unit.events)?,
        None => Vec::new(),
    };
    insert_outbox(connection, &unit.outbox)?;
    Ok(CommandReceipt {
        message_id: envelope.message_id,
        stream: stream.clone(),
        sequence,
        events,
        duplicate: false,
        retries: 0,
    })
}

/// Inserts `command` at `expected + 1` if the stream's last sequence is `expected`: `false`
/// when the stream has moved on. `events` is the range of stream sequences the events the
/// caller appends next take (`None` without events).
fn insert_command(
    connection: &Connection,
    expected: Sequence,
    command: &StoredCommand,
    events: Option<(Sequence, Sequence)>,
) -> Result<bool, StoreError> {
    let (first_event, last_event) = match events {
        Some((first, last)) => (
            Some(db_int(first.0, "event sequence")?),
            Some(db_int(last.0, "event sequence")?),
        ),
        None => (None, None),
    };
    let envelope = &command.envelope;
    let meta = Metadata::of(envelope);
    let done = execute(
        connection,
        INSERT_COMMAND,
        params![
            &*envelope.stream.entity_type,
            envelope.stream.id.as_str(),
            db_int(expected.0, "sequence")?,
            meta.message_id,
            meta.name,
            meta.version,
            meta.correlation_id,
            meta.causation_id,
            meta.created_at,
            payload_text(&command.payload, "command payload")?,
            first_event,
            last_event,
        ],
    );
    match done {
        Ok(changed) => Ok(changed == 1),
        // Only another writer of the file could get there first, and it holds the write lock
        // while we check; a unique violation still means "the stream moved on".
        Err(e) if is_unique_violation_writer(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

fn last_event_sequence(connection: &Connection, stream: &StreamId) -> Result<Sequence, StoreError> {
    let last = scalar(
        connection,
        LAST_EVENT_SEQUENCE,
        params![&*stream.entity_type, stream.id.as_str()],
    )?;
    Ok(Sequence(from_db(last, "event sequence")?))
}

/// The event as recorded at `sequence` and `position` in `stream`.
fn recorded(
    event: &NewEvent,
    stream: &StreamId,
    sequence: Sequence,
    command_sequence: Sequence,
    position: i64,
) -> Result<RecordedEvent, StoreError> {
    let mut envelope = event.envelope.clone();
    envelope.stream = stream.clone();
    envelope.timestamp = micros(envelope.timestamp);
    Ok(RecordedEvent {
        envelope,
        sequence,
        command_sequence,
        position: Position(from_db(position, "position")?),
        payload: event.payload.clone(),
    })
}

/// Inserts `events` after the stream's last event `last`, emitted by command
/// `command_sequence`.
fn insert_events(
    connection: &Connection,
    stream: &StreamId,
    command_sequence: Sequence,
    last: Sequence,
    events: &[NewEvent],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut recorded_events = Vec::with_capacity(events.len());
    for (event, sequence) in events.iter().zip(last.0 + 1..) {
        let command = db_int(command_sequence.0, "sequence")?;
        let stored_sequence = db_int(sequence, "event sequence")?;
        let meta = Metadata::of(&event.envelope);
        let payload = payload_text(&event.payload, "event payload")?;
        let position: i64 = connection
            .prepare_cached(INSERT_EVENT)
            .and_then(|mut statement| {
                statement.query_row(
                    params![
                        &*stream.entity_type,
                        stream.id.as_str(),
                        stored_sequence,
                        command,
                        meta.message_id,
                        meta.name,
                        meta.version,
                        meta.correlation_id,
                        meta.causation_id,
                        meta.created_at,
                        payload,
                    ],
                    |row| row.get(0),
                )
            })
            .map_err(db_err)?;
        let sequence = Sequence(sequence);
        recorded_events.push(recorded(
            event,
            stream,
            sequence,
            command_sequence,
            position,
        )?);
    }
    Ok(recorded_events)
}

fn insert_outbox(connection: &Connection, messages: &[OutboxMessage]) -> Result<(), StoreError> {
    for message in messages {
        let envelope = &message.envelope;
        let meta = Metadata::of(envelope);
        execute(
            connection,
            INSERT_OUTBOX,
            params![
                &*envelope.stream.entity_type,
                envelope.stream.id.as_str(),
                meta.message_id,
                meta.name,
                meta.version,
                meta.correlation_id,
                meta.causation_id,
                meta.created_at,
                payload_text(&message.payload, "outbox payload")?,
            ],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

fn put_model(
    connection: &Connection,
    model_type: &str,
    id: &EntityId,
    state: &[u8],
) -> Result<(), StoreError> {
    execute(
        connection,
        PUT_MODEL,
        params![
            model_type,
            id.as_str(),
            payload_text(state, "view model state")?,
            time_text(&Utc::now()),
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

fn delete_model(
    connection: &Connection,
    model_type: &str,
    id: &EntityId,
) -> Result<(), StoreError> {
    execute(connection, DELETE_MODEL, params![model_type, id.as_str()]).map_err(db_err)?;
    Ok(())
}

fn clear_models(connection: &Connection, model_type: &str) -> Result<(), StoreError> {
    execute(connection, CLEAR_MODELS, params![model_type]).map_err(db_err)?;
    Ok(())
}

/// Compare-and-set of the handler's position first (a conflict writes nothing), then the
/// models and the outbox.
fn project(
    connection: &Connection,
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
    let changed = execute(
        connection,
        query,
        params![
            handler,
            db_int(position.0, "position")?,
            time_text(&Utc::now()),
            db_int(expected.0, "position")?,
        ],
    )
    .map_err(db_err)?;
    if changed == 0 {
        return Err(StoreError::PositionConflict {
            handler: handler.to_owned(),
            expected,
        });
    }
    for write in last_writes(models) {
        match &write.state {
            Some(state) => put_model(connection, &write.model_type, &write.id, state)?,
            None => delete_model(connection, &write.model_type, &write.id)?,
        }
    }
    insert_outbox(connection, outbox)
}

/// A view's or reaction's batch committed after the events it applies: its position and
/// effects commit together, so losing the transaction to a power failure only means projecting
/// those events again from the log.
fn is_projection(write: &Write) -> bool {
    matches!(write, Write::CommitProjection(_))
}
