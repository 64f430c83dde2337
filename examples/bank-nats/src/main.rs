//! The bank example as two processes over NATS JetStream: an API that sends commands and a
//! worker that handles them against Postgres.
//!
//! ```text
//! nats-server -js &
//! export SOURCEFLOW_NATS_URL=nats://127.0.0.1:4222
//! export SOURCEFLOW_PG_URL=postgres://postgres@127.0.0.1:5432/bank
//! cargo run -p bank-nats -- worker &     # as many as you like
//! cargo run -p bank-nats -- api
//! ```

use std::time::Duration;

use bank::{AccountBalance, Deposit, OpenAccount, Withdraw};
use sourceflow::prelude::*;
use sourceflow_nats::{NatsCommandDispatcher, NatsCommandWorker, NatsEventPublisher, Topology};
use sourceflow_sqlx::PostgresStore;

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
    // `SOURCEFLOW_PG_SCHEMA` keeps a deployment (or a test) in a schema of its own.
    Ok(match std::env::var("SOURCEFLOW_PG_SCHEMA") {
        Ok(schema) => PostgresStore::connect_with_schema(&url, &schema).await?,
        Err(_) => PostgresStore::connect(&url).await?,
    })
}

/// Handles bank commands from NATS and publishes the events they record, until Ctrl-C.
async fn worker() -> anyhow::Result<()> {
    // The full local pipeline: saga, balance view, overdraft reaction, over the shared store.
    // No entity cache: any worker may handle any account next, so a cached state would often
    // be stale, and a handler that refuses a command on a stale state is not retried.
    let flow = SourceFlow::builder()
        .store(postgres().await?)
        .entity_cache(0)
        .build()
        .await?;
    // A short ack_wait: a killed worker's unacknowledged command moves on within 5 seconds.
    let worker = NatsCommandWorker::new(nats().await?, flow.clone(), topology())
        .ack_wait(Duration::from_secs(5));
    let publisher = NatsEventPublisher::new(nats().await?, flow.clone(), topology());
    println!("worker: handling bank commands (Ctrl-C to stop)");
    tokio::select! {
        result = worker.run() => result?,
        result = publisher.run() => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    println!(
        "worker: handled {}, failed {}, poison {}, events published {}",
        worker.handled(),
        worker.failed(),
        worker.poisoned(),
        publisher.published()
    );
    Ok(())
}

/// Sends a short session over NATS and prints the worker's answers.
async fn api() -> anyhow::Result<()> {
    let dispatcher = NatsCommandDispatcher::builder(nats().await?, topology())
        .route::<OpenAccount>()
        .route::<Deposit>()
        .route::<Withdraw>()
        .timeout(Duration::from_secs(10))
        .build()
        .await?;
    // The API keeps no state: every bank command it sends runs in a worker.
    let flow = SourceFlow::builder()
        .store(MemoryStore::new())
        .dispatcher(dispatcher)
        .build()
        .await?;

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
    // Reads go to the shared store, where the worker's view keeps the balance.
    let reader = SourceFlow::builder()
        .store(postgres().await?)
        .build()
        .await?;
    let balance: AccountBalance = reader.view_model(&id).await?.unwrap_or_default();
    println!(
        "api: {} has balance {} after {} movements, fees {}",
        balance.owner, balance.balance, balance.movements, balance.fees_paid
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("worker") => worker().await,
        Some("api") => api().await,
        _ => {
            eprintln!("usage: bank-nats worker | bank-nats api");
            std::process::exit(2);
        }
    }
}
