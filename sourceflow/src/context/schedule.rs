//! Scheduling from a handler: what `cx.schedule(..)` and `cx.cancel(..)` on a
//! [`SagaContext`](super::saga::SagaContext) or a
//! [`ReactionContext`](super::reaction::ReactionContext) record, committed with the handler's
//! unit of work.

use uuid::Uuid;

use crate::store::schedule::{NewSchedule, ScheduleChanges, ScheduleId, When};
use crate::store::OutboxMessage;

/// Namespace of the ids of schedules made by handlers.
pub(super) const SCHEDULE_NAMESPACE: Uuid =
    Uuid::from_u128(0x9b0e_53c7_41d2_4a8f_b6e1_28c4_f07a_5d93);

/// Namespace of the ids of schedules made by reactions.
pub(super) const REACTION_SCHEDULE_NAMESPACE: Uuid =
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
    /// The index of the next schedule's id, counted.
    pub(crate) fn next_index(&mut self) -> u32 {
        self.made += 1;
        self.made - 1
    }

    /// Records schedule `id` of `command` (the follow-up built for it), or the problem that
    /// building it met.
    pub(crate) fn request(
        &mut self,
        id: ScheduleId,
        when: When,
        command: Result<OutboxMessage, crate::Error>,
        problems: &mut Vec<crate::Error>,
    ) {
        match command {
            Ok(command) => self.add.push(Requested { id, when, command }),
            Err(e) => problems.push(e),
        }
    }

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
