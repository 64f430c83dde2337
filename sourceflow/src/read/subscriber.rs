//! Delivering committed events to views and aggregates, exactly once and in order.
//!
//! Each view and aggregate is a subscriber with a stored position in the global event log. A
//! batch of events is applied and its effects (view model writes, reaction commands) are
//! committed together with the new position, compare-and-set on the old one. So:
//! - an event is never applied twice: a second process that projected the same batch first makes
//!   this commit fail, and this process re-reads from the stored position;
//! - a crash between applying and committing loses the batch's effects and its position
//!   together, and the next catch-up applies it again from the stored position.

use foldhash::HashMap;
use std::any::TypeId;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ReadSide;
use crate::base::error::{take_problems, Error, Location};
use crate::base::message::{EventMeta, NewEvent, Position, RecordedEvent, Sequence, StreamId};
use crate::codec::{ErasedComponent, ErasedMessage, StateVtable, TypeIndex, TypeRecord};
use crate::context::reaction::ReactionContext;
use crate::context::view::{ModelCache, ViewContext};
use crate::routes::{ComponentKind, ComponentRecord, Registry, RouteFn, RouteRecord};
use crate::store::{GroupProjection, InlineProjection, ModelWrite, ProjectionCommit, StoreError};

/// Events read from the log per projection batch.
pub(crate) const BATCH: usize = 512;

/// A view or aggregate, with its routes indexed by event wire name.
pub(crate) struct Subscriber {
    pub(crate) name: &'static str,
    pub(crate) type_id: TypeId,
    instance: ErasedComponent,
    pub(crate) model: Option<StateVtable>,
    routes: HashMap<&'static str, (TypeRecord, Vec<RouteRecord>)>,
    pub(crate) background: bool,
    /// Views: the version of the projection (`#[view(version = N)]`).
    pub(crate) version: u32,
    /// Where this process is, and its cached models. The lock serialises this process's
    /// batches for the subscriber.
    pub(crate) state: tokio::sync::Mutex<SubscriberState>,
    /// The state's `passed`, shared.
    passed: Arc<AtomicU64>,
}

/// A subscriber's state in this process.
#[derive(Default)]
pub(crate) struct SubscriberState {
    /// Where this process is (`None`: read it from the store).
    cursor: Option<Cursor>,
    /// Decoded models as of `cursor` (views only).
    models: ModelCache,
    /// `cursor.applied`, readable without the lock ([`Subscriber::has_passed`]); 0 when
    /// unknown. Written only with the lock held.
    passed: Arc<AtomicU64>,
}

impl SubscriberState {
    /// Forgets everything: the next batch starts from the stored position.
    pub(crate) fn forget(&mut self) {
        self.cursor = None;
        self.models = ModelCache::default();
        self.passed.store(0, Ordering::Release);
    }

    /// Records where this process is.
    pub(crate) fn set_cursor(&mut self, cursor: Cursor) {
        self.cursor = Some(cursor);
        self.passed.store(cursor.applied.0, Ordering::Release);
    }
}

/// A view's inline projection of a unit of work, prepared before the commit
/// ([`Subscriber::prepare_inline`]) and settled after it ([`Prepared::settle`]).
pub(crate) struct Prepared<'a> {
    guard: tokio::sync::MutexGuard<'a, SubscriberState>,
    cx: ViewContext,
    /// Prepared for a group of units ([`Subscriber::prepare_group`]).
    grouped: bool,
}

/// Events a subscriber may pass over without recording its position, when none of them
/// concerns it.
const LAZY_SPAN: u64 = 1_000;

/// A subscriber's place in the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    /// The position committed in the store (the compare-and-set value).
    stored: Position,
    /// The last event passed in this process (`>= stored`; the gap holds only events that
    /// concern the subscriber not).
    applied: Position,
}

impl Cursor {
    pub(crate) fn at(position: Position) -> Self {
        Self {
            stored: position,
            applied: position,
        }
    }
}

/// The latest events committed by this process, decoded, keyed by position (bounded).
#[derive(Default)]
pub(crate) struct Recent {
    events: std::sync::Mutex<std::collections::BTreeMap<Position, (RecordedEvent, ErasedMessage)>>,
}

impl Recent {
    /// Events kept; older ones are read from the store when needed.
    const CAPACITY: usize = 4_096;

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::BTreeMap<Position, (RecordedEvent, ErasedMessage)>,
    > {
        // Entries are inserted and removed whole: a panic elsewhere leaves the map valid.
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every event kept.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Remembers a commit's events.
    pub(crate) fn record(&self, events: &[RecordedEvent], decoded: &[ErasedMessage]) {
        if events.len() != decoded.len() || events.is_empty() {
            return;
        }
        let mut recent = self.lock();
        for (event, message) in events.iter().zip(decoded) {
            recent.insert(event.position, (event.clone(), message.clone()));
        }
        while recent.len() > Self::CAPACITY {
            recent.pop_first();
        }
    }

    /// The events at `after + 1, after + 2, ...` up to `to`, as far as they are here without a
    /// gap (a gap is an event of another process, or one already dropped).
    fn after(&self, after: Position, to: Position) -> Vec<(RecordedEvent, ErasedMessage)> {
        let recent = self.lock();
        let first = after.0 + 1;
        (first..)
            .zip(recent.range(Position(first)..=to))
            .take_while(|(expected, (position, _))| position.0 == *expected)
            .take(BATCH)
            .map(|(_, (_, entry))| entry.clone())
            .collect()
    }
}

/// What became of a batch.
enum Batch {
    /// Applied (committed, or passed over lazily): this many events.
    Applied(u64),
    /// Another process had moved the position; the cursor now holds the stored one.
    Moved,
}

/// Progress of a long projection ([`SourceFlow::rebuild_with`](crate::SourceFlow::rebuild_with)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Position reached.
    pub position: Position,
    /// Position to reach.
    pub head: Position,
    /// Events applied so far in this run.
    pub applied: u64,
}

impl Subscriber {
    pub(crate) fn new(
        record: &ComponentRecord,
        instance: ErasedComponent,
        routes: &[RouteRecord],
        background: bool,
    ) -> Result<Self, String> {
        let registry = Registry::global();
        let mut by_name: HashMap<&'static str, (TypeRecord, Vec<RouteRecord>)> = HashMap::default();
        for route in routes {
            let Some(event) = registry.type_record((route.message)()) else {
                return Err(format!(
                    "event {} of {} is not registered",
                    (route.message_name)(),
                    record.name
                ));
            };
            // Rows stored under an alias or a renamed-from name reach the same routes.
            for name in TypeIndex::global().names_of((event.type_id)()) {
                by_name
                    .entry(name)
                    .or_insert_with(|| (*event, Vec::new()))
                    .1
                    .push(*route);
            }
        }
        let passed = Arc::new(AtomicU64::new(0));
        Ok(Self {
            name: record.name,
            type_id: (record.type_id)(),
            instance,
            model: record.state.filter(|_| record.kind == ComponentKind::View),
            routes: by_name,
            background,
            version: record.version,
            state: tokio::sync::Mutex::new(SubscriberState {
                passed: passed.clone(),
                ..SubscriberState::default()
            }),
            passed,
        })
    }

    /// Applies every event up to `target` (or the log's head when `None`), reusing the
    /// just-committed `fresh` events when they are the next ones, so the common path reads
    /// nothing back from the store.
    pub(crate) async fn project(
        &self,
        flow: &ReadSide,
        target: Option<Position>,
        fresh: &[(&RecordedEvent, Option<&ErasedMessage>)],
        persist: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<u64, Error> {
        // Uncontended (one sender at a time) the lock is taken without a waiting future.
        let mut guard = match self.state.try_lock() {
            Ok(guard) => guard,
            Err(_) => self.state.lock().await,
        };
        let mut cursor = self.cursor(flow, &mut guard).await?;
        let target = match target {
            // Whoever held the lock before may have applied these events already (it went as
            // far as it could): then there is nothing to wait for.
            Some(t) if cursor.applied >= t => {
                guard.set_cursor(cursor);
                return Ok(0);
            }
            // Everything this process has committed so far: commands that committed together
            // are projected together, in one batch.
            Some(t) => t.max(*flow.signals.head.borrow()),
            None => flow.store.head().await?,
        };
        let mut applied = 0u64;
        while cursor.applied < target {
            let position = cursor.applied;
            let from_fresh = fresh
                .iter()
                .position(|(e, _)| e.position > position)
                .filter(|&i| fresh[i].0.position.0 == position.0 + 1);
            let read;
            let recent;
            let collected: Vec<(&RecordedEvent, Option<&ErasedMessage>)>;
            let batch: &[(&RecordedEvent, Option<&ErasedMessage>)] = match from_fresh {
                Some(i) => &fresh[i..],
                None => {
                    recent = flow.recent.after(position, target);
                    collected = if recent.is_empty() {
                        read = flow.store.read_all(position, BATCH).await?;
                        read.iter().map(|e| (e, None)).collect()
                    } else {
                        recent.iter().map(|(e, m)| (e, Some(m))).collect()
                    };
                    &collected
                }
            };
            let Some(last) = batch.last().map(|(e, _)| e.position) else {
                break;
            };
            if let Batch::Applied(passed) = self
                .apply_batch(flow, &mut guard, &mut cursor, batch)
                .await?
            {
                applied += passed;
                progress(Progress {
                    position: last,
                    head: target,
                    applied,
                });
            }
        }
        if persist && cursor.applied > cursor.stored {
            let commit = ProjectionCommit {
                handler: Cow::Borrowed(self.name),
                expected: cursor.stored,
                position: cursor.applied,
                models: Vec::new(),
                outbox: Vec::new(),
            };
            match flow.store.commit_projection(commit).await {
                Ok(()) => cursor.stored = cursor.applied,
                Err(StoreError::PositionConflict { .. }) => {
                    guard.models = ModelCache::default();
                    cursor = Cursor::at(flow.store.get_position(self.name).await?);
                }
                Err(e) => {
                    guard.forget();
                    return Err(e.into());
                }
            }
        }
        guard.set_cursor(cursor);
        progress(Progress {
            position: cursor.applied,
            head: target,
            applied,
        });
        Ok(applied)
    }

    /// The model this view would most likely read for an event of `stream` and does not have
    /// cached: its model keyed by the stream's id, with the position the read would be valid
    /// at. Only for an in-process view whose position this process knows and that is not busy.
    pub(crate) fn model_to_prefetch(&self, stream: &StreamId) -> Option<(&'static str, Position)> {
        let vtable = self.model.as_ref()?;
        if self.background {
            return None;
        }
        let state = self.state.try_lock().ok()?;
        let cursor = state.cursor?;
        if state.models.contains(vtable.name, &stream.id) {
            return None;
        }
        Some((vtable.name, cursor.applied))
    }

    /// Caches model `id` read from the store for [`model_to_prefetch`](Self::model_to_prefetch)
    /// while the view was at `at`; dropped if the view has moved since (the model may have
    /// changed with it) or it does not decode.
    pub(crate) fn offer_model(
        &self,
        id: &crate::base::message::EntityId,
        at: Position,
        stored: Option<&[u8]>,
    ) {
        let Some(vtable) = self.model.as_ref() else {
            return;
        };
        let Ok(mut state) = self.state.try_lock() else {
            return;
        };
        if state.cursor.map(|c| c.applied) != Some(at) {
            return;
        }
        let model = match stored.map(vtable.decode) {
            None => None,
            Some(Ok(model)) => Some(model),
            Some(Err(_)) => return,
        };
        state.models.offer(vtable.name, id.clone(), model);
    }

    /// True if this process has applied every event up to `target` (known without waiting:
    /// a busy subscriber answers from where it was when it last moved, so a command whose
    /// events a group commit projected does not wait for the next group's commit).
    pub(crate) fn has_passed(&self, target: Position) -> bool {
        match self.state.try_lock() {
            Ok(state) => state.cursor.is_some_and(|c| c.applied >= target),
            Err(_) => self.passed.load(Ordering::Acquire) >= target.0,
        }
    }

    /// Where this process is: as it left it, or (when unknown) the stored position, with an
    /// empty model cache.
    async fn cursor(&self, flow: &ReadSide, state: &mut SubscriberState) -> Result<Cursor, Error> {
        if let Some(cursor) = state.cursor {
            return Ok(cursor);
        }
        state.forget();
        Ok(Cursor::at(flow.store.get_position(self.name).await?))
    }

    /// Applies one batch (non-empty, in position order, directly after `cursor.applied`) and
    /// commits its effects with the new position, compare-and-set on `cursor.stored`.
    async fn apply_batch(
        &self,
        flow: &ReadSide,
        state: &mut SubscriberState,
        cursor: &mut Cursor,
        batch: &[(&RecordedEvent, Option<&ErasedMessage>)],
    ) -> Result<Batch, Error> {
        let Some(last) = batch.last().map(|(e, _)| e.position) else {
            return Ok(Batch::Applied(0));
        };
        let mut cx = ViewContext::new(flow.store.clone(), std::mem::take(&mut state.models));
        let mut outbox = Vec::new();
        for (event, decoded) in batch {
            if let Err(e) = self
                .apply(flow, event, *decoded, &mut cx, &mut outbox)
                .await
            {
                state.forget();
                return Err(e);
            }
        }
        let models = cx.take_writes().inspect_err(|_| state.forget())?;
        let passed = batch.len() as u64;
        if models.is_empty() && outbox.is_empty() && last.0 - cursor.stored.0 < LAZY_SPAN {
            // Nothing this subscriber cares about: no effect to make exactly-once, so the
            // stored position may lag; re-reading these events after a crash changes
            // nothing. Saves a write per command for subscribers of other events.
            state.models = cx.into_cache(true);
            cursor.applied = last;
            return Ok(Batch::Applied(passed));
        }
        let commit = ProjectionCommit {
            handler: Cow::Borrowed(self.name),
            expected: cursor.stored,
            position: last,
            models,
            outbox,
        };
        let has_outbox = !commit.outbox.is_empty();
        match flow.store.commit_projection(commit).await {
            Ok(()) => {
                state.models = cx.into_cache(true);
                if has_outbox {
                    flow.signals.outbox_dirty.store(true, Ordering::Release);
                }
                flow.signals
                    .counters
                    .events_projected
                    .fetch_add(passed, Ordering::Relaxed);
                *cursor = Cursor::at(last);
                Ok(Batch::Applied(passed))
            }
            Err(StoreError::PositionConflict { .. }) => {
                // Another process applied these events first: continue from where it got,
                // with the models as it left them (the cache went with `cx`).
                drop(cx);
                *cursor = Cursor::at(flow.store.get_position(self.name).await?);
                Ok(Batch::Moved)
            }
            Err(e) => {
                state.forget();
                Err(e.into())
            }
        }
    }

    /// Applies events recorded in another store ([`SourceFlow::apply_remote`](crate::SourceFlow::apply_remote)): those past
    /// this subscriber's position, in one batch.
    pub(crate) async fn project_remote(
        &self,
        flow: &ReadSide,
        events: &[RecordedEvent],
    ) -> Result<u64, Error> {
        let mut guard = self.state.lock().await;
        let mut cursor = self.cursor(flow, &mut guard).await?;
        let mut applied = 0;
        loop {
            let batch: Vec<(&RecordedEvent, Option<&ErasedMessage>)> = events
                .iter()
                .filter(|e| e.position > cursor.applied)
                .map(|e| (e, None))
                .collect();
            if batch.is_empty() {
                break;
            }
            match self
                .apply_batch(flow, &mut guard, &mut cursor, &batch)
                .await?
            {
                Batch::Applied(passed) => {
                    applied += passed;
                    break;
                }
                Batch::Moved => {}
            }
        }
        guard.set_cursor(cursor);
        Ok(applied)
    }

    async fn apply(
        &self,
        flow: &ReadSide,
        event: &RecordedEvent,
        decoded: Option<&ErasedMessage>,
        cx: &mut ViewContext,
        outbox: &mut Vec<crate::store::OutboxMessage>,
    ) -> Result<(), Error> {
        let Some((record, routes)) = self.routes.get(&*event.envelope.name) else {
            return Ok(());
        };
        let owned;
        let message: &ErasedMessage = match decoded {
            Some(message) => message,
            None => {
                owned = record.decode_stored(
                    &event.envelope.name,
                    event.envelope.version,
                    &event.payload,
                    &|| Location::Stored {
                        stream: event.envelope.stream.clone(),
                        sequence: event.sequence,
                    },
                )?;
                &owned
            }
        };
        self.run_routes(flow, routes, event.meta(), message, cx, outbox)
            .await
    }

    /// Runs `routes` (this subscriber's routes for the event's type) for one decoded event.
    async fn run_routes(
        &self,
        flow: &ReadSide,
        routes: &[RouteRecord],
        meta: EventMeta,
        message: &ErasedMessage,
        cx: &mut ViewContext,
        outbox: &mut Vec<crate::store::OutboxMessage>,
    ) -> Result<(), Error> {
        let mut meta = Some(meta);
        for (i, route) in routes.iter().enumerate() {
            // The last route takes the metadata, the others a copy.
            let current = if i + 1 == routes.len() {
                meta.take()
            } else {
                meta.clone()
            };
            let Some(current) = current else {
                break;
            };
            match route.call {
                RouteFn::Project(project) => {
                    cx.set_meta(current.clone());
                    project(&*self.instance, &**message, &current, cx).await?;
                }
                RouteFn::React(react) => {
                    let mut rcx = ReactionContext::new(current, self.name, flow.streams.clone());
                    rcx.method = route.method;
                    react(&*self.instance, &**message, &mut rcx).await?;
                    take_problems(&mut rcx.problems)?;
                    super::schedule::store_reaction_schedules(flow, &mut rcx).await?;
                    outbox.append(&mut rcx.outbox);
                }
                RouteFn::Handle(_) => {}
            }
        }
        Ok(())
    }

    /// Whether this subscriber could apply `events` ahead of their commit at all: a view kept
    /// in this process's foreground that some of the events concern. Checked before its
    /// preparation is started, so that the others cost nothing.
    pub(crate) fn may_prepare(&self, events: &[NewEvent]) -> bool {
        self.model.is_some()
            && !self.background
            && events
                .iter()
                .any(|e| self.routes.contains_key(&*e.envelope.name))
    }

    /// Applies a unit of work's events to this view before the unit commits, so that its
    /// model writes commit in the same transaction ([`InlineProjection`]).
    ///
    /// Only for an in-process view that this process has been keeping up (its position and
    /// models known), that is not busy (no waiting: a busy view projects after the commit,
    /// together with whatever else committed meanwhile), and that some of the events concern.
    /// `first_sequence` is the stream sequence the first event will get; the store checks
    /// every assumption made here and writes nothing of the projection if one fails.
    pub(crate) async fn prepare_inline<'a>(
        &'a self,
        flow: &ReadSide,
        stream: &StreamId,
        first_sequence: Sequence,
        events: &[NewEvent],
        decoded: &[ErasedMessage],
    ) -> Option<(Prepared<'a>, InlineProjection)> {
        if !self.may_prepare(events) {
            return None;
        }
        let mut guard = self.state.try_lock().ok()?;
        let cursor = guard.cursor?;
        let unit = GroupMember {
            stream,
            first_sequence: Some(first_sequence),
            events,
            decoded,
        };
        let (cx, models) = self
            .apply_ahead(flow, &mut guard, cursor, std::slice::from_ref(&unit))
            .await?;
        let projection = InlineProjection {
            handler: Cow::Borrowed(self.name),
            expected: cursor.stored,
            after: cursor.applied,
            first_sequence,
            models,
        };
        let grouped = false;
        Some((Prepared { guard, cx, grouped }, projection))
    }

    /// Applies a group of units' events, in group order, to this view before the group
    /// commits, so that its model writes commit in the same transaction ([`GroupProjection`]).
    ///
    /// As [`prepare_inline`](Self::prepare_inline), for a group: the events are taken to land
    /// one after the other directly after the view's position. `None` when the view cannot
    /// take part (busy, not kept up with, a unit whose first sequence is unknown, an event it
    /// refuses, reaction commands): it then projects those events after the commit.
    pub(crate) async fn prepare_group<'a>(
        &'a self,
        flow: &ReadSide,
        units: &[GroupMember<'_>],
    ) -> Option<(Prepared<'a>, GroupProjection)> {
        if self.model.is_none() || self.background {
            return None;
        }
        let concerns = |unit: &GroupMember<'_>| {
            unit.events
                .iter()
                .any(|e| self.routes.contains_key(&*e.envelope.name))
        };
        if !units.iter().any(concerns) {
            return None;
        }
        // A busy view is waited for: what holds it is a projection after a commit (or a
        // lone command's inline one), short, and afterwards the view is where this group's
        // events will land. Passing over it would leave the group's events to be projected
        // after its commit, which keeps the view busy for the next group in turn.
        let mut guard = match self.state.try_lock() {
            Ok(guard) => guard,
            Err(_) => self.state.lock().await,
        };
        let cursor = guard.cursor?;
        let (cx, models) = self.apply_ahead(flow, &mut guard, cursor, units).await?;
        let projection = GroupProjection {
            handler: Cow::Borrowed(self.name),
            expected: cursor.stored,
            after: cursor.applied,
            models,
        };
        let grouped = true;
        Some((Prepared { guard, cx, grouped }, projection))
    }

    /// Applies `units`' events, in order, to this view's cached models as if they landed one
    /// after the other directly after `cursor`: the context holding the new models and their
    /// writes. `None` (the cache keeps only what was read unchanged) when the view cannot
    /// commit them ahead: a unit whose first sequence is unknown, an event it refuses, no
    /// write, or reaction commands.
    async fn apply_ahead(
        &self,
        flow: &ReadSide,
        guard: &mut SubscriberState,
        cursor: Cursor,
        units: &[GroupMember<'_>],
    ) -> Option<(ViewContext, Vec<ModelWrite>)> {
        let mut cx = ViewContext::new(flow.store.clone(), std::mem::take(&mut guard.models));
        let mut outbox = Vec::new();
        let mut position = cursor.applied.0;
        for unit in units {
            let first_sequence = match unit.first_sequence {
                Some(first) => first,
                None if unit.events.is_empty() => continue,
                None => {
                    guard.models = cx.into_cache(false);
                    return None;
                }
            };
            for (i, (event, message)) in unit.events.iter().zip(unit.decoded).enumerate() {
                position += 1;
                let envelope = &event.envelope;
                let Some((_, routes)) = self.routes.get(&*envelope.name) else {
                    continue;
                };
                let meta = EventMeta {
                    message_id: envelope.message_id,
                    name: envelope.name.clone(),
                    version: envelope.version,
                    stream: unit.stream.clone(),
                    sequence: Sequence(first_sequence.0 + i as u64),
                    position: Position(position),
                    correlation_id: envelope.correlation_id,
                    causation_id: envelope.causation_id,
                    timestamp: envelope.timestamp,
                };
                if self
                    .run_routes(flow, routes, meta, message, &mut cx, &mut outbox)
                    .await
                    .is_err()
                {
                    // The projection after the commit meets the same error and reports it.
                    guard.models = cx.into_cache(false);
                    return None;
                }
            }
        }
        match cx.take_writes() {
            Ok(models) if !models.is_empty() && outbox.is_empty() => Some((cx, models)),
            _ => {
                guard.models = cx.into_cache(false);
                None
            }
        }
    }
}

/// A unit of a group the views prepare a projection of ([`Subscriber::prepare_group`]).
pub(crate) struct GroupMember<'a> {
    pub(crate) stream: &'a StreamId,
    /// The stream sequence the unit's first event will get, when known.
    pub(crate) first_sequence: Option<Sequence>,
    pub(crate) events: &'a [NewEvent],
    pub(crate) decoded: &'a [ErasedMessage],
}

impl Prepared<'_> {
    /// Records the outcome of the commit: `applied` is the store's verdict on this projection
    /// (`false` also when the commit failed), `last` the unit's last event position.
    pub(crate) fn settle(self, flow: &ReadSide, applied: bool, last: Option<Position>) {
        let Prepared {
            mut guard,
            cx,
            grouped,
        } = self;
        guard.models = cx.into_cache(applied);
        if let (true, Some(last)) = (applied, last) {
            let passed = guard
                .cursor
                .map_or(0, |c| last.0.saturating_sub(c.applied.0));
            guard.set_cursor(Cursor::at(last));
            flow.signals
                .counters
                .events_projected
                .fetch_add(passed, Ordering::Relaxed);
            let counters = &flow.signals.counters;
            let counter = if grouped {
                &counters.projected_in_groups
            } else {
                &counters.projected_inline
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
