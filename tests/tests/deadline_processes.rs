//! Scheduled commands fired by real OS processes sharing one database: two scheduler processes
//! on one SQLite file and two on one Postgres database (ignored unless `SOURCEFLOW_PG_URL` is
//! set when the tests are built), 1,000 schedules due within a few seconds, one process killed
//! with SIGKILL mid-run and restarted: every schedule fires exactly once.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sourceflow::prelude::*;
use sourceflow::schedule::{ScheduleId, ScheduleState};
use sourceflow::store::Store;
use sourceflow_tests::deadlines::{ReservationSaga, Tick, TickSaga, Ticks};

const SCHEDULER: &str = env!("CARGO_BIN_EXE_sf-deadlines");
const SCHEDULES: u64 = 1_000;
const STREAMS: u64 = 20;

/// A database the processes share, and the store of this (checking) process.
struct Shared {
    spec: String,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<(String, String)>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(sourceflow_tests::backends::drop_schema(&url, &schema)))
            })
            .join();
        }
    }
}

async fn sqlite() -> Shared {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deadlines.db");
    let store = sourceflow_sqlx::SqliteStore::open(&path).await.unwrap();
    Shared {
        spec: format!("sqlite:{}", path.display()),
        store: Arc::new(store),
        _dir: Some(dir),
        cleanup: None,
    }
}

async fn postgres() -> Shared {
    let url = sourceflow_tests::backends::pg_url();
    let schema = format!("sf_deadl_{}", uuid::Uuid::new_v4().simple());
    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(&url, &schema)
        .await
        .unwrap();
    Shared {
        spec: format!("postgres:{url}#{schema}"),
        store: Arc::new(store),
        _dir: None,
        cleanup: Some((url, schema)),
    }
}

/// Starts a scheduler process and waits until its flow is built.
async fn start(spec: &str) -> Child {
    let mut child = Command::new(SCHEDULER)
        .args([spec, "1500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sf-deadlines");
    let stdout = child.stdout.take().unwrap();
    let (first, lines) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        (lines.next(), lines)
    })
    .await
    .unwrap();
    assert!(
        matches!(&first, Some(Ok(line)) if line == "ready"),
        "sf-deadlines started: {first:?}"
    );
    // Keep reading, so the child never blocks on a full pipe.
    tokio::task::spawn_blocking(move || lines.for_each(drop));
    child
}

async fn pending(flow: &SourceFlow) -> usize {
    let mut count = 0;
    let mut after = None;
    loop {
        let page = flow.pending_schedules(after.as_ref(), 500).await.unwrap();
        count += page.len();
        match page.last() {
            Some(last) => after = Some(last.clone()),
            None => return count,
        }
    }
}

async fn wait_for(child: Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().expect("wait for sf-deadlines")
    })
    .await
    .unwrap()
}

async fn two_schedulers_one_killed(shared: Shared) {
    // This process schedules; it runs no scheduler of its own.
    let flow = SourceFlow::builder()
        .shared_store(shared.store.clone())
        .without_discovery()
        .saga(ReservationSaga)
        .saga(TickSaga)
        .without_scheduler()
        .build()
        .await
        .unwrap();
    let start_at = chrono::Utc::now() + chrono::Duration::seconds(1);
    let mut ids: Vec<(ScheduleId, u64)> = Vec::new();
    for n in 0..SCHEDULES {
        let due = start_at + chrono::Duration::milliseconds((n * 3) as i64);
        let id = EntityId::from(format!("p-{}", n % STREAMS));
        ids.push((flow.schedule(due, &id, Tick { n }).await.unwrap(), n));
    }
    let a = start(&shared.spec).await;
    let b = start(&shared.spec).await;
    // Kill `a` once the firing is under way.
    let mut spins = 0;
    while pending(&flow).await > (SCHEDULES as usize) * 3 / 4 {
        spins += 1;
        assert!(spins < 6_000, "the schedulers make progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut a = a;
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    let left = pending(&flow).await;
    eprintln!("killed one scheduler with {left} schedules pending");
    assert!(left > 0, "killed mid-run");
    let a = start(&shared.spec).await;
    let (a, b) = tokio::join!(wait_for(a), wait_for(b));
    assert!(a.success() && b.success(), "{a:?} {b:?}");

    // Every schedule fired, each command ran once.
    assert_eq!(pending(&flow).await, 0);
    let mut by_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (schedule, n) in &ids {
        let record = flow.scheduled(*schedule).await.unwrap().unwrap();
        assert_eq!(record.state, ScheduleState::Fired, "schedule {n}");
        by_stream
            .entry(format!("p-{}", n % STREAMS))
            .or_default()
            .push(*n);
    }
    let mut commands = 0;
    let mut message_ids = HashSet::new();
    for (id, expected) in by_stream {
        let stream = StreamId::of::<Ticks>(id.as_str());
        let log = shared
            .store
            .load_commands(&stream, Sequence(1), None)
            .await
            .unwrap();
        commands += log.len();
        for command in &log {
            assert!(
                message_ids.insert(command.envelope.message_id),
                "{id}: a command twice"
            );
        }
        let mut seen = flow.replay::<Ticks>(id.as_str()).await.unwrap().seen;
        seen.sort_unstable();
        assert_eq!(seen, expected, "{id}: every tick once");
    }
    assert_eq!(commands as u64, SCHEDULES, "one command per schedule");
    let expected: HashSet<_> = ids.iter().map(|(s, _)| s.message_id()).collect();
    assert_eq!(message_ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_schedulers_one_killed() {
    two_schedulers_one_killed(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_two_schedulers_one_killed() {
    two_schedulers_one_killed(postgres().await).await;
}
