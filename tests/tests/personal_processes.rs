//! A member forgotten by one OS process while another keeps notes about them, on a SQLite file
//! and on Postgres (ignored unless `SOURCEFLOW_PG_URL` is set when the tests are built): every
//! note of the other process commits, none is ever stored in plaintext, and after `forget` every
//! note reads redacted here and in a process started afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sourceflow::prelude::*;
use sourceflow_tests::backends::{self, SharedDb};
use sourceflow_tests::members::{Member, NOTE_TEXT};

const LOAD: &str = env!("CARGO_BIN_EXE_sf-load");
const NOTES: u64 = 200;

fn load(spec: &str, mode: &str, member: &str, count: u64) -> std::process::Child {
    Command::new(LOAD)
        .args([spec, mode, member, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sf-load")
}

async fn forgotten_while_another_process_writes(shared: SharedDb) {
    let member = "member-7";
    let mut writer = load(&shared.spec, "notes", member, NOTES);
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    // Forget once the other process has kept a few notes; it goes on keeping more.
    let mut committed = 0;
    while committed < 20 {
        lines.next().expect("a line").expect("read a line");
        committed += 1;
    }
    let flow = SourceFlow::builder()
        .shared_store(shared.store.clone())
        .build()
        .await
        .unwrap();
    flow.forget(member).await.unwrap();
    committed += lines.count() as u64;
    assert!(writer.wait().unwrap().success(), "the writer finished");
    assert_eq!(
        committed, NOTES,
        "every note of the other process committed"
    );

    let read = flow.replay::<Member>(member).await.unwrap();
    assert_eq!(read.notes.len() as u64, NOTES);
    assert!(
        read.notes.iter().all(|n| n.is_redacted()),
        "a note reads in plaintext after forget"
    );
    let reader = load(&shared.spec, "read-notes", member, 0)
        .wait_with_output()
        .unwrap();
    assert!(reader.status.success());
    assert_eq!(
        String::from_utf8_lossy(&reader.stdout).trim(),
        format!("notes {NOTES} redacted {NOTES}"),
        "a process started after forget reads every note redacted"
    );
    let bytes = shared.stored_bytes().await;
    assert!(!bytes.is_empty());
    assert!(
        memchr::memmem::find(&bytes, NOTE_TEXT.as_bytes()).is_none(),
        "the database holds a note in plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_member_forgotten_while_another_process_writes() {
    forgotten_while_another_process_writes(backends::shared_sqlite("members.db").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_member_forgotten_while_another_process_writes() {
    forgotten_while_another_process_writes(backends::shared_postgres("sf_forget", 4).await).await;
}
