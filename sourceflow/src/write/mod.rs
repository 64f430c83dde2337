//! The write side: a command's way from `send` to its commit.
//!
//! - [`bus`]: dispatchers (remote transports plug in here) and the retry policy;
//! - `command`: validation, the saga's handler on the entity's state, the atomic commit;
//! - `cache`: the entity states and per-stream turns this process keeps between commands;
//! - `group`: concurrent commands' units committed as one group, with the views' projection
//!   of the whole group, on a store that offers [`GroupCommit`](crate::store::GroupCommit);
//! - `replay`: re-running a stream's command log (`replay`, `state_at`, `verify`);
//! - `outbox`: follow-up commands sent after the commit that recorded them;
//! - `lifecycle`: deleting, archiving and restoring a stream.
//!
//! The write side knows nothing of views and aggregates. What it needs from them around a
//! commit (the inline fast path, prefetching their models, projecting after the commit) it
//! asks through [`Projector`], which the flow wires to the read side.

pub mod bus;
pub(crate) mod cache;
mod command;
mod group;
pub(crate) mod lifecycle;
mod outbox;
mod replay;
pub(crate) mod schedule;

use std::any::TypeId;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use foldhash::HashMap;

use crate::base::message::{CommandReceipt, NewEvent, Position, RecordedEvent, Sequence, StreamId};
use crate::codec::{ErasedComponent, ErasedMessage, StateVtable, TypeRecord};
use crate::context::saga::CommandStreams;
use crate::routes::HandleFn;
use crate::signals::Signals;
use crate::store::{GroupProjection, InlineProjection, Store};
use bus::{CommandDispatcher, RetryPolicy};
use cache::{EntityCache, StreamLocks};

pub use replay::{At, Verification};

/// A saga method that handles one command type, with everything needed to run it.
pub(crate) struct SagaRoute {
    pub(crate) saga: ErasedComponent,
    pub(crate) saga_name: &'static str,
    pub(crate) method: &'static str,
    pub(crate) handle: HandleFn,
    pub(crate) state: Option<StateVtable>,
    pub(crate) command: TypeRecord,
}

/// Everything the write side runs on.
pub(crate) struct WriteSide {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sagas: HashMap<TypeId, SagaRoute>,
    pub(crate) streams: CommandStreams,
    pub(crate) dispatchers: Vec<Arc<dyn CommandDispatcher>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) signals: Arc<Signals>,
    pub(crate) drain_lock: tokio::sync::Mutex<()>,
    pub(crate) drain_outbox: bool,
    pub(crate) entities: EntityCache,
    pub(crate) stream_locks: StreamLocks,
    /// Commands of this process between handler and commit: the inline fast path is for a
    /// command alone in flight; concurrent commands are grouped instead.
    pub(crate) in_flight: AtomicUsize,
    /// Concurrent commands' units waiting to commit in a group (with a store that groups).
    pub(crate) units: group::UnitQueue,
    /// The clock, the scheduler's options and its wake-up signal.
    pub(crate) scheduling: schedule::Scheduling,
}

/// A view model to read together with an entity on a cache miss: which view wants it, its
/// type, and the view's position the read is valid at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefetch {
    pub(crate) view: usize,
    pub(crate) model_type: &'static str,
    pub(crate) at: Position,
}

/// A unit of a group whose events the views may project with it ([`Projector::prepare_group`]).
pub(crate) struct GroupMember<'a> {
    pub(crate) stream: &'a StreamId,
    /// The stream sequence the unit's first event will get, when known.
    pub(crate) first_sequence: Option<Sequence>,
    pub(crate) events: &'a [NewEvent],
    pub(crate) decoded: &'a [ErasedMessage],
}

/// Inline projections prepared for one unit of work, and what the store must check for each.
pub(crate) type Prepared<I> = (smallvec::SmallVec<[I; 2]>, Vec<InlineProjection>);

/// What the write side asks of the views and aggregates around a commit.
pub(crate) trait Projector: Sync {
    /// A view's projection of a unit's events, prepared before the commit (it holds the view
    /// until settled).
    type Inline<'a>: Send
    where
        Self: 'a;

    /// The models the views will most likely need for an event of `stream`.
    fn prefetch(&self, stream: &StreamId) -> Vec<Prefetch>;

    /// Hands the models read for [`prefetch`](Self::prefetch) to their views.
    fn offer(&self, stream: &StreamId, wanted: &[Prefetch], models: &[Option<Vec<u8>>]);

    /// Applies a unit's events to the views that can commit them with the unit: those this
    /// process keeps up with, that are not busy and that the events concern.
    fn prepare_inline<'a>(
        &'a self,
        stream: &StreamId,
        first_sequence: Sequence,
        events: &[NewEvent],
        decoded: &[ErasedMessage],
    ) -> impl Future<Output = Prepared<Self::Inline<'a>>> + Send;

    /// Applies a group's events, in group order, to the views that can commit them with the
    /// group ([`GroupProjection`]): those this process keeps up with, that are not busy and
    /// that the events concern. Settled like an inline projection, with the group's last
    /// position.
    fn prepare_group<'a>(
        &'a self,
        units: &[GroupMember<'_>],
    ) -> impl Future<
        Output = (
            smallvec::SmallVec<[Self::Inline<'a>; 2]>,
            Vec<GroupProjection>,
        ),
    > + Send;

    /// Records the store's verdict on a prepared projection (`applied`) and where the unit's
    /// events landed.
    fn settle(&self, inline: Self::Inline<'_>, applied: bool, last: Option<Position>);

    /// Keeps a commit's decoded events at hand for a projection batch that will cover them.
    fn remember(&self, events: &[RecordedEvent], decoded: &[ErasedMessage]);

    /// Delivers a committed command's events to the views and aggregates before `send`
    /// returns.
    fn project(
        &self,
        receipt: &CommandReceipt,
        decoded: Vec<ErasedMessage>,
    ) -> impl Future<Output = ()> + Send;
}
