//! Upcaster wiring mistakes are reported by `build()` all at once, like the other wiring errors,
//! and nothing is written. (Its own test binary: the registry is global, so every flow here
//! sees these mistakes.)

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::store::Store;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
#[entity(name = "wiring.Ledger")]
struct Ledger {
    total: i64,
}

/// Version 3, with a step from 1 but none from 2: a hole.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "wiring.Post", version = 3)]
struct Post {
    amount: i64,
}

#[upcast(Post, from = 1)]
fn post_v1(_payload: &mut serde_json::Value) {}

/// Two steps read version 1.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "wiring.Posted", version = 2)]
struct Posted {
    amount: i64,
}

#[upcast(Posted, from = 1)]
fn posted_v1(_payload: &mut serde_json::Value) {}

#[upcast(Posted, from = 1)]
fn posted_v1_again(_payload: &mut serde_json::Value) {}

/// An alias that is another type's name.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "wiring.Voided", aliases = ["wiring.Posted"])]
struct Voided;

/// A command with steps that no saga of the flow handles.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "wiring.Orphan", version = 2)]
struct Orphan;

#[upcast(Orphan, from = 1)]
fn orphan_v1(_payload: &mut serde_json::Value) {}

#[derive(Default)]
struct Ledgers;

#[saga(entity = Ledger)]
impl Ledgers {
    #[handles]
    fn post(&self, ledger: &mut Ledger, cmd: &Post, cx: &mut SagaContext) {
        ledger.total += cmd.amount;
        cx.publish(Posted { amount: cmd.amount });
    }
}

#[tokio::test]
async fn every_upcaster_mistake_is_reported_at_build_and_nothing_is_written() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let error = SourceFlow::builder()
        .shared_store(store.clone())
        .build()
        .await
        .expect_err("the wiring is refused");
    let Error::Config(problems) = error else {
        panic!("expected Error::Config, got {error}");
    };
    let expect = |needle: &str| {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle:?}: {problems:#?}"
        );
    };
    expect("wiring.Post is version 3 and its upcasters start at version 1, but none reads version 2: declare `#[upcast(Post, from = 2)]`");
    expect(
        "two upcasters read version 1 of wiring.Posted: posted_v1 and posted_v1_again; keep one",
    );
    expect("wire name \"wiring.Posted\" is an earlier name of");
    expect("upcasters of command wiring.Orphan (orphan_v1) are declared but no saga handles it");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    expect("command wiring.Orphan has no saga handling it");
    assert_eq!(store.head().await.expect("head"), Position::START);
    assert_eq!(
        store.get_position("Ledgers").await.expect("position"),
        Position::START
    );
}
