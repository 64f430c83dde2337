//! Contract 2 and 3 on Postgres under concurrent commits: 32 writers, spread over two stores
//! with a pool each (two processes' worth of connections, in one test process), commit while a
//! catch-up reader on a third store follows the log. The reader sees every event exactly once,
//! in global order, each stream's events in sequence order without a gap, and exactly the
//! events the log holds; each writer's views applied every event of its streams exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use sourceflow::prelude::*;
use sourceflow_sqlx::PostgresStore;
use sourceflow_tests::scenarios::{Add, TallyModel};

const WRITERS: usize = 32;
const COMMANDS: i64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_reader_sees_every_event_of_32_concurrent_writers_once_and_in_order() {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_writers_{}", uuid::Uuid::new_v4().simple());
    let open = || async {
        let store = PostgresStore::builder(&url)
            .schema(&schema)
            .max_connections(16)
            .connect()
            .await
            .unwrap();
        sourceflow_tests::scenarios::flow(Arc::new(store)).await
    };
    let writers = [open().await, open().await];
    let reader = open().await;
    let total = WRITERS * COMMANDS as usize;

    let seen = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let mut events = Box::pin(reader.subscribe(Position::START));
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let event = events.next().await.unwrap().unwrap();
                seen.push((
                    event.position,
                    event.envelope.stream.id.to_string(),
                    event.sequence,
                ));
            }
            seen
        })
    };

    let sends = (0..WRITERS).map(|w| {
        let flow = writers[w % 2].clone();
        tokio::spawn(async move {
            let id = format!("writer-{w}");
            for n in 1..=COMMANDS {
                let receipt = flow.send(id.as_str(), Add { n }).await.unwrap();
                assert_eq!(receipt.sequence, Sequence(n as u64));
                // Read your writes: this process's view has applied the command's event.
                let model: TallyModel = flow.view_model(id.as_str()).await.unwrap().unwrap();
                assert_eq!(model.applied, n as u64, "{id} after command {n}");
            }
        })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.unwrap();
    }
    let seen = seen.await.unwrap();

    // In global order, each event once.
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions not strictly increasing"
    );
    // Each stream dense and in order.
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (_, stream, sequence) in &seen {
        let expected = next.entry(stream.as_str()).or_insert(1);
        assert_eq!(*sequence, Sequence(*expected), "{stream} out of order");
        *expected += 1;
    }
    assert_eq!(next.len(), WRITERS);
    assert!(next.values().all(|&n| n == COMMANDS as u64 + 1));
    // Exactly what the log holds: nothing the reader was shown is missing from it, nor the
    // other way round.
    let mut logged = Vec::with_capacity(total);
    let mut from = Position::START;
    loop {
        let page = reader.store().read_all(from, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.position;
        logged.extend(page.iter().map(|e| e.position));
    }
    assert_eq!(
        seen.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(),
        logged,
        "the reader's events differ from the log"
    );

    // Views in every store applied each event exactly once once caught up.
    for flow in writers.iter().chain([&reader]) {
        flow.catch_up().await.unwrap();
        for w in 0..WRITERS {
            let model: TallyModel = flow
                .view_model(format!("writer-{w}").as_str())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(model.applied, COMMANDS as u64);
            assert_eq!(model.total, COMMANDS * (COMMANDS + 1) / 2);
        }
    }
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}
