//! W8: Postgres under concurrency. 1, 8 and 32 concurrent senders, each on its own stream, and
//! 32 senders on one stream, for sourceflow, `cqrs-es` + `postgres-es`, `esrs` (with the bench's
//! `esrs` feature) and two floors (one row per statement; one command's rows in one statement),
//! each framework in a schema of its own and the floors in another.
//!
//! The systems take turns cell by cell in every round (the order rotating), so drift on the
//! machine hits all of them alike; a cell's figure is the median of its rounds. Every cell
//! writes to streams that already hold one (untimed) command, so the timed commands neither
//! create streams nor open connections.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use futures_util::future::try_join_all;
use sourceflow::SourceFlow;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::{fmt_rate, progress, rate, Settings};
use crate::domain::{self, account_id, AccountSummary, Components, Deposit};
use crate::peers::cqrs::{self, BankCommand};
use crate::raw::postgres as floor;
use crate::report::{median_f64, Row, Target};

/// A command gives up after this many conflicts (none should come near it).
const MAX_ATTEMPTS: u64 = 10_000;

/// How many commands of one stream a system applied, counted in its log and in its view.
struct Applied {
    log: u64,
    view: u64,
}

/// One system under W8.
#[async_trait::async_trait]
trait System: Send + Sync {
    fn name(&self) -> &'static str;

    /// Sends the `n`-th deposit to `account`; returns the conflicts the caller retried.
    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<u64>;

    /// Conflicts the system retried by itself so far.
    fn conflicts_retried(&self) -> u64 {
        0
    }

    /// The commands of `account` in the system's log and in its view.
    async fn applied(&self, account: u64) -> anyhow::Result<Applied>;
}

struct Ours {
    flow: SourceFlow,
    pool: PgPool,
}

#[async_trait::async_trait]
impl System for Ours {
    fn name(&self) -> &'static str {
        "sourceflow"
    }

    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<u64> {
        self.flow
            .send(&*account_id(account), Deposit::nth(n))
            .await?;
        Ok(0)
    }

    fn conflicts_retried(&self) -> u64 {
        self.flow.stats().conflicts_retried
    }

    async fn applied(&self, account: u64) -> anyhow::Result<Applied> {
        let id = account_id(account);
        let log: i64 = sqlx::query_scalar("SELECT count(*) FROM sf_events WHERE stream_id = $1")
            .bind(&id)
            .fetch_one(&self.pool)
            .await?;
        let view: Option<AccountSummary> = self.flow.view_model(&*id).await?;
        Ok(Applied {
            log: u64::try_from(log)?,
            view: view.map_or(0, |v| v.deposits),
        })
    }
}

struct CqrsPg {
    framework: postgres_es::PostgresCqrs<cqrs::BankAccount>,
    pool: PgPool,
}

#[async_trait::async_trait]
impl System for CqrsPg {
    fn name(&self) -> &'static str {
        "cqrs-es + postgres-es"
    }

    /// `cqrs-es` reports a lost race as `AggregateConflict` and leaves retrying to the caller.
    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<u64> {
        let id = account_id(account);
        for conflicts in 0..MAX_ATTEMPTS {
            match self
                .framework
                .execute(&id, BankCommand::Deposit(Deposit::nth(n)))
                .await
            {
                Ok(()) => return Ok(conflicts),
                Err(cqrs_es::AggregateError::AggregateConflict) => continue,
                Err(e) => bail!("cqrs-es: {e}"),
            }
        }
        bail!("cqrs-es: {MAX_ATTEMPTS} conflicts in a row on {id}")
    }

    async fn applied(&self, account: u64) -> anyhow::Result<Applied> {
        let id = account_id(account);
        let (log, view): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE aggregate_id = $1), \
             (SELECT (payload->>'deposits')::bigint FROM bank_summary_view WHERE view_id = $1)",
        )
        .bind(&id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Applied {
            log: u64::try_from(log)?,
            view: u64::try_from(view.unwrap_or(0))?,
        })
    }
}

/// `esrs` with its Postgres store, as in W5: load the aggregate's events, handle, persist, then
/// its event handler upserts the summary row.
#[cfg(feature = "esrs")]
struct EsrsPg {
    esrs: crate::peers::esrs::Esrs,
    pool: PgPool,
}

#[cfg(feature = "esrs")]
impl EsrsPg {
    fn id(account: u64) -> uuid::Uuid {
        uuid::Uuid::from_u128(u128::from(account) + 1)
    }
}

#[cfg(feature = "esrs")]
#[async_trait::async_trait]
impl System for EsrsPg {
    fn name(&self) -> &'static str {
        "esrs"
    }

    /// A lost race is the events table's unique key refusing the insert: retried by the
    /// caller, as for `cqrs-es`.
    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<u64> {
        for conflicts in 0..MAX_ATTEMPTS {
            match self.esrs.deposit(Self::id(account), Deposit::nth(n)).await {
                Ok(()) => return Ok(conflicts),
                Err(e) if e.is_conflict() => continue,
                Err(e) => bail!("{e}"),
            }
        }
        bail!("esrs: {MAX_ATTEMPTS} conflicts in a row on account {account}")
    }

    async fn applied(&self, account: u64) -> anyhow::Result<Applied> {
        use crate::peers::esrs::{EVENTS_TABLE, VIEW_TABLE};
        let (log, view): (i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {EVENTS_TABLE} WHERE aggregate_id = $1), \
             (SELECT deposits FROM {VIEW_TABLE} WHERE id = $1)"
        ))
        .bind(Self::id(account))
        .fetch_one(&self.pool)
        .await?;
        Ok(Applied {
            log: u64::try_from(log)?,
            view: u64::try_from(view.unwrap_or(0))?,
        })
    }
}

struct RowFloor(floor::RowInsert);

#[async_trait::async_trait]
impl System for RowFloor {
    fn name(&self) -> &'static str {
        "sqlx 1-row INSERT"
    }

    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<u64> {
        self.0.insert(account, n).await?;
        Ok(0)
    }

    async fn applied(&self, _account: u64) -> anyhow::Result<Applied> {
        bail!("the one-row floor keeps no streams")
    }
}

struct UnitFloor(floor::UnitOfWork);

#[async_trait::async_trait]
impl System for UnitFloor {
    fn name(&self) -> &'static str {
        "raw unit of work"
    }

    async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<u64> {
        self.0.commit(account, n).await?;
        Ok(0)
    }

    async fn applied(&self, _account: u64) -> anyhow::Result<Applied> {
        bail!("the unit-of-work floor keeps no streams")
    }
}

/// What a system is in the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Ours,
    Peer,
    RowFloor,
    UnitFloor,
}

impl Role {
    /// Whether such a system keeps streams (the floors do not: the hot-stream cell skips them).
    fn keeps_streams(self) -> bool {
        matches!(self, Role::Ours | Role::Peer)
    }
}

/// Where sourceflow is in the table (first; the peers follow, then the two floors).
const OURS: usize = 0;

/// One cell of the table: how many senders, and whether they share one stream.
#[derive(Clone, Copy)]
struct Cell {
    senders: u64,
    one_stream: bool,
}

impl Cell {
    fn label(self) -> String {
        match (self.senders, self.one_stream) {
            (1, _) => "1 sender".to_owned(),
            (n, false) => format!("{n} senders"),
            (n, true) => format!("{n} senders, one stream"),
        }
    }
}

const CELLS: [Cell; 4] = [
    Cell {
        senders: 1,
        one_stream: false,
    },
    Cell {
        senders: 8,
        one_stream: false,
    },
    Cell {
        senders: 32,
        one_stream: false,
    },
    Cell {
        senders: 32,
        one_stream: true,
    },
];

/// What one run of one cell measured.
struct Outcome {
    rate: f64,
    conflicts: u64,
    /// For the one-stream cell: the commands found in the log and the view, and how many
    /// were sent.
    exact: Option<(Applied, u64)>,
}

/// Runs `commands` deposits split over `cell.senders` concurrent senders, on accounts from
/// `base` (all on `base` for the one-stream cell), after one untimed deposit per account.
async fn run_cell(
    system: &Arc<dyn System>,
    cell: Cell,
    commands: u64,
    base: u64,
) -> anyhow::Result<Outcome> {
    let account = move |s: u64| if cell.one_stream { base } else { base + s };
    let accounts = if cell.one_stream { 1 } else { cell.senders };
    try_join_all((0..accounts).map(|s| system.deposit(account(s), s))).await?;
    let per_sender = commands / cell.senders;
    let before = system.conflicts_retried();
    let started = Instant::now();
    let tasks: Vec<_> = (0..cell.senders)
        .map(|s| {
            let system = system.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for i in 0..per_sender {
                    conflicts += system.deposit(account(s), s * per_sender + i).await?;
                }
                anyhow::Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await??;
    }
    let elapsed = started.elapsed();
    let sent = per_sender * cell.senders;
    conflicts += system.conflicts_retried() - before;
    let exact = if cell.one_stream {
        Some((system.applied(base).await?, sent + 1))
    } else {
        None
    };
    Ok(Outcome {
        rate: rate(sent, elapsed),
        conflicts,
        exact,
    })
}

/// W8: each framework in a fresh schema of its own and the floors in a third, dropped afterwards.
///
/// # Errors
/// A failed workload (the schemas are still dropped).
pub async fn w8(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let Some(url) = settings.pg_url.clone() else {
        return Ok(vec![Row::not_available(
            "W8",
            "Postgres concurrency vs the peers and the floors",
            "SOURCEFLOW_PG_URL is not set",
        )]);
    };
    run(&url, settings.pick(2, 3), settings.pick(320, 960)).await
}

/// W8 with `rounds` rounds of `commands` commands per cell and system.
async fn run(url: &str, rounds: usize, commands: u64) -> anyhow::Result<Vec<Row>> {
    let pid = std::process::id();
    let mut names = vec!["sf", "cqrs", "floors"];
    if cfg!(feature = "esrs") {
        names.push("esrs");
    }
    let schemas: Vec<String> = names
        .iter()
        .map(|s| format!("sfbench_w8_{s}_{pid}"))
        .collect();
    let _registered = crate::cleanup::schemas(url, &schemas);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("cannot connect to SOURCEFLOW_PG_URL")?;
    for schema in &schemas {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await?;
    }
    let outcome = w8_in(url, &schemas, rounds, commands).await;
    let mut dropped = Ok(());
    for schema in &schemas {
        let result = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await;
        if let Err(e) = result {
            dropped = Err(e);
        }
    }
    admin.close().await;
    let rows = outcome?;
    dropped.context("cannot drop a benchmark schema")?;
    Ok(rows)
}

async fn w8_in(
    url: &str,
    schemas: &[String],
    rounds: usize,
    commands: u64,
) -> anyhow::Result<Vec<Row>> {
    let pool = |schema: &str, connections: u32, ping: bool| {
        let options = floor::in_schema(url, schema);
        async move {
            anyhow::Ok(
                PgPoolOptions::new()
                    .max_connections(connections)
                    .test_before_acquire(ping)
                    .connect_with(options?)
                    .await?,
            )
        }
    };

    // sourceflow as a user builds it (the store's default pool: 10 connections, no ping).
    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(url, &schemas[0]).await?;
    let ours_pool = store.pool().clone();
    let ours = Ours {
        flow: domain::flow(store, Components::Full).await?,
        pool: ours_pool,
    };
    // The peer as its docs build it (sqlx's defaults: 10 connections, a ping per checkout).
    let cqrs_pool = pool(&schemas[1], 10, true).await?;
    cqrs::postgres::create_tables(&cqrs_pool).await?;
    let peer = CqrsPg {
        framework: cqrs::postgres::framework(cqrs_pool.clone()),
        pool: cqrs_pool.clone(),
    };
    // The floors (tables of their own in one schema) get a connection per sender, so the pool
    // never limits them.
    let floor_pool = pool(&schemas[2], 32, false).await?;
    floor::create_tables(&floor_pool).await?;
    let mut systems: Vec<(Arc<dyn System>, Role)> =
        vec![(Arc::new(ours), Role::Ours), (Arc::new(peer), Role::Peer)];
    #[cfg_attr(not(feature = "esrs"), allow(unused_mut))]
    let mut pools = vec![floor_pool.clone(), cqrs_pool];
    // esrs as W5 builds it: sqlx's defaults (10 connections, a ping per checkout).
    #[cfg(feature = "esrs")]
    {
        let esrs_pool = pool(&schemas[3], 10, true).await?;
        systems.push((
            Arc::new(EsrsPg {
                esrs: crate::peers::esrs::Esrs::new(esrs_pool.clone()).await?,
                pool: esrs_pool.clone(),
            }),
            Role::Peer,
        ));
        pools.push(esrs_pool);
    }
    systems.push((
        Arc::new(RowFloor(floor::RowInsert::new(floor_pool.clone()))),
        Role::RowFloor,
    ));
    systems.push((
        Arc::new(UnitFloor(floor::UnitOfWork::new(floor_pool))),
        Role::UnitFloor,
    ));
    let count = systems.len();

    progress(format!(
        "W8: Postgres, {rounds} rounds of {commands} commands per cell and system \
         (1, 8, 32 senders on their own streams; 32 on one stream)"
    ));
    // Warm-up: every pool's connections and prepared statements (accounts outside the cells).
    for (system, _) in &systems {
        run_cell(system, CELLS[2], 64, 900_000).await?;
    }
    let mut rates = vec![vec![Vec::new(); CELLS.len()]; count];
    // Per system, for the one-stream cell: conflicts retried, and each round's exactness.
    let mut hot: Vec<(u64, Vec<String>, bool)> = vec![(0, Vec::new(), true); count];
    for round in 0..rounds {
        for (c, cell) in CELLS.iter().enumerate() {
            let base = 10_000 * (round as u64 + 1) + 1_000 * c as u64;
            for k in 0..count {
                let s = (k + round + c) % count;
                let (system, role) = &systems[s];
                if cell.one_stream && !role.keeps_streams() {
                    continue;
                }
                let outcome = run_cell(system, *cell, commands, base).await?;
                rates[s][c].push(outcome.rate);
                if let Some((applied, sent)) = outcome.exact {
                    let entry = &mut hot[s];
                    entry.0 += outcome.conflicts;
                    entry.2 &= applied.log == sent && applied.view == sent;
                    entry
                        .1
                        .push(format!("{}/{}/{sent}", applied.log, applied.view));
                }
            }
            progress(format!(
                "  round {} of {rounds}: {} done",
                round + 1,
                cell.label()
            ));
        }
    }
    for system_pool in pools {
        system_pool.close().await;
    }

    let median: Vec<Vec<f64>> = rates
        .into_iter()
        .map(|cells| cells.into_iter().map(|mut r| median_f64(&mut r)).collect())
        .collect();
    let names: Vec<(&'static str, Role)> = systems.iter().map(|(s, r)| (s.name(), *r)).collect();
    Ok(rows(&names, &median, &hot, commands, rounds))
}

/// The table's rows from each system's (name, role), the median rate per system and cell, and
/// per system the hot stream's conflicts, counts and exactness. The peers' figure in a cell is
/// the faster peer's.
fn rows(
    systems: &[(&'static str, Role)],
    median: &[Vec<f64>],
    hot: &[(u64, Vec<String>, bool)],
    commands: u64,
    rounds: usize,
) -> Vec<Row> {
    let ours = |c: usize| median[OURS][c];
    let with = |role: Role| (0..systems.len()).filter(move |&s| systems[s].1 == role);
    let peer = |c: usize| with(Role::Peer).map(|s| median[s][c]).fold(0.0, f64::max);
    let unit_floor = |c: usize| {
        with(Role::UnitFloor)
            .map(|s| median[s][c])
            .fold(0.0, f64::max)
    };
    let mut rows = Vec::new();
    for (c, cell) in CELLS.iter().enumerate() {
        let measured = (0..systems.len())
            .filter(|&s| !cell.one_stream || systems[s].1.keeps_streams())
            .map(|s| format!("{} {}", systems[s].0, fmt_rate(median[s][c])))
            .collect::<Vec<_>>()
            .join("; ");
        let note = if cell.one_stream {
            format!("ours / faster peer {:.2}", ours(c) / peer(c))
        } else {
            format!(
                "ours / faster peer {:.2}; ours / unit-of-work floor {:.2}",
                ours(c) / peer(c),
                ours(c) / unit_floor(c)
            )
        };
        rows.push(
            Row::info("W8", format!("Postgres, {}: cmd/s", cell.label()), measured).note(note),
        );
    }
    let (one, eight, many) = (ours(0), ours(1), ours(2));
    let mut faster = Row::checked(
        "W8",
        "Postgres, 32 senders: ours / faster peer",
        format!("{} vs {}", fmt_rate(many), fmt_rate(peer(2))),
        many / peer(2),
        Target::AtLeast(2.5),
    );
    if !systems.iter().any(|(name, _)| *name == "esrs") {
        faster = faster
            .note("esrs n/a: build with --features esrs (it forces OpenSSL via sqlx native-tls)");
    }
    rows.push(faster);
    rows.push(Row::checked(
        "W8",
        "Postgres, 32 senders: ours / raw unit-of-work floor",
        format!("{} vs {}", fmt_rate(many), fmt_rate(unit_floor(2))),
        many / unit_floor(2),
        Target::AtLeast(0.6),
    ));
    rows.push(Row::checked(
        "W8",
        "Postgres, ours at 32 senders / at 1",
        format!("{} vs {}", fmt_rate(many), fmt_rate(one)),
        many / one,
        Target::AtLeast(3.0),
    ));
    rows.push(
        Row::checked(
            "W8",
            "Postgres, ours as senders are added: lower of 8/1 and 32/8",
            format!("8/1 {:.2}; 32/8 {:.2}", eight / one, many / eight),
            (eight / one).min(many / eight),
            Target::AtLeast(1.0),
        )
        .note("below 1: throughput falls as senders are added"),
    );
    let exactness = |s: usize| {
        let (conflicts, counts, exact) = &hot[s];
        format!(
            "{} {}, {conflicts} conflicts retried (log/view/sent per round: {})",
            systems[s].0,
            if *exact { "exact" } else { "NOT exact" },
            counts.join(", ")
        )
    };
    let peers = with(Role::Peer)
        .map(exactness)
        .collect::<Vec<_>>()
        .join("; ");
    rows.push(
        Row::checked(
            "W8",
            "Postgres, 32 senders on one stream: ours exact (1 = yes)",
            exactness(OURS),
            if hot[OURS].2 { 1.0 } else { 0.0 },
            Target::AtLeast(1.0),
        )
        .note(format!(
            "{peers}; {commands} commands per round + 1 untimed, {rounds} rounds"
        )),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [(&str, Role); 4] = [
        ("sourceflow", Role::Ours),
        ("peer", Role::Peer),
        ("row", Role::RowFloor),
        ("unit", Role::UnitFloor),
    ];

    fn missed(rows: &[Row]) -> Vec<String> {
        rows.iter()
            .filter(|r| r.met() == Some(false))
            .map(|r| r.what.clone())
            .collect()
    }

    #[test]
    fn every_target_is_checked_and_a_fall_is_a_miss() {
        let exact = vec![(0, vec!["321/321/321".to_owned()], true); NAMES.len()];
        // Per system, per cell (1, 8, 32, one stream).
        let good = [
            vec![1_000.0, 4_000.0, 13_000.0, 900.0],
            vec![500.0, 2_000.0, 5_000.0, 100.0],
            vec![2_000.0, 10_000.0, 30_000.0, 0.0],
            vec![1_500.0, 8_000.0, 20_000.0, 0.0],
        ];
        let rows = rows(&NAMES, &good, &exact, 320, 2);
        assert_eq!(rows.iter().filter(|r| r.met().is_some()).count(), 5);
        assert!(missed(&rows).is_empty(), "{:?}", missed(&rows));
        // The floors keep no streams: the hot-stream row names only the frameworks.
        assert!(!rows[3].measured.contains("row"), "{}", rows[3].measured);

        let mut falling = good.to_vec();
        falling[OURS][1] = 900.0;
        let mut inexact = exact.clone();
        inexact[OURS].2 = false;
        let missed = missed(&rows_of(&falling, &inexact));
        assert!(
            missed.iter().any(|w| w.contains("senders are added")),
            "{missed:?}"
        );
        assert!(
            missed.iter().any(|w| w.contains("one stream")),
            "{missed:?}"
        );
    }

    /// With a second peer (esrs), ours is compared with the faster of the two, and the hot
    /// stream's note reports each peer's exactness.
    #[test]
    fn the_faster_peer_is_the_one_compared() {
        let names = [
            ("sourceflow", Role::Ours),
            ("cqrs", Role::Peer),
            ("esrs", Role::Peer),
            ("row", Role::RowFloor),
            ("unit", Role::UnitFloor),
        ];
        let mut hot = vec![(0, vec!["321/321/321".to_owned()], true); names.len()];
        hot[2] = (7, vec!["321/300/321".to_owned()], false);
        let median = [
            vec![1_000.0, 4_000.0, 13_000.0, 900.0],
            vec![500.0, 2_000.0, 4_000.0, 100.0],
            vec![600.0, 2_500.0, 6_000.0, 120.0],
            vec![2_000.0, 10_000.0, 30_000.0, 0.0],
            vec![1_500.0, 8_000.0, 20_000.0, 0.0],
        ];
        let rows = rows(&names, &median, &hot, 320, 2);
        let faster = rows
            .iter()
            .find(|r| r.what.contains("ours / faster peer"))
            .expect("the peer row");
        assert!((faster.ratio.expect("a ratio") - 13_000.0 / 6_000.0).abs() < 1e-9);
        assert_eq!(
            missed(&rows),
            vec!["Postgres, 32 senders: ours / faster peer"]
        );
        let exact = rows.last().expect("the hot-stream row");
        let note = &exact.note;
        assert!(
            note.contains("cqrs exact") && note.contains("esrs NOT exact, 7"),
            "{note}"
        );
    }

    fn rows_of(median: &[Vec<f64>], hot: &[(u64, Vec<String>, bool)]) -> Vec<Row> {
        rows(&NAMES, median, hot, 320, 2)
    }

    /// A small run on the server at `SOURCEFLOW_PG_URL`: every system's statements work, the
    /// schemas go away, and sourceflow's hot stream comes out exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    async fn a_small_run_measures_every_system() {
        let url = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
        let rows = run(&url, 1, 32).await.expect("W8");
        assert_eq!(rows.len(), CELLS.len() + 5);
        let hot = rows.last().expect("the hot-stream row");
        assert_eq!(hot.met(), Some(true), "{hot:?}");
        assert!(hot.measured.contains("33/33/33"), "{hot:?}");
        let admin = PgPoolOptions::new().connect(&url).await.expect("connect");
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1")
                .bind(format!("sfbench_w8_%_{}", std::process::id()))
                .fetch_one(&admin)
                .await
                .expect("count schemas");
        assert_eq!(left, 0, "W8 left its schemas behind");
    }
}
