//! [`SourceFlow`]: the handle an application keeps, and its [`Builder`].
//!
//! The top layer: the only module that sees both the write side and the read side. It holds
//! them, wires the write side's [`Projector`](crate::write::Projector) requests to the read
//! side (`projector`), and checks the wiring at start (`builder`, `check`).

mod builder;
mod check;
mod follow;
mod personal;
mod projector;
mod schedule;

pub use builder::Builder;

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_core::Stream;

use crate::base::error::Error;
use crate::base::lifecycle::StreamStatus;
use crate::base::message::{
    Command, CommandReceipt, Entity, EntityId, Envelope, Position, RecordedEvent, StreamId,
    ViewModel,
};
use crate::codec::decode_model;
use crate::codec::personal::has_personal;
use crate::read::subscriber::Progress;
use crate::read::ReadSide;
use crate::signals::Stats;
use crate::store::{Page, SealedStore, Store, StoreAdmin};
use crate::write::bus::SendOptions;
use crate::write::lifecycle::Change;
use crate::write::{At, Verification, WriteSide};

pub(crate) struct FlowInner {
    pub(crate) write: WriteSide,
    pub(crate) read: Arc<ReadSide>,
    /// The store as the write and read sides see it: personal fields sealed at rest.
    pub(crate) sealed: Arc<SealedStore>,
}

/// The running application: send commands, read view models, replay and rebuild.
///
/// One concrete type, cheap to clone, `Send + Sync`: share it across tasks or keep it in a web
/// framework's state. Build it with [`SourceFlow::builder`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sourceflow::prelude::*;
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Command)]
/// struct Deposit { amount: i64 }
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// struct Deposited { amount: i64, balance: i64 }
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
/// struct Account { balance: i64 }
///
/// #[derive(Default)]
/// struct AccountSaga;
///
/// #[saga(entity = Account)]
/// impl AccountSaga {
///     #[handles]
///     async fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext)
///         -> Result<(), DomainError>
///     {
///         account.balance += cmd.amount;
///         cx.publish(Deposited { amount: cmd.amount, balance: account.balance });
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sourceflow::Error> {
/// let flow = SourceFlow::builder().store(MemoryStore::new()).build().await?;
/// let id = EntityId::from("acct-1");
/// let receipt = flow.send(&id, Deposit { amount: 100 }).await?;
/// assert_eq!(receipt.sequence, Sequence(1));
/// assert_eq!(flow.replay::<Account>(&id).await?.balance, 100);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SourceFlow {
    pub(crate) inner: Arc<FlowInner>,
}

impl std::fmt::Debug for SourceFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFlow")
            .field("store", &self.inner.write.store)
            .field("sagas", &self.inner.write.sagas.len())
            .field("subscribers", &self.inner.read.subscribers.len())
            .finish_non_exhaustive()
    }
}

impl SourceFlow {
    /// Starts configuring a flow.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The store behind this flow (for tooling: listings, exports, inspection), with
    /// [`Personal`](crate::personal::Personal) fields opened (see
    /// [`raw_store`](Self::raw_store) for the store as stored).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.write.store
    }

    /// What this handle has done so far.
    pub fn stats(&self) -> Stats {
        self.inner.write.signals.stats()
    }

    /// Sends a command to entity `id` and waits until it is committed and every in-process view
    /// and aggregate has applied its events (read your writes).
    ///
    /// # Errors
    /// - [`Error::Invalid`] if the command (or an event it emits) fails validation;
    /// - [`Error::Rejected`] if the handler refuses it;
    /// - [`Error::NoHandler`] if no saga handles it;
    /// - [`Error::Concurrency`] if other writers kept winning beyond the retry policy;
    /// - [`Error::Store`] if the store fails.
    ///
    /// In every error case nothing was stored.
    pub async fn send<C: Command>(
        &self,
        id: impl Into<EntityId>,
        command: C,
    ) -> Result<CommandReceipt, Error> {
        self.send_with(id, command, SendOptions::default()).await
    }

    /// [`send`](Self::send) with a caller-chosen message id (idempotency key) or correlation id.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_with<C: Command>(
        &self,
        id: impl Into<EntityId>,
        command: C,
        options: SendOptions,
    ) -> Result<CommandReceipt, Error> {
        let inner = &*self.inner;
        inner
            .write
            .send_with(&*inner.read, id.into(), command, options)
            .await
    }

    /// Runs a command that arrived as an envelope and JSON payload (from a remote transport)
    /// through the local pipeline. The message id is checked for duplicates: a resent command
    /// returns the original receipt without running the handler.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`Error::UnknownMessage`] / [`Error::Decode`] for a payload
    /// no registered command type matches.
    pub async fn dispatch_local(
        &self,
        envelope: Envelope,
        payload: Vec<u8>,
    ) -> Result<CommandReceipt, Error> {
        let inner = &*self.inner;
        inner
            .write
            .dispatch_local(&*inner.read, envelope, payload, true)
            .await
    }

    /// [`dispatch_local`](Self::dispatch_local) for the first delivery of a command whose
    /// sender marked it a [first send](crate::OutgoingCommand::first_send): no earlier attempt
    /// can have stored its message id, so the handler runs without a duplicate lookup first
    /// (one store read less per command). Should the id be stored after all, the commit still
    /// answers it with the original receipt. Use [`dispatch_local`](Self::dispatch_local) for a
    /// redelivery and for any retry.
    ///
    /// # Errors
    /// As [`dispatch_local`](Self::dispatch_local).
    pub async fn dispatch_first_delivery(
        &self,
        envelope: Envelope,
        payload: Vec<u8>,
    ) -> Result<CommandReceipt, Error> {
        let inner = &*self.inner;
        inner
            .write
            .dispatch_local(&*inner.read, envelope, payload, false)
            .await
    }

    /// Rebuilds entity `E`'s state from its command log, saves it as the stored state and
    /// returns it. Nothing is appended and no event is re-delivered. The log is read in pages
    /// of 1,000 commands, the next three read while the handlers run over one, so a long stream
    /// replays in bounded memory.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] / [`Error::Decode`] for a stored command that no longer
    /// decodes (naming its stream and sequence), [`Error::Rejected`] if a handler now refuses a
    /// command it once accepted, [`Error::Store`] on store faults (a command missing from the
    /// log is [`StoreError::Gap`](crate::store::StoreError::Gap)).
    pub async fn replay<E: Entity>(&self, id: impl Into<EntityId>) -> Result<E, Error> {
        self.inner.write.replay(id.into()).await
    }

    /// Entity `E`'s state after the command at a sequence, or at a point in time. Nothing is
    /// saved.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub async fn state_at<E: Entity>(
        &self,
        id: impl Into<EntityId>,
        at: impl Into<At>,
    ) -> Result<E, Error> {
        self.inner.write.state_at(id.into(), at.into()).await
    }

    /// Replays entity `E`'s command log and compares the result with what is stored: the
    /// events each command recorded, then the stored state. Catches handlers that are not
    /// deterministic and data changed outside the framework. Commands and events are read in
    /// pages, so a long stream is verified in bounded memory.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub async fn verify<E: Entity>(&self, id: impl Into<EntityId>) -> Result<Verification, Error> {
        self.inner.write.verify::<E>(id.into()).await
    }

    /// Deletes entity `E`'s stream `id`: records a tombstone (the command
    /// `sourceflow.DeleteStream` with the event [`StreamDeleted`](crate::StreamDeleted)) at its
    /// next sequence and, in the same transaction, erases every earlier command and event of the
    /// stream in place and deletes its entity state. Returns the tombstone's receipt (the
    /// original one, marked `duplicate`, if the stream was deleted already). A stream never
    /// written to can be deleted too: its id then takes no commands.
    ///
    /// After it returns: sends to the stream fail with [`Error::StreamDeleted`]; `replay`,
    /// `state_at` and `verify` find nothing to replay; the views and aggregates of this process
    /// have applied [`StreamDeleted`](crate::StreamDeleted) (a view drops its models of the
    /// stream by projecting on it; see [`lifecycle`](crate::lifecycle)); readers of the global
    /// log skip the erased events and carry on past them. Copies made elsewhere (backups, NATS
    /// streams, exports) are not touched.
    ///
    /// # Errors
    /// [`Error::Concurrency`] if, beyond the retry policy, another process's commands kept
    /// committing in the instant between the store reading the stream's head and writing the
    /// tombstone (the store places the tombstone after every command committed before it, so
    /// a busy stream does not hold a deletion off); [`Error::Store`] on store faults, with
    /// [`StoreError::Unsupported`](crate::store::StoreError::Unsupported) for a store that
    /// cannot delete streams.
    pub async fn delete_stream<E: Entity>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<CommandReceipt, Error> {
        let stream = StreamId::of::<E>(id);
        let inner = &*self.inner;
        let receipt = inner
            .write
            .change_stream(&*inner.read, stream.clone(), Change::Delete)
            .await?;
        receipt.ok_or(Error::StreamDeleted { stream })
    }

    /// Archives entity `E`'s stream `id`: records the command `sourceflow.ArchiveStream` with
    /// the event [`StreamArchived`](crate::StreamArchived) and, in the same transaction, moves
    /// the stream's earlier commands and events out of the hot tables into the archive and
    /// deletes its entity state. Returns the marker's receipt (the original one, marked
    /// `duplicate`, if the stream was archived already).
    ///
    /// `replay`, `state_at` and `verify` read an archived stream from the archive (`replay`
    /// does not store the state it computes). A send to it fails with
    /// [`Error::StreamArchived`]: [`restore_stream`](Self::restore_stream) first. Views keep
    /// their models unless they project on [`StreamArchived`](crate::StreamArchived);
    /// [`rebuild`](Self::rebuild) reads the hot log only, so a rebuilt view does not see an
    /// archived stream's events.
    ///
    /// # Errors
    /// [`Error::StreamDeleted`] for a deleted stream; otherwise as
    /// [`delete_stream`](Self::delete_stream).
    pub async fn archive_stream<E: Entity>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<CommandReceipt, Error> {
        let stream = StreamId::of::<E>(id);
        let inner = &*self.inner;
        let receipt = inner
            .write
            .change_stream(&*inner.read, stream.clone(), Change::Archive)
            .await?;
        receipt.ok_or(Error::StreamArchived { stream })
    }

    /// Moves entity `E`'s archived stream `id` back into the hot tables, at its own sequences
    /// and global positions, and records the command `sourceflow.RestoreStream`: the stream
    /// takes commands again. Returns the marker's receipt, or `None` if the stream was not
    /// archived (nothing to do). The events come back at their old positions, below the
    /// readers that have passed them: views are not sent them again.
    ///
    /// # Errors
    /// [`Error::StreamDeleted`] for a deleted stream; otherwise as
    /// [`delete_stream`](Self::delete_stream).
    pub async fn restore_stream<E: Entity>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<Option<CommandReceipt>, Error> {
        let stream = StreamId::of::<E>(id);
        let inner = &*self.inner;
        inner
            .write
            .change_stream(&*inner.read, stream, Change::Restore)
            .await
    }

    /// Whether entity `E`'s stream `id` is live, deleted or archived.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn stream_status<E: Entity>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<StreamStatus, Error> {
        let stream = StreamId::of::<E>(id);
        Ok(self.inner.write.stream_status(&stream).await?.1)
    }

    /// The view model `id` of type `M`, as its view last projected it.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults, [`Error::Decode`] if the stored model does not match `M`.
    pub async fn view_model<M: ViewModel>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<Option<M>, Error> {
        let id = id.into();
        let Some(bytes) = self.inner.read.store.get_model(M::NAME, &id).await? else {
            return Ok(None);
        };
        decode_model::<M>(&id, &bytes).map(Some)
    }

    /// A page of view models of type `M`, ordered by id.
    ///
    /// # Errors
    /// As [`view_model`](Self::view_model).
    pub async fn view_models<M: ViewModel>(&self, page: Page) -> Result<Vec<(EntityId, M)>, Error> {
        let rows = self.inner.read.store.list_models(M::NAME, page).await?;
        rows.into_iter()
            .map(|(id, bytes)| decode_model::<M>(&id, &bytes).map(|m| (id, m)))
            .collect()
    }

    /// Entity types that have at least one stream.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn entity_types(&self) -> Result<Vec<String>, Error> {
        Ok(self.inner.write.store.entity_types().await?)
    }

    /// A page of the stream ids of one entity type.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, Error> {
        Ok(self.inner.write.store.stream_ids(entity_type, page).await?)
    }

    /// Applies events recorded in another process's store (received over a transport such as
    /// `sourceflow-nats`) to this flow's views and aggregates, exactly once: each one skips the
    /// events at or below its stored position and commits its model writes (and its
    /// reactions' follow-up commands) with its new position, compare-and-set. `events` must
    /// be in global position order, as the other store recorded them; delivering a batch
    /// twice, or two processes delivering it at once, applies it once. Returns the number of
    /// (subscriber, event) applications.
    ///
    /// # Errors
    /// The first failure of a view or aggregate ([`Error::Decode`] for a payload that does not
    /// match its type, [`Error::Store`], or a handler's error); nothing of that subscriber's
    /// batch is committed, so delivering the batch again retries it.
    pub async fn apply_remote(&self, events: &[RecordedEvent]) -> Result<u64, Error> {
        // A transport carries the log as stored: open its personal fields first.
        let opened;
        let events = if events.iter().any(|e| has_personal(&e.payload)) {
            let mut copy = events.to_vec();
            self.inner.sealed.open_received(&mut copy).await?;
            opened = copy;
            &opened[..]
        } else {
            events
        };
        let applied = self.inner.read.apply_remote(events).await?;
        self.drain_outbox().await;
        Ok(applied)
    }

    /// Brings every view and aggregate up to the log's current head: finishes what a crash
    /// interrupted, applies what other processes committed, and waits for background views.
    ///
    /// # Errors
    /// The first failure of a projection ([`Error::Decode`], [`Error::Store`], or a handler's
    /// error); the other subscribers are still caught up.
    pub async fn catch_up(&self) -> Result<(), Error> {
        let caught_up = self.inner.read.catch_up().await;
        self.drain_outbox().await;
        caught_up
    }

    /// Clears view `V`'s models and position and re-projects the whole event log into it.
    ///
    /// # Errors
    /// [`Error::Config`] if `V` is not a view of this flow; projection errors as
    /// [`catch_up`](Self::catch_up).
    pub async fn rebuild<V: 'static>(&self) -> Result<u64, Error> {
        self.rebuild_with::<V>(|_| {}).await
    }

    /// [`rebuild`](Self::rebuild), reporting progress after every batch.
    ///
    /// # Errors
    /// As [`rebuild`](Self::rebuild).
    pub async fn rebuild_with<V: 'static>(
        &self,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<u64, Error> {
        self.inner.read.rebuild_with::<V>(progress).await
    }

    /// A stream of every recorded event after `from`, in global order: first what the log
    /// holds, then new commits as they happen (in this process immediately, from other
    /// processes by polling: within milliseconds while the log keeps growing, within 200 ms
    /// after it was quiet). It never skips an event and never ends on its own.
    /// Events erased by [`delete_stream`](Self::delete_stream) are left out (the stream goes on
    /// past them); the tombstone's [`StreamDeleted`](crate::StreamDeleted) is delivered.
    ///
    /// ```
    /// # use sourceflow::prelude::*;
    /// # async fn demo(flow: SourceFlow) -> Result<(), Error> {
    /// use futures_util::StreamExt;
    /// let mut events = std::pin::pin!(flow.subscribe(Position::START));
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{} {} at {}", event.position, event.envelope.name, event.envelope.stream);
    /// #   break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, from: Position) -> impl Stream<Item = Result<RecordedEvent, Error>> {
        self.inner.read.clone().subscribe(from)
    }

    /// Sends every command waiting in the outbox (left by a crash, or by another process).
    pub async fn drain_outbox(&self) {
        let inner = &*self.inner;
        inner.write.drain_outbox(&*inner.read).await;
    }

    /// Starts the task that projects background views, if there are any.
    pub(crate) fn start_background(&self) {
        if !self.inner.read.has_background() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<FlowInner> = Arc::downgrade(&self.inner);
        let wake = self.inner.read.background.clone();
        runtime.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                inner.read.project_background().await;
                inner.write.drain_outbox(&*inner.read).await;
                // Only the weak handle survives the wait, so dropping the flow ends the task.
                drop(inner);
                // Poll too, so commits of other processes are picked up.
                let _ = tokio::time::timeout(Duration::from_millis(250), wake.notified()).await;
            }
        });
    }
}
