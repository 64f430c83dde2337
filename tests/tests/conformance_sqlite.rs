//! The store conformance suite on `SqliteStore` (a temporary file, and in memory), plus the
//! SQLite-specific checks: gaps on read, group commit under load, two processes on one file.

use std::sync::Arc;

use sourceflow::store::{Store, StoreAdmin, StoreError};
use sourceflow::{Position, Sequence, StreamId};
use sourceflow_sqlx::SqliteStore;
use sourceflow_testkit::{store_conformance, Fixture};
use sourceflow_tests::conformance;

async fn sqlite_file() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("open a SQLite file");
    Fixture::with_cleanup(store, async move { drop(dir) })
}

async fn sqlite_memory() -> Fixture {
    Fixture::new(
        SqliteStore::memory()
            .await
            .expect("open an in-memory SQLite store"),
    )
}

store_conformance! {
    mod file {
        fixture: sqlite_file().await,
        groups: [core, inline, admin, schedule, keys, lease, lifecycle],
    }
}

store_conformance! {
    mod memory {
        fixture: sqlite_memory().await,
        groups: [core, inline, admin, schedule, keys, lease, lifecycle],
    }
}

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

/// A new file at `path` with schema v1 only, as a store of that version left it.
async fn new_v1_file(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::migrate::Migrator;
    use sqlx::ConnectOptions;
    use std::borrow::Cow;

    let mut raw = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .expect("a new file");
    let v1 = Migrator {
        migrations: Cow::Owned(sourceflow_sqlx::sqlite::MIGRATOR.migrations[..1].to_vec()),
        ..Migrator::DEFAULT
    };
    v1.run(&mut raw).await.expect("schema v1");
    raw
}

/// A file written by schema v1 (AUTOINCREMENT positions, events found by command through their
/// own index) is upgraded in place on open: every row and position is kept, a resent command
/// is still answered with its original events, and new events continue after the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let mut raw = new_v1_file(&path).await;
    // Two streams as v1 stored them: `a` with commands of two, zero and one events, and `b`
    // with one, interleaved so positions and stream sequences differ.
    let now = conformance::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let commands: [(&str, i64, usize); 4] = [("a", 1, 2), ("b", 1, 1), ("a", 2, 0), ("a", 3, 1)];
    let mut ids = Vec::new();
    let mut next_event = std::collections::HashMap::new();
    for (stream, sequence, events) in commands {
        let id = uuid::Uuid::now_v7();
        ids.push(id);
        sqlx::query(
            "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, \
             version, correlation_id, causation_id, created_at, payload) \
             VALUES ('conf.Account', ?1, ?2, ?3, 'conf.Add', 1, ?3, NULL, ?4, '{}')",
        )
        .bind(stream)
        .bind(sequence)
        .bind(id.to_string())
        .bind(&now)
        .execute(&mut raw)
        .await
        .unwrap();
        for n in 0..events {
            let event_sequence = next_event.entry(stream).or_insert(0i64);
            *event_sequence += 1;
            sqlx::query(
                "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, \
                 message_id, name, version, correlation_id, causation_id, created_at, payload) \
                 VALUES ('conf.Account', ?1, ?2, ?3, ?4, 'conf.Added', 1, ?4, NULL, ?5, ?6)",
            )
            .bind(stream)
            .bind(*event_sequence)
            .bind(sequence)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&now)
            .bind(format!("{{\"n\":{n}}}"))
            .execute(&mut raw)
            .await
            .unwrap();
        }
    }
    drop(raw);

    let store = SqliteStore::open(&path).await.expect("open and upgrade");
    let a = conformance::stream("conf.Account", "a");
    let b = conformance::stream("conf.Account", "b");
    let before = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(
        before
            .iter()
            .map(|e| (
                e.envelope.stream.id.as_str().to_owned(),
                e.sequence.0,
                e.position.0
            ))
            .collect::<Vec<_>>(),
        [
            ("a".to_owned(), 1, 1),
            ("a".to_owned(), 2, 2),
            ("b".to_owned(), 1, 3),
            ("a".to_owned(), 3, 4)
        ]
    );
    for (i, (stream, sequence, events)) in commands.into_iter().enumerate() {
        let s = conformance::stream("conf.Account", stream);
        let receipt = store
            .find_receipt(&s, ids[i])
            .await
            .unwrap()
            .expect("a receipt");
        assert_eq!(receipt.sequence, Sequence(sequence as u64));
        let stored: Vec<_> = before
            .iter()
            .filter(|e| e.envelope.stream == s && e.command_sequence == Sequence(sequence as u64))
            .cloned()
            .collect();
        assert_eq!(stored.len(), events);
        conformance::assert_same_events(&receipt.events, &stored);
    }

    // New commands continue both sequences and the positions, and are found again.
    let unit = conformance::unit(&a, 3, 2);
    let message_id = unit.command.envelope.message_id;
    let receipt = store.commit(unit.clone()).await.unwrap();
    assert_eq!(
        receipt
            .events
            .iter()
            .map(|e| (e.sequence.0, e.position.0))
            .collect::<Vec<_>>(),
        [(4, 5), (5, 6)]
    );
    let again = store.commit(unit).await.unwrap();
    assert!(again.duplicate);
    conformance::assert_same_events(&again.events, &receipt.events);
    assert_eq!(
        store
            .find_receipt(&a, message_id)
            .await
            .unwrap()
            .unwrap()
            .events
            .len(),
        2
    );
    let more = store.commit(conformance::unit(&b, 1, 1)).await.unwrap();
    assert_eq!(
        (more.events[0].sequence.0, more.events[0].position.0),
        (2, 7)
    );
}

/// Two stores opening the same v1 file at once (two processes starting together after an
/// upgrade) both open it: one rebuilds the events table, the other waits for it however long
/// the rebuild outlasts its busy timeout, then finds the schema current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_opening_one_version_1_file_both_open_it() {
    const COMMANDS: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1-race.db");
    let mut raw = new_v1_file(&path).await;
    // 1,000 accounts of 100 commands, one event each (a rebuild of about a second here).
    let now = conformance::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    for (table, columns, values) in [
        (
            "sf_commands",
            "stream_type, stream_id, sequence, message_id, name, version, correlation_id, \
             causation_id, created_at, payload",
            "'conf.Account', 'acct-' || (x % 1000), x / 1000 + 1, \
             printf('00000000-0000-7000-8000-%012d', x), 'conf.Add', 1, \
             printf('00000000-0000-7000-8000-%012d', x), NULL, ?1, '{}'",
        ),
        (
            "sf_events",
            "stream_type, stream_id, sequence, command_sequence, message_id, name, version, \
             correlation_id, causation_id, created_at, payload",
            "'conf.Account', 'acct-' || (x % 1000), x / 1000 + 1, x / 1000 + 1, \
             printf('00000000-0000-7000-9000-%012d', x), 'conf.Added', 1, \
             printf('00000000-0000-7000-8000-%012d', x), NULL, ?1, '{\"n\":1}'",
        ),
    ] {
        sqlx::query(&format!(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < {COMMANDS}) \
             INSERT INTO {table} ({columns}) SELECT {values} FROM n"
        ))
        .bind(&now)
        .execute(&mut raw)
        .await
        .unwrap();
    }
    drop(raw);

    let open = || {
        SqliteStore::builder(&path)
            .busy_timeout(std::time::Duration::from_millis(50))
            .open()
    };
    let (a, b) = tokio::join!(open(), open());
    let (a, b) = (a.expect("first store"), b.expect("second store"));
    let s = conformance::stream("conf.Account", "acct-7");
    for store in [&a, &b] {
        assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(100));
        let events = store.read_stream(&s, Sequence(1)).await.unwrap();
        assert_eq!(events.len(), 100);
        assert_eq!(events[99].position, Position(99_008));
    }
    let receipt = a.commit(conformance::unit(&s, 100, 1)).await.unwrap();
    assert_eq!(receipt.events[0].position, Position(COMMANDS as u64 + 1));
    assert_eq!(b.last_sequence(&s).await.unwrap(), Sequence(101));
}
