//! Contract 2 and 3 on Postgres under concurrent commits: 32 writers commit while a catch-up
//! reader follows the log, once spread over two OS processes (this test binary started twice as
//! a writer) and once over two stores with a pool each in this process. The reader sees every
//! event exactly once, in global order, each stream's events in sequence order without a gap,
//! and exactly the events the log holds; the views applied every event exactly once.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use futures_util::StreamExt;
use sourceflow::prelude::*;
use sourceflow_sqlx::PostgresStore;
use sourceflow_tests::scenarios::{Add, TallyModel};

const WRITERS: usize = 32;
const COMMANDS: i64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_reader_sees_every_event_of_32_writers_on_two_stores_once_and_in_order() {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_writers_{}", uuid::Uuid::new_v4().simple());
    let writers = [flow_in(&url, &schema).await, flow_in(&url, &schema).await];
    let reader = flow_in(&url, &schema).await;
    let total = WRITERS * COMMANDS as usize;

    let seen = {
        let reader = reader.clone();
        tokio::spawn(async move { follow(&reader, total).await })
    };

    let sends = (0..WRITERS).map(|w| {
        let flow = writers[w % 2].clone();
        tokio::spawn(async move { write(&flow, w).await })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.unwrap();
    }
    let seen = seen.await.unwrap();
    check_reader(&reader, &seen, total).await;

    // Views in every store applied each event exactly once once caught up.
    for flow in writers.iter().chain([&reader]) {
        check_views(flow).await;
    }
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}

/// Set in a writer process: the schema it writes to, and which half of the writers it runs.
const WRITER_ENV: &str = "SOURCEFLOW_TEST_WRITER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_reader_sees_every_event_of_32_writers_in_two_processes_once_and_in_order() {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_writers_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .unwrap();
    let reader = sourceflow_tests::scenarios::flow(Arc::new(store)).await;
    let total = WRITERS * COMMANDS as usize;
    let seen = {
        let reader = reader.clone();
        tokio::spawn(async move { follow(&reader, total).await })
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|half| {
            Command::new(&exe)
                .args(["--exact", "writer_process", "--ignored", "--nocapture"])
                .env(WRITER_ENV, format!("{schema}#{half}"))
                .spawn()
                .expect("start a writer process")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a writer process failed");
    }
    let seen = seen.await.unwrap();
    check_reader(&reader, &seen, total).await;
    check_views(&reader).await;
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}

/// One of the two writer processes: half of the writers, each on its own stream, concurrently.
/// Does nothing unless started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a writer process of the two-process test"]
async fn writer_process() {
    let Ok(spec) = std::env::var(WRITER_ENV) else {
        return;
    };
    let (schema, half) = spec.rsplit_once('#').unwrap();
    let half: usize = half.parse().unwrap();
    let url = sourceflow_tests::backends::pg_url();
    let flow = flow_in(&url, schema).await;
    let sends: Vec<_> = (0..WRITERS)
        .filter(|w| w % 2 == half)
        .map(|w| {
            let flow = flow.clone();
            tokio::spawn(async move { write(&flow, w).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap();
    }
}

/// Writer `w`'s commands, each checked for its sequence and read back from this process's view.
async fn write(flow: &SourceFlow, w: usize) {
    let id = format!("writer-{w}");
    for n in 1..=COMMANDS {
        let receipt = flow.send(id.as_str(), Add { n }).await.unwrap();
        assert_eq!(receipt.sequence, Sequence(n as u64));
        // Read your writes: this process's view has applied the command's event.
        let model: TallyModel = flow.view_model(id.as_str()).await.unwrap().unwrap();
        assert_eq!(model.applied, n as u64, "{id} after command {n}");
    }
}

/// What a catch-up reader from the start is shown of the first `total` events.
async fn follow(reader: &SourceFlow, total: usize) -> Vec<(Position, String, Sequence)> {
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
}

/// The reader was shown every event once, in global order, each stream dense and in order, and
/// exactly the events the log holds.
async fn check_reader(reader: &SourceFlow, seen: &[(Position, String, Sequence)], total: usize) {
    // In global order, each event once.
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions not strictly increasing"
    );
    // Each stream dense and in order.
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (_, stream, sequence) in seen {
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
}

/// Every writer's view model applied each of its events exactly once, once caught up.
async fn check_views(flow: &SourceFlow) {
    flow.catch_up().await.unwrap();
    for w in 0..WRITERS {
        let id = format!("writer-{w}");
        let model: TallyModel = flow.view_model(id.as_str()).await.unwrap().unwrap();
        assert_eq!(model.applied, COMMANDS as u64, "{id}");
        assert_eq!(model.total, COMMANDS * (COMMANDS + 1) / 2, "{id}");
    }
}

/// Inside the batches that concurrent senders share: one message id sent 16 times at once is
/// committed once and every sender gets its receipt, and 16 senders on one stream each commit
/// (conflicts retried), while other senders' units commit beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn duplicates_and_conflicts_inside_shared_batches_commit_exactly_once() {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_writers_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .unwrap();
    let flow = sourceflow_tests::scenarios::flow(Arc::new(store)).await;
    let key = uuid::Uuid::now_v7();
    let resent: Vec<_> = (0..16)
        .map(|_| {
            let flow = flow.clone();
            tokio::spawn(async move {
                flow.send_with("resent", Add { n: 7 }, SendOptions::new().message_id(key))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let contended: Vec<_> = (0..16)
        .map(|_| {
            let flow = flow.clone();
            tokio::spawn(async move { flow.send("contended", Add { n: 1 }).await.unwrap() })
        })
        .collect();
    let others: Vec<_> = (0..16)
        .map(|w| {
            let flow = flow.clone();
            tokio::spawn(async move { write(&flow, w).await })
        })
        .collect();
    let mut receipts = Vec::new();
    for send in resent {
        receipts.push(send.await.unwrap());
    }
    let mut sequences = Vec::new();
    for send in contended {
        sequences.push(send.await.unwrap().sequence.0);
    }
    for send in others {
        send.await.unwrap();
    }

    assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(receipts.iter().all(|r| r.sequence == Sequence(1)));
    assert!(receipts
        .iter()
        .all(|r| r.events.len() == 1 && r.events[0].position == receipts[0].events[0].position));
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=16).collect::<Vec<u64>>());
    flow.catch_up().await.unwrap();
    let resent: TallyModel = flow.view_model("resent").await.unwrap().unwrap();
    assert_eq!(
        resent,
        TallyModel {
            applied: 1,
            total: 7
        }
    );
    let contended: TallyModel = flow.view_model("contended").await.unwrap().unwrap();
    assert_eq!(
        contended,
        TallyModel {
            applied: 16,
            total: 16
        }
    );
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}

/// Under concurrency the commands of one process commit in groups, and the views' writes for a
/// whole group commit in the group's transaction: every sender reads its own write right after
/// `send`, the stored models and the view's stored position are exact without a catch-up, and
/// the stats count view batches committed with groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn groups_of_concurrent_commands_commit_their_views_writes_with_them() {
    let (url, schema, flow) = fresh_flow().await;
    let sends: Vec<_> = (0..WRITERS)
        .map(|w| {
            let flow = flow.clone();
            tokio::spawn(async move { write(&flow, w).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap();
    }

    let stats = flow.stats();
    assert_eq!(stats.committed, (WRITERS * COMMANDS as usize) as u64);
    assert!(
        stats.projected_in_groups > 0,
        "no view batch committed with a group: {stats:?}"
    );
    // Straight from the database, before any catch-up: every model exact, and the view's
    // stored position at the log's head.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let head: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(max(position), 0) FROM {schema}.sf_events"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    let positions: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT handler, position FROM {schema}.sf_positions WHERE handler LIKE '%TallyView'"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!positions.is_empty());
    for (handler, position) in &positions {
        assert_eq!(*position, head, "{handler} stored behind the head");
    }
    for w in 0..WRITERS {
        let id = format!("writer-{w}");
        let model: TallyModel = flow.view_model(id.as_str()).await.unwrap().unwrap();
        assert_eq!(model.applied, COMMANDS as u64, "{id}");
        assert_eq!(model.total, COMMANDS * (COMMANDS + 1) / 2, "{id}");
    }
    pool.close().await;
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}

/// Senders that stop waiting (a timeout around `send`) while their commands commit in groups
/// cost nothing to the others: every send that returns `Ok` reads its own write, and once
/// caught up every stream's view has applied exactly the events its log holds, whether the
/// commands of the stopped senders committed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn senders_that_stop_waiting_cost_their_groups_nothing() {
    let (url, schema, flow) = fresh_flow().await;
    let sends: Vec<_> = (0..WRITERS)
        .map(|w| {
            let flow = flow.clone();
            tokio::spawn(async move {
                let id = format!("stopping-{w}");
                let mut stopped = 0;
                for n in 1..=COMMANDS {
                    let send = flow.send(id.as_str(), Add { n });
                    let receipt = if n % 3 == 0 {
                        // Stops waiting somewhere between queueing and the commit's answer.
                        let wait = std::time::Duration::from_micros(
                            (w as u64 * 797 + n as u64 * 331) % 12_000,
                        );
                        match tokio::time::timeout(wait, send).await {
                            Ok(sent) => sent.unwrap(),
                            Err(_) => {
                                stopped += 1;
                                continue;
                            }
                        }
                    } else {
                        send.await.unwrap()
                    };
                    assert!(!receipt.duplicate, "{id} {n}");
                    let model: TallyModel = flow.view_model(id.as_str()).await.unwrap().unwrap();
                    assert_eq!(model.applied, receipt.sequence.0, "{id} after command {n}");
                }
                stopped
            })
        })
        .collect();
    let mut stopped = 0;
    for send in sends {
        stopped += send.await.unwrap();
    }
    assert!(
        stopped > 0,
        "no sender stopped waiting: the test checked nothing extra"
    );

    flow.catch_up().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for w in 0..WRITERS {
        let id = format!("stopping-{w}");
        let (events, total): (i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT count(*), sum((payload->>'n')::bigint)::bigint FROM {schema}.sf_events \
             WHERE stream_id = $1"
        ))
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
        let model: TallyModel = flow.view_model(id.as_str()).await.unwrap().unwrap();
        assert_eq!(model.applied, events as u64, "{id}");
        assert_eq!(model.total, total.unwrap_or(0), "{id}");
    }
    pool.close().await;
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}

/// A flow in a fresh schema: the URL, the schema, the flow.
async fn fresh_flow() -> (String, String, SourceFlow) {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_writers_{}", uuid::Uuid::new_v4().simple());
    let flow = flow_in(&url, &schema).await;
    (url, schema, flow)
}

/// A flow over a store of its own (16 connections) in `schema`.
async fn flow_in(url: &str, schema: &str) -> SourceFlow {
    let store = PostgresStore::builder(url)
        .schema(schema)
        .max_connections(16)
        .connect()
        .await
        .unwrap();
    sourceflow_tests::scenarios::flow(Arc::new(store)).await
}

/// Units handed straight to the store (`Store::commit`) by concurrent senders share the
/// store's own batches: each sender gets its own receipt, a resent unit is answered with the
/// original one, every unit commits once and the events' positions are dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn units_committed_straight_to_the_store_share_its_batches_exactly_once() {
    use sourceflow::store::Store;
    use sourceflow_testkit::records::{stream, unit};
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_writers_{}", uuid::Uuid::new_v4().simple());
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap(),
    );
    const UNITS: usize = 300;
    let units: Vec<_> = (0..UNITS)
        .map(|i| unit(&stream("conf.Account", &format!("b-{i}")), 0, 1))
        .collect();
    // Every tenth unit is sent twice at once.
    let sends: Vec<_> = units
        .iter()
        .enumerate()
        .flat_map(|(i, u)| std::iter::repeat_n(u.clone(), if i % 10 == 0 { 2 } else { 1 }))
        .map(|u| {
            let store = store.clone();
            let stream = u.command.envelope.stream.clone();
            tokio::spawn(async move { (stream, store.commit(u).await.unwrap()) })
        })
        .collect();
    let mut receipts: HashMap<String, Vec<sourceflow::CommandReceipt>> = HashMap::new();
    for send in sends {
        let (stream, receipt) = send.await.unwrap();
        assert_eq!(
            receipt.stream, stream,
            "a sender got another unit's receipt"
        );
        receipts
            .entry(stream.to_string())
            .or_default()
            .push(receipt);
    }
    assert_eq!(receipts.len(), UNITS);
    let mut positions = Vec::new();
    for (stream, mut got) in receipts {
        got.sort_by_key(|r| r.duplicate);
        assert!(!got[0].duplicate, "{stream}: no original receipt");
        assert_eq!(got[0].sequence, Sequence(1), "{stream}");
        for again in &got[1..] {
            assert!(again.duplicate, "{stream}: committed twice");
            assert_eq!(again.events, got[0].events, "{stream}");
        }
        positions.push(got[0].events[0].position.0);
    }
    positions.sort_unstable();
    let first = positions[0];
    assert_eq!(
        positions,
        (first..first + UNITS as u64).collect::<Vec<_>>(),
        "dense positions, each unit's event once"
    );
    assert_eq!(
        store.read_all(Position(0), 10_000).await.unwrap().len(),
        UNITS
    );
    drop(store);
    sourceflow_tests::backends::drop_schema(&url, &schema).await;
}
