//! Data fidelity: the values that trip up JSON stores read back identical on every backend
//! (memory, SQLite, Postgres), through a flow (`send`, replay, `state_at`, a view, `subscribe`,
//! a second process's cold reads) and through the store API; every `u64` read bound is valid
//! input; timestamps are kept in whole microseconds everywhere.
//!
//! Each check is a module of two tests, each comparing a backend with memory: `sqlite`, and
//! `postgres`, ignored unless `SOURCEFLOW_PG_URL` is set when the tests are built.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    ModelWrite, OutboxMessage, Page, ProjectionCommit, Store, StoreAdmin, StoreError, UnitOfWork,
};
use sourceflow::{EntityId, Position, Sequence, StreamId, Verification};
use support::{
    available, envelope, flow, on, on_every_backend, subscribed, text, Ledger, LedgerModel, Record,
    Tree,
};

/// Floats that a lossy parser or a decimal column gets wrong, of every finite class.
fn awkward_floats() -> Vec<f64> {
    vec![
        123_456_789.123_456_79,
        0.1,
        1.0 / 3.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        f64::EPSILON,
        5e-324, // the smallest subnormal
        -5e-324,
        2.225_073_858_507_201e-308, // the largest subnormal
        -0.0,
        0.0,
        9_007_199_254_740_993.0, // 2^53 + 1, rounded to 2^53
        1e300,
        -1.5e-310,
    ]
}

/// Strings with what JSONB refuses (U+0000), escapes, and the edges of Unicode.
fn awkward_strings() -> Vec<String> {
    [
        "\u{0}",
        "a\u{0}b\u{0}",
        "\u{1}\u{1f}\u{7f}",
        "quote \" backslash \\ slash /",
        "\u{2028}\u{2029}",
        "\u{feff}bom",
        "\u{ffff}\u{fffe}",
        "\u{10ffff}",
        "😀 Zoë ß ∑",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Every awkward value, one tree each, and one tree holding them all (as keys too).
fn awkward_trees() -> Vec<Tree> {
    let mut trees: Vec<Tree> = awkward_floats().into_iter().map(Tree::Float).collect();
    trees.extend(awkward_strings().into_iter().map(Tree::Text));
    trees.extend([
        Tree::UInt(u64::MAX),
        Tree::Int(i64::MIN),
        Tree::Int(i64::MAX),
        Tree::List(vec![]),
        Tree::Map(BTreeMap::new()),
        Tree::List(vec![Tree::List(vec![Tree::List(vec![Tree::Null])])]),
    ]);
    let all: BTreeMap<String, Tree> = awkward_strings()
        .into_iter()
        .zip(trees.iter().cloned())
        .collect();
    trees.push(Tree::Map(all));
    trees
}

fn texts(trees: &[Tree]) -> Vec<String> {
    trees.iter().map(text).collect()
}

/// Sends every awkward tree to one ledger, then reads them back every way a flow can: what the
/// next handler saw, replay, `state_at`, the view, a subscription, and a second flow's cold
/// reads of the same store. Returns the JSON text of what was read, to compare across backends.
async fn through_a_flow(store: Arc<dyn Store>) -> Vec<String> {
    let trees = awkward_trees();
    let expected = texts(&trees);
    let flow = flow(store.clone()).await;
    let id = EntityId::from("ledger");
    for tree in &trees {
        let receipt = flow
            .send(id.clone(), Record { tree: tree.clone() })
            .await
            .expect("send accepts the value");
        let recorded = receipt.events[0]
            .decode::<support::Recorded>()
            .expect("the receipt's event");
        assert_eq!(text(&recorded.tree), text(tree), "receipt");
    }

    let replayed: Ledger = flow.replay(id.clone()).await.expect("replay");
    assert_eq!(texts(&replayed.trees), expected, "replay");
    for k in [1, trees.len() / 2, trees.len()] {
        let past: Ledger = flow
            .state_at(id.clone(), Sequence(k as u64))
            .await
            .expect("state_at");
        assert_eq!(texts(&past.trees), expected[..k], "state_at {k}");
    }
    assert!(
        matches!(
            flow.verify::<Ledger>(id.clone()).await.expect("verify"),
            Verification::Consistent { .. }
        ),
        "replay reproduces the stored events and state"
    );
    let model: LedgerModel = flow
        .view_model(id.clone())
        .await
        .expect("the view")
        .expect("a model");
    assert_eq!(texts(&model.trees), expected, "view");
    let events = subscribed(&flow, Position::START, trees.len()).await;
    let seen: Vec<Tree> = events.into_iter().map(|e| e.tree).collect();
    assert_eq!(texts(&seen), expected, "subscribe");

    // Another process: nothing cached, everything from the store.
    let cold = support::flow(store.clone()).await;
    let replayed: Ledger = cold.replay(id.clone()).await.expect("cold replay");
    assert_eq!(texts(&replayed.trees), expected, "cold replay");
    let model: LedgerModel = cold.view_model(id.clone()).await.unwrap().unwrap();
    assert_eq!(texts(&model.trees), expected, "cold view");
    // The stored state is what the next command starts from.
    cold.send(id.clone(), Record { tree: Tree::Null })
        .await
        .expect("a command after them");
    let after: Ledger = cold.replay(id).await.expect("replay after");
    assert_eq!(texts(&after.trees[..trees.len()]), expected, "after");
    expected
}

on_every_backend! {
    /// Through a flow: send, the receipt, replay, `state_at`, verify, the view, a subscription,
    /// and a second flow's cold reads.
    awkward_values_round_trip_through_a_flow: through_a_flow
}

fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("a time")
}

/// Payloads as bytes: serde_json's rendering of every awkward tree, and JSON texts written by
/// other means (odd spacing, exponents beyond f64, integers beyond u64, escapes).
fn awkward_payloads() -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = awkward_trees()
        .iter()
        .map(|tree| serde_json::to_vec(tree).expect("JSON"))
        .collect();
    payloads.extend(
        [
            r#"{ "spaced" :  [ 1 , 2.50 ] }"#,
            r#"{"b":1,"a":2,"b":3}"#,
            r#"[1E400, -1e-400, 123456789012345678901234567890, -0, -0.0, 1.0]"#,
            r#""\u0000\ud83d\ude00\n\t\/""#,
            "null",
        ]
        .into_iter()
        .map(|text| text.as_bytes().to_vec()),
    );
    payloads
}

/// Every stored payload of the store API (command, entity state, event, outbox entry, view
/// model) read back byte for byte by every read.
async fn through_the_store_api(store: Arc<dyn Store>) -> Vec<Vec<u8>> {
    let payloads = awkward_payloads();
    let stream = StreamId::new("fidelity.Raw", "raw");
    let start = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .expect("a time");
    let mut receipts = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let unit = UnitOfWork {
            expected: Sequence(i as u64),
            command: StoredCommand {
                envelope: envelope(&stream, "fidelity.RawCommand", start),
                sequence: Sequence::ZERO,
                payload: payload.clone(),
            },
            entity: Some(payload.clone()),
            events: vec![NewEvent {
                envelope: envelope(&stream, "fidelity.RawEvent", start),
                payload: payload.clone(),
            }],
            outbox: vec![OutboxMessage {
                envelope: envelope(&stream, "fidelity.RawFollowUp", start),
                payload: payload.clone(),
            }],
            keys: Vec::new(),
        };
        let receipt = store.commit(unit).await.expect("commit");
        assert_eq!(&receipt.events[0].payload, payload, "receipt {i}");
        let (_, state) = store.get_entity(&stream).await.unwrap().expect("a state");
        assert_eq!(&state, payload, "entity state {i}");
        store
            .commit_projection(ProjectionCommit {
                handler: "fidelity.RawView".into(),
                expected: Position(i as u64),
                position: Position(i as u64 + 1),
                models: vec![ModelWrite {
                    model_type: "fidelity.RawModel".into(),
                    id: EntityId::from(format!("{i:03}")),
                    state: Some(payload.clone()),
                }],
                outbox: vec![],
            })
            .await
            .expect("commit_projection");
        receipts.push(receipt);
    }
    let payloads_of = |events: &[sourceflow::RecordedEvent]| -> Vec<Vec<u8>> {
        events.iter().map(|e| e.payload.clone()).collect()
    };
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    let commands: Vec<Vec<u8>> = commands.into_iter().map(|c| c.payload).collect();
    assert_eq!(commands, payloads, "load_commands");
    assert_eq!(
        payloads_of(&store.read_all(Position::START, usize::MAX).await.unwrap()),
        payloads,
        "read_all"
    );
    assert_eq!(
        payloads_of(&store.read_stream(&stream, Sequence(1)).await.unwrap()),
        payloads,
        "read_stream"
    );
    let between = store
        .read_between(start, at_micros(i64::MAX / 2), Position::START, usize::MAX)
        .await
        .unwrap();
    assert_eq!(payloads_of(&between), payloads, "read_between");
    for (receipt, payload) in receipts.iter().zip(&payloads) {
        let found = store
            .find_receipt(&stream, receipt.message_id)
            .await
            .unwrap()
            .expect("a receipt");
        assert_eq!(
            payloads_of(&found.events),
            std::slice::from_ref(payload),
            "find_receipt"
        );
    }
    let models: Vec<Vec<u8>> = store
        .list_models("fidelity.RawModel", Page::first(usize::MAX))
        .await
        .unwrap()
        .into_iter()
        .map(|(_, state)| state)
        .collect();
    assert_eq!(models, payloads, "list_models");
    let last = EntityId::from(format!("{:03}", payloads.len() - 1));
    assert_eq!(
        store.get_model("fidelity.RawModel", &last).await.unwrap(),
        payloads.last().cloned(),
        "get_model"
    );
    let outbox: Vec<Vec<u8>> = store
        .outbox_pending(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|pending| pending.message.payload)
        .collect();
    assert_eq!(outbox, payloads, "outbox_pending");
    payloads
}

on_every_backend! {
    /// Through the store API, byte for byte.
    awkward_payloads_round_trip_through_the_store_api: through_the_store_api
}

/// How many rows a read returned; a failed read fails the test, naming the read.
fn len<T>(read: Result<Vec<T>, StoreError>, what: &str) -> usize {
    read.unwrap_or_else(|e| panic!("{what}: {e}")).len()
}

/// What each read answers for bounds at and past the end of what any store can hold.
async fn with_huge_bounds(store: Arc<dyn Store>) -> Vec<usize> {
    let stream = StreamId::new("fidelity.Bounds", "b");
    let now = at_micros(1_714_564_800_000_000);
    for i in 0..3 {
        store
            .commit(UnitOfWork {
                expected: Sequence(i),
                command: StoredCommand {
                    envelope: envelope(&stream, "fidelity.Do", now),
                    sequence: Sequence::ZERO,
                    payload: b"{}".to_vec(),
                },
                entity: None,
                events: vec![NewEvent {
                    envelope: envelope(&stream, "fidelity.Done", now),
                    payload: b"{}".to_vec(),
                }],
                outbox: vec![],
                keys: Vec::new(),
            })
            .await
            .expect("commit");
        store
            .commit_projection(ProjectionCommit {
                handler: "fidelity.BoundsView".into(),
                expected: Position(i),
                position: Position(i + 1),
                models: vec![ModelWrite {
                    model_type: "fidelity.BoundsModel".into(),
                    id: EntityId::from(format!("m{i}")),
                    state: Some(b"{}".to_vec()),
                }],
                outbox: vec![],
            })
            .await
            .expect("a model");
    }
    let past_signed = Sequence(i64::MAX as u64 + 1);
    let all_time = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    let mut counts = Vec::new();
    for bound in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let (after, from) = (Position(bound), Sequence(bound));
        counts.extend([
            len(store.read_all(after, 10).await, "read_all"),
            len(store.read_stream(&stream, from).await, "read_stream"),
            len(
                store.read_stream_range(&stream, from, from).await,
                "read_stream_range from it",
            ),
            len(
                store.read_stream_range(&stream, Sequence(1), from).await,
                "read_stream_range to it",
            ),
            len(
                store.read_between(now, all_time.1, after, 10).await,
                "read_between",
            ),
            len(
                store.load_commands(&stream, from, None).await,
                "load_commands from it",
            ),
            len(
                store.load_commands(&stream, Sequence(2), Some(from)).await,
                "load_commands to it",
            ),
        ]);
    }
    let everything = Page::first(usize::MAX);
    counts.extend([
        len(
            store
                .load_commands(&stream, past_signed, Some(Sequence(1)))
                .await,
            "an empty range",
        ),
        len(
            store.read_all(Position::START, usize::MAX).await,
            "read_all",
        ),
        len(
            store
                .read_between(all_time.0, all_time.1, Position::START, usize::MAX)
                .await,
            "read_between over all time",
        ),
        len(
            store
                .list_models("fidelity.BoundsModel", everything.clone())
                .await,
            "list_models",
        ),
        len(
            store.stream_ids("fidelity.Bounds", everything).await,
            "stream_ids",
        ),
        len(store.outbox_pending(usize::MAX).await, "outbox_pending"),
    ]);
    counts
}

/// What [`with_huge_bounds`] must count.
fn counts_past_the_end() -> Vec<usize> {
    // Per bound (i64::MAX, i64::MAX + 1, u64::MAX): read_all after it, read_stream from it,
    // read_stream_range from it and up to it, read_between after it, load_commands from it and
    // up to it; then an empty range, and the unlimited reads (all events, all time, all models,
    // all streams, the empty outbox).
    let past_the_end = [0, 0, 0, 3, 0, 0, 2];
    let expected: Vec<usize> = past_the_end
        .iter()
        .chain(&past_the_end)
        .chain(&past_the_end)
        .chain(&[0, 3, 3, 3, 1, 0])
        .copied()
        .collect();
    expected
}

on_every_backend! {
    /// Any `u64` bound, and any limit, is valid input: past the end reads nothing.
    every_u64_bound_is_valid_input: with_huge_bounds, expecting counts_past_the_end()
}

/// Timestamps as read back and `read_between` answers around them, for envelopes written with
/// nanoseconds (after 1970 and before it).
async fn with_nanosecond_timestamps(store: Arc<dyn Store>) -> Vec<String> {
    let stream = StreamId::new("fidelity.Time", "t");
    let times = [
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
            .unwrap()
            .with_nanosecond(123_456_789)
            .unwrap(),
        Utc.with_ymd_and_hms(1969, 7, 20, 20, 17, 40)
            .unwrap()
            .with_nanosecond(999_999_999)
            .unwrap(),
    ];
    for (i, time) in times.iter().enumerate() {
        store
            .commit(UnitOfWork {
                expected: Sequence(i as u64),
                command: StoredCommand {
                    envelope: envelope(&stream, "fidelity.Do", *time),
                    sequence: Sequence::ZERO,
                    payload: b"{}".to_vec(),
                },
                entity: None,
                events: vec![NewEvent {
                    envelope: envelope(&stream, "fidelity.Done", *time),
                    payload: b"{}".to_vec(),
                }],
                outbox: vec![OutboxMessage {
                    envelope: envelope(&stream, "fidelity.Next", *time),
                    payload: b"{}".to_vec(),
                }],
                keys: Vec::new(),
            })
            .await
            .expect("commit");
    }
    let stored: Vec<DateTime<Utc>> = times
        .iter()
        .map(|t| t.with_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap())
        .collect();
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    let events = store.read_stream(&stream, Sequence(1)).await.unwrap();
    let outbox = store.outbox_pending(10).await.unwrap();
    for i in 0..times.len() {
        assert_eq!(commands[i].envelope.timestamp, stored[i], "command {i}");
        assert_eq!(events[i].envelope.timestamp, stored[i], "event {i}");
        assert_eq!(
            outbox[i].message.envelope.timestamp, stored[i],
            "outbox {i}"
        );
    }
    // Bounds with nanoseconds either side of each stored microsecond.
    let mut answers = Vec::new();
    for t in &stored {
        for (from_ns, to_ns) in [(-1, 1), (0, 1), (1, 1_000), (-1_000, 0), (-999, 1)] {
            let from = *t + chrono::TimeDelta::nanoseconds(from_ns);
            let to = *t + chrono::TimeDelta::nanoseconds(to_ns);
            let found = store
                .read_between(from, to, Position::START, 10)
                .await
                .expect("read_between");
            answers.push(format!("{from_ns}..{to_ns}: {}", found.len()));
        }
    }
    answers
}

/// What [`with_nanosecond_timestamps`] must answer around each stored timestamp.
fn answers_around_each_timestamp() -> Vec<String> {
    let around = [
        "-1..1: 1",
        "0..1: 1",
        "1..1000: 0",
        "-1000..0: 0",
        "-999..1: 1",
    ];
    let expected: Vec<String> = around
        .iter()
        .chain(&around)
        .map(|s| s.to_string())
        .collect();
    expected
}

on_every_backend! {
    /// Timestamps are kept in whole microseconds, and time bounds of any precision select what
    /// an exact comparison selects.
    timestamps_are_kept_in_whole_microseconds: with_nanosecond_timestamps,
    expecting answers_around_each_timestamp()
}

/// What `send` answers for each of `trees`, each to a ledger of its own: "invalid" for
/// `Error::Invalid`, anything else as it came. Nothing may be stored.
async fn answers_to(store: Arc<dyn Store>, trees: Vec<Tree>) -> Vec<String> {
    let flow = flow(store.clone()).await;
    let mut answers = Vec::new();
    for (i, tree) in trees.into_iter().enumerate() {
        answers.push(
            match flow.send(format!("ledger-{i}"), Record { tree }).await {
                Err(sourceflow::Error::Invalid(_)) => "invalid".to_owned(),
                other => format!("{other:?}"),
            },
        );
    }
    assert_eq!(
        store.head().await.unwrap(),
        Position::START,
        "nothing stored"
    );
    answers
}

/// Floats JSON cannot write are refused before commit, on memory, SQLite and (built with
/// `SOURCEFLOW_PG_URL`) Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_floats_are_refused_before_commit() {
    let non_finite = || {
        [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
            .map(Tree::Float)
            .to_vec()
    };
    for kind in available() {
        let answers = on(kind, |store| answers_to(store, non_finite())).await;
        assert_eq!(answers, ["invalid"; 3], "{kind:?}");
    }
}

/// Payloads nested deeper than the decoder reads are refused before commit, on memory, SQLite
/// and (built with `SOURCEFLOW_PG_URL`) Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_deeper_than_the_decoder_reads_are_refused_before_commit() {
    let deep = || vec![(0..100).fold(Tree::Null, |tree, _| Tree::List(vec![tree]))];
    for kind in available() {
        let answers = on(kind, |store| answers_to(store, deep())).await;
        assert_eq!(answers, ["invalid"], "{kind:?}");
    }
}
