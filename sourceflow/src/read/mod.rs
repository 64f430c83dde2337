//! The read side: delivering committed events to views and aggregates, exactly once and in
//! order, catching up, rebuilding and subscribing.
//!
//! - `subscriber`: one view or aggregate, its position and cached models, and how a batch of
//!   events is applied and committed with its new position;
//! - `api`: the operations the flow offers on top (project after a commit, catch up, rebuild,
//!   apply events from another store, subscribe).
//!
//! The read side knows nothing of sagas and commits: reactions' follow-up commands go to the
//! outbox with the projection's commit, and the write side sends them.

mod api;
mod schedule;
pub(crate) mod subscriber;

use std::sync::Arc;

use crate::context::saga::CommandStreams;
use crate::signals::Signals;
use crate::store::Store;
use subscriber::{Recent, Subscriber};

/// Everything the read side runs on.
pub(crate) struct ReadSide {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) subscribers: Vec<Arc<Subscriber>>,
    /// Where reactions' follow-up commands go (their target's stream type).
    pub(crate) streams: CommandStreams,
    pub(crate) signals: Arc<Signals>,
    /// Wakes the background projection task.
    pub(crate) background: Arc<tokio::sync::Notify>,
    /// The events this process committed last, decoded, by position: a projection that
    /// catches up with other commands of this process takes them from here instead of reading
    /// and decoding them back from the store.
    pub(crate) recent: Recent,
}

impl ReadSide {
    /// Drops every decoded event and model this process keeps (after a subject is forgotten,
    /// no plaintext copy may be used again): views read their models back from the store.
    pub(crate) async fn drop_caches(&self) {
        self.recent.clear();
        for subscriber in &self.subscribers {
            subscriber.state.lock().await.forget();
        }
    }
}
