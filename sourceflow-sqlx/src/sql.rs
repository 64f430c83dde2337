//! Shared SQL logic: number and text conversions, row mapping, gap checks. The backends read
//! columns into the plain rows below and leave the rest to this module, so both map records
//! the same way.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sourceflow::message::StoredCommand;
use sourceflow::store::{ModelWrite, StoreError};
use sourceflow::{EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

/// Why a value could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The column is a signed 64-bit integer.
    #[error("{what} {value} does not fit in a 64-bit signed column")]
    OutOfRange { what: &'static str, value: u64 },
    /// Payloads are stored as JSON text.
    #[error("{what} is not UTF-8 JSON text")]
    NotText { what: &'static str },
}

/// A `u64` as the `BIGINT`/`INTEGER` column value.
pub(crate) fn db_int(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(Box::new(WriteError::OutOfRange { what, value })))
}

/// A `LIMIT` value: anything beyond `i64::MAX` means "no limit" anyway.
pub(crate) fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A stored non-negative integer back as `u64`.
pub(crate) fn from_db(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// A JSON payload as the text bound to a TEXT/JSONB parameter.
pub(crate) fn payload_text<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, StoreError> {
    std::str::from_utf8(bytes)
        .map_err(|_| StoreError::Backend(Box::new(WriteError::NotText { what })))
}

/// Maps a column decoding error to [`StoreError::Corrupt`].
pub(crate) fn corrupt(err: sqlx::Error) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

/// A command row as read from `sf_commands`, with ids and timestamps already decoded.
pub(crate) struct CommandRow {
    pub stream_type: String,
    pub stream_id: String,
    pub sequence: i64,
    pub message_id: Uuid,
    pub name: String,
    pub version: i64,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub payload: String,
}

impl CommandRow {
    pub(crate) fn into_command(self) -> Result<StoredCommand, StoreError> {
        let sequence = Sequence(from_db(self.sequence, "sequence")?);
        Ok(StoredCommand {
            envelope: envelope(EnvelopeParts {
                stream_type: self.stream_type,
                stream_id: self.stream_id,
                message_id: self.message_id,
                name: self.name,
                version: self.version,
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                created_at: self.created_at,
            })?,
            sequence,
            payload: self.payload.into_bytes(),
        })
    }
}

/// An event row as read from `sf_events`.
pub(crate) struct EventRow {
    pub position: i64,
    pub stream_type: String,
    pub stream_id: String,
    pub sequence: i64,
    pub command_sequence: i64,
    pub message_id: Uuid,
    pub name: String,
    pub version: i64,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub payload: String,
}

impl EventRow {
    pub(crate) fn into_event(self) -> Result<RecordedEvent, StoreError> {
        Ok(RecordedEvent {
            sequence: Sequence(from_db(self.sequence, "sequence")?),
            command_sequence: Sequence(from_db(self.command_sequence, "command sequence")?),
            position: Position(from_db(self.position, "position")?),
            envelope: envelope(EnvelopeParts {
                stream_type: self.stream_type,
                stream_id: self.stream_id,
                message_id: self.message_id,
                name: self.name,
                version: self.version,
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                created_at: self.created_at,
            })?,
            payload: self.payload.into_bytes(),
        })
    }
}

/// The metadata columns shared by commands, events and outbox rows.
pub(crate) struct EnvelopeParts {
    pub stream_type: String,
    pub stream_id: String,
    pub message_id: Uuid,
    pub name: String,
    pub version: i64,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

pub(crate) fn envelope(parts: EnvelopeParts) -> Result<Envelope, StoreError> {
    let version = u32::try_from(parts.version).map_err(|_| {
        StoreError::Corrupt(format!("message version out of range: {}", parts.version))
    })?;
    Ok(Envelope {
        message_id: parts.message_id,
        name: Cow::Owned(parts.name),
        version,
        stream: StreamId::new(parts.stream_type, EntityId::from(parts.stream_id)),
        correlation_id: parts.correlation_id,
        causation_id: parts.causation_id,
        timestamp: parts.created_at,
    })
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

/// The model writes of one projection commit with only the last write to each model kept: the
/// outcome of applying them in order, as set-based statements can apply them.
pub(crate) fn last_writes(models: &[ModelWrite]) -> Vec<&ModelWrite> {
    let mut kept: Vec<&ModelWrite> = Vec::with_capacity(models.len());
    for write in models.iter().rev() {
        if !kept
            .iter()
            .any(|k| k.model_type == write.model_type && k.id == write.id)
        {
            kept.push(write);
        }
    }
    kept.reverse();
    kept
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

    #[test]
    fn last_write_wins() {
        let write = |id: &str, state: Option<&str>| ModelWrite {
            model_type: "m".into(),
            id: EntityId::from(id),
            state: state.map(|s| s.as_bytes().to_vec()),
        };
        let writes = [
            write("a", Some("1")),
            write("b", Some("2")),
            write("a", None),
        ];
        let kept = last_writes(&writes);
        assert_eq!(kept, vec![&writes[1], &writes[2]]);
    }
}
