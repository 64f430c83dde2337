//! What the runtime hands a store to commit, and what listings page through: a handled
//! command's unit of work, a projection batch, a view's inline projection, outbox entries.

use std::borrow::Cow;

use crate::base::lifecycle::StreamStatus;
use crate::base::message::{EntityId, Envelope, NewEvent, Position, Sequence, StoredCommand};
use crate::codec::personal::SubjectKey;

/// A command waiting in the outbox to be sent after the unit of work that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    /// The follow-up command's metadata (its stream is the target entity).
    pub envelope: Envelope,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// An outbox entry as stored, with the id used to remove it once sent.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingCommand {
    /// Store-assigned id of the outbox row.
    pub id: u64,
    /// The command to send.
    pub message: OutboxMessage,
}

/// Everything one handled command changes, committed atomically by [`Store::commit`](super::Store::commit).
#[derive(Clone, Debug)]
pub struct UnitOfWork {
    /// The last command sequence the handler saw; the command is appended at `expected + 1`.
    pub expected: Sequence,
    /// The command (its `sequence` field is ignored: the store assigns `expected + 1`).
    pub command: StoredCommand,
    /// The entity state after the handler, saved with version `expected + 1`; `None` for
    /// entity-less sagas.
    pub entity: Option<Vec<u8>>,
    /// The events the handler emitted, appended to the same stream.
    pub events: Vec<NewEvent>,
    /// Follow-up commands, sent after the commit.
    pub outbox: Vec<OutboxMessage>,
    /// Subject keys made for this unit's personal fields, their first use (empty almost
    /// always): a store whose key table [`commits keys with units`](crate::personal::KeyStore::in_units)
    /// inserts them in the unit's transaction, and refuses the unit with
    /// [`StoreError::Conflict`](super::StoreError::Conflict), writing nothing, when a subject
    /// has another key already (a concurrent first use won; the retry seals with its key). A
    /// forgotten subject's entry is skipped: what it sealed reads as redacted.
    pub keys: Vec<NewKey>,
}

/// A subject key made for a unit of work ([`UnitOfWork::keys`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// The subject whose personal fields the key seals.
    pub subject: String,
    /// The key.
    pub key: SubjectKey,
}

impl UnitOfWork {
    /// For a store committing a stream lifecycle marker (`delete_stream`, `archive_stream`; never a restore, which follows its archive marker):
    /// moves the marker to the stream's next sequence when the commands that committed since
    /// the flow read the stream leave it live, so a stream busy with sends cannot starve its
    /// deletion. `last` is the stream's last command sequence and `last_command` that
    /// command's name, read in the store's write transaction. Returns whether the marker now
    /// follows `last`; when the last command is itself a marker (another deletion or archive
    /// won the race) nothing moves and the commit conflicts as usual.
    pub fn place_marker_after(&mut self, last: Sequence, last_command: &str) -> bool {
        if last == self.expected {
            return true;
        }
        if StreamStatus::after(last_command) != StreamStatus::Live {
            return false;
        }
        self.expected = last;
        self.command.sequence = last.next();
        true
    }
}

/// A view model write inside a [`ProjectionCommit`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWrite {
    /// [`ViewModel::NAME`](crate::ViewModel::NAME) of the model.
    pub model_type: Cow<'static, str>,
    /// The model's key.
    pub id: EntityId,
    /// The new JSON state; `None` deletes the model.
    pub state: Option<Vec<u8>>,
}

/// The result of applying a batch of events to one view or aggregate, committed atomically
/// with the handler's new position by [`Store::commit_projection`](super::Store::commit_projection).
#[derive(Clone, Debug)]
pub struct ProjectionCommit {
    /// The handler's name (the view's or aggregate's type name).
    pub handler: Cow<'static, str>,
    /// The position the batch started from; a different stored position is a
    /// [`StoreError::PositionConflict`](super::StoreError::PositionConflict) and nothing is written.
    pub expected: Position,
    /// The position of the last event of the batch.
    pub position: Position,
    /// View models written or deleted.
    pub models: Vec<ModelWrite>,
    /// Follow-up commands sent by reactions.
    pub outbox: Vec<OutboxMessage>,
}

/// A view's projection of a unit of work's own events, computed before the commit and written
/// in the same transaction ([`Store::commit_inline`](super::Store::commit_inline)), so that a command and its view updates
/// become durable together, at the cost of one transaction.
///
/// It was computed assuming the unit's events land directly after `after` in the global log
/// and at `first_sequence` in their stream, on models as of the handler's stored position
/// `expected`. The store applies it only if all three hold at commit time; otherwise it writes
/// nothing of it (the unit itself still commits) and the runtime projects those events the
/// ordinary way.
#[derive(Clone, Debug)]
pub struct InlineProjection {
    /// The view's name (its handler name in the positions table).
    pub handler: Cow<'static, str>,
    /// The view's stored position the projection started from (compare-and-set).
    pub expected: Position,
    /// The last global position the view has passed (`>= expected`: the events in between
    /// did not concern it). The unit's first event must be at `after + 1`.
    pub after: Position,
    /// The stream sequence the unit's first event must get.
    pub first_sequence: Sequence,
    /// The model writes of applying the unit's events. On success the view's position becomes
    /// the unit's last event's.
    pub models: Vec<ModelWrite>,
}

/// An entity's stored state (version and JSON), if any, and view models' JSON states in the
/// order asked for ([`Store::get_entity_with_models`](super::Store::get_entity_with_models)).
pub type EntityWithModels = (Option<(Sequence, Vec<u8>)>, Vec<Option<Vec<u8>>>);

/// A page request for listings: keyset pagination on the id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Return ids strictly greater than this one (`None` for the first page).
    pub after: Option<EntityId>,
    /// Maximum number of rows.
    pub limit: usize,
}

impl Page {
    /// The first page of `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }
}
