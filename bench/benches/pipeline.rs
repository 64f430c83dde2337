//! Criterion micro-benchmarks of the in-memory hot path (`cargo bench -p sourceflow-bench`).
//!
//! Each measurement builds a fresh framework and spreads its commands over enough accounts
//! that no account gets more than 10 commands, as in W1: `cqrs-es` replays an account's
//! whole history on every command, so a long history would measure that instead.

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

fn accounts(iters: u64) -> Vec<String> {
    (0..iters.div_ceil(10).max(1)).map(account_id).collect()
}

fn sourceflow_memory(c: &mut Criterion, name: &str, components: Components) {
    let rt = runtime();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let flow = domain::flow(MemoryStore::new(), components)
                    .await
                    .expect("build");
                let ids = accounts(iters);
                let commands: Vec<Deposit> = (0..iters).map(Deposit::nth).collect();
                let started = Instant::now();
                for (i, command) in commands.into_iter().enumerate() {
                    black_box(
                        flow.send(&*ids[i % ids.len()], command)
                            .await
                            .expect("send"),
                    );
                }
                started.elapsed()
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
                let (framework, _query) = cqrs::memory_framework(cqrs::QuietMemStore::default());
                let ids = accounts(iters);
                let commands: Vec<Deposit> = (0..iters).map(Deposit::nth).collect();
                let started = Instant::now();
                for (i, command) in commands.into_iter().enumerate() {
                    framework
                        .execute(&ids[i % ids.len()], BankCommand::Deposit(command))
                        .await
                        .expect("execute");
                }
                started.elapsed()
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
