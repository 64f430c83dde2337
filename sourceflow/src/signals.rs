//! What the write side, the read side and the handle share while running: the counters behind
//! [`Stats`], the log head this process has seen, and whether the outbox has work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::base::message::Position;

/// Counters of what this handle has done since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands committed.
    pub committed: u64,
    /// Handler re-runs after a concurrency conflict.
    pub conflicts_retried: u64,
    /// Commands acknowledged as duplicates of an accepted message id.
    pub duplicates: u64,
    /// Commands refused by their handler or by validation.
    pub rejected: u64,
    /// Events applied by views and aggregates.
    pub events_projected: u64,
    /// View batches committed inline, in the same transaction as the command that emitted
    /// their events (the fast path); the others were projected after the commit.
    pub projected_inline: u64,
    /// View batches committed with a group of concurrent commands, in the group's transaction
    /// (one per view and group: the commands' and their views' writes durable together).
    pub projected_in_groups: u64,
    /// Stored entity states that could not be used (stored by another `#[entity(version)]`,
    /// or no longer decoding) and were rebuilt by replaying their stream.
    pub state_misses: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) committed: AtomicU64,
    pub(crate) conflicts_retried: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) events_projected: AtomicU64,
    pub(crate) projected_inline: AtomicU64,
    pub(crate) projected_in_groups: AtomicU64,
    pub(crate) state_misses: AtomicU64,
}

/// Shared by the write side (which moves the head and fills the outbox), the read side (whose
/// reactions fill the outbox) and the handle.
#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) counters: Counters,
    /// The highest global position this process has committed or seen.
    pub(crate) head: tokio::sync::watch::Sender<Position>,
    /// Set when follow-up commands may be waiting in the outbox.
    pub(crate) outbox_dirty: AtomicBool,
}

impl Signals {
    pub(crate) fn new(head: Position) -> Self {
        Self {
            counters: Counters::default(),
            head: tokio::sync::watch::Sender::new(head),
            outbox_dirty: AtomicBool::new(true),
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            committed: c.committed.load(Ordering::Relaxed),
            conflicts_retried: c.conflicts_retried.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            events_projected: c.events_projected.load(Ordering::Relaxed),
            projected_inline: c.projected_inline.load(Ordering::Relaxed),
            projected_in_groups: c.projected_in_groups.load(Ordering::Relaxed),
            state_misses: c.state_misses.load(Ordering::Relaxed),
        }
    }
}
