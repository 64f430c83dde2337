//! Writes `tests/fixtures/evolution-v1.db`: the log of version 1 of a small domain, which the
//! schema-evolution tests (`tests/tests/evolution.rs`) open with version 2 of the same domain.
//!
//! Run from the repository root: `cargo run -p sourceflow-tests --bin evolution-v1 -- <path>`.
//! The committed file was written by this program; version 1's types live only here.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "ev.OpenAccount")]
struct OpenAccount {
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "ev.Deposit")]
struct Deposit {
    amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ev.Opened")]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ev.Deposited")]
struct Deposited {
    amount: i64,
    balance: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
#[entity(name = "ev.Account")]
struct Account {
    owner: String,
    balance: i64,
}

#[derive(Default)]
struct Accounts;

#[saga(entity = Account)]
impl Accounts {
    #[handles]
    fn open(&self, account: &mut Account, cmd: &OpenAccount, cx: &mut SagaContext) {
        account.owner.clone_from(&cmd.owner);
        cx.publish(Opened {
            owner: cmd.owner.clone(),
        });
    }

    #[handles]
    fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext) {
        account.balance += cmd.amount;
        cx.publish(Deposited {
            amount: cmd.amount,
            balance: account.balance,
        });
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
#[view_model(name = "ev.Balance")]
struct Balance {
    owner: String,
    balance: i64,
}

#[derive(Default)]
struct Balances;

#[view(model = Balance, name = "ev.Balances")]
impl Balances {
    #[projects_on]
    fn opened(&self, balance: &mut Balance, e: &Opened) {
        balance.owner.clone_from(&e.owner);
    }

    #[projects_on]
    fn deposited(&self, balance: &mut Balance, e: &Deposited) {
        balance.balance = e.balance;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/evolution-v1.db".to_owned());
    let _ = std::fs::remove_file(&path);
    let store = sourceflow_sqlx::SqliteStore::open(&path).await?;
    let flow = SourceFlow::builder().store(store).build().await?;
    flow.send(
        "a1",
        OpenAccount {
            owner: "Ada".into(),
        },
    )
    .await?;
    flow.send("a1", Deposit { amount: 100 }).await?;
    flow.send("a1", Deposit { amount: 50 }).await?;
    flow.send(
        "a2",
        OpenAccount {
            owner: "Bob".into(),
        },
    )
    .await?;
    flow.send("a2", Deposit { amount: 7 }).await?;
    drop(flow);
    // One self-contained file: fold the write-ahead log into it.
    use sqlx::Connection as _;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut db)
        .await?;
    sqlx::query("PRAGMA journal_mode=DELETE")
        .execute(&mut db)
        .await?;
    db.close().await?;
    println!("wrote {path}");
    Ok(())
}
