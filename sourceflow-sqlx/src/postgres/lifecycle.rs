//! A stream's lifecycle on Postgres, each change one transaction of its own: the marker's
//! command appended optimistically (as `append_command` does), its event under the append
//! lock, then the erasure in place (deletion) or the move to or from the archive tables of
//! migration `0011` (archiving, restoring). A command racing the change conflicts on the
//! marker's sequence, or committed before it and is erased or archived with the rest. A deletion
//! or archive goes at the stream's next sequence as read in its own transaction, so a stream
//! busy with sends cannot starve it.

use sourceflow::lifecycle::ERASED;
use sourceflow::store::{StoreError, UnitOfWork};
use sourceflow::{CommandReceipt, Position, RecordedEvent, Sequence};
use sqlx::{PgConnection, Row};

use super::commit::BindEnvelope;
use super::error::{classify, is_unique_violation};
use super::queries::INSERT_COMMAND;
use super::{conflict, Postgres};
use crate::sql::queries::LAST_COMMAND;
use crate::sql::read::find_receipt;
use crate::sql::values::{db_int, from_db, micros, payload_text};
use crate::sql::write::Written;
use crate::sql::Backend;

/// What to do to the stream after the marker.
#[derive(Clone, Copy, Debug)]
pub(super) enum Change {
    Delete,
    Archive,
    Restore,
}

const LAST_EVENT: &str = "SELECT COALESCE((SELECT sequence FROM sf_events \
     WHERE stream_type = $1 AND stream_id = $2 ORDER BY sequence DESC LIMIT 1), 0)";
const INSERT_EVENT: &str = "INSERT INTO sf_events (stream_type, stream_id, sequence, \
     command_sequence, message_id, name, version, correlation_id, causation_id, created_at, \
     payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::json) RETURNING position";
const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
const COMMAND_COLUMNS: &str = "stream_type, stream_id, sequence, message_id, name, version, \
     correlation_id, causation_id, created_at, payload";
const EVENT_COLUMNS: &str = "position, stream_type, stream_id, sequence, command_sequence, \
     message_id, name, version, correlation_id, causation_id, created_at, payload";
const ERASE_COMMANDS: &str = "UPDATE sf_commands SET name = $4, payload = 'null'::json \
     WHERE stream_type = $1 AND stream_id = $2 AND sequence < $3";
const ERASE_EVENTS: &str = "UPDATE sf_events SET name = $4, payload = 'null'::json \
     WHERE stream_type = $1 AND stream_id = $2 AND sequence < $3";
const DELETE_ENTITY: &str = "DELETE FROM sf_entities WHERE entity_type = $1 AND entity_id = $2";

fn archive_commands() -> String {
    format!(
        "WITH moved AS (DELETE FROM sf_commands WHERE stream_type = $1 AND stream_id = $2 \
         AND sequence < $3 RETURNING {COMMAND_COLUMNS}) \
         INSERT INTO sf_archived_commands ({COMMAND_COLUMNS}) SELECT {COMMAND_COLUMNS} FROM moved"
    )
}

fn archive_events() -> String {
    format!(
        "WITH moved AS (DELETE FROM sf_events WHERE stream_type = $1 AND stream_id = $2 \
         AND sequence < $3 RETURNING {EVENT_COLUMNS}) \
         INSERT INTO sf_archived_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM moved"
    )
}

fn restore_commands() -> String {
    format!(
        "WITH moved AS (DELETE FROM sf_archived_commands WHERE stream_type = $1 \
         AND stream_id = $2 RETURNING {COMMAND_COLUMNS}) \
         INSERT INTO sf_commands ({COMMAND_COLUMNS}) SELECT {COMMAND_COLUMNS} FROM moved"
    )
}

fn restore_events() -> String {
    format!(
        "WITH moved AS (DELETE FROM sf_archived_events WHERE stream_type = $1 \
         AND stream_id = $2 RETURNING {EVENT_COLUMNS}) \
         INSERT INTO sf_events ({EVENT_COLUMNS}) OVERRIDING SYSTEM VALUE \
         SELECT {EVENT_COLUMNS} FROM moved"
    )
}

/// How the marker's append went.
enum Appended {
    Receipt(CommandReceipt),
    /// Not appended: a resent message id or a moved stream (told apart after rollback).
    Refused,
}

impl Postgres {
    /// Commits the marker `unit` and `change` in one transaction, retried on transient faults.
    pub(super) async fn change_stream(
        &self,
        unit: UnitOfWork,
        change: Change,
    ) -> Result<Written, StoreError> {
        let unit = &unit;
        let appended = self
            .backoff
            .run(Self::NAME, "change_stream", || async move {
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let appended = self.change_in(&mut tx, unit, change).await?;
                if matches!(appended, Appended::Receipt(_)) {
                    tx.commit().await.map_err(classify)?;
                }
                Ok(appended)
            })
            .await?;
        match appended {
            Appended::Receipt(receipt) => Ok(Written::Receipt(receipt)),
            Appended::Refused => {
                let stream = &unit.command.envelope.stream;
                match find_receipt(self, stream, unit.command.envelope.message_id).await? {
                    Some(receipt) => Ok(Written::Receipt(receipt)),
                    None => Err(conflict(stream, unit.expected)),
                }
            }
        }
    }

    async fn change_in(
        &self,
        tx: &mut PgConnection,
        unit: &UnitOfWork,
        change: Change,
    ) -> Result<Appended, StoreError> {
        let followed;
        let unit = match change {
            Change::Delete | Change::Archive => {
                followed = follow_last(tx, unit).await?;
                &followed
            }
            Change::Restore => unit,
        };
        let envelope = &unit.command.envelope;
        let stream = &envelope.stream;
        let (kind, id) = (&*stream.entity_type, stream.id.as_str());
        let expected = db_int(unit.expected.0, "sequence")?;
        let payload = payload_text(&unit.command.payload, "command payload")?;
        let inserted = sqlx::query(INSERT_COMMAND)
            .bind(kind)
            .bind(id)
            .bind(expected)
            .bind_envelope(envelope)
            .bind(payload)
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => return Ok(Appended::Refused),
            Err(e) if is_unique_violation(&e) => return Ok(Appended::Refused),
            Err(e) => return Err(classify(e)),
        }
        let sequence = unit.expected.next();
        let command_sequence = db_int(sequence.0, "sequence")?;
        sqlx::query(LOCK)
            .bind(self.lock_key)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let last: i64 = sqlx::query(LAST_EVENT)
            .bind(kind)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(classify)?;
        let mut events = Vec::with_capacity(unit.events.len());
        for (event, at) in unit.events.iter().zip(last + 1..) {
            let payload = payload_text(&event.payload, "event payload")?;
            let position: i64 = sqlx::query(INSERT_EVENT)
                .bind(kind)
                .bind(id)
                .bind(at)
                .bind(command_sequence)
                .bind_envelope(&event.envelope)
                .bind(payload)
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(classify)?;
            let mut envelope = event.envelope.clone();
            envelope.stream = stream.clone();
            envelope.timestamp = micros(envelope.timestamp);
            events.push(RecordedEvent {
                envelope,
                sequence: Sequence(from_db(at, "event sequence")?),
                command_sequence: sequence,
                position: Position(from_db(position, "position")?),
                payload: event.payload.clone(),
            });
        }
        // Everything before the marker's event.
        let first_event = last + 1;
        let statements: Vec<(String, i64)> = match change {
            Change::Delete => vec![
                (restore_commands(), 0),
                (restore_events(), 0),
                (ERASE_COMMANDS.to_owned(), command_sequence),
                (ERASE_EVENTS.to_owned(), first_event),
                (DELETE_ENTITY.to_owned(), 0),
            ],
            Change::Archive => vec![
                (archive_commands(), command_sequence),
                (archive_events(), first_event),
                (DELETE_ENTITY.to_owned(), 0),
            ],
            Change::Restore => vec![(restore_commands(), 0), (restore_events(), 0)],
        };
        for (sql, bound) in &statements {
            let mut query = sqlx::query(sql).bind(kind).bind(id);
            if sql.contains("$3") {
                query = query.bind(*bound);
            }
            if sql.contains("$4") {
                query = query.bind(ERASED);
            }
            query.execute(&mut *tx).await.map_err(classify)?;
        }
        Ok(Appended::Receipt(CommandReceipt {
            message_id: envelope.message_id,
            stream: stream.clone(),
            sequence,
            events,
            duplicate: false,
            retries: 0,
        }))
    }
}

/// The marker `unit` moved past the commands that committed since the flow read the stream,
/// unless one of them is a marker itself: a busy stream cannot starve its deletion (a command
/// committing between this read and the marker's insert still makes the insert conflict).
async fn follow_last(tx: &mut PgConnection, unit: &UnitOfWork) -> Result<UnitOfWork, StoreError> {
    let mut unit = unit.clone();
    let stream = &unit.command.envelope.stream;
    let last = sqlx::query(LAST_COMMAND)
        .bind(&*stream.entity_type)
        .bind(stream.id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
    if let Some(row) = last {
        let sequence: i64 = row.try_get(0).map_err(classify)?;
        let name: String = row.try_get(1).map_err(classify)?;
        unit.place_marker_after(Sequence(from_db(sequence, "sequence")?), &name);
    }
    Ok(unit)
}
