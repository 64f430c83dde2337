//! The in-memory store: the whole contract, behind one lock, for tests and prototypes.

mod inspect;
mod keys;
mod lease;
mod schedule;

use std::borrow::Cow;
use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;

use super::{
    EntityWithModels, InlineProjection, OutboxMessage, Page, PendingCommand, ProjectionCommit,
    Store, StoreAdmin, StoreError, UnitOfWork,
};
use crate::base::lifecycle::{DELETE_STREAM, ERASED};
use crate::base::message::{
    CommandReceipt, EntityId, NewEvent, Position, RecordedEvent, Sequence, StoredCommand, StreamId,
};

/// A thread-safe store kept in memory, with exactly the semantics of the SQL stores.
///
/// Every operation takes one short lock and never awaits while holding it. Nothing survives
/// the process: use `SqliteStore` from `sourceflow-sqlx` for durability. As in the SQL stores,
/// timestamps are kept in whole microseconds (truncated towards the past) and any `u64` read
/// bound is valid (past the end reads nothing).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct StreamData {
    commands: Vec<StoredCommand>,
    /// Indexes into `Inner::events`, in stream sequence order.
    events: Vec<usize>,
    /// The message ids of a short stream's commands, in sequence order (the first has sequence
    /// 1): scanned for a duplicate, 16 bytes apart instead of a whole command apart.
    short_ids: Vec<Uuid>,
    /// Message id -> command sequence, built once the stream is long enough that scanning
    /// its ids would cost more than the map (`short_ids` is then empty).
    message_ids: Option<HashMap<Uuid, Sequence>>,
    /// The stored entity state and the sequence it reflects.
    entity: Option<(Sequence, Vec<u8>)>,
    /// While the stream is archived: how many of its first commands and events are in the
    /// archive (hidden from the hot reads; their log entries are hidden too).
    archived: Option<(usize, usize)>,
}

impl StreamData {
    /// Streams up to this many commands find a message id by scanning.
    const SCAN: usize = 16;

    /// True for a stream the listings show: it has a command and is not deleted.
    fn listed(&self) -> bool {
        self.commands
            .last()
            .is_some_and(|last| last.envelope.name != DELETE_STREAM)
    }

    /// The commands and events (as log indexes) in the hot tables: all of them unless the
    /// stream is archived.
    fn hot(&self) -> (&[StoredCommand], &[usize]) {
        let (commands, events) = self.archived.unwrap_or((0, 0));
        (&self.commands[commands..], &self.events[events..])
    }

    fn sequence_of(&self, message_id: Uuid) -> Option<Sequence> {
        match &self.message_ids {
            Some(index) => index.get(&message_id).copied(),
            None => self
                .short_ids
                .iter()
                .position(|id| *id == message_id)
                .map(|i| Sequence(i as u64 + 1)),
        }
    }

    /// Appends a command whose `sequence` is already set.
    fn push_command(&mut self, command: StoredCommand) {
        let (message_id, sequence) = (command.envelope.message_id, command.sequence);
        self.commands.push(command);
        match &mut self.message_ids {
            Some(index) => {
                index.insert(message_id, sequence);
            }
            None => {
                self.short_ids.push(message_id);
                if self.short_ids.len() > Self::SCAN {
                    let index = std::mem::take(&mut self.short_ids)
                        .into_iter()
                        .zip(1..)
                        .map(|(id, sequence)| (id, Sequence(sequence)))
                        .collect();
                    self.message_ids = Some(index);
                }
            }
        }
    }
}

/// The global event log in fixed-size pages: appending never moves recorded events (a single
/// growing `Vec` would copy the whole log on every doubling and churn the allocator).
#[derive(Debug, Default)]
struct Log {
    pages: Vec<Vec<RecordedEvent>>,
    len: usize,
    /// Indexes of archived events: out of the hot log, in place (positions index the pages).
    archived: foldhash::HashSet<usize>,
}

impl Log {
    const PAGE: usize = 4096;

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, event: RecordedEvent) {
        if self.len % Self::PAGE == 0 {
            self.pages.push(Vec::with_capacity(Self::PAGE));
        }
        if let Some(page) = self.pages.last_mut() {
            page.push(event);
            self.len += 1;
        }
    }

    fn get(&self, index: usize) -> &RecordedEvent {
        &self.pages[index / Self::PAGE][index % Self::PAGE]
    }

    fn get_mut(&mut self, index: usize) -> &mut RecordedEvent {
        &mut self.pages[index / Self::PAGE][index % Self::PAGE]
    }

    /// The events of the hot log from index `start` on, in order (archived ones left out).
    fn iter_from(&self, start: usize) -> impl Iterator<Item = &RecordedEvent> {
        let start = start.min(self.len);
        let archived = &self.archived;
        self.pages
            .iter()
            .skip(start / Self::PAGE)
            .enumerate()
            .flat_map(move |(i, page)| {
                let skip = if i == 0 { start % Self::PAGE } else { 0 };
                page[skip..].iter()
            })
            .filter(move |e| {
                archived.is_empty() || !archived.contains(&(e.position.0 as usize - 1))
            })
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Subject keys: `None` marks a forgotten subject. Beside the log, so a unit of work's new
    /// keys commit with it.
    keys: HashMap<String, Option<super::keys::SubjectKey>>,
    streams: HashMap<StreamId, StreamData>,
    events: Log,
    /// Per model type; unordered (a write is one hash lookup), listings sort the page.
    models: HashMap<String, HashMap<EntityId, Vec<u8>>>,
    positions: HashMap<String, Position>,
    outbox: BTreeMap<u64, OutboxMessage>,
    next_outbox_id: u64,
    schedules: schedule::ScheduleTable,
    /// Leases: each holder and the end of its time.
    leases: HashMap<String, (Uuid, DateTime<Utc>)>,
}

/// A timestamp as every store keeps it: truncated to whole microseconds.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// A `u64` bound as an index: a bound past the end of memory is past the end of any log.
fn index(bound: u64) -> usize {
    usize::try_from(bound).unwrap_or(usize::MAX)
}

/// Appends `events` to the global log and to the stream `data`, emitted by command
/// `command_sequence`; returns them as recorded.
fn append_events(
    log: &mut Log,
    data: &mut StreamData,
    stream: &StreamId,
    command_sequence: Sequence,
    events: Vec<NewEvent>,
) -> Vec<RecordedEvent> {
    let mut recorded = Vec::with_capacity(events.len());
    for event in events {
        let index = log.len();
        let mut envelope = event.envelope;
        envelope.stream = stream.clone();
        envelope.timestamp = micros(envelope.timestamp);
        let record = RecordedEvent {
            envelope,
            sequence: Sequence(data.events.len() as u64 + 1),
            command_sequence,
            position: Position(index as u64 + 1),
            payload: event.payload,
        };
        recorded.push(record.clone());
        log.push(record);
        data.events.push(index);
    }
    recorded
}

/// The original receipt of `message_id` in a stream, if that command was accepted.
fn duplicate_receipt(
    log: &Log,
    data: &StreamData,
    stream: &StreamId,
    message_id: Uuid,
) -> Option<CommandReceipt> {
    let sequence = data.sequence_of(message_id)?;
    let events = data
        .events
        .iter()
        .map(|&i| log.get(i))
        .filter(|e| e.command_sequence == sequence)
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

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write: every mutation
        // below is checked first and applied without fallible steps, so the data stays valid.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn last_sequence(&self, stream: &StreamId) -> Sequence {
        self.streams
            .get(stream)
            .map_or(Sequence::ZERO, |s| Sequence(s.commands.len() as u64))
    }

    fn receipt(&self, stream: &StreamId, message_id: Uuid) -> Option<CommandReceipt> {
        duplicate_receipt(&self.events, self.streams.get(stream)?, stream, message_id)
    }

    fn commit(&mut self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        let Inner {
            streams,
            events: log,
            keys: key_table,
            ..
        } = self;
        let UnitOfWork {
            expected,
            mut command,
            entity,
            events,
            outbox,
            keys,
        } = unit;
        let stream = command.envelope.stream.clone();
        let message_id = command.envelope.message_id;
        // One lookup of the stream for the duplicate check, the head check and the appends
        // (its key is cloned only for a stream seen for the first time).
        let data = match streams.get_mut(&stream) {
            Some(data) => data,
            None => streams.entry(stream.clone()).or_default(),
        };
        if let Some(receipt) = duplicate_receipt(log, data, &stream, message_id) {
            return Ok(receipt);
        }
        // A subject keyed meanwhile by another unit: this unit's fields are sealed with a key
        // that lost; refused like any conflict, nothing written.
        let key_taken = keys.iter().any(
            |new| matches!(key_table.get(&new.subject), Some(Some(stored)) if *stored != new.key),
        );
        if data.commands.len() as u64 != expected.0 || key_taken {
            if data.commands.is_empty() && data.events.is_empty() && data.entity.is_none() {
                // Created just now by the lookup: leave no trace of a refused write.
                streams.remove(&stream);
            }
            return Err(StoreError::Conflict { stream, expected });
        }
        for new in keys {
            key_table.entry(new.subject).or_insert(Some(new.key));
        }
        let sequence = expected.next();
        command.sequence = sequence;
        command.envelope.timestamp = micros(command.envelope.timestamp);
        data.push_command(command);
        let recorded = append_events(log, data, &stream, sequence, events);
        if let Some(state) = entity {
            data.entity = Some((sequence, state));
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

    /// Commits a lifecycle marker (a tombstone, an archive or restore marker) and hands the
    /// stream's data, the log and the receipt to `change`, under the one lock: atomic.
    /// Commits the lifecycle marker `unit` (at the stream's next sequence when `follow` and
    /// the commands since leave the stream live), then applies `change` to the stream.
    fn change_stream(
        &mut self,
        mut unit: UnitOfWork,
        follow: bool,
        change: impl FnOnce(&mut StreamData, &mut Log, &CommandReceipt),
    ) -> Result<CommandReceipt, StoreError> {
        let stream = unit.command.envelope.stream.clone();
        if follow {
            if let Some(last) = self.streams.get(&stream).and_then(|d| d.commands.last()) {
                unit.place_marker_after(last.sequence, &last.envelope.name);
            }
        }
        let receipt = self.commit(unit)?;
        if receipt.duplicate {
            return Ok(receipt);
        }
        if let Some(data) = self.streams.get_mut(&stream) {
            change(data, &mut self.events, &receipt);
        }
        Ok(receipt)
    }

    fn commit_projection(&mut self, commit: ProjectionCommit) -> Result<(), StoreError> {
        let current = self
            .positions
            .get(&*commit.handler)
            .copied()
            .unwrap_or(Position::START);
        if current != commit.expected {
            return Err(StoreError::PositionConflict {
                handler: commit.handler.into_owned(),
                expected: commit.expected,
            });
        }
        for write in commit.models {
            let models = match self.models.get_mut(&*write.model_type) {
                Some(models) => models,
                None => self
                    .models
                    .entry(write.model_type.into_owned())
                    .or_default(),
            };
            match write.state {
                Some(state) => {
                    models.insert(write.id, state);
                }
                None => {
                    models.remove(&write.id);
                }
            }
        }
        self.push_outbox(commit.outbox);
        match self.positions.get_mut(&*commit.handler) {
            Some(position) => *position = commit.position,
            None => {
                self.positions
                    .insert(commit.handler.into_owned(), commit.position);
            }
        }
        Ok(())
    }

    fn push_outbox(&mut self, messages: Vec<OutboxMessage>) {
        for mut message in messages {
            message.envelope.timestamp = micros(message.envelope.timestamp);
            self.next_outbox_id += 1;
            self.outbox.insert(self.next_outbox_id, message);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let inner = self.lock();
        let Some(data) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let first = data.archived.map_or(0, |(commands, _)| commands);
        let start = index(from.0.max(1) - 1).max(first);
        let end = to.map_or(data.commands.len(), |to| {
            index(to.0).min(data.commands.len())
        });
        Ok(data
            .commands
            .get(start..end.max(start))
            .map(<[_]>::to_vec)
            .unwrap_or_default())
    }

    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError> {
        Ok(self.lock().last_sequence(stream))
    }

    async fn find_receipt(
        &self,
        stream: &StreamId,
        message_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError> {
        Ok(self.lock().receipt(stream, message_id))
    }

    async fn read_stream_range(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let Some(data) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let first = data.archived.map_or(0, |(_, events)| events);
        let start = index(from.0.max(1) - 1).max(first).min(data.events.len());
        let end = index(to.0).clamp(start, data.events.len());
        Ok(data.events[start..end]
            .iter()
            .map(|&i| inner.events.get(i).clone())
            .collect())
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .iter_from(index(after.0))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position(self.lock().events.len() as u64))
    }

    async fn get_entity(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .streams
            .get(stream)
            .and_then(|data| data.entity.clone()))
    }

    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let current = inner
            .streams
            .get(stream)
            .and_then(|data| data.entity.as_ref())
            .map_or(Sequence::ZERO, |(v, _)| *v);
        // A state older than the stream's last command is stale (a deleted stream's
        // tombstone, a command committed meanwhile): never written.
        if current != expected || inner.last_sequence(stream) > version {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
            });
        }
        inner.streams.entry(stream.clone()).or_default().entity = Some((version, state));
        Ok(())
    }

    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .models
            .get(model_type)
            .and_then(|m| m.get(id))
            .cloned())
    }

    async fn list_models(
        &self,
        model_type: &str,
        page: Page,
    ) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError> {
        let inner = self.lock();
        let Some(models) = inner.models.get(model_type) else {
            return Ok(Vec::new());
        };
        // The page's ids: those after `page.after`, the smallest `limit` of them, in order.
        let mut ids: Vec<&EntityId> = models
            .keys()
            .filter(|id| page.after.as_ref().is_none_or(|after| *id > after))
            .collect();
        if ids.len() > page.limit {
            if page.limit > 0 {
                ids.select_nth_unstable(page.limit - 1);
            }
            ids.truncate(page.limit);
        }
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .map(|id| (id.clone(), models[id].clone()))
            .collect())
    }

    async fn get_position(&self, handler: &str) -> Result<Position, StoreError> {
        Ok(self
            .lock()
            .positions
            .get(handler)
            .copied()
            .unwrap_or(Position::START))
    }

    async fn set_position(&self, handler: &str, position: Position) -> Result<(), StoreError> {
        self.lock().positions.insert(handler.to_owned(), position);
        Ok(())
    }

    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        self.lock().commit(unit)
    }

    async fn commit_inline(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        // One lock for the unit and its projections: nothing can come between them.
        let mut inner = self.lock();
        let receipt = inner.commit(unit)?;
        let mut applied = vec![false; projections.len()];
        let (Some(first), Some(last)) = (receipt.events.first(), receipt.events.last()) else {
            return Ok((receipt, applied));
        };
        if receipt.duplicate {
            return Ok((receipt, applied));
        }
        let (first, last) = ((first.position, first.sequence), last.position);
        for (projection, applied) in projections.into_iter().zip(&mut applied) {
            if first != (Position(projection.after.0 + 1), projection.first_sequence) {
                continue;
            }
            *applied = inner
                .commit_projection(ProjectionCommit {
                    handler: projection.handler,
                    expected: projection.expected,
                    position: last,
                    models: projection.models,
                    outbox: Vec::new(),
                })
                .is_ok();
        }
        Ok((receipt, applied))
    }

    async fn commit_projection(&self, commit: ProjectionCommit) -> Result<(), StoreError> {
        self.lock().commit_projection(commit)
    }

    async fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> Result<EntityWithModels, StoreError> {
        let inner = self.lock();
        let entity = inner
            .streams
            .get(stream)
            .and_then(|data| data.entity.clone());
        let found = models
            .iter()
            .map(|(model_type, id)| inner.models.get(*model_type)?.get(id).cloned())
            .collect();
        Ok((entity, found))
    }

    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[&str],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for model_type in model_types {
            inner.models.remove(*model_type);
        }
        inner.positions.remove(handler);
        Ok(())
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError> {
        Ok(self
            .lock()
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
        let mut inner = self.lock();
        for id in ids {
            inner.outbox.remove(id);
        }
        Ok(())
    }

    async fn delete_stream(&self, tombstone: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        self.lock()
            .change_stream(tombstone, true, |data, log, receipt| {
                // Archived records come back to be erased with the rest.
                if data.archived.take().is_some() {
                    for at in &data.events {
                        log.archived.remove(at);
                    }
                }
                for command in &mut data.commands {
                    if command.sequence < receipt.sequence {
                        command.envelope.name = Cow::Borrowed(ERASED);
                        command.payload = b"null".to_vec();
                    }
                }
                for &at in &data.events {
                    let event = log.get_mut(at);
                    if event.command_sequence < receipt.sequence {
                        event.envelope.name = Cow::Borrowed(ERASED);
                        event.payload = b"null".to_vec();
                    }
                }
                data.entity = None;
            })
    }

    async fn archive_stream(&self, marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        self.lock()
            .change_stream(marker, true, |data, log, receipt| {
                let commands = data.commands.len() - 1;
                let events = data.events.len() - receipt.events.len();
                for &at in &data.events[..events] {
                    log.archived.insert(at);
                }
                data.archived = Some((commands, events));
                data.entity = None;
            })
    }

    async fn restore_stream(&self, marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        self.lock().change_stream(marker, false, |data, log, _| {
            if data.archived.take().is_some() {
                for at in &data.events {
                    log.archived.remove(at);
                }
            }
        })
    }

    async fn load_archived_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let inner = self.lock();
        let Some((archived, data)) = inner
            .streams
            .get(stream)
            .and_then(|data| Some((data.archived?.0, data)))
        else {
            return Ok(Vec::new());
        };
        let start = index(from.0.max(1) - 1).min(archived);
        let end = to.map_or(archived, |to| index(to.0).min(archived));
        Ok(data.commands[start..end.max(start)].to_vec())
    }

    async fn read_archived_events(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let Some((archived, data)) = inner
            .streams
            .get(stream)
            .and_then(|data| Some((data.archived?.1, data)))
        else {
            return Ok(Vec::new());
        };
        let start = index(from.0.max(1) - 1).min(archived);
        let end = index(to.0).clamp(start, archived);
        Ok(data.events[start..end]
            .iter()
            .map(|&at| inner.events.get(at).clone())
            .collect())
    }

    fn admin(&self) -> Option<&dyn StoreAdmin> {
        Some(self)
    }

    fn schedules(&self) -> Option<&dyn super::ScheduleStore> {
        Some(self)
    }

    fn keys(&self) -> Option<&dyn super::KeyStore> {
        Some(self)
    }

    fn leases(&self) -> Option<&dyn super::Leases> {
        Some(self)
    }
}

#[async_trait]
impl StoreAdmin for MemoryStore {
    async fn append_command(
        &self,
        expected: Sequence,
        mut command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        let mut inner = self.lock();
        let stream = command.envelope.stream.clone();
        if inner.last_sequence(&stream) != expected {
            return Err(StoreError::Conflict { stream, expected });
        }
        let sequence = expected.next();
        command.sequence = sequence;
        command.envelope.timestamp = micros(command.envelope.timestamp);
        let data = inner.streams.entry(stream).or_default();
        data.push_command(command);
        Ok(sequence)
    }

    async fn append_events(
        &self,
        stream: &StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut inner = self.lock();
        let Inner {
            streams,
            events: log,
            ..
        } = &mut *inner;
        let last = streams.get(stream).map_or(0, |s| s.events.len() as u64);
        if last != expected.0 {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
            });
        }
        let data = streams.entry(stream.clone()).or_default();
        let command_sequence = Sequence(data.commands.len() as u64);
        Ok(append_events(log, data, stream, command_sequence, events))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_range(stream, from, Sequence(u64::MAX))
            .await
    }

    async fn read_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .iter_from(index(after.0))
            .filter(|e| e.envelope.timestamp >= from && e.envelope.timestamp < to)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn delete_entity(&self, stream: &StreamId) -> Result<(), StoreError> {
        if let Some(data) = self.lock().streams.get_mut(stream) {
            data.entity = None;
        }
        Ok(())
    }

    async fn put_model(
        &self,
        model_type: &str,
        id: &EntityId,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.lock()
            .models
            .entry(model_type.to_owned())
            .or_default()
            .insert(id.clone(), state);
        Ok(())
    }

    async fn delete_model(&self, model_type: &str, id: &EntityId) -> Result<(), StoreError> {
        if let Some(models) = self.lock().models.get_mut(model_type) {
            models.remove(id);
        }
        Ok(())
    }

    async fn clear_models(&self, model_type: &str) -> Result<(), StoreError> {
        self.lock().models.remove(model_type);
        Ok(())
    }

    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let mut types: Vec<String> = inner
            .streams
            .iter()
            .filter(|(_, data)| !data.commands.is_empty())
            .map(|(stream, _)| stream.entity_type.to_string())
            .collect();
        types.sort();
        types.dedup();
        Ok(types)
    }

    async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, StoreError> {
        let inner = self.lock();
        let mut ids: Vec<EntityId> = inner
            .streams
            .iter()
            .filter(|(stream, data)| stream.entity_type == entity_type && data.listed())
            .map(|(stream, _)| stream.id.clone())
            .filter(|id| page.after.as_ref().is_none_or(|after| id > after))
            .collect();
        ids.sort();
        ids.truncate(page.limit);
        Ok(ids)
    }

    fn inspect(&self) -> Option<&dyn super::StoreInspect> {
        Some(self)
    }
}
