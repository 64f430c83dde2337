//! Schema evolution: a log written by version 1 of a domain (`tests/fixtures/evolution-v1.db`,
//! written by `src/bin/evolution-v1.rs`) opened by version 2, in which
//! - the command `ev.OpenAccount` is renamed `ev.Open` (an alias keeps the old name readable),
//! - the command `ev.Deposit` renames its field `amount` to `cents` (version 2, a JSON step),
//! - the event `ev.Deposited` is renamed `ev.FundsDeposited`, renames `amount` to `cents` and
//!   gains `currency` (version 2, a typed step from the old Rust type),
//! - the entity gains a field (`#[entity(version = 2)]`: stored states are cache misses),
//! - the view's model gains fields (`#[view(version = 2)]`: its stored models are stale).
//!
//! Every read path gives version 2's values on memory, on the SQLite file itself and on
//! Postgres (the same rows copied in): `send`, `replay`, `state_at`, `verify`, `rebuild`,
//! `subscribe`, view reads. A row of a version newer than the code is a typed error.

use std::path::Path;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::store::{Page, Store, UnitOfWork};
use sourceflow::{At, Envelope, Location, Message, RecordedEvent, Verification};
use sourceflow_tests::backends::{self, Backend};

// ---- version 2 of the domain ---------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "ev.Open", aliases = ["ev.OpenAccount"])]
struct Open {
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "ev.Deposit", version = 2)]
struct Deposit {
    cents: i64,
}

/// Version 1 called the amount `amount`.
#[upcast(Deposit, from = 1)]
fn deposit_amount_is_cents(payload: &mut serde_json::Value) -> Result<(), String> {
    let object = payload.as_object_mut().ok_or("a deposit is an object")?;
    let amount = object.remove("amount").ok_or("version 1 has `amount`")?;
    object.insert("cents".into(), amount);
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ev.Opened")]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "ev.FundsDeposited", version = 2, aliases = ["ev.Deposited"])]
struct FundsDeposited {
    cents: i64,
    balance: i64,
    currency: String,
}

/// The event as version 1 wrote it, kept as a plain type for its upcaster.
#[derive(Deserialize)]
struct DepositedV1 {
    amount: i64,
    balance: i64,
}

#[upcast(FundsDeposited, from = 1)]
fn deposited_v1(old: DepositedV1) -> FundsDeposited {
    FundsDeposited {
        cents: old.amount,
        balance: old.balance,
        currency: "EUR".into(),
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "ev.Account", version = 2)]
struct Account {
    owner: String,
    balance: i64,
    #[serde(default)]
    deposits: u32,
}

#[derive(Default)]
struct Accounts;

#[saga(entity = Account)]
impl Accounts {
    #[handles]
    fn open(&self, account: &mut Account, cmd: &Open, cx: &mut SagaContext) {
        account.owner.clone_from(&cmd.owner);
        cx.publish(Opened {
            owner: cmd.owner.clone(),
        });
    }

    #[handles]
    fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext) {
        account.balance += cmd.cents;
        account.deposits += 1;
        cx.publish(FundsDeposited {
            cents: cmd.cents,
            balance: account.balance,
            currency: "EUR".into(),
        });
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "ev.Balance")]
struct Balance {
    owner: String,
    balance: i64,
    #[serde(default)]
    deposits: u32,
    #[serde(default)]
    currency: String,
}

#[derive(Default)]
struct Balances;

#[view(model = Balance, name = "ev.Balances", version = 2)]
impl Balances {
    #[projects_on]
    fn opened(&self, balance: &mut Balance, e: &Opened) {
        balance.owner.clone_from(&e.owner);
    }

    #[projects_on]
    fn deposited(&self, balance: &mut Balance, e: &FundsDeposited) {
        balance.balance = e.balance;
        balance.deposits += 1;
        balance.currency.clone_from(&e.currency);
    }
}

// ---- the fixture ---------------------------------------------------------------------------

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/evolution-v1.db"
    ))
}

/// A copy of the version 1 SQLite file, opened as a store.
async fn fixture_store(dir: &Path) -> sourceflow_sqlx::SqliteStore {
    let path = dir.join("v1.db");
    std::fs::copy(fixture(), &path).expect("copy the fixture");
    sourceflow_sqlx::SqliteStore::open(&path)
        .await
        .expect("open the fixture")
}

/// Copies every row of the version 1 file into `target`, byte for byte: commands with the
/// events recorded under them, entity states, view models and positions.
async fn load_fixture(target: &dyn Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = fixture_store(dir.path()).await;
    let admin = source.admin().expect("the SQLite store has admin calls");
    for entity_type in admin.entity_types().await.expect("entity types") {
        for id in admin
            .stream_ids(&entity_type, Page::first(1_000))
            .await
            .expect("stream ids")
        {
            let stream = StreamId::new(entity_type.clone(), id);
            let commands = source
                .load_commands(&stream, Sequence(1), None)
                .await
                .expect("commands");
            let last = commands.last().map_or(Sequence::ZERO, |c| c.sequence);
            let events = source
                .read_stream_range(&stream, Sequence(1), Sequence(u64::MAX))
                .await
                .expect("events");
            for command in commands {
                let sequence = command.sequence;
                let unit = UnitOfWork {
                    expected: Sequence(sequence.0 - 1),
                    command,
                    entity: None,
                    events: events
                        .iter()
                        .filter(|e| e.command_sequence == sequence)
                        .map(|e| sourceflow::message::NewEvent {
                            envelope: e.envelope.clone(),
                            payload: e.payload.clone(),
                        })
                        .collect(),
                    outbox: Vec::new(),
                    keys: Vec::new(),
                };
                target.commit(unit).await.expect("copy a unit of work");
            }
            if let Some((version, state)) = source.get_entity(&stream).await.expect("state") {
                assert_eq!(version, last);
                target
                    .put_entity(&stream, Sequence::ZERO, version, state)
                    .await
                    .expect("copy the state");
            }
        }
    }
    let target_admin = target.admin().expect("admin calls");
    for (id, bytes) in source
        .list_models("ev.Balance", Page::first(1_000))
        .await
        .expect("models")
    {
        target_admin
            .put_model("ev.Balance", &id, bytes)
            .await
            .expect("copy a model");
    }
    let head = target.head().await.expect("head");
    assert!(source.get_position("ev.Balances").await.expect("position") > Position::START);
    target
        .set_position("ev.Balances", head)
        .await
        .expect("copy the view's position");
}

// ---- the scenarios -------------------------------------------------------------------------

async fn open_v2(store: std::sync::Arc<dyn Store>) -> SourceFlow {
    // Without opting in, the stale view is named with the fix, and nothing is built.
    let refused = SourceFlow::builder()
        .shared_store(store.clone())
        .build()
        .await
        .expect_err("a stale view is refused");
    let Error::Config(problems) = &refused else {
        panic!("expected a configuration error, got {refused}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("ev.Balances")
            && problems[0].contains("version 2")
            && problems[0].contains("rebuild_stale_views"),
        "{}",
        problems[0]
    );
    SourceFlow::builder()
        .shared_store(store)
        .rebuild_stale_views()
        .build()
        .await
        .expect("version 2 opens version 1's log")
}

fn ada() -> Account {
    Account {
        owner: "Ada".into(),
        balance: 150,
        deposits: 2,
    }
}

async fn version_2_reads_version_1(backend: Backend) {
    let flow = open_v2(backend.store.clone()).await;

    // The view was rebuilt from the upcast events, and the new version recorded: a second
    // start finds nothing stale.
    let balance: Balance = flow.view_model("a1").await.expect("read").expect("a1");
    assert_eq!(
        balance,
        Balance {
            owner: "Ada".into(),
            balance: 150,
            deposits: 2,
            currency: "EUR".into(),
        }
    );
    SourceFlow::builder()
        .shared_store(backend.store.clone())
        .build()
        .await
        .expect("the rebuilt view is current");

    // Replay, state at a sequence: the old commands decode through their alias and step.
    assert_eq!(flow.replay::<Account>("a1").await.expect("replay"), ada());
    let after_first_deposit = flow
        .state_at::<Account>("a1", At::Sequence(Sequence(2)))
        .await
        .expect("state_at");
    assert_eq!(after_first_deposit.balance, 100);
    assert_eq!(after_first_deposit.deposits, 1);

    // Verify compares the recorded version 1 events as version 2 reads them.
    match flow.verify::<Account>("a1").await.expect("verify") {
        Verification::Consistent { sequence } => assert_eq!(sequence, Sequence(3)),
        other => panic!("a1 is consistent, got {other:?}"),
    }

    // a2's stored state was written by entity version 1: a cache miss, replayed, never an
    // error; the next command commits after the old ones.
    let misses = flow.stats().state_misses;
    let receipt = flow.send("a2", Deposit { cents: 3 }).await.expect("send");
    assert_eq!(receipt.sequence, Sequence(3));
    assert_eq!(flow.stats().state_misses, misses + 1);
    assert_eq!(
        flow.replay::<Account>("a2").await.expect("replay a2"),
        Account {
            owner: "Bob".into(),
            balance: 10,
            deposits: 2,
        }
    );
    match flow.verify::<Account>("a2").await.expect("verify a2") {
        Verification::Consistent { sequence } => assert_eq!(sequence, Sequence(3)),
        other => panic!("a2 is consistent, got {other:?}"),
    }
    // The renamed command, sent under its new name, lands in the same stream type.
    flow.send("a3", Open { owner: "Cy".into() })
        .await
        .expect("send the renamed command");

    // Subscribe: old rows come under their old names and versions, and decode as version 2.
    let events: Vec<RecordedEvent> = flow
        .subscribe(Position::START)
        .take(7)
        .map(|e| e.expect("event"))
        .collect()
        .await;
    let deposited: Vec<FundsDeposited> = events
        .iter()
        .filter(|e| e.envelope.name.contains("Deposited"))
        .map(|e| e.decode::<FundsDeposited>().expect("decode as version 2"))
        .collect();
    assert_eq!(
        deposited.iter().map(|e| e.cents).collect::<Vec<_>>(),
        [100, 50, 7, 3]
    );
    assert!(deposited.iter().all(|e| e.currency == "EUR"));
    assert_eq!(events[1].envelope.name, "ev.Deposited", "stored as written");
    assert_eq!(events[1].envelope.version, 1);
    assert_eq!(events[5].envelope.name, "ev.FundsDeposited");
    assert_eq!(events[5].envelope.version, 2);

    // A rebuild gives the same models, and they include what version 2 sent.
    flow.rebuild::<Balances>().await.expect("rebuild");
    let bob: Balance = flow.view_model("a2").await.expect("read").expect("a2");
    assert_eq!(
        (bob.balance, bob.deposits, bob.currency.as_str()),
        (10, 2, "EUR")
    );
    backend.finish().await;
}

/// A row written by a newer version of a type than this build knows fails loudly, naming
/// the type, both versions, the stream and the sequence; the command that would have followed
/// it is not stored.
async fn a_newer_version_is_a_typed_error(backend: Backend) {
    let flow = SourceFlow::builder()
        .shared_store(backend.store.clone())
        .build()
        .await
        .expect("build");
    flow.send("n1", Open { owner: "Nu".into() })
        .await
        .expect("open");
    let admin = backend.store.admin().expect("admin calls");
    let stream = StreamId::new("ev.Account", "n1");
    let (message_id, timestamp) = (uuid::Uuid::now_v7(), chrono::Utc::now());
    admin
        .append_command(
            Sequence(1),
            sourceflow::message::StoredCommand {
                envelope: Envelope {
                    message_id,
                    name: "ev.Deposit".into(),
                    version: 3,
                    stream: stream.clone(),
                    correlation_id: message_id,
                    causation_id: None,
                    timestamp,
                },
                sequence: Sequence(2),
                payload: br#"{"cents":5,"memo":"from the future"}"#.to_vec(),
            },
        )
        .await
        .expect("append a version 3 command");
    let expect_newer = |e: Error| match e {
        Error::NewerVersion {
            name,
            stored,
            known,
            at,
        } => {
            assert_eq!((name.as_str(), stored, known), ("ev.Deposit", 3, 2));
            assert_eq!(
                at,
                Location::Stored {
                    stream: stream.clone(),
                    sequence: Sequence(2),
                }
            );
        }
        other => panic!("expected NewerVersion, got {other}"),
    };
    expect_newer(flow.replay::<Account>("n1").await.unwrap_err());
    expect_newer(
        flow.state_at::<Account>("n1", At::Sequence(Sequence(2)))
            .await
            .unwrap_err(),
    );
    // A fresh handle has no cached state: the send replays, meets the row and stores nothing.
    let fresh = SourceFlow::builder()
        .shared_store(backend.store.clone())
        .build()
        .await
        .expect("build");
    let refused = fresh.send("n1", Deposit { cents: 1 }).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::NewerVersion {
                stored: 3,
                known: 2,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(
        backend.store.last_sequence(&stream).await.expect("last"),
        Sequence(2)
    );
    backend.finish().await;
}

// ---- the backends --------------------------------------------------------------------------

async fn memory_with_fixture() -> Backend {
    let backend = backends::memory().await;
    load_fixture(&*backend.store).await;
    backend
}

#[cfg(sourceflow_pg)]
async fn postgres_with_fixture() -> Backend {
    let backend = backends::postgres().await;
    load_fixture(&*backend.store).await;
    backend
}

#[tokio::test]
async fn memory_version_2_reads_version_1() {
    version_2_reads_version_1(memory_with_fixture().await).await;
}

#[tokio::test]
async fn sqlite_file_written_by_version_1_opens_with_version_2() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = fixture_store(dir.path()).await;
    let backend = Backend::new(std::sync::Arc::new(store));
    version_2_reads_version_1(backend).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_version_2_reads_version_1() {
    #[cfg(sourceflow_pg)]
    version_2_reads_version_1(postgres_with_fixture().await).await;
}

#[tokio::test]
async fn memory_newer_version_is_a_typed_error() {
    a_newer_version_is_a_typed_error(backends::memory().await).await;
}

#[tokio::test]
async fn sqlite_newer_version_is_a_typed_error() {
    a_newer_version_is_a_typed_error(backends::sqlite_file().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_newer_version_is_a_typed_error() {
    #[cfg(sourceflow_pg)]
    a_newer_version_is_a_typed_error(backends::postgres().await).await;
}

/// The declared versions and names are what the rows carry.
#[test]
fn versions_and_aliases_are_declared_on_the_types() {
    assert_eq!(<Deposit as Message>::VERSION, 2);
    assert_eq!(<Open as Message>::ALIASES, ["ev.OpenAccount"]);
    assert_eq!(<FundsDeposited as Message>::VERSION, 2);
    assert_eq!(<Account as Entity>::VERSION, 2);
    let found = sourceflow::registry::find(sourceflow::registry::TypeKind::Event, "ev.Deposited")
        .expect("an alias resolves");
    assert_eq!(found.name, "ev.FundsDeposited");
    // Stores borrow every registered wire name, old ones included, instead of copying it.
    for name in [
        "ev.Open",
        "ev.OpenAccount",
        "ev.Deposited",
        "ev.FundsDeposited",
    ] {
        assert_eq!(sourceflow::registry::static_name(name), Some(name));
    }
    assert_eq!(
        sourceflow::registry::static_name("ev.NeverRegistered"),
        None
    );
}

/// A command scheduled by version 1 (still pending when version 2 starts) fires through the
/// command's upcaster.
async fn a_schedule_made_by_version_1_fires_as_version_2(backend: Backend) {
    use sourceflow::schedule::{NewSchedule, ScheduleId};
    use sourceflow::store::OutboxMessage;
    let flow = SourceFlow::builder()
        .shared_store(backend.store.clone())
        .without_scheduler()
        .build()
        .await
        .expect("build");
    flow.send(
        "s1",
        Open {
            owner: "Sam".into(),
        },
    )
    .await
    .expect("open");
    let id = ScheduleId(uuid::Uuid::now_v7());
    let message_id = id.message_id();
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    backend
        .store
        .schedules()
        .expect("the store keeps schedules")
        .add_schedules(vec![NewSchedule {
            id,
            due,
            command: OutboxMessage {
                envelope: Envelope {
                    message_id,
                    name: "ev.Deposit".into(),
                    version: 1,
                    stream: StreamId::new("ev.Account", "s1"),
                    correlation_id: message_id,
                    causation_id: None,
                    timestamp: due,
                },
                payload: br#"{"amount":12}"#.to_vec(),
            },
        }])
        .await
        .expect("a version 1 schedule");
    assert_eq!(flow.fire_due().await.expect("fire"), 1);
    let account = flow.replay::<Account>("s1").await.expect("replay");
    assert_eq!((account.balance, account.deposits), (12, 1));
    backend.finish().await;
}

#[tokio::test]
async fn memory_schedule_made_by_version_1_fires_as_version_2() {
    a_schedule_made_by_version_1_fires_as_version_2(backends::memory().await).await;
}

#[tokio::test]
async fn sqlite_schedule_made_by_version_1_fires_as_version_2() {
    a_schedule_made_by_version_1_fires_as_version_2(backends::sqlite_file().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_schedule_made_by_version_1_fires_as_version_2() {
    #[cfg(sourceflow_pg)]
    a_schedule_made_by_version_1_fires_as_version_2(backends::postgres().await).await;
}
