//! W9: commands over NATS JetStream. 32 senders, each on its own account, send through a
//! [`NatsCommandDispatcher`] to deployments of 1, 2 and 4 [`NatsCommandWorker`]s on one
//! Postgres, interleaved cell by cell with W8's sourceflow cell (the same flow sending
//! directly to Postgres, 32 senders).
//!
//! A deployment is workers that keep only the write side (the saga, each with a store and pool
//! of its own, as separate processes would) and one read side keeping the view and the
//! aggregate. In the measured deployments the read side shares the workers' Postgres and
//! [follows](SourceFlow::follow) its log; a context cell runs one worker with the read side fed
//! over NATS instead (one [`NatsEventPublisher`] and one batched [`NatsViewFeeder`]: the shape
//! for a read side that does not share the store). A cell is timed until every command is
//! answered and every event is applied to the view, so the view work the direct flow does
//! before `send` returns is counted on both sides. Each deployment has a schema and a topology
//! of its own, and its workers share the partitions out before the first round. Workers run in
//! this process, on its runtime: on a two-core machine separate processes would not get more
//! CPU.
//!
//! The floor ([`crate::raw::nats`]) runs in the same rounds with 1, 2 and 4 consumers: the same
//! commands over the same JetStream to the same Postgres, each written as one statement by the
//! least code that does it. Its rows say what the machine gives more consumers, apart from what
//! the framework does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use futures_util::future::try_join_all;
use sourceflow::prelude::MemoryStore;
use sourceflow::SourceFlow;
use sourceflow_nats::{
    NatsCommandDispatcher, NatsCommandWorker, NatsEventPublisher, NatsViewFeeder, Topology,
};
use sourceflow_sqlx::PostgresStore;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::{fmt_rate, progress, rate, Settings};
use crate::cleanup::Leftover;
use crate::domain::{self, account_id, AccountSummary, Components, Deposit};
use crate::raw::{
    self,
    nats::{RawDeployment, RawSender},
};
use crate::report::{median_f64, Row, Target};

/// Concurrent senders in every cell.
const SENDERS: u64 = 32;
/// The deployments' worker counts (read side following the log), and the floor's consumer
/// counts; then the context
/// deployment's (read side fed over NATS).
const WORKERS: [usize; 3] = [1, 2, 4];
const CONTEXT_WORKERS: usize = 1;
/// Postgres connections of each floor deployment, shared out among its consumers: every
/// system of the run holds its connections at once, and the server's default
/// `max_connections` (100) leaves the floors about 30 beside the deployments' 65. Eight
/// connections commit more than the two cores can handle however they are shared out.
const FLOOR_CONNECTIONS: u32 = 8;
/// Command partitions of every deployment.
const PARTITIONS: u32 = 16;

/// W9: needs `SOURCEFLOW_PG_URL` and `SOURCEFLOW_NATS_URL`; fresh schemas and streams are
/// created and removed.
///
/// # Errors
/// A failed workload (schemas and streams are still removed).
pub async fn w9(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let (Some(pg), Some(nats)) = (settings.pg_url.clone(), settings.nats_url.clone()) else {
        return Ok(vec![Row::not_available(
            "W9",
            "NATS workers vs W8's direct sourceflow",
            "SOURCEFLOW_PG_URL and SOURCEFLOW_NATS_URL must both be set",
        )]);
    };
    run(&pg, &nats, settings.pick(2, 3), settings.pick(320, 960)).await
}

/// How a deployment's read side gets the events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// It follows the log of the Postgres the workers commit to.
    Log,
    /// A publisher copies the log to a JetStream stream, a batched feeder applies it.
    Nats,
}

/// Events a deployment's read side has taken so far.
enum Applied {
    Log(Arc<AtomicU64>),
    Nats(Box<NatsViewFeeder>),
}

/// One system of the table: the direct flow, or a deployment of workers.
enum System {
    Direct {
        flow: SourceFlow,
    },
    Nats {
        workers: usize,
        feed: Feed,
        api: SourceFlow,
        applied: Applied,
        /// The read side's flow (reads the view's models).
        read_side: SourceFlow,
        tasks: Vec<JoinHandle<()>>,
    },
    /// The floor: raw consumers writing each command's rows in one statement.
    Floor {
        consumers: usize,
        /// Kept for its consumers, which stop when it is dropped.
        _deployment: Box<RawDeployment>,
        senders: Vec<RawSender>,
        pool: PgPool,
    },
}

impl System {
    fn name(&self) -> String {
        match self {
            System::Direct { .. } => "W8 sourceflow (direct)".to_owned(),
            System::Nats {
                feed: Feed::Nats, ..
            } => "1 worker, view fed over NATS".to_owned(),
            System::Nats { workers: 1, .. } => "1 worker".to_owned(),
            System::Nats { workers, .. } => format!("{workers} workers"),
            System::Floor { consumers: 1, .. } => "floor, 1 consumer".to_owned(),
            System::Floor { consumers, .. } => format!("floor, {consumers} consumers"),
        }
    }

    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<()> {
        let flow = match self {
            System::Direct { flow } => flow,
            System::Nats { api, .. } => api,
            System::Floor { senders, .. } => {
                // A cell's 32 accounts are consecutive: one sender each.
                return senders[(account % SENDERS) as usize]
                    .deposit(account, n)
                    .await;
            }
        };
        flow.send(&*account_id(account), Deposit::nth(n)).await?;
        Ok(())
    }

    /// Events the deployment's read side applied so far (0 for the direct flow, whose view is
    /// current when `send` returns).
    fn applied(&self) -> u64 {
        match self {
            System::Direct { .. } | System::Floor { .. } => 0,
            System::Nats {
                applied: Applied::Log(counter),
                ..
            } => counter.load(Ordering::Relaxed),
            System::Nats {
                applied: Applied::Nats(feeder),
                ..
            } => feeder.delivered(),
        }
    }

    /// The deposits the view counted for `account` (for the floor, its command rows).
    async fn view_deposits(&self, account: u64) -> anyhow::Result<u64> {
        let flow = match self {
            System::Direct { flow } => flow,
            System::Nats { read_side, .. } => read_side,
            System::Floor { pool, .. } => {
                let rows: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM sf_commands WHERE stream_id = $1")
                        .bind(account_id(account))
                        .fetch_one(pool)
                        .await?;
                return Ok(u64::try_from(rows)?);
            }
        };
        let summary: Option<AccountSummary> = flow.view_model(&*account_id(account)).await?;
        Ok(summary.map_or(0, |s| s.deposits))
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let System::Nats { tasks, .. } = self {
            for task in tasks {
                task.abort();
            }
        }
    }
}

/// Runs one cell: one untimed deposit per account, then `commands` deposits over 32 senders,
/// timed until every one is answered and (for a deployment) applied to the view. Checks that
/// the view holds every deposit once. Returns commands per second.
async fn run_cell(system: &Arc<System>, commands: u64, base: u64) -> anyhow::Result<f64> {
    let applied_before = system.applied();
    try_join_all((0..SENDERS).map(|s| system.deposit(base + s, s))).await?;
    let per_sender = commands / SENDERS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            let system = system.clone();
            tokio::spawn(async move {
                for i in 0..per_sender {
                    system.deposit(base + s, s * per_sender + i).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let sent = per_sender * SENDERS;
    if let System::Nats { .. } = **system {
        let expected = applied_before + SENDERS + sent;
        let deadline = Instant::now() + Duration::from_secs(60);
        while system.applied() < expected {
            ensure!(
                Instant::now() < deadline,
                "{}: the view got {} of {expected} events within a minute",
                system.name(),
                system.applied()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let elapsed = started.elapsed();
    for s in 0..SENDERS {
        let counted = system.view_deposits(base + s).await?;
        ensure!(
            counted == per_sender + 1,
            "{}: account {} has {counted} deposits in the view, expected {}",
            system.name(),
            base + s,
            per_sender + 1
        );
    }
    Ok(rate(sent, elapsed))
}

/// A Postgres store in `schema`, with a pool of 5 connections: the direct flow and the four
/// deployments (8 workers, 4 read sides) run 13 stores against one server at once, and 13
/// default pools of 10 would pass the server's default `max_connections` (100), where
/// connections are refused and commands stall.
async fn store(url: &str, schema: &str) -> anyhow::Result<PostgresStore> {
    Ok(PostgresStore::builder(url)
        .schema(schema)
        .max_connections(5)
        .connect()
        .await?)
}

/// Starts a deployment of `workers` workers in `schema` with topology `topology`, its read side
/// fed by `feed`, and waits until the workers have shared the partitions out.
async fn deployment(
    pg: &str,
    nats: &str,
    schema: &str,
    topology: &Topology,
    workers: usize,
    feed: Feed,
) -> anyhow::Result<System> {
    let client = || async { anyhow::Ok(async_nats::connect(nats).await?) };
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    let mut publisher_flow = None;
    for _ in 0..workers {
        let flow = domain::flow(store(pg, schema).await?, Components::SagaOnly).await?;
        publisher_flow.get_or_insert_with(|| flow.clone());
        let worker = NatsCommandWorker::new(client().await?, flow, topology.clone())
            .ack_wait(Duration::from_secs(5));
        handles.push(worker.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = worker.run().await {
                if !crate::cleanup::stopping() {
                    progress(format!("W9: a worker stopped: {e}"));
                }
            }
        }));
    }
    let read_side = domain::flow(store(pg, schema).await?, Components::ReadSide).await?;
    let applied = match feed {
        Feed::Log => {
            let counter = Arc::new(AtomicU64::new(0));
            let (following, taken) = (read_side.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let followed = following
                    .follow_with(|p| taken.store(p.applied, Ordering::Relaxed))
                    .await;
                if let Err(e) = followed {
                    if !crate::cleanup::stopping() {
                        progress(format!("W9: the read side stopped: {e}"));
                    }
                }
            }));
            Applied::Log(counter)
        }
        Feed::Nats => {
            let publisher_flow = publisher_flow.context("a deployment has a worker")?;
            let publisher =
                NatsEventPublisher::new(client().await?, publisher_flow, topology.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = publisher.run().await {
                    progress(format!("W9: the publisher stopped: {e}"));
                }
            }));
            let feeder =
                NatsViewFeeder::new(client().await?, read_side.clone(), topology.clone(), "w9")
                    .ack_wait(Duration::from_secs(5));
            let running = feeder.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = running.run().await {
                    progress(format!("W9: the feeder stopped: {e}"));
                }
            }));
            Applied::Nats(Box::new(feeder))
        }
    };
    let dispatcher = NatsCommandDispatcher::builder(client().await?, topology.clone())
        .route::<Deposit>()
        .timeout(Duration::from_secs(30))
        .build()
        .await?;
    let api = SourceFlow::builder()
        .store(MemoryStore::new())
        .without_discovery()
        .dispatcher(dispatcher)
        .build()
        .await?;
    let system = System::Nats {
        workers,
        feed,
        api,
        applied,
        read_side,
        tasks,
    };
    // Every worker holds its share of the partitions.
    let share = (PARTITIONS as usize).div_ceil(workers);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let held: Vec<usize> = handles.iter().map(|w| w.partitions().len()).collect();
        if held.iter().sum::<usize>() == PARTITIONS as usize && held.iter().all(|&h| h <= share) {
            break;
        }
        if Instant::now() >= deadline {
            bail!("{workers} workers did not share the partitions out: {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(system)
}

/// The floor with `consumers` consumers, its tables in `schema` and its stream named after
/// `topology`'s command stream.
async fn floor(
    pg: &str,
    nats: &str,
    schema: &str,
    topology: &Topology,
    consumers: usize,
) -> anyhow::Result<System> {
    let options = raw::postgres::in_schema(pg, schema)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    raw::postgres::create_tables(&pool).await?;
    let deployment = RawDeployment::start(
        nats,
        &options,
        &topology.command_stream(),
        PARTITIONS,
        consumers,
        FLOOR_CONNECTIONS / consumers as u32,
    )
    .await?;
    let senders = try_join_all((0..SENDERS).map(|_| deployment.sender())).await?;
    Ok(System::Floor {
        consumers,
        _deployment: Box::new(deployment),
        senders,
        pool,
    })
}

/// W9 with `rounds` rounds of `commands` commands per cell.
async fn run(pg: &str, nats: &str, rounds: usize, commands: u64) -> anyhow::Result<Vec<Row>> {
    let pid = std::process::id();
    let deployments = deployments();
    let names: Vec<String> = deployments
        .iter()
        .map(|(w, feed)| deployment_name(*w, *feed))
        .chain(WORKERS.iter().map(|c| format!("floor{c}")))
        .collect();
    let schemas: Vec<String> = std::iter::once("direct")
        .chain(names.iter().map(String::as_str))
        .map(|s| format!("sfbench_w9_{s}_{pid}"))
        .collect();
    let topologies: Vec<Topology> = names
        .iter()
        .map(|name| {
            Topology::new(format!("sfbenchw9_{pid}_{name}"))
                .partitions(PARTITIONS)
                .in_memory()
        })
        .collect();
    let _registered: Vec<_> = crate::cleanup::schemas(pg, &schemas)
        .into_iter()
        .chain(topologies.iter().map(|topology| {
            crate::cleanup::register(Leftover::Streams {
                url: nats.to_owned(),
                topology: topology.clone(),
            })
        }))
        .collect();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(pg)
        .await
        .context("cannot connect to SOURCEFLOW_PG_URL")?;
    let jetstream = async_nats::jetstream::new(
        async_nats::connect(nats)
            .await
            .context("cannot connect to SOURCEFLOW_NATS_URL")?,
    );
    for schema in &schemas {
        recreate(&admin, schema).await?;
    }
    let outcome = w9_in(pg, nats, &schemas, &topologies, rounds, commands).await;
    let mut cleaned = Ok(());
    for schema in &schemas {
        if let Err(e) = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await
        {
            cleaned = Err(anyhow::Error::from(e));
        }
    }
    for topology in &topologies {
        if let Err(e) = topology.delete_streams(&jetstream).await {
            cleaned = Err(e.into());
        }
    }
    admin.close().await;
    let rows = outcome?;
    cleaned.context("cannot remove a W9 schema or stream")?;
    Ok(rows)
}

/// Every deployment: its worker count and its read side's feed.
fn deployments() -> Vec<(usize, Feed)> {
    WORKERS
        .iter()
        .map(|&w| (w, Feed::Log))
        .chain(std::iter::once((CONTEXT_WORKERS, Feed::Nats)))
        .collect()
}

/// A deployment's part of its schema's and topology's names.
fn deployment_name(workers: usize, feed: Feed) -> String {
    match feed {
        Feed::Log => format!("nats{workers}"),
        Feed::Nats => format!("nats{workers}feed"),
    }
}

async fn recreate(admin: &PgPool, schema: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(admin)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(admin)
        .await?;
    Ok(())
}

async fn w9_in(
    pg: &str,
    nats: &str,
    schemas: &[String],
    topologies: &[Topology],
    rounds: usize,
    commands: u64,
) -> anyhow::Result<Vec<Row>> {
    let direct = domain::flow(store(pg, &schemas[0]).await?, Components::Full).await?;
    let mut systems: Vec<Arc<System>> = vec![Arc::new(System::Direct { flow: direct })];
    for (i, (workers, feed)) in deployments().into_iter().enumerate() {
        progress(format!(
            "W9: starting a deployment of {workers} worker(s){}",
            if feed == Feed::Nats {
                ", view fed over NATS"
            } else {
                ""
            }
        ));
        systems.push(Arc::new(
            deployment(pg, nats, &schemas[i + 1], &topologies[i], workers, feed).await?,
        ));
    }
    let deployed = deployments().len();
    for (i, consumers) in WORKERS.into_iter().enumerate() {
        progress(format!(
            "W9: starting the floor with {consumers} consumer(s)"
        ));
        let (schema, topology) = (&schemas[1 + deployed + i], &topologies[deployed + i]);
        systems.push(Arc::new(
            floor(pg, nats, schema, topology, consumers).await?,
        ));
    }
    progress(format!(
        "W9: NATS, {rounds} rounds of {commands} commands per cell, {SENDERS} senders \
         (W8's direct flow, 1, 2 and 4 workers, 1 worker with the view fed over NATS, \
         the floor with 1, 2 and 4 consumers)"
    ));
    // Warm-up: connections, consumers, caches (accounts outside the cells).
    for system in &systems {
        run_cell(system, 64, 900_000).await?;
    }
    let mut rates = vec![Vec::new(); systems.len()];
    for round in 0..rounds {
        for k in 0..systems.len() {
            let s = (k + round) % systems.len();
            let base = 10_000 * (round as u64 + 1) + 1_000 * s as u64;
            rates[s].push(run_cell(&systems[s], commands, base).await?);
        }
        progress(format!("  round {} of {rounds} done", round + 1));
    }
    let median: Vec<f64> = rates.iter_mut().map(|r| median_f64(r)).collect();
    let names: Vec<String> = systems.iter().map(|s| s.name()).collect();
    drop(systems);
    Ok(rows(&names, &median, commands, rounds))
}

/// The table's rows from the systems' names and median rates (direct first, then 1, 2 and 4
/// workers, then 1 worker with the view fed over NATS, then the floor with 1, 2 and 4
/// consumers).
fn rows(names: &[String], median: &[f64], commands: u64, rounds: usize) -> Vec<Row> {
    let listed = |range: std::ops::Range<usize>| {
        names[range.clone()]
            .iter()
            .zip(&median[range])
            .map(|(name, rate)| format!("{name} {}", fmt_rate(*rate)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let measured = listed(0..5);
    let (direct, one, two, four, over_nats) =
        (median[0], median[1], median[2], median[3], median[4]);
    let (floor_one, floor_two, floor_four) = (median[5], median[6], median[7]);
    vec![
        Row::info(
            "W9",
            "NATS, 32 senders: cmd/s (answered and in the view)",
            measured,
        )
        .note(format!(
            "{PARTITIONS} partitions, window 16; the read side follows the Postgres log; \
             {commands} commands per cell, {rounds} rounds"
        )),
        Row::checked(
            "W9",
            "NATS, 32 senders, 1 worker / W8 sourceflow at 32 senders",
            format!("{} vs {}", fmt_rate(one), fmt_rate(direct)),
            one / direct,
            Target::AtLeast(0.7),
        ),
        Row::checked(
            "W9",
            "NATS, 32 senders: lower of 2 workers / 1 and 4 workers / 1",
            format!("2/1 {:.2}; 4/1 {:.2}", two / one, four / one),
            (two / one).min(four / one),
            Target::AtLeast(1.0),
        )
        .note("below 1: adding workers lowers throughput"),
        Row::info(
            "W9",
            "context: 1 worker, view fed over NATS / W8 sourceflow at 32 senders",
            format!("{} vs {}", fmt_rate(over_nats), fmt_rate(direct)),
        )
        .note(format!(
            "ratio {:.2}, no target; a publisher and a batched feeder carry the events",
            over_nats / direct
        )),
        Row::info(
            "W9",
            "context: the floor over the same NATS and Postgres (raw consumers, one statement per command)",
            listed(5..8),
        )
        .note(format!(
            "no target; floor 2/1 {:.2}, 4/1 {:.2}; ours / floor: 1 worker {:.2}, 2 workers {:.2}, \
             4 workers {:.2}",
            floor_two / floor_one,
            floor_four / floor_one,
            one / floor_one,
            two / floor_two,
            four / floor_four
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_are_checked_and_a_fall_is_a_miss() {
        let names: Vec<String> = [
            "direct",
            "1",
            "2",
            "4",
            "1 over NATS",
            "floor 1",
            "floor 2",
            "floor 4",
        ]
        .map(String::from)
        .to_vec();
        let missed = |median: &[f64]| {
            rows(&names, median, 320, 2)
                .iter()
                .filter(|r| r.met() == Some(false))
                .map(|r| r.what.clone())
                .collect::<Vec<_>>()
        };
        assert!(missed(&[1_000.0, 800.0, 900.0, 1_200.0, 500.0, 1.0, 1.0, 1.0]).is_empty());
        let slow = missed(&[1_000.0, 600.0, 900.0, 1_200.0, 500.0, 1.0, 1.0, 1.0]);
        assert!(slow.iter().any(|w| w.contains("1 worker")), "{slow:?}");
        let falling = missed(&[1_000.0, 800.0, 900.0, 700.0, 500.0, 1.0, 1.0, 1.0]);
        assert!(
            falling.iter().any(|w| w.contains("4 workers / 1")),
            "{falling:?}"
        );
    }

    /// A small run on the servers: every deployment answers, applies each deposit once to
    /// the view, and leaves no schema or stream behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(all(sourceflow_pg, sourceflow_nats)),
        ignore = "set SOURCEFLOW_PG_URL and SOURCEFLOW_NATS_URL to run"
    )]
    async fn a_small_run_measures_every_deployment() {
        let pg = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
        let nats = std::env::var("SOURCEFLOW_NATS_URL").expect("SOURCEFLOW_NATS_URL");
        let rows = run(&pg, &nats, 1, 64).await.expect("W9");
        assert_eq!(rows.len(), 5);
        assert!(
            rows[1].met().is_some() && rows[2].met().is_some(),
            "{rows:?}"
        );
        let admin = PgPoolOptions::new().connect(&pg).await.expect("connect");
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1")
                .bind(format!("sfbench_w9_%_{}", std::process::id()))
                .fetch_one(&admin)
                .await
                .expect("count schemas");
        assert_eq!(left, 0, "W9 left its schemas behind");
        let jetstream =
            async_nats::jetstream::new(async_nats::connect(&nats).await.expect("connect"));
        let floors = WORKERS.iter().map(|c| format!("floor{c}"));
        for deployment in deployments()
            .into_iter()
            .map(|(w, feed)| deployment_name(w, feed))
            .chain(floors)
        {
            let name = format!("sfbenchw9_{}_{deployment}_commands", std::process::id());
            assert!(
                jetstream.get_stream(&name).await.is_err(),
                "W9 left {name} behind"
            );
        }
    }
}
