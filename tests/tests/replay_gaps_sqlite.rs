//! A replay reads a stream in pages; a command missing from the log (deleted behind the
//! framework's back) is reported wherever it falls, including at the seam between two pages,
//! rather than ending the replay early with a wrong state.

use bank::{Account, Deposit, OpenAccount};
use sourceflow::prelude::*;
use sourceflow::store::StoreError;
use sourceflow_sqlx::SqliteStore;

/// Opens an account and sends deposits until the stream holds `commands` commands.
async fn stream_of(flow: &SourceFlow, id: &EntityId, commands: u64) {
    flow.send(
        id,
        OpenAccount {
            owner: "Ada".into(),
            overdraft_limit: 0,
        },
    )
    .await
    .expect("open");
    for _ in 2..=commands {
        flow.send(id, Deposit { amount: 1 }).await.expect("deposit");
    }
}

async fn delete_command(db: &std::path::Path, id: &EntityId, sequence: i64) {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("a second connection to the file");
    let deleted = sqlx::query("DELETE FROM sf_commands WHERE stream_id = ?1 AND sequence = ?2")
        .bind(id.as_str())
        .bind(sequence)
        .execute(&pool)
        .await
        .expect("delete");
    assert_eq!(deleted.rows_affected(), 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_is_reported_wherever_it_falls() {
    // 1,000 is the last command of replay's first page, 1,001 the first of the second, 1,500
    // inside it.
    for missing in [1_000, 1_001, 1_500] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join("gaps.db");
        let flow = SourceFlow::builder()
            .store(SqliteStore::open(&db).await.expect("open"))
            .build()
            .await
            .expect("build");
        let id = EntityId::new();
        stream_of(&flow, &id, 1_600).await;
        assert_eq!(
            flow.replay::<Account>(&id).await.expect("replay").balance,
            1_599
        );

        delete_command(&db, &id, missing).await;
        match flow.replay::<Account>(&id).await {
            Err(Error::Store(StoreError::Gap {
                expected, found, ..
            })) => {
                assert_eq!(expected, Sequence(missing as u64), "missing {missing}");
                assert_eq!(found, Sequence(missing as u64 + 1), "missing {missing}");
            }
            other => panic!("missing command {missing}: expected a gap, got {other:?}"),
        }
    }
}
