//! The store conformance suite on `SqliteStore` (a temporary file, and in memory), plus the
//! SQLite-specific checks: gaps on read, group commit under load, two processes on one file.

use std::sync::Arc;

use sourceflow::store::{CommandLog, EventLog, Store, StoreError};
use sourceflow::{Position, Sequence, StreamId};
use sourceflow_sqlx::SqliteStore;
use sourceflow_tests::conformance::{self, Fixture};
use sourceflow_tests::conformance_suite;

async fn sqlite_file() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("open a SQLite file");
    Some(Fixture::with_cleanup(store, async move { drop(dir) }))
}

async fn sqlite_memory() -> Option<Fixture> {
    Some(Fixture::new(
        SqliteStore::memory()
            .await
            .expect("open an in-memory SQLite store"),
    ))
}

conformance_suite!(file, sqlite_file());
conformance_suite!(memory, sqlite_memory());

/// A raw connection to the file, as another tool (or a crash mid-write by a buggy writer)
/// would change it.
async fn raw(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("a raw connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gap.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let s = conformance::stream("conf.Account", "gap");
    for i in 0..2 {
        store.commit(conformance::unit(&s, i, 1)).await.unwrap();
    }
    let mut raw = raw(&path).await;
    let now = conformance::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    sqlx::query(
        "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
         correlation_id, causation_id, created_at, payload) \
         VALUES (?1, ?2, 4, ?3, 'conf.Add', 1, ?3, NULL, ?4, '{}')",
    )
    .bind("conf.Account")
    .bind("gap")
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&now)
    .execute(&mut raw)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
         name, version, correlation_id, causation_id, created_at, payload) \
         VALUES (?1, ?2, 5, 4, ?3, 'conf.Added', 1, ?3, NULL, ?4, '{}')",
    )
    .bind("conf.Account")
    .bind("gap")
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&now)
    .execute(&mut raw)
    .await
    .unwrap();

    match store.load_commands(&s, Sequence(1), None).await {
        Err(StoreError::Gap {
            stream,
            expected,
            found,
        }) => assert_eq!(
            (stream, expected, found),
            (s.clone(), Sequence(3), Sequence(4))
        ),
        other => panic!("expected a gap, got {other:?}"),
    }
    match store.read_stream(&s, Sequence(1)).await {
        Err(StoreError::Gap {
            expected, found, ..
        }) => assert_eq!((expected, found), (Sequence(3), Sequence(5))),
        other => panic!("expected a gap, got {other:?}"),
    }
    // Ranges before the hole read fine; one starting inside it reports it.
    assert_eq!(
        store
            .load_commands(&s, Sequence(1), Some(Sequence(2)))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(matches!(
        store.load_commands(&s, Sequence(3), None).await,
        Err(StoreError::Gap { .. })
    ));
    // The next append is still optimistic on the highest stored sequence.
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(4));
}

/// The file is meant to be read with the sqlite3 tool: text ids and timestamps, JSON payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_readable_with_sqlite3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readable.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let s = conformance::stream("conf.Account", "a");
    let unit = conformance::unit(&s, 0, 1);
    let message_id = unit.command.envelope.message_id;
    store.commit(unit).await.unwrap();
    let mut raw = raw(&path).await;
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT message_id, created_at, json_extract(payload, '$.n'), typeof(payload) \
         FROM sf_commands",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), message_id.to_string());
    let created: String = row.get(1);
    assert!(created.ends_with('Z') && created.len() == "2024-01-01T00:00:00.000000000Z".len());
    assert_eq!(row.get::<i64, _>(2), 1);
    assert_eq!(row.get::<String, _>(3), "text");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Many tasks committing at once never see SQLITE_BUSY, and share transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committers_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("group.db"))
        .await
        .unwrap();
    let before = store.stats();
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = conformance::stream("conf.Account", &format!("writer-{t}"));
                for i in 0..20 {
                    store
                        .commit(conformance::unit(&s, i, 1))
                        .await
                        .expect("no busy error, no conflict");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no panic");
    }
    let stats = store.stats();
    let units = stats.units - before.units;
    let transactions = stats.transactions - before.transactions;
    eprintln!(
        "{units} units in {transactions} transactions (largest batch {})",
        stats.largest_batch
    );
    assert_eq!(units, 32 * 20);
    assert!(transactions < units, "no group commit: {stats:?}");
    assert!(stats.largest_batch > 1);
    for t in 0..32 {
        let s = conformance::stream("conf.Account", &format!("writer-{t}"));
        assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(20));
    }
    assert_eq!(
        store
            .read_all(Position::START, usize::MAX)
            .await
            .unwrap()
            .len(),
        640
    );
}

/// One unit's conflict inside a shared transaction rolls back that unit alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_in_a_batch_spares_the_others() {
    let store = SqliteStore::memory().await.unwrap();
    let s = conformance::stream("conf.Account", "contended");
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let other = conformance::stream("conf.Account", &format!("free-{t}"));
                let free = store.commit(conformance::unit(&other, 0, 1));
                let contended = store.commit(conformance::unit(&s, 0, 1));
                let (free, contended) = tokio::join!(free, contended);
                free.expect("an uncontended commit succeeds");
                contended.is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(1));
    assert_eq!(store.read_stream(&s, Sequence(1)).await.unwrap().len(), 1);
    assert_eq!(
        store.read_all(Position::START, 100).await.unwrap().len(),
        17
    );
}

/// Two stores on one file (as two processes would open it) both commit to one stream,
/// retrying on conflicts: the stream ends up dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_keep_sequences_dense() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    let s = conformance::stream("conf.Account", "shared");
    let writer = |store: SqliteStore, s: StreamId| {
        tokio::spawn(async move {
            let store: Arc<dyn Store> = Arc::new(store);
            let mut conflicts = 0;
            for _ in 0..50 {
                loop {
                    let last = store.last_sequence(&s).await.expect("a read");
                    match store.commit(conformance::unit(&s, last.0, 1)).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("unexpected store error: {e:?}"),
                    }
                }
            }
            conflicts
        })
    };
    let (ca, cb) = tokio::join!(writer(a.clone(), s.clone()), writer(b.clone(), s.clone()));
    eprintln!("conflicts: {} + {}", ca.unwrap(), cb.unwrap());
    for store in [&a, &b] {
        assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(100));
        let sequences: Vec<u64> = store
            .load_commands(&s, Sequence(1), None)
            .await
            .unwrap()
            .iter()
            .map(|c| c.sequence.0)
            .collect();
        assert_eq!(sequences, (1..=100).collect::<Vec<_>>());
        let events = store.read_all(Position::START, usize::MAX).await.unwrap();
        assert_eq!(events.len(), 100);
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
        assert!(events
            .iter()
            .enumerate()
            .all(|(i, e)| e.sequence == Sequence(i as u64 + 1)));
    }
}

/// `synchronous=NORMAL` is an opt-in; the default is FULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_applies_options() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("normal.db"))
        .synchronous(sourceflow_sqlx::Synchronous::Normal)
        .busy_timeout(std::time::Duration::from_millis(250))
        .readers(2)
        .max_batch(8)
        .open()
        .await
        .unwrap();
    let s = conformance::stream("conf.Account", "a");
    store.commit(conformance::unit(&s, 0, 1)).await.unwrap();
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(1));
    // Reopening an existing file applies no migration twice.
    drop(store);
    let again = SqliteStore::open(dir.path().join("normal.db"))
        .await
        .unwrap();
    assert_eq!(again.last_sequence(&s).await.unwrap(), Sequence(1));
}
