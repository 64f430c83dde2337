//! The bank example as two processes over NATS JetStream: an API that sends commands and a
//! worker that handles them against Postgres.
//!
//! ```text
//! nats-server -js &
//! export SOURCEFLOW_NATS_URL=nats://127.0.0.1:4222
//! export SOURCEFLOW_PG_URL=postgres://postgres@127.0.0.1:5432/bank
//! cargo run -p bank-nats -- worker &     # as many as you like
//! cargo run -p bank-nats -- api
//! cargo run -p bank-nats -- load 20 50    # 20 accounts x 50 deposits, then verified
//! cargo run -p bank-nats -- teardown      # deletes the streams (after stopping the workers)
//! ```
//!
//! Workers share the command partitions out among themselves (each leases a fair share), so
//! adding one adds handlers. They keep only the write side: one batched view feeder for the
//! whole deployment keeps the balance view and the overdraft reaction.
//!
//! `BANK_NATS_TRACE_FILE=<path>` writes every sourceflow span to `<path>` with its W3C trace
//! id: an API session is one trace, through the workers' commits to the views. Every worker process opens its own Postgres pool
//! (`BANK_NATS_PG_CONNECTIONS`, default 10): commits that record events take turns in
//! Postgres, so a deployment keeps the sum of its pools near what the database serves well
//! rather than growing it with every worker.

mod capture;

use std::time::Duration;

use bank::{
    Account, AccountBalance, AccountSaga, BalanceView, ChargeOverdraftFee, Deposit, OpenAccount,
    OverdraftPolicy, Withdraw,
};
use sourceflow::prelude::*;
use sourceflow_nats::{
    Delivery, NatsCommandDispatcher, NatsCommandWorker, NatsEventPublisher, NatsViewFeeder,
    Topology, TraceContext,
};
use sourceflow_sqlx::PostgresStore;
use tracing::Instrument;

/// Every process of the deployment agrees on this (`BANK_NATS_PREFIX` names the streams).
fn topology() -> Topology {
    let prefix = std::env::var("BANK_NATS_PREFIX").unwrap_or_else(|_| "bank".into());
    Topology::new(prefix).partitions(8)
}

async fn nats() -> anyhow::Result<async_nats::Client> {
    let url =
        std::env::var("SOURCEFLOW_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    Ok(async_nats::connect(url).await?)
}

async fn postgres() -> anyhow::Result<PostgresStore> {
    let url = std::env::var("SOURCEFLOW_PG_URL")
        .map_err(|_| anyhow::anyhow!("set SOURCEFLOW_PG_URL to the shared Postgres"))?;
    let mut store = PostgresStore::builder(&url);
    // `SOURCEFLOW_PG_SCHEMA` keeps a deployment (or a test) in a schema of its own.
    if let Ok(schema) = std::env::var("SOURCEFLOW_PG_SCHEMA") {
        store = store.schema(schema);
    }
    // `BANK_NATS_PG_CONNECTIONS`: this process's pool size (default 10).
    if let Ok(connections) = std::env::var("BANK_NATS_PG_CONNECTIONS") {
        store = store.max_connections(connections.parse()?);
    }
    Ok(store.connect().await?)
}

/// Handles bank commands from NATS, publishes the events they record and keeps the views,
/// until Ctrl-C.
///
/// A worker process keeps only the write side: the saga over the shared store, with no view
/// or reaction to run after each command. The read side (the balance view and the overdraft
/// reaction) is fed from the event stream by one [`NatsViewFeeder`] for the whole deployment,
/// in batches: every worker process runs one, and they take turns by lease, so adding workers
/// adds handlers without adding view work. The event publisher is shared out the same way.
async fn worker() -> anyhow::Result<()> {
    // The entity cache stays on: an account's commands go to the worker leasing its partition.
    let write_side = SourceFlow::builder()
        .store(postgres().await?)
        .without_discovery()
        .saga(AccountSaga)
        .build()
        .await?;
    // The views and the reaction; the reaction's follow-up commands go back to the workers.
    let fees = NatsCommandDispatcher::builder(nats().await?, topology())
        .route_with::<ChargeOverdraftFee>(Delivery::Enqueue)
        .build()
        .await?;
    let read_side = SourceFlow::builder()
        .store(postgres().await?)
        .without_discovery()
        .view(BalanceView)
        .aggregate(OverdraftPolicy)
        .dispatcher(fees)
        .build()
        .await?;
    // A short ack_wait: a killed worker's partitions (and a killed feeder's batch) move on
    // within the lease TTL (6 s), plus 5 seconds if it held commands.
    let worker = NatsCommandWorker::new(nats().await?, write_side.clone(), topology())
        .ack_wait(Duration::from_secs(5));
    let publisher = NatsEventPublisher::new(nats().await?, write_side.clone(), topology());
    let feeder = NatsViewFeeder::new(nats().await?, read_side, topology(), "bank_views")
        .ack_wait(Duration::from_secs(5));
    println!("worker: handling bank commands (Ctrl-C to stop)");
    tokio::select! {
        result = worker.run() => result?,
        result = publisher.run() => result?,
        result = feeder.run() => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    println!(
        "worker: handled {}, failed {}, poison {}, events published {}, events applied to views {}",
        worker.handled(),
        worker.failed(),
        worker.poisoned(),
        publisher.published(),
        feeder.delivered()
    );
    Ok(())
}

/// A flow that only reads the shared store: no view catches up when it is built, so what it
/// reads is what the workers' feeder wrote.
async fn reader() -> anyhow::Result<SourceFlow> {
    Ok(SourceFlow::builder()
        .store(postgres().await?)
        .without_discovery()
        .saga(AccountSaga)
        .build()
        .await?)
}

/// Reads an account's balance model until `done` holds for it (the feeder applies events
/// shortly after their commands are answered), for at most 30 seconds.
async fn settled_balance(
    reader: &SourceFlow,
    id: &EntityId,
    done: impl Fn(&AccountBalance) -> bool,
) -> anyhow::Result<AccountBalance> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let balance: AccountBalance = reader.view_model(id).await?.unwrap_or_default();
        if done(&balance) || tokio::time::Instant::now() >= deadline {
            return Ok(balance);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API side: keeps no state, every bank command it sends runs in a worker, and `send`
/// waits up to `timeout` for the worker's answer.
async fn api_flow(timeout: Duration) -> anyhow::Result<SourceFlow> {
    let dispatcher = NatsCommandDispatcher::builder(nats().await?, topology())
        .route::<OpenAccount>()
        .route::<Deposit>()
        .route::<Withdraw>()
        .timeout(timeout)
        .build()
        .await?;
    Ok(SourceFlow::builder()
        .store(MemoryStore::new())
        .dispatcher(dispatcher)
        .build()
        .await?)
}

/// Sends a short session over NATS and prints the worker's answers. The session is one trace:
/// its commands, their handling in the workers and the views they update.
async fn api() -> anyhow::Result<()> {
    let session = TraceContext::new_root();
    let span = tracing::info_span!(
        "bank.api.session",
        trace_id = %session.trace_id_hex(),
        span_id = %session.span_id_hex(),
    );
    session.scope(api_session()).instrument(span).await
}

async fn api_session() -> anyhow::Result<()> {
    let flow = api_flow(Duration::from_secs(10)).await?;

    let id = EntityId::new();
    println!("api: account {id}");
    flow.send(
        &id,
        OpenAccount {
            owner: "Ada".into(),
            overdraft_limit: 500,
        },
    )
    .await?;
    flow.send(&id, Deposit { amount: 1_000 }).await?;
    let receipt = flow.send(&id, Withdraw { amount: 1_200 }).await?;
    println!(
        "api: withdrawal committed remotely as command #{} with events: {}",
        receipt.sequence,
        receipt
            .events
            .iter()
            .map(|e| e.envelope.name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Refusals and validation errors travel back as the same error variants.
    match flow.send(&id, Withdraw { amount: 10_000 }).await {
        Err(Error::Rejected(e)) => println!("api: refused: {e}"),
        other => println!("api: unexpected: {other:?}"),
    }
    match flow.send(&id, Deposit { amount: -5 }).await {
        Err(Error::Invalid(v)) => println!("api: invalid: {v}"),
        other => println!("api: unexpected: {other:?}"),
    }
    // Reads go to the shared store, where the workers' feeder keeps the balance (the
    // withdrawal's overdraft fee is charged by the reaction, after the view saw it).
    let reader = reader().await?;
    let balance = settled_balance(&reader, &id, |b| b.movements >= 3).await?;
    println!(
        "api: {} has balance {} after {} movements, fees {}",
        balance.owner, balance.balance, balance.movements, balance.fees_paid
    );
    Ok(())
}

/// Sends `deposits` deposits of 1 to each of `accounts` new accounts, one task per account,
/// then checks the shared store: every deposit applied exactly once, in every account, in the
/// entity and in the view. A command whose reply does not come (its worker died) is resent
/// with the same message id until it is answered, from the store if it had committed.
async fn load(accounts: usize, deposits: usize) -> anyhow::Result<()> {
    let flow = api_flow(Duration::from_secs(3)).await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let ids: Vec<EntityId> = (0..accounts)
        .map(|i| EntityId::from(format!("load-{run}-{i}")))
        .collect();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let (flow, sent) = (flow.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let open = OpenAccount {
                owner: "Load".into(),
                overdraft_limit: 0,
            };
            send_until_answered(&flow, &id, open).await?;
            for _ in 0..deposits {
                send_until_answered(&flow, &id, Deposit { amount: 1 }).await?;
                let done = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if done % 100 == 0 {
                    println!("api: load progress {done}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "api: load sent {} deposits in {elapsed:.2} s ({:.0} cmd/s, accounts opened included)",
        accounts * deposits,
        (accounts * (deposits + 1)) as f64 / elapsed
    );

    // Verify against the shared store, once the feeder has caught up.
    let reader = reader().await?;
    for id in &ids {
        let account: Account = reader.replay(id).await?;
        let expected = i64::try_from(deposits)?;
        let view = settled_balance(&reader, id, |b| b.balance >= expected).await?;
        anyhow::ensure!(
            account.balance == expected && view.balance == expected,
            "{id}: balance {} (view {}), expected {expected}",
            account.balance,
            view.balance
        );
        anyhow::ensure!(
            usize::try_from(view.movements)? == deposits,
            "{id}: {} movements in the view, expected {deposits}",
            view.movements
        );
    }
    println!("api: load verified: {accounts} accounts x {deposits} deposits, each applied once");
    Ok(())
}

/// Sends `command`, resending it with the same message id after a transport fault (a timeout
/// when the worker handling it died) until a worker answers.
async fn send_until_answered<C: Command + Clone>(
    flow: &SourceFlow,
    id: &EntityId,
    command: C,
) -> anyhow::Result<sourceflow::CommandReceipt> {
    let message_id = uuid::Uuid::now_v7();
    for _ in 0..20 {
        let options = SendOptions::new().message_id(message_id);
        match flow.send_with(id, command.clone(), options).await {
            Err(Error::Store(e)) if e.is_transient() => {
                eprintln!("api: {id}: {e}; resending");
            }
            other => return Ok(other?),
        }
    }
    anyhow::bail!("{id}: no worker answered after 20 attempts")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    capture::install()?;
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => worker().await,
        Some("api") => api().await,
        Some("load") => {
            let number = |i: usize, default: usize| -> anyhow::Result<usize> {
                args.get(i).map_or(Ok(default), |a| {
                    a.parse()
                        .map_err(|_| anyhow::anyhow!("not a number: {a:?}"))
                })
            };
            load(number(2, 20)?, number(3, 50)?).await
        }
        Some("teardown") => {
            // Deletes the deployment's streams (stop its processes first).
            let jetstream = async_nats::jetstream::new(nats().await?);
            topology().delete_streams(&jetstream).await?;
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: bank-nats worker | bank-nats api | bank-nats load [accounts] [deposits] | bank-nats teardown"
            );
            std::process::exit(2);
        }
    }
}
