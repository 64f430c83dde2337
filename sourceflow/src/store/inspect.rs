//! Read-only queries for inspectors: what a browser over a store needs beyond the listings of
//! [`StoreAdmin`](super::StoreAdmin), each answered from an index or a small table so that a
//! page stays fast on a large store. The runtime never calls these.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Page, StoreError};
use crate::base::message::{EntityId, Position, RecordedEvent, Sequence, StoredCommand, StreamId};

/// Every command and event that shares one correlation id, as
/// [`StoreInspect::correlated`] returns them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Correlated {
    /// The commands, oldest first (by timestamp, then stream and sequence).
    pub commands: Vec<StoredCommand>,
    /// The events, in global position order.
    pub events: Vec<RecordedEvent>,
}

/// How much was recorded since a moment ([`StoreInspect::recorded_since`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Events with a timestamp at or after the moment.
    pub events: u64,
    /// Commands that recorded those events (a command that emitted no event is not counted).
    pub commands: u64,
    /// `commands` is an estimate: more events than a store counts commands over were
    /// recorded, so it scaled the share of commands among the newest of them.
    pub commands_estimated: bool,
}

/// Read-only queries for inspectors, reached through
/// [`StoreAdmin::inspect`](super::StoreAdmin::inspect). Every listing is bounded by a limit
/// or a page; none of them changes anything.
#[async_trait]
pub trait StoreInspect: Send + Sync {
    /// Per entity type, the number of stored entity states (one per stream of a saga that
    /// keeps an entity), sorted by type. Types whose sagas keep no entity do not appear.
    async fn entity_state_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// A page of the stream ids of `entity_type` that start with `prefix` (an empty prefix
    /// matches every id), ordered by id: keyset pagination on [`Page::after`]. Deleted streams
    /// are left out, as in [`StoreAdmin::stream_ids`](super::StoreAdmin::stream_ids).
    async fn stream_ids_with_prefix(
        &self,
        entity_type: &str,
        prefix: &str,
        page: Page,
    ) -> Result<Vec<EntityId>, StoreError>;

    /// The events of `stream` recorded under the commands `from..=to` (their
    /// [`command_sequence`](RecordedEvent::command_sequence)), in stream order.
    async fn events_of_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` commands and up to `limit` events carrying `correlation_id`, across all
    /// streams.
    async fn correlated(
        &self,
        correlation_id: Uuid,
        limit: usize,
    ) -> Result<Correlated, StoreError>;

    /// Every handler (view, aggregate, transport checkpoint) with a stored position, sorted by
    /// name.
    async fn positions(&self) -> Result<Vec<(String, Position)>, StoreError>;

    /// Every lease the store keeps ([`Leases`](super::Leases)), sorted by name, run out or
    /// not: who follows the log for which read side.
    async fn leases(&self) -> Result<Vec<super::LeaseRecord>, StoreError>;

    /// The number of outbox entries waiting to be sent.
    async fn outbox_len(&self) -> Result<u64, StoreError>;

    /// How many events (and the commands that recorded them) have a timestamp at or after
    /// `since`. A store may estimate the commands of a busy window from its newest events
    /// ([`Activity::commands_estimated`]); the events are counted exactly.
    async fn recorded_since(&self, since: DateTime<Utc>) -> Result<Activity, StoreError>;
}
