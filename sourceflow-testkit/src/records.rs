//! Builders for the records the scenarios write (streams, envelopes, commands, events, units
//! of work) and assertions that compare what a store returns, for your own backend-specific
//! tests as much as for the kit's scenarios.
//!
//! Timestamps are whole microseconds (what every store keeps) and payloads are compared as
//! JSON values, so one set of assertions holds on every backend.

use chrono::{DateTime, TimeZone, Timelike, Utc};
use serde_json::{json, Value};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    ModelWrite, OutboxMessage, ProjectionCommit, Store, StoreError, UnitOfWork,
};
use sourceflow::{EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

/// Now, to the microsecond.
pub fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

/// `t` truncated to whole microseconds (what Postgres keeps).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// A fixed instant for scenarios that place events in time.
pub(crate) fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
}

/// A stream of entity type `entity_type`.
pub fn stream(entity_type: &'static str, id: &str) -> StreamId {
    StreamId::new(entity_type, id)
}

/// A fresh envelope in `stream`.
pub fn envelope(stream: &StreamId, name: &'static str) -> Envelope {
    Envelope {
        message_id: Uuid::now_v7(),
        name: name.into(),
        version: 1,
        stream: stream.clone(),
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        timestamp: now(),
    }
}

/// `value` as JSON bytes.
pub(crate) fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

/// Parses a stored payload.
pub fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("a JSON payload")
}

/// A command with payload `{"n": n}`.
pub fn command(stream: &StreamId, n: i64) -> StoredCommand {
    StoredCommand {
        envelope: envelope(stream, "conf.Add"),
        sequence: Sequence::ZERO,
        payload: bytes(&json!({ "n": n })),
    }
}

/// An event with payload `{"n": n}`.
pub fn event(stream: &StreamId, n: i64) -> NewEvent {
    let mut envelope = envelope(stream, "conf.Added");
    envelope.version = 2;
    envelope.causation_id = None;
    NewEvent {
        envelope,
        payload: bytes(&json!({ "n": n })),
    }
}

/// A follow-up command to `target`.
pub fn outbox(target: &StreamId, n: i64) -> OutboxMessage {
    OutboxMessage {
        envelope: envelope(target, "conf.FollowUp"),
        payload: bytes(&json!({ "follow": n })),
    }
}

/// A unit of work at `expected` with `events` events and entity state `{"total": expected+1}`.
pub fn unit(stream: &StreamId, expected: u64, events: usize) -> UnitOfWork {
    UnitOfWork {
        expected: Sequence(expected),
        command: command(stream, expected as i64 + 1),
        entity: Some(bytes(&json!({ "total": expected + 1 }))),
        events: (0..events).map(|i| event(stream, i as i64)).collect(),
        outbox: Vec::new(),
        keys: Vec::new(),
    }
}

/// Asserts two recorded events are the same record (payloads compared as JSON).
pub fn assert_same_event(actual: &RecordedEvent, expected: &RecordedEvent) {
    assert_eq!(actual.envelope, expected.envelope, "envelope");
    assert_eq!(actual.sequence, expected.sequence, "sequence");
    assert_eq!(
        actual.command_sequence, expected.command_sequence,
        "command sequence"
    );
    assert_eq!(actual.position, expected.position, "position");
    assert_eq!(
        json_of(&actual.payload),
        json_of(&expected.payload),
        "payload"
    );
}

/// Asserts two lists of recorded events are the same records, in the same order.
pub fn assert_same_events(actual: &[RecordedEvent], expected: &[RecordedEvent]) {
    assert_eq!(
        actual.iter().map(|e| e.position).collect::<Vec<_>>(),
        expected.iter().map(|e| e.position).collect::<Vec<_>>(),
        "positions"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert_same_event(a, e);
    }
}

/// Asserts `result` is a [`StoreError::Conflict`] on `on` at expected sequence `at`.
pub(crate) fn assert_conflict(
    result: Result<impl std::fmt::Debug, StoreError>,
    on: &StreamId,
    at: u64,
) {
    match result {
        Err(StoreError::Conflict { stream, expected }) => {
            assert_eq!((&stream, expected), (on, Sequence(at)));
        }
        other => panic!("expected a conflict on {on} at {at}, got {other:?}"),
    }
}

/// The whole global log.
pub(crate) async fn all_events(store: &dyn Store) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("read_all")
}

/// A model write that stores `state`.
pub(crate) fn put(model_type: &str, id: &str, state: Value) -> ModelWrite {
    ModelWrite {
        model_type: model_type.to_owned().into(),
        id: EntityId::from(id),
        state: Some(bytes(&state)),
    }
}

/// A model write that deletes the model.
pub(crate) fn delete(model_type: &str, id: &str) -> ModelWrite {
    ModelWrite {
        model_type: model_type.to_owned().into(),
        id: EntityId::from(id),
        state: None,
    }
}

/// One model's state as JSON, if stored.
pub(crate) async fn model(store: &dyn Store, model_type: &str, id: &str) -> Option<Value> {
    store
        .get_model(model_type, &EntityId::from(id))
        .await
        .unwrap()
        .map(|s| json_of(&s))
}

/// Every event of `stream` from sequence `from` on, read with the core
/// [`Store::read_stream_range`] (the upper bound is the largest sequence SQL backends store).
pub async fn stream_events(
    store: &dyn Store,
    stream: &StreamId,
    from: Sequence,
) -> Vec<RecordedEvent> {
    store
        .read_stream_range(stream, from, Sequence(i64::MAX as u64))
        .await
        .expect("read_stream_range")
}

/// The handler under which [`seed_models`] writes, kept apart from the scenarios' own.
const SEED_HANDLER: &str = "testkit.Seed";

/// Writes view models through the core [`Store::commit_projection`], as a view would, under a
/// handler of its own: how the core scenarios put models in place without tooling.
pub(crate) async fn seed_models(store: &dyn Store, models: Vec<ModelWrite>) {
    let expected = store
        .get_position(SEED_HANDLER)
        .await
        .expect("get_position");
    store
        .commit_projection(ProjectionCommit {
            handler: SEED_HANDLER.into(),
            expected,
            position: Position(expected.0 + 1),
            models,
            outbox: Vec::new(),
        })
        .await
        .expect("commit_projection");
}
