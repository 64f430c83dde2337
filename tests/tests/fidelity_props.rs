//! The data-fidelity property: an arbitrary JSON-like payload (strings of any Unicode scalar
//! values with U+0000 among them, integers at the `i64`/`u64` limits, finite floats of every
//! class, empty and deep structures) sent through a flow reads back identical from the
//! receipt, replay, `state_at`, the view and a subscription, or is refused with
//! `Error::Invalid`, and memory, SQLite and Postgres all answer the same.
//!
//! Checked on SQLite and on Postgres (ignored unless `SOURCEFLOW_PG_URL` is set when the tests
//! are built), each side by side with memory; 64 cases each (`PROPTEST_CASES` overrides it).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sourceflow::prelude::*;
use sourceflow::store::Store;
use sourceflow::Sequence;
use support::{flow, fresh, subscribed, text, Kind, Ledger, LedgerModel, Record, Tree};
use uuid::Uuid;

/// Characters of every kind, U+0000 and the other controls often.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        2 => Just('\u{0}'),
        1 => prop::char::range('\u{1}', '\u{1f}'),
        1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{2028}', '\u{feff}', '\u{ffff}', '\u{10ffff}']),
        6 => any::<char>(),
    ]
}

fn any_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..8).prop_map(String::from_iter)
}

/// Finite floats of every class and sign, and the values that trip up decimal stores.
fn any_float() -> impl Strategy<Value = f64> {
    use prop::num::f64 as class;
    prop_oneof![
        3 => class::POSITIVE | class::NEGATIVE | class::NORMAL | class::SUBNORMAL | class::ZERO,
        1 => prop::sample::select(vec![
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            -0.0,
            123_456_789.123_456_79,
        ]),
    ]
}

fn leaf() -> impl Strategy<Value = Tree> {
    prop_oneof![
        Just(Tree::Null),
        any::<bool>().prop_map(Tree::Bool),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1), any::<i64>()].prop_map(Tree::Int),
        prop_oneof![Just(u64::MAX), Just(0), any::<u64>()].prop_map(Tree::UInt),
        any_float().prop_map(Tree::Float),
        any_string().prop_map(Tree::Text),
    ]
}

/// `levels` lists inside one another around `inner`.
fn nested(levels: usize, inner: Tree) -> Tree {
    (0..levels).fold(inner, |tree, _| Tree::List(vec![tree]))
}

/// Trees of every shape: leaves, empty lists and maps, wide and nested ones, and deep chains
/// (48 levels: well within what serde_json decodes).
fn any_tree() -> impl Strategy<Value = Tree> {
    let shapes = leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            prop::collection::btree_map(any_string(), inner, 0..6).prop_map(Tree::Map),
        ]
    });
    prop_oneof![
        6 => shapes,
        1 => Just(Tree::List(vec![])),
        1 => Just(Tree::Map(BTreeMap::new())),
        1 => (1usize..=48, leaf()).prop_map(|(levels, inner)| nested(levels, inner)),
    ]
}

/// What a backend did with one tree: refused it as invalid, or the JSON text of what each read
/// gave back (receipt, replay, `state_at`, view, subscription).
#[derive(Debug, PartialEq)]
enum Outcome {
    Invalid,
    Back(Vec<String>),
}

/// Names the step that failed.
fn failed(step: &'static str) -> impl Fn(sourceflow::Error) -> String {
    move |e| format!("{step}: {e}")
}

/// Sends `tree` to a new ledger of `flow` and reads it back every way; `Err` names the step
/// that failed.
async fn round_trip(
    flow: &SourceFlow,
    store: &Arc<dyn Store>,
    tree: &Tree,
) -> Result<Outcome, String> {
    let id = EntityId::from(Uuid::now_v7().to_string());
    let head = store.head().await.map_err(|e| format!("head: {e}"))?;
    let sent = flow.send(id.clone(), Record { tree: tree.clone() }).await;
    let receipt = match sent {
        Ok(receipt) => receipt,
        Err(sourceflow::Error::Invalid(_)) => return Ok(Outcome::Invalid),
        Err(e) => return Err(failed("send")(e)),
    };
    let from_receipt = receipt.events[0]
        .decode::<support::Recorded>()
        .map_err(failed("the receipt's event"))?
        .tree;
    let replayed: Ledger = flow.replay(id.clone()).await.map_err(failed("replay"))?;
    let past: Ledger = flow
        .state_at(id.clone(), Sequence(1))
        .await
        .map_err(failed("state_at"))?;
    let model: LedgerModel = flow
        .view_model(id.clone())
        .await
        .map_err(failed("view_model"))?
        .ok_or("no view model")?;
    let seen = subscribed(flow, head, 1).await;
    Ok(Outcome::Back(vec![
        text(&from_receipt),
        text(&replayed.trees),
        text(&past.trees),
        text(&model.trees),
        text(&seen[0].tree),
    ]))
}

/// Checks the property on memory and `kind` side by side: every tree reads back as written
/// from memory, and `kind` answers as memory does.
fn check_against_memory(kind: Kind) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let kinds = [Kind::Memory, kind];
    let backends = kinds.map(|kind| runtime.block_on(fresh(kind)));
    let flows = backends
        .each_ref()
        .map(|backend| runtime.block_on(flow(backend.store.clone())));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&any_tree(), |tree| {
        let mut outcomes = Vec::new();
        for ((flow, backend), kind) in flows.iter().zip(&backends).zip(kinds) {
            let outcome = runtime.block_on(round_trip(flow, &backend.store, &tree));
            outcomes.push(outcome.map_err(|e| TestCaseError::fail(format!("{kind:?}: {e}")))?);
        }
        if let Outcome::Back(texts) = &outcomes[0] {
            let (one, ledger) = (text(&tree), text(&[&tree]));
            let wanted = [&one, &ledger, &ledger, &ledger, &one];
            for (what, (got, want)) in ["receipt", "replay", "state_at", "view", "subscribe"]
                .iter()
                .zip(texts.iter().zip(wanted))
            {
                prop_assert_eq!(got, want, "{} on memory", what);
            }
        }
        if outcomes[1] != outcomes[0] {
            return Err(TestCaseError::fail(format!(
                "{kind:?} answers {:?}, memory {:?}",
                outcomes[1], outcomes[0]
            )));
        }
        Ok(())
    });
    drop(flows);
    for backend in backends {
        runtime.block_on(backend.finish());
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The property on SQLite, and on Postgres (ignored unless `SOURCEFLOW_PG_URL` is set when the
/// tests are built).
mod arbitrary_payloads_read_back_identical_or_are_refused_alike {
    use super::*;

    #[test]
    fn sqlite() {
        check_against_memory(Kind::Sqlite);
    }

    #[test]
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    fn postgres() {
        check_against_memory(Kind::Postgres);
    }
}
