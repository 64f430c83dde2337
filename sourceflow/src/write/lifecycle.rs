//! A stream's lifecycle: deleting it (a tombstone and the erasure of its history), archiving it
//! (its history moved out of the hot tables) and restoring it. Each change is one marker
//! command committed through the optimistic path at the stream's next sequence, with the
//! store's erasure or move in the same transaction: a command racing the change either commits
//! before the marker (and is erased or archived with the rest) or conflicts, reloads, and finds
//! the marker. The store places a deletion or archive after whatever commands committed since
//! the stream was read here ([`UnitOfWork::place_marker_after`]), so a stream that keeps taking
//! commands cannot starve it.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Projector, WriteSide};
use crate::base::error::{Error, Location};
use crate::base::lifecycle::{
    StreamArchived, StreamDeleted, StreamStatus, ARCHIVE_STREAM, DELETE_STREAM, RESTORE_STREAM,
};
use crate::base::message::{
    id_and_now, CommandReceipt, Envelope, Event, Message, NewEvent, Sequence, StoredCommand,
    StreamId,
};
use crate::codec::{storable, ErasedMessage};
use crate::store::{StoreError, UnitOfWork};

/// What to do to a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Delete,
    Archive,
    Restore,
}

impl Change {
    fn command_name(self) -> &'static str {
        match self {
            Change::Delete => DELETE_STREAM,
            Change::Archive => ARCHIVE_STREAM,
            Change::Restore => RESTORE_STREAM,
        }
    }
}

impl WriteSide {
    /// Where `stream` stands, and its last command sequence: what its last command says.
    pub(crate) async fn stream_status(
        &self,
        stream: &StreamId,
    ) -> Result<(Sequence, StreamStatus), Error> {
        let last = self.store.last_sequence(stream).await?;
        if last == Sequence::ZERO {
            return Ok((last, StreamStatus::Live));
        }
        let commands = self.store.load_commands(stream, last, Some(last)).await?;
        let status = commands.last().map_or(StreamStatus::Live, |c| {
            StreamStatus::after(&c.envelope.name)
        });
        Ok((last, status))
    }

    /// The error a send to a stream in `status` gets, if any.
    pub(crate) fn refusal(stream: &StreamId, status: StreamStatus) -> Option<Error> {
        match status {
            StreamStatus::Live => None,
            StreamStatus::Deleted => Some(Error::StreamDeleted {
                stream: stream.clone(),
            }),
            StreamStatus::Archived => Some(Error::StreamArchived {
                stream: stream.clone(),
            }),
        }
    }

    /// Deletes, archives or restores `stream`, then lets the views and aggregates of this
    /// process apply the marker's event. `None`: nothing to do (restoring a live stream).
    ///
    /// Deleting a deleted stream and archiving an archived one answer the original marker's
    /// receipt, marked `duplicate`.
    pub(crate) async fn change_stream<P: Projector>(
        &self,
        projector: &P,
        stream: StreamId,
        change: Change,
    ) -> Result<Option<CommandReceipt>, Error> {
        // Commands of this process to the stream wait for the change, and the other way round.
        let turn = self.stream_locks.lock(&stream).await;
        let mut attempt: u32 = 0;
        let (receipt, decoded) = loop {
            attempt += 1;
            let (last, status) = self.stream_status(&stream).await?;
            match (change, status) {
                (Change::Delete, StreamStatus::Deleted)
                | (Change::Archive, StreamStatus::Archived) => {
                    return self.marker_receipt(&stream, last).await.map(Some);
                }
                (Change::Archive | Change::Restore, StreamStatus::Deleted) => {
                    return Err(Error::StreamDeleted { stream });
                }
                (Change::Restore, StreamStatus::Live) => return Ok(None),
                (Change::Delete, _)
                | (Change::Archive, StreamStatus::Live)
                | (Change::Restore, StreamStatus::Archived) => {}
            }
            let (unit, decoded) = marker(&stream, last, change)?;
            let committed = match change {
                Change::Delete => self.store.delete_stream(unit).await,
                Change::Archive => self.store.archive_stream(unit).await,
                Change::Restore => self.store.restore_stream(unit).await,
            };
            // Whatever happened, the cached state no longer describes the stream.
            self.entities.remove(&stream);
            match committed {
                Ok(receipt) => break (receipt, decoded),
                Err(StoreError::Conflict { expected, .. }) => {
                    if attempt >= self.retry.max_attempts.max(1) {
                        return Err(Error::Concurrency {
                            stream,
                            expected,
                            attempts: attempt,
                        });
                    }
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        drop(turn);
        if let Some(last) = receipt.events.last() {
            self.signals.head.send_if_modified(|head| {
                let moved = last.position > *head;
                if moved {
                    *head = last.position;
                }
                moved
            });
        }
        projector.project(&receipt, decoded).await;
        Ok(Some(receipt))
    }

    /// The receipt of the marker at `sequence` (the stream's last command), as a duplicate.
    async fn marker_receipt(
        &self,
        stream: &StreamId,
        sequence: Sequence,
    ) -> Result<CommandReceipt, Error> {
        let commands = self
            .store
            .load_commands(stream, sequence, Some(sequence))
            .await?;
        let Some(marker) = commands.last() else {
            return Err(StoreError::Gap {
                stream: stream.clone(),
                expected: sequence,
                found: Sequence::ZERO,
            }
            .into());
        };
        let receipt = self
            .store
            .find_receipt(stream, marker.envelope.message_id)
            .await?;
        receipt.ok_or_else(|| {
            StoreError::Corrupt(format!("{stream}: no receipt for its last command")).into()
        })
    }
}

/// The marker unit of `change` after the stream's last command `last`, and its decoded events.
fn marker(
    stream: &StreamId,
    last: Sequence,
    change: Change,
) -> Result<(UnitOfWork, Vec<ErasedMessage>), Error> {
    let (message_id, timestamp) = id_and_now();
    let envelope = |name: &'static str, message_id, causation_id| Envelope {
        message_id,
        name: Cow::Borrowed(name),
        version: 1,
        stream: stream.clone(),
        correlation_id: message_id,
        causation_id,
        timestamp,
    };
    let mut events = Vec::new();
    let mut decoded: Vec<ErasedMessage> = Vec::new();
    let mut event = |e: Arc<dyn std::any::Any + Send + Sync>, name: &'static str, payload| {
        let (event_id, _) = id_and_now();
        let mut envelope = envelope(name, event_id, Some(message_id));
        envelope.correlation_id = message_id;
        events.push(NewEvent { envelope, payload });
        decoded.push(e);
    };
    match change {
        Change::Delete => {
            let e = StreamDeleted::of(stream);
            let payload = encode(stream, &e)?;
            event(Arc::new(e), StreamDeleted::NAME, payload);
        }
        Change::Archive => {
            let e = StreamArchived::of(stream);
            let payload = encode(stream, &e)?;
            event(Arc::new(e), StreamArchived::NAME, payload);
        }
        Change::Restore => {}
    }
    let unit = UnitOfWork {
        expected: last,
        command: StoredCommand {
            envelope: envelope(change.command_name(), message_id, None),
            sequence: last.next(),
            payload: b"{}".to_vec(),
        },
        entity: None,
        events,
        outbox: Vec::new(),
        keys: Vec::new(),
    };
    Ok((unit, decoded))
}

/// A marker event's payload, encoded as every stored value is.
fn encode<E: Event>(stream: &StreamId, event: &E) -> Result<Vec<u8>, Error> {
    storable::encode(event).map_err(|e| {
        e.into_error(E::NAME, || Location::Sending {
            stream: stream.clone(),
        })
    })
}
