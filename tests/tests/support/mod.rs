//! What the data-fidelity tests share: a JSON-like payload type, a small domain that carries it
//! through every path of a flow (a command, the entity state, an event, a view model), and a
//! fresh store of each backend.

#![allow(dead_code)] // Each test file that shares this module uses part of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::store::Store;
use sourceflow::{Envelope, Position, RecordedEvent, StreamId};
use sourceflow_tests::backends::{self, Backend};

/// A JSON-like value whose every leaf keeps its Rust type: each variant is written as a JSON
/// object naming it (`{"Float": -0.0}`), so a value reads back as exactly the variant written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float (finite: JSON has no NaN or infinity).
    Float(f64),
    /// A string: any Unicode scalar values.
    Text(String),
    /// An array.
    List(Vec<Tree>),
    /// An object; keys are any strings too.
    Map(BTreeMap<String, Tree>),
}

/// The JSON text of a value: what the comparisons use, since it tells every float apart by its
/// bits (`-0.0` from `0.0`), where `==` on `f64` does not.
pub fn text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialisable")
}

/// Records a tree in a ledger.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "fidelity.Record")]
pub struct Record {
    /// The value to keep.
    pub tree: Tree,
}

/// A tree was recorded.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "fidelity.Recorded")]
pub struct Recorded {
    /// The value kept.
    pub tree: Tree,
    /// How many the ledger holds now.
    pub count: u64,
}

/// Every tree recorded, in order: the entity state carries them all.
#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
#[entity(name = "fidelity.Ledger")]
pub struct Ledger {
    /// The trees.
    pub trees: Vec<Tree>,
}

/// Owns ledgers.
pub struct LedgerSaga;

#[saga(entity = Ledger)]
impl LedgerSaga {
    #[handles]
    async fn record(&self, ledger: &mut Ledger, cmd: &Record, cx: &mut SagaContext) {
        ledger.trees.push(cmd.tree.clone());
        cx.publish(Recorded {
            tree: cmd.tree.clone(),
            count: ledger.trees.len() as u64,
        });
    }
}

/// A view of a ledger: the trees its events carried.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
#[view_model(name = "fidelity.LedgerModel")]
pub struct LedgerModel {
    /// The trees, from the events.
    pub trees: Vec<Tree>,
}

/// Projects ledgers.
pub struct LedgerView;

#[view(model = LedgerModel)]
impl LedgerView {
    #[projects_on]
    async fn recorded(&self, model: &mut LedgerModel, e: &Recorded) {
        model.trees.push(e.tree.clone());
    }
}

/// A flow over `store` with the ledger saga and view only.
pub async fn flow(store: Arc<dyn Store>) -> SourceFlow {
    SourceFlow::builder()
        .shared_store(store)
        .saga(LedgerSaga)
        .view(LedgerView)
        .without_discovery()
        .build()
        .await
        .expect("a flow")
}

/// The next `n` events of `flow` after `from`, decoded.
pub async fn subscribed(flow: &SourceFlow, from: Position, n: usize) -> Vec<Recorded> {
    let events: Vec<RecordedEvent> = tokio::time::timeout(
        Duration::from_secs(30),
        flow.subscribe(from)
            .take(n)
            .map(|event| event.expect("a subscribed event"))
            .collect(),
    )
    .await
    .expect("the subscription delivers every event");
    events
        .iter()
        .map(|event| event.decode::<Recorded>().expect("a Recorded event"))
        .collect()
}

/// The backends every fidelity test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `MemoryStore`.
    Memory,
    /// `SqliteStore` on a file.
    Sqlite,
    /// `PostgresStore` in a schema of its own, at `SOURCEFLOW_PG_URL`.
    Postgres,
}

/// A fresh store of `kind`.
pub async fn fresh(kind: Kind) -> Backend {
    match kind {
        Kind::Memory => backends::memory().await,
        Kind::Sqlite => backends::sqlite_file().await,
        Kind::Postgres => backends::postgres().await,
    }
}

/// Runs `scenario` on a fresh store of `kind` and releases the store afterwards, also when the
/// scenario fails; returns what the scenario returned.
pub async fn on<T, F, Fut>(kind: Kind, scenario: F) -> T
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let backend = fresh(kind).await;
    let outcome = tokio::spawn(scenario(backend.store.clone())).await;
    backend.finish().await;
    match outcome {
        Ok(value) => value,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    }
}

/// Runs `scenario` on a fresh memory store and a fresh store of `kind`, checks that both
/// answer the same, and returns the answer.
pub async fn same_as_memory<T, F, Fut>(kind: Kind, scenario: F) -> T
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: PartialEq + std::fmt::Debug + Send + 'static,
{
    let memory = on(Kind::Memory, &scenario).await;
    let other = on(kind, &scenario).await;
    assert_eq!(other, memory, "{kind:?} answers as memory does");
    memory
}

/// A module `$name` of two tests that run the scenario `$scenario` on memory and on one more
/// backend and check both answer the same (and, given, that the answer is `$expected`):
/// `sqlite`, and `postgres`, ignored unless `SOURCEFLOW_PG_URL` was set when the tests were
/// built.
#[allow(unused_macros)] // Not every test file that shares this module uses it.
macro_rules! on_every_backend {
    ($(#[$doc:meta])* $name:ident: $scenario:path $(, expecting $expected:expr)?) => {
        $(#[$doc])*
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let _answer =
                    crate::support::same_as_memory(crate::support::Kind::Sqlite, $scenario).await;
                $(assert_eq!(_answer, $expected);)?
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
            async fn postgres() {
                let _answer =
                    crate::support::same_as_memory(crate::support::Kind::Postgres, $scenario).await;
                $(assert_eq!(_answer, $expected);)?
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_backend;

/// The backends a test that needs no server runs on, and Postgres when the tests were built
/// with `SOURCEFLOW_PG_URL`.
pub fn available() -> Vec<Kind> {
    let mut kinds = vec![Kind::Memory, Kind::Sqlite];
    if cfg!(sourceflow_pg) {
        kinds.push(Kind::Postgres);
    }
    kinds
}

/// An envelope for direct store calls at `timestamp`.
pub fn envelope(stream: &StreamId, name: &'static str, timestamp: DateTime<Utc>) -> Envelope {
    Envelope {
        timestamp,
        ..sourceflow_tests::conformance::envelope(stream, name)
    }
}
