//! Concurrent commands of this process commit in groups, with the views' projection of the
//! whole group in the same transaction ([`GroupCommit`], for a store that offers it).
//!
//! Every sender queues its unit of work, then waits for its turn (a fair lock) or its answer,
//! whichever comes first ([`Turns`]): a unit an earlier turn took is answered by that turn, so
//! the senders of a group never pass the turn along one by one before the next group can
//! start. Whoever gets the turn takes every unit queued so far (in groups of up to 128 until
//! its own is taken), lets the views apply the group's events ([`Projector::prepare_group`]),
//! and holds the turn (and the views) until the group is committed and the views settled, so
//! units queue up meanwhile and the next group's projection starts where this one's ended. A
//! sender whose group was committed finds its views past its events and returns without a
//! second transaction. If the sender committing a group stops before it answers (its future is
//! dropped), each other unit of the group commits alone: one the group had committed is found
//! by its message id and answered with its receipt.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{GroupMember, Projector, WriteSide};
use crate::base::message::{CommandReceipt, Sequence};
use crate::codec::ErasedMessage;
use crate::store::turns::{Turn, Turns};
use crate::store::{GroupCommit, StoreError, UnitGroup, UnitOfWork};

/// The most units one group carries.
const MAX_GROUP: usize = 128;

/// A queued unit of work, what the views need to project it, and where its answer goes.
pub(crate) struct Queued {
    unit: Arc<UnitOfWork>,
    first_sequence: Option<Sequence>,
    decoded: Vec<ErasedMessage>,
    reply: oneshot::Sender<Result<CommandReceipt, StoreError>>,
}

/// The units waiting for a group, and the turn that commits one.
pub(crate) type UnitQueue = Turns<Queued>;

impl WriteSide {
    /// Commits `unit` in the next group of this process's concurrent commands. `first_sequence`
    /// is the stream sequence its first event will get, when known, and `decoded` its events
    /// as the handler emitted them.
    pub(super) async fn commit_in_group<P: Projector>(
        &self,
        projector: &P,
        groups: &dyn GroupCommit,
        unit: UnitOfWork,
        first_sequence: Option<Sequence>,
        decoded: &[ErasedMessage],
    ) -> Result<CommandReceipt, StoreError> {
        let unit = Arc::new(unit);
        let (reply, mut answer) = oneshot::channel();
        let ticket = self.units.push(Queued {
            unit: unit.clone(),
            first_sequence,
            decoded: decoded.to_vec(),
            reply,
        });
        // The answer or the turn, whichever comes first: a unit that an earlier turn took is
        // answered when that group commits, without taking a turn of its own.
        let answered = match self.units.answer_or_turn(&mut answer).await {
            Ok(answered) => answered,
            Err(turn) => {
                // Until this unit is taken (more than a group's worth may be queued ahead).
                while !turn.has_taken(ticket) {
                    self.take_group(&turn, projector, groups).await;
                }
                drop(turn);
                answer.await
            }
        };
        match answered {
            Ok(answer) => answer,
            // The sender committing this unit's group stopped: the unit commits alone, and if
            // the group had committed it, its receipt is this send's own (the views then
            // project its events after the commit, as for any unit committed without them).
            Err(_) => {
                let mut receipt = self.store.commit(Arc::unwrap_or_clone(unit)).await?;
                receipt.duplicate = false;
                Ok(receipt)
            }
        }
    }

    /// With the turn held: lets commands about to queue join, then takes every queued unit
    /// (up to [`MAX_GROUP`]) and commits them as one group.
    async fn take_group<P: Projector>(
        &self,
        turn: &Turn<'_, Queued>,
        projector: &P,
        groups: &dyn GroupCommit,
    ) {
        // Commands between their handler and this queue are a few steps from joining it: let
        // them, rather than commit a group without them.
        for _ in 0..2 {
            if turn.queued() >= self.in_flight.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            tokio::task::yield_now().await;
        }
        let group = turn.take(MAX_GROUP);
        self.commit_group(projector, groups, group).await;
    }

    /// Commits one group and answers its senders.
    async fn commit_group<P: Projector>(
        &self,
        projector: &P,
        groups: &dyn GroupCommit,
        queued: Vec<Queued>,
    ) {
        let members: Vec<GroupMember<'_>> = queued
            .iter()
            .map(|q| GroupMember {
                stream: &q.unit.command.envelope.stream,
                first_sequence: q.first_sequence.filter(|_| !q.unit.events.is_empty()),
                events: &q.unit.events,
                decoded: &q.decoded,
            })
            .collect();
        let (prepared, projections) = projector.prepare_group(&members).await;
        let group = UnitGroup {
            units: queued.iter().map(|q| &*q.unit).collect(),
            first_sequences: members.iter().map(|m| m.first_sequence).collect(),
            projections,
        };
        drop(members);
        let outcome = groups.commit_group(group).await;
        let last = outcome
            .units
            .iter()
            .filter_map(|unit| unit.as_ref().ok())
            .filter(|receipt| !receipt.duplicate)
            .filter_map(|receipt| receipt.events.last().map(|e| e.position))
            .max();
        for (i, ready) in prepared.into_iter().enumerate() {
            let applied = outcome.projected.get(i).copied().unwrap_or(false);
            projector.settle(ready, applied, last);
        }
        // A unit the store gave no answer for commits alone (its reply is dropped).
        for (q, answer) in queued.into_iter().zip(outcome.units) {
            let _ = q.reply.send(answer);
        }
    }
}
