//! Group commit with views: the units of work of concurrent senders of one process, committed
//! in one transaction together with the views' projection of all of them.
//!
//! Under concurrency the runtime queues the units its senders hand over while a group is
//! committing, and commits the next group as one call of [`GroupCommit::commit_group`]. Before
//! the call it applies every unit's events, in group order, to each view it keeps up with, as
//! if they landed one after the other directly after the view's position; each view's model
//! writes go with the group as one [`GroupProjection`]. The store writes a projection only if
//! that assumption held at commit time: every unit committed, the group's events are the
//! positions `after + 1 ..= after + n` in group order, each unit's first event has the stream
//! sequence the view was told, and the view's stored position is still `expected`. Otherwise
//! it writes nothing of that projection (the units still commit) and the runtime projects those
//! events the ordinary way, after the commit. So a command's view update no longer costs a
//! transaction of its own under load, and `send` still returns with its views up to date.
//!
//! A store that commits a group as one transaction implements [`GroupCommit`] and hands it out
//! through [`Store::groups`](super::Store::groups); the others leave it `None` and concurrent
//! commands commit one by one (the Postgres store implements it; the SQLite writer batches
//! concurrent units by itself).

use std::borrow::Cow;

use async_trait::async_trait;

use super::unit::{ModelWrite, UnitOfWork};
use crate::base::error::StoreError;
use crate::base::message::{CommandReceipt, Position, Sequence};

/// One view's projection of a whole group of units of work ([`GroupCommit::commit_group`]).
#[derive(Clone, Debug)]
pub struct GroupProjection {
    /// The view's name (its handler name in the positions table).
    pub handler: Cow<'static, str>,
    /// The view's stored position the projection started from (compare-and-set).
    pub expected: Position,
    /// The last global position the view has passed (`>= expected`); the group's first event
    /// must be at `after + 1`, and its events consecutive from there in group order.
    pub after: Position,
    /// The models as they stand after the whole group (one write per model). On success the
    /// view's position becomes the group's last event's.
    pub models: Vec<ModelWrite>,
}

/// Units of work to commit together, in this order, and the views' projection of them.
#[derive(Debug)]
pub struct UnitGroup<'a> {
    /// The units, in commit order.
    pub units: Vec<&'a UnitOfWork>,
    /// Per unit, the stream sequence its first event must get for a projection to apply
    /// (`None`: the unit has no events).
    pub first_sequences: Vec<Option<Sequence>>,
    /// The views' projections of the whole group.
    pub projections: Vec<GroupProjection>,
}

/// What became of a group: each unit's receipt or error, in group order, and per projection
/// whether it was written.
#[derive(Debug)]
pub struct GroupOutcome {
    /// Per unit, as [`Store::commit`](super::Store::commit) would answer it alone.
    pub units: Vec<Result<CommandReceipt, StoreError>>,
    /// Per projection, whether it was written with the units.
    pub projected: Vec<bool>,
}

impl GroupOutcome {
    /// Every unit answered by `commit` alone, no projection written (a store's fallback).
    pub fn unprojected(units: Vec<Result<CommandReceipt, StoreError>>, projections: usize) -> Self {
        Self {
            units,
            projected: vec![false; projections],
        }
    }
}

/// A store that commits a group of units of work, and the views' projection of them, in one
/// transaction ([`Store::groups`](super::Store::groups)).
#[async_trait]
pub trait GroupCommit: Send + Sync {
    /// Commits `group`'s units in order, each checked as [`Store::commit`](super::Store::commit)
    /// checks it alone (a unit that conflicts with an earlier one of the group is refused,
    /// the others commit), and writes each projection whose assumptions hold (see the
    /// [module docs](self)). A failure of the whole group (a dropped connection) must not be
    /// reported for units that would commit alone: the store then commits them one by one.
    async fn commit_group(&self, group: UnitGroup<'_>) -> GroupOutcome;
}
