//! The read side's operations: projecting after a commit, catching up, rebuilding a view,
//! applying events from another store, and subscribing to the log.

use std::any::TypeId;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tracing::{debug_span, error, Instrument};

use super::subscriber::{Cursor, Progress, Subscriber, BATCH};
use super::ReadSide;
use crate::base::error::Error;
use crate::base::lifecycle::is_erased;
use crate::base::message::{CommandReceipt, Position, RecordedEvent};
use crate::codec::ErasedMessage;
use crate::store::Store;

impl ReadSide {
    /// Delivers a command's events to the in-process views and aggregates before `send`
    /// returns. A failing view is logged and left for the next catch-up: the command itself is
    /// committed and its receipt stands.
    pub(crate) async fn project_committed(
        &self,
        receipt: &CommandReceipt,
        decoded: Vec<ErasedMessage>,
    ) {
        let Some(target) = receipt.events.last().map(|e| e.position) else {
            return;
        };
        let fresh: smallvec::SmallVec<[(&RecordedEvent, Option<&ErasedMessage>); 4]> = receipt
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (e, decoded.get(i)))
            .collect();
        let mut any_background = false;
        let mut pending: smallvec::SmallVec<[&Subscriber; 4]> = smallvec::SmallVec::new();
        for subscriber in &self.subscribers {
            if subscriber.background {
                any_background = true;
            } else if !subscriber.has_passed(target) {
                // (One that has passed was applied inline, with the commit.)
                pending.push(subscriber);
            }
        }
        // Each view and aggregate commits its own batch and position: side by side, so that
        // a store grouping concurrent writes commits them together (one transaction for all
        // of them instead of one after another).
        match pending.as_slice() {
            [] => {}
            [one] => self.project_one(one, target, &fresh).await,
            [first, second] => {
                futures_util::future::join(
                    self.project_one(first, target, &fresh),
                    self.project_one(second, target, &fresh),
                )
                .await;
            }
            many => {
                futures_util::future::join_all(
                    many.iter()
                        .map(|subscriber| self.project_one(subscriber, target, &fresh)),
                )
                .await;
            }
        }
        if any_background {
            self.background.notify_one();
        }
    }

    /// Delivers a command's events to one view or aggregate; a failure is logged and left
    /// for the next catch-up.
    async fn project_one(
        &self,
        subscriber: &Subscriber,
        target: Position,
        fresh: &[(&RecordedEvent, Option<&ErasedMessage>)],
    ) {
        let span = debug_span!("sourceflow.project", handler = subscriber.name);
        let mut ignore = |_| {};
        let projecting = subscriber.project(self, Some(target), fresh, false, &mut ignore);
        let projected = if span.is_disabled() {
            projecting.await
        } else {
            projecting.instrument(span).await
        };
        if let Err(e) = projected {
            error!(handler = subscriber.name, error = %e, "projection failed; catch_up will retry");
            metrics::counter!("sourceflow.projection.failed").increment(1);
        }
    }

    /// Applies events recorded in another store, exactly once per view and aggregate;
    /// returns the number of (subscriber, event) applications.
    pub(crate) async fn apply_remote(&self, events: &[RecordedEvent]) -> Result<u64, Error> {
        let mut applied = 0;
        for subscriber in &self.subscribers {
            applied += subscriber.project_remote(self, events).await?;
        }
        Ok(applied)
    }

    /// Brings every view and aggregate up to the log's head; returns the first failure.
    pub(crate) async fn catch_up(&self) -> Result<(), Error> {
        let mut first_error = None;
        for subscriber in &self.subscribers {
            if let Err(e) = subscriber.project(self, None, &[], true, &mut |_| {}).await {
                error!(handler = subscriber.name, error = %e, "catch-up failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Clears view `V`'s models and position and re-projects the whole log into it.
    pub(crate) async fn rebuild_with<V: 'static>(
        &self,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<u64, Error> {
        let Some(subscriber) = self
            .subscribers
            .iter()
            .find(|s| s.type_id == TypeId::of::<V>())
        else {
            return Err(Error::Config(vec![format!(
                "{} is not a view of this flow",
                std::any::type_name::<V>()
            )]));
        };
        self.rebuild_subscriber(subscriber, progress).await
    }

    /// The views whose stored models were built by another version of their projection
    /// (`#[view(version = N)]`), with that version. A view that never stored anything takes
    /// today's version on the spot.
    pub(crate) async fn stale_views(&self) -> Result<Vec<(&Subscriber, u32)>, Error> {
        let mut stale = Vec::new();
        for subscriber in self.subscribers.iter().filter(|s| s.model.is_some()) {
            let key = version_key(subscriber.name);
            let stored = match self.store.get_position(&key).await?.0 {
                0 if self.store.get_position(subscriber.name).await? == Position::START => {
                    if subscriber.version != 1 {
                        self.store
                            .set_position(&key, Position(subscriber.version.into()))
                            .await?;
                    }
                    continue;
                }
                // Built before view versions existed: version 1.
                0 => 1,
                n => u32::try_from(n).unwrap_or(u32::MAX),
            };
            if stored != subscriber.version {
                stale.push((&**subscriber, stored));
            }
        }
        Ok(stale)
    }

    /// Clears a view's models and position, re-projects the whole log into it and records
    /// the view's version with its models.
    pub(crate) async fn rebuild_subscriber(
        &self,
        subscriber: &Subscriber,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<u64, Error> {
        let models: Vec<&str> = subscriber.model.iter().map(|m| m.name).collect();
        {
            let mut guard = subscriber.state.lock().await;
            guard.forget();
            self.store
                .reset_projection(subscriber.name, &models)
                .await?;
            guard.set_cursor(Cursor::at(Position::START));
        }
        let applied = subscriber
            .project(self, None, &[], true, &mut progress)
            .await?;
        if subscriber.model.is_some() {
            self.store
                .set_position(
                    &version_key(subscriber.name),
                    Position(subscriber.version.into()),
                )
                .await?;
        }
        Ok(applied)
    }

    /// Every recorded event after `from`, in global order, then new commits as they happen:
    /// this process's at once, other processes' by polling, every [`QUICK_POLL`] after a read
    /// that found events, doubling with each empty read up to [`QUIET_POLL`]. So while other
    /// processes keep committing their events arrive within milliseconds (a view fed from
    /// another process's log does not fall a whole interval behind after each burst), and a
    /// quiet log costs a read per [`QUIET_POLL`].
    pub(crate) fn subscribe(
        self: Arc<Self>,
        from: Position,
    ) -> impl Stream<Item = Result<RecordedEvent, Error>> {
        let store = self.store.clone();
        self.subscribe_to(store, from)
    }

    /// [`subscribe`](Self::subscribe), reading the log from `store` (the store as stored, for
    /// a transport that forwards the log with personal fields sealed).
    pub(crate) fn subscribe_to(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        from: Position,
    ) -> impl Stream<Item = Result<RecordedEvent, Error>> {
        struct State {
            store: Arc<dyn Store>,
            position: Position,
            buffer: std::collections::VecDeque<RecordedEvent>,
            head: tokio::sync::watch::Receiver<Position>,
            /// How long the next empty read waits before reading again.
            poll: Duration,
        }
        let state = State {
            head: self.signals.head.subscribe(),
            store,
            position: from,
            buffer: Default::default(),
            poll: QUICK_POLL,
        };
        futures_util::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(event) = state.buffer.pop_front() {
                    // (Past any erased events read with it: never back.)
                    state.position = state.position.max(event.position);
                    return Some((Ok(event), state));
                }
                match state.store.read_all(state.position, BATCH).await {
                    Ok(events) if !events.is_empty() => {
                        // Erased events carry nothing: step past them without waiting.
                        if let Some(last) = events.last() {
                            state.position = last.position;
                        }
                        state
                            .buffer
                            .extend(events.into_iter().filter(|e| !is_erased(&e.envelope.name)));
                        state.poll = QUICK_POLL;
                    }
                    Ok(_) => {
                        // Wake on a local commit, or poll for other processes' commits: soon
                        // after the log last grew, less often the longer it stays quiet.
                        state.head.mark_unchanged();
                        let _ = tokio::time::timeout(state.poll, state.head.changed()).await;
                        state.poll = (state.poll * 2).min(QUIET_POLL);
                    }
                    Err(e) => return Some((Err(e.into()), state)),
                }
            }
        })
    }

    /// Projects the background views up to the head.
    pub(crate) async fn project_background(&self) {
        for subscriber in self.subscribers.iter().filter(|s| s.background) {
            if let Err(e) = subscriber
                .project(self, None, &[], false, &mut |_| {})
                .await
            {
                error!(handler = subscriber.name, error = %e, "background projection failed");
            }
        }
    }

    /// True if some view projects in the background.
    pub(crate) fn has_background(&self) -> bool {
        self.subscribers.iter().any(|s| s.background)
    }
}

/// How soon a subscription reads again after a read that found events and one that found
/// none (see [`ReadSide::subscribe`]).
const QUICK_POLL: Duration = Duration::from_millis(4);
/// How often a subscription reads a log that stays quiet.
const QUIET_POLL: Duration = Duration::from_millis(200);

/// The key under which a view's version is kept beside the positions: the view's name with
/// `#version` appended (a name no view or aggregate can take, as `#` never appears in one
/// derived from a Rust type).
pub(crate) fn version_key(view: &str) -> String {
    format!("{view}#version")
}
