//! `build()` validates the whole routing table and reports every problem at once.
//!
//! This binary deliberately links a command nobody handles and a command two sagas claim, so
//! every flow built here is misconfigured.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.Orphan")]
struct Orphan;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.Contested")]
struct Contested;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Thing;

#[derive(Default)]
struct FirstOwner;

#[saga(entity = Thing)]
impl FirstOwner {
    #[handles]
    async fn contested(&self, _thing: &mut Thing, _cmd: &Contested) {}
}

#[derive(Default)]
struct SecondOwner;

#[saga(entity = Thing)]
impl SecondOwner {
    #[handles]
    async fn contested(&self, _thing: &mut Thing, _cmd: &Contested) {}
}

/// A saga without `Default` must be registered by value.
struct NeedsConfig {
    _limit: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.Configured")]
struct Configured;

#[saga]
impl NeedsConfig {
    #[handles]
    async fn configured(&self, _cmd: &Configured) {}
}

#[tokio::test]
async fn build_lists_every_routing_problem_at_once() {
    let err = SourceFlow::builder()
        .store(MemoryStore::new())
        .build()
        .await
        .expect_err("the routing table is invalid");
    let Error::Config(problems) = &err else {
        panic!("expected Error::Config, got {err:?}");
    };
    let text = problems.join("\n");
    assert!(
        problems
            .iter()
            .any(|p| p == "command test.Orphan has no saga handling it"),
        "{text}"
    );
    assert!(
        problems.iter().any(
            |p| p.starts_with("command test.Contested is handled by two sagas")
                && p.contains("FirstOwner")
                && p.contains("SecondOwner")
        ),
        "{text}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with(
            "command test.Configured is handled by saga NeedsConfig which has no Default impl"
        )),
        "{text}"
    );
    // The Display form lists them all, one per line.
    let shown = err.to_string();
    assert!(
        shown.contains("test.Orphan") && shown.contains("test.Contested"),
        "{shown}"
    );
}

#[tokio::test]
async fn build_without_a_store_says_so() {
    let err = SourceFlow::builder()
        .without_discovery()
        .build()
        .await
        .expect_err("no store");
    assert!(err.to_string().contains("no store"), "{err}");
}

#[tokio::test]
async fn explicit_registration_fixes_what_discovery_cannot() {
    // Only the components named here: no orphan check, no contest.
    let flow = SourceFlow::builder()
        .store(MemoryStore::new())
        .without_discovery()
        .saga(FirstOwner)
        .saga(NeedsConfig { _limit: 3 })
        .build()
        .await
        .expect("a consistent subset");
    let receipt = flow.send("t-1", Contested).await.unwrap();
    assert_eq!(receipt.sequence, Sequence(1));
    assert_eq!(receipt.stream.entity_type, "Thing");
    let receipt = flow.send("p-1", Configured).await.unwrap();
    assert_eq!(
        receipt.stream.entity_type, "NeedsConfig",
        "entity-less sagas own streams by name"
    );
    match flow.send("x", Orphan).await {
        Err(Error::NoHandler { message }) => assert_eq!(message, "test.Orphan"),
        other => panic!("expected NoHandler, got {other:?}"),
    }
}

#[tokio::test]
async fn registering_a_non_component_is_reported() {
    struct NotASaga;
    let err = SourceFlow::builder()
        .store(MemoryStore::new())
        .without_discovery()
        .saga(NotASaga)
        .build()
        .await
        .expect_err("not a saga");
    assert!(err.to_string().contains("is not a #[saga] type"), "{err}");
}
