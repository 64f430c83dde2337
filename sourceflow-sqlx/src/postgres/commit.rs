//! The Postgres commit path: a unit of work in one round trip (the common shape as one
//! statement, anything else through `sf_commit_inline`), events appended without a command,
//! and projection batches; with the parallel arrays these statements take.

use chrono::{DateTime, Utc};
use sourceflow::message::NewEvent;
use sourceflow::store::{
    InlineProjection, ModelWrite, OutboxMessage, ProjectionCommit, StoreError, UnitOfWork,
};
use sourceflow::{CommandReceipt, Envelope, Position, RecordedEvent, Sequence, StreamId};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use uuid::Uuid;

use super::error::{classify, is_event_sequence_taken, is_unique_violation};
use super::queries::{APPEND_EVENTS, COMMIT_INLINE, COMMIT_ONE, COMMIT_PROJECTION};
use super::{conflict, get, Postgres};
use crate::sql::read;
use crate::sql::values::{db_int, from_db, micros, payload_text};
use crate::sql::write::Written;
use crate::sql::{last_writes, Backend};

impl Postgres {
    /// A unit of work in one round trip: the common shape as one statement (`COMMIT_ONE`), anything else through
    /// `sf_commit_inline`.
    pub(super) async fn commit_unit(
        &self,
        unit: UnitOfWork,
        projections: &[InlineProjection],
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        let envelope = &unit.command.envelope;
        let stream = &envelope.stream;
        let expected = db_int(unit.expected.0, "sequence")?;
        let payload = payload_text(&unit.command.payload, "command payload")?;
        let entity = unit
            .entity
            .as_deref()
            .map(|state| payload_text(state, "entity state"))
            .transpose()?;
        let events = EventArrays::new(&unit.events)?;
        let outbox = OutboxArrays::new(&unit.outbox)?;
        let (events, outbox) = (&events, &outbox);
        let (pool, lock_key) = (&self.pool, self.lock_key);
        let inline = InlineArrays::new(projections)?;
        let inline = &inline;
        // Both statements start with the command: lock key, stream, expected sequence, the
        // command's envelope and payload, the entity state (`$1`-`$12`).
        let command = |sql: &'static str| {
            sqlx::query(sql)
                .bind(lock_key)
                .bind(&*stream.entity_type)
                .bind(stream.id.as_str())
                .bind(expected)
                .bind_envelope(envelope)
                .bind(payload)
                .bind(entity)
        };
        let command = &command;
        // The common shape goes as one statement (`COMMIT_ONE`), the rest through the function.
        let one = unit.keys.is_empty()
            && entity.is_some()
            && unit.events.len() == 1
            && unit.outbox.is_empty()
            && projections.len() <= 1
            && inline.models.delete_owners.is_empty()
            && inline.models.put_owners.len() == projections.len();
        let (keys, expected_sequence) = (&unit.keys, unit.expected);
        let outcome = self
            .backoff
            .run(Self::NAME, "commit", || async move {
                if !keys.is_empty() {
                    // A subject's first key commits in the unit's transaction, or not at all.
                    let mut tx = pool.begin().await.map_err(classify)?;
                    if !super::keys::insert(&mut tx, keys).await? {
                        return Ok(Outcome::NotWritten);
                    }
                    let query = bind_inline(command(COMMIT_INLINE), events, outbox, inline);
                    let row = match query.fetch_one(&mut *tx).await {
                        Ok(row) => row,
                        Err(e) if is_unique_violation(&e) => return Ok(Outcome::NotWritten),
                        Err(e) => return Err(classify(e)),
                    };
                    let outcome = inline_outcome(&row, 0, stream, expected_sequence)?;
                    if let Outcome::Committed(..) = outcome {
                        tx.commit().await.map_err(classify)?;
                    }
                    return Ok(outcome);
                }
                if one {
                    let row = command(COMMIT_ONE)
                        .bind(events.ids[0])
                        .bind(events.names[0])
                        .bind(events.versions[0])
                        .bind(events.correlations[0])
                        .bind(events.causations[0])
                        .bind(events.times[0])
                        .bind(events.payloads[0])
                        .bind(inline.handlers.first().copied())
                        .bind(inline.expected.first().copied())
                        .bind(inline.after.first().copied())
                        .bind(inline.first_sequences.first().copied())
                        .bind(inline.models.put_types.first().copied())
                        .bind(inline.models.put_ids.first().copied())
                        .bind(inline.models.put_states.first().copied())
                        .fetch_optional(pool)
                        .await;
                    let outcome = match row {
                        Ok(Some(row)) => {
                            let sequence = Sequence(from_db(get(&row, 0)?, "sequence")?);
                            let first: i64 = get(&row, 2)?;
                            let last_event = Sequence(from_db(first - 1, "event sequence")?);
                            let stored = (vec![get(&row, 1)?], vec![get(&row, 3)?]);
                            let projected: bool = get(&row, 4)?;
                            let projected = if projections.is_empty() {
                                Vec::new()
                            } else {
                                vec![projected]
                            };
                            Some(Ok(Outcome::Committed(
                                sequence, last_event, stored, projected,
                            )))
                        }
                        Ok(None) => Some(Ok(Outcome::NotWritten)),
                        // The statement read the stream's last event before it waited for the
                        // append lock, and events appended without a command (`append_events`)
                        // committed meanwhile: nothing was written, and the function, which
                        // reads under the lock, commits the unit.
                        Err(e) if is_event_sequence_taken(&e) => None,
                        Err(e) if is_unique_violation(&e) => Some(Ok(Outcome::NotWritten)),
                        Err(e) => Some(Err(classify(e))),
                    };
                    if let Some(outcome) = outcome {
                        return outcome;
                    }
                }
                let query = bind_inline(command(COMMIT_INLINE), events, outbox, inline);
                let row = query.fetch_one(pool).await;
                let row = match row {
                    Ok(row) => row,
                    // A concurrent commit to the same stream got there first: either the same
                    // message id (a concurrent duplicate, answered with its receipt) or the
                    // same sequence (a conflict).
                    Err(e) if is_unique_violation(&e) => return Ok(Outcome::NotWritten),
                    Err(e) => return Err(classify(e)),
                };
                inline_outcome(&row, 0, stream, unit.expected)
            })
            .await?;
        self.settle(&unit, projections, outcome).await
    }

    /// The receipt of a unit of work from what its commit reported.
    pub(super) async fn settle(
        &self,
        unit: &UnitOfWork,
        projections: &[InlineProjection],
        outcome: Outcome,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        let envelope = &unit.command.envelope;
        let stream = &envelope.stream;
        match outcome {
            Outcome::NotWritten | Outcome::Duplicate => {
                let found = read::find_receipt(self, stream, envelope.message_id).await?;
                match (found, outcome) {
                    (Some(receipt), _) => Ok((receipt, vec![false; projections.len()])),
                    (None, Outcome::NotWritten) => Err(conflict(stream, unit.expected)),
                    (None, _) => Err(StoreError::Corrupt(format!(
                        "command {} in {stream} vanished",
                        envelope.message_id
                    ))),
                }
            }
            Outcome::Committed(sequence, last_event, stored, mut projected) => {
                projected.resize(projections.len(), false);
                let receipt = CommandReceipt {
                    message_id: envelope.message_id,
                    stream: stream.clone(),
                    sequence,
                    events: EventArrays::recorded(
                        &unit.events,
                        stream,
                        sequence,
                        last_event,
                        stored,
                    )?,
                    duplicate: false,
                    retries: 0,
                };
                Ok((receipt, projected))
            }
        }
    }

    /// A projection batch in one call of `sf_commit_projection`, committed without waiting for
    /// its WAL flush (see the [module docs](super#projection-batches-commit-asynchronously)).
    pub(super) async fn commit_projection_batch(
        &self,
        commit: ProjectionCommit,
    ) -> Result<Written, StoreError> {
        let writes = last_writes(&commit.models);
        let mut puts: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
        let mut deletes: (Vec<&str>, Vec<&str>) = Default::default();
        for write in writes {
            match &write.state {
                Some(state) => {
                    puts.0.push(&write.model_type);
                    puts.1.push(write.id.as_str());
                    puts.2.push(payload_text(state, "view model state")?);
                }
                None => {
                    deletes.0.push(&write.model_type);
                    deletes.1.push(write.id.as_str());
                }
            }
        }
        let outbox = OutboxArrays::new(&commit.outbox)?;
        let (puts, deletes, outbox) = (&puts, &deletes, &outbox);
        let expected = db_int(commit.expected.0, "position")?;
        let position = db_int(commit.position.0, "position")?;
        let handler = &*commit.handler;
        let pool = &self.pool;
        let row = self
            .backoff
            .run(Self::NAME, "commit_projection", || async move {
                sqlx::query(COMMIT_PROJECTION)
                    .bind(handler)
                    .bind(expected)
                    .bind(position)
                    .bind(&puts.0)
                    .bind(&puts.1)
                    .bind(&puts.2)
                    .bind(&deletes.0)
                    .bind(&deletes.1)
                    .bind(&outbox.stream_types)
                    .bind(&outbox.stream_ids)
                    .bind(&outbox.ids)
                    .bind(&outbox.names)
                    .bind(&outbox.versions)
                    .bind(&outbox.correlations)
                    .bind(&outbox.causations)
                    .bind(&outbox.times)
                    .bind(&outbox.payloads)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            // Two first batches of one handler raced to insert its position.
                            StoreError::PositionConflict {
                                handler: handler.to_owned(),
                                expected: commit.expected,
                            }
                        } else {
                            classify(e)
                        }
                    })
            })
            .await?;
        if get::<bool>(&row, 1)? {
            Ok(Written::Done)
        } else {
            Err(StoreError::PositionConflict {
                handler: commit.handler.into_owned(),
                expected: commit.expected,
            })
        }
    }

    /// Events appended without a command, in one call of `sf_append_events`.
    pub(super) async fn append_event_batch(
        &self,
        stream: &StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let arrays = EventArrays::new(&events)?;
        let arrays = &arrays;
        let expected_value = db_int(expected.0, "sequence")?;
        let (pool, lock_key) = (&self.pool, self.lock_key);
        let row = self
            .backoff
            .run(Self::NAME, "append_events", || async move {
                sqlx::query(APPEND_EVENTS)
                    .bind(lock_key)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .bind(expected_value)
                    .bind(&arrays.ids)
                    .bind(&arrays.names)
                    .bind(&arrays.versions)
                    .bind(&arrays.correlations)
                    .bind(&arrays.causations)
                    .bind(&arrays.times)
                    .bind(&arrays.payloads)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            conflict(stream, expected)
                        } else {
                            classify(e)
                        }
                    })
            })
            .await?;
        if !get::<bool>(&row, 0)? {
            return Err(conflict(stream, expected));
        }
        let command_sequence = Sequence(from_db(get(&row, 1)?, "sequence")?);
        let stored = (get(&row, 2)?, get(&row, 3)?);
        EventArrays::recorded(&events, stream, command_sequence, expected, stored)
    }
}

/// A unit of work as one element of `sf_commit_batch`'s argument: `sf_commit_inline`'s
/// arguments by name, and `n`, its 1-based place in the batch.
pub(super) fn unit_json(
    n: usize,
    unit: &UnitOfWork,
    projections: &[InlineProjection],
) -> Result<serde_json::Value, StoreError> {
    let envelope = &unit.command.envelope;
    let stream = &envelope.stream;
    let entity = unit
        .entity
        .as_deref()
        .map(|state| payload_text(state, "entity state"))
        .transpose()?;
    let events = EventArrays::new(&unit.events)?;
    let outbox = OutboxArrays::new(&unit.outbox)?;
    let inline = InlineArrays::new(projections)?;
    Ok(serde_json::json!({
        "n": n,
        "stream_type": &*stream.entity_type,
        "stream_id": stream.id.as_str(),
        "expected": db_int(unit.expected.0, "sequence")?,
        "message_id": envelope.message_id,
        "name": &*envelope.name,
        "version": i64::from(envelope.version),
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "created_at": micros(envelope.timestamp),
        "payload": payload_text(&unit.command.payload, "command payload")?,
        "entity": entity,
        "event_ids": events.ids,
        "event_names": events.names,
        "event_versions": events.versions,
        "event_correlations": events.correlations,
        "event_causations": events.causations,
        "event_times": events.times,
        "event_payloads": events.payloads,
        "outbox_stream_types": outbox.stream_types,
        "outbox_stream_ids": outbox.stream_ids,
        "outbox_ids": outbox.ids,
        "outbox_names": outbox.names,
        "outbox_versions": outbox.versions,
        "outbox_correlations": outbox.correlations,
        "outbox_causations": outbox.causations,
        "outbox_times": outbox.times,
        "outbox_payloads": outbox.payloads,
        "handlers": inline.handlers,
        "expected_positions": inline.expected,
        "after": inline.after,
        "first_sequences": inline.first_sequences,
        "put_owners": inline.models.put_owners,
        "put_types": inline.models.put_types,
        "put_ids": inline.models.put_ids,
        "put_states": inline.models.put_states,
        "delete_owners": inline.models.delete_owners,
        "delete_types": inline.models.delete_types,
        "delete_ids": inline.models.delete_ids,
    }))
}

/// What the commit of one unit of work reported.
pub(super) enum Outcome {
    Committed(Sequence, Sequence, (Vec<i64>, Vec<String>), Vec<bool>),
    /// Nothing was written: a resent message id (answered with its receipt) or a stream that
    /// moved on (also when a concurrent commit to the stream got there first).
    NotWritten,
    /// The function found the message id committed: answered with its receipt.
    Duplicate,
}

/// The outcome of a unit from a row of `sf_commit_inline` (or `sf_commit_batch`), whose
/// columns start at `at`: status, sequence, first event, positions, payloads, projected.
pub(super) fn inline_outcome(
    row: &PgRow,
    at: usize,
    stream: &StreamId,
    expected: Sequence,
) -> Result<Outcome, StoreError> {
    let status: String = get(row, at)?;
    match status.as_str() {
        "ok" => {
            let sequence = Sequence(from_db(get(row, at + 1)?, "sequence")?);
            let first: i64 = get(row, at + 2)?;
            let last_event = Sequence(from_db(first - 1, "event sequence")?);
            let stored = (get(row, at + 3)?, get(row, at + 4)?);
            let projected: Vec<bool> = get(row, at + 5)?;
            Ok(Outcome::Committed(sequence, last_event, stored, projected))
        }
        "duplicate" => Ok(Outcome::Duplicate),
        // `sf_commit_units`: a moved stream or a resent message id, told apart by a lookup.
        "not_written" => Ok(Outcome::NotWritten),
        "conflict" => Err(conflict(stream, expected)),
        other => Err(StoreError::Corrupt(format!(
            "sf_commit_inline returned status {other:?}"
        ))),
    }
}

/// Binds `sf_commit_inline`'s arrays (events, outbox, inline projections) after the command's
/// arguments.
pub(super) fn bind_inline<'q>(
    query: Query<'q, sqlx::Postgres, PgArguments>,
    events: &'q EventArrays<'q>,
    outbox: &'q OutboxArrays<'q>,
    inline: &'q InlineArrays<'q>,
) -> Query<'q, sqlx::Postgres, PgArguments> {
    let query = query
        .bind(&events.ids)
        .bind(&events.names)
        .bind(&events.versions)
        .bind(&events.correlations)
        .bind(&events.causations)
        .bind(&events.times)
        .bind(&events.payloads)
        .bind(&outbox.stream_types)
        .bind(&outbox.stream_ids)
        .bind(&outbox.ids)
        .bind(&outbox.names)
        .bind(&outbox.versions)
        .bind(&outbox.correlations)
        .bind(&outbox.causations)
        .bind(&outbox.times)
        .bind(&outbox.payloads)
        .bind(&inline.handlers)
        .bind(&inline.expected)
        .bind(&inline.after)
        .bind(&inline.first_sequences);
    inline.models.bind(query)
}

/// A batch of units of work as the parallel arrays of `sf_commit_units`: one element per
/// unit, each unit a command with an entity state and one event, no follow-up commands and no
/// inline projections, on streams that differ from unit to unit.
pub(super) struct UnitArrays<'a> {
    stream_types: Vec<&'a str>,
    stream_ids: Vec<&'a str>,
    expected: Vec<i64>,
    message_ids: Vec<Uuid>,
    names: Vec<&'a str>,
    versions: Vec<i64>,
    correlations: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<&'a str>,
    entities: Vec<&'a str>,
    events: Vec<&'a NewEvent>,
    event_payloads: Vec<&'a str>,
}

impl<'a> UnitArrays<'a> {
    /// The arrays of `units` (with their inline projections), or `None` when one of them is
    /// not of that shape or two share a stream.
    pub(super) fn new(
        units: impl ExactSizeIterator<Item = (&'a UnitOfWork, &'a [InlineProjection])>,
    ) -> Result<Option<Self>, StoreError> {
        let n = units.len();
        let mut arrays = Self {
            stream_types: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            expected: Vec::with_capacity(n),
            message_ids: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            correlations: Vec::with_capacity(n),
            causations: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            entities: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
            event_payloads: Vec::with_capacity(n),
        };
        let mut streams = std::collections::HashSet::with_capacity(n);
        for (unit, projections) in units {
            let envelope = &unit.command.envelope;
            let (Some(entity), [event], true, true) = (
                unit.entity.as_deref(),
                &unit.events[..],
                unit.outbox.is_empty(),
                projections.is_empty(),
            ) else {
                return Ok(None);
            };
            if !streams.insert(&envelope.stream) {
                return Ok(None);
            }
            arrays.stream_types.push(&envelope.stream.entity_type);
            arrays.stream_ids.push(envelope.stream.id.as_str());
            arrays.expected.push(db_int(unit.expected.0, "sequence")?);
            arrays.message_ids.push(envelope.message_id);
            arrays.names.push(&envelope.name);
            arrays.versions.push(i64::from(envelope.version));
            arrays.correlations.push(envelope.correlation_id);
            arrays.causations.push(envelope.causation_id);
            arrays.times.push(micros(envelope.timestamp));
            arrays
                .payloads
                .push(payload_text(&unit.command.payload, "command payload")?);
            arrays.entities.push(payload_text(entity, "entity state")?);
            arrays
                .event_payloads
                .push(payload_text(&event.payload, "event payload")?);
            arrays.events.push(event);
        }
        Ok(Some(arrays))
    }
}

/// Binds `sf_commit_units`' arrays after the lock key.
pub(super) fn bind_units<'q>(
    query: Query<'q, sqlx::Postgres, PgArguments>,
    units: &'q UnitArrays<'q>,
) -> Query<'q, sqlx::Postgres, PgArguments> {
    let events = &units.events;
    query
        .bind(&units.stream_types)
        .bind(&units.stream_ids)
        .bind(&units.expected)
        .bind(&units.message_ids)
        .bind(&units.names)
        .bind(&units.versions)
        .bind(&units.correlations)
        .bind(&units.causations)
        .bind(&units.times)
        .bind(&units.payloads)
        .bind(&units.entities)
        .bind(
            events
                .iter()
                .map(|e| e.envelope.message_id)
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| &*e.envelope.name).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| i64::from(e.envelope.version))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.envelope.correlation_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.envelope.causation_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| micros(e.envelope.timestamp))
                .collect::<Vec<_>>(),
        )
        .bind(&units.event_payloads)
}

/// Binds an envelope's columns in the order every command statement lists them: message id,
/// name, version, correlation id, causation id, time.
pub(super) trait BindEnvelope<'q> {
    fn bind_envelope(self, envelope: &'q Envelope) -> Self;
}

impl<'q> BindEnvelope<'q> for Query<'q, sqlx::Postgres, PgArguments> {
    fn bind_envelope(self, envelope: &'q Envelope) -> Self {
        self.bind(envelope.message_id)
            .bind(&*envelope.name)
            .bind(i64::from(envelope.version))
            .bind(envelope.correlation_id)
            .bind(envelope.causation_id)
            .bind(micros(envelope.timestamp))
    }
}

/// The columns of new events, as arrays for one function call.
pub(super) struct EventArrays<'a> {
    ids: Vec<Uuid>,
    names: Vec<&'a str>,
    versions: Vec<i64>,
    correlations: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<&'a str>,
}

impl<'a> EventArrays<'a> {
    pub(super) fn new(events: &'a [NewEvent]) -> Result<Self, StoreError> {
        Ok(Self {
            ids: events.iter().map(|e| e.envelope.message_id).collect(),
            names: events.iter().map(|e| &*e.envelope.name).collect(),
            versions: events
                .iter()
                .map(|e| i64::from(e.envelope.version))
                .collect(),
            correlations: events.iter().map(|e| e.envelope.correlation_id).collect(),
            causations: events.iter().map(|e| e.envelope.causation_id).collect(),
            times: events
                .iter()
                .map(|e| micros(e.envelope.timestamp))
                .collect(),
            payloads: events
                .iter()
                .map(|e| payload_text(&e.payload, "event payload"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The recorded events, once the store has given them sequences after `last`,
    /// `positions`, and stored `payloads` (what a later read returns).
    fn recorded(
        events: &[NewEvent],
        stream: &StreamId,
        command_sequence: Sequence,
        last: Sequence,
        (positions, payloads): (Vec<i64>, Vec<String>),
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if positions.len() != events.len() || payloads.len() != events.len() {
            return Err(StoreError::Corrupt(format!(
                "{} positions and {} payloads returned for {} events",
                positions.len(),
                payloads.len(),
                events.len()
            )));
        }
        events
            .iter()
            .zip(positions.into_iter().zip(payloads))
            .enumerate()
            .map(|(i, (event, (position, payload)))| {
                let mut envelope = event.envelope.clone();
                envelope.stream = stream.clone();
                envelope.timestamp = micros(envelope.timestamp);
                Ok(RecordedEvent {
                    envelope,
                    sequence: Sequence(last.0 + i as u64 + 1),
                    command_sequence,
                    position: Position(from_db(position, "position")?),
                    payload: payload.into_bytes(),
                })
            })
            .collect()
    }
}

/// The columns of outbox messages, as arrays for one function call.
pub(super) struct OutboxArrays<'a> {
    stream_types: Vec<&'a str>,
    stream_ids: Vec<&'a str>,
    ids: Vec<Uuid>,
    names: Vec<&'a str>,
    versions: Vec<i64>,
    correlations: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<&'a str>,
}

impl<'a> OutboxArrays<'a> {
    pub(super) fn new(messages: &'a [OutboxMessage]) -> Result<Self, StoreError> {
        Ok(Self {
            stream_types: messages
                .iter()
                .map(|m| &*m.envelope.stream.entity_type)
                .collect(),
            stream_ids: messages
                .iter()
                .map(|m| m.envelope.stream.id.as_str())
                .collect(),
            ids: messages.iter().map(|m| m.envelope.message_id).collect(),
            names: messages.iter().map(|m| &*m.envelope.name).collect(),
            versions: messages
                .iter()
                .map(|m| i64::from(m.envelope.version))
                .collect(),
            correlations: messages.iter().map(|m| m.envelope.correlation_id).collect(),
            causations: messages.iter().map(|m| m.envelope.causation_id).collect(),
            times: messages
                .iter()
                .map(|m| micros(m.envelope.timestamp))
                .collect(),
            payloads: messages
                .iter()
                .map(|m| payload_text(&m.payload, "outbox payload"))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Inline projections as the parallel arrays `sf_commit_inline` takes; model writes are tagged
/// with the 1-based index of their projection.
#[derive(Default)]
pub(super) struct InlineArrays<'a> {
    handlers: Vec<&'a str>,
    expected: Vec<i64>,
    after: Vec<i64>,
    first_sequences: Vec<i64>,
    pub(super) models: ModelArrays<'a>,
}

impl<'a> InlineArrays<'a> {
    pub(super) fn new(projections: &'a [InlineProjection]) -> Result<Self, StoreError> {
        let mut arrays = Self::default();
        for (index, projection) in projections.iter().enumerate() {
            arrays.handlers.push(&projection.handler);
            arrays
                .expected
                .push(db_int(projection.expected.0, "position")?);
            arrays.after.push(db_int(projection.after.0, "position")?);
            arrays
                .first_sequences
                .push(db_int(projection.first_sequence.0, "event sequence")?);
            arrays.models.push(index, &projection.models)?;
        }
        Ok(arrays)
    }
}

/// Model writes of several projections as parallel arrays (the last write per model), puts and
/// deletes apart, each tagged with the 1-based index of its projection.
#[derive(Default)]
pub(super) struct ModelArrays<'a> {
    pub(super) put_owners: Vec<i32>,
    pub(super) put_types: Vec<&'a str>,
    pub(super) put_ids: Vec<&'a str>,
    pub(super) put_states: Vec<&'a str>,
    pub(super) delete_owners: Vec<i32>,
    pub(super) delete_types: Vec<&'a str>,
    pub(super) delete_ids: Vec<&'a str>,
}

impl<'a> ModelArrays<'a> {
    /// Adds the writes of the projection at `index` (0-based).
    pub(super) fn push(
        &mut self,
        index: usize,
        models: &'a [ModelWrite],
    ) -> Result<(), StoreError> {
        let owner = i32::try_from(index + 1).unwrap_or(i32::MAX);
        for write in last_writes(models) {
            match &write.state {
                Some(state) => {
                    self.put_owners.push(owner);
                    self.put_types.push(&write.model_type);
                    self.put_ids.push(write.id.as_str());
                    self.put_states
                        .push(payload_text(state, "view model state")?);
                }
                None => {
                    self.delete_owners.push(owner);
                    self.delete_types.push(&write.model_type);
                    self.delete_ids.push(write.id.as_str());
                }
            }
        }
        Ok(())
    }

    /// Binds the arrays in that order.
    pub(super) fn bind<'q>(
        &'q self,
        query: Query<'q, sqlx::Postgres, PgArguments>,
    ) -> Query<'q, sqlx::Postgres, PgArguments> {
        query
            .bind(&self.put_owners)
            .bind(&self.put_types)
            .bind(&self.put_ids)
            .bind(&self.put_states)
            .bind(&self.delete_owners)
            .bind(&self.delete_types)
            .bind(&self.delete_ids)
    }
}
