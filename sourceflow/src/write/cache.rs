//! The in-process entity cache: the state each stream had after this process's last commit.
//!
//! A hit saves the store read and the JSON decode on the hot path. It is never trusted blindly:
//! the commit still checks the expected sequence, so a state made stale by another process
//! shows up as a concurrency conflict, the entry is dropped and the handler re-runs on the
//! stored state.

use foldhash::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::base::message::{Sequence, StreamId};
use crate::codec::{ErasedState, StateVtable};

/// A cached entity: the command sequence its state reflects, the state, and the stream's last
/// event sequence when this process knows it (it predicts where the next events will land).
type Entry = (Sequence, ErasedState, Option<Sequence>);

/// An entry as the cache keeps it: the state is `None` while a command has it (taken, and not
/// yet put back), so the stream's key stays in place between the two.
type Slot = (Sequence, Option<ErasedState>, Option<Sequence>);

pub(crate) struct EntityCache {
    capacity: usize,
    entries: Mutex<HashMap<StreamId, Slot>>,
    /// Bumped by [`clear`](Self::clear): a state loaded before a clear is not put back.
    generation: AtomicU64,
}

impl EntityCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// The cache's generation: pass it to [`put`](Self::put) with a state loaded now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops every entry, and every state loaded before now that is still to be put back
    /// (after a subject is forgotten, no plaintext state may be used again).
    pub(crate) fn clear(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Slot>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the cached state of `stream` out of the cache, if any: the caller is this
    /// process's only user of the stream (see [`StreamLocks`]) and puts the state back after a
    /// commit. A command that fails leaves no entry, so the next one starts from the store
    /// and never from a state a failed handler half changed.
    pub(crate) fn take(&self, stream: &StreamId, vtable: &StateVtable) -> Option<Entry> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.lock();
        let (version, state, last_event) = entries.get_mut(stream)?;
        let state = state.take()?;
        if (vtable.type_id)() != state.as_ref().type_id() {
            return None;
        }
        Some((*version, state, *last_event))
    }

    pub(crate) fn put(
        &self,
        generation: u64,
        stream: &StreamId,
        version: Sequence,
        state: ErasedState,
        last_event: Option<Sequence>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if let Some(slot) = entries.get_mut(stream) {
            *slot = (version, Some(state), last_event);
            return;
        }
        if entries.len() >= self.capacity {
            // Crude but bounded: the cache only saves reads, starting over is always correct.
            entries.clear();
        }
        entries.insert(stream.clone(), (version, Some(state), last_event));
    }

    pub(crate) fn remove(&self, stream: &StreamId) {
        if self.capacity > 0 {
            self.lock().remove(stream);
        }
    }
}

/// Striped locks that serialise this process's commands per stream.
///
/// Two commands to one entity would otherwise both load the same version, and one would lose
/// the commit and run again; under load that wastes most of the work and can starve a writer.
/// Streams share a stripe by hash, so distinct streams rarely wait for each other.
pub(crate) struct StreamLocks {
    hasher: foldhash::fast::RandomState,
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl StreamLocks {
    const STRIPES: usize = 256;

    pub(crate) fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            stripes: (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    pub(crate) async fn lock(&self, stream: &StreamId) -> tokio::sync::MutexGuard<'_, ()> {
        let index = (self.hasher.hash_one(stream) % Self::STRIPES as u64) as usize;
        self.stripes[index].lock().await
    }
}
