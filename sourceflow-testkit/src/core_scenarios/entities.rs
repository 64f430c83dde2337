//! Entity states: optimistic versions, and the combined read of an entity and view models.

use std::sync::Arc;

use serde_json::{json, Value};
use sourceflow::store::Store;
use sourceflow::{EntityId, Sequence};

use crate::records::{assert_conflict, bytes, json_of, put, seed_models, stream, unit};

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
    seed_models(
        &*store,
        vec![
            put(m, "ewm", json!({"n": 1})),
            put(other, "ewm", json!({"n": 2})),
        ],
    )
    .await;
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
