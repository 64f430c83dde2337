//! A read-side process: keeps the balance view of a bank file current while other processes
//! write to it, and says what it applied.
//!
//! ```text
//! cargo run -p bank --bin follow -- bank.db &   # the read side
//! cargo run -p bank -- bank.db                  # any number of writers, now or later
//! ```
//!
//! The writers may keep the view themselves too (the bank binary does): each event is applied
//! once however many processes project it. Start this binary twice and one applies the log while
//! the other stands by (it prints nothing); stop the first and the second takes over. Ctrl-C (or, with a second argument, that many
//! seconds) prints the accounts' balances and stops.

use std::time::Duration;

use bank::{AccountBalance, BalanceView};
use sourceflow::prelude::*;
use sourceflow::store::Page;
use sourceflow_sqlx::SqliteStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bank.db".to_owned());
    // Only the view: this process never handles a command.
    let read_side = SourceFlow::builder()
        .store(SqliteStore::open(&path).await?)
        .without_discovery()
        .view(BalanceView)
        .build()
        .await?;
    // A second argument stops after that many seconds instead of at Ctrl-C.
    let limit = std::env::args()
        .nth(2)
        .map(|s| s.parse::<u64>())
        .transpose()?;
    println!(
        "following {path} (Ctrl-C to stop); while another follower applies its log, this one \
         stands by and takes over when that one stops"
    );
    let following = read_side.follow_with(|progress| {
        println!(
            "applied {} events, up to position {}",
            progress.applied, progress.position
        );
    });
    tokio::select! {
        followed = following => followed?,
        () = stop(limit) => {}
    }
    let balances: Vec<(EntityId, AccountBalance)> = read_side.view_models(Page::first(100)).await?;
    for (id, balance) in balances {
        println!(
            "{id}: {} has {} after {} movements",
            balance.owner, balance.balance, balance.movements
        );
    }
    Ok(())
}

/// Ctrl-C, or (for a scripted run) `limit` seconds.
async fn stop(limit: Option<u64>) {
    match limit {
        Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
