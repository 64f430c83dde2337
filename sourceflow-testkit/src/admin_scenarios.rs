//! The `admin` group: the tooling of [`StoreAdmin`], for stores whose [`Store::admin`] returns
//! `Some`: direct appends, reads from a sequence or by time, entity and model edits, and the
//! listings of entity types and stream ids.
//!
//! The scenarios call the tooling through `dyn Store`, as an inspector or an export would, so
//! they also check that [`Store::admin`] hands it out.

use std::sync::Arc;

use chrono::Duration;
use serde_json::json;
use sourceflow::store::{Page, Store, StoreAdmin, StoreError};
use sourceflow::{EntityId, Position, Sequence};

use crate::records::{
    assert_conflict, assert_same_event, assert_same_events, base_time, bytes, command, event,
    json_of, model, stream, stream_events, unit,
};

/// Fails the scenario at once, with the reason, for a store that has no tooling.
fn require_admin(store: &dyn Store) {
    assert!(
        store.admin().is_some(),
        "{store:?} has no StoreAdmin (Store::admin returns None): leave the `admin` group out"
    );
}

/// A direct append at an existing (or future) sequence is a conflict and writes nothing; at
/// the stream's last sequence it goes through.
pub async fn direct_appends_at_an_existing_sequence_conflict(store: Arc<dyn Store>) {
    require_admin(&*store);
    let s = stream("conf.Account", "a");
    for i in 0..2 {
        store.commit(unit(&s, i, 1)).await.unwrap();
    }
    let head = store.head().await.unwrap();
    for expected in [1, 5] {
        assert_conflict(
            store
                .append_command(Sequence(expected), command(&s, 9))
                .await,
            &s,
            expected,
        );
        assert_conflict(
            store
                .append_events(&s, Sequence(expected), vec![event(&s, 9)])
                .await,
            &s,
            expected,
        );
    }
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

    // The right expected sequence still goes through, and commits continue after it.
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

/// `read_stream(from)` returns a stream's events from sequence `from` (inclusive) to its end,
/// as `read_stream_range` does with an open upper bound.
pub async fn read_stream_reads_from_a_sequence(store: Arc<dyn Store>) {
    require_admin(&*store);
    let s = stream("conf.Account", "a");
    for i in 0..6 {
        store.commit(unit(&s, i, 1)).await.unwrap();
    }
    let sequences = |from: u64| {
        let store = store.clone();
        let s = s.clone();
        async move {
            store
                .read_stream(&s, Sequence(from))
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence.0)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(sequences(4).await, vec![4, 5, 6]);
    assert_eq!(sequences(6).await, vec![6]);
    assert!(sequences(7).await.is_empty());
    assert_eq!(sequences(0).await, vec![1, 2, 3, 4, 5, 6]);
    assert_same_events(
        &store.read_stream(&s, Sequence(1)).await.unwrap(),
        &stream_events(&*store, &s, Sequence(1)).await,
    );
    assert!(store
        .read_stream(&stream("conf.Account", "none"), Sequence(1))
        .await
        .unwrap()
        .is_empty());
}

/// `read_between(from, to)` returns events with `from <= timestamp < to`, in position order.
pub async fn read_between_filters_by_time(store: Arc<dyn Store>) {
    require_admin(&*store);
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

/// Deleting an entity's stored state leaves none (deleting it again is no error); the next
/// `put_entity` expects none.
pub async fn deleted_entity_state_is_gone(store: Arc<dyn Store>) {
    require_admin(&*store);
    let s = stream("conf.Account", "a");
    let state = |v: i64| bytes(&json!({ "v": v }));
    store
        .put_entity(&s, Sequence::ZERO, Sequence(1), state(1))
        .await
        .unwrap();
    store
        .put_entity(&s, Sequence(1), Sequence(2), state(2))
        .await
        .unwrap();
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
    let (version, stored) = store.get_entity(&s).await.unwrap().unwrap();
    assert_eq!((version, json_of(&stored)), (Sequence(3), json!({"v": 3})));
}

/// View models: get, put (overwrite), delete, list by pages in id order, clear per type.
pub async fn view_models_get_put_delete_list_clear(store: Arc<dyn Store>) {
    require_admin(&*store);
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

/// A 1 MiB model written directly, and non-ASCII entity type names and ids, round-trip
/// through `put_model` and the listings.
pub async fn non_ascii_names_and_large_models_round_trip(store: Arc<dyn Store>) {
    require_admin(&*store);
    let text = "Grüße, 世界 🌍 — עברית, ελληνικά, \"quoted\" \\ and \u{7f}";
    let big = json!({ "blob": "x".repeat(1 << 20), "text": text });
    let s = stream("conf.Ünïcødé", "ид-🌍-1");
    store.commit(unit(&s, 0, 1)).await.unwrap();
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

/// Entity types with commands are listed sorted; stream ids per type are paged in byte order.
pub async fn entity_types_and_stream_ids_are_paged(store: Arc<dyn Store>) {
    require_admin(&*store);
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
    require_admin(&*store);
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
    require_admin(&*store);
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
