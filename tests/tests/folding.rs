//! Entities rebuilt from their events (`#[applies]`): replay, `state_at` and cache misses fold
//! the recorded events instead of re-running the commands through today's handlers, so a
//! handler whose rules changed does not rewrite history; `verify` names the first command where
//! re-running the commands and folding the events disagree. On memory, SQLite and Postgres.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::{At, Verification};
use sourceflow_tests::backends::{self, Backend};

/// The fee each backend's accounts are charged now (by the prefix of the account id): the
/// "rules" of the handler, changed half-way through a test.
static FEES: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);

fn fee_for(id: &str) -> i64 {
    let prefix = id.split('-').next().unwrap_or(id);
    FEES.lock()
        .unwrap()
        .as_ref()
        .and_then(|fees| fees.get(prefix).copied())
        .unwrap_or(0)
}

fn set_fee(prefix: &str, fee: i64) {
    FEES.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(prefix.to_owned(), fee);
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "fold.Account")]
struct Account {
    balance: i64,
    deposits: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "fold.Deposit")]
struct Deposit {
    amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "fold.Deposited")]
struct Deposited {
    amount: i64,
    fee: i64,
}

#[derive(Default)]
struct Accounts;

#[saga(entity = Account)]
impl Accounts {
    #[handles]
    fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext) {
        let fee = fee_for(cx.entity_id().as_str());
        account.balance += cmd.amount - fee;
        account.deposits += 1;
        cx.publish(Deposited {
            amount: cmd.amount,
            fee,
        });
    }
}

#[applies]
impl Account {
    fn deposited(&mut self, e: &Deposited) {
        self.balance += e.amount - e.fee;
        self.deposits += 1;
    }
}

/// A counter whose applier disagrees with its handler (the handler counts twice).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "fold.Counter")]
struct Counter {
    count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "fold.Count")]
struct Count;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "fold.Counted")]
struct Counted;

#[derive(Default)]
struct Counters;

#[saga(entity = Counter)]
impl Counters {
    #[handles]
    fn count(&self, counter: &mut Counter, _cmd: &Count, cx: &mut SagaContext) {
        counter.count += if counter.count >= 1 { 2 } else { 1 };
        cx.publish(Counted);
    }
}

#[applies]
impl Counter {
    fn counted(&mut self, _e: &Counted, meta: &EventMeta) {
        assert_eq!(meta.name, "fold.Counted");
        self.count += 1;
    }
}

async fn history_is_folded_from_events(backend: Backend, prefix: &str) {
    let id = format!("{prefix}-a1");
    let flow = SourceFlow::builder()
        .shared_store(backend.store.clone())
        .build()
        .await
        .expect("build");
    set_fee(prefix, 0);
    for _ in 0..3 {
        flow.send(&id, Deposit { amount: 100 })
            .await
            .expect("deposit");
    }
    // The rules change: deposits now cost a fee. History does not.
    set_fee(prefix, 10);
    let folded = flow.replay::<Account>(&id).await.expect("replay");
    assert_eq!(
        folded,
        Account {
            balance: 300,
            deposits: 3
        },
        "re-running the commands would give 270"
    );
    let at_two = flow
        .state_at::<Account>(&id, At::Sequence(Sequence(2)))
        .await
        .expect("state_at");
    assert_eq!(at_two.balance, 200);

    // A cache miss folds too: with no stored state, the next command starts from 300.
    backend
        .store
        .admin()
        .expect("admin calls")
        .delete_entity(&StreamId::of::<Account>(id.as_str()))
        .await
        .expect("drop the stored state");
    let fresh = SourceFlow::builder()
        .shared_store(backend.store.clone())
        .build()
        .await
        .expect("build");
    fresh
        .send(&id, Deposit { amount: 100 })
        .await
        .expect("deposit under the new rules");
    assert_eq!(
        fresh.replay::<Account>(&id).await.expect("replay"),
        Account {
            balance: 390,
            deposits: 4
        }
    );

    // Re-running the old commands under today's rules gives other events: verify names the
    // first command where they disagree.
    match fresh.verify::<Account>(&id).await.expect("verify") {
        Verification::Differs { sequence, detail } => {
            assert_eq!(sequence, Sequence(1));
            assert!(detail.contains("fold.Deposited"), "{detail}");
        }
        other => panic!("expected a difference at sequence 1, got {other:?}"),
    }
    backend.finish().await;
}

async fn verify_names_where_appliers_and_handlers_disagree(backend: Backend) {
    let flow = SourceFlow::builder()
        .shared_store(backend.store.clone())
        .build()
        .await
        .expect("build");
    flow.send("c1", Count).await.expect("count");
    match flow.verify::<Counter>("c1").await.expect("verify") {
        Verification::Consistent { sequence } => assert_eq!(sequence, Sequence(1)),
        other => panic!("one count agrees, got {other:?}"),
    }
    flow.send("c1", Count).await.expect("count");
    match flow.verify::<Counter>("c1").await.expect("verify") {
        Verification::Differs { sequence, detail } => {
            assert_eq!(sequence, Sequence(2));
            assert!(
                detail.contains("folding the recorded events gives {\"count\":2}")
                    && detail.contains("re-running the commands gives {\"count\":3}"),
                "{detail}"
            );
        }
        other => panic!("expected a difference at sequence 2, got {other:?}"),
    }
    backend.finish().await;
}

#[tokio::test]
async fn memory_history_is_folded_from_events() {
    history_is_folded_from_events(backends::memory().await, "mem").await;
}

#[tokio::test]
async fn sqlite_history_is_folded_from_events() {
    history_is_folded_from_events(backends::sqlite_file().await, "lite").await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_history_is_folded_from_events() {
    #[cfg(sourceflow_pg)]
    history_is_folded_from_events(backends::postgres().await, "pg").await;
}

#[tokio::test]
async fn memory_verify_names_where_appliers_and_handlers_disagree() {
    verify_names_where_appliers_and_handlers_disagree(backends::memory().await).await;
}

#[tokio::test]
async fn sqlite_verify_names_where_appliers_and_handlers_disagree() {
    verify_names_where_appliers_and_handlers_disagree(backends::sqlite_file().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_verify_names_where_appliers_and_handlers_disagree() {
    #[cfg(sourceflow_pg)]
    verify_names_where_appliers_and_handlers_disagree(backends::postgres().await).await;
}
