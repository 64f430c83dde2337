//! A stream deleted by one OS process while another sends to it, on a SQLite file and on
//! Postgres (ignored unless `SOURCEFLOW_PG_URL` is set when the tests are built): every send of
//! the other process either committed before the tombstone or was refused, and nothing
//! committed after it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sourceflow::lifecycle::ERASED;
use sourceflow::prelude::*;
use sourceflow_tests::backends::{self, SharedDb};
use sourceflow_tests::scenarios::Tally;

const LOAD: &str = env!("CARGO_BIN_EXE_sf-load");

async fn deleted_while_another_process_sends(shared: SharedDb) {
    let mut child = Command::new(LOAD)
        .args([&shared.spec, "tally-until-deleted", "doomed", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sf-load");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Let the other process commit a few before deleting under its feet.
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.push(lines.next().expect("a line").expect("read a line"));
    }
    let flow = SourceFlow::builder()
        .shared_store(shared.store.clone())
        .build()
        .await
        .unwrap();
    let tombstone = flow.delete_stream::<Tally>("doomed").await.unwrap();
    let rest = tokio::task::spawn_blocking(move || {
        let rest: Vec<String> = lines.map(|l| l.expect("read a line")).collect();
        let status = child.wait().expect("wait for sf-load");
        (rest, status)
    })
    .await
    .unwrap();
    let (rest, status) = rest;
    assert!(status.success(), "sf-load failed: {status:?}");
    seen.extend(rest);
    assert_eq!(
        seen.last().map(String::as_str),
        Some("deleted"),
        "refused at last"
    );
    for line in &seen[..seen.len() - 1] {
        let sequence: u64 = line
            .strip_prefix("committed ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        assert!(
            sequence < tombstone.sequence.0,
            "{line} after {tombstone:?}"
        );
    }
    let stream = StreamId::of::<Tally>("doomed");
    assert_eq!(
        shared.store.last_sequence(&stream).await.unwrap(),
        tombstone.sequence
    );
    let commands = shared
        .store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(commands.len() as u64, tombstone.sequence.0);
    assert!(commands[..commands.len() - 1]
        .iter()
        .all(|c| c.envelope.name == ERASED && c.payload == b"null"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stream_deleted_while_another_process_sends() {
    deleted_while_another_process_sends(backends::shared_sqlite("lifecycle.db").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_stream_deleted_while_another_process_sends() {
    deleted_while_another_process_sends(backends::shared_postgres("sf_life", 5).await).await;
}
