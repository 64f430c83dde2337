//! W10: scheduled commands. On SQLite and on Postgres, with 10,000 schedules pending far in the
//! future (the table a busy application carries): how late a due command fires (p50 and p99
//! of the time from its due time to its send, against the scheduler's polling interval), and
//! how fast a backlog of due commands fires compared with sending the same commands from 32
//! concurrent senders (the scheduler sends the commands of up to 32 entities at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use sourceflow::schedule::{NewSchedule, ScheduleId, ScheduleStore, SchedulerOptions};
use sourceflow::store::{OutboxMessage, Store};
use sourceflow::{Envelope, Sequence, SourceFlow, StreamId};
use uuid::Uuid;

use super::{fmt_rate, progress, rate, Settings};
use crate::domain::{account_id, AccountAggregate, AccountSaga, Deposit, SummaryView};
use crate::report::{Row, Target};

/// The scheduler's polling interval in W10.
const POLL: Duration = Duration::from_millis(50);
/// How much later than the polling interval the p99 fire delay may be.
const DELAY_BUDGET: Duration = Duration::from_millis(100);
/// Concurrent senders of the plain run: as many entities at once as the scheduler fires.
const SENDERS: u64 = 32;
/// Schedules pending far in the future during the measurements.
const PENDING: u64 = 10_000;

/// The `i`-th deposit, scheduled for `account` at `due`.
fn schedule(i: u64, account: String, due: chrono::DateTime<Utc>) -> anyhow::Result<NewSchedule> {
    let id = ScheduleId(Uuid::now_v7());
    let message_id = id.message_id();
    Ok(NewSchedule {
        id,
        due,
        command: OutboxMessage {
            envelope: Envelope {
                message_id,
                name: "bench.Deposit".into(),
                version: 1,
                stream: StreamId::new("bench.Account", account.as_str()),
                correlation_id: message_id,
                causation_id: None,
                timestamp: Utc::now(),
            },
            payload: serde_json::to_vec(&Deposit::nth(i))?,
        },
    })
}

async fn add(
    schedules: &dyn ScheduleStore,
    all: impl Iterator<Item = anyhow::Result<NewSchedule>>,
) -> anyhow::Result<()> {
    let all: Vec<NewSchedule> = all.collect::<anyhow::Result<_>>()?;
    for chunk in all.chunks(1_000) {
        schedules.add_schedules(chunk.to_vec()).await?;
    }
    Ok(())
}

async fn flow(store: Arc<dyn Store>, scheduler: SchedulerOptions) -> anyhow::Result<SourceFlow> {
    Ok(SourceFlow::builder()
        .shared_store(store)
        .without_discovery()
        .saga(AccountSaga)
        .view(SummaryView)
        .aggregate(AccountAggregate)
        .scheduler(scheduler)
        .build()
        .await?)
}

/// Waits until nothing due before `until` is pending.
async fn drained(
    schedules: &dyn ScheduleStore,
    until: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    loop {
        let first = schedules.pending_schedules(None, 1).await?;
        match first.first() {
            Some(record) if record.schedule.due <= until => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return Ok(()),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// W10 on one store (a fresh one: nothing scheduled yet).
async fn on(settings: &Settings, label: &str, store: Arc<dyn Store>) -> anyhow::Result<Vec<Row>> {
    let n: u64 = settings.pick(2_000, 10_000);
    let probes: u64 = settings.pick(100, 300);
    let schedules = store
        .schedules()
        .context("the store does not keep schedules")?;

    progress(format!(
        "W10: {label}, {n} commands sent by {SENDERS} concurrent senders"
    ));
    let plain = flow(store.clone(), SchedulerOptions::disabled()).await?;
    for i in 0..100 {
        plain.send(account_id(i), Deposit::nth(i)).await?;
    }
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let plain = plain.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    plain.send(account_id(i % 100), Deposit::nth(i)).await?;
                    i += SENDERS;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for sender in senders {
        sender.await??;
    }
    let plain_rate = rate(n, started.elapsed());
    drop(plain);

    progress(format!(
        "W10: {label}, {PENDING} schedules pending tomorrow"
    ));
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    add(
        schedules,
        (0..PENDING).map(|i| schedule(i, account_id(i % 100), tomorrow)),
    )
    .await?;

    progress(format!("W10: {label}, a backlog of {n} due commands fired"));
    let due = Utc::now() - chrono::Duration::seconds(1);
    add(
        schedules,
        (0..n).map(|i| schedule(i, account_id(i % 100), due)),
    )
    .await?;
    let started = Instant::now();
    let firing = flow(
        store.clone(),
        SchedulerOptions::new()
            .poll(POLL)
            .lease(Duration::from_secs(60)),
    )
    .await?;
    drained(schedules, due).await?;
    let fire_rate = rate(n, started.elapsed());

    progress(format!(
        "W10: {label}, {probes} commands falling due every 10 ms"
    ));
    let first_due = Utc::now() + chrono::Duration::milliseconds(500);
    let probe_dues: Vec<_> = (0..probes)
        .map(|j| first_due + chrono::Duration::milliseconds(10 * j as i64))
        .collect();
    add(
        schedules,
        probe_dues
            .iter()
            .enumerate()
            .map(|(j, due)| schedule(j as u64, format!("probe-{j:04}"), *due)),
    )
    .await?;
    let last_due = *probe_dues.last().context("no probes")?;
    drained(schedules, last_due).await?;
    let mut delays = Vec::with_capacity(probes as usize);
    for (j, due) in probe_dues.iter().enumerate() {
        let stream = StreamId::new("bench.Account", format!("probe-{j:04}"));
        let commands = store.load_commands(&stream, Sequence(1), None).await?;
        let fired = commands.first().context("a probe did not fire")?;
        delays.push(
            (fired.envelope.timestamp - *due)
                .to_std()
                .unwrap_or_default(),
        );
    }
    drop(firing);
    delays.sort_unstable();
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    Ok(vec![
        Row::checked(
            "W10",
            format!(
                "{label}, fire delay with {PENDING} pending, poll {} ms: p99 (ms)",
                POLL.as_millis()
            ),
            format!("p50 {:.1} ms, p99 {:.1} ms", ms(p50), ms(p99)),
            ms(p99),
            Target::AtMost(ms(POLL + DELAY_BUDGET)),
        ),
        Row::checked(
            "W10",
            format!("{label}, firing a due backlog / {SENDERS} concurrent senders"),
            format!(
                "fired {}, sent {}",
                fmt_rate(fire_rate),
                fmt_rate(plain_rate)
            ),
            fire_rate / plain_rate,
            Target::AtLeast(0.5),
        ),
    ])
}

/// W10 on a SQLite file and, with `SOURCEFLOW_PG_URL`, on Postgres.
///
/// # Errors
/// Store faults, a command that did not fire.
pub async fn w10(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let path = settings.dir.join("w10.db");
    let sqlite = sourceflow_sqlx::SqliteStore::open(&path).await?;
    let mut rows = on(settings, "SQLite", Arc::new(sqlite)).await?;
    let Some(url) = settings.pg_url.clone() else {
        rows.push(Row::not_available(
            "W10",
            "Postgres scheduled commands",
            "SOURCEFLOW_PG_URL is not set",
        ));
        return Ok(rows);
    };
    let schema = format!("sfbench_w10_{}", std::process::id());
    let _registered = crate::cleanup::schemas(&url, [&schema]);
    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(&url, &schema).await?;
    let pool = store.pool().clone();
    let outcome = on(settings, "Postgres", Arc::new(store)).await;
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await;
    pool.close().await;
    rows.extend(outcome?);
    Ok(rows)
}
