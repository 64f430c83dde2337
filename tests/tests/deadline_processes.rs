//! Scheduled commands fired by real OS processes sharing one database: two scheduler processes
//! on one SQLite file and two on one Postgres database (ignored unless `SOURCEFLOW_PG_URL` is
//! set when the tests are built), 1,000 schedules due within a few seconds, one process killed
//! with SIGKILL while it holds claims, then it and a second one finishing the work: every
//! schedule fires exactly once.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sourceflow::prelude::*;
use sourceflow::schedule::{ScheduleId, ScheduleState};
use sourceflow_tests::backends::{self, SharedDb};
use sourceflow_tests::deadlines::{ReservationSaga, Tick, TickSaga, Ticks};

const SCHEDULER: &str = env!("CARGO_BIN_EXE_sf-deadlines");
const SCHEDULES: u64 = 1_000;
const STREAMS: u64 = 20;

async fn sqlite() -> SharedDb {
    backends::shared_sqlite("deadlines.db").await
}

async fn postgres() -> SharedDb {
    backends::shared_postgres("sf_deadl", 4).await
}

/// How long each tick takes in the process that is killed: its claims are held while their
/// ticks run, so a kill finds it holding some.
const KILLED_TICK_DELAY_MS: &str = "20";

/// Starts a scheduler process and waits until its flow is built.
async fn start(spec: &str) -> Child {
    start_with(spec, &[]).await
}

/// [`start`] with further arguments (a tick delay).
async fn start_with(spec: &str, more: &[&str]) -> Child {
    let mut child = Command::new(SCHEDULER)
        .args([spec, "1500"])
        .args(more)
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

/// The spec for the process to be killed and, on Postgres, the server's URL and the
/// application name its connections carry.
fn killable(spec: &str) -> (String, Option<(String, String)>) {
    let Some((url, schema)) = spec
        .strip_prefix("postgres:")
        .and_then(|rest| rest.split_once('#'))
    else {
        return (spec.to_owned(), None);
    };
    let application = format!("sf_killed_{}", uuid::Uuid::new_v4().simple());
    let separator = if url.contains('?') { '&' } else { '?' };
    (
        format!("postgres:{url}{separator}application_name={application}#{schema}"),
        Some((url.to_owned(), application)),
    )
}

/// Waits until the server has no connection named `application` left.
async fn connections_gone(url: &str, application: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    for _ in 0..3_000 {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application)
                .fetch_one(&pool)
                .await
                .unwrap();
        if open == 0 {
            pool.close().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the killed process's connections are still open after 30 s");
}

async fn two_schedulers_one_killed(shared: SharedDb) {
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
    // The first scheduler alone, killed once a tenth has fired, while it holds claims
    // (schedules it is firing: its ticks are slowed so that it holds some most of the time). A
    // kill that still lands between two claims is repeated, later.
    let mut held: Vec<ScheduleId> = Vec::new();
    let (killed_spec, server) = killable(&shared.spec);
    for attempt in 1..=5 {
        let mut a = start_with(&killed_spec, &[KILLED_TICK_DELAY_MS]).await;
        let threshold = SCHEDULES as usize * (10 - attempt) / 10;
        let mut spins = 0;
        loop {
            // Counted first (the slower read), so the kill follows the claim check at once.
            if pending(&flow).await <= threshold {
                let first = flow.pending_schedules(None, 100).await.unwrap();
                if first.iter().any(|r| r.state == ScheduleState::Firing) {
                    break;
                }
            }
            spins += 1;
            assert!(spins < 60_000, "the scheduler makes progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        a.kill().expect("SIGKILL");
        let _ = a.wait();
        if let Some((url, application)) = &server {
            // A statement the killed process sent just before it died still runs to its end
            // on the server (a claim marked fired, a command committed): the claims it holds
            // are those left once its connections are gone.
            connections_gone(url, application).await;
        }
        held = flow
            .pending_schedules(None, 100)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.state == ScheduleState::Firing)
            .map(|r| r.schedule.id)
            .collect();
        if !held.is_empty() {
            break;
        }
    }
    assert!(
        !held.is_empty(),
        "the scheduler was killed while holding claims"
    );
    let left = pending(&flow).await;
    eprintln!(
        "killed the scheduler with {left} schedules pending, {} of them claimed by it",
        held.len()
    );
    assert!(left > 0, "killed mid-run");
    // Two schedulers share the rest, the killed one's claims once their lease ends.
    let b = start(&shared.spec).await;
    let a = start(&shared.spec).await;
    let (a, b) = tokio::join!(wait_for(a), wait_for(b));
    assert!(a.success() && b.success(), "{a:?} {b:?}");

    // Every schedule fired, each command ran once.
    assert_eq!(pending(&flow).await, 0);
    let mut by_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut claimed_again = 0;
    for (schedule, n) in &ids {
        let record = flow.scheduled(*schedule).await.unwrap().unwrap();
        assert_eq!(record.state, ScheduleState::Fired, "schedule {n}");
        claimed_again += usize::from(record.attempts > 1);
        by_stream
            .entry(format!("p-{}", n % STREAMS))
            .or_default()
            .push(*n);
    }
    eprintln!("{claimed_again} schedules claimed again after the kill");
    for id in &held {
        let record = flow.scheduled(*id).await.unwrap().unwrap();
        assert!(
            record.attempts > 1,
            "a claim of the killed scheduler was claimed again"
        );
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
