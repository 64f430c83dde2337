//! Personal fields at rest: the store the runtime talks to seals every personal field on its
//! way in and opens it on its way out.
//!
//! [`SealedStore`] wraps the application's store. Every write (units of work, entity states, view
//! models, outbox entries, schedules, direct appends) has its plaintext personal fields sealed
//! with their subject's key before the store sees it; every read (commands, events, entity
//! states, models, outbox entries, schedules, receipts) has them opened, or redacted when the
//! subject was forgotten. So the database, its backups and anything that reads it without the
//! keys hold ciphertext only, while handlers, views, `subscribe` and tooling see plaintext. A
//! payload without personal fields costs one substring search per write and read.
//!
//! Keys come from the store's own key table ([`Store::keys`]) or an external [`KeyStore`], and
//! are kept in a small cache for a short time ([`KeyCache`]): another process sharing the store
//! stops reading a subject it forgot within that time. A subject's first key, made while
//! sealing a unit of work, travels in the unit ([`UnitOfWork::keys`]) when the key table is the
//! store's own ([`KeyStore::in_units`]), and is only cached once read back after the commit;
//! until then concurrent units of this process take it from the pending keys, so they carry the
//! same key. Writes outside a unit of work, and external key stores, store a fresh key first
//! ([`KeyStore::key_or_insert`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldhash::HashMap;
use uuid::Uuid;

use super::group::{GroupCommit, GroupOutcome, UnitGroup};
use super::keys::{KeyState, KeyStore, SubjectKey};
use super::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleRecord, ScheduleStore,
};
use super::unit::NewKey;
use super::{
    EntityWithModels, InlineProjection, ModelWrite, Page, PendingCommand, ProjectionCommit, Store,
    StoreAdmin, StoreError, StoreInspect, UnitOfWork,
};
use crate::base::message::{
    CommandReceipt, EntityId, NewEvent, Position, RecordedEvent, Sequence, StoredCommand, StreamId,
};
use crate::codec::personal::{self, has_personal, PersonalError};

/// Subject keys recently read, each for a bounded time.
struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (KeyState, Instant)>>,
}

impl KeyCache {
    /// Subjects kept; past this the cache starts over (reading is always correct).
    const CAPACITY: usize = 100_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (KeyState, Instant)>> {
        // Entries are replaced whole: a panic elsewhere leaves the map valid.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state of `subject`, if it is fresh (a forgotten subject stays forgotten).
    fn get(&self, subject: &str) -> Option<KeyState> {
        let entries = self.lock();
        let (state, at) = entries.get(subject)?;
        (*state == KeyState::Forgotten || at.elapsed() < self.ttl).then(|| state.clone())
    }

    /// Caches `state`, unless the subject is cached as forgotten: a key read from the key store
    /// just before a `forget` of this process, and cached just after it, must not bring the
    /// subject back.
    fn put(&self, subject: &str, state: KeyState) {
        if self.ttl.is_zero() || state == KeyState::Unknown {
            return;
        }
        let mut entries = self.lock();
        if let Some((KeyState::Forgotten, _)) = entries.get(subject) {
            return;
        }
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(subject.to_owned(), (state, Instant::now()));
    }
}

/// A store with [`Personal`](crate::personal::Personal) fields sealed at rest: what a flow
/// uses (see the module docs), and what tooling that reads or writes a store without a flow
/// (an export, an import) wraps the store in, to see and write what handlers see.
///
/// ```
/// # use std::sync::Arc;
/// use sourceflow::personal::SealedStore;
/// use sourceflow::store::Store;
/// let store: Arc<dyn Store> = Arc::new(SealedStore::new(Arc::new(sourceflow::MemoryStore::new())));
/// ```
pub struct SealedStore {
    inner: Arc<dyn Store>,
    external: Option<Arc<dyn KeyStore>>,
    cache: KeyCache,
    /// Keys made for units of work not committed yet, so that this process's concurrent first
    /// uses of a subject carry the same key.
    pending: Mutex<HashMap<String, SubjectKey>>,
}

/// What [`SealedStore::keys_for`] does for a subject without a key.
enum Create<'a> {
    /// Nothing: the subject stays [`KeyState::Unknown`] (reading).
    No,
    /// Stores a fresh key now, before the write ([`KeyStore::key_or_insert`]).
    Now,
    /// Makes a fresh key for the unit of work to carry ([`UnitOfWork::keys`]).
    InUnit(&'a mut Vec<NewKey>),
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store is what users look for in a flow's debug output.
        self.inner.fmt(f)
    }
}

/// The error for a personal field that cannot be sealed.
fn unsealable(e: PersonalError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl SealedStore {
    /// `inner` with personal fields sealed with keys from its own key table
    /// ([`Store::keys`]), each key cached for 5 s.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self::configured(inner, None, Duration::from_secs(5))
    }

    /// `inner` with personal fields sealed with keys from `external`, or from `inner`'s own key
    /// table without one; keys are cached for `ttl`.
    pub fn configured(
        inner: Arc<dyn Store>,
        external: Option<Arc<dyn KeyStore>>,
        ttl: Duration,
    ) -> Self {
        Self {
            inner,
            external,
            cache: KeyCache {
                ttl,
                entries: Mutex::new(HashMap::default()),
            },
            pending: Mutex::new(HashMap::default()),
        }
    }

    /// The wrapped store: payloads as stored, personal fields sealed.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn key_store(&self) -> Option<&dyn KeyStore> {
        match &self.external {
            Some(keys) => Some(keys.as_ref()),
            None => self.inner.keys(),
        }
    }

    /// Forgets `subject` for good: its key is deleted, and this process reads its fields as
    /// redacted from now on.
    ///
    /// # Errors
    /// The key store's, or [`StoreError::Unsupported`] without one.
    pub async fn forget(&self, subject: &str) -> Result<(), StoreError> {
        let keys = self.key_store().ok_or(StoreError::Unsupported(
            "forget (this store keeps no subject keys)",
        ))?;
        keys.forget(subject).await?;
        self.cache.put(subject, KeyState::Forgotten);
        Ok(())
    }

    /// The keys of `subjects`: from the cache, else from the key store; a subject without a key
    /// gets one as `create` says.
    async fn keys_for(
        &self,
        subjects: Vec<String>,
        mut create: Create<'_>,
    ) -> Result<HashMap<String, KeyState>, StoreError> {
        let mut found = HashMap::default();
        let mut missing = Vec::new();
        for subject in subjects {
            match self.cache.get(&subject) {
                Some(state) => {
                    found.insert(subject, state);
                }
                None => missing.push(subject),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let Some(keys) = self.key_store() else {
            if !matches!(create, Create::No) {
                return Err(StoreError::Unsupported(
                    "personal fields (this store keeps no subject keys: give the builder a key store)",
                ));
            }
            found.extend(missing.into_iter().map(|s| (s, KeyState::Unknown)));
            return Ok(found);
        };
        let states = keys.keys(&missing).await?;
        for (subject, mut state) in missing.into_iter().zip(states) {
            if state == KeyState::Unknown {
                match &mut create {
                    Create::No => {}
                    Create::Now => {
                        state = keys.key_or_insert(&subject, SubjectKey::generate()).await?;
                    }
                    Create::InUnit(made) => {
                        let key = self
                            .lock_pending()
                            .entry(subject.clone())
                            .or_insert_with(SubjectKey::generate)
                            .clone();
                        made.push(NewKey {
                            subject: subject.clone(),
                            key: key.clone(),
                        });
                        // Not cached: the key is the subject's only once the unit commits.
                        found.insert(subject, KeyState::Active(key));
                        continue;
                    }
                }
            }
            self.cache.put(&subject, state.clone());
            found.insert(subject, state);
        }
        Ok(found)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubjectKey>> {
        // Entries are replaced whole: a panic elsewhere leaves the map valid.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits a sealed `unit` with `commit`; whatever the outcome, the keys it carried are no
    /// longer pending.
    async fn commit_carrying_keys<T, F>(
        &self,
        unit: UnitOfWork,
        commit: impl FnOnce(UnitOfWork) -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let made = unit.keys.clone();
        let committed = commit(unit).await;
        self.settle_keys(&made);
        committed
    }

    /// After the unit that carried `made` committed or failed: its keys are no longer pending.
    /// (Committed, the next use reads the key from the key table; failed because another key
    /// won, the next use finds that one.)
    fn settle_keys(&self, made: &[NewKey]) {
        if made.is_empty() {
            return;
        }
        let mut pending = self.lock_pending();
        for new in made {
            if pending.get(&new.subject) == Some(&new.key) {
                pending.remove(&new.subject);
            }
        }
    }

    /// Whether new keys travel in units of work: the store's own key table commits them there.
    fn keys_in_units(&self) -> bool {
        self.external.is_none() && self.inner.keys().is_some_and(|keys| keys.in_units())
    }

    /// Seals the plaintext personal fields of `payloads` in place (a payload without personal
    /// fields costs one substring search); a subject without a key gets one as `create` says.
    async fn seal<'p>(
        &self,
        payloads: impl IntoIterator<Item = &'p mut Vec<u8>>,
        create: Create<'_>,
    ) -> Result<(), StoreError> {
        let payloads: Vec<&mut Vec<u8>> =
            payloads.into_iter().filter(|p| has_personal(p)).collect();
        let mut subjects = Vec::new();
        for payload in &payloads {
            personal::plain_subjects(payload, &mut subjects).map_err(unsealable)?;
        }
        if subjects.is_empty() {
            return Ok(());
        }
        let keys = self.keys_for(subjects, create).await?;
        for payload in payloads {
            if let Some(sealed) = personal::seal(payload, &|s| keys.get(s)).map_err(unsealable)? {
                *payload = sealed;
            }
        }
        Ok(())
    }

    /// Opens (or redacts) the sealed personal fields of `payloads` in place: with the cached
    /// keys first, then, for the subjects the cache did not have, with keys from the key store.
    async fn open<'p>(
        &self,
        payloads: impl IntoIterator<Item = &'p mut Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut missing: Vec<String> = Vec::new();
        let mut waiting = Vec::new();
        // The first few keys this call has looked up: a page of a few subjects' records takes
        // the cache's lock once per subject.
        const SEEN: usize = 8;
        let mut seen: Vec<(String, KeyState)> = Vec::with_capacity(SEEN);
        for payload in payloads {
            let mut absent = false;
            personal::unseal(payload, &mut |subject| {
                if let Some((_, state)) = seen.iter().find(|(s, _)| s == subject) {
                    return Some(state.clone());
                }
                let cached = self.cache.get(subject);
                if let Some(state) = &cached {
                    if seen.len() < SEEN {
                        seen.push((subject.to_owned(), state.clone()));
                    }
                } else {
                    absent = true;
                    if !missing.iter().any(|s| s == subject) {
                        missing.push(subject.to_owned());
                    }
                }
                cached
            })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if absent {
                waiting.push(payload);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let keys = self.keys_for(missing, Create::No).await?;
        for payload in waiting {
            personal::unseal(payload, &mut |subject| keys.get(subject).cloned())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// Opens the payloads of `events`.
    async fn open_events(&self, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
        self.open(events.iter_mut().map(|e| &mut e.payload)).await
    }

    /// Seals a unit of work (and inline projections' models, and the schedules it adds), and
    /// returns the plaintext of its events that changed, to put back into the receipt. With
    /// `carry_keys` and a key table that commits keys with units, a subject's first key travels
    /// in [`UnitOfWork::keys`]; otherwise it is stored before.
    async fn seal_unit(
        &self,
        unit: &mut UnitOfWork,
        projections: &mut [InlineProjection],
        schedules: &mut [NewSchedule],
        carry_keys: bool,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if !carries_personal(unit, projections, schedules) {
            return Ok(Vec::new());
        }
        let plaintext = unit
            .events
            .iter()
            .map(|e| has_personal(&e.payload).then(|| e.payload.clone()))
            .collect();
        let mut made = Vec::new();
        let create = if carry_keys && self.keys_in_units() {
            Create::InUnit(&mut made)
        } else {
            Create::Now
        };
        let payloads = std::iter::once(&mut unit.command.payload)
            .chain(unit.entity.as_mut())
            .chain(unit.events.iter_mut().map(|e| &mut e.payload))
            .chain(unit.outbox.iter_mut().map(|o| &mut o.payload))
            .chain(
                projections
                    .iter_mut()
                    .flat_map(|p| &mut p.models)
                    .filter_map(|m| m.state.as_mut()),
            )
            .chain(schedules.iter_mut().map(|s| &mut s.command.payload));
        self.seal(payloads, create).await?;
        unit.keys.extend(made);
        Ok(plaintext)
    }

    /// The receipt of a unit sealed by [`seal_unit`](Self::seal_unit): its own events with
    /// their plaintext, or, for a duplicate, the stored events opened.
    async fn open_receipt(
        &self,
        mut receipt: CommandReceipt,
        plaintext: Vec<Option<Vec<u8>>>,
    ) -> Result<CommandReceipt, StoreError> {
        if receipt.duplicate {
            self.open_events(&mut receipt.events).await?;
        } else {
            for (event, plain) in receipt.events.iter_mut().zip(plaintext) {
                if let Some(plain) = plain {
                    event.payload = plain;
                }
            }
        }
        Ok(receipt)
    }

    async fn seal_schedules(&self, schedules: &mut [NewSchedule]) -> Result<(), StoreError> {
        self.seal(
            schedules.iter_mut().map(|s| &mut s.command.payload),
            Create::Now,
        )
        .await
    }

    async fn open_schedules(&self, records: &mut [ScheduleRecord]) -> Result<(), StoreError> {
        self.open(records.iter_mut().map(|r| &mut r.schedule.command.payload))
            .await
    }

    fn admin_of_inner(&self, operation: &'static str) -> Result<&dyn StoreAdmin, StoreError> {
        self.inner.admin().ok_or(StoreError::Unsupported(operation))
    }

    fn schedules_of_inner(&self) -> Result<&dyn ScheduleStore, StoreError> {
        self.inner
            .schedules()
            .ok_or(StoreError::Unsupported("schedules"))
    }
}

/// Whether a unit's command, entity state, events or follow-ups carry personal fields.
fn unit_has_personal(unit: &UnitOfWork) -> bool {
    has_personal(&unit.command.payload)
        || unit.entity.as_deref().is_some_and(has_personal)
        || unit.events.iter().any(|e| has_personal(&e.payload))
        || unit.outbox.iter().any(|o| has_personal(&o.payload))
}

fn model_has_personal(model: &ModelWrite) -> bool {
    model.state.as_deref().is_some_and(has_personal)
}

/// Whether anything a commit writes (the unit, its views' models, its schedules) carries a
/// personal field, and so needs sealing.
fn carries_personal(
    unit: &UnitOfWork,
    projections: &[InlineProjection],
    schedules: &[NewSchedule],
) -> bool {
    unit_has_personal(unit)
        || projections
            .iter()
            .flat_map(|p| &p.models)
            .any(model_has_personal)
        || schedules.iter().any(|s| has_personal(&s.command.payload))
}

impl SealedStore {
    /// A unit (with its inline projections) that has nothing to seal goes to the wrapped
    /// store as it is; only a duplicate's original events, read back, may need opening.
    async fn open_if_duplicate(
        &self,
        receipt: CommandReceipt,
    ) -> Result<CommandReceipt, StoreError> {
        if receipt.duplicate {
            Box::pin(self.open_receipt(receipt, Vec::new())).await
        } else {
            Ok(receipt)
        }
    }

    async fn commit_sealed(&self, mut unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        let plaintext = self.seal_unit(&mut unit, &mut [], &mut [], true).await?;
        let receipt = self
            .commit_carrying_keys(unit, |u| self.inner.commit(u))
            .await?;
        self.open_receipt(receipt, plaintext).await
    }

    async fn commit_inline_sealed(
        &self,
        mut unit: UnitOfWork,
        mut projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        let plaintext = self
            .seal_unit(&mut unit, &mut projections, &mut [], true)
            .await?;
        let (receipt, applied) = self
            .commit_carrying_keys(unit, |u| self.inner.commit_inline(u, projections))
            .await?;
        Ok((self.open_receipt(receipt, plaintext).await?, applied))
    }
}

/// The common case first: most units carry no personal field, and their commit should not
/// carry (or copy) the sealing path's state machine, which is boxed for the units that do.
#[async_trait]
impl Store for SealedStore {
    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        if carries_personal(&unit, &[], &[]) {
            return Box::pin(self.commit_sealed(unit)).await;
        }
        let receipt = self.inner.commit(unit).await?;
        self.open_if_duplicate(receipt).await
    }

    async fn commit_inline(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        if carries_personal(&unit, &projections, &[]) {
            return Box::pin(self.commit_inline_sealed(unit, projections)).await;
        }
        let (receipt, applied) = self.inner.commit_inline(unit, projections).await?;
        Ok((self.open_if_duplicate(receipt).await?, applied))
    }

    async fn load_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let mut commands = self.inner.load_commands(stream, from, to).await?;
        self.open(commands.iter_mut().map(|c| &mut c.payload))
            .await?;
        Ok(commands)
    }

    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError> {
        self.inner.last_sequence(stream).await
    }

    async fn find_receipt(
        &self,
        stream: &StreamId,
        message_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError> {
        let mut receipt = self.inner.find_receipt(stream, message_id).await?;
        if let Some(receipt) = &mut receipt {
            self.open_events(&mut receipt.events).await?;
        }
        Ok(receipt)
    }

    async fn get_entity(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        let mut entity = self.inner.get_entity(stream).await?;
        if let Some((_, state)) = &mut entity {
            self.open([state]).await?;
        }
        Ok(entity)
    }

    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        mut state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.seal([&mut state], Create::Now).await?;
        self.inner
            .put_entity(stream, expected, version, state)
            .await
    }

    async fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> Result<EntityWithModels, StoreError> {
        let (mut entity, mut found) = self.inner.get_entity_with_models(stream, models).await?;
        let states = entity.as_mut().map(|(_, state)| state);
        self.open(found.iter_mut().flatten().chain(states)).await?;
        Ok((entity, found))
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError> {
        let mut pending = self.inner.outbox_pending(limit).await?;
        self.open(pending.iter_mut().map(|p| &mut p.message.payload))
            .await?;
        Ok(pending)
    }

    async fn outbox_remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        self.inner.outbox_remove(ids).await
    }

    async fn read_stream_range(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_stream_range(stream, from, to).await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_all(after, limit).await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut model = self.inner.get_model(model_type, id).await?;
        if let Some(state) = &mut model {
            self.open([state]).await?;
        }
        Ok(model)
    }

    async fn list_models(
        &self,
        model_type: &str,
        page: Page,
    ) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError> {
        let mut models = self.inner.list_models(model_type, page).await?;
        self.open(models.iter_mut().map(|(_, m)| m)).await?;
        Ok(models)
    }

    async fn get_position(&self, handler: &str) -> Result<Position, StoreError> {
        self.inner.get_position(handler).await
    }

    async fn set_position(&self, handler: &str, position: Position) -> Result<(), StoreError> {
        self.inner.set_position(handler, position).await
    }

    async fn commit_projection(&self, mut commit: ProjectionCommit) -> Result<(), StoreError> {
        let models = commit.models.iter_mut().filter_map(|m| m.state.as_mut());
        self.seal(models, Create::Now).await?;
        self.seal(
            commit.outbox.iter_mut().map(|o| &mut o.payload),
            Create::Now,
        )
        .await?;
        self.inner.commit_projection(commit).await
    }

    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[&str],
    ) -> Result<(), StoreError> {
        self.inner.reset_projection(handler, model_types).await
    }

    async fn open_received(&self, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
        self.open_events(events).await
    }

    async fn delete_stream(&self, mut tombstone: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        let plaintext = self
            .seal_unit(&mut tombstone, &mut [], &mut [], false)
            .await?;
        let receipt = self.inner.delete_stream(tombstone).await?;
        self.open_receipt(receipt, plaintext).await
    }

    async fn archive_stream(&self, mut marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        let plaintext = self.seal_unit(&mut marker, &mut [], &mut [], false).await?;
        let receipt = self.inner.archive_stream(marker).await?;
        self.open_receipt(receipt, plaintext).await
    }

    async fn restore_stream(&self, mut marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        let plaintext = self.seal_unit(&mut marker, &mut [], &mut [], false).await?;
        let receipt = self.inner.restore_stream(marker).await?;
        self.open_receipt(receipt, plaintext).await
    }

    async fn load_archived_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        let mut commands = self.inner.load_archived_commands(stream, from, to).await?;
        self.open(commands.iter_mut().map(|c| &mut c.payload))
            .await?;
        Ok(commands)
    }

    async fn read_archived_events(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_archived_events(stream, from, to).await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }

    fn admin(&self) -> Option<&dyn StoreAdmin> {
        self.inner.admin().map(|_| self as &dyn StoreAdmin)
    }

    fn schedules(&self) -> Option<&dyn ScheduleStore> {
        self.inner.schedules().map(|_| self as &dyn ScheduleStore)
    }

    fn keys(&self) -> Option<&dyn KeyStore> {
        self.key_store()
    }

    fn leases(&self) -> Option<&dyn super::Leases> {
        self.inner.leases()
    }

    fn groups(&self) -> Option<&dyn GroupCommit> {
        self.inner.groups().map(|_| self as &dyn GroupCommit)
    }
}

/// A group without personal fields goes to the inner store as it is (a duplicate's stored
/// events are opened); one with personal fields commits unit by unit, each sealed and its
/// first keys carried as [`commit`](Store::commit) does, and its views project after the
/// commit.
#[async_trait]
impl GroupCommit for SealedStore {
    async fn commit_group(&self, group: UnitGroup<'_>) -> GroupOutcome {
        let personal = group.units.iter().any(|unit| unit_has_personal(unit))
            || group
                .projections
                .iter()
                .flat_map(|p| &p.models)
                .any(model_has_personal);
        let inner = match self.inner.groups() {
            Some(inner) if !personal => inner,
            _ => {
                let mut units = Vec::with_capacity(group.units.len());
                for unit in &group.units {
                    units.push(self.commit((*unit).clone()).await);
                }
                return GroupOutcome::unprojected(units, group.projections.len());
            }
        };
        let mut outcome = inner.commit_group(group).await;
        for unit in &mut outcome.units {
            if let Ok(receipt) = unit {
                if receipt.duplicate {
                    if let Err(e) = self.open_events(&mut receipt.events).await {
                        *unit = Err(e);
                    }
                }
            }
        }
        outcome
    }
}

#[async_trait]
impl StoreAdmin for SealedStore {
    async fn append_command(
        &self,
        expected: Sequence,
        mut command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        self.seal([&mut command.payload], Create::Now).await?;
        self.admin_of_inner("append_command")?
            .append_command(expected, command)
            .await
    }

    async fn append_events(
        &self,
        stream: &StreamId,
        expected: Sequence,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.seal(events.iter_mut().map(|e| &mut e.payload), Create::Now)
            .await?;
        let mut recorded = self
            .admin_of_inner("append_events")?
            .append_events(stream, expected, events)
            .await?;
        self.open_events(&mut recorded).await?;
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self
            .admin_of_inner("read_stream")?
            .read_stream(stream, from)
            .await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }

    async fn read_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self
            .admin_of_inner("read_between")?
            .read_between(from, to, after, limit)
            .await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }

    async fn delete_entity(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.admin_of_inner("delete_entity")?
            .delete_entity(stream)
            .await
    }

    async fn put_model(
        &self,
        model_type: &str,
        id: &EntityId,
        mut state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.seal([&mut state], Create::Now).await?;
        self.admin_of_inner("put_model")?
            .put_model(model_type, id, state)
            .await
    }

    async fn delete_model(&self, model_type: &str, id: &EntityId) -> Result<(), StoreError> {
        self.admin_of_inner("delete_model")?
            .delete_model(model_type, id)
            .await
    }

    async fn clear_models(&self, model_type: &str) -> Result<(), StoreError> {
        self.admin_of_inner("clear_models")?
            .clear_models(model_type)
            .await
    }

    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        self.admin_of_inner("entity_types")?.entity_types().await
    }

    async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, StoreError> {
        self.admin_of_inner("stream_ids")?
            .stream_ids(entity_type, page)
            .await
    }

    /// The inspector reads the store as stored: personal fields sealed.
    fn inspect(&self) -> Option<&dyn StoreInspect> {
        self.inner.admin().and_then(StoreAdmin::inspect)
    }
}

#[async_trait]
impl ScheduleStore for SealedStore {
    async fn commit_scheduled(
        &self,
        mut unit: UnitOfWork,
        mut changes: ScheduleChanges,
    ) -> Result<CommandReceipt, StoreError> {
        let plaintext = self
            .seal_unit(&mut unit, &mut [], &mut changes.add, true)
            .await?;
        let schedules = self.schedules_of_inner()?;
        let receipt = self
            .commit_carrying_keys(unit, |u| schedules.commit_scheduled(u, changes))
            .await?;
        self.open_receipt(receipt, plaintext).await
    }

    async fn add_schedules(&self, mut schedules: Vec<NewSchedule>) -> Result<(), StoreError> {
        self.seal_schedules(&mut schedules).await?;
        self.schedules_of_inner()?.add_schedules(schedules).await
    }

    async fn cancel_schedule(
        &self,
        id: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError> {
        self.schedules_of_inner()?.cancel_schedule(id, now).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut records = self
            .schedules_of_inner()?
            .claim_due(now, lease_until, limit)
            .await?;
        self.open_schedules(&mut records).await?;
        Ok(records)
    }

    async fn mark_fired(&self, ids: &[ScheduleId], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.schedules_of_inner()?.mark_fired(ids, now).await
    }

    async fn release_claims(
        &self,
        ids: &[ScheduleId],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.schedules_of_inner()?.release_claims(ids, at).await
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<ScheduleRecord>, StoreError> {
        let mut record = self.schedules_of_inner()?.get_schedule(id).await?;
        if let Some(record) = &mut record {
            self.open_schedules(std::slice::from_mut(record)).await?;
        }
        Ok(record)
    }

    async fn pending_schedules(
        &self,
        after: Option<(DateTime<Utc>, ScheduleId)>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut records = self
            .schedules_of_inner()?
            .pending_schedules(after, limit)
            .await?;
        self.open_schedules(&mut records).await?;
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key read before a `forget` and cached after it does not bring the subject back.
    #[test]
    fn a_forgotten_subject_stays_forgotten_in_the_cache() {
        let cache = KeyCache {
            ttl: Duration::from_secs(60),
            entries: Mutex::new(HashMap::default()),
        };
        let key = KeyState::Active(SubjectKey::generate());
        cache.put("cust-1", key.clone());
        assert_eq!(cache.get("cust-1"), Some(key.clone()));
        cache.put("cust-1", KeyState::Forgotten);
        cache.put("cust-1", key);
        assert_eq!(cache.get("cust-1"), Some(KeyState::Forgotten));
    }
}
