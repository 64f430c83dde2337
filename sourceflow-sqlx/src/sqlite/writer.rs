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
use rusqlite::{params, Connection};
use sourceflow::store::StoreError;
use sourceflow::{Position, Sequence};
use tokio::sync::{mpsc, oneshot};

use super::columns::time_text;
use super::commit::{
    clear_models, commit, conflict, delete_model, insert_command, insert_events,
    last_event_sequence, project, put_model,
};
use super::queries::*;
use super::statement::{db_err, execute, scalar};
use crate::retry::Backoff;
use crate::sql::queries::LAST_SEQUENCE;
use crate::sql::values::{db_int, from_db, payload_text};
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

/// A transaction control statement (`BEGIN`, `COMMIT`, `SAVEPOINT`, ...).
fn control(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    execute(connection, sql, []).map(drop).map_err(db_err)
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
        Write::Leases(write) => super::lease::apply(connection, write),
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

/// A view's or reaction's batch committed after the events it applies: its position and
/// effects commit together, so losing the transaction to a power failure only means projecting
/// those events again from the log.
fn is_projection(write: &Write) -> bool {
    matches!(write, Write::CommitProjection(_))
}
