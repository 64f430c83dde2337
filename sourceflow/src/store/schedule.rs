//! Scheduled commands: what a store keeps so that a command is sent at a later time, exactly
//! once, unless cancelled first.
//!
//! A schedule is a row with a due time, the command to send (its target stream, name, payload
//! and the message id it will be sent with) and a state:
//!
//! ```text
//!   pending ──claim (due)──▶ firing ──sent──▶ fired
//!      │                       │  ▲
//!      │                       └──┘ lease expired (the firing process died): claimed again
//!      └──cancel──▶ cancelled
//! ```
//!
//! Cancelling and claiming are both conditional on `pending`, on one row: exactly one of them
//! wins. Once claimed, a schedule is fired, whatever happens to the process that claimed it:
//! if that process dies, another one claims the schedule again after the lease and sends the
//! same command with the same message id, which the target stream acknowledges as a duplicate
//! if the first send had committed.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{OutboxMessage, StoreError, UnitOfWork};
use crate::base::message::CommandReceipt;

/// The id of a scheduled command, returned by `schedule` and taken by `cancel`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ScheduleId(pub Uuid);

/// Namespace of the message ids of fired commands.
const FIRED_NAMESPACE: Uuid = Uuid::from_u128(0x2d4c_8e61_0b7a_4f93_a1c5_7e90_3b6d_c218);

impl ScheduleId {
    /// The message id the scheduled command is sent with: derived from the schedule id, so a
    /// second send of one schedule (after a crash) is a duplicate in the target stream.
    pub fn message_id(&self) -> Uuid {
        Uuid::new_v5(&FIRED_NAMESPACE, self.0.as_bytes())
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// When a scheduled command is due: after a delay (from the time the schedule is committed,
/// on the flow's [`Clock`](crate::schedule::Clock)) or at an absolute UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// This long after the schedule is made.
    After(std::time::Duration),
    /// At this time.
    At(DateTime<Utc>),
}

impl When {
    /// The due time, for a schedule made at `now`.
    pub fn due(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::At(at) => at,
            When::After(delay) => chrono::Duration::from_std(delay)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

impl From<std::time::Duration> for When {
    fn from(delay: std::time::Duration) -> Self {
        When::After(delay)
    }
}

impl From<DateTime<Utc>> for When {
    fn from(at: DateTime<Utc>) -> Self {
        When::At(at)
    }
}

/// Where a schedule is in its life (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScheduleState {
    /// Waiting for its due time; may still be cancelled.
    Pending,
    /// Claimed by a scheduler that is sending it; no longer cancellable.
    Firing,
    /// Sent.
    Fired,
    /// Cancelled before it was claimed; it will never be sent.
    Cancelled,
}

impl ScheduleState {
    /// The state as stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Pending => "pending",
            ScheduleState::Firing => "firing",
            ScheduleState::Fired => "fired",
            ScheduleState::Cancelled => "cancelled",
        }
    }

    /// The state stored as `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => ScheduleState::Pending,
            "firing" => ScheduleState::Firing,
            "fired" => ScheduleState::Fired,
            "cancelled" => ScheduleState::Cancelled,
            _ => return None,
        })
    }
}

/// What a cancel achieved: exactly one of a schedule's cancel and its firing wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelOutcome {
    /// Cancelled: the command will never be sent.
    Cancelled,
    /// Too late: a scheduler had already claimed it, the command is sent (or being sent).
    AlreadyFired,
    /// It had been cancelled before.
    AlreadyCancelled,
    /// No schedule has this id.
    NotFound,
}

impl CancelOutcome {
    /// The outcome of a cancel that found no pending row, from the row's state.
    pub fn of_state(state: Option<ScheduleState>) -> Self {
        match state {
            None => CancelOutcome::NotFound,
            Some(ScheduleState::Cancelled) => CancelOutcome::AlreadyCancelled,
            Some(ScheduleState::Pending) => CancelOutcome::Cancelled,
            Some(ScheduleState::Firing | ScheduleState::Fired) => CancelOutcome::AlreadyFired,
        }
    }
}

/// A command to send at `due`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSchedule {
    /// The schedule's id.
    pub id: ScheduleId,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The command: its envelope's stream is the target, its message id
    /// [`ScheduleId::message_id`], its timestamp when the schedule was made.
    pub command: OutboxMessage,
}

/// A stored schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRecord {
    /// The schedule and its command.
    pub schedule: NewSchedule,
    /// Its state.
    pub state: ScheduleState,
    /// How many times a scheduler claimed it (more than one: a firing process died).
    pub attempts: u32,
}

/// The schedules a unit of work makes and cancels, committed with it
/// ([`ScheduleStore::commit_scheduled`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleChanges {
    /// Schedules to add (pending).
    pub add: Vec<NewSchedule>,
    /// Schedules to cancel, if still pending (a cancel that comes too late changes nothing).
    pub cancel: Vec<ScheduleId>,
}

impl ScheduleChanges {
    /// True when there is nothing to add or cancel.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.cancel.is_empty()
    }
}

/// The scheduling part of the storage contract, offered by a store through
/// [`Store::schedules`](super::Store::schedules). Stores without it cannot schedule commands
/// (the runtime answers [`StoreError::Unsupported`]); everything else works.
///
/// Times are the runtime's clock, passed in: a store compares what it is given.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Commits `unit` as [`Store::commit`](super::Store::commit) does, and in the same
    /// transaction adds and cancels `changes`. A duplicate or a conflict writes none of them.
    ///
    /// # Errors
    /// As [`Store::commit`](super::Store::commit).
    async fn commit_scheduled(
        &self,
        unit: UnitOfWork,
        changes: ScheduleChanges,
    ) -> Result<CommandReceipt, StoreError>;

    /// Adds schedules outside a unit of work; an id already stored is left as it is.
    async fn add_schedules(&self, schedules: Vec<NewSchedule>) -> Result<(), StoreError>;

    /// Cancels a pending schedule (atomically with respect to [`claim_due`](Self::claim_due)).
    async fn cancel_schedule(
        &self,
        id: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError>;

    /// Claims up to `limit` schedules that are due at `now` (pending with `due <= now`, or
    /// firing with a lease that ended before `now`), oldest due first: they become firing,
    /// leased to the caller until `lease_until`. Two callers never claim one schedule at once.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Marks claimed schedules as fired.
    async fn mark_fired(&self, ids: &[ScheduleId], now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Ends the lease of claimed schedules early: they stay firing (never cancellable again)
    /// and may be claimed again from `at` on. For a send that failed with a fault worth
    /// another try.
    async fn release_claims(&self, ids: &[ScheduleId], at: DateTime<Utc>)
        -> Result<(), StoreError>;

    /// One schedule, in any state.
    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<ScheduleRecord>, StoreError>;

    /// Up to `limit` schedules not yet fired or cancelled (pending or firing) with an id after
    /// `after`, in due order.
    async fn pending_schedules(
        &self,
        after: Option<(DateTime<Utc>, ScheduleId)>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError>;
}
