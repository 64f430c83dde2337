//! One unit of work's rows on the writer's connection: the duplicate check, the command, its events and outbox, the views' models and positions.
//! The [writer](super::writer) runs these inside its transactions; the lifecycle, key and
//! schedule writes build on them.

use chrono::Utc;
use rusqlite::types::Value;
use rusqlite::{params, Connection};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{ModelWrite, OutboxMessage, StoreError, UnitOfWork};
use sourceflow::{CommandReceipt, EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

use super::columns::{time_text, ValueRow};
use super::error::is_unique_violation_writer;
use super::queries::*;
use super::statement::{db_err, execute, scalar};
use crate::sql::last_writes;
use crate::sql::rows::receipt;
use crate::sql::values::{db_int, from_db, micros, payload_text};

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

// ---- the unit of work ----------------------------------------------------------------------

pub(super) fn conflict(stream: &StreamId, expected: Sequence) -> StoreError {
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
pub(super) fn insert_command(
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

pub(super) fn last_event_sequence(
    connection: &Connection,
    stream: &StreamId,
) -> Result<Sequence, StoreError> {
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
pub(super) fn insert_events(
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

pub(super) fn insert_outbox(
    connection: &Connection,
    messages: &[OutboxMessage],
) -> Result<(), StoreError> {
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

pub(super) fn put_model(
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

pub(super) fn delete_model(
    connection: &Connection,
    model_type: &str,
    id: &EntityId,
) -> Result<(), StoreError> {
    execute(connection, DELETE_MODEL, params![model_type, id.as_str()]).map_err(db_err)?;
    Ok(())
}

pub(super) fn clear_models(connection: &Connection, model_type: &str) -> Result<(), StoreError> {
    execute(connection, CLEAR_MODELS, params![model_type]).map_err(db_err)?;
    Ok(())
}

/// Compare-and-set of the handler's position first (a conflict writes nothing), then the
/// models and the outbox.
pub(super) fn project(
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
