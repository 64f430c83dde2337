//! Row mapping, written once for both backends: result rows to commands, events, outbox
//! entries, entity and model states, receipts, and the density check of a stream read. Each
//! backend decodes its own column types through [`Columns`] (Postgres has native UUIDs and
//! timestamps, SQLite stores them as text) and leaves the rest to this module.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sourceflow::lifecycle::{StreamArchived, ARCHIVE_STREAM};
use sourceflow::message::{Message, StoredCommand};
use sourceflow::store::{OutboxMessage, PendingCommand, StoreError};
use sourceflow::{CommandReceipt, EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

use super::values::from_db;

/// The command columns in the order [`command_row`] reads them, the payload as `$payload` (a
/// cast to text in reads, the plain column in an insert's column list).
macro_rules! command_columns {
    ($payload:literal) => {
        concat!(
            "stream_type, stream_id, sequence, message_id, name, version, correlation_id, \
             causation_id, created_at, ",
            $payload
        )
    };
}
pub(crate) use command_columns;

/// The event columns in the order [`event_row`] reads them, each prefixed with `$p` (a table
/// alias such as `"e."`, or `""`), the payload as `$payload`.
macro_rules! event_columns {
    ($p:literal, $payload:literal) => {
        concat!(
            $p,
            "position, ",
            $p,
            "stream_type, ",
            $p,
            "stream_id, ",
            $p,
            "sequence, ",
            $p,
            "command_sequence, ",
            $p,
            "message_id, ",
            $p,
            "name, ",
            $p,
            "version, ",
            $p,
            "correlation_id, ",
            $p,
            "causation_id, ",
            $p,
            "created_at, ",
            $payload
        )
    };
}
pub(crate) use event_columns;

/// A result row, as each backend decodes its column types: Postgres has native UUIDs and
/// timestamps, SQLite stores them as text.
pub(crate) trait Columns {
    /// A non-null text column.
    fn text(&self, index: usize) -> Result<String, StoreError>;
    /// A non-null integer column.
    fn int(&self, index: usize) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn optional_int(&self, index: usize) -> Result<Option<i64>, StoreError>;
    /// A non-null UUID column.
    fn uuid(&self, index: usize) -> Result<Uuid, StoreError>;
    /// A nullable UUID column.
    fn optional_uuid(&self, index: usize) -> Result<Option<Uuid>, StoreError>;
    /// A non-null timestamp column.
    fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError>;
    /// A non-null payload column's bytes.
    fn bytes(&self, index: usize) -> Result<Vec<u8>, StoreError> {
        self.text(index).map(String::into_bytes)
    }
    /// A non-null message name column: borrowed when a type linked into this binary registers
    /// the name (nearly every row of a long read), copied otherwise.
    fn name(&self, index: usize) -> Result<Cow<'static, str>, StoreError> {
        let text = self.text(index)?;
        Ok(sourceflow::registry::static_name(&text).map_or(Cow::Owned(text), Cow::Borrowed))
    }
}

/// `text` as a registered wire name, or a copy of it.
pub(crate) fn message_name(text: &str) -> Cow<'static, str> {
    sourceflow::registry::static_name(text)
        .map_or_else(|| Cow::Owned(text.to_owned()), Cow::Borrowed)
}

/// Reads the envelope columns: `stream_type, stream_id` at `stream`, and `message_id, name,
/// version, correlation_id, causation_id, created_at` from `meta` on.
fn envelope_at(row: &impl Columns, stream: usize, meta: usize) -> Result<Envelope, StoreError> {
    let stream_type = row.text(stream)?;
    let stream_id = row.text(stream + 1)?;
    envelope_of(
        row,
        StreamId::new(stream_type, EntityId::from(stream_id)),
        meta,
    )
}

/// Reads the envelope columns `message_id, name, version, correlation_id, causation_id,
/// created_at` from `meta` on, of a row of `stream` (a query of one stream does not need its
/// rows' stream columns read and copied).
fn envelope_of(row: &impl Columns, stream: StreamId, meta: usize) -> Result<Envelope, StoreError> {
    let message_id = row.uuid(meta)?;
    let name = row.name(meta + 1)?;
    let version = row.int(meta + 2)?;
    let correlation_id = row.uuid(meta + 3)?;
    let causation_id = row.optional_uuid(meta + 4)?;
    let timestamp = row.time(meta + 5)?;
    let version = u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("message version out of range: {version}")))?;
    Ok(Envelope {
        message_id,
        name,
        version,
        stream,
        correlation_id,
        causation_id,
        timestamp,
    })
}

/// Reads a command row: `stream_type, stream_id, sequence, message_id, name, version,
/// correlation_id, causation_id, created_at, payload`.
pub(crate) fn command_row(row: &impl Columns) -> Result<StoredCommand, StoreError> {
    let envelope = envelope_at(row, 0, 3)?;
    command_with(row, envelope)
}

/// Reads a command row of a query of one stream, `stream`.
pub(crate) fn command_row_in(
    row: &impl Columns,
    stream: &StreamId,
) -> Result<StoredCommand, StoreError> {
    let envelope = envelope_of(row, stream.clone(), 3)?;
    command_with(row, envelope)
}

fn command_with(row: &impl Columns, envelope: Envelope) -> Result<StoredCommand, StoreError> {
    let sequence = row.int(2)?;
    let payload = row.bytes(9)?;
    Ok(StoredCommand {
        envelope,
        sequence: Sequence(from_db(sequence, "sequence")?),
        payload,
    })
}

/// Reads the columns of [`event_columns!`] starting at column `at`.
pub(crate) fn event_row(row: &impl Columns, at: usize) -> Result<RecordedEvent, StoreError> {
    let envelope = envelope_at(row, at + 1, at + 5)?;
    event_with(row, at, envelope)
}

/// Reads the columns of [`event_columns!`] from the first, of a query of one stream, `stream`.
pub(crate) fn event_row_in(
    row: &impl Columns,
    stream: &StreamId,
) -> Result<RecordedEvent, StoreError> {
    let envelope = envelope_of(row, stream.clone(), 5)?;
    event_with(row, 0, envelope)
}

fn event_with(
    row: &impl Columns,
    at: usize,
    envelope: Envelope,
) -> Result<RecordedEvent, StoreError> {
    let position = row.int(at)?;
    let sequence = row.int(at + 3)?;
    let command_sequence = row.int(at + 4)?;
    let payload = row.bytes(at + 11)?;
    Ok(RecordedEvent {
        sequence: Sequence(from_db(sequence, "sequence")?),
        command_sequence: Sequence(from_db(command_sequence, "command sequence")?),
        position: Position(from_db(position, "position")?),
        envelope,
        payload,
    })
}

/// Reads an outbox row: `id, stream_type, stream_id, message_id, name, version,
/// correlation_id, causation_id, created_at, payload`.
pub(crate) fn outbox_row(row: &impl Columns) -> Result<PendingCommand, StoreError> {
    let envelope = envelope_at(row, 1, 3)?;
    Ok(PendingCommand {
        id: from_db(row.int(0)?, "outbox id")?,
        message: OutboxMessage {
            envelope,
            payload: row.text(9)?.into_bytes(),
        },
    })
}

/// Reads an entity row: `version, state`.
pub(crate) fn entity_row(row: &impl Columns) -> Result<(Sequence, Vec<u8>), StoreError> {
    Ok((
        Sequence(from_db(row.int(0)?, "entity version")?),
        row.text(1)?.into_bytes(),
    ))
}

/// Reads a view model row: `model_id, state`.
pub(crate) fn model_row(row: &impl Columns) -> Result<(EntityId, Vec<u8>), StoreError> {
    Ok((EntityId::from(row.text(0)?), row.text(1)?.into_bytes()))
}

/// Assembles the receipt of a duplicate command from the rows of a `FIND_RECEIPT` query:
/// the command's sequence, then [`event_columns!`] (null when the command emitted no events).
/// `None` when there is no row: the command was never accepted.
pub(crate) fn receipt<R: Columns>(
    rows: &[R],
    stream: &StreamId,
    message_id: Uuid,
) -> Result<Option<CommandReceipt>, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let sequence = Sequence(from_db(first.int(0)?, "sequence")?);
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        if row.optional_int(1)?.is_some() {
            events.push(event_row(row, 1)?);
        }
    }
    Ok(Some(CommandReceipt {
        message_id,
        stream: stream.clone(),
        sequence,
        events,
        duplicate: true,
        retries: 0,
    }))
}

/// The stream id that the rows of one read of `stream` name: equal to it, but with a reference
/// count of its own. The caller (a replay) clones and drops its own id on another core while
/// the next page is read, and one count written from both cores would move between their
/// caches on every row.
pub(crate) fn page_stream(stream: &StreamId) -> StreamId {
    StreamId {
        entity_type: stream.entity_type.clone(),
        id: EntityId::from(stream.id.as_str()),
    }
}

/// The events of a stream read from `from`, checked to be dense.
///
/// # Errors
/// As [`event_row`], and [`StoreError::Gap`] as [`check_dense`].
pub(crate) fn stream_events<R: Columns>(
    rows: &[R],
    stream: &StreamId,
    from: Sequence,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let page = &page_stream(stream);
    let events = rows
        .iter()
        .map(|row| event_row_in(row, page))
        .collect::<Result<Vec<_>, _>>()?;
    checked_events(events, stream, from)
}

/// A stream's events read from `from` on, checked dense: the events of a hot stream, or of an
/// archived one from its archive marker on.
pub(crate) fn checked_events(
    events: Vec<RecordedEvent>,
    stream: &StreamId,
    from: Sequence,
) -> Result<Vec<RecordedEvent>, StoreError> {
    // An archived stream's hot events start at its archive marker: the rest is archived.
    let from = match events.first() {
        Some(first) if first.envelope.name == StreamArchived::NAME => first.sequence.max(from),
        _ => from,
    };
    check_dense(stream, from, events.iter().map(|e| e.sequence))?;
    Ok(events)
}

/// The commands of a stream read from `from`, checked to be dense.
///
/// # Errors
/// As [`command_row`], and [`StoreError::Gap`] as [`check_dense`].
pub(crate) fn stream_commands<R: Columns>(
    rows: &[R],
    stream: &StreamId,
    from: Sequence,
) -> Result<Vec<StoredCommand>, StoreError> {
    let page = &page_stream(stream);
    let commands = rows
        .iter()
        .map(|row| command_row_in(row, page))
        .collect::<Result<Vec<_>, _>>()?;
    checked_commands(commands, stream, from)
}

/// A stream's commands read from `from` on, checked dense: the commands of a hot stream, or
/// of an archived one from its archive marker on.
pub(crate) fn checked_commands(
    commands: Vec<StoredCommand>,
    stream: &StreamId,
    from: Sequence,
) -> Result<Vec<StoredCommand>, StoreError> {
    // An archived stream's hot commands start at its archive marker: the rest is archived.
    let from = match commands.first() {
        Some(first) if first.envelope.name == ARCHIVE_STREAM => first.sequence.max(from),
        _ => from,
    };
    check_dense(stream, from, commands.iter().map(|c| c.sequence))?;
    Ok(commands)
}

/// The events of a global-log page, in position order.
pub(crate) fn log_events<R: Columns>(rows: &[R]) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.iter().map(|row| event_row(row, 0)).collect()
}

/// Checks that `sequences` (read in order from `from`) are dense.
///
/// # Errors
/// [`StoreError::Gap`] naming the first missing sequence.
pub(crate) fn check_dense(
    stream: &StreamId,
    from: Sequence,
    sequences: impl IntoIterator<Item = Sequence>,
) -> Result<(), StoreError> {
    let mut expected = Sequence(from.0.max(1));
    for found in sequences {
        if found != expected {
            return Err(StoreError::Gap {
                stream: stream.clone(),
                expected,
                found,
            });
        }
        expected = expected.next();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_named() {
        let stream = StreamId::new("t", "a");
        assert!(check_dense(&stream, Sequence(0), [Sequence(1), Sequence(2)]).is_ok());
        assert!(check_dense(&stream, Sequence(3), [Sequence(3), Sequence(4)]).is_ok());
        match check_dense(&stream, Sequence(1), [Sequence(1), Sequence(3)]) {
            Err(StoreError::Gap {
                expected, found, ..
            }) => assert_eq!((expected, found), (Sequence(2), Sequence(3))),
            other => panic!("expected a gap, got {other:?}"),
        }
    }
}
