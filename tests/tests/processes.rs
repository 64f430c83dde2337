//! Real OS processes sharing one database: concurrent writers, and a writer killed with
//! SIGKILL in the middle of a load, on a SQLite file and on Postgres (ignored unless
//! `SOURCEFLOW_PG_URL` is set when the tests are built).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bank::{Account, AccountBalance, BalanceView, FeeCharged, Overdrawn, OVERDRAFT_FEE};
use sourceflow::prelude::*;
use sourceflow::store::{Page, StoreAdmin};
use sourceflow::Verification;
use sourceflow_tests::backends::{self, SharedDb};
use sourceflow_tests::scenarios::{Tally, TallyModel, TallyView};

const LOAD: &str = env!("CARGO_BIN_EXE_sf-load");

async fn sqlite() -> SharedDb {
    backends::shared_sqlite("shared.db").await
}

async fn postgres() -> SharedDb {
    backends::shared_postgres("sf_proc", 10).await
}

fn spawn(spec: &str, mode: &str, key: &str, count: u64) -> std::process::Child {
    Command::new(LOAD)
        .args([spec, mode, key, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sf-load")
}

/// Waits for writer processes, each of which must succeed; their outputs.
async fn finish(children: Vec<std::process::Child>) -> Vec<std::process::Output> {
    let mut outputs = Vec::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success(), "a writer failed: {:?}", out.status);
        outputs.push(out);
    }
    outputs
}

/// A follower's reports: the position reached and the events taken so far.
type Reports = tokio::sync::mpsc::UnboundedReceiver<(Position, u64)>;

/// Runs `read_side.follow_with` in a task; its reports arrive on the receiver.
fn follow(read_side: &SourceFlow) -> (tokio::task::JoinHandle<Result<(), Error>>, Reports) {
    let (reports, progress) = tokio::sync::mpsc::unbounded_channel();
    let read_side = read_side.clone();
    let following = tokio::spawn(async move {
        read_side
            .follow_with(move |p| {
                let _ = reports.send((p.position, p.applied));
            })
            .await
    });
    (following, progress)
}

/// Waits (30 s at most) until the follower has taken `total` events, checking that each report
/// moves forward.
async fn until(progress: &mut Reports, total: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = (Position::START, 0);
    while last.1 < total {
        let report = tokio::time::timeout_at(deadline, progress.recv())
            .await
            .unwrap_or_else(|_| panic!("the read side took {} of {total} events", last.1))
            .expect("following stopped");
        assert!(
            report.0 > last.0 && report.1 > last.1,
            "progress moves forward"
        );
        last = report;
    }
}

async fn two_writers_one_account(shared: SharedDb) {
    let children: Vec<_> = (0..2)
        .map(|_| spawn(&shared.spec, "tally", "shared", 1_000))
        .collect();
    for out in finish(children).await {
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, 1_000, "every send returned Ok");
    }
    let store = shared.store.clone();
    let flow = SourceFlow::builder()
        .shared_store(store.clone())
        .build()
        .await
        .unwrap();
    let stream = StreamId::of::<Tally>("shared");
    assert_eq!(store.last_sequence(&stream).await.unwrap(), Sequence(2_000));
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(commands.len(), 2_000, "dense: no gap reported");
    let tally: Tally = flow.replay("shared").await.unwrap();
    assert_eq!(
        tally,
        Tally {
            total: 2_000,
            count: 2_000
        }
    );
    let model: TallyModel = flow.view_model("shared").await.unwrap().unwrap();
    assert_eq!(
        model,
        TallyModel {
            applied: 2_000,
            total: 2_000
        }
    );
}

async fn writer_killed_mid_load(shared: SharedDb) {
    let mut child = spawn(&shared.spec, "bank", "acct", 100_000);
    let stdout = child.stdout.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut n = 0;
        while n < 25 {
            match lines.next() {
                Some(Ok(_)) => n += 1,
                _ => break,
            }
        }
        n
    })
    .await
    .unwrap();
    assert_eq!(seen, 25, "the writer made progress before the kill");
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // Restart: build() finishes the projections and drains the outbox.
    let store = shared.store.clone();
    let flow = SourceFlow::builder()
        .shared_store(store.clone())
        .build()
        .await
        .unwrap();
    let mut accounts = Vec::new();
    let mut page = Page::first(100);
    loop {
        let ids = flow.stream_ids("bank.Account", page.clone()).await.unwrap();
        let Some(last) = ids.last().cloned() else {
            break;
        };
        accounts.extend(ids);
        page.after = Some(last);
    }
    assert!(
        accounts.len() >= 25,
        "every acknowledged account is there: {}",
        accounts.len()
    );
    for id in &accounts {
        let stream = StreamId::of::<Account>(id);
        // Nothing half-committed: each command has exactly its events, and the stored state
        // is what the log replays to.
        let verification = flow.verify::<Account>(id).await.unwrap();
        assert!(
            matches!(verification, Verification::Consistent { .. }),
            "{id}: {verification:?}"
        );
        let events = store.read_stream(&stream, Sequence(1)).await.unwrap();
        let overdrawn = events
            .iter()
            .filter(|e| e.decode::<Overdrawn>().is_ok())
            .count();
        let fees = events
            .iter()
            .filter(|e| e.decode::<FeeCharged>().is_ok())
            .count();
        assert_eq!(
            fees, overdrawn,
            "{id}: one fee per overdraft, none lost, none doubled"
        );
        let account: Account = flow.replay(id).await.unwrap();
        let view: AccountBalance = flow.view_model(id).await.unwrap().unwrap_or_default();
        assert_eq!(view.balance, account.balance, "{id}: the view caught up");
        if overdrawn == 1 {
            assert_eq!(account.balance, -50 - OVERDRAFT_FEE);
        }
    }
    assert!(
        store.outbox_pending(10).await.unwrap().is_empty(),
        "outbox drained"
    );
    let head = store.head().await.unwrap();
    assert_eq!(store.get_position("BalanceView").await.unwrap(), head);
    // And the view equals a rebuild from the log.
    let before: Vec<Option<AccountBalance>> = {
        let mut v = Vec::new();
        for id in &accounts {
            v.push(flow.view_model(id).await.unwrap());
        }
        v
    };
    flow.rebuild::<BalanceView>().await.unwrap();
    for (id, before) in accounts.iter().zip(before) {
        assert_eq!(flow.view_model::<AccountBalance>(id).await.unwrap(), before);
    }
}

/// 32 concurrent writers in two processes (16 each, every tally written from both), while a
/// catch-up reader in this process follows the global log: it sees every event exactly once
/// and in log order, also the events whose transactions commit out of order, the streams stay
/// dense, and the view, projected by both writers at once, counts each event once.
async fn many_writers_and_a_catch_up_reader(shared: SharedDb) {
    const PER_SENDER: u64 = 25;
    let store = shared.store.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = Position::START;
            loop {
                // Read once more after the writers are done, so nothing committed last is missed.
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.read_all(after, 100).await.unwrap();
                let Some(last) = page.last() else {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    continue;
                };
                after = last.position;
                seen.extend(page);
            }
        })
    };
    let children: Vec<_> = (0..2)
        .map(|_| spawn(&shared.spec, "spread", "t", PER_SENDER))
        .collect();
    finish(children).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let all = store.read_all(Position::START, usize::MAX).await.unwrap();
    assert_eq!(
        all.len() as u64,
        2 * 16 * PER_SENDER,
        "every command's event"
    );
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "the reader saw the log in order"
    );
    let ids = |events: &[sourceflow::RecordedEvent]| -> Vec<_> {
        events.iter().map(|e| e.envelope.message_id).collect()
    };
    assert_eq!(
        ids(&seen),
        ids(&all),
        "the reader saw every event exactly once"
    );
    let flow = SourceFlow::builder()
        .shared_store(store.clone())
        .build()
        .await
        .unwrap();
    flow.catch_up().await.unwrap();
    for k in 0..16 {
        let id = format!("t-{k}");
        let stream = StreamId::of::<Tally>(&id);
        let events = store.read_stream(&stream, Sequence(1)).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.sequence.0).collect::<Vec<_>>(),
            (1..=2 * PER_SENDER).collect::<Vec<_>>(),
            "{id}: dense"
        );
        let model: TallyModel = flow.view_model(&*id).await.unwrap().unwrap();
        assert_eq!(
            model,
            TallyModel {
                applied: 2 * PER_SENDER,
                total: 2 * PER_SENDER as i64
            },
            "{id}: each event applied once"
        );
    }
}

/// 32 concurrent writers in two processes that keep only the write side (the tally's saga, no
/// view), while this process's read side [`follow`](SourceFlow::follow)s the log: the view
/// counts every event exactly once, progress is reported in log order, and the view is current
/// without a catch-up of its own.
async fn a_following_read_side_keeps_up_with_writers_elsewhere(shared: SharedDb) {
    const PER_SENDER: u64 = 25;
    let total = 2 * 16 * PER_SENDER;
    let read_side = tally_read_side(&shared).await;
    let (following, mut progress) = follow(&read_side);
    let children: Vec<_> = (0..2)
        .map(|_| spawn(&shared.spec, "spread-write-side", "f", PER_SENDER))
        .collect();
    finish(children).await;
    until(&mut progress, total).await;
    assert!(!following.is_finished(), "following goes on");
    following.abort();
    for k in 0..16 {
        let id = format!("f-{k}");
        let model: TallyModel = read_side.view_model(&*id).await.unwrap().unwrap();
        assert_eq!(
            model,
            TallyModel {
                applied: 2 * PER_SENDER,
                total: 2 * PER_SENDER as i64
            },
            "{id}: each event applied once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_following_read_side_keeps_up_with_writers_elsewhere() {
    a_following_read_side_keeps_up_with_writers_elsewhere(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_a_following_read_side_keeps_up_with_writers_elsewhere() {
    a_following_read_side_keeps_up_with_writers_elsewhere(postgres().await).await;
}

/// Sends `per_sender` commands to each of the tallies `<prefix>-0` to `<prefix>-15` from a
/// writer process built with the tally's saga alone, and waits for it.
async fn write_side_load(shared: &SharedDb, prefix: &str, per_sender: u64) {
    finish(vec![spawn(
        &shared.spec,
        "spread-write-side",
        prefix,
        per_sender,
    )])
    .await;
}

/// A read side following `shared` with the tally's view alone, as `follow` and
/// `sf-load follow-tally` build it.
async fn tally_read_side(shared: &SharedDb) -> SourceFlow {
    SourceFlow::builder()
        .shared_store(shared.store.clone())
        .without_discovery()
        .view(TallyView)
        .build()
        .await
        .unwrap()
}

/// Waits (30 s at most) until `read_side`'s tallies `<prefix>-0` to `<prefix>-15` have each
/// applied `expected` events, and checks that none applied more.
async fn until_tallies(read_side: &SourceFlow, prefix: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for k in 0..16 {
        let id = format!("{prefix}-{k}");
        loop {
            let model: Option<TallyModel> = read_side.view_model(&*id).await.unwrap();
            let applied = model.as_ref().map_or(0, |m| m.applied);
            assert!(
                applied <= expected,
                "{id}: {model:?}, more than {expected} applied"
            );
            if applied == expected {
                assert_eq!(
                    model.unwrap().total,
                    expected as i64,
                    "{id}: each event applied once"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}: {applied} of {expected} events applied"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The holder of the one lease `shared` keeps while it has not run out, if any.
async fn lease_holder(shared: &SharedDb) -> Option<uuid::Uuid> {
    let inspect = shared
        .store
        .admin()
        .and_then(|admin| admin.inspect())
        .expect("an inspectable store");
    let leases = inspect.leases().await.unwrap();
    assert!(leases.len() <= 1, "one read side, one lease: {leases:?}");
    leases
        .into_iter()
        .find(|lease| lease.expires_at > chrono::Utc::now())
        .map(|lease| lease.holder)
}

/// Waits (30 s at most) until a follower other than `not` holds the read side's lease.
async fn until_held(shared: &SharedDb, not: Option<uuid::Uuid>) -> uuid::Uuid {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(holder) = lease_holder(shared).await.filter(|h| Some(*h) != not) {
            return holder;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no follower took the read side's lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// With `holder` holding the read side's lease of `shared`, starts a second read side and
/// checks that it stands by while a load is applied (it reports nothing, the lease stays
/// `holder`'s), then runs `stop_holder` and checks that it takes the lease over and applies a
/// second load: the view ends with every event of the tallies `<prefix>-*` applied once.
async fn standby_takes_over(
    shared: &SharedDb,
    prefix: &str,
    holder: uuid::Uuid,
    stop_holder: impl std::future::Future<Output = ()>,
) {
    const PER_SENDER: u64 = 10;
    let standby = tally_read_side(shared).await;
    let (following, mut progress) = follow(&standby);
    write_side_load(shared, prefix, PER_SENDER).await;
    until_tallies(&standby, prefix, PER_SENDER).await;
    assert_eq!(lease_holder(shared).await, Some(holder));
    assert!(
        progress.try_recv().is_err(),
        "the read side standing by applied nothing"
    );
    stop_holder.await;
    write_side_load(shared, prefix, PER_SENDER).await;
    until_tallies(&standby, prefix, 2 * PER_SENDER).await;
    until_held(shared, Some(holder)).await;
    assert!(!following.is_finished(), "following goes on");
    following.abort();
}

/// Of two read sides following one store with the same view, the first holds the read side's
/// lease and applies the log while the second stands by (it reports nothing, and the lease
/// stays the first's); when the first stops following, it gives its lease up and the second
/// takes over at once: the view ends with every event applied once.
async fn a_standby_read_side_takes_over_when_the_other_stops(shared: SharedDb) {
    let first = tally_read_side(&shared).await;
    let (first_following, _) = follow(&first);
    let first_holder = until_held(&shared, None).await;
    standby_takes_over(&shared, "g", first_holder, async {
        first_following.abort();
        let _ = first_following.await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_standby_read_side_takes_over_when_the_other_stops() {
    a_standby_read_side_takes_over_when_the_other_stops(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_a_standby_read_side_takes_over_when_the_other_stops() {
    a_standby_read_side_takes_over_when_the_other_stops(postgres().await).await;
}

/// A read side standing by in this process takes over from one in another process that is
/// killed while it holds the lease (so it never gives it up): once the lease runs out, this one
/// takes it, catches up with what was committed meanwhile, and every event is applied once.
async fn a_standby_read_side_takes_over_from_a_killed_one(shared: SharedDb) {
    let mut other = Command::new(LOAD)
        .args([shared.spec.as_str(), "follow-tally", "-", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sf-load");
    let other_holder = until_held(&shared, None).await;
    standby_takes_over(&shared, "k", other_holder, async {
        other.kill().expect("kill the other process");
        other.wait().expect("reap it");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_standby_read_side_takes_over_from_a_killed_one() {
    a_standby_read_side_takes_over_from_a_killed_one(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_a_standby_read_side_takes_over_from_a_killed_one() {
    a_standby_read_side_takes_over_from_a_killed_one(postgres().await).await;
}

/// A following read side outlives its database: while writers in another process send a second
/// load, every connection of its store is terminated by the server as soon as it opens, for two
/// seconds; it goes on applying the load afterwards (retrying what failed meanwhile), each
/// event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_a_following_read_side_survives_its_connections_being_killed() {
    const PER_SENDER: u64 = 10;
    let shared = postgres().await;
    let (url, schema) = shared
        .spec
        .strip_prefix("postgres:")
        .and_then(|rest| rest.rsplit_once('#'))
        .expect("postgres:URL#SCHEMA");
    let name = format!("sf_follow_{}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(
        &format!("{url}{separator}application_name={name}"),
        schema,
    )
    .await
    .unwrap();
    let read_side = SourceFlow::builder()
        .store(store)
        .without_discovery()
        .view(TallyView)
        .build()
        .await
        .unwrap();
    let (following, mut progress) = follow(&read_side);
    let load = || write_side_load(&shared, "k", PER_SENDER);
    load().await;
    until(&mut progress, 16 * PER_SENDER).await;

    // For two seconds, every connection the read side's store opens is killed at once: more
    // than the store's own retries ride out, so failures reach `follow`.
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    let killer = {
        let (admin, name) = (admin.clone(), name.clone());
        tokio::spawn(async move {
            let (started, mut killed) = (std::time::Instant::now(), 0);
            while started.elapsed() < std::time::Duration::from_secs(2) {
                let done: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1",
                )
                .bind(&name)
                .fetch_all(&admin)
                .await
                .unwrap();
                killed += done.len();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            killed
        })
    };
    load().await;
    assert!(
        killer.await.unwrap() > 0,
        "the read side's connections were killed"
    );
    until(&mut progress, 2 * 16 * PER_SENDER).await;
    assert!(!following.is_finished(), "following goes on");
    following.abort();
    for k in 0..16 {
        let id = format!("k-{k}");
        let model: TallyModel = read_side.view_model(&*id).await.unwrap().unwrap();
        assert_eq!(
            model.applied,
            2 * PER_SENDER,
            "{id}: each event applied once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_many_writers_and_a_catch_up_reader() {
    many_writers_and_a_catch_up_reader(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_many_writers_and_a_catch_up_reader() {
    many_writers_and_a_catch_up_reader(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes_one_account() {
    two_writers_one_account(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_two_processes_one_account() {
    two_writers_one_account(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writer_killed_mid_load() {
    writer_killed_mid_load(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_writer_killed_mid_load() {
    writer_killed_mid_load(postgres().await).await;
}
