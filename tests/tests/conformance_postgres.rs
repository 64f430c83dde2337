//! The store conformance suite on `PostgresStore`, each test in a schema of its own (dropped at
//! the end), plus the Postgres-specific checks: gaps on read, and the visibility rule that
//! keeps catch-up readers from skipping events that commit late.
//!
//! Ignored unless `SOURCEFLOW_PG_URL` is set when the tests are built.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sourceflow::store::{Store, StoreError};
use sourceflow::{Position, RecordedEvent, Sequence};
use sourceflow_sqlx::PostgresStore;
use sourceflow_testkit::{store_conformance, Fixture};
use sourceflow_tests::backends::pg_url as url;
use sourceflow_tests::conformance;

async fn drop_schema(url: &str, schema: &str) {
    use sqlx::{Connection, Executor};
    if let Ok(mut connection) = sqlx::PgConnection::connect(url).await {
        // The name was generated below: a plain identifier.
        let _ = connection
            .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
            .await;
        let _ = connection.close().await;
    }
}

/// A store in a fresh schema, and that schema's name.
async fn fresh() -> (PostgresStore, String, String) {
    let url = url();
    let schema = format!("sf_conf_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .max_connections(6)
        .connect()
        .await
        .expect("connect to SOURCEFLOW_PG_URL");
    (store, url, schema)
}

async fn postgres() -> Fixture {
    let (store, url, schema) = fresh().await;
    let pool = store.pool().clone();
    Fixture::with_cleanup(store, async move {
        pool.close().await;
        drop_schema(&url, &schema).await;
    })
}

store_conformance! {
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    mod postgres {
        fixture: postgres().await,
        groups: [core, inline, group, admin, schedule, keys, lease, lifecycle],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn gaps_are_reported_on_read() {
    let (store, url, schema) = fresh().await;
    let s = conformance::stream("conf.Account", "gap");
    for i in 0..2 {
        store.commit(conformance::unit(&s, i, 1)).await.unwrap();
    }
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".sf_commands (stream_type, stream_id, sequence, message_id, \
         name, version, correlation_id, causation_id, created_at, payload) \
         VALUES ($1, $2, 4, $3, 'conf.Add', 1, $3, NULL, now(), '{{}}')"
    ))
    .bind("conf.Account")
    .bind("gap")
    .bind(uuid::Uuid::now_v7())
    .execute(store.pool())
    .await
    .unwrap();
    let result = store.load_commands(&s, Sequence(1), None).await;
    store.pool().close().await;
    drop_schema(&url, &schema).await;
    match result {
        Err(StoreError::Gap {
            stream,
            expected,
            found,
        }) => assert_eq!((stream, expected, found), (s, Sequence(3), Sequence(4))),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn schema_names_are_validated() {
    let url = url();
    let result = PostgresStore::connect_with_schema(&url, "bad\"; DROP SCHEMA public; --").await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
}

/// Four writers commit concurrently (to their own streams and to one they share) while a
/// catch-up reader polls `read_all`: it sees every event exactly once, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_catch_up_reader_sees_every_event_once_in_order() {
    let (store, url, schema) = fresh().await;
    let store: Arc<dyn Store> = Arc::new(store);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::START;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = store.read_all(after, 7).await.expect("read_all");
                for event in &page {
                    assert!(
                        event.position > after,
                        "out of order: {} after {after}",
                        event.position
                    );
                    after = event.position;
                }
                let empty = page.is_empty();
                seen.extend(page);
                if finished && empty {
                    return seen;
                }
                if empty {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let shared = conformance::stream("conf.Account", "shared");
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, shared) = (store.clone(), shared.clone());
            tokio::spawn(async move {
                let own = conformance::stream("conf.Account", &format!("own-{w}"));
                for i in 0..25 {
                    store
                        .commit(conformance::unit(&own, i, 2))
                        .await
                        .expect("own stream");
                    loop {
                        let last = store.last_sequence(&shared).await.expect("last");
                        match store.commit(conformance::unit(&shared, last.0, 1)).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("the reader");
    let all = store.read_all(Position::START, usize::MAX).await.unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(all.len(), 4 * 25 * 3);
        let ids: HashSet<_> = seen.iter().map(|e| e.envelope.message_id).collect();
        assert_eq!(ids.len(), seen.len(), "an event was seen twice");
        assert_eq!(
            seen.iter().map(|e| e.position).collect::<Vec<_>>(),
            all.iter().map(|e| e.position).collect::<Vec<_>>(),
            "the reader skipped an event"
        );
    });
    drop(store);
    drop_schema(&url, &schema).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A transaction that has started appending events (it holds the append lock and took a
/// position) is still open. A later commit must wait for it instead of taking a higher
/// position and committing first, so a reader never sees a position whose lower neighbour
/// appears afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_late_commit_with_a_lower_position_is_not_skipped() {
    let (store, url, schema) = fresh().await;
    let result = late_commit(&store).await;
    store.pool().close().await;
    drop_schema(&url, &schema).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn late_commit(store: &PostgresStore) -> Result<(), Box<dyn std::any::Any + Send>> {
    let s = conformance::stream("conf.Account", "first");
    let first = store.commit(conformance::unit(&s, 0, 1)).await.unwrap();
    let p1 = first.events[0].position;

    // The held transaction: what sf_commit does, stopped before COMMIT.
    let mut held = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(store.append_lock_key())
        .execute(&mut *held)
        .await
        .unwrap();
    let p2: i64 = sqlx::query_scalar(
        "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
         name, version, correlation_id, created_at, payload) \
         VALUES ('conf.Held', 'h', 1, 0, $1, 'conf.Added', 1, $1, now(), '{}') RETURNING position",
    )
    .bind(uuid::Uuid::now_v7())
    .fetch_one(&mut *held)
    .await
    .unwrap();

    // A later command on another stream.
    let later = {
        let store = store.clone();
        tokio::spawn(async move {
            let s = conformance::stream("conf.Account", "later");
            store.commit(conformance::unit(&s, 0, 1)).await
        })
    };
    let reader_view = std::panic::AssertUnwindSafe(async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            // Nothing past p1 is visible while the lower position is uncommitted: above all,
            // not the later commit's higher position.
            let visible = store.read_all(p1, 10).await.unwrap();
            assert!(
                visible.is_empty(),
                "saw {:?} before position {p2}",
                visible.iter().map(|e| e.position).collect::<Vec<_>>()
            );
        }
        assert!(
            !later.is_finished(),
            "the later commit did not wait for the append lock"
        );
    });
    use futures_util::FutureExt;
    let checked = reader_view.catch_unwind().await;
    held.commit().await.unwrap();
    let receipt = later.await.unwrap().unwrap();
    checked?;

    let p3 = receipt.events[0].position;
    assert!(
        p3.0 as i64 > p2,
        "the later commit took position {p3} below {p2}"
    );
    let visible: Vec<_> = store
        .read_all(p1, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(visible, vec![Position(p2 as u64), p3]);
    Ok(())
}

/// `from_pool` takes the pool's own schema (its search_path) and derives the lock key from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn from_pool_uses_the_pools_schema() {
    use sqlx::Executor;
    let url = url();
    let schema = format!("sf_pool_{}", uuid::Uuid::now_v7().simple());
    let setup = sqlx::PgPool::connect(&url).await.unwrap();
    setup
        .execute(format!("CREATE SCHEMA \"{schema}\"").as_str())
        .await
        .unwrap();
    setup.close().await;
    let search_path = schema.clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(move |connection, _| {
            let statement = format!("SET search_path TO \"{search_path}\"");
            Box::pin(async move {
                connection.execute(statement.as_str()).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool).await.unwrap();
    let same = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .unwrap();
    let s = conformance::stream("conf.Account", "a");
    let committed = store.commit(conformance::unit(&s, 0, 1)).await;
    let seen = same.last_sequence(&s).await;
    let (schema_seen, keys) = (
        store.schema().to_owned(),
        (store.append_lock_key(), same.append_lock_key()),
    );
    store.pool().close().await;
    same.pool().close().await;
    drop_schema(&url, &schema).await;
    committed.unwrap();
    assert_eq!(seen.unwrap(), Sequence(1));
    assert_eq!(schema_seen, schema);
    assert_eq!(keys.0, keys.1);
}

/// A group commits in one transaction whatever its shape, with or without views: every
/// command and event row of it carries the same `xmin`. (A group whose call fails is committed
/// unit by unit with the same answers, so only the rows' transaction ids tell the two apart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_group_commits_in_one_transaction() {
    use sourceflow::store::{GroupProjection, UnitGroup, UnitOfWork};
    let (store, url, schema) = fresh().await;
    let groups = store.groups().expect("the Postgres store commits groups");
    let streams: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| conformance::stream("conf.Account", id))
        .collect();
    let view = |after: u64| GroupProjection {
        handler: "conf.GroupView".into(),
        expected: Position(after),
        after: Position(after),
        models: Vec::new(),
    };
    // One event per unit on distinct streams (the set-based call), then two events in one
    // unit (the general call); each without views and with one.
    let shapes: Vec<(&str, Vec<UnitOfWork>, bool)> = vec![
        (
            "common, no views",
            streams.iter().map(|s| conformance::unit(s, 0, 1)).collect(),
            false,
        ),
        (
            "general, no views",
            vec![
                conformance::unit(&streams[0], 1, 2),
                conformance::unit(&streams[1], 1, 1),
            ],
            false,
        ),
        (
            "common, a view",
            vec![
                conformance::unit(&streams[0], 2, 1),
                conformance::unit(&streams[2], 1, 1),
            ],
            true,
        ),
        (
            "general, a view",
            vec![
                conformance::unit(&streams[1], 2, 2),
                conformance::unit(&streams[2], 2, 1),
            ],
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (shape, units, with_view) in shapes {
        let head = store.head().await.unwrap();
        if with_view {
            store.set_position("conf.GroupView", head).await.unwrap();
        }
        let group = UnitGroup {
            units: units.iter().collect(),
            first_sequences: vec![None; units.len()],
            projections: if with_view {
                vec![view(head.0)]
            } else {
                vec![]
            },
        };
        let outcome = groups.commit_group(group).await;
        for unit in &outcome.units {
            assert!(
                unit.as_ref().is_ok_and(|r| !r.duplicate),
                "{shape}: {unit:?}"
            );
        }
        let transactions: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT count(DISTINCT xmin::text) FROM \"{schema}\".sf_events WHERE position > $1 \
             UNION ALL \
             SELECT count(DISTINCT c.xmin::text) FROM \"{schema}\".sf_commands c \
               JOIN \"{schema}\".sf_events e ON e.stream_type = c.stream_type \
                AND e.stream_id = c.stream_id AND e.command_sequence = c.sequence \
              WHERE e.position > $1"
        ))
        .bind(i64::try_from(head.0).unwrap())
        .fetch_all(store.pool())
        .await
        .unwrap();
        if transactions != vec![1, 1] {
            failures.push(format!("{shape}: {transactions:?} transactions"));
        }
    }
    store.pool().close().await;
    drop_schema(&url, &schema).await;
    assert!(failures.is_empty(), "{failures:?}");
}
