//! Replay: re-running a stream's command log through today's handlers, for `replay`,
//! `state_at`, `verify` and entity states that are missing or no longer decode.

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::WriteSide;
use crate::base::error::{take_problems, Error, Location};
use crate::base::lifecycle::{is_erased, is_system_command, StreamStatus, DELETE_STREAM};
use crate::base::message::{Entity, EntityId, RecordedEvent, Sequence, StoredCommand, StreamId};
use crate::codec::{command_record, ErasedState, StateVtable, TypeIndex, TypeKind};
use crate::context::SagaContext;
use crate::routes::{ApplierRecord, Registry};
use crate::store::{Store, StoreError};

/// A point in a stream's history for [`SourceFlow::state_at`](crate::SourceFlow::state_at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// After the command with this sequence.
    Sequence(Sequence),
    /// After every command sent at or before this instant.
    Time(DateTime<Utc>),
}

impl From<Sequence> for At {
    fn from(value: Sequence) -> Self {
        At::Sequence(value)
    }
}

impl From<DateTime<Utc>> for At {
    fn from(value: DateTime<Utc>) -> Self {
        At::Time(value)
    }
}

/// The outcome of [`SourceFlow::verify`](crate::SourceFlow::verify).
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// Replaying the command log reproduced the stored events and the stored state.
    Consistent {
        /// The last sequence checked.
        sequence: Sequence,
    },
    /// Replaying produced something else: a handler is not deterministic, or stored data was
    /// changed behind the log's back.
    Differs {
        /// The first command sequence whose replay differs (in events, or in the final state
        /// when the events all match).
        sequence: Sequence,
        /// What differs, for a human.
        detail: String,
    },
    /// There is no stored state to compare with (the cache was dropped); the log replays fine.
    NoStoredState {
        /// The last sequence replayed.
        sequence: Sequence,
    },
}

/// Commands a replay reads per page.
const REPLAY_PAGE: u64 = 1_000;

pub(crate) struct Replayed {
    pub(crate) last: Sequence,
    pub(crate) state: Option<ErasedState>,
    /// Where the stream stands: a deleted one replays to the default state, an archived one
    /// from the archive.
    pub(crate) status: StreamStatus,
}

/// A stream's command log up to `to`, read in pages of [`REPLAY_PAGE`] as a replay consumes
/// it. Stores check that a page is dense; this also checks the seams between pages, so a
/// command missing at the end of a page is reported rather than taken for the end of the log.
///
/// The next pages are read while this one is replayed (tasks of their own, [`READ_AHEAD`] at
/// a time, aborted when the replay stops early), so reading and running handlers overlap on a
/// store whose reads run off the runtime's thread.
struct CommandPages {
    store: Arc<dyn Store>,
    stream: StreamId,
    /// Read from the archive instead of the hot tables.
    archived: bool,
    to: Option<Sequence>,
    /// The rest of the page being replayed (handed out by move, not copied into a queue).
    page: std::vec::IntoIter<StoredCommand>,
    /// The reads of the pages after `fetched`, in order.
    ahead: std::collections::VecDeque<ReadAhead>,
    /// The last sequence read from the store, and the last one handed out.
    fetched: Sequence,
    returned: Sequence,
    done: bool,
}

/// Pages a replay reads ahead of the one it is running: as many as a SQLite store keeps stream
/// reader connections by default, so that each read has one; with fewer, two cores sat idle
/// between the reads now and then (W6: two ahead 0.58-0.60 of the floor, three 0.59-0.65, four
/// 0.64-0.67).
const READ_AHEAD: usize = 4;

/// A page being read ahead, up to command `end`; dropping it abandons the read.
struct ReadAhead {
    end: Sequence,
    read: tokio::task::JoinHandle<Result<Vec<StoredCommand>, StoreError>>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.read.abort();
    }
}

impl CommandPages {
    fn new(store: Arc<dyn Store>, stream: &StreamId, archived: bool, to: Option<Sequence>) -> Self {
        Self {
            store,
            stream: stream.clone(),
            archived,
            to,
            page: Vec::new().into_iter(),
            ahead: std::collections::VecDeque::new(),
            fetched: Sequence::ZERO,
            returned: Sequence::ZERO,
            done: false,
        }
    }

    /// Starts reading the pages after `fetched` (or after those already being read) until
    /// `depth` are, or the log's bound is reached.
    fn read_ahead(&mut self, depth: usize) {
        while self.ahead.len() < depth {
            let after = self.ahead.back().map_or(self.fetched, |read| read.end);
            let page_end = Sequence(after.0 + REPLAY_PAGE);
            let end = self.to.map_or(page_end, |to| to.min(page_end));
            if end <= after {
                return;
            }
            let (store, stream, archived) =
                (self.store.clone(), self.stream.clone(), self.archived);
            let (from, to) = (after.next(), Some(end));
            let read = tokio::spawn(async move {
                if archived {
                    store.load_archived_commands(&stream, from, to).await
                } else {
                    store.load_commands(&stream, from, to).await
                }
            });
            self.ahead.push_back(ReadAhead { end, read });
        }
    }

    async fn next(&mut self) -> Result<Option<StoredCommand>, Error> {
        if self.page.as_slice().is_empty() && !self.done {
            self.read_ahead(1);
            match self.ahead.pop_front() {
                None => self.done = true,
                Some(mut ahead) => {
                    let commands = (&mut ahead.read)
                        .await
                        .map_err(|e| StoreError::Backend(Box::new(e)))??;
                    match commands.last() {
                        Some(last) => {
                            self.fetched = last.sequence;
                            // A short page ends the log, unless a missing command cut it
                            // short: the next read (from just after it) then finds nothing, or
                            // reports the gap. The pages read ahead of it no longer follow.
                            // Only a full page has more pages read ahead of the next: a short
                            // stream costs no reads beyond the one that finds its end.
                            if last.sequence < ahead.end {
                                self.ahead.clear();
                            } else {
                                self.read_ahead(READ_AHEAD);
                            }
                        }
                        None => self.done = true,
                    }
                    self.page = commands.into_iter();
                }
            }
        }
        let Some(next) = self.page.next() else {
            return Ok(None);
        };
        let expected = self.returned.next();
        if next.sequence != expected {
            return Err(StoreError::Gap {
                stream: self.stream.clone(),
                expected,
                found: next.sequence,
            }
            .into());
        }
        self.returned = next.sequence;
        Ok(Some(next))
    }
}

/// A stream's recorded events, read in pages of [`REPLAY_PAGE`] as [`SourceFlow::verify`](crate::SourceFlow::verify)
/// consumes them.
struct EventPages<'a> {
    stream: &'a StreamId,
    /// Read from the archive instead of the hot tables.
    archived: bool,
    page: std::collections::VecDeque<RecordedEvent>,
    next: Sequence,
    done: bool,
}

impl<'a> EventPages<'a> {
    fn new(stream: &'a StreamId, archived: bool) -> Self {
        Self {
            stream,
            archived,
            page: std::collections::VecDeque::new(),
            next: Sequence(1),
            done: false,
        }
    }

    /// The next event if it was recorded under a command at or before `command`.
    async fn next_before(
        &mut self,
        store: &dyn Store,
        command: Sequence,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        if self.page.is_empty() && !self.done {
            let to = Sequence(self.next.0 + REPLAY_PAGE - 1);
            let events = if self.archived {
                store
                    .read_archived_events(self.stream, self.next, to)
                    .await?
            } else {
                store.read_stream_range(self.stream, self.next, to).await?
            };
            match events.last() {
                // A short page may be cut short by a missing event: the next read reports it.
                Some(last) => self.next = last.sequence.next(),
                None => self.done = true,
            }
            self.page.extend(events);
        }
        Ok(self
            .page
            .front()
            .is_some_and(|e| e.command_sequence <= command)
            .then(|| self.page.pop_front())
            .flatten())
    }
}

impl WriteSide {
    /// Re-runs the command log of `stream` against a fresh state, with `is_replay = true`,
    /// reading it in pages of [`REPLAY_PAGE`] commands: memory stays bounded however long the
    /// stream, and a time bound stops the reading where it stops the replay.
    pub(crate) async fn replay_stream(
        &self,
        stream: &StreamId,
        vtable: Option<StateVtable>,
        to: Option<Sequence>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Replayed, Error> {
        let (head, status) = self.stream_status(stream).await?;
        if status == StreamStatus::Deleted {
            // Erased: nothing to replay, as for a stream never written to.
            return Ok(Replayed {
                last: head,
                state: vtable.map(|v| (v.default)()),
                status,
            });
        }
        let archived = status == StreamStatus::Archived;
        if let Some(vtable) = vtable {
            let appliers = Registry::global().appliers_of((vtable.type_id)());
            if !appliers.is_empty() {
                let mut replayed = self
                    .fold_stream(stream, archived, vtable, appliers, to, until)
                    .await?;
                replayed.status = status;
                return Ok(replayed);
            }
        }
        let mut state = vtable.map(|v| (v.default)());
        let mut last = Sequence::ZERO;
        let mut commands = CommandPages::new(self.store.clone(), stream, archived, to);
        while let Some(stored) = commands.next().await? {
            if until.is_some_and(|t| stored.envelope.timestamp > t) {
                break;
            }
            let name = &*stored.envelope.name;
            if name == DELETE_STREAM {
                // Deleted while this replay was reading.
                return Ok(Replayed {
                    last: stored.sequence,
                    state: vtable.map(|v| (v.default)()),
                    status: StreamStatus::Deleted,
                });
            }
            if !is_system_command(name) {
                self.replay_command(stream, &stored, &mut state, false)
                    .await?;
            }
            last = stored.sequence;
        }
        Ok(Replayed {
            last,
            state,
            status,
        })
    }

    /// Rebuilds the state of an entity with `#[applies]` methods by folding its recorded
    /// events (upcast to today's versions), read in pages: the handlers are not run, so a
    /// handler whose rules changed does not rewrite history.
    async fn fold_stream(
        &self,
        stream: &StreamId,
        archived: bool,
        vtable: StateVtable,
        appliers: &[ApplierRecord],
        to: Option<Sequence>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Replayed, Error> {
        let mut state = (vtable.default)();
        let to = match to {
            Some(to) => to,
            None => self.store.last_sequence(stream).await?,
        };
        let mut last = Sequence::ZERO;
        let mut events = EventPages::new(stream, archived);
        while let Some(event) = events.next_before(&*self.store, to).await? {
            if until.is_some_and(|t| event.envelope.timestamp > t) {
                break;
            }
            if is_erased(&event.envelope.name) {
                continue;
            }
            fold_event(appliers, state.as_mut(), &event)?;
            last = event.command_sequence;
        }
        // Up to a sequence, the state reflects every command to it (those that recorded no
        // event change nothing); up to a time, the last command whose events were folded.
        let last = if until.is_none() { to } else { last };
        Ok(Replayed {
            last,
            state: Some(state),
            status: StreamStatus::Live,
        })
    }

    /// Runs one stored command of a replay against `state`; returns the events it published
    /// if `keep_events` (`verify` compares them), none otherwise.
    async fn replay_command(
        &self,
        stream: &StreamId,
        stored: &StoredCommand,
        state: &mut Option<ErasedState>,
        keep_events: bool,
    ) -> Result<Vec<crate::base::message::NewEvent>, Error> {
        let record =
            command_record(&stored.envelope.name).ok_or_else(|| Error::UnknownMessage {
                name: stored.envelope.name.to_string(),
                at: Location::Stored {
                    stream: stream.clone(),
                    sequence: stored.sequence,
                },
            })?;
        let message = record.decode_stored(
            &stored.envelope.name,
            stored.envelope.version,
            &stored.payload,
            &|| Location::Stored {
                stream: stream.clone(),
                sequence: stored.sequence,
            },
        )?;
        let route = self
            .sagas
            .get(&(record.type_id)())
            .ok_or_else(|| Error::NoHandler {
                message: record.name.to_owned(),
            })?;
        let mut cx = SagaContext::new(&stored.envelope, true, self.streams.clone());
        if !keep_events {
            cx = cx.dropping_events();
        }
        (route.handle)(
            &*route.saga,
            state.as_deref_mut().map(|s| s as &mut (dyn Any + Send)),
            &*message,
            &mut cx,
        )
        .await?;
        take_problems(&mut cx.problems)?;
        Ok(cx.events)
    }

    /// Rebuilds entity `E`'s state from its command log, saves it as the stored state and
    /// returns it. Nothing is appended and no event is re-delivered. The log is read in pages
    /// of 1,000 commands, so a long stream replays in bounded memory.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] / [`Error::Decode`] for a stored command that no longer
    /// decodes (naming its stream and sequence), [`Error::Rejected`] if a handler now refuses a
    /// command it once accepted, [`Error::Store`] on store faults (a command missing from the
    /// log is [`StoreError::Gap`]).
    pub(crate) async fn replay<E: Entity>(&self, id: impl Into<EntityId>) -> Result<E, Error> {
        let stream = StreamId::of::<E>(id);
        let (last, state, status) = self.rebuild_entity::<E>(&stream, None).await?;
        if status != StreamStatus::Live {
            // A deleted stream keeps no state; an archived one is read, not cached.
            return Ok(state);
        }
        let bytes = StateVtable::entity::<E>()
            .encode_stored(&state)
            .map_err(|e| {
                e.into_error(E::NAME, || Location::Stored {
                    stream: stream.clone(),
                    sequence: last,
                })
            })?;
        let store = &self.store;
        let current = store.get_entity(&stream).await?.map(|(v, _)| v);
        if last > Sequence::ZERO && current.is_none_or(|v| v <= last) {
            match store
                .put_entity(&stream, current.unwrap_or(Sequence::ZERO), last, bytes)
                .await
            {
                // A concurrent command saved a newer state: keep it, it is just as exact.
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(state)
    }

    /// Entity `E`'s state after the command at a sequence, or at a point in time. Nothing is
    /// saved.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub(crate) async fn state_at<E: Entity>(
        &self,
        id: impl Into<EntityId>,
        at: impl Into<At>,
    ) -> Result<E, Error> {
        let stream = StreamId::of::<E>(id);
        Ok(self.rebuild_entity::<E>(&stream, Some(at.into())).await?.1)
    }

    async fn rebuild_entity<E: Entity>(
        &self,
        stream: &StreamId,
        at: Option<At>,
    ) -> Result<(Sequence, E, StreamStatus), Error> {
        let (to, until) = match at {
            None => (None, None),
            Some(At::Sequence(s)) => (Some(s), None),
            Some(At::Time(t)) => (None, Some(t)),
        };
        let replayed = self
            .replay_stream(stream, Some(StateVtable::entity::<E>()), to, until)
            .await?;
        let state = replayed
            .state
            .and_then(|s| (s as Box<dyn Any>).downcast::<E>().ok())
            .map(|s| *s)
            .unwrap_or_default();
        Ok((replayed.last, state, replayed.status))
    }

    /// Replays entity `E`'s command log and compares the result with what is stored: the
    /// events each command recorded, then the stored state. Catches handlers that are not
    /// deterministic and data changed outside the framework. Commands and events are read in
    /// pages, so a long stream is verified in bounded memory.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub(crate) async fn verify<E: Entity>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<Verification, Error> {
        let stream = StreamId::of::<E>(id);
        let vtable = StateVtable::entity::<E>();
        let (head, status) = self.stream_status(&stream).await?;
        if status == StreamStatus::Deleted {
            // Nothing left to compare: the history is erased and the state deleted.
            return Ok(Verification::NoStoredState { sequence: head });
        }
        let archived = status == StreamStatus::Archived;
        // Commands and events are both read in pages, side by side: a command's events follow
        // its predecessors' in the stream, so memory stays bounded however long the stream.
        let mut state = Some((vtable.default)());
        let mut last = Sequence::ZERO;
        let mut recorded = EventPages::new(&stream, archived);
        // Events recorded under a command that replay does not reach: reported only if every
        // replayed command matches (the first differing command is the more useful answer).
        let mut orphan: Option<Sequence> = None;
        // An entity with appliers is rebuilt from its events: after every command, folding
        // the recorded events must give the state re-running the commands gives.
        let appliers = Registry::global().appliers_of((vtable.type_id)());
        let mut folded = (!appliers.is_empty()).then(|| (vtable.default)());
        let mut commands = CommandPages::new(self.store.clone(), &stream, archived, None);
        while let Some(stored) = commands.next().await? {
            if is_system_command(&stored.envelope.name) {
                // A lifecycle marker: no handler ran, its events are sourceflow's own.
                while let Some(event) = recorded.next_before(&*self.store, stored.sequence).await? {
                    if event.command_sequence < stored.sequence {
                        orphan.get_or_insert(event.command_sequence);
                    }
                }
                last = stored.sequence;
                continue;
            }
            let emitted = self
                .replay_command(&stream, &stored, &mut state, true)
                .await?;
            let mut mine = Vec::new();
            while let Some(event) = recorded.next_before(&*self.store, stored.sequence).await? {
                if event.command_sequence < stored.sequence {
                    orphan.get_or_insert(event.command_sequence);
                } else {
                    mine.push(event);
                }
            }
            let mine: Vec<&RecordedEvent> = mine.iter().collect();
            if let Some(detail) = compare_events(&emitted, &mine) {
                return Ok(Verification::Differs {
                    sequence: stored.sequence,
                    detail,
                });
            }
            if let (Some(folded), Some(state)) = (folded.as_mut(), state.as_ref()) {
                for event in &mine {
                    fold_event(appliers, folded.as_mut(), event)?;
                }
                let json = |s: &ErasedState| (vtable.to_json)(s.as_ref()).ok();
                let (by_events, by_commands) = (json(folded), json(state));
                if by_events != by_commands {
                    return Ok(Verification::Differs {
                        sequence: stored.sequence,
                        detail: format!(
                            "folding the recorded events gives {}, re-running the commands \
                             gives {}",
                            by_events.unwrap_or_default(),
                            by_commands.unwrap_or_default()
                        ),
                    });
                }
            }
            last = stored.sequence;
        }
        if let Some(event) = recorded
            .next_before(&*self.store, Sequence(u64::MAX))
            .await?
        {
            orphan.get_or_insert(event.command_sequence);
        }
        if let Some(sequence) = orphan {
            return Ok(Verification::Differs {
                sequence,
                detail: "events recorded for a command that replay did not reach".to_owned(),
            });
        }
        let Some((version, bytes)) = self.store.get_entity(&stream).await? else {
            return Ok(Verification::NoStoredState { sequence: last });
        };
        if version != last {
            return Ok(Verification::Differs {
                sequence: version.min(last).next(),
                detail: format!(
                    "stored state reflects sequence {version}, the log ends at {}",
                    last
                ),
            });
        }
        // A state stored by another version of the entity type is a cache the next command
        // rewrites, not a fact: there is nothing to compare.
        let Ok(json) = vtable.stored_json(&bytes) else {
            return Ok(Verification::NoStoredState { sequence: last });
        };
        let stored: serde_json::Value =
            serde_json::from_slice(json).map_err(|source| Error::Decode {
                name: E::NAME.to_owned(),
                at: Location::Stored {
                    stream: stream.clone(),
                    sequence: version,
                },
                source,
            })?;
        let replayed_json = match &state {
            Some(state) => (vtable.to_json)(state.as_ref()).map_err(|source| Error::Decode {
                name: E::NAME.to_owned(),
                at: Location::Stored {
                    stream: stream.clone(),
                    sequence: version,
                },
                source,
            })?,
            None => serde_json::Value::Null,
        };
        if stored != replayed_json {
            return Ok(Verification::Differs {
                sequence: last,
                detail: format!("stored state {stored} but replay gives {replayed_json}"),
            });
        }
        Ok(Verification::Consistent { sequence: last })
    }
}

fn compare_events(
    emitted: &[crate::base::message::NewEvent],
    stored: &[&RecordedEvent],
) -> Option<String> {
    if emitted.len() != stored.len() {
        return Some(format!(
            "replay emits {} events, {} are recorded",
            emitted.len(),
            stored.len()
        ));
    }
    for (new, old) in emitted.iter().zip(stored) {
        // A recorded event is compared as today's type reads it: its name resolved through
        // aliases, its payload upcast to today's version.
        let recorded = TypeIndex::global().resolve(TypeKind::Event, &old.envelope.name);
        if recorded.map_or(&*old.envelope.name, |r| r.name) != new.envelope.name {
            return Some(format!(
                "replay emits {}, {} is recorded",
                new.envelope.name, old.envelope.name
            ));
        }
        let a: Option<serde_json::Value> = serde_json::from_slice(&new.payload).ok();
        let b: Option<serde_json::Value> = match recorded {
            Some(record) => old.upcast_as(record).ok(),
            None => serde_json::from_slice(&old.payload).ok(),
        };
        if a != b {
            return Some(format!(
                "replay emits {} {}, recorded {}",
                new.envelope.name,
                a.unwrap_or_default(),
                b.unwrap_or_default()
            ));
        }
    }
    None
}

/// Folds one recorded event into an entity's state with its applier (an event without one
/// leaves the state as it is).
fn fold_event(
    appliers: &[ApplierRecord],
    state: &mut (dyn Any + Send),
    event: &RecordedEvent,
) -> Result<(), Error> {
    let Some(record) = TypeIndex::global().resolve(TypeKind::Event, &event.envelope.name) else {
        return Err(Error::UnknownMessage {
            name: event.envelope.name.to_string(),
            at: event.location(),
        });
    };
    let Some(applier) = appliers.iter().find(|a| (a.event)() == (record.type_id)()) else {
        return Ok(());
    };
    let message = event.decode_as(record)?;
    (applier.apply)(state, &*message, &event.meta())
}
