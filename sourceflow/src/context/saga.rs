//! The write side: what a `#[handles]` method gets to publish events and send follow-ups.

use foldhash::HashMap;
use std::any::TypeId;
use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::schedule::SCHEDULE_NAMESPACE;
use crate::base::error::{Error, Location};
use crate::base::message::{Command, EntityId, Envelope, Event, NewEvent, StreamId};
use crate::base::validate::Violations;
use crate::codec::storable;
use crate::codec::ErasedMessage;
use crate::store::schedule::{ScheduleId, When};
use crate::store::OutboxMessage;

/// Which stream type each command type is appended to (its saga's entity or saga name).
pub(crate) type CommandStreams = Arc<HashMap<TypeId, Cow<'static, str>>>;

/// Builds the outbox entry for a follow-up command, or records why it cannot be sent.
pub(crate) fn follow_up<C: Command>(
    streams: &CommandStreams,
    id: EntityId,
    command: &C,
    message_id: Uuid,
    correlation_id: Uuid,
    causation_id: Uuid,
) -> Result<OutboxMessage, Error> {
    let Some(entity_type) = streams.get(&TypeId::of::<C>()) else {
        return Err(Error::NoHandler {
            message: C::NAME.to_owned(),
        });
    };
    let mut violations = Violations::default();
    command.validate_message(&mut violations);
    if !violations.is_empty() {
        violations.message = C::NAME.to_owned();
        return Err(Error::Invalid(violations));
    }
    let stream = StreamId::new(entity_type.clone(), id);
    let payload = storable::encode(command).map_err(|e| {
        e.into_error(C::NAME, || Location::Sending {
            stream: stream.clone(),
        })
    })?;
    Ok(OutboxMessage {
        envelope: Envelope {
            message_id,
            name: Cow::Borrowed(C::NAME),
            version: C::VERSION,
            stream,
            correlation_id,
            causation_id: Some(causation_id),
            timestamp: crate::base::message::now(),
        },
        payload,
    })
}

/// What a saga handler can do besides changing its entity: publish events to the entity's
/// stream, send follow-up commands, read the command's metadata.
///
/// Everything published or sent is committed atomically with the command, and only if the
/// handler returns `Ok`.
pub struct SagaContext {
    pub(crate) message_id: Uuid,
    pub(crate) correlation_id: Uuid,
    pub(crate) stream: StreamId,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) replay: bool,
    /// False while replaying for the state alone (`replay`, `state_at`): published events are
    /// validated and then dropped, never encoded.
    pub(crate) keep_events: bool,
    pub(crate) events: Vec<NewEvent>,
    /// The published events as values, index for index with `events`.
    pub(crate) decoded: Vec<ErasedMessage>,
    pub(crate) outbox: Vec<OutboxMessage>,
    pub(crate) problems: Vec<Error>,
    pub(crate) streams: CommandStreams,
    pub(crate) scheduling: super::schedule::ScheduleRequests,
}

impl SagaContext {
    pub(crate) fn new(envelope: &Envelope, replay: bool, streams: CommandStreams) -> Self {
        Self {
            message_id: envelope.message_id,
            correlation_id: envelope.correlation_id,
            stream: envelope.stream.clone(),
            timestamp: envelope.timestamp,
            replay,
            keep_events: true,
            events: Vec::new(),
            decoded: Vec::new(),
            outbox: Vec::new(),
            problems: Vec::new(),
            streams,
            scheduling: Default::default(),
        }
    }

    /// A context whose published events are validated and dropped: a replay for the state
    /// alone has no use for them.
    pub(crate) fn dropping_events(mut self) -> Self {
        self.keep_events = false;
        self
    }

    /// Records an event in this entity's stream. It is validated (see
    /// [`Validate`](crate::Validate)) and committed with the command; a failed check makes the
    /// whole command fail with [`Error::Invalid`] and nothing is stored.
    pub fn publish<E: Event>(&mut self, event: E) {
        let mut violations = Violations::default();
        event.validate_message(&mut violations);
        if !violations.is_empty() {
            violations.message = E::NAME.to_owned();
            self.problems.push(Error::Invalid(violations));
            return;
        }
        if !self.keep_events {
            return;
        }
        match storable::encode(&event) {
            Ok(payload) => {
                let (message_id, timestamp) = crate::base::message::id_and_now();
                let envelope = Envelope {
                    message_id,
                    name: Cow::Borrowed(E::NAME),
                    version: E::VERSION,
                    stream: self.stream.clone(),
                    correlation_id: self.correlation_id,
                    causation_id: Some(self.message_id),
                    timestamp,
                };
                self.events.push(NewEvent { envelope, payload });
                self.decoded.push(Arc::new(event));
            }
            Err(e) => self
                .problems
                .push(e.into_error(E::NAME, || Location::Sending {
                    stream: self.stream.clone(),
                })),
        }
    }

    /// Sends a follow-up command to entity `id` once this command commits (through the
    /// outbox, so a crash after the commit still delivers it). Its correlation id is this
    /// command's; its causation id is this command's message id.
    ///
    /// A command no saga handles, or one that fails validation, fails this command.
    pub fn send<C: Command>(&mut self, id: impl Into<EntityId>, command: C) {
        if self.replay {
            return;
        }
        match follow_up(
            &self.streams,
            id.into(),
            &command,
            Uuid::now_v7(),
            self.correlation_id,
            self.message_id,
        ) {
            Ok(message) => self.outbox.push(message),
            Err(e) => self.problems.push(e),
        }
    }

    /// The command's message id.
    pub fn message_id(&self) -> Uuid {
        self.message_id
    }

    /// The correlation id shared by the whole chain of messages.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// The entity (stream) the command is addressed to.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The id of the entity the command is addressed to.
    pub fn entity_id(&self) -> &EntityId {
        &self.stream.id
    }

    /// When the command was sent.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// True while the command log is being replayed (`replay`, `state_at`, `verify`): events
    /// are discarded, follow-up commands are not sent; skip side effects here.
    pub fn is_replay(&self) -> bool {
        self.replay
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
        let index = self.scheduling.next_index();
        let mut key = Vec::with_capacity(24);
        key.extend_from_slice(self.message_id.as_bytes());
        key.extend_from_slice(&index.to_be_bytes());
        let schedule = ScheduleId(Uuid::new_v5(&SCHEDULE_NAMESPACE, &key));
        if self.replay {
            return schedule;
        }
        let command = follow_up(
            &self.streams,
            id.into(),
            &command,
            schedule.message_id(),
            self.correlation_id,
            self.message_id,
        );
        self.scheduling
            .request(schedule, when.into(), command, &mut self.problems);
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
