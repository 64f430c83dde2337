//! The workloads W1 to W11. Each returns the rows it contributes to the table.
//!
//! Every framework in a workload runs on the same machine, in the same process run, with the
//! same payloads ([`Deposit::nth`]) and the same stream ids ([`account_id`]). Where two
//! things are compared, their samples are interleaved in small blocks so that drift (other
//! processes, disk cache, autovacuum) hits both alike.

pub mod w10;
pub mod w11;
pub mod w12;
pub mod w8;
pub mod w9;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use serde_json::json;
use sourceflow::{MemoryStore, SourceFlow};
use sourceflow_sqlx::{SqliteStore, Synchronous};

use crate::domain::{self, account_id, Account, AccountSummary, Components, Credit, Deposit};
use crate::peers::cqrs::{self, BankCommand};
use crate::raw;
use crate::report::{median, median_f64, micros, Row, Target};

/// How a run is sized and where it writes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Smaller sizes: the whole run in under two minutes.
    pub quick: bool,
    /// The Postgres URL for W5, W8 and W9 (`SOURCEFLOW_PG_URL`), if any.
    pub pg_url: Option<String>,
    /// The NATS URL for W9 (`SOURCEFLOW_NATS_URL`), if any.
    pub nats_url: Option<String>,
    /// This binary, to run the isolated phases as child processes.
    pub exe: PathBuf,
    /// Where the SQLite files go (a fresh temporary directory inside it).
    pub dir: PathBuf,
}

impl Settings {
    pub(crate) fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Progress of long phases, on stderr.
pub fn progress(message: impl AsRef<str>) {
    eprintln!("[sourceflow-bench] {}", message.as_ref());
}

pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn fmt_rate(rate: f64) -> String {
    let whole = rate.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} cmd/s")
}

pub(crate) fn fmt_us(d: Duration) -> String {
    let us = micros(d);
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.2} us")
    }
}

// ---- W1: the in-memory pipeline ---------------------------------------------------------------

/// W1's shape: `streams` accounts, `per_stream` deposits each, sent round-robin, on a fresh
/// store per round; the first round warms up and is not counted.
#[derive(Clone, Copy, Debug)]
pub struct W1Shape {
    /// Measured rounds.
    pub rounds: usize,
    /// Accounts per round.
    pub streams: u64,
    /// Deposits per account per round.
    pub per_stream: u64,
}

impl W1Shape {
    /// The shape for a quick or a full run.
    pub fn new(quick: bool) -> Self {
        Self {
            rounds: if quick { 5 } else { 15 },
            streams: 1_000,
            per_stream: 10,
        }
    }

    fn commands(&self) -> u64 {
        self.streams * self.per_stream
    }

    fn work(&self) -> (Vec<String>, Vec<Deposit>) {
        let ids = (0..self.streams).map(account_id).collect();
        let commands = (0..self.commands()).map(Deposit::nth).collect();
        (ids, commands)
    }
}

/// Median commands/s of sourceflow's pipeline on `MemoryStore` over W1's rounds.
///
/// # Errors
/// A failed send, or a view that did not see every command.
pub async fn w1_sourceflow(shape: W1Shape) -> anyhow::Result<f64> {
    let mut rates = Vec::new();
    for round in 0..=shape.rounds {
        let flow = domain::flow(MemoryStore::new(), Components::Full).await?;
        let (ids, commands) = shape.work();
        let started = Instant::now();
        for (i, command) in commands.into_iter().enumerate() {
            flow.send(&*ids[i % ids.len()], command).await?;
        }
        let elapsed = started.elapsed();
        let summary: Option<AccountSummary> = flow.view_model(&*ids[0]).await?;
        ensure!(
            summary.map(|s| s.deposits) == Some(shape.per_stream),
            "the view missed commands"
        );
        if round > 0 {
            rates.push(rate(shape.commands(), elapsed));
        }
    }
    Ok(median_f64(&mut rates))
}

/// Median commands/s of `cqrs-es` over W1's rounds, on a fresh store from `store` per round.
///
/// # Errors
/// A failed command, or a query that did not see every command.
pub async fn w1_cqrs<S, F>(shape: W1Shape, store: F) -> anyhow::Result<f64>
where
    S: cqrs_es::EventStore<cqrs::BankAccount>,
    F: Fn() -> S,
{
    let mut rates = Vec::new();
    for round in 0..=shape.rounds {
        let (framework, query) = cqrs::memory_framework(store());
        let (ids, commands) = shape.work();
        let started = Instant::now();
        for (i, command) in commands.into_iter().enumerate() {
            framework
                .execute(&ids[i % ids.len()], BankCommand::Deposit(command))
                .await
                .map_err(|e| anyhow::anyhow!("cqrs-es: {e}"))?;
        }
        let elapsed = started.elapsed();
        ensure!(
            query.get(&ids[0]).map(|s| s.deposits) == Some(shape.per_stream),
            "the cqrs-es query missed commands"
        );
        if round > 0 {
            rates.push(rate(shape.commands(), elapsed));
        }
    }
    Ok(median_f64(&mut rates))
}

/// W1: sourceflow on `MemoryStore` against `cqrs-es` with its `MemStore` (in a child process,
/// since it prints to stdout) and with [`cqrs::QuietMemStore`].
///
/// # Errors
/// A failed workload.
pub async fn w1(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let shape = W1Shape::new(settings.quick);
    progress(format!(
        "W1: {} rounds of {} commands on {} accounts, in memory",
        shape.rounds,
        shape.commands(),
        shape.streams
    ));
    let ours = w1_sourceflow(shape).await?;
    let quiet = w1_cqrs(shape, cqrs::QuietMemStore::default).await?;
    let allocations = w1_allocations(shape).await?;
    progress("W1: cqrs-es MemStore in a child process (it prints two lines per command)");
    let child = run_child(settings, "w1-cqrs-child", &[], true)?;
    let memstore = child["rate"]
        .as_f64()
        .context("the W1 child reported no rate")?;
    let per_command = Duration::from_secs_f64(1.0 / ours);
    let mut rows = vec![
        // Context only: `MemoryStore` is a test double that encodes JSON on purpose, and
        // `MemStore` prints two lines per command; neither is what a deployment runs.
        Row::info(
            "W1",
            "context: in-memory pipeline vs cqrs-es MemStore (cmd/s)",
            format!("{} vs {}", fmt_rate(ours), fmt_rate(memstore)),
        )
        .note(format!(
            "ratio {:.2}, no target; MemStore as shipped prints 2 lines per command (stdout to /dev/null)",
            ours / memstore
        )),
        Row::checked(
            "W1",
            "in-memory pipeline, time per command (us)",
            fmt_us(per_command),
            micros(per_command),
            Target::AtMost(3.0),
        ),
        Row::info(
            "W1",
            "context: vs cqrs-es on QuietMemStore (MemStore minus println)",
            format!("{} vs {}", fmt_rate(ours), fmt_rate(quiet)),
        )
        .note(format!("ratio {:.2}, no target", ours / quiet)),
    ];
    // The same pipeline on one long stream: cqrs-es's stores load (and `MemStore` clones) the
    // aggregate's whole history for every command; sourceflow keeps the entity's state.
    let long = W1Shape {
        rounds: settings.pick(2, 4),
        streams: 1,
        per_stream: 2_000,
    };
    progress("W1: one stream of 2,000 deposits, sourceflow and cqrs-es QuietMemStore");
    let (ours_long, quiet_long) = (
        w1_sourceflow(long).await?,
        w1_cqrs(long, cqrs::QuietMemStore::default).await?,
    );
    rows.push(
        Row::info(
            "W1",
            "context: one stream of 2,000 deposits vs cqrs-es QuietMemStore",
            format!("{} vs {}", fmt_rate(ours_long), fmt_rate(quiet_long)),
        )
        .note(format!(
            "ratio {:.2}, no target; cqrs-es loads the stream for every command",
            ours_long / quiet_long
        )),
    );
    if let Some((sourceflow, cqrs)) = allocations {
        rows.push(Row::info(
            "W1",
            "context: heap allocations per command",
            format!("sourceflow {sourceflow:.1}; cqrs-es QuietMemStore + query {cqrs:.1}"),
        ));
    }
    Ok(rows)
}

/// Heap allocations per command of one W1 round, sourceflow then cqrs-es on its quiet store,
/// when the binary counts allocations (the `count-allocations` feature).
async fn w1_allocations(shape: W1Shape) -> anyhow::Result<Option<(f64, f64)>> {
    let Some(_) = crate::allocations() else {
        return Ok(None);
    };
    let count = |before: Option<u64>| crate::allocations().unwrap_or(0) - before.unwrap_or(0);
    let flow = domain::flow(MemoryStore::new(), Components::Full).await?;
    let (ids, commands) = shape.work();
    let before = crate::allocations();
    for (i, command) in commands.into_iter().enumerate() {
        flow.send(&*ids[i % ids.len()], command).await?;
    }
    let sourceflow = count(before) as f64 / shape.commands() as f64;
    let (framework, _query) = cqrs::memory_framework(cqrs::QuietMemStore::default());
    let (ids, commands) = shape.work();
    let before = crate::allocations();
    for (i, command) in commands.into_iter().enumerate() {
        framework
            .execute(&ids[i % ids.len()], BankCommand::Deposit(command))
            .await
            .map_err(|e| anyhow::anyhow!("cqrs-es: {e}"))?;
    }
    let cqrs = count(before) as f64 / shape.commands() as f64;
    Ok(Some((sourceflow, cqrs)))
}

/// The child half of W1: `cqrs-es` on its own `MemStore`, stdout discarded by the parent.
///
/// # Errors
/// A failed command.
pub async fn w1_cqrs_child(quick: bool) -> anyhow::Result<serde_json::Value> {
    let rate = w1_cqrs(
        W1Shape::new(quick),
        cqrs_es::mem_store::MemStore::<cqrs::BankAccount>::default,
    )
    .await?;
    Ok(json!({ "rate": rate }))
}

// ---- W2 and W3: SQLite, durable commands ------------------------------------------------------

/// What W2 measured, for W3's comparison.
#[derive(Clone, Copy, Debug)]
pub struct W2Result {
    /// sourceflow's commands per second, one sender (mean over the samples).
    pub rate: f64,
}

/// `cqrs-es` + `sqlite-es` on a file of its own with the store's pragmas (built with the
/// `sqlite-es` feature; without it, [`SqliteEs::open`] gives `None`).
#[cfg(feature = "sqlite-es")]
struct SqliteEs(sqlite_es::SqliteCqrs<cqrs::BankAccount>);

#[cfg(feature = "sqlite-es")]
impl SqliteEs {
    async fn open(path: &Path) -> anyhow::Result<Option<Self>> {
        let pool = cqrs::sqlite::pool(path).await?;
        cqrs::sqlite::create_tables(&pool).await?;
        Ok(Some(Self(cqrs::sqlite::framework(pool))))
    }

    async fn deposit(&self, id: &str, n: u64) -> anyhow::Result<()> {
        self.0
            .execute(id, BankCommand::Deposit(Deposit::nth(n)))
            .await
            .map_err(|e| anyhow::anyhow!("cqrs-es + sqlite-es: {e}"))
    }
}

#[cfg(not(feature = "sqlite-es"))]
enum SqliteEs {}

#[cfg(not(feature = "sqlite-es"))]
impl SqliteEs {
    async fn open(_path: &Path) -> anyhow::Result<Option<Self>> {
        Ok(None)
    }

    async fn deposit(&self, _id: &str, _n: u64) -> anyhow::Result<()> {
        match *self {}
    }
}

/// Records `time` unless this is a warm-up block.
fn keep_time(keep: bool, times: &mut Vec<Duration>, time: Duration) {
    if keep {
        times.push(time);
    }
}

/// Why W2 and W3 show no `sqlite-es` figures in a default build.
const SQLITE_ES_MISSING: &str = "not built: enable the `sqlite-es` feature; sqlite-es turns on \
     sqlx's `runtime-tokio-rustls` for every sqlx user built with it";

/// W2: one command per durable transaction against a raw single-row INSERT transaction with
/// the same pragmas, interleaved in blocks of ten commands per system; plus the saga alone (no
/// view) and the unit of work's raw rows as diagnostics, and `sqlite-es` (when built) after
/// them.
///
/// # Errors
/// A failed workload.
pub async fn w2(settings: &Settings, dir: &Path) -> anyhow::Result<(Vec<Row>, W2Result)> {
    let blocks = settings.pick(30, 150);
    const BLOCK: u64 = 10;
    progress(format!(
        "W2: {} durable commands each for sourceflow, sourceflow without its view, the rusqlite floors (and cqrs-es + sqlite-es when built)",
        blocks * BLOCK
    ));
    let path = dir.join("w2.db");
    let store = SqliteStore::open(&path).await?;
    let flow = domain::flow(store.clone(), Components::Full).await?;
    let saga_store = SqliteStore::open(dir.join("w2-saga.db")).await?;
    let saga_only = domain::flow(saga_store.clone(), Components::SagaOnly).await?;
    // The unit-of-work floor writes events too, so it gets a file of its own: in the store's
    // file its events would fall between the framework's, as another writer's would.
    let unit_path = dir.join("w2-unit.db");
    drop(SqliteStore::open(&unit_path).await?);
    let mut unit_floor = raw::RawUnit::open(&unit_path)?;
    let peer = SqliteEs::open(&dir.join("w2-sqlite-es.db")).await?;
    let payload = serde_json::to_string(&Deposit::nth(0))?;
    // The floor gets a file of its own. Two writers of one file empty each other's page cache:
    // SQLite drops a connection's cached pages when another connection has committed since its
    // last transaction, so with the floor's rows in the store's file the store's writer read
    // every page its commit touches again on every command (about a tenth of its time here), a
    // cost that a store with its one writer never pays.
    let mut floor = raw::RawInsert::open(&dir.join("w2-floor.db"))?;
    floor.warm_up(&payload)?;
    let state = serde_json::to_string(&Account {
        balance: 100,
        deposits: 1,
    })?;
    let event = serde_json::to_string(&domain::Deposited {
        amount: 1,
        balance: 100,
    })?;

    let (mut full, mut saga, mut raw_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut unit_times, mut peer_times) = (Vec::new(), Vec::new());
    // A block runs BLOCK commands of each system in turn, the same accounts and deposits for
    // each: a system's commands follow one another as they would in a deployment, and what the
    // previous system leaves behind meets only the first command of a block.
    for block in 0..=blocks {
        // The first block warms up the files and the caches.
        let keep = block > 0;
        let deposits =
            || (block * BLOCK + 1..=(block + 1) * BLOCK).map(|n| (n, account_id(n % 100)));
        for (n, id) in deposits() {
            let started = Instant::now();
            flow.send(&*id, Deposit::nth(n)).await?;
            keep_time(keep, &mut full, started.elapsed());
        }
        for (n, id) in deposits() {
            let started = Instant::now();
            saga_only.send(&*id, Deposit::nth(n)).await?;
            keep_time(keep, &mut saga, started.elapsed());
        }
        for (_, id) in deposits() {
            keep_time(keep, &mut raw_times, floor.insert(&id, &payload)?);
        }
        for _ in deposits() {
            keep_time(
                keep,
                &mut unit_times,
                unit_floor.commit(1, &payload, &state, &event)?,
            );
        }
    }
    // The peer runs the same deposits after the others: run between them, its commands
    // left the framework's next ones 20-35% slower for a few milliseconds (the floors, run
    // later in each block, were not affected).
    if let Some(peer) = &peer {
        for n in 1..=(blocks + 1) * BLOCK {
            let started = Instant::now();
            peer.deposit(&account_id(n % 100), n).await?;
            keep_time(n > BLOCK, &mut peer_times, started.elapsed());
        }
    }
    let total: Duration = full.iter().sum();
    let result = W2Result {
        rate: rate(full.len() as u64, total),
    };
    let (full, saga, floor) = (median(&mut full), median(&mut saga), median(&mut raw_times));
    let unit_floor = median(&mut unit_times);
    let peer_time = median(&mut peer_times);
    let stats = store.stats();
    let per_command = stats.transactions as f64 / flow.stats().committed.max(1) as f64;
    let peer_row = if peer.is_some() {
        Row::info(
            "W2",
            "context: cqrs-es + sqlite-es, the same command",
            fmt_us(peer_time),
        )
        .note(format!(
            "ratio {:.2} to the floor; ours / peer {:.2} (time)",
            peer_time.as_secs_f64() / floor.as_secs_f64(),
            full.as_secs_f64() / peer_time.as_secs_f64()
        ))
    } else {
        Row::not_available("W2", "context: cqrs-es + sqlite-es", SQLITE_ES_MISSING)
    };
    Ok((
        vec![
            Row::info(
                "W2",
                "raw rusqlite 1-row INSERT txn (WAL, FULL): the floor",
                fmt_us(floor),
            ),
            Row::checked(
                "W2",
                "SQLite durable command, framework time / floor",
                format!("{} ({})", fmt_us(full), fmt_rate(result.rate)),
                full.as_secs_f64() / floor.as_secs_f64(),
                Target::AtMost(1.5),
            )
            .note(format!("{per_command:.2} SQLite transactions per command")),
            Row::info(
                "W2",
                "context: the same without view and aggregate",
                fmt_us(saga),
            )
            .note(format!(
                "ratio {:.2} to the floor, 1 transaction per command",
                saga.as_secs_f64() / floor.as_secs_f64()
            )),
            Row::info(
                "W2",
                "context: raw rusqlite txn writing one unit of work's rows",
                fmt_us(unit_floor),
            )
            .note(format!(
                "command+entity+event rows under the store's indexes; ratio {:.2} to the floor",
                unit_floor.as_secs_f64() / floor.as_secs_f64()
            )),
            peer_row,
        ],
        result,
    ))
}

/// W3: 32 concurrent senders, each on its own account, against W2's single sender.
///
/// # Errors
/// A failed workload.
pub async fn w3(settings: &Settings, dir: &Path, w2: W2Result) -> anyhow::Result<Vec<Row>> {
    const SENDERS: u64 = 32;
    let per_sender = settings.pick(40, 200);
    let rounds = settings.pick(3, 5);
    progress(format!(
        "W3: {SENDERS} concurrent senders x {per_sender} durable commands, {rounds} rounds"
    ));
    // Each round on fresh files, the two shapes alternating; the round with the median
    // throughput is reported (one round lasts about a second, so one alone shows any
    // passing load on the machine).
    let (mut full, mut saga, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let mut peer = Vec::new();
    for round in 0..rounds {
        let file = format!("w3-{round}.db");
        let measured = concurrent(dir, &file, Components::Full, per_sender).await?;
        full.push(measured);
        let file = format!("w3-saga-{round}.db");
        saga.push(concurrent(dir, &file, Components::SagaOnly, per_sender).await?);
        let file = format!("w3-floor-{round}.db");
        floor.push(w3_floor(&dir.join(file), SENDERS * per_sender, measured.1).await?);
        let file = format!("w3-sqlite-es-{round}.db");
        if let Some(rate) = w3_sqlite_es(&dir.join(file), SENDERS, per_sender).await? {
            peer.push(rate);
        }
    }
    let (floor_rate, floor_batch) = {
        floor.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        floor[floor.len() / 2]
    };
    let median_round = |rounds: &mut Vec<(f64, f64, u64)>| {
        rounds.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        rounds[rounds.len() / 2]
    };
    let (throughput, batch, largest) = median_round(&mut full);
    let (saga_throughput, saga_batch, saga_largest) = median_round(&mut saga);
    Ok(vec![
        Row::checked(
            "W3",
            "SQLite, 32 concurrent senders: throughput / W2",
            fmt_rate(throughput),
            throughput / w2.rate,
            Target::AtLeast(3.0),
        )
        .note(format!(
            "group commit: {batch:.1} units per transaction, largest {largest}"
        )),
        Row::checked(
            "W3",
            "SQLite, 32 concurrent senders: throughput / rusqlite unit-of-work floor",
            format!("{} vs {}", fmt_rate(throughput), fmt_rate(floor_rate)),
            throughput / floor_rate,
            Target::AtLeast(0.5),
        )
        .note(format!(
            "floor: one writer committing the rows of {floor_batch} units (command, entity, \
             event, view model, view position) per transaction"
        )),
        if peer.is_empty() {
            Row::not_available(
                "W3",
                "SQLite, 32 concurrent senders: ours / cqrs-es + sqlite-es",
                SQLITE_ES_MISSING,
            )
        } else {
            let peer = median_f64(&mut peer);
            Row::checked(
                "W3",
                "SQLite, 32 concurrent senders: ours / cqrs-es + sqlite-es",
                format!("{} vs {}", fmt_rate(throughput), fmt_rate(peer)),
                throughput / peer,
                Target::AtLeast(3.0),
            )
        },
        Row::info(
            "W3",
            "context: the same without view and aggregate",
            fmt_rate(saga_throughput),
        )
        .note(format!(
            "{:.2}x W2; group commit: {saga_batch:.1} units per transaction, largest {saga_largest}",
            saga_throughput / w2.rate
        )),
    ])
}

/// `cqrs-es` + `sqlite-es` under W3's shape on a fresh file: `senders` concurrent senders on
/// their own accounts, one untimed command each first. `None` without the `sqlite-es` feature.
async fn w3_sqlite_es(path: &Path, senders: u64, per_sender: u64) -> anyhow::Result<Option<f64>> {
    let Some(peer) = SqliteEs::open(path).await? else {
        return Ok(None);
    };
    for s in 0..senders {
        peer.deposit(&account_id(s), s).await?;
    }
    let peer = Arc::new(peer);
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let peer = peer.clone();
            tokio::spawn(async move {
                let id = account_id(s);
                for i in 0..per_sender {
                    peer.deposit(&id, i).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(Some(rate(senders * per_sender, started.elapsed())))
}

/// W3's floor: `commands` units of work (each with the view's writes) committed by one
/// `rusqlite` writer in transactions of the store's average group size (`batch`, rounded), on
/// a fresh file migrated by the store. Returns commands/s and the group size used.
async fn w3_floor(path: &Path, commands: u64, batch: f64) -> anyhow::Result<(f64, u64)> {
    drop(SqliteStore::open(path).await?);
    let group = (batch.round() as u64).max(1);
    let mut floor = raw::RawUnit::open(path)?.with_view();
    let payload = serde_json::to_string(&Deposit::nth(0))?;
    let state = serde_json::to_string(&Account {
        balance: 100,
        deposits: 1,
    })?;
    let event = serde_json::to_string(&domain::Deposited {
        amount: 1,
        balance: 100,
    })?;
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < commands {
        let units = group.min(commands - done);
        total += floor.commit(units, &payload, &state, &event)?;
        done += units;
    }
    Ok((rate(commands, total), group))
}

/// 32 senders on their own accounts: commands/s, average and largest group-commit batch.
async fn concurrent(
    dir: &Path,
    file: &str,
    components: Components,
    per_sender: u64,
) -> anyhow::Result<(f64, f64, u64)> {
    const SENDERS: u64 = 32;
    let store = SqliteStore::open(dir.join(file)).await?;
    let flow = domain::flow(store.clone(), components).await?;
    // Warm-up: one command per sender's account.
    for s in 0..SENDERS {
        flow.send(&*account_id(s), Deposit::nth(s)).await?;
    }
    let before = store.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let flow = flow.clone();
        tasks.push(tokio::spawn(async move {
            let id = account_id(s);
            for i in 0..per_sender {
                flow.send(&*id, Deposit::nth(i)).await?;
            }
            Ok::<_, sourceflow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let after = store.stats();
    let transactions = after.transactions - before.transactions;
    let units = after.units - before.units;
    Ok((
        rate(SENDERS * per_sender, elapsed),
        units as f64 / transactions.max(1) as f64,
        after.largest_batch,
    ))
}

// ---- W4: history growth -----------------------------------------------------------------------

/// Per-block times on a long stream and a short one, interleaved (alternating which goes
/// first); returns the ratio of the medians and the two medians per command.
async fn history_ratio(
    flow: &SourceFlow,
    long: &str,
    short: &str,
    blocks: usize,
    block: u64,
) -> anyhow::Result<(f64, Duration, Duration)> {
    let (mut on_long, mut on_short) = (Vec::new(), Vec::new());
    let mut n = 1_000_000;
    for b in 0..=blocks {
        let order = if b % 2 == 0 {
            [long, short]
        } else {
            [short, long]
        };
        for id in order {
            let started = Instant::now();
            for _ in 0..block {
                n += 1;
                flow.send(id, Deposit::nth(n)).await?;
            }
            let elapsed = started.elapsed() / block as u32;
            if b > 0 {
                if id == long {
                    on_long.push(elapsed);
                } else {
                    on_short.push(elapsed);
                }
            }
        }
    }
    let (l, s) = (median(&mut on_long), median(&mut on_short));
    Ok((l.as_secs_f64() / s.as_secs_f64(), l, s))
}

async fn seed_history(flow: &SourceFlow, id: &str, count: u64) -> anyhow::Result<()> {
    for i in 0..count {
        flow.send(id, Deposit::nth(i)).await?;
        if (i + 1) % 5_000 == 0 {
            progress(format!("  seeded {} commands on {id}", i + 1));
        }
    }
    Ok(())
}

/// W4: per-command time on a stream with 10,000 prior commands against one with 10, on
/// `MemoryStore` and on SQLite.
///
/// # Errors
/// A failed workload.
pub async fn w4(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    const PRIOR: u64 = 10_000;
    let mut rows = Vec::new();

    progress("W4: MemoryStore, 10,000 prior commands vs 10");
    let flow = domain::flow(MemoryStore::new(), Components::Full).await?;
    seed_history(&flow, "long", PRIOR).await?;
    seed_history(&flow, "short", 10).await?;
    let (ratio, l, s) =
        history_ratio(&flow, "long", "short", settings.pick(200, 1_000), 20).await?;
    rows.push(Row::checked(
        "W4",
        "MemoryStore: per command at 10,000 prior / at 10",
        format!("{} vs {}", fmt_us(l), fmt_us(s)),
        ratio,
        Target::AtMost(1.2),
    ));

    progress("W4: SQLite (synchronous=NORMAL), seeding 10,000 prior commands");
    let store = SqliteStore::builder(dir.join("w4.db"))
        .synchronous(Synchronous::Normal)
        .open()
        .await?;
    let flow = domain::flow(store, Components::Full).await?;
    seed_history(&flow, "long", PRIOR).await?;
    seed_history(&flow, "short", 10).await?;
    let (ratio, l, s) = history_ratio(&flow, "long", "short", settings.pick(40, 200), 5).await?;
    rows.push(
        Row::checked(
            "W4",
            "SQLite: per command at 10,000 prior / at 10",
            format!("{} vs {}", fmt_us(l), fmt_us(s)),
            ratio,
            Target::AtMost(1.2),
        )
        .note("synchronous=NORMAL so fsync jitter cannot hide growth"),
    );
    Ok(rows)
}

// ---- W6: replay -------------------------------------------------------------------------------

/// W6: `flow.replay::<Account>` of a long stream against raw sqlx reading and decoding the
/// same rows.
///
/// # Errors
/// A failed workload, or a replay that does not reproduce the seeded balance.
pub async fn w6(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let count: u64 = 100_000;
    let runs = settings.pick(3, 7);
    let path = dir.join("w6.db");
    let store = SqliteStore::open(&path).await?;
    progress(format!("W6: seeding one stream of {count} commands"));
    let started = Instant::now();
    raw::seed_commands(&path, "replay-0", count).await?;
    raw::seed_commands_named(
        &path,
        "replay-v1",
        count,
        <Credit as sourceflow::Message>::NAME,
    )
    .await?;
    let seeding = started.elapsed();
    let flow = domain::flow(store, Components::SagaOnly).await?;
    let floor_connection = raw::open_writer(&path)?;
    let expected = raw::seeded_balance(count);
    let (mut ours, mut floor, mut upcast) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        progress(format!("W6: replay run {run} of {runs}"));
        let started = Instant::now();
        let account: Account = flow.replay("replay-0").await?;
        let a = started.elapsed();
        ensure!(account.balance == expected, "replay gave a wrong balance");
        let started = Instant::now();
        let account: Account = flow.replay("replay-v1").await?;
        let c = started.elapsed();
        ensure!(
            account.balance == expected,
            "the upcast replay gave a wrong balance"
        );
        let started = Instant::now();
        let (rows, balance) = raw::replay_floor(&floor_connection, "replay-0")?;
        let b = started.elapsed();
        ensure!(
            rows == count && balance == expected,
            "the floor read wrong rows"
        );
        if run > 0 {
            ours.push(a);
            floor.push(b);
            upcast.push(c);
        }
    }
    let (ours, floor, upcast) = (median(&mut ours), median(&mut floor), median(&mut upcast));
    Ok(vec![
        Row::checked(
            "W6",
            "replay 100,000 commands from SQLite: raw time / framework time",
            format!(
                "{:.0} ms vs raw {:.0} ms ({:.0} cmd/s)",
                ours.as_secs_f64() * 1e3,
                floor.as_secs_f64() * 1e3,
                rate(count, ours)
            ),
            floor.as_secs_f64() / ours.as_secs_f64(),
            Target::AtLeast(0.7),
        )
        .note(format!("seeded in {:.1} s", seeding.as_secs_f64())),
        Row::checked(
            "W6",
            "replay 100,000 version 1 commands through one upcaster step: time without a step / \
             time with it",
            format!(
                "{:.0} ms vs {:.0} ms without a step",
                upcast.as_secs_f64() * 1e3,
                ours.as_secs_f64() * 1e3
            ),
            ours.as_secs_f64() / upcast.as_secs_f64(),
            Target::AtLeast(0.7),
        ),
    ])
}

// ---- W7: rebuild ------------------------------------------------------------------------------

/// Accounts the W7 log is spread over.
pub const W7_STREAMS: u64 = 1_000;

/// W7: seeds the event log, then rebuilds the view in a child process and reads its peak RSS.
///
/// # Errors
/// A failed workload.
pub async fn w7(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let events: u64 = settings.pick(100_000, 1_000_000);
    let path = dir.join("w7.db");
    drop(SqliteStore::open(&path).await?);
    progress(format!(
        "W7: seeding {events} events over {W7_STREAMS} accounts"
    ));
    let started = Instant::now();
    raw::seed_events(&path, events, W7_STREAMS, |n| {
        progress(format!("  {n} events written"));
    })
    .await?;
    let seeding = started.elapsed();
    progress("W7: rebuilding the view in a child process");
    let path_text = path.to_str().context("the temporary path is not UTF-8")?;
    let child = run_child(
        settings,
        "w7-child",
        &["--db", path_text, "--events", &events.to_string()],
        false,
    )?;
    let secs = child["secs"].as_f64().context("no time")?;
    let applied = child["events"].as_u64().context("no event count")?;
    let peak = child["peak_kib"].as_u64().context("no peak RSS")? as f64 / 1024.0;
    let base = child["base_kib"].as_u64().unwrap_or(0) as f64 / 1024.0;
    ensure!(applied == events, "rebuild applied {applied} of {events}");
    let label = if settings.quick {
        "rebuild over a 100,000-event log (quick)"
    } else {
        "rebuild over a 1,000,000-event log"
    };
    Ok(vec![
        Row::info(
            "W7",
            format!("{label}: events/s"),
            format!("{:.0} events/s ({secs:.1} s)", events as f64 / secs),
        )
        .note(format!(
            "seeded in {:.1} s with SQL inserts",
            seeding.as_secs_f64()
        )),
        Row::checked(
            "W7",
            format!("{label}: peak RSS (MiB)"),
            format!("{peak:.1} MiB"),
            peak,
            Target::AtMost(256.0),
        )
        .note(format!(
            "VmHWM of a child process; {base:.1} MiB before the rebuild"
        )),
    ])
}

/// The child half of W7: opens the seeded file, rebuilds the view, reports time and peak RSS.
///
/// # Errors
/// A failed rebuild, or a view that did not end where the seed says.
pub async fn w7_child(db: &Path, events: u64) -> anyhow::Result<serde_json::Value> {
    let store = SqliteStore::open(db).await?;
    let flow = domain::flow(store, Components::ViewOnly).await?;
    ensure!(
        flow.stats().events_projected == 0,
        "building the flow projected the seeded log (the view's position was not seeded)"
    );
    let base_kib = vm_kib("VmHWM").unwrap_or(0);
    // Resets VmHWM to the current RSS, so the peak below is the rebuild's own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let step = (events / 10).max(1);
    let mut next = step;
    let started = Instant::now();
    let applied = flow
        .rebuild_with::<domain::SummaryView>(|p| {
            if p.applied >= next {
                progress(format!("  rebuilt {} of {} events", p.applied, p.head));
                next += step;
            }
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let peak_kib = vm_kib("VmHWM").context("cannot read VmHWM from /proc/self/status")?;
    let summary: AccountSummary = flow
        .view_model(account_id(0))
        .await?
        .context("the rebuilt view has no model for account 0")?;
    ensure!(
        summary.deposits == events / W7_STREAMS,
        "the rebuilt view counts {} deposits for account 0",
        summary.deposits
    );
    Ok(json!({ "events": applied, "secs": secs, "peak_kib": peak_kib, "base_kib": base_kib }))
}

/// A `Vm*` line of `/proc/self/status`, in KiB.
pub fn vm_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `sourceflow-bench --only <phase> --out <file> ...` and parses the JSON it wrote.
fn run_child(
    settings: &Settings,
    phase: &str,
    args: &[&str],
    discard_stdout: bool,
) -> anyhow::Result<serde_json::Value> {
    let out = tempfile::NamedTempFile::new_in(&settings.dir)?;
    let mut command = Command::new(&settings.exe);
    command
        .args(["--only", phase, "--out"])
        .arg(out.path())
        .args(args)
        .stderr(Stdio::inherit());
    if settings.quick {
        command.arg("--quick");
    }
    if discard_stdout {
        command.stdout(Stdio::null());
    }
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", settings.exe.display()))?;
    if !status.success() {
        bail!("the {phase} child process failed ({status})");
    }
    let text = std::fs::read_to_string(out.path())?;
    serde_json::from_str(&text).with_context(|| format!("bad {phase} result: {text:?}"))
}

// ---- W5: Postgres -----------------------------------------------------------------------------

/// One framework under W5, sending one deposit to one account.
#[async_trait::async_trait]
trait Contender: Send + Sync {
    fn name(&self) -> &'static str;
    async fn deposit(&self, account: u64, deposit: Deposit) -> anyhow::Result<()>;
}

struct Ours(SourceFlow);

#[async_trait::async_trait]
impl Contender for Ours {
    fn name(&self) -> &'static str {
        "sourceflow"
    }

    async fn deposit(&self, account: u64, deposit: Deposit) -> anyhow::Result<()> {
        self.0.send(&*account_id(account), deposit).await?;
        Ok(())
    }
}

struct CqrsPg(postgres_es::PostgresCqrs<cqrs::BankAccount>);

#[async_trait::async_trait]
impl Contender for CqrsPg {
    fn name(&self) -> &'static str {
        "cqrs-es + postgres-es"
    }

    async fn deposit(&self, account: u64, deposit: Deposit) -> anyhow::Result<()> {
        self.0
            .execute(&account_id(account), BankCommand::Deposit(deposit))
            .await
            .map_err(|e| anyhow::anyhow!("cqrs-es: {e}"))
    }
}

#[cfg(feature = "esrs")]
struct EsrsPg(crate::peers::esrs::Esrs);

#[cfg(feature = "esrs")]
#[async_trait::async_trait]
impl Contender for EsrsPg {
    fn name(&self) -> &'static str {
        "esrs"
    }

    async fn deposit(&self, account: u64, deposit: Deposit) -> anyhow::Result<()> {
        self.0
            .deposit(uuid::Uuid::from_u128(u128::from(account) + 1), deposit)
            .await?;
        Ok(())
    }
}

/// Per contender: total time and count of one shape.
struct Tally {
    total: Duration,
    count: u64,
}

/// Runs `commands` deposits per contender, interleaved in blocks of 100 (the order rotating
/// each block); `account(i)` picks the account of the `i`-th command.
async fn interleaved(
    contenders: &[Arc<dyn Contender>],
    commands: u64,
    account: impl Fn(u64) -> u64,
    label: &str,
) -> anyhow::Result<Vec<Tally>> {
    const BLOCK: u64 = 100;
    let mut tallies: Vec<Tally> = contenders
        .iter()
        .map(|_| Tally {
            total: Duration::ZERO,
            count: 0,
        })
        .collect();
    let mut done = 0;
    let mut block = 0usize;
    while done < commands {
        let end = (done + BLOCK).min(commands);
        for k in 0..contenders.len() {
            let c = (k + block) % contenders.len();
            for i in done..end {
                let started = Instant::now();
                contenders[c].deposit(account(i), Deposit::nth(i)).await?;
                let elapsed = started.elapsed();
                tallies[c].total += elapsed;
                tallies[c].count += 1;
            }
        }
        done = end;
        block += 1;
        if done % (commands / 5).max(BLOCK) == 0 || done == commands {
            progress(format!("  {label}: {done} of {commands} per framework"));
        }
    }
    Ok(tallies)
}

/// Per contender, the median per-command time on the `long` account (already holding the
/// one-stream shape) and on a `short` one seeded with 10 commands, in alternating blocks of 5.
async fn pg_history(
    contenders: &[Arc<dyn Contender>],
    long: u64,
    short: u64,
    blocks: usize,
) -> anyhow::Result<Vec<(Duration, Duration)>> {
    const BLOCK: u64 = 5;
    let mut result = Vec::new();
    for contender in contenders {
        for i in 0..10 {
            contender.deposit(short, Deposit::nth(i)).await?;
        }
        let (mut on_long, mut on_short) = (Vec::new(), Vec::new());
        for b in 0..=blocks {
            let order = if b % 2 == 0 {
                [long, short]
            } else {
                [short, long]
            };
            for account in order {
                let started = Instant::now();
                for i in 0..BLOCK {
                    contender.deposit(account, Deposit::nth(i)).await?;
                }
                let elapsed = started.elapsed() / BLOCK as u32;
                if b > 0 {
                    if account == long {
                        on_long.push(elapsed);
                    } else {
                        on_short.push(elapsed);
                    }
                }
            }
        }
        result.push((median(&mut on_long), median(&mut on_short)));
    }
    Ok(result)
}

/// W5: sourceflow, `cqrs-es` + `postgres-es` and `esrs` on one Postgres database, each in a
/// fresh schema dropped afterwards.
///
/// # Errors
/// A failed workload (the schema is still dropped).
pub async fn w5(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let Some(url) = settings.pg_url.clone() else {
        return Ok(vec![Row::not_available(
            "W5",
            "Postgres vs cqrs-es/postgres-es and esrs",
            "SOURCEFLOW_PG_URL is not set",
        )]);
    };
    let schema = format!("sfbench_{}", std::process::id());
    let _registered = crate::cleanup::schemas(&url, [&schema]);
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("cannot connect to SOURCEFLOW_PG_URL")?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await?;
    let outcome = w5_in(settings, &url, &schema).await;
    let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await;
    admin.close().await;
    let rows = outcome?;
    dropped.context("cannot drop the benchmark schema")?;
    Ok(rows)
}

async fn w5_in(settings: &Settings, url: &str, schema: &str) -> anyhow::Result<Vec<Row>> {
    // Both runs send 10 commands to each account: a quick run has fewer accounts, not a
    // different shape (with one command per account, every command would be an account's
    // first, which reads the account before its commit).
    let streams: u64 = settings.pick(100, 1_000);
    let round_robin: u64 = 10 * streams;
    let long: u64 = settings.pick(1_000, 10_000);

    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(url, schema).await?;
    let ours = domain::flow(store, Components::Full).await?;
    // The peers' pool as their docs build it (sqlx defaults: 10 connections, a ping per
    // checkout), with the schema as search_path.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(crate::raw::postgres::in_schema(url, schema)?)
        .await?;
    cqrs::postgres::create_tables(&pool).await?;
    #[cfg_attr(not(feature = "esrs"), allow(unused_mut))]
    let mut contenders: Vec<Arc<dyn Contender>> = vec![
        Arc::new(Ours(ours)),
        Arc::new(CqrsPg(cqrs::postgres::framework(pool.clone()))),
    ];
    #[cfg(feature = "esrs")]
    contenders.push(Arc::new(EsrsPg(
        crate::peers::esrs::Esrs::new(pool.clone()).await?,
    )));
    let esrs_missing = !cfg!(feature = "esrs");

    progress(format!(
        "W5: Postgres, {round_robin} commands round-robin over {streams} accounts, per framework"
    ));
    // Warm-up: the pools' connections and prepared statements (accounts outside the shapes).
    interleaved(&contenders, 50, |i| 900_000 + i, "warm-up").await?;
    let spread = interleaved(&contenders, round_robin, |i| i % streams, "round-robin").await?;
    progress(format!(
        "W5: Postgres, one stream of {long} commands per framework (peers replay it each time)"
    ));
    let single = interleaved(&contenders, long, |_| 800_000, "one stream").await?;

    let rates = |tallies: &[Tally]| -> Vec<f64> {
        tallies.iter().map(|t| rate(t.count, t.total)).collect()
    };
    let (spread_rates, single_rates) = (rates(&spread), rates(&single));
    let mut rows = Vec::new();
    let describe = |rates: &[f64]| -> String {
        contenders
            .iter()
            .zip(rates)
            .map(|(c, r)| format!("{} {}", c.name(), fmt_rate(*r)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    for (label, rates) in [
        (
            format!("Postgres, {streams} streams round-robin: ours / faster peer"),
            &spread_rates,
        ),
        (
            format!("Postgres, 1 stream of {long}: ours / faster peer"),
            &single_rates,
        ),
    ] {
        let best_peer = rates[1..].iter().copied().fold(0.0, f64::max);
        let mut row = Row::checked(
            "W5",
            label,
            describe(rates),
            rates[0] / best_peer,
            Target::AtLeast(2.0),
        );
        if esrs_missing {
            row = row.note(
                "esrs n/a: build with --features esrs (it forces OpenSSL via sqlx native-tls)",
            );
        }
        rows.push(row);
    }
    let prior = if settings.quick { "1,000" } else { "10,000" };
    progress(format!(
        "W5: per-command time at {prior} prior commands vs at 10, interleaved"
    ));
    let blocks = settings.pick(20, 40);
    let histories = pg_history(&contenders, 800_000, 700_000, blocks).await?;
    let peers_history: Vec<String> = contenders
        .iter()
        .zip(&histories)
        .skip(1)
        .map(|(c, (long, short))| {
            format!(
                "{} {:.1}",
                c.name(),
                long.as_secs_f64() / short.as_secs_f64()
            )
        })
        .collect();
    let (late, early) = histories[0];
    rows.push(
        Row::checked(
            "W5",
            format!("Postgres: per command at {prior} prior / at 10"),
            format!("{} vs {}", fmt_us(late), fmt_us(early)),
            late.as_secs_f64() / early.as_secs_f64(),
            Target::AtMost(1.2),
        )
        .note(format!("peers: {}", peers_history.join(", "))),
    );
    if esrs_missing {
        rows.push(Row::not_available(
            "W5",
            "esrs (Postgres)",
            "not built: enable the `esrs` feature; esrs's `postgres` feature turns on sqlx's \
             `runtime-tokio-native-tls`, which links OpenSSL into every sqlx user of the workspace",
        ));
    }
    pool.close().await;
    Ok(rows)
}
