//! The storage contract every backend implements, and the in-memory backend.
//!
//! One contract, several backends: [`MemoryStore`] here, `SqliteStore` and `PostgresStore` in
//! `sourceflow-sqlx`. The conformance suite (`sourceflow-testkit`) runs the same scenarios
//! against each of them.
//!
//! The rules every backend keeps:
//! - Sequences are dense and start at 1 per stream (commands and events each have their own).
//!   A write at an existing sequence is [`StoreError::Conflict`], never an overwrite; a gap found
//!   on read is [`StoreError::Gap`].
//! - Streams are keyed by (entity type name, entity id).
//! - Global positions increase strictly in commit order: a reader that has seen position `p`
//!   will never later find a newly committed event below `p`.
//! - A command message id is accepted once per stream; a repeat is answered with the original
//!   receipt, marked `duplicate`.
//! - [`Store::commit`] and [`Store::commit_projection`] are atomic: all of it or none of it.
//! - Deleting a stream ([`Store::delete_stream`]) erases its records in place and never removes
//!   a row of the global log: positions are never handed out twice and stay dense for readers.
//!   An erased record keeps its sequence, position and message id (a resent message id is
//!   still a duplicate), with the name [`ERASED`](crate::lifecycle::ERASED) and a `null`
//!   payload. Archiving ([`Store::archive_stream`]) moves a stream's records to the archive in
//!   the transaction that appends the archive marker, so the newest position stays occupied;
//!   [`Store::restore_stream`] moves them back at their own positions.
//!
//! # Data fidelity
//! A value either reads back identical on every backend, or the runtime refuses it before
//! anything is stored:
//! - payloads and states are stored as the exact JSON text the runtime wrote and read back byte
//!   for byte (strings with U+0000, `-0.0`, `f64::MAX`, subnormals, integers at the `i64`/`u64`
//!   limits); serde_json's `float_roundtrip` makes every finite `f64` decode to its own bits;
//! - what JSON cannot carry is refused by `send` (and by a handler's `publish`, a follow-up,
//!   an entity state) with [`Error::Invalid`](crate::Error::Invalid) naming the field: a float
//!   that is not finite (JSON would write `null`), and nesting deeper than 127 arrays and objects
//!   (JSON decoders stop at 128);
//! - timestamps are kept in whole microseconds, truncated towards the past, everywhere;
//! - every `u64` read bound and `usize` limit is valid input: past the end reads nothing.
//!
//! A backend may refuse what its database cannot hold when it is written (bytes that are not
//! UTF-8, a NUL in an id), with a store error, never accepting it and failing on read.

pub mod group;
mod inspect;
pub mod keys;
pub mod lease;
mod memory;
pub mod schedule;
mod sealed;
pub mod turns;
mod unit;

pub use group::{GroupCommit, GroupOutcome, GroupProjection, UnitGroup};
pub use inspect::{Activity, Correlated, StoreInspect};

pub use keys::KeyStore;
pub use lease::{LeaseRecord, Leases};
pub use memory::MemoryStore;
pub use schedule::ScheduleStore;
pub use sealed::SealedStore;
pub use unit::{
    EntityWithModels, InlineProjection, ModelWrite, NewKey, OutboxMessage, Page, PendingCommand,
    ProjectionCommit, UnitOfWork,
};

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::base::error::{BoxError, StoreError};
use crate::base::message::{
    CommandReceipt, EntityId, NewEvent, Position, RecordedEvent, Sequence, StoredCommand, StreamId,
};

/// The storage contract the runtime calls: a complete backend for sending, replaying,
/// projecting and catching up.
///
/// This is all a third-party backend must implement. Tooling (listings, direct appends,
/// model and position edits) lives in [`StoreAdmin`], which a backend may implement as well
/// and hand out through [`Store::admin`].
///
/// The methods fall in two groups: the write side (`commit`, entity states, the command log,
/// the outbox) and the read side (the global log, view models, handler positions).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    // ---- the write side -------------------------------------------------------------------

    /// Commits one handled command atomically: command at `expected + 1`, entity state at that
    /// version, events after the stream's last event, outbox entries.
    ///
    /// A message id already accepted in this stream commits nothing and returns the original
    /// receipt with `duplicate = true`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stream's last sequence is not `expected`; nothing written.
    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError>;

    /// Commits `unit` as [`commit`](Self::commit) does, and in the same transaction each of
    /// `projections` whose assumptions hold (see [`InlineProjection`]). Returns the receipt and,
    /// per projection, whether it was written. A duplicate writes none of them.
    ///
    /// The provided implementation writes none (every flag `false`): correct for any backend,
    /// since the runtime then projects the events after the commit.
    ///
    /// # Errors
    /// As [`commit`](Self::commit); a projection that does not apply is not an error.
    async fn commit_inline(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        let receipt = self.commit(unit).await?;
        Ok((receipt, vec![false; projections.len()]))
    }

    /// Commands of `stream` with `from <= sequence <= to` (`to = None`: to the end), in order.
    ///
    /// # Errors
    /// [`StoreError::Gap`] if a sequence in the range is missing before the last stored one.
    async fn load_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError>;

    /// The last command sequence of `stream` (`Sequence::ZERO` if empty), without loading it.
    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError>;

    /// The receipt of the command with `message_id` in `stream`, if one was accepted: its
    /// sequence and the events recorded under it (its own, and any appended to the stream
    /// after it by [`StoreAdmin::append_events`], which records them under the stream's last
    /// command).
    async fn find_receipt(
        &self,
        stream: &StreamId,
        message_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError>;

    /// The stored state of `stream`'s entity and the sequence it reflects.
    async fn get_entity(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError>;

    /// Saves the state at `version` if the stored version is `expected` (`ZERO`: none stored)
    /// and the stream has no command after `version`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stored version differs from `expected`, or if the stream
    /// has a command after `version`: the state would be stale (a command committed meanwhile,
    /// or a deleted stream's tombstone, whose state must not come back).
    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// The stored state of `stream`'s entity together with the view models `models` (model
    /// type, id), each `None` if absent: what the first command on a stream that this process
    /// has not cached needs, read at once. Network backends answer in one round trip; the
    /// provided implementation reads them one by one.
    ///
    /// # Errors
    /// As [`get_entity`](Self::get_entity) and [`get_model`](Self::get_model).
    async fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> Result<EntityWithModels, StoreError> {
        let entity = self.get_entity(stream).await?;
        let mut found = Vec::with_capacity(models.len());
        for (model_type, id) in models {
            found.push(self.get_model(model_type, id).await?);
        }
        Ok((entity, found))
    }

    /// Up to `limit` outbox entries, oldest first.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError>;

    /// Removes sent outbox entries.
    async fn outbox_remove(&self, ids: &[u64]) -> Result<(), StoreError>;

    // ---- the read side --------------------------------------------------------------------

    /// Events of `stream` with `from <= sequence <= to`, in order: a long stream read in pages.
    ///
    /// # Errors
    /// [`StoreError::Gap`] if a sequence in the range is missing before the last stored one.
    async fn read_stream_range(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events with position greater than `after`, in position order.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The highest position a reader can see now (`Position::START` if the log is empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// One model's JSON state.
    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// A page of models of one type, ordered by id.
    async fn list_models(
        &self,
        model_type: &str,
        page: Page,
    ) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError>;

    /// The last position `handler` applied (`Position::START` if none).
    async fn get_position(&self, handler: &str) -> Result<Position, StoreError>;

    /// Sets `handler`'s position unconditionally (a transport's checkpoint, an operator's
    /// skip).
    async fn set_position(&self, handler: &str, position: Position) -> Result<(), StoreError>;

    /// Commits a projection batch atomically: model writes, outbox entries and the handler's
    /// new position.
    ///
    /// # Errors
    /// [`StoreError::PositionConflict`] if the handler's stored position is not
    /// `commit.expected`; nothing written.
    async fn commit_projection(&self, commit: ProjectionCommit) -> Result<(), StoreError>;

    /// Clears `handler`'s position and every model of `model_types`, atomically.
    async fn reset_projection(&self, handler: &str, model_types: &[&str])
        -> Result<(), StoreError>;

    /// Opens, in place, the sealed [`Personal`](crate::personal::Personal) fields of events
    /// received from elsewhere (a transport that carries the log as stored). The store of a
    /// flow ([`SourceFlow::store`](crate::SourceFlow::store)) opens them with the subject
    /// keys, redacting forgotten subjects; by default they stay sealed, which decodes as
    /// redacted.
    async fn open_received(&self, _events: &mut [RecordedEvent]) -> Result<(), StoreError> {
        Ok(())
    }

    // ---- a stream's lifecycle ------------------------------------------------------------

    /// Deletes a stream: commits `tombstone` as [`commit`](Self::commit) does (its command at
    /// `expected + 1`, its events after the stream's last, a resent message id answered with
    /// the original receipt) and, in the same transaction, erases every earlier command and
    /// event of the stream in place (name [`ERASED`](crate::lifecycle::ERASED), payload
    /// `null`; sequences, positions, message ids, correlation and causation ids, timestamps
    /// kept), deletes its entity state and drops its archived rows. No row is removed from the
    /// global log, so positions are never handed out again and readers never stall on a hole.
    ///
    /// The provided implementation refuses: [`StoreError::Unsupported`].
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stream's last sequence is not `expected`; nothing written.
    async fn delete_stream(&self, _tombstone: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        Err(StoreError::Unsupported("delete_stream"))
    }

    /// Archives a stream: commits `marker` as [`commit`](Self::commit) does and, in the same
    /// transaction, moves every earlier command and event of the stream out of the hot tables
    /// into the archive (read back with [`load_archived_commands`](Self::load_archived_commands)
    /// and [`read_archived_events`](Self::read_archived_events)) and deletes its entity state.
    /// The marker's own command and events stay in the hot tables: the stream's next sequence
    /// stays taken, and the newest global position stays occupied.
    ///
    /// The provided implementation refuses: [`StoreError::Unsupported`].
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stream's last sequence is not `expected`; nothing written.
    async fn archive_stream(&self, _marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        Err(StoreError::Unsupported("archive_stream"))
    }

    /// Restores an archived stream: commits `marker` as [`commit`](Self::commit) does and, in
    /// the same transaction, moves the stream's archived commands and events back into the hot
    /// tables, at their own sequences and global positions.
    ///
    /// The provided implementation refuses: [`StoreError::Unsupported`].
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stream's last sequence is not `expected`; nothing written.
    async fn restore_stream(&self, _marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        Err(StoreError::Unsupported("restore_stream"))
    }

    /// Archived commands of `stream` with `from <= sequence <= to` (`to = None`: to the end),
    /// in order; empty if the stream is not archived.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] by default.
    async fn load_archived_commands(
        &self,
        _stream: &StreamId,
        _from: Sequence,
        _to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        Err(StoreError::Unsupported("load_archived_commands"))
    }

    /// Archived events of `stream` with `from <= sequence <= to`, in order, with their own
    /// global positions; empty if the stream is not archived.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] by default.
    async fn read_archived_events(
        &self,
        _stream: &StreamId,
        _from: Sequence,
        _to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(StoreError::Unsupported("read_archived_events"))
    }

    // ---- tooling --------------------------------------------------------------------------

    /// This store's tooling interface, if it offers one (`None` by default). Backends that
    /// implement [`StoreAdmin`] return `Some(self)`; calls of [`StoreAdmin`] methods on a
    /// `dyn Store` are forwarded to it.
    fn admin(&self) -> Option<&dyn StoreAdmin> {
        None
    }

    /// This store's scheduled commands ([`ScheduleStore`]), if it keeps them (`None` by
    /// default: such a store cannot schedule commands, everything else works).
    fn schedules(&self) -> Option<&dyn ScheduleStore> {
        None
    }

    /// This store's subject keys ([`KeyStore`]), if it keeps them (`None` by default: such a
    /// store cannot hold personal fields unless the builder is given a key store).
    fn keys(&self) -> Option<&dyn KeyStore> {
        None
    }

    /// This store's group commit with views ([`GroupCommit`]), if it commits a group of units
    /// as one transaction (`None` by default: concurrent commands commit one by one).
    fn groups(&self) -> Option<&dyn GroupCommit> {
        None
    }

    /// This store's leases ([`Leases`]), if it keeps them (`None` by default: such a store's
    /// [`follow`](crate::SourceFlow::follow) applies the log in every process that follows it).
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
}

/// Tooling over a store: listings, direct appends, and model and position edits, for
/// operators, exports, inspectors and tests. The runtime never calls these.
///
/// Every method has a provided implementation: built from [`Store`]'s methods where that is
/// possible, otherwise [`StoreError::Unsupported`]. The backends of this workspace implement
/// all of them natively.
#[async_trait]
pub trait StoreAdmin: Store {
    /// Appends one command at `expected + 1` with no entity or event writes.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stream's last sequence is not `expected`.
    async fn append_command(
        &self,
        expected: Sequence,
        command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        let unit = UnitOfWork {
            expected,
            command,
            entity: None,
            events: Vec::new(),
            outbox: Vec::new(),
            keys: Vec::new(),
        };
        Ok(self.commit(unit).await?.sequence)
    }

    /// Appends events to `stream` after its last event sequence `expected`, with no command.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the stream's last event sequence is not `expected`.
    async fn append_events(
        &self,
        _stream: &StreamId,
        _expected: Sequence,
        _events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(StoreError::Unsupported("append_events"))
    }

    /// Events of `stream` from sequence `from` (inclusive), in order.
    ///
    /// # Errors
    /// [`StoreError::Gap`] if a sequence is missing before the last stored one.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_range(stream, from, Sequence(i64::MAX as u64))
            .await
    }

    /// Up to `limit` events with `from <= timestamp < to` and position greater than `after`,
    /// in position order.
    async fn read_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut found = Vec::new();
        let mut cursor = after;
        while found.len() < limit {
            let page = self.read_all(cursor, 1_000).await?;
            let Some(last) = page.last() else { break };
            cursor = last.position;
            found.extend(
                page.into_iter()
                    .filter(|e| e.envelope.timestamp >= from && e.envelope.timestamp < to),
            );
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Drops the stored state; the next load replays the stream.
    async fn delete_entity(&self, _stream: &StreamId) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("delete_entity"))
    }

    /// Writes one model.
    async fn put_model(
        &self,
        _model_type: &str,
        _id: &EntityId,
        _state: Vec<u8>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("put_model"))
    }

    /// Deletes one model (no error if absent).
    async fn delete_model(&self, _model_type: &str, _id: &EntityId) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("delete_model"))
    }

    /// Deletes every model of one type.
    async fn clear_models(&self, _model_type: &str) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("clear_models"))
    }

    /// Entity types (stream type names) that have at least one command, sorted.
    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Unsupported("entity_types"))
    }

    /// A page of stream ids of one entity type, ordered by id. Deleted streams (whose last
    /// command is a tombstone, see [`Store::delete_stream`]) are left out.
    async fn stream_ids(
        &self,
        _entity_type: &str,
        _page: Page,
    ) -> Result<Vec<EntityId>, StoreError> {
        Err(StoreError::Unsupported("stream_ids"))
    }

    /// This store's read-only queries for inspectors, if it offers them (`None` by default).
    fn inspect(&self) -> Option<&dyn StoreInspect> {
        None
    }
}

/// Tooling calls on a `dyn Store` reach the backend's own [`StoreAdmin`] when it has one
/// ([`Store::admin`]), and are [`StoreError::Unsupported`] otherwise.
#[async_trait]
impl<'s> StoreAdmin for dyn Store + 's {
    async fn append_command(
        &self,
        expected: Sequence,
        command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        tooling(self, "append_command")?
            .append_command(expected, command)
            .await
    }

    async fn append_events(
        &self,
        stream: &StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        tooling(self, "append_events")?
            .append_events(stream, expected, events)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        tooling(self, "read_stream")?
            .read_stream(stream, from)
            .await
    }

    async fn read_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        tooling(self, "read_between")?
            .read_between(from, to, after, limit)
            .await
    }

    async fn delete_entity(&self, stream: &StreamId) -> Result<(), StoreError> {
        tooling(self, "delete_entity")?.delete_entity(stream).await
    }

    async fn put_model(
        &self,
        model_type: &str,
        id: &EntityId,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        tooling(self, "put_model")?
            .put_model(model_type, id, state)
            .await
    }

    async fn delete_model(&self, model_type: &str, id: &EntityId) -> Result<(), StoreError> {
        tooling(self, "delete_model")?
            .delete_model(model_type, id)
            .await
    }

    async fn clear_models(&self, model_type: &str) -> Result<(), StoreError> {
        tooling(self, "clear_models")?
            .clear_models(model_type)
            .await
    }

    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        tooling(self, "entity_types")?.entity_types().await
    }

    async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, StoreError> {
        tooling(self, "stream_ids")?
            .stream_ids(entity_type, page)
            .await
    }

    fn inspect(&self) -> Option<&dyn StoreInspect> {
        self.admin().and_then(StoreAdmin::inspect)
    }
}

fn tooling<'a>(
    store: &'a (dyn Store + '_),
    operation: &'static str,
) -> Result<&'a dyn StoreAdmin, StoreError> {
    store.admin().ok_or(StoreError::Unsupported(operation))
}
