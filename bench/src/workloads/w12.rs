//! W12: personal data. What one `Personal` field costs on W2's shape (a durable command on a
//! SQLite file, the full pipeline) and on W6's (replaying 100,000 commands), each against the
//! same workload without it in the same run; and how long `forget` takes for a subject whose
//! data is spread over 1,000 streams.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use sourceflow::personal::{KeyState, KeyStore, Personal, SealedStore, SubjectKey};
use sourceflow::store::{Store, UnitOfWork};
use sourceflow::{Entity, Envelope, MemoryStore, Message, Sequence, StreamId};
use sourceflow_sqlx::SqliteStore;
use uuid::Uuid;

use super::{fmt_us, progress, Settings};
use crate::domain::{self, account_id, Account, Components, Deposit, PrivateDeposit};
use crate::raw;
use crate::report::{median, Row, Target};

/// The payer whose key seals the memos.
const PAYER: &str = "payer-0001";
/// Streams the forgotten subject's data is spread over.
const FORGET_STREAMS: u64 = 1_000;

/// W12 (see the module docs).
///
/// # Errors
/// A failed workload, or a replay or read that gives wrong values.
pub async fn w12(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = commands(settings, dir).await?;
    rows.extend(replay(settings, dir).await?);
    rows.push(forget(dir).await?);
    Ok(rows)
}

/// W2's shape: the same durable commands with and without a personal field, interleaved.
async fn commands(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let blocks = settings.pick(30, 150);
    const BLOCK: u64 = 10;
    progress(format!(
        "W12: {} durable commands each with and without a personal field",
        blocks * BLOCK
    ));
    let plain = domain::flow(
        SqliteStore::open(dir.join("w12-plain.db")).await?,
        Components::Full,
    )
    .await?;
    let private = domain::flow(
        SqliteStore::open(dir.join("w12-private.db")).await?,
        Components::Full,
    )
    .await?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    for block in 0..=blocks {
        for _ in 0..BLOCK {
            n += 1;
            let id = account_id(n % 100);
            let started = Instant::now();
            plain.send(&*id, Deposit::nth(n)).await?;
            let a = started.elapsed();
            let started = Instant::now();
            private.send(&*id, PrivateDeposit::nth(n, PAYER)).await?;
            let b = started.elapsed();
            if block > 0 {
                without.push(a);
                with.push(b);
            }
        }
    }
    let (without, with) = (median(&mut without), median(&mut with));
    Ok(vec![Row::checked(
        "W12",
        "SQLite durable command with one personal field: time with / without",
        format!("{} vs {} without", fmt_us(with), fmt_us(without)),
        with.as_secs_f64() / without.as_secs_f64(),
        Target::AtMost(1.2),
    )
    .note(
        "W2's pipeline (saga, view, aggregate); the first use of the payer makes its key",
    )])
}

/// W6's shape: replaying 100,000 commands whose memo is sealed against the same commands in
/// plaintext, from one SQLite file.
async fn replay(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let count: u64 = 100_000;
    let runs = settings.pick(3, 7);
    let path = dir.join("w12-replay.db");
    let store = SqliteStore::open(&path).await?;
    progress(format!(
        "W12: seeding two streams of {count} commands, one with a sealed memo"
    ));
    raw::seed_commands(&path, "replay-plain", count).await?;
    let memo = sealed_memo(&store).await?;
    let json = format!(
        "printf('{{\"amount\":%d,\"currency\":\"EUR\",\"reference\":\"INV-%010d\",\
         \"memo\":{}}}', (i) % 100 + 1, i)",
        memo.replace('\'', "''").replace('%', "%%")
    );
    raw::seed_command_rows(&path, "replay-private", count, PrivateDeposit::NAME, &json).await?;
    // The same memo in its personal shape, not sealed: what the shape costs without the cipher.
    let shaped = serde_json::to_value(PrivateDeposit::nth(1, PAYER))?["memo"].to_string();
    let shaped_json = format!(
        "printf('{{\"amount\":%d,\"currency\":\"EUR\",\"reference\":\"INV-%010d\",\
         \"memo\":{}}}', (i) % 100 + 1, i)",
        shaped.replace('\'', "''").replace('%', "%%")
    );
    raw::seed_command_rows(
        &path,
        "replay-shaped",
        count,
        PrivateDeposit::NAME,
        &shaped_json,
    )
    .await?;
    let flow = domain::flow(store, Components::SagaOnly).await?;
    let expected = raw::seeded_balance(count);
    let (mut without, mut with, mut shape) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        progress(format!("W12: replay run {run} of {runs}"));
        let started = Instant::now();
        let account: Account = flow.replay("replay-plain").await?;
        let a = started.elapsed();
        ensure!(
            account.balance == expected,
            "the plain replay gave a wrong balance"
        );
        let started = Instant::now();
        let account: Account = flow.replay("replay-private").await?;
        let b = started.elapsed();
        ensure!(
            account.balance == expected,
            "the sealed replay gave a wrong balance"
        );
        let started = Instant::now();
        let account: Account = flow.replay("replay-shaped").await?;
        let c = started.elapsed();
        ensure!(
            account.balance == expected,
            "the replay of plaintext personal fields gave a wrong balance"
        );
        if run > 0 {
            without.push(a);
            with.push(b);
            shape.push(c);
        }
    }
    let (without, with, shape) = (median(&mut without), median(&mut with), median(&mut shape));
    Ok(vec![
        Row::info(
            "W12",
            "context: the same replay, the memo's personal shape in plaintext",
            format!("{:.0} ms", shape.as_secs_f64() * 1e3),
        )
        .note(format!(
            "ratio {:.2} to the replay without: the shape alone, no cipher",
            shape.as_secs_f64() / without.as_secs_f64()
        )),
        Row::checked(
            "W12",
            "replay 100,000 commands with one sealed field: time with / without",
            format!(
                "{:.0} ms vs {:.0} ms without",
                with.as_secs_f64() * 1e3,
                without.as_secs_f64() * 1e3
            ),
            with.as_secs_f64() / without.as_secs_f64(),
            Target::AtMost(1.2),
        )
        .note("W6's replay; every command's memo is opened with the payer's key"),
    ])
}

/// The memo of [`PrivateDeposit::nth`] as stored in `store`: sealed with a key the payer gets
/// in `store`'s key table (the same ciphertext on every seeded row).
async fn sealed_memo(store: &SqliteStore) -> anyhow::Result<String> {
    let KeyState::Active(_) = store.key_or_insert(PAYER, SubjectKey::generate()).await? else {
        anyhow::bail!("the payer has no key");
    };
    // Seal one command with that key through a store in memory, and take its memo.
    let memory = Arc::new(MemoryStore::new());
    let sealing = SealedStore::configured(
        memory.clone(),
        Some(Arc::new(store.clone())),
        Duration::from_secs(60),
    );
    let stream = StreamId::new(<Account as Entity>::NAME, "seal");
    let payload = serde_json::to_vec(&PrivateDeposit::nth(1, PAYER))?;
    let id = Uuid::now_v7();
    sealing
        .commit(UnitOfWork {
            expected: Sequence::ZERO,
            command: sourceflow::message::StoredCommand {
                envelope: Envelope {
                    message_id: id,
                    name: PrivateDeposit::NAME.into(),
                    version: 1,
                    stream: stream.clone(),
                    correlation_id: id,
                    causation_id: None,
                    timestamp: chrono::Utc::now(),
                },
                sequence: Sequence(1),
                payload,
            },
            entity: None,
            events: Vec::new(),
            outbox: Vec::new(),
            keys: Vec::new(),
        })
        .await?;
    let stored = memory.load_commands(&stream, Sequence(1), None).await?;
    let stored: serde_json::Value = serde_json::from_slice(&stored[0].payload)?;
    let memo = stored["memo"].to_string();
    ensure!(
        memo.contains("\"sealed\""),
        "the memo was not sealed: {memo}"
    );
    Ok(memo)
}

/// `forget` for a subject with data in 1,000 streams, and a read of one of them after it.
async fn forget(dir: &Path) -> anyhow::Result<Row> {
    progress(format!(
        "W12: one subject's commands in {FORGET_STREAMS} streams, then forget"
    ));
    let flow = domain::flow(
        SqliteStore::open(dir.join("w12-forget.db")).await?,
        Components::Full,
    )
    .await?;
    let subject = "payer-forgotten";
    for i in 0..FORGET_STREAMS {
        flow.send(&*account_id(i), PrivateDeposit::nth(i + 1, subject))
            .await?;
    }
    let started = Instant::now();
    flow.forget(subject).await?;
    let took = started.elapsed();
    let stream = StreamId::new(<Account as Entity>::NAME, account_id(7));
    let commands = flow
        .store()
        .load_commands(&stream, Sequence(1), None)
        .await?;
    let command: PrivateDeposit =
        serde_json::from_slice(&commands[0].payload).context("a forgotten command decodes")?;
    ensure!(command.memo.is_redacted(), "the memo is still readable");
    ensure!(
        command.memo == Personal::redacted(subject),
        "the memo reads as another subject's"
    );
    Ok(Row::info(
        "W12",
        "forget a subject with data in 1,000 streams (SQLite)",
        fmt_us(took),
    )
    .note("one key deleted: the time does not grow with the streams; reads are redacted after it"))
}
