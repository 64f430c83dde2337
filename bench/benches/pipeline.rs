//! Criterion micro-benchmarks of the in-memory hot path (`cargo bench -p sourceflow-bench`).
//!
//! Commands go out in W1's shape: rounds of 10 deposits to each of 1,000 accounts, round-robin,
//! each round on a fresh framework (only the sends are timed). `cqrs-es` replays an account's
//! whole history on every command, so a long history would measure that instead; and a store
//! that grows without bound would measure the kernel handing out fresh memory.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sourceflow::MemoryStore;
use sourceflow_bench::domain::{self, account_id, Components, Deposit};
use sourceflow_bench::peers::cqrs::{self, BankCommand};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// Accounts per round, and commands per round (10 per account).
const ACCOUNTS: u64 = 1_000;
const ROUND: u64 = 10 * ACCOUNTS;

fn accounts() -> Vec<String> {
    (0..ACCOUNTS).map(account_id).collect()
}

/// The commands of a run of `iters` in rounds: (first command number, commands) per round.
fn rounds(iters: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..iters.div_ceil(ROUND)).map(move |r| (r * ROUND, ROUND.min(iters - r * ROUND)))
}

fn sourceflow_memory(c: &mut Criterion, name: &str, components: Components) {
    let rt = runtime();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let ids = accounts();
                let mut total = Duration::ZERO;
                for (first, n) in rounds(iters) {
                    let flow = domain::flow(MemoryStore::new(), components)
                        .await
                        .expect("build");
                    let commands: Vec<Deposit> = (first..first + n).map(Deposit::nth).collect();
                    let started = Instant::now();
                    for (i, command) in commands.into_iter().enumerate() {
                        black_box(
                            flow.send(&*ids[i % ids.len()], command)
                                .await
                                .expect("send"),
                        );
                    }
                    total += started.elapsed();
                }
                total
            })
        })
    });
}

fn pipeline(c: &mut Criterion) {
    sourceflow_memory(
        c,
        "w1/sourceflow_send/saga+view+aggregate",
        Components::Full,
    );
    sourceflow_memory(c, "w1/sourceflow_send/saga_only", Components::SagaOnly);

    let rt = runtime();
    c.bench_function("w1/cqrs_es_execute/quiet_memstore+query", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let ids = accounts();
                let mut total = Duration::ZERO;
                for (first, n) in rounds(iters) {
                    let (framework, _query) =
                        cqrs::memory_framework(cqrs::QuietMemStore::default());
                    let commands: Vec<Deposit> = (first..first + n).map(Deposit::nth).collect();
                    let started = Instant::now();
                    for (i, command) in commands.into_iter().enumerate() {
                        framework
                            .execute(&ids[i % ids.len()], BankCommand::Deposit(command))
                            .await
                            .expect("execute");
                    }
                    total += started.elapsed();
                }
                total
            })
        })
    });

    // The JSON a send pays for at least: the command, once.
    let deposit = Deposit::nth(42);
    let json = serde_json::to_vec(&deposit).expect("encode");
    c.bench_function("json/encode_deposit", |b| {
        b.iter(|| serde_json::to_vec(black_box(&deposit)))
    });
    c.bench_function("json/decode_deposit", |b| {
        b.iter(|| serde_json::from_slice::<Deposit>(black_box(&json)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = pipeline
}
criterion_main!(benches);
