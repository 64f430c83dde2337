//! Contract 3 on Postgres, through the runtime: an event whose transaction commits late with a
//! lower position is delivered by `subscribe` and applied by views, before anything after it.

use std::time::Duration;

use futures_util::StreamExt;
use sourceflow::prelude::*;
use sourceflow_tests::scenarios::{Add, TallyModel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn subscribe_and_views_deliver_a_late_commit_in_order() {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_late_{}", uuid::Uuid::new_v4().simple());
    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(&url, &schema)
        .await
        .unwrap();
    let lock_key = store.append_lock_key();
    let flow = sourceflow_tests::scenarios::flow(std::sync::Arc::new(store)).await;
    let first = flow.send("before", Add { n: 1 }).await.unwrap();
    let p1 = first.events[0].position;
    let mut events = Box::pin(flow.subscribe(Position::START));
    assert_eq!(events.next().await.unwrap().unwrap().position, p1);

    // Another writer's transaction: it has taken the append lock and a position, and has not
    // committed yet (what the store's commit does, stopped before COMMIT).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut held = pool.begin().await.unwrap();
    sqlx::query(&format!("SET LOCAL search_path TO \"{schema}\""))
        .execute(&mut *held)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key)
        .execute(&mut *held)
        .await
        .unwrap();
    let late: i64 = sqlx::query_scalar(
        "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
         name, version, correlation_id, created_at, payload) \
         VALUES ('test.Tally', 'late', 1, 0, $1, 'test.Added', 1, $1, now(), '{\"n\":5,\"total\":5}') \
         RETURNING position",
    )
    .bind(uuid::Uuid::now_v7())
    .fetch_one(&mut *held)
    .await
    .unwrap();

    // A command committed meanwhile waits for the lower position instead of overtaking it.
    let after = {
        let flow = flow.clone();
        tokio::spawn(async move { flow.send("after", Add { n: 1 }).await })
    };
    let nothing = tokio::time::timeout(Duration::from_millis(600), events.next()).await;
    assert!(
        nothing.is_err(),
        "subscribe delivered {nothing:?} past an uncommitted position"
    );
    held.commit().await.unwrap();

    let receipt = after.await.unwrap().unwrap();
    let next = events.next().await.unwrap().unwrap();
    assert_eq!(
        next.position,
        Position(late as u64),
        "the late commit comes first"
    );
    assert_eq!(next.envelope.stream.id, EntityId::from("late"));
    let then = events.next().await.unwrap().unwrap();
    assert_eq!(then.position, receipt.events[0].position);

    // Views apply it too, exactly once.
    flow.catch_up().await.unwrap();
    let late_view: TallyModel = flow.view_model("late").await.unwrap().unwrap();
    assert_eq!(
        late_view,
        TallyModel {
            applied: 1,
            total: 5
        }
    );
    let after_view: TallyModel = flow.view_model("after").await.unwrap().unwrap();
    assert_eq!(after_view.applied, 1);
    pool.close().await;
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}
