//! Messages and their identities: commands, events, entities, view models, ids and envelopes.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::Violations;

/// A message that can be stored and routed: it has a stable wire name and a JSON codec.
///
/// Implemented by `#[derive(Command)]` and `#[derive(Event)]`; never implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a message",
    label = "not a command or event",
    note = "derive it: `#[derive(Serialize, Deserialize, Command)]` or \
            `#[derive(Serialize, Deserialize, Event)]`"
)]
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable wire name, written next to every stored payload (`#[command(name = "..")]`).
    const NAME: &'static str;

    /// Schema version of the payload, stored with every command and event
    /// (`#[command(version = 2)]`, `#[event(version = 2)]`; default 1). Rows of an older
    /// version are brought up to this one by the type's upcasters (`#[upcast]`) when read; a
    /// row of a newer version is refused with [`Error::NewerVersion`](crate::Error::NewerVersion).
    const VERSION: u32 = 1;

    /// Earlier wire names of this type (`aliases = ["bank.MoneyDeposited"]`): rows stored under
    /// one of them decode as this type.
    const ALIASES: &'static [&'static str] = &[];

    /// Checks run before the message is handled (commands) or committed (events).
    ///
    /// The derive fills it from `#[command(validate = path)]` / `#[event(validate = path)]`, or
    /// from the type's [`Validate`](crate::Validate) impl with `#[command(validate)]`.
    fn validate_message(&self, _violations: &mut Violations) {}
}

/// A request to change one entity, handled by exactly one saga.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    label = "`#[handles]` methods take a command",
    note = "derive it with `#[derive(Serialize, Deserialize, Command)]`; if `{Self}` is an \
            event, consume it with `#[projects_on]` in a `#[view]` or `#[subscribes]` in an \
            `#[aggregate]` instead"
)]
pub trait Command: Message {}

/// A fact recorded in an entity's stream.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "`#[projects_on]`, `#[subscribes]` and `#[applies]` methods take an event",
    note = "derive it with `#[derive(Serialize, Deserialize, Event)]`; if `{Self}` is a \
            command, handle it with `#[handles]` in a `#[saga]` instead"
)]
pub trait Event: Message {}

/// The state a saga owns, stored as a cache of its command stream.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an entity",
    label = "`entity = ..` names an entity type",
    note = "derive it with `#[derive(Default, Clone, Serialize, Deserialize, Entity)]`"
)]
pub trait Entity: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {
    /// Stable name of the entity type; the first half of every stream key.
    const NAME: &'static str;

    /// Schema version of the stored state (`#[entity(version = 2)]`, default 1). A stored
    /// state of another version is a cache miss: the stream is replayed and the state
    /// rewritten.
    const VERSION: u32 = 1;

    /// Earlier names of this entity type (`aliases = [".."]`), resolved by tooling that finds
    /// types by name (exports, imports, inspection). Stream keys keep the entity's `NAME`.
    const ALIASES: &'static [&'static str] = &[];
}

/// A read model maintained by a view.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a view model",
    label = "`model = ..` names a view model type",
    note = "derive it with `#[derive(Default, Clone, Serialize, Deserialize, ViewModel)]`"
)]
pub trait ViewModel:
    Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static
{
    /// Stable name of the view model type; view models are keyed by (this name, id).
    const NAME: &'static str;

    /// Earlier names of this view model type (`aliases = [".."]`), resolved by tooling that
    /// finds types by name. Stored models are keyed by `NAME`: bump the view's
    /// `#[view(version = N)]` to rebuild them under a new name.
    const ALIASES: &'static [&'static str] = &[];
}

/// The identity of an entity (and of its stream within the entity type).
///
/// Cheap to clone. Created fresh with [`EntityId::new`] (a UUID v7, time ordered) or from an
/// existing key with `From<&str>`, `From<String>`, `From<u64>` or `From<Uuid>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntityId(Arc<str>);

impl EntityId {
    /// A fresh, time-ordered id (UUID v7).
    pub fn new() -> Self {
        Self(Arc::from(Uuid::now_v7().to_string()))
    }

    /// The id as text, exactly as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EntityId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({:?})", &*self.0)
    }
}

impl From<&str> for EntityId {
    fn from(value: &str) -> Self {
        Self(Arc::from(value))
    }
}

impl From<String> for EntityId {
    fn from(value: String) -> Self {
        Self(Arc::from(value))
    }
}

impl From<&String> for EntityId {
    fn from(value: &String) -> Self {
        Self(Arc::from(value.as_str()))
    }
}

impl From<&EntityId> for EntityId {
    fn from(value: &EntityId) -> Self {
        value.clone()
    }
}

impl From<u64> for EntityId {
    fn from(value: u64) -> Self {
        Self(Arc::from(value.to_string()))
    }
}

impl From<Uuid> for EntityId {
    fn from(value: Uuid) -> Self {
        Self(Arc::from(value.to_string()))
    }
}

/// A stream key: the entity type name plus the entity id. Two entity types never share a stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The entity type name ([`Entity::NAME`], or the saga name for entity-less sagas).
    pub entity_type: Cow<'static, str>,
    /// The entity id.
    pub id: EntityId,
}

impl StreamId {
    /// A stream of `entity_type` for `id`.
    pub fn new(entity_type: impl Into<Cow<'static, str>>, id: impl Into<EntityId>) -> Self {
        Self {
            entity_type: entity_type.into(),
            id: id.into(),
        }
    }

    /// The stream of entity `E` with this id.
    pub fn of<E: Entity>(id: impl Into<EntityId>) -> Self {
        Self::new(E::NAME, id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.id)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

/// A position in one stream: dense, starting at 1. `Sequence(0)` means "nothing yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sequence(pub u64);

impl Sequence {
    /// The sequence before the first record of a stream.
    pub const ZERO: Sequence = Sequence(0);

    /// The sequence after this one.
    pub fn next(self) -> Sequence {
        Sequence(self.0 + 1)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A position in the global event log: strictly increasing in commit order, starting at 1.
/// `Position(0)` means "before the first event".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position before the first event; subscribe from here to read everything.
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Metadata stored with every command and event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this message (UUID v7 unless the caller supplied one).
    pub message_id: Uuid,
    /// Wire name of the payload type.
    pub name: Cow<'static, str>,
    /// Payload schema version ([`Message::VERSION`] of the type that wrote it).
    pub version: u32,
    /// The stream this message belongs to.
    pub stream: StreamId,
    /// Shared by every message caused, directly or not, by one outside request.
    pub correlation_id: Uuid,
    /// The message that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// When the message was created.
    pub timestamp: DateTime<Utc>,
}

/// A command as stored in the command log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCommand {
    /// The command's metadata.
    pub envelope: Envelope,
    /// Position in its stream (set by the store on append).
    pub sequence: Sequence,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// An event to be appended, before the store assigns it a sequence and position.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The event's metadata.
    pub envelope: Envelope,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// An event as recorded in the event log.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The event's metadata.
    pub envelope: Envelope,
    /// Position in its stream's event sequence (dense from 1).
    pub sequence: Sequence,
    /// Sequence of the command that emitted it.
    pub command_sequence: Sequence,
    /// Position in the global log.
    pub position: Position,
    /// JSON payload.
    pub payload: Vec<u8>,
}

impl RecordedEvent {
    /// The metadata handed to projections and reactions.
    pub fn meta(&self) -> EventMeta {
        EventMeta {
            message_id: self.envelope.message_id,
            name: self.envelope.name.clone(),
            version: self.envelope.version,
            stream: self.envelope.stream.clone(),
            sequence: self.sequence,
            position: self.position,
            correlation_id: self.envelope.correlation_id,
            causation_id: self.envelope.causation_id,
            timestamp: self.envelope.timestamp,
        }
    }
}

/// The current time at the precision every store keeps (whole microseconds), so that a
/// message's timestamp reads back exactly as it was created.
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

thread_local! {
    /// This thread's UUID v7 counter: ids are unique and increase within a thread, without a
    /// lock shared by every thread.
    static IDS: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

/// A new message id (UUID v7) and the current time at the precision every store keeps, from
/// one reading of the clock.
pub(crate) fn id_and_now() -> (Uuid, DateTime<Utc>) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (seconds, nanos) = (since.as_secs(), since.subsec_nanos());
    let id = IDS.with(|ids| Uuid::new_v7(uuid::Timestamp::from_unix(ids, seconds, nanos)));
    let time = i64::try_from(seconds)
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, nanos / 1_000 * 1_000))
        .unwrap_or_else(now);
    (id, time)
}

/// What a projection or reaction knows about the event it is applying.
#[derive(Clone, Debug, PartialEq)]
pub struct EventMeta {
    /// The event's unique id.
    pub message_id: Uuid,
    /// Wire name of the event type.
    pub name: Cow<'static, str>,
    /// Payload schema version.
    pub version: u32,
    /// The stream (entity type and id) that recorded the event.
    pub stream: StreamId,
    /// Position of the event in its stream.
    pub sequence: Sequence,
    /// Position of the event in the global log.
    pub position: Position,
    /// Correlation id of the request that led to this event.
    pub correlation_id: Uuid,
    /// The command that emitted this event.
    pub causation_id: Option<Uuid>,
    /// When the event was emitted.
    pub timestamp: DateTime<Utc>,
}

impl EventMeta {
    /// The id of the entity whose stream recorded the event.
    pub fn entity_id(&self) -> &EntityId {
        &self.stream.id
    }
}

/// The result of a successful `send`.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandReceipt {
    /// The command's message id (the idempotency key).
    pub message_id: Uuid,
    /// The stream the command was appended to.
    pub stream: StreamId,
    /// The command's sequence in its stream.
    pub sequence: Sequence,
    /// The events the command emitted, as recorded.
    pub events: Vec<RecordedEvent>,
    /// True when this message id had already been accepted: nothing ran, this is the original
    /// receipt.
    pub duplicate: bool,
    /// How many times the handler was re-run after a concurrency conflict.
    pub retries: u32,
}
