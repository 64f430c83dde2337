//! Scheduling from a handler: `cx.schedule(..)` and `cx.cancel(..)` on a [`SagaContext`],
//! recorded with the handler's unit of work and committed with it.

use uuid::Uuid;

use super::reaction::ReactionContext;
use super::saga::{follow_up, SagaContext};
use crate::base::message::{Command, EntityId};
use crate::store::schedule::{NewSchedule, ScheduleChanges, ScheduleId, When};
use crate::store::OutboxMessage;

/// Namespace of the ids of schedules made by handlers.
const SCHEDULE_NAMESPACE: Uuid = Uuid::from_u128(0x9b0e_53c7_41d2_4a8f_b6e1_28c4_f07a_5d93);

/// Namespace of the ids of schedules made by reactions.
const REACTION_SCHEDULE_NAMESPACE: Uuid =
    Uuid::from_u128(0x41f7_0c3a_d95e_4b26_8e17_6a2b_c94d_0e58);

/// A schedule a handler asked for, its due time not yet resolved.
#[derive(Debug)]
pub(crate) struct Requested {
    pub(crate) id: ScheduleId,
    pub(crate) when: When,
    pub(crate) command: OutboxMessage,
}

/// The schedules and cancels a handler recorded.
#[derive(Debug, Default)]
pub(crate) struct ScheduleRequests {
    pub(crate) add: Vec<Requested>,
    pub(crate) cancel: Vec<ScheduleId>,
    /// How many schedules the handler asked for (the index of the next one's id).
    pub(crate) made: u32,
}

impl ScheduleRequests {
    /// True when the handler neither scheduled nor cancelled anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.add.is_empty() && self.cancel.is_empty()
    }

    /// The changes to commit, delays counted from `now`.
    pub(crate) fn resolve(self, now: chrono::DateTime<chrono::Utc>) -> ScheduleChanges {
        ScheduleChanges {
            add: self
                .add
                .into_iter()
                .map(|mut r| {
                    // The command records when it was scheduled, on the flow's clock.
                    r.command.envelope.timestamp = now;
                    NewSchedule {
                        id: r.id,
                        due: r.when.due(now),
                        command: r.command,
                    }
                })
                .collect(),
            cancel: self.cancel,
        }
    }
}

impl SagaContext {
    /// Schedules `command` to be sent to entity `id` when `when` comes: a delay
    /// (`Duration::from_secs(30 * 60)`, counted from the commit, on the flow's clock) or an
    /// absolute UTC time. Returns the schedule's id, for [`cancel`](Self::cancel); keep it in
    /// the entity's state.
    ///
    /// The schedule is committed with this command, and only if the handler returns `Ok`.
    /// When due, the command is sent once, with correlation id this command's, causation id
    /// this command's message id, and a message id derived from the schedule id.
    ///
    /// The id is derived from this command's message id and the call's order in the handler:
    /// a replay of the command log (which schedules nothing) returns the same ids, so a state
    /// that stores them replays identically. A command no saga handles, or one that fails
    /// validation, fails this command.
    pub fn schedule<C: Command>(
        &mut self,
        when: impl Into<When>,
        id: impl Into<EntityId>,
        command: C,
    ) -> ScheduleId {
        let index = self.scheduling.made;
        self.scheduling.made += 1;
        let mut key = Vec::with_capacity(24);
        key.extend_from_slice(self.message_id.as_bytes());
        key.extend_from_slice(&index.to_be_bytes());
        let schedule = ScheduleId(Uuid::new_v5(&SCHEDULE_NAMESPACE, &key));
        if self.replay {
            return schedule;
        }
        match follow_up(
            &self.streams,
            id.into(),
            &command,
            schedule.message_id(),
            self.correlation_id,
            self.message_id,
        ) {
            Ok(command) => self.scheduling.add.push(Requested {
                id: schedule,
                when: when.into(),
                command,
            }),
            Err(e) => self.problems.push(e),
        }
        schedule
    }

    /// Cancels a schedule, with this command's commit and only if the handler returns `Ok`.
    /// A schedule that a scheduler has already claimed is sent anyway: exactly one of the
    /// cancel and the firing wins. [`SourceFlow::cancel`](crate::SourceFlow::cancel) reports
    /// which.
    pub fn cancel(&mut self, schedule: ScheduleId) {
        if self.replay {
            return;
        }
        self.scheduling.cancel.push(schedule);
    }
}

impl ReactionContext {
    /// Schedules `command` to be sent to entity `id` when `when` comes: a delay, counted from
    /// the event's time, or an absolute UTC time. Returns the schedule's id.
    ///
    /// The id is derived from the event, the reacting method and the call's order, like a
    /// follow-up's message id: a reaction that runs again for the same event (after a crash,
    /// or in a second process) makes the same schedule, which is stored once. The schedule is
    /// stored before the reaction's position is committed.
    pub fn schedule<C: Command>(
        &mut self,
        when: impl Into<When>,
        id: impl Into<EntityId>,
        command: C,
    ) -> ScheduleId {
        let index = self.scheduling.made;
        self.scheduling.made += 1;
        let mut key = Vec::with_capacity(64);
        key.extend_from_slice(self.meta.message_id.as_bytes());
        key.extend_from_slice(self.handler.as_bytes());
        key.push(b'.');
        key.extend_from_slice(self.method.as_bytes());
        key.push(b'#');
        key.extend_from_slice(&index.to_be_bytes());
        let schedule = ScheduleId(Uuid::new_v5(&REACTION_SCHEDULE_NAMESPACE, &key));
        match follow_up(
            &self.streams,
            id.into(),
            &command,
            schedule.message_id(),
            self.meta.correlation_id,
            self.meta.message_id,
        ) {
            Ok(command) => self.scheduling.add.push(Requested {
                id: schedule,
                when: when.into(),
                command,
            }),
            Err(e) => self.problems.push(e),
        }
        schedule
    }

    /// Cancels a schedule if no scheduler has claimed it yet (see
    /// [`SagaContext::cancel`]).
    pub fn cancel(&mut self, schedule: ScheduleId) {
        self.scheduling.cancel.push(schedule);
    }
}
