//! Runs a short banking session on an embedded SQLite file and prints what happened.
//!
//! `cargo run -p bank -- [path/to/bank.db]` (default: `bank.db` in the current directory).

use bank::{AccountBalance, Deposit, OpenAccount, Withdraw};
use sourceflow::prelude::*;
use sourceflow_sqlx::SqliteStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bank.db".to_owned());
    // Every Default saga, view and aggregate linked into the binary is discovered.
    let flow = SourceFlow::builder()
        .store(SqliteStore::open(&path).await?)
        .build()
        .await?;

    let id = EntityId::new();
    println!("account {id} in {path}");
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
        "withdrawal committed as command #{} with events: {}",
        receipt.sequence,
        receipt
            .events
            .iter()
            .map(|e| e.envelope.name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Refused commands store nothing and say why.
    match flow.send(&id, Withdraw { amount: 10_000 }).await {
        Err(Error::Rejected(e)) => println!("refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    match flow.send(&id, Deposit { amount: -5 }).await {
        Err(Error::Invalid(v)) => println!("invalid: {v}"),
        other => println!("unexpected: {other:?}"),
    }

    // The view already reflects the overdraft fee charged by OverdraftPolicy's reaction.
    let balance: AccountBalance = flow.view_model(&id).await?.unwrap_or_default();
    println!(
        "{}: balance {} after {} movements, fees {}",
        balance.owner, balance.balance, balance.movements, balance.fees_paid
    );

    // The stored state is a cache of the command log: replay rebuilds it exactly.
    let replayed: bank::Account = flow.replay(&id).await?;
    println!(
        "replayed balance {} (view says {})",
        replayed.balance, balance.balance
    );
    Ok(())
}
