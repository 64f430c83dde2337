//! The read side: the global log, handler positions, projection commits and resets, view
//! model pages.

use std::sync::Arc;

use serde_json::json;
use sourceflow::store::{Page, ProjectionCommit, Store, StoreError};
use sourceflow::Position;

use crate::records::{
    all_events, assert_same_events, delete, json_of, model, outbox, put, seed_models, stream, unit,
};

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
        assert!(
            paged.len() <= expected.len(),
            "paging with read_all(after) returned events at or before `after` again"
        );
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

/// Paging through many models returns every one exactly once, in id order, whatever the
/// order they were written in.
pub async fn view_models_page_in_id_order(store: Arc<dyn Store>) {
    let m = "conf.Paged";
    // 97 ids written in a scrambled order (97 is prime, so i * 37 % 97 visits each once).
    let ids: Vec<String> = (0..97).map(|i| format!("m-{:03}", i * 37 % 97)).collect();
    for id in &ids {
        seed_models(&*store, vec![put(m, id, json!({ "id": id }))]).await;
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
        assert!(
            seen.len() <= ids.len(),
            "paging with list_models returned ids at or before `after` again"
        );
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
}
