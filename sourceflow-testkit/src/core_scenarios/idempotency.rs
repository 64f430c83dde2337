//! Idempotent message ids: a resent command is answered with its original receipt, at any
//! depth of its stream and under concurrency, and commits once.

use std::sync::Arc;

use serde_json::json;
use sourceflow::store::Store;
use sourceflow::Sequence;
use uuid::Uuid;

use crate::records::{all_events, assert_same_events, bytes, outbox, stream, unit};

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
