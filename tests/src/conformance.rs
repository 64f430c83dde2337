//! The store conformance suite: the storage contract of `sourceflow::store`, written once and
//! run against every backend with [`conformance_suite!`](crate::conformance_suite).
//!
//! Each scenario is a `pub async fn` taking a fresh, empty store. Timestamps are whole
//! microseconds (what Postgres keeps) and payloads are compared as JSON values (Postgres JSONB
//! normalises whitespace), so one set of assertions holds on every backend.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use futures_util::FutureExt;
use serde_json::{json, Value};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    InlineProjection, ModelWrite, OutboxMessage, Page, ProjectionCommit, Store, StoreAdmin,
    StoreError, UnitOfWork,
};
use sourceflow::{EntityId, Envelope, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

/// A store under test and what to release when the scenario is over.
pub struct Fixture {
    /// The store, fresh and empty.
    pub store: Arc<dyn Store>,
    cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Fixture {
    /// A store with nothing to clean up.
    pub fn new(store: impl Store + 'static) -> Self {
        Self {
            store: Arc::new(store),
            cleanup: None,
        }
    }

    /// A store and a clean-up step (drop a schema, delete a directory) run after the
    /// scenario, also when it fails.
    pub fn with_cleanup(
        store: impl Store + 'static,
        cleanup: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            store: Arc::new(store),
            cleanup: Some(Box::pin(cleanup)),
        }
    }

    /// Runs `scenario` on the store, then the clean-up; a failed scenario fails after it.
    pub async fn run<F, Fut>(self, scenario: F)
    where
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Fixture { store, cleanup } = self;
        let outcome = AssertUnwindSafe(scenario(store)).catch_unwind().await;
        if let Some(cleanup) = cleanup {
            cleanup.await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance scenario (plus the proptest) in a module
/// named `$backend`. `$fixture` is an expression evaluated afresh for every test, a future of
/// `Option<Fixture>`; `None` skips the test (a backend that is not available here).
///
/// ```text
/// sourceflow_tests::conformance_suite!(sqlite_memory, async {
///     Some(Fixture::new(SqliteStore::memory().await.expect("open")))
/// });
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance_suite!(@scenarios $fixture;
                sequences_are_dense_from_one,
                append_at_existing_sequence_conflicts,
                streams_of_different_types_are_isolated,
                range_reads_are_inclusive,
                read_all_pages_in_global_order,
                read_between_filters_by_time,
                positions_are_per_handler,
                commit_projection_is_compare_and_set,
                reset_projection_clears_models_and_position,
                resent_message_id_is_accepted_once,
                resent_message_id_is_found_in_a_long_stream,
                concurrent_duplicates_commit_once,
                entity_versions_are_optimistic,
                view_models_get_put_delete_list_clear,
                view_models_page_in_id_order,
                entity_with_models_reads_both,
                large_and_non_ascii_payloads_round_trip,
                ten_thousand_commands_load_in_order,
                outbox_pending_and_remove,
                entity_types_and_stream_ids_are_paged,
                append_events_continue_the_stream,
                commands_and_event_appends_race,
                inline_projection_commits_with_the_unit,
                inline_projection_is_refused_when_an_assumption_fails,
                inline_projection_is_atomic_with_the_unit,
            );

            /// Random interleavings of appends with right and wrong expected sequences (and
            /// races of two appends at once) keep sequences dense and reject exactly the
            /// wrong ones.
            #[test]
            fn sequence_invariants_hold_under_random_interleavings() {
                let runtime = ::tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                let Some(fixture) = runtime.block_on($fixture) else {
                    return;
                };
                let store = fixture.store.clone();
                let config = ::proptest::test_runner::Config {
                    cases: 32,
                    failure_persistence: None,
                    ..::proptest::test_runner::Config::default()
                };
                let mut runner = ::proptest::test_runner::TestRunner::new(config);
                let ops = ::proptest::collection::vec(
                    (0usize..3, -2i64..=2, ::proptest::bool::weighted(0.2)),
                    1..40,
                );
                let result = runner.run(&ops, |ops| {
                    runtime
                        .block_on($crate::conformance::sequence_invariants(store.clone(), ops))
                        .map_err(::proptest::test_runner::TestCaseError::fail)
                });
                drop(store);
                runtime.block_on(fixture.run(|_| async {}));
                if let Err(e) = result {
                    panic!("{e}");
                }
            }
        }
    };
    (@scenarios $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(fixture) = $fixture.await {
                    fixture.run($crate::conformance::$name).await;
                }
            }
        )*
    };
}

// ---- builders -------------------------------------------------------------------------------

/// Now, to the microsecond.
pub fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn base_time() -> DateTime<Utc> {
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

fn bytes(value: &Value) -> Vec<u8> {
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

fn assert_conflict(result: Result<impl std::fmt::Debug, StoreError>, on: &StreamId, at: u64) {
    match result {
        Err(StoreError::Conflict { stream, expected }) => {
            assert_eq!((&stream, expected), (on, Sequence(at)));
        }
        other => panic!("expected a conflict on {on} at {at}, got {other:?}"),
    }
}

async fn all_events(store: &dyn Store) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("read_all")
}

// ---- scenarios ------------------------------------------------------------------------------

/// Command and event sequences start at 1 and are dense; positions increase.
pub async fn sequences_are_dense_from_one(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence::ZERO);
    let mut recorded = Vec::new();
    for i in 0..5u64 {
        let receipt = store.commit(unit(&s, i, 2)).await.unwrap();
        assert_eq!(receipt.sequence, Sequence(i + 1));
        assert!(!receipt.duplicate);
        assert_eq!(receipt.stream, s);
        let sequences: Vec<_> = receipt.events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![Sequence(2 * i + 1), Sequence(2 * i + 2)]);
        assert!(receipt
            .events
            .iter()
            .all(|e| e.command_sequence == Sequence(i + 1)));
        recorded.extend(receipt.events);
    }
    assert!(recorded.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(5));

    let commands = store.load_commands(&s, Sequence(1), None).await.unwrap();
    let sequences: Vec<_> = commands.iter().map(|c| c.sequence.0).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
    for (i, c) in commands.iter().enumerate() {
        assert_eq!(json_of(&c.payload), json!({ "n": i + 1 }));
        assert_eq!(c.envelope.stream, s);
        assert_eq!(c.envelope.name, "conf.Add");
    }
    assert_same_events(
        &store.read_stream(&s, Sequence(1)).await.unwrap(),
        &recorded,
    );
    assert_same_events(&all_events(&*store).await, &recorded);
    let (version, state) = store.get_entity(&s).await.unwrap().expect("an entity");
    assert_eq!(
        (version, json_of(&state)),
        (Sequence(5), json!({ "total": 5 }))
    );
    assert_eq!(store.head().await.unwrap(), recorded[9].position);
}

/// A write at an existing (or future) sequence is a conflict and writes nothing.
pub async fn append_at_existing_sequence_conflicts(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let target = stream("conf.Account", "b");
    for i in 0..2 {
        store.commit(unit(&s, i, 1)).await.unwrap();
    }
    let head = store.head().await.unwrap();
    let entity = store.get_entity(&s).await.unwrap();

    for expected in [0, 1, 5] {
        let mut stale = unit(&s, expected, 2);
        stale.outbox.push(outbox(&target, 1));
        assert_conflict(store.commit(stale).await, &s, expected);
    }
    assert_conflict(
        store.append_command(Sequence(1), command(&s, 9)).await,
        &s,
        1,
    );
    assert_conflict(
        store
            .append_events(&s, Sequence(1), vec![event(&s, 9)])
            .await,
        &s,
        1,
    );

    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(2));
    assert_eq!(
        store
            .load_commands(&s, Sequence(1), None)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.read_stream(&s, Sequence(1)).await.unwrap().len(), 2);
    assert_eq!(store.get_entity(&s).await.unwrap(), entity);
    assert!(store.outbox_pending(10).await.unwrap().is_empty());

    // The right expected sequence still goes through.
    assert_eq!(
        store
            .append_command(Sequence(2), command(&s, 3))
            .await
            .unwrap(),
        Sequence(3)
    );
    assert_eq!(
        store.commit(unit(&s, 3, 1)).await.unwrap().sequence,
        Sequence(4)
    );
}

/// Two entity types with the same id never share a stream.
pub async fn streams_of_different_types_are_isolated(store: Arc<dyn Store>) {
    let account = stream("conf.Account", "42");
    let order = stream("conf.Order", "42");
    let mut first = None;
    for i in 0..3 {
        let receipt = store.commit(unit(&account, i, 1)).await.unwrap();
        first.get_or_insert(receipt);
    }
    let first = first.expect("a receipt");
    let in_order = store.commit(unit(&order, 0, 2)).await.unwrap();
    assert_eq!(in_order.sequence, Sequence(1));
    assert_eq!(in_order.events[0].sequence, Sequence(1));

    assert_eq!(store.last_sequence(&account).await.unwrap(), Sequence(3));
    assert_eq!(store.last_sequence(&order).await.unwrap(), Sequence(1));
    let orders = store
        .load_commands(&order, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].envelope.stream, order);
    assert_eq!(
        store.read_stream(&order, Sequence(1)).await.unwrap().len(),
        2
    );
    assert_eq!(
        store
            .read_stream(&account, Sequence(1))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store.get_entity(&account).await.unwrap().unwrap().0,
        Sequence(3)
    );
    assert_eq!(
        store.get_entity(&order).await.unwrap().unwrap().0,
        Sequence(1)
    );

    // Message ids are unique per stream: the same id in another stream is a new command.
    assert!(store
        .find_receipt(&order, first.message_id)
        .await
        .unwrap()
        .is_none());
    let mut reused = unit(&order, 1, 0);
    reused.command.envelope.message_id = first.message_id;
    let receipt = store.commit(reused).await.unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(receipt.sequence, Sequence(2));
}

/// `load_commands(from, to)` and `read_stream_range(from, to)` are inclusive at both ends;
/// `read_stream(from)` likewise.
pub async fn range_reads_are_inclusive(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    for i in 0..6 {
        store.commit(unit(&s, i, 1)).await.unwrap();
    }
    let range = |from: u64, to: Option<u64>| {
        let store = store.clone();
        let s = s.clone();
        async move {
            store
                .load_commands(&s, Sequence(from), to.map(Sequence))
                .await
                .unwrap()
                .iter()
                .map(|c| c.sequence.0)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(range(2, Some(4)).await, vec![2, 3, 4]);
    assert_eq!(range(0, Some(2)).await, vec![1, 2]);
    assert_eq!(range(3, Some(3)).await, vec![3]);
    assert_eq!(range(5, None).await, vec![5, 6]);
    assert_eq!(range(4, Some(100)).await, vec![4, 5, 6]);
    assert_eq!(range(7, None).await, Vec::<u64>::new());
    assert_eq!(range(4, Some(3)).await, Vec::<u64>::new());
    let events: Vec<_> = store
        .read_stream(&s, Sequence(4))
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence.0)
        .collect();
    assert_eq!(events, vec![4, 5, 6]);
    assert!(store.read_stream(&s, Sequence(7)).await.unwrap().is_empty());
    let events = |from: u64, to: u64| {
        let store = store.clone();
        let s = s.clone();
        async move {
            store
                .read_stream_range(&s, Sequence(from), Sequence(to))
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence.0)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(events(2, 4).await, vec![2, 3, 4]);
    assert_eq!(events(0, 2).await, vec![1, 2]);
    assert_eq!(events(3, 3).await, vec![3]);
    assert_eq!(events(4, 100).await, vec![4, 5, 6]);
    assert_eq!(events(7, 10).await, Vec::<u64>::new());
    assert_eq!(events(4, 3).await, Vec::<u64>::new());
}

/// `read_all` returns every event once, in position order, page by page.
pub async fn read_all_pages_in_global_order(store: Arc<dyn Store>) {
    let streams = [
        stream("conf.Account", "x"),
        stream("conf.Account", "y"),
        stream("conf.Order", "z"),
    ];
    let mut expected = Vec::new();
    for round in 0..4u64 {
        for (i, s) in streams.iter().enumerate() {
            let receipt = store
                .commit(unit(s, round, 1 + (i + round as usize) % 2))
                .await
                .unwrap();
            expected.extend(receipt.events);
        }
    }
    assert_eq!(expected.len(), 18);
    assert_same_events(&all_events(&*store).await, &expected);

    let mut paged = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_same_events(&paged, &expected);
    assert!(paged.windows(2).all(|w| w[0].position < w[1].position));
    for s in &streams {
        let sequences: Vec<_> = paged
            .iter()
            .filter(|e| &e.envelope.stream == s)
            .map(|e| e.sequence.0)
            .collect();
        assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    }
    let head = store.head().await.unwrap();
    assert_eq!(head, expected[17].position);
    assert!(store.read_all(head, 10).await.unwrap().is_empty());
    assert!(store.read_all(Position::START, 0).await.unwrap().is_empty());
    let middle = expected[8].position;
    assert_same_events(&store.read_all(middle, 3).await.unwrap(), &expected[9..12]);
}

/// `read_between(from, to)` returns events with `from <= timestamp < to`, in position order.
pub async fn read_between_filters_by_time(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let base = base_time();
    let at =
        |minutes: i64, seconds: i64| base + Duration::minutes(minutes) + Duration::seconds(seconds);
    let mut recorded = Vec::new();
    for (i, t) in [
        at(0, 0),
        at(1, 0),
        at(2, 0),
        at(3, 0),
        at(4, 0),
        at(5, 0),
        at(3, 30),
    ]
    .into_iter()
    .enumerate()
    {
        let mut u = unit(&s, i as u64, 1);
        u.events[0].envelope.timestamp = t;
        recorded.extend(store.commit(u).await.unwrap().events);
    }
    let between = store
        .read_between(at(2, 0), at(5, 0), Position::START, 100)
        .await
        .unwrap();
    let expected = [&recorded[2], &recorded[3], &recorded[4], &recorded[6]];
    assert_eq!(between.len(), expected.len());
    for (a, e) in between.iter().zip(expected) {
        assert_same_event(a, e);
    }
    // Paged, and resumed after a position.
    let first = store
        .read_between(at(2, 0), at(5, 0), Position::START, 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let rest = store
        .read_between(at(2, 0), at(5, 0), first[1].position, 100)
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .chain(&rest)
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        between.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert!(store
        .read_between(at(10, 0), at(20, 0), Position::START, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .read_between(at(0, 0), at(0, 1), Position::START, 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Each handler has its own position, `START` until set.
pub async fn positions_are_per_handler(store: Arc<dyn Store>) {
    assert_eq!(
        store.get_position("conf.ViewA").await.unwrap(),
        Position::START
    );
    store.set_position("conf.ViewA", Position(5)).await.unwrap();
    store.set_position("conf.ViewB", Position(7)).await.unwrap();
    assert_eq!(store.get_position("conf.ViewA").await.unwrap(), Position(5));
    assert_eq!(store.get_position("conf.ViewB").await.unwrap(), Position(7));
    store.set_position("conf.ViewA", Position(9)).await.unwrap();
    assert_eq!(store.get_position("conf.ViewA").await.unwrap(), Position(9));
    assert_eq!(store.get_position("conf.ViewB").await.unwrap(), Position(7));
    assert_eq!(
        store.get_position("conf.ViewC").await.unwrap(),
        Position::START
    );
}

fn put(model_type: &str, id: &str, state: Value) -> ModelWrite {
    ModelWrite {
        model_type: model_type.to_owned().into(),
        id: EntityId::from(id),
        state: Some(bytes(&state)),
    }
}

fn delete(model_type: &str, id: &str) -> ModelWrite {
    ModelWrite {
        model_type: model_type.to_owned().into(),
        id: EntityId::from(id),
        state: None,
    }
}

async fn model(store: &dyn Store, model_type: &str, id: &str) -> Option<Value> {
    store
        .get_model(model_type, &EntityId::from(id))
        .await
        .unwrap()
        .map(|s| json_of(&s))
}

/// `commit_projection` compares and sets the position; a conflicting batch writes nothing.
pub async fn commit_projection_is_compare_and_set(store: Arc<dyn Store>) {
    let view = "conf.SummaryView";
    let m = "conf.Summary";
    let target = stream("conf.Account", "t");
    store
        .commit_projection(ProjectionCommit {
            handler: view.into(),
            expected: Position::START,
            position: Position(3),
            models: vec![put(m, "m1", json!({"v": 1})), put(m, "m2", json!({"v": 2}))],
            outbox: vec![outbox(&target, 1)],
        })
        .await
        .unwrap();
    assert_eq!(store.get_position(view).await.unwrap(), Position(3));
    assert_eq!(model(&*store, m, "m1").await, Some(json!({"v": 1})));

    // Another process projected first: nothing of this batch is written.
    let stale = store
        .commit_projection(ProjectionCommit {
            handler: view.into(),
            expected: Position::START,
            position: Position(5),
            models: vec![put(m, "m3", json!({"v": 3})), delete(m, "m1")],
            outbox: vec![outbox(&target, 2)],
        })
        .await;
    match stale {
        Err(StoreError::PositionConflict { handler, expected }) => {
            assert_eq!((handler.as_str(), expected), (view, Position::START));
        }
        other => panic!("expected a position conflict, got {other:?}"),
    }
    assert_eq!(model(&*store, m, "m3").await, None);
    assert_eq!(model(&*store, m, "m1").await, Some(json!({"v": 1})));
    assert_eq!(store.get_position(view).await.unwrap(), Position(3));
    assert_eq!(store.outbox_pending(10).await.unwrap().len(), 1);

    // The next batch, from the stored position; writes apply in order (last one wins).
    store
        .commit_projection(ProjectionCommit {
            handler: view.into(),
            expected: Position(3),
            position: Position(6),
            models: vec![
                delete(m, "m1"),
                put(m, "m2", json!({"v": 20})),
                put(m, "m4", json!({"v": 4})),
                put(m, "m4", json!({"v": 40})),
                put(m, "m5", json!({"v": 5})),
                delete(m, "m5"),
            ],
            outbox: vec![],
        })
        .await
        .unwrap();
    assert_eq!(store.get_position(view).await.unwrap(), Position(6));
    assert_eq!(model(&*store, m, "m1").await, None);
    assert_eq!(model(&*store, m, "m2").await, Some(json!({"v": 20})));
    assert_eq!(model(&*store, m, "m4").await, Some(json!({"v": 40})));
    assert_eq!(model(&*store, m, "m5").await, None);

    // A stale expected position, and one ahead of the stored one, both conflict.
    for expected in [Position(3), Position(7)] {
        let result = store
            .commit_projection(ProjectionCommit {
                handler: view.into(),
                expected,
                position: Position(9),
                models: vec![put(m, "m9", json!({}))],
                outbox: vec![],
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::PositionConflict { .. })),
            "{result:?}"
        );
    }
    assert_eq!(model(&*store, m, "m9").await, None);
    // Another handler is independent, and a position set directly is what the CAS compares.
    store.set_position("conf.Other", Position(2)).await.unwrap();
    store
        .commit_projection(ProjectionCommit {
            handler: "conf.Other".into(),
            expected: Position(2),
            position: Position(4),
            models: vec![],
            outbox: vec![],
        })
        .await
        .unwrap();
    assert_eq!(store.get_position("conf.Other").await.unwrap(), Position(4));
    assert_eq!(store.get_position(view).await.unwrap(), Position(6));
}

/// `reset_projection` clears the handler's position and the models of the given types.
pub async fn reset_projection_clears_models_and_position(store: Arc<dyn Store>) {
    let view = "conf.SummaryView";
    store
        .commit_projection(ProjectionCommit {
            handler: view.into(),
            expected: Position::START,
            position: Position(8),
            models: vec![
                put("conf.T1", "a", json!(1)),
                put("conf.T2", "b", json!(2)),
                put("conf.T3", "c", json!(3)),
            ],
            outbox: vec![],
        })
        .await
        .unwrap();
    store
        .set_position("conf.OtherView", Position(4))
        .await
        .unwrap();
    store
        .reset_projection(view, &["conf.T1", "conf.T2"])
        .await
        .unwrap();
    assert_eq!(store.get_position(view).await.unwrap(), Position::START);
    assert_eq!(model(&*store, "conf.T1", "a").await, None);
    assert_eq!(model(&*store, "conf.T2", "b").await, None);
    assert_eq!(model(&*store, "conf.T3", "c").await, Some(json!(3)));
    assert_eq!(
        store.get_position("conf.OtherView").await.unwrap(),
        Position(4)
    );
    // A reset handler starts again from START.
    store
        .commit_projection(ProjectionCommit {
            handler: view.into(),
            expected: Position::START,
            position: Position(1),
            models: vec![],
            outbox: vec![],
        })
        .await
        .unwrap();
}

/// A resent message id is answered with the original receipt, marked duplicate, and writes
/// nothing.
pub async fn resent_message_id_is_accepted_once(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let target = stream("conf.Account", "t");
    let mut first = unit(&s, 0, 2);
    first.outbox.push(outbox(&target, 1));
    let original = store.commit(first.clone()).await.unwrap();
    assert!(!original.duplicate);
    let second = store.commit(unit(&s, 1, 1)).await.unwrap();

    let head = store.head().await.unwrap();
    let entity = store.get_entity(&s).await.unwrap();
    // Resent as is (stale expected), and as a retry would resend it (current expected).
    for expected in [0, 2] {
        let mut resent = first.clone();
        resent.expected = Sequence(expected);
        resent.entity = Some(bytes(&json!({"total": 999})));
        let receipt = store.commit(resent).await.unwrap();
        assert!(receipt.duplicate);
        assert_eq!(receipt.message_id, original.message_id);
        assert_eq!(receipt.stream, s);
        assert_eq!(receipt.sequence, Sequence(1));
        assert_same_events(&receipt.events, &original.events);
    }
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(2));
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.get_entity(&s).await.unwrap(), entity);
    assert_eq!(store.outbox_pending(10).await.unwrap().len(), 1);

    let found = store
        .find_receipt(&s, second.message_id)
        .await
        .unwrap()
        .expect("a receipt");
    assert!(found.duplicate);
    assert_eq!(found.sequence, Sequence(2));
    assert_same_events(&found.events, &second.events);
    assert!(store
        .find_receipt(&s, Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
    // A command without events has a receipt without events.
    let quiet = store.commit(unit(&s, 2, 0)).await.unwrap();
    let found = store
        .find_receipt(&s, quiet.message_id)
        .await
        .unwrap()
        .expect("a receipt");
    assert_eq!((found.sequence, found.events.len()), (Sequence(3), 0));
}

/// A resent message id is recognised at any depth of a long stream, early or late, and its
/// receipt is the original one.
pub async fn resent_message_id_is_found_in_a_long_stream(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "long");
    let mut sent = Vec::new();
    for expected in 0..40 {
        let unit = unit(&s, expected, 1);
        let receipt = store.commit(unit.clone()).await.unwrap();
        sent.push((unit, receipt));
    }
    let head = store.head().await.unwrap();
    for index in [0, 1, 15, 16, 17, 30, 39] {
        let (unit, original) = &sent[index];
        let mut resent = unit.clone();
        resent.expected = Sequence(40);
        let receipt = store.commit(resent).await.unwrap();
        assert!(receipt.duplicate, "command {index} resent");
        assert_eq!(receipt.sequence, Sequence(index as u64 + 1));
        assert_same_events(&receipt.events, &original.events);
        let found = store
            .find_receipt(&s, original.message_id)
            .await
            .unwrap()
            .expect("a receipt");
        assert_eq!(found.sequence, Sequence(index as u64 + 1));
    }
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(40));
    assert_eq!(store.head().await.unwrap(), head);
    // A new message still commits after the resends.
    let next = store.commit(unit(&s, 40, 0)).await.unwrap();
    assert!(!next.duplicate);
    assert_eq!(next.sequence, Sequence(41));
}

/// The same command sent concurrently commits exactly once; every sender gets its receipt.
/// Units of one event and of two (backends may commit the common one-event shape differently).
pub async fn concurrent_duplicates_commit_once(store: Arc<dyn Store>) {
    let mut total_events = 0;
    for (name, events) in [("a", 2), ("b", 1)] {
        let s = stream("conf.Account", name);
        store.commit(unit(&s, 0, 1)).await.unwrap();
        let same = unit(&s, 1, events);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let same = same.clone();
                tokio::spawn(async move { store.commit(same).await })
            })
            .collect();
        let mut receipts = Vec::new();
        for task in tasks {
            receipts.push(task.await.expect("no panic").expect("a receipt"));
        }
        assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 1);
        let original = receipts
            .iter()
            .find(|r| !r.duplicate)
            .expect("one original");
        for receipt in &receipts {
            assert_eq!(receipt.sequence, Sequence(2));
            assert_eq!(receipt.events.len(), events);
            assert_same_events(&receipt.events, &original.events);
        }
        assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(2));
        total_events += 1 + events;
        assert_eq!(all_events(&*store).await.len(), total_events);
    }
}

/// `put_entity` is optimistic on the stored version; `commit` saves the state at the command's
/// sequence.
pub async fn entity_versions_are_optimistic(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let state = |v: i64| bytes(&json!({ "v": v }));
    assert_eq!(store.get_entity(&s).await.unwrap(), None);
    store
        .put_entity(&s, Sequence::ZERO, Sequence(1), state(1))
        .await
        .unwrap();
    assert_conflict(
        store
            .put_entity(&s, Sequence::ZERO, Sequence(2), state(2))
            .await,
        &s,
        0,
    );
    assert_conflict(
        store
            .put_entity(&s, Sequence(2), Sequence(3), state(3))
            .await,
        &s,
        2,
    );
    let (version, stored) = store.get_entity(&s).await.unwrap().unwrap();
    assert_eq!((version, json_of(&stored)), (Sequence(1), json!({"v": 1})));
    store
        .put_entity(&s, Sequence(1), Sequence(2), state(2))
        .await
        .unwrap();
    let (version, stored) = store.get_entity(&s).await.unwrap().unwrap();
    assert_eq!((version, json_of(&stored)), (Sequence(2), json!({"v": 2})));
    store.delete_entity(&s).await.unwrap();
    assert_eq!(store.get_entity(&s).await.unwrap(), None);
    store.delete_entity(&s).await.unwrap();
    assert_conflict(
        store
            .put_entity(&s, Sequence(2), Sequence(3), state(3))
            .await,
        &s,
        2,
    );
    store
        .put_entity(&s, Sequence::ZERO, Sequence(3), state(3))
        .await
        .unwrap();

    let other = stream("conf.Account", "b");
    store.commit(unit(&other, 0, 0)).await.unwrap();
    store.commit(unit(&other, 1, 0)).await.unwrap();
    let (version, stored) = store.get_entity(&other).await.unwrap().unwrap();
    assert_eq!(
        (version, json_of(&stored)),
        (Sequence(2), json!({"total": 2}))
    );
    // An entity-less unit leaves the stored state alone.
    let mut stateless = unit(&other, 2, 0);
    stateless.entity = None;
    store.commit(stateless).await.unwrap();
    assert_eq!(
        store.get_entity(&other).await.unwrap().unwrap().0,
        Sequence(2)
    );
}

/// View models: get, put (overwrite), delete, list by pages in id order, clear per type.
pub async fn view_models_get_put_delete_list_clear(store: Arc<dyn Store>) {
    let m = "conf.Summary";
    let id = |s: &str| EntityId::from(s);
    assert_eq!(store.get_model(m, &id("a")).await.unwrap(), None);
    store
        .put_model(m, &id("a"), bytes(&json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(model(&*store, m, "a").await, Some(json!({"n": 1})));
    store
        .put_model(m, &id("a"), bytes(&json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(model(&*store, m, "a").await, Some(json!({"n": 2})));
    store.delete_model(m, &id("a")).await.unwrap();
    assert_eq!(model(&*store, m, "a").await, None);
    store.delete_model(m, &id("a")).await.unwrap();

    for key in ["d", "b", "e", "a", "c"] {
        store
            .put_model(m, &id(key), bytes(&json!({ "key": key })))
            .await
            .unwrap();
    }
    store
        .put_model("conf.Other", &id("a"), bytes(&json!(0)))
        .await
        .unwrap();
    let page = |after: Option<&str>, limit: usize| {
        let store = store.clone();
        let after = after.map(EntityId::from);
        async move {
            store
                .list_models(m, Page { after, limit })
                .await
                .unwrap()
                .into_iter()
                .map(|(id, state)| {
                    assert_eq!(json_of(&state), json!({ "key": id.as_str() }));
                    id.as_str().to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, ["a", "b"]);
    assert_eq!(page(Some("b"), 2).await, ["c", "d"]);
    assert_eq!(page(Some("d"), 2).await, ["e"]);
    assert!(page(Some("e"), 2).await.is_empty());
    assert!(page(None, 0).await.is_empty());
    assert_eq!(page(None, 100).await.len(), 5);

    store.clear_models(m).await.unwrap();
    assert!(page(None, 100).await.is_empty());
    assert_eq!(model(&*store, "conf.Other", "a").await, Some(json!(0)));
}

/// `get_entity_with_models` answers what `get_entity` and `get_model` would, in the order the
/// models were asked for, absent ones as `None`.
pub async fn entity_with_models_reads_both(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "ewm");
    let (m, other) = ("conf.Summary", "conf.Other");
    let keys = vec![
        (m, EntityId::from("ewm")),
        (other, EntityId::from("ewm")),
        (m, EntityId::from("absent")),
    ];
    let (entity, models) = store.get_entity_with_models(&s, &keys).await.unwrap();
    assert_eq!(entity, None);
    assert_eq!(models, vec![None, None, None]);

    store.commit(unit(&s, 0, 1)).await.unwrap();
    store
        .put_model(m, &EntityId::from("ewm"), bytes(&json!({"n": 1})))
        .await
        .unwrap();
    store
        .put_model(other, &EntityId::from("ewm"), bytes(&json!({"n": 2})))
        .await
        .unwrap();
    let (entity, models) = store.get_entity_with_models(&s, &keys).await.unwrap();
    assert_eq!(entity, store.get_entity(&s).await.unwrap());
    assert_eq!(entity.map(|(version, _)| version), Some(Sequence(1)));
    let models: Vec<Option<Value>> = models.iter().map(|m| m.as_deref().map(json_of)).collect();
    assert_eq!(
        models,
        vec![Some(json!({"n": 1})), Some(json!({"n": 2})), None]
    );
    let (_, none) = store.get_entity_with_models(&s, &[]).await.unwrap();
    assert!(none.is_empty());
}

/// Paging through many models returns every one exactly once, in id order, whatever the
/// order they were written in.
pub async fn view_models_page_in_id_order(store: Arc<dyn Store>) {
    let m = "conf.Paged";
    // 97 ids written in a scrambled order (97 is prime, so i * 37 % 97 visits each once).
    let ids: Vec<String> = (0..97).map(|i| format!("m-{:03}", i * 37 % 97)).collect();
    for id in &ids {
        store
            .put_model(m, &EntityId::from(id.as_str()), bytes(&json!({ "id": id })))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_models(
                m,
                Page {
                    after: after.clone(),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        for (id, state) in &page {
            assert_eq!(json_of(state), json!({ "id": id.as_str() }));
        }
        after = page.last().map(|(id, _)| id.clone());
        seen.extend(page.into_iter().map(|(id, _)| id.as_str().to_owned()));
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
}

/// A 1 MiB payload and non-ASCII text (payloads, ids, type names) round-trip everywhere.
pub async fn large_and_non_ascii_payloads_round_trip(store: Arc<dyn Store>) {
    let text = "Grüße, 世界 🌍 — עברית, ελληνικά, \"quoted\" \\ and \u{7f}";
    let big = json!({ "blob": "x".repeat(1 << 20), "text": text });
    let s = stream("conf.Ünïcødé", "ид-🌍-1");
    let target = stream("conf.Account", "目标");
    let mut u = unit(&s, 0, 0);
    u.command.payload = bytes(&big);
    u.entity = Some(bytes(&big));
    u.events.push(NewEvent {
        payload: bytes(&big),
        ..event(&s, 0)
    });
    u.events.push(NewEvent {
        payload: bytes(&json!({ "text": text })),
        ..event(&s, 1)
    });
    u.outbox.push(OutboxMessage {
        payload: bytes(&big),
        ..outbox(&target, 0)
    });
    let receipt = store.commit(u).await.unwrap();

    let commands = store.load_commands(&s, Sequence(1), None).await.unwrap();
    assert_eq!(json_of(&commands[0].payload), big);
    assert_eq!(commands[0].envelope.stream, s);
    let events = store.read_stream(&s, Sequence(1)).await.unwrap();
    assert_same_events(&events, &receipt.events);
    assert_eq!(json_of(&events[0].payload), big);
    assert_eq!(json_of(&events[1].payload), json!({ "text": text }));
    assert_eq!(
        json_of(&store.get_entity(&s).await.unwrap().unwrap().1),
        big
    );
    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(json_of(&pending[0].message.payload), big);
    assert_eq!(pending[0].message.envelope.stream, target);
    store
        .put_model("conf.Ünïcødé", &s.id, bytes(&big))
        .await
        .unwrap();
    assert_eq!(
        model(&*store, "conf.Ünïcødé", s.id.as_str()).await,
        Some(big)
    );
    assert_eq!(
        store.entity_types().await.unwrap(),
        vec!["conf.Ünïcødé".to_owned()]
    );
    assert_eq!(
        store
            .stream_ids("conf.Ünïcødé", Page::first(10))
            .await
            .unwrap(),
        vec![s.id.clone()]
    );
}

/// A stream of 10,000 commands loads completely and in order.
pub async fn ten_thousand_commands_load_in_order(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "long");
    for i in 0..10_000u64 {
        let mut u = unit(&s, i, 0);
        u.entity = None;
        store.commit(u).await.unwrap();
    }
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(10_000));
    let commands = store.load_commands(&s, Sequence(1), None).await.unwrap();
    assert_eq!(commands.len(), 10_000);
    for (i, c) in commands.iter().enumerate() {
        assert_eq!(c.sequence, Sequence(i as u64 + 1));
        assert_eq!(json_of(&c.payload), json!({ "n": i + 1 }));
    }
    let tail = store
        .load_commands(&s, Sequence(9_990), None)
        .await
        .unwrap();
    assert_eq!(tail.len(), 11);
}

/// Outbox entries from commits and projections wait in order until removed.
pub async fn outbox_pending_and_remove(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let target = stream("conf.Account", "t");
    let sent = [outbox(&target, 1), outbox(&target, 2), outbox(&s, 3)];
    let mut u = unit(&s, 0, 1);
    u.outbox = sent[..2].to_vec();
    store.commit(u).await.unwrap();
    store
        .commit_projection(ProjectionCommit {
            handler: "conf.Reactor".into(),
            expected: Position::START,
            position: Position(1),
            models: vec![],
            outbox: vec![sent[2].clone()],
        })
        .await
        .unwrap();

    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 3);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    for (p, s) in pending.iter().zip(&sent) {
        assert_eq!(p.message.envelope, s.envelope);
        assert_eq!(json_of(&p.message.payload), json_of(&s.payload));
    }
    assert_eq!(store.outbox_pending(2).await.unwrap().len(), 2);
    store
        .outbox_remove(&[pending[0].id, pending[2].id])
        .await
        .unwrap();
    let left = store.outbox_pending(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, pending[1].id);
    store.outbox_remove(&[]).await.unwrap();
    store
        .outbox_remove(&[pending[0].id, u64::MAX >> 2])
        .await
        .unwrap();
    store.outbox_remove(&[pending[1].id]).await.unwrap();
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
}

/// Entity types with commands are listed sorted; stream ids per type are paged in byte order.
pub async fn entity_types_and_stream_ids_are_paged(store: Arc<dyn Store>) {
    assert!(store.entity_types().await.unwrap().is_empty());
    for (t, id) in [
        ("conf.B", "x"),
        ("conf.A", "3"),
        ("conf.A", "1"),
        ("conf.A", "2"),
        ("conf.A", "10"),
        ("conf.A", "B"),
        ("conf.A", "a"),
    ] {
        let s = stream(t, id);
        store.commit(unit(&s, 0, 0)).await.unwrap();
        store.commit(unit(&s, 1, 0)).await.unwrap();
    }
    // Events alone do not make a stream an entity's.
    let events_only = stream("conf.EventsOnly", "e");
    store
        .append_events(&events_only, Sequence::ZERO, vec![event(&events_only, 0)])
        .await
        .unwrap();
    assert_eq!(store.entity_types().await.unwrap(), ["conf.A", "conf.B"]);

    let ids = |after: Option<&str>, limit: usize| {
        let store = store.clone();
        let after = after.map(EntityId::from);
        async move {
            store
                .stream_ids("conf.A", Page { after, limit })
                .await
                .unwrap()
                .iter()
                .map(|id| id.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(None, 2).await, ["1", "10"]);
    assert_eq!(ids(Some("10"), 2).await, ["2", "3"]);
    assert_eq!(ids(Some("3"), 2).await, ["B", "a"]);
    assert!(ids(Some("a"), 2).await.is_empty());
    assert!(ids(None, 0).await.is_empty());
    assert_eq!(ids(None, 100).await.len(), 6);
    assert!(store
        .stream_ids("conf.C", Page::first(10))
        .await
        .unwrap()
        .is_empty());
}

/// `append_events` continues a stream's event sequence, linked to its last command.
pub async fn append_events_continue_the_stream(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let appended = store
        .append_events(&s, Sequence::ZERO, vec![event(&s, 0), event(&s, 1)])
        .await
        .unwrap();
    assert_eq!(
        appended
            .iter()
            .map(|e| (e.sequence.0, e.command_sequence.0))
            .collect::<Vec<_>>(),
        [(1, 0), (2, 0)]
    );
    let first = unit(&s, 0, 1);
    let message_id = first.command.envelope.message_id;
    let receipt = store.commit(first).await.unwrap();
    assert_eq!(receipt.events[0].sequence, Sequence(3));
    assert_eq!(receipt.events[0].command_sequence, Sequence(1));
    let more = store
        .append_events(&s, Sequence(3), vec![event(&s, 2)])
        .await
        .unwrap();
    assert_eq!(
        (more[0].sequence, more[0].command_sequence),
        (Sequence(4), Sequence(1))
    );
    assert!(appended[1].position < receipt.events[0].position);
    assert!(receipt.events[0].position < more[0].position);
    let mut all = appended.clone();
    all.extend(receipt.events);
    all.extend(more);
    assert_same_events(&store.read_stream(&s, Sequence(1)).await.unwrap(), &all);
    assert!(store.append_events(&s, Sequence(3), vec![]).await.is_err());
    // The command's receipt lists the events recorded under it: its own and the one appended
    // after it, not those appended before the stream had a command.
    let found = store
        .find_receipt(&s, message_id)
        .await
        .unwrap()
        .expect("a receipt");
    assert_eq!(found.sequence, Sequence(1));
    assert_same_events(&found.events, &all[2..]);
}

/// Commands and event-only appends racing on one stream: a command at the stream's head is
/// accepted whatever events were appended meanwhile (it expects a command sequence, not an
/// event sequence), an append is accepted or refused on the event sequence alone, and the
/// stream's events stay dense, each command's right after its commit.
pub async fn commands_and_event_appends_race(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "race");
    let mut events = 0u64;
    for round in 0..60u64 {
        let command = {
            let store = store.clone();
            let unit = unit(&s, round, 1);
            tokio::spawn(async move { store.commit(unit).await })
        };
        let append = {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(async move {
                let mut expected = events;
                loop {
                    match store
                        .append_events(&s, Sequence(expected), vec![event(&s, -1)])
                        .await
                    {
                        Ok(appended) => return appended,
                        // The command's event got there first.
                        Err(StoreError::Conflict { .. }) if expected == events => expected += 1,
                        Err(e) => panic!("append at {expected}: {e}"),
                    }
                }
            })
        };
        let receipt = command
            .await
            .expect("no panic")
            .unwrap_or_else(|e| panic!("round {round}: the command at the head was refused: {e}"));
        let appended = append.await.expect("no panic");
        assert!(!receipt.duplicate);
        assert_eq!(receipt.sequence, Sequence(round + 1));
        let (ours, theirs) = (receipt.events[0].sequence.0, appended[0].sequence.0);
        let mut both = [ours, theirs];
        both.sort_unstable();
        assert_eq!(both, [events + 1, events + 2], "round {round}");
        events += 2;
    }
    let recorded = store.read_stream(&s, Sequence(1)).await.unwrap();
    assert_eq!(
        recorded.iter().map(|e| e.sequence.0).collect::<Vec<_>>(),
        (1..=events).collect::<Vec<_>>()
    );
    assert!(recorded.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(60));
}

/// One proptest case: `ops` are `(stream, offset, race)`. `offset == 0` appends at the right
/// expected sequence, anything else at a wrong one; `race` sends two appends at once with the
/// right expected sequence, of which exactly one must win.
pub async fn sequence_invariants(
    store: Arc<dyn Store>,
    ops: Vec<(usize, i64, bool)>,
) -> Result<(), String> {
    let case = Uuid::now_v7().simple().to_string();
    let streams: Vec<StreamId> = (0..3)
        .map(|i| StreamId::new("conf.Prop", format!("{case}-{i}")))
        .collect();
    let mut model = [0u64; 3];
    let mut accepted: Vec<Vec<Uuid>> = vec![Vec::new(); 3];
    for (index, offset, race) in ops {
        let s = &streams[index];
        let last = model[index];
        if race {
            let (a, b) = (unit(s, last, 1), unit(s, last, 1));
            let (ra, rb) = tokio::join!(store.commit(a.clone()), store.commit(b.clone()));
            let winners: Vec<_> = [(&a, &ra), (&b, &rb)]
                .into_iter()
                .filter(|(_, r)| r.is_ok())
                .collect();
            if winners.len() != 1 {
                return Err(format!("race on {s} at {last}: {ra:?} / {rb:?}"));
            }
            for r in [&ra, &rb] {
                if let Err(e) = r {
                    if !matches!(e, StoreError::Conflict { expected, .. } if expected.0 == last) {
                        return Err(format!("race loser on {s}: {e:?}"));
                    }
                }
            }
            accepted[index].push(winners[0].0.command.envelope.message_id);
            model[index] += 1;
            continue;
        }
        let expected = if offset == 0 {
            last
        } else {
            match last.checked_add_signed(offset) {
                Some(e) if e != last => e,
                _ => last + 1 + offset.unsigned_abs(),
            }
        };
        let u = unit(s, expected, 1);
        let id = u.command.envelope.message_id;
        match (expected == last, store.commit(u).await) {
            (true, Ok(receipt)) if receipt.sequence == Sequence(last + 1) && !receipt.duplicate => {
                accepted[index].push(id);
                model[index] += 1;
            }
            (false, Err(StoreError::Conflict { expected: e, .. })) if e == Sequence(expected) => {}
            (right, outcome) => {
                return Err(format!(
                    "append to {s} at {expected} (last {last}, right: {right}): {outcome:?}"
                ))
            }
        }
    }
    for (i, s) in streams.iter().enumerate() {
        let last = store.last_sequence(s).await.map_err(|e| e.to_string())?;
        if last != Sequence(model[i]) {
            return Err(format!("{s}: last sequence {last}, expected {}", model[i]));
        }
        let commands = store
            .load_commands(s, Sequence(1), None)
            .await
            .map_err(|e| e.to_string())?;
        let sequences: Vec<u64> = commands.iter().map(|c| c.sequence.0).collect();
        if sequences != (1..=model[i]).collect::<Vec<_>>() {
            return Err(format!("{s}: sequences {sequences:?}"));
        }
        let ids: Vec<Uuid> = commands.iter().map(|c| c.envelope.message_id).collect();
        if ids != accepted[i] {
            return Err(format!("{s}: accepted {:?}, stored {ids:?}", accepted[i]));
        }
        let events = store
            .read_stream(s, Sequence(1))
            .await
            .map_err(|e| e.to_string())?;
        let event_sequences: Vec<u64> = events.iter().map(|e| e.sequence.0).collect();
        if event_sequences != (1..=model[i]).collect::<Vec<_>>() {
            return Err(format!("{s}: event sequences {event_sequences:?}"));
        }
    }
    Ok(())
}

/// An inline projection for handler `handler` assuming the view is at `expected` (and has
/// passed `after`) and the unit's first event lands at stream sequence `first`.
fn inline(
    handler: &str,
    expected: u64,
    after: u64,
    first: u64,
    models: Vec<ModelWrite>,
) -> InlineProjection {
    InlineProjection {
        handler: handler.to_owned().into(),
        expected: Position(expected),
        after: Position(after),
        first_sequence: Sequence(first),
        models,
    }
}

/// `commit_inline` writes a view's batch in the unit's transaction when the view's position,
/// the unit's first position and its first stream sequence are what the batch assumed; the
/// view's position becomes the unit's last event's.
pub async fn inline_projection_commits_with_the_unit(store: Arc<dyn Store>) {
    let (view, m) = ("conf.InlineView", "conf.Inline");
    let s = stream("conf.Account", "inline");
    store
        .put_model(m, &EntityId::from("gone"), bytes(&json!({"v": 0})))
        .await
        .unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 0, 2),
            vec![inline(
                view,
                0,
                0,
                1,
                vec![put(m, "a", json!({"v": 1})), delete(m, "gone")],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    assert!(!receipt.duplicate);
    assert_eq!(receipt.events.len(), 2);
    let last = receipt.events[1].position;
    assert_eq!(store.get_position(view).await.unwrap(), last);
    assert_eq!(model(&*store, m, "a").await, Some(json!({"v": 1})));
    assert_eq!(model(&*store, m, "gone").await, None);

    // The next command's batch, from there.
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 1, 1),
            vec![inline(
                view,
                last.0,
                last.0,
                3,
                vec![put(m, "a", json!({"v": 2}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    assert_eq!(receipt.events[0].sequence, Sequence(3));
    assert_eq!(
        store.get_position(view).await.unwrap(),
        receipt.events[0].position
    );
    assert_eq!(model(&*store, m, "a").await, Some(json!({"v": 2})));
    assert_eq!(
        store
            .load_commands(&s, Sequence(1), None)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A batch whose assumptions no longer hold writes nothing, while the unit still commits:
/// the view's position moved, other events came in between, or the stream's event sequence
/// is not the one assumed. Several views decide independently; a unit without events applies
/// no batch.
pub async fn inline_projection_is_refused_when_an_assumption_fails(store: Arc<dyn Store>) {
    let (view, m) = ("conf.InlineView", "conf.Inline");
    let s = stream("conf.Account", "refused");

    // The view's stored position is not the one the batch started from.
    store.set_position(view, Position(7)).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 0, 1),
            vec![inline(view, 0, 0, 1, vec![put(m, "x", json!({"v": 1}))])],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(model(&*store, m, "x").await, None);
    assert_eq!(store.get_position(view).await.unwrap(), Position(7));
    assert_eq!(
        store
            .load_commands(&s, Sequence(1), None)
            .await
            .unwrap()
            .len(),
        1,
        "the unit itself committed"
    );
    assert_same_events(&all_events(&*store).await, &receipt.events);
    let head = receipt.events[0].position;

    // Another stream's events committed after the view's `after`: the batch would skip them.
    store.set_position(view, head).await.unwrap();
    let other = stream("conf.Account", "other");
    store.commit(unit(&other, 0, 1)).await.unwrap();
    let (_, applied) = store
        .commit_inline(
            unit(&s, 1, 1),
            vec![inline(
                view,
                head.0,
                head.0,
                2,
                vec![put(m, "x", json!({"v": 2}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(model(&*store, m, "x").await, None);
    assert_eq!(store.get_position(view).await.unwrap(), head);

    // The stream's events are not where the batch assumed (sequence 3 is next, not 5).
    let now = store.head().await.unwrap();
    store.set_position(view, now).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 2, 1),
            vec![inline(
                view,
                now.0,
                now.0,
                5,
                vec![put(m, "x", json!({"v": 3}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(receipt.events[0].sequence, Sequence(3));
    assert_eq!(model(&*store, m, "x").await, None);
    assert_eq!(store.get_position(view).await.unwrap(), now);

    // Two views: one holds, one started from a stale position.
    let now = store.head().await.unwrap();
    store.set_position(view, now).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 3, 1),
            vec![
                inline(view, now.0, now.0, 4, vec![put(m, "x", json!({"v": 4}))]),
                inline(
                    "conf.OtherView",
                    3,
                    now.0,
                    4,
                    vec![put("conf.Other", "y", json!({}))],
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true, false]);
    assert_eq!(model(&*store, m, "x").await, Some(json!({"v": 4})));
    assert_eq!(model(&*store, "conf.Other", "y").await, None);
    assert_eq!(
        store.get_position(view).await.unwrap(),
        receipt.events[0].position
    );
    assert_eq!(
        store.get_position("conf.OtherView").await.unwrap(),
        Position::START
    );

    // A unit with no events carries no batch.
    let now = store.head().await.unwrap();
    store.set_position(view, now).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 4, 0),
            vec![inline(
                view,
                now.0,
                now.0,
                5,
                vec![put(m, "x", json!({"v": 5}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(receipt.sequence, Sequence(5), "the unit itself committed");
    assert!(receipt.events.is_empty());
    assert_eq!(model(&*store, m, "x").await, Some(json!({"v": 4})));
    assert_eq!(store.get_position(view).await.unwrap(), now);
}

/// A unit that conflicts writes neither itself nor its batch; a resent message id is answered
/// with the original receipt and writes no batch.
pub async fn inline_projection_is_atomic_with_the_unit(store: Arc<dyn Store>) {
    let (view, m) = ("conf.InlineView", "conf.Inline");
    let s = stream("conf.Account", "atomic");
    let (first, applied) = store
        .commit_inline(
            unit(&s, 0, 1),
            vec![inline(view, 0, 0, 1, vec![put(m, "z", json!({"v": 1}))])],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    let position = first.events[0].position;

    // Wrong expected sequence: the batch would hold, but nothing is written.
    let result = store
        .commit_inline(
            unit(&s, 0, 1),
            vec![inline(
                view,
                position.0,
                position.0,
                2,
                vec![put(m, "z", json!({"v": 2}))],
            )],
        )
        .await;
    assert_conflict(result, &s, 0);
    assert_eq!(model(&*store, m, "z").await, Some(json!({"v": 1})));
    assert_eq!(store.get_position(view).await.unwrap(), position);
    assert_eq!(store.head().await.unwrap(), position);

    // The same message again: the original receipt, no batch.
    let mut resent = unit(&s, 1, 1);
    resent.command.envelope = first_command_envelope(&*store, &s).await;
    let (receipt, applied) = store
        .commit_inline(
            resent,
            vec![inline(
                view,
                position.0,
                position.0,
                2,
                vec![put(m, "z", json!({"v": 3}))],
            )],
        )
        .await
        .unwrap();
    assert!(receipt.duplicate);
    assert_eq!(receipt.sequence, Sequence(1));
    assert_eq!(applied, vec![false]);
    assert_eq!(model(&*store, m, "z").await, Some(json!({"v": 1})));
    assert_eq!(store.get_position(view).await.unwrap(), position);
}

async fn first_command_envelope(store: &dyn Store, s: &StreamId) -> Envelope {
    store
        .load_commands(s, Sequence(1), Some(Sequence(1)))
        .await
        .unwrap()
        .remove(0)
        .envelope
}
