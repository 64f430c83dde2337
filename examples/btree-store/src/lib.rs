//! A sourceflow store written outside sourceflow: the core [`Store`] trait over `BTreeMap`s
//! behind one lock, and nothing else. Copy it as the skeleton of your own backend.
//!
//! # What a store must do
//!
//! The runtime hands a store finished work and asks it questions; it never tells it how to
//! keep anything. The rules ([`sourceflow::store`] lists them) come down to five:
//!
//! 1. **Dense sequences.** Each stream (entity type + id) numbers its commands 1, 2, 3, ... and,
//!    separately, its events. [`Store::commit`] appends the command at `expected + 1`; if the
//!    stream's last sequence is not `expected`, another writer got there first and the answer
//!    is [`StoreError::Conflict`], with nothing written. The runtime reloads the entity and
//!    retries the handler.
//! 2. **Idempotent message ids.** A command whose message id the stream already accepted is not
//!    appended again: the store answers with the original receipt (its sequence and events),
//!    marked `duplicate`, whatever `expected` says. This check comes before the conflict check,
//!    so a retry after a lost reply is recognised.
//! 3. **Positions.** Every event also gets a position in the global log, increasing in commit
//!    order, so views can catch up with [`Store::read_all`] and never skip one.
//! 4. **Atomic units.** A commit writes the command, the entity state, the events and the
//!    outbox entries together or not at all; so does [`Store::commit_projection`] for a view's
//!    model writes and its new position, which it compares and sets.
//! 5. **Optimistic entity versions.** [`Store::put_entity`] writes only over the version the
//!    caller read, and never one older than the stream's last command.
//!
//! # How this one does it
//!
//! Every table is a `BTreeMap` in one `Tables` value behind a `std::sync::Mutex`. Each method
//! takes the lock, does all its work without awaiting, and releases it, so a commit is atomic
//! by construction and no lock is ever held across an `.await`. Inside a commit every check
//! (duplicate, conflict) comes before the first write, so a refused unit leaves no trace.
//!
//! Sequences stay dense because a stream's commands are a `Vec` whose length *is* the last
//! sequence: the only way in is a push at `len + 1`. A SQL backend, whose rows can be edited
//! behind its back, must also report a missing sequence on read ([`StoreError::Gap`]); here
//! there is no way to make one.
//!
//! Two methods are left to their provided implementations:
//! [`Store::commit_inline`] (which writes no view batch in the command's transaction, so the
//! runtime projects the events right after the commit: always correct) and
//! [`Store::get_entity_with_models`] (one read after another, fine in memory). Nor is there a
//! `StoreAdmin`: [`Store::admin`] returns `None`, and operator tooling reports
//! [`StoreError::Unsupported`].
//!
//! # Proving it
//!
//! `tests/conformance.rs` runs every scenario of the `core` group of `sourceflow-testkit`
//! against a fresh `BTreeStore`:
//!
//! ```no_run
//! use btree_store::BTreeStore;
//! use sourceflow_testkit::{store_conformance, Fixture};
//!
//! store_conformance! {
//!     mod conformance {
//!         fixture: Fixture::new(BTreeStore::new()),
//!         groups: [core],
//!     }
//! }
//! ```
//!
//! # Using it
//!
//! A store is handed to the builder like any other:
//!
//! ```
//! use btree_store::BTreeStore;
//! use serde::{Deserialize, Serialize};
//! use sourceflow::prelude::*;
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Command)]
//! #[command(name = "counter.Add")]
//! pub struct Add { pub n: i64 }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Event)]
//! #[event(name = "counter.Added")]
//! pub struct Added { pub total: i64 }
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
//! pub struct Counter { pub total: i64 }
//!
//! #[derive(Default)]
//! pub struct CounterSaga;
//!
//! #[saga(entity = Counter)]
//! impl CounterSaga {
//!     #[handles]
//!     async fn add(&self, counter: &mut Counter, cmd: &Add, cx: &mut SagaContext) {
//!         counter.total += cmd.n;
//!         cx.publish(Added { total: counter.total });
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let flow = SourceFlow::builder().store(BTreeStore::new()).build().await?;
//! let id = EntityId::from("counter-1");
//! flow.send(&id, Add { n: 2 }).await?;
//! let receipt = flow.send(&id, Add { n: 3 }).await?;
//! assert_eq!(receipt.sequence, Sequence(2));
//! let replayed: Counter = flow.replay(&id).await?;
//! assert_eq!(replayed.total, 5);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use sourceflow::message::StoredCommand;
use sourceflow::store::{
    OutboxMessage, Page, PendingCommand, ProjectionCommit, Store, StoreError, UnitOfWork,
};
use sourceflow::{CommandReceipt, EntityId, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

/// A sourceflow store in memory: `BTreeMap`s behind one lock. Nothing survives the process.
#[derive(Debug, Default)]
pub struct BTreeStore {
    tables: Mutex<Tables>,
}

/// Everything the store holds.
#[derive(Debug, Default)]
struct Tables {
    streams: BTreeMap<StreamId, StreamTables>,
    /// The global event log.
    log: BTreeMap<Position, RecordedEvent>,
    /// View models by model type, then id (ordered: pages come out in id order).
    models: BTreeMap<String, BTreeMap<EntityId, Vec<u8>>>,
    /// Each view's or aggregate's last applied position.
    positions: BTreeMap<String, Position>,
    /// Follow-up commands waiting to be sent, by id (ids increase: oldest first).
    outbox: BTreeMap<u64, OutboxMessage>,
    next_outbox_id: u64,
}

/// One stream's records.
#[derive(Debug, Default)]
struct StreamTables {
    /// The commands; sequence `n` at index `n - 1`, so the length is the last sequence.
    commands: Vec<StoredCommand>,
    /// Accepted message ids and the sequence each was accepted at.
    message_ids: BTreeMap<Uuid, Sequence>,
    /// The stream's events as positions in the log; event sequence `n` at index `n - 1`.
    events: Vec<Position>,
    /// The entity state and the command sequence it reflects.
    entity: Option<(Sequence, Vec<u8>)>,
}

impl BTreeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic under the lock cannot leave half a write: every method checks before it
        // writes, and the writes themselves cannot fail. So a poisoned lock is still sound.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The items at sequences `from..=to` of a list where sequence `n` is at index `n - 1`.
fn by_sequence<T: Clone>(items: &[T], from: Sequence, to: Sequence) -> Vec<T> {
    let start = from.0.max(1) - 1;
    let end = to.0.min(items.len() as u64);
    if start >= end {
        return Vec::new();
    }
    items[start as usize..end as usize].to_vec()
}

impl Tables {
    fn last_sequence(&self, stream: &StreamId) -> Sequence {
        self.streams
            .get(stream)
            .map_or(Sequence::ZERO, |s| Sequence(s.commands.len() as u64))
    }

    /// The receipt of an accepted message id: its sequence, and the events recorded under it.
    fn receipt(&self, stream: &StreamId, message_id: Uuid) -> Option<CommandReceipt> {
        let tables = self.streams.get(stream)?;
        let sequence = *tables.message_ids.get(&message_id)?;
        let events = tables
            .events
            .iter()
            .map(|position| &self.log[position])
            .filter(|event| event.command_sequence == sequence)
            .cloned()
            .collect();
        Some(CommandReceipt {
            message_id,
            stream: stream.clone(),
            sequence,
            events,
            duplicate: true,
            retries: 0,
        })
    }

    fn commit(&mut self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        let UnitOfWork {
            expected,
            mut command,
            entity,
            events,
            outbox,
            // This store keeps no key table: units only carry keys for stores that do.
            keys: _,
        } = unit;
        let stream = command.envelope.stream.clone();
        let message_id = command.envelope.message_id;
        // Checks first, duplicate before conflict: a resent command is answered, not refused.
        if let Some(original) = self.receipt(&stream, message_id) {
            return Ok(original);
        }
        if self.last_sequence(&stream) != expected {
            return Err(StoreError::Conflict { stream, expected });
        }

        let sequence = expected.next();
        let head = self
            .log
            .last_key_value()
            .map_or(0, |(position, _)| position.0);
        let tables = self.streams.entry(stream.clone()).or_default();
        command.sequence = sequence;
        tables.commands.push(command);
        tables.message_ids.insert(message_id, sequence);
        if let Some(state) = entity {
            tables.entity = Some((sequence, state));
        }
        let mut recorded = Vec::with_capacity(events.len());
        for (position, event) in (head + 1..).map(Position).zip(events) {
            let mut envelope = event.envelope;
            envelope.stream = stream.clone();
            let record = RecordedEvent {
                envelope,
                sequence: Sequence(tables.events.len() as u64 + 1),
                command_sequence: sequence,
                position,
                payload: event.payload,
            };
            tables.events.push(position);
            self.log.insert(position, record.clone());
            recorded.push(record);
        }
        self.push_outbox(outbox);
        Ok(CommandReceipt {
            message_id,
            stream,
            sequence,
            events: recorded,
            duplicate: false,
            retries: 0,
        })
    }

    fn push_outbox(&mut self, messages: Vec<OutboxMessage>) {
        for message in messages {
            self.next_outbox_id += 1;
            self.outbox.insert(self.next_outbox_id, message);
        }
    }
}

#[async_trait]
impl Store for BTreeStore {
    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        self.tables().commit(unit)
    }

    async fn load_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let tables = self.tables();
        let Some(stream) = tables.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let to = to.unwrap_or(Sequence(u64::MAX));
        Ok(by_sequence(&stream.commands, from, to))
    }

    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError> {
        Ok(self.tables().last_sequence(stream))
    }

    async fn find_receipt(
        &self,
        stream: &StreamId,
        message_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError> {
        Ok(self.tables().receipt(stream, message_id))
    }

    async fn get_entity(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        let tables = self.tables();
        Ok(tables.streams.get(stream).and_then(|s| s.entity.clone()))
    }

    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let stored = tables
            .streams
            .get(stream)
            .and_then(|s| s.entity.as_ref())
            .map_or(Sequence::ZERO, |(version, _)| *version);
        let last = tables
            .streams
            .get(stream)
            .map_or(0, |s| s.commands.len() as u64);
        // A state older than the stream's last command would be stale: never written.
        if stored != expected || last > version.0 {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
            });
        }
        tables.streams.entry(stream.clone()).or_default().entity = Some((version, state));
        Ok(())
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError> {
        let tables = self.tables();
        Ok(tables
            .outbox
            .iter()
            .take(limit)
            .map(|(id, message)| PendingCommand {
                id: *id,
                message: message.clone(),
            })
            .collect())
    }

    async fn outbox_remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        let mut tables = self.tables();
        for id in ids {
            tables.outbox.remove(id);
        }
        Ok(())
    }

    async fn read_stream_range(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let tables = self.tables();
        let Some(stream) = tables.streams.get(stream) else {
            return Ok(Vec::new());
        };
        Ok(by_sequence(&stream.events, from, to)
            .iter()
            .map(|position| tables.log[position].clone())
            .collect())
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let tables = self.tables();
        Ok(tables
            .log
            .range(Position(after.0.saturating_add(1))..)
            .take(limit)
            .map(|(_, event)| event.clone())
            .collect())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let tables = self.tables();
        Ok(tables
            .log
            .last_key_value()
            .map_or(Position::START, |(position, _)| *position))
    }

    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let tables = self.tables();
        Ok(tables
            .models
            .get(model_type)
            .and_then(|models| models.get(id))
            .cloned())
    }

    async fn list_models(
        &self,
        model_type: &str,
        page: Page,
    ) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError> {
        let tables = self.tables();
        let Some(models) = tables.models.get(model_type) else {
            return Ok(Vec::new());
        };
        Ok(models
            .iter()
            .filter(|(id, _)| page.after.as_ref().is_none_or(|after| *id > after))
            .take(page.limit)
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect())
    }

    async fn get_position(&self, handler: &str) -> Result<Position, StoreError> {
        let tables = self.tables();
        Ok(tables
            .positions
            .get(handler)
            .copied()
            .unwrap_or(Position::START))
    }

    async fn set_position(&self, handler: &str, position: Position) -> Result<(), StoreError> {
        self.tables().positions.insert(handler.to_owned(), position);
        Ok(())
    }

    async fn commit_projection(&self, commit: ProjectionCommit) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let stored = tables
            .positions
            .get(&*commit.handler)
            .copied()
            .unwrap_or(Position::START);
        if stored != commit.expected {
            return Err(StoreError::PositionConflict {
                handler: commit.handler.into_owned(),
                expected: commit.expected,
            });
        }
        // In order: a later write to the same model wins.
        for write in commit.models {
            let models = tables
                .models
                .entry(write.model_type.into_owned())
                .or_default();
            match write.state {
                Some(state) => models.insert(write.id, state),
                None => models.remove(&write.id),
            };
        }
        tables.push_outbox(commit.outbox);
        tables
            .positions
            .insert(commit.handler.into_owned(), commit.position);
        Ok(())
    }

    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[&str],
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        for model_type in model_types {
            tables.models.remove(*model_type);
        }
        tables.positions.remove(handler);
        Ok(())
    }
}
