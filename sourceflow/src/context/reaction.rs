//! Reactions: `#[aggregate]` methods marked `#[subscribes]` run after events commit and may send
//! follow-up commands, exactly once per event.

use uuid::Uuid;

use super::schedule::REACTION_SCHEDULE_NAMESPACE;
use crate::base::error::Error;
use crate::base::message::{Command, EntityId, EventMeta};
use crate::context::saga::{follow_up, CommandStreams};
use crate::store::schedule::{ScheduleId, When};
use crate::store::OutboxMessage;

/// Namespace of the derived message ids of reaction commands.
const REACTION_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_93d4_4c1a_9a55_0e3b_7d2f_4a61);

/// What a reaction gets: the event's metadata and a way to send follow-up commands.
///
/// A follow-up's message id is derived from the triggering event's id, the reacting handler and
/// the follow-up's index, so a reaction that runs again (after a crash, or in a second process)
/// produces the same ids and its commands are acknowledged as duplicates, not executed twice.
pub struct ReactionContext {
    pub(crate) meta: EventMeta,
    pub(crate) handler: &'static str,
    pub(crate) method: &'static str,
    pub(crate) outbox: Vec<OutboxMessage>,
    pub(crate) problems: Vec<Error>,
    pub(crate) streams: CommandStreams,
    pub(crate) scheduling: super::schedule::ScheduleRequests,
}

impl ReactionContext {
    pub(crate) fn new(meta: EventMeta, handler: &'static str, streams: CommandStreams) -> Self {
        Self {
            meta,
            handler,
            method: "",
            outbox: Vec::new(),
            problems: Vec::new(),
            streams,
            scheduling: Default::default(),
        }
    }

    /// Metadata of the event being reacted to.
    pub fn meta(&self) -> &EventMeta {
        &self.meta
    }

    /// The id of the entity whose stream recorded the event.
    pub fn entity_id(&self) -> &EntityId {
        &self.meta.stream.id
    }

    /// Sends a command to the entity that recorded the event.
    pub fn send<C: Command>(&mut self, command: C) {
        let id = self.meta.stream.id.clone();
        self.send_to(id, command);
    }

    /// Sends a command to entity `id`.
    pub fn send_to<C: Command>(&mut self, id: impl Into<EntityId>, command: C) {
        let index = self.outbox.len() + self.problems.len();
        let message_id = self.derived_id(index);
        match follow_up(
            &self.streams,
            id.into(),
            &command,
            message_id,
            self.meta.correlation_id,
            self.meta.message_id,
        ) {
            Ok(message) => self.outbox.push(message),
            Err(e) => self.problems.push(e),
        }
    }

    fn derived_id(&self, index: usize) -> Uuid {
        let mut key = self.key_prefix();
        key.extend_from_slice(index.to_string().as_bytes());
        Uuid::new_v5(&REACTION_NAMESPACE, &key)
    }

    /// What the ids this reaction derives start with: the event's message id, then
    /// `handler.method#`.
    fn key_prefix(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        key.extend_from_slice(self.meta.message_id.as_bytes());
        key.extend_from_slice(self.handler.as_bytes());
        key.push(b'.');
        key.extend_from_slice(self.method.as_bytes());
        key.push(b'#');
        key
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
        let index = self.scheduling.next_index();
        let mut key = self.key_prefix();
        key.extend_from_slice(&index.to_be_bytes());
        let schedule = ScheduleId(Uuid::new_v5(&REACTION_SCHEDULE_NAMESPACE, &key));
        let command = follow_up(
            &self.streams,
            id.into(),
            &command,
            schedule.message_id(),
            self.meta.correlation_id,
            self.meta.message_id,
        );
        self.scheduling
            .request(schedule, when.into(), command, &mut self.problems);
        schedule
    }

    /// Cancels a schedule if no scheduler has claimed it yet (see
    /// [`SagaContext::cancel`](super::saga::SagaContext::cancel)).
    pub fn cancel(&mut self, schedule: ScheduleId) {
        self.scheduling.cancel.push(schedule);
    }
}
