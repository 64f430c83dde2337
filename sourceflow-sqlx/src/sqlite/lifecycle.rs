//! A stream's lifecycle on the writer's connection: deletion erases in place, archiving moves
//! rows to the archive tables (migration `0005`), restoring moves them back. Each runs in the
//! writer's transaction with the marker unit it commits first, at the stream's next sequence
//! (commands that committed since the flow read the stream come before it and are erased or
//! archived with the rest), so a command racing it either commits before the marker or
//! conflicts, and a busy stream cannot starve its deletion.
//!
//! Nothing here removes the newest row of `sf_events`: positions are rowids, and a removed
//! newest row would hand its position out again, so views would skip the next event. Deletion
//! only rewrites rows; archiving moves rows older than the marker event it has just appended.

use rusqlite::{params, Connection, OptionalExtension};
use sourceflow::lifecycle::ERASED;
use sourceflow::store::{StoreError, UnitOfWork};
use sourceflow::{CommandReceipt, Sequence, StreamId};

use super::commit::commit;
use super::statement::{db_err, execute};
use crate::sql::queries::LAST_COMMAND;
use crate::sql::values::{db_int, from_db};

const COMMAND_COLUMNS: &str = "stream_type, stream_id, sequence, message_id, name, version, \
     correlation_id, causation_id, created_at, payload, first_event, last_event";
const EVENT_COLUMNS: &str = "position, stream_type, stream_id, sequence, command_sequence, \
     message_id, name, version, correlation_id, causation_id, created_at, payload";

/// Moves the archived rows of a stream back to the hot tables.
const RESTORE_COMMANDS: &str = "INSERT INTO sf_commands (stream_type, stream_id, sequence, \
     message_id, name, version, correlation_id, causation_id, created_at, payload, first_event, \
     last_event) SELECT stream_type, stream_id, sequence, message_id, name, version, \
     correlation_id, causation_id, created_at, payload, first_event, last_event \
     FROM sf_archived_commands WHERE stream_type = ?1 AND stream_id = ?2";
const RESTORE_EVENTS: &str = "INSERT INTO sf_events (position, stream_type, stream_id, \
     sequence, command_sequence, message_id, name, version, correlation_id, causation_id, \
     created_at, payload) SELECT position, stream_type, stream_id, sequence, command_sequence, \
     message_id, name, version, correlation_id, causation_id, created_at, payload \
     FROM sf_archived_events WHERE stream_type = ?1 AND stream_id = ?2";
const DROP_ARCHIVED_COMMANDS: &str =
    "DELETE FROM sf_archived_commands WHERE stream_type = ?1 AND stream_id = ?2";
const DROP_ARCHIVED_EVENTS: &str =
    "DELETE FROM sf_archived_events WHERE stream_type = ?1 AND stream_id = ?2";
/// Erases the commands before the tombstone (`?3`) and the events before its event (`?4`).
const ERASE_COMMANDS: &str = "UPDATE sf_commands SET name = ?5, payload = 'null' \
     WHERE stream_type = ?1 AND stream_id = ?2 AND sequence < ?3 AND ?4 >= 0";
const ERASE_EVENTS: &str = "UPDATE sf_events SET name = ?5, payload = 'null' \
     WHERE stream_type = ?1 AND stream_id = ?2 AND sequence < ?4 AND ?3 >= 0";
const DELETE_ENTITY: &str = "DELETE FROM sf_entities WHERE entity_type = ?1 AND entity_id = ?2";

fn archive_commands() -> String {
    format!(
        "INSERT INTO sf_archived_commands ({COMMAND_COLUMNS}) SELECT {COMMAND_COLUMNS} \
         FROM sf_commands WHERE stream_type = ?1 AND stream_id = ?2 AND sequence < ?3"
    )
}

fn archive_events() -> String {
    format!(
        "INSERT INTO sf_archived_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} \
         FROM sf_events WHERE stream_type = ?1 AND stream_id = ?2 AND sequence < ?3"
    )
}

const UNARCHIVE_COMMANDS: &str =
    "DELETE FROM sf_commands WHERE stream_type = ?1 AND stream_id = ?2 AND sequence < ?3";
const UNARCHIVE_EVENTS: &str =
    "DELETE FROM sf_events WHERE stream_type = ?1 AND stream_id = ?2 AND sequence < ?3";

/// The marker's command sequence and the sequence of its first event (one past the stream's
/// last event when it has none).
fn marker_sequences(receipt: &CommandReceipt) -> Result<(i64, i64), StoreError> {
    let command = db_int(receipt.sequence.0, "sequence")?;
    let event = match receipt.events.first() {
        Some(event) => event.sequence,
        None => Sequence(u64::MAX >> 1),
    };
    Ok((command, db_int(event.0, "event sequence")?))
}

/// The marker `unit` moved past the commands that committed since the flow read the stream
/// (the writer's transaction sees them all), unless one of them is a marker itself.
fn follow_last(connection: &Connection, unit: &UnitOfWork) -> Result<UnitOfWork, StoreError> {
    let mut unit = unit.clone();
    let stream = &unit.command.envelope.stream;
    let last = connection
        .prepare_cached(LAST_COMMAND)
        .and_then(|mut statement| {
            statement
                .query_row(params![&*stream.entity_type, stream.id.as_str()], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .optional()
        })
        .map_err(db_err)?;
    if let Some((sequence, name)) = last {
        unit.place_marker_after(Sequence(from_db(sequence, "sequence")?), &name);
    }
    Ok(unit)
}

fn run(
    connection: &Connection,
    sql: &str,
    stream: &StreamId,
    extra: &[i64],
) -> Result<(), StoreError> {
    let (kind, id) = (&*stream.entity_type, stream.id.as_str());
    let done = match extra {
        [] => execute(connection, sql, params![kind, id]),
        [a] => execute(connection, sql, params![kind, id, a]),
        _ => execute(
            connection,
            sql,
            params![kind, id, extra[0], extra[1], ERASED],
        ),
    };
    done.map(drop).map_err(db_err)
}

/// The tombstone, then the stream's archived rows brought back and everything before the
/// tombstone erased in place, and the entity state deleted.
pub(super) fn delete_stream(
    connection: &Connection,
    unit: &UnitOfWork,
) -> Result<CommandReceipt, StoreError> {
    let receipt = commit(connection, &follow_last(connection, unit)?)?;
    if receipt.duplicate {
        return Ok(receipt);
    }
    let stream = &receipt.stream;
    let (command, event) = marker_sequences(&receipt)?;
    restore_rows(connection, stream)?;
    run(connection, ERASE_COMMANDS, stream, &[command, event])?;
    run(connection, ERASE_EVENTS, stream, &[command, event])?;
    run(connection, DELETE_ENTITY, stream, &[])?;
    Ok(receipt)
}

/// The archive marker, then every earlier row of the stream moved to the archive tables, and
/// the entity state deleted. The marker's event, the newest row, stays.
pub(super) fn archive_stream(
    connection: &Connection,
    unit: &UnitOfWork,
) -> Result<CommandReceipt, StoreError> {
    let receipt = commit(connection, &follow_last(connection, unit)?)?;
    if receipt.duplicate {
        return Ok(receipt);
    }
    let stream = &receipt.stream;
    let (command, event) = marker_sequences(&receipt)?;
    run(connection, &archive_commands(), stream, &[command])?;
    run(connection, UNARCHIVE_COMMANDS, stream, &[command])?;
    run(connection, &archive_events(), stream, &[event])?;
    run(connection, UNARCHIVE_EVENTS, stream, &[event])?;
    run(connection, DELETE_ENTITY, stream, &[])?;
    Ok(receipt)
}

/// The restore marker, then the archived rows moved back at their own sequences and positions.
pub(super) fn restore_stream(
    connection: &Connection,
    unit: &UnitOfWork,
) -> Result<CommandReceipt, StoreError> {
    let receipt = commit(connection, unit)?;
    if receipt.duplicate {
        return Ok(receipt);
    }
    restore_rows(connection, &receipt.stream)?;
    Ok(receipt)
}

fn restore_rows(connection: &Connection, stream: &StreamId) -> Result<(), StoreError> {
    run(connection, RESTORE_COMMANDS, stream, &[])?;
    run(connection, RESTORE_EVENTS, stream, &[])?;
    run(connection, DROP_ARCHIVED_COMMANDS, stream, &[])?;
    run(connection, DROP_ARCHIVED_EVENTS, stream, &[])
}
