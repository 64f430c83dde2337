//! The command log and each stream's events: dense sequences, conflicts, isolation, ranges,
//! large and non-ASCII records, long streams.

use std::sync::Arc;

use serde_json::json;
use sourceflow::message::NewEvent;
use sourceflow::store::{OutboxMessage, Store};
use sourceflow::Sequence;

use crate::records::{
    all_events, assert_conflict, assert_same_events, bytes, event, json_of, model, outbox, put,
    seed_models, stream, stream_events, unit,
};

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
    assert_same_events(&stream_events(&*store, &s, Sequence(1)).await, &recorded);
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
    assert_eq!(stream_events(&*store, &s, Sequence(1)).await.len(), 2);
    assert_eq!(store.get_entity(&s).await.unwrap(), entity);
    assert!(store.outbox_pending(10).await.unwrap().is_empty());

    // The right expected sequence still goes through.
    assert_eq!(
        store.commit(unit(&s, 2, 1)).await.unwrap().sequence,
        Sequence(3)
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
    assert_eq!(stream_events(&*store, &order, Sequence(1)).await.len(), 2);
    assert_eq!(stream_events(&*store, &account, Sequence(1)).await.len(), 3);
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

/// `load_commands(from, to)` and `read_stream_range(from, to)` are inclusive at both ends, and
/// a bound past the end (or none) reads to the end of the stream.
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
    let events: Vec<_> = stream_events(&*store, &s, Sequence(4))
        .await
        .iter()
        .map(|e| e.sequence.0)
        .collect();
    assert_eq!(events, vec![4, 5, 6]);
    assert!(stream_events(&*store, &s, Sequence(7)).await.is_empty());
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
    let events = stream_events(&*store, &s, Sequence(1)).await;
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
    seed_models(
        &*store,
        vec![put("conf.Ünïcødé", s.id.as_str(), big.clone())],
    )
    .await;
    assert_eq!(
        model(&*store, "conf.Ünïcødé", s.id.as_str()).await,
        Some(big)
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
