//! An export made from one store imports into another with every payload byte for byte,
//! awkward text included (U+0000, line and paragraph separators, quotes, astral characters),
//! from memory and from a SQLite file.

use std::sync::Arc;

use shop::domain::{CancelOrder, PlaceOrder};
use shop::transfer;
use sourceflow::prelude::*;
use sourceflow::store::{Store, StoreAdmin};
use sourceflow::RecordedEvent;

/// Free text a customer could type, with what JSON and line-based formats find hardest.
const REASON: &str =
    "nul\0 sep\u{2028}\u{2029} crab \u{1F980} \"quoted\" back\\slash \r\n tab\t end";

async fn history(store: &dyn Store) -> (Vec<RecordedEvent>, Vec<(String, Vec<u8>)>) {
    let events = store.read_all(Position::START, 10_000).await.unwrap();
    let mut commands = Vec::new();
    for entity_type in store.entity_types().await.unwrap() {
        let ids = store
            .stream_ids(&entity_type, sourceflow::store::Page::first(1_000))
            .await
            .unwrap();
        for id in ids {
            let stream = StreamId::new(entity_type.clone(), id);
            for command in store
                .load_commands(&stream, Sequence(1), None)
                .await
                .unwrap()
            {
                commands.push((command.envelope.name.to_string(), command.payload));
            }
        }
    }
    (events, commands)
}

async fn round_trip(source: Arc<dyn Store>, target: Arc<dyn Store>) {
    let flow = SourceFlow::builder()
        .shared_store(source.clone())
        .build()
        .await
        .unwrap();
    let order = EntityId::from("order-awkward");
    flow.send(
        &order,
        PlaceOrder {
            customer_id: "alice".into(),
            contact: None,
        },
    )
    .await
    .unwrap();
    flow.send(
        &order,
        CancelOrder {
            reason: REASON.into(),
        },
    )
    .await
    .unwrap();

    let mut exported = Vec::new();
    transfer::export(&*source, &mut exported).await.unwrap();
    let text = String::from_utf8(exported).expect("an export is UTF-8");
    let plan = transfer::parse(&text).unwrap();
    transfer::apply(&*target, plan, |_, _| {}).await.unwrap();

    let (source_events, source_commands) = history(&*source).await;
    let (target_events, target_commands) = history(&*target).await;
    assert_eq!(source_events, target_events, "events, envelopes and bytes");
    assert_eq!(source_commands, target_commands, "commands, bytes");
    let cancel = target_commands
        .iter()
        .find(|(name, _)| name == "shop.CancelOrder")
        .expect("the cancel command was imported");
    let back: CancelOrder = serde_json::from_slice(&cancel.1).unwrap();
    assert_eq!(back.reason, REASON);

    // The imported log replays to the same order.
    let copy = SourceFlow::builder()
        .shared_store(target)
        .build()
        .await
        .unwrap();
    let replayed: shop::domain::Order = copy.replay(&order).await.unwrap();
    let original: shop::domain::Order = flow.replay(&order).await.unwrap();
    assert_eq!(
        serde_json::to_value(&replayed).unwrap(),
        serde_json::to_value(&original).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_text_survives_export_and_import_in_memory() {
    round_trip(Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_text_survives_export_and_import_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let source = sourceflow_sqlx::SqliteStore::open(dir.path().join("source.db"))
        .await
        .unwrap();
    let target = sourceflow_sqlx::SqliteStore::open(dir.path().join("target.db"))
        .await
        .unwrap();
    round_trip(Arc::new(source), Arc::new(target)).await;
}

/// An export made after an order's stream was deleted holds none of its payloads, and imports
/// into a store where the order is deleted too.
async fn export_after_deletion(source: Arc<dyn Store>, target: Arc<dyn Store>) {
    const SECRET: &str = "the reason nobody may read again";
    let flow = SourceFlow::builder()
        .shared_store(source.clone())
        .build()
        .await
        .unwrap();
    let (forgotten, kept) = (
        EntityId::from("order-forgotten"),
        EntityId::from("order-kept"),
    );
    for order in [&forgotten, &kept] {
        flow.send(
            order,
            PlaceOrder {
                customer_id: "alice".into(),
                contact: None,
            },
        )
        .await
        .unwrap();
        flow.send(
            order,
            CancelOrder {
                reason: SECRET.into(),
            },
        )
        .await
        .unwrap();
    }
    flow.delete_stream::<shop::domain::Order>(&forgotten)
        .await
        .unwrap();

    let mut exported = Vec::new();
    transfer::export(&*source, &mut exported).await.unwrap();
    let text = String::from_utf8(exported).expect("an export is UTF-8");
    // Only the kept order's cancel carries the reason: its command and its event.
    let lines_with_secret: Vec<&str> = text.lines().filter(|l| l.contains(SECRET)).collect();
    assert_eq!(lines_with_secret.len(), 2, "{lines_with_secret:#?}");
    assert!(lines_with_secret.iter().all(|l| l.contains("order-kept")));
    assert!(text.contains("sourceflow.StreamDeleted"));

    let plan = transfer::parse(&text).unwrap();
    transfer::apply(&*target, plan, |_, _| {}).await.unwrap();
    let copy = SourceFlow::builder()
        .shared_store(target)
        .build()
        .await
        .unwrap();
    assert!(matches!(
        copy.send(
            &forgotten,
            CancelOrder {
                reason: "again".into()
            }
        )
        .await,
        Err(Error::StreamDeleted { .. })
    ));
    let kept_order: shop::domain::Order = copy.replay(&kept).await.unwrap();
    let original: shop::domain::Order = flow.replay(&kept).await.unwrap();
    assert_eq!(
        serde_json::to_value(&kept_order).unwrap(),
        serde_json::to_value(&original).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_after_deletion_holds_no_erased_payload_in_memory() {
    export_after_deletion(Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_after_deletion_holds_no_erased_payload_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let source = sourceflow_sqlx::SqliteStore::open(dir.path().join("source.db"))
        .await
        .unwrap();
    let target = sourceflow_sqlx::SqliteStore::open(dir.path().join("target.db"))
        .await
        .unwrap();
    export_after_deletion(Arc::new(source), Arc::new(target)).await;
}
