//! Runtime scenarios, written once and run against every backend with [`runtime_suite!`](crate::runtime_suite).
//!
//! Each takes a fresh, empty store. They use the bank example's domain (so the template users
//! copy is what the tests prove) plus a tally saga for the contention test.

use std::sync::Arc;

use bank::{Account, AccountBalance, Deposit, FeeCharged, OpenAccount, Withdraw, OVERDRAFT_FEE};
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::store::{Store, StoreAdmin};
use sourceflow::{Envelope, Location, Stats};
use uuid::Uuid;

/// A counter with no business rules: every `Add` conflicts with every concurrent `Add`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "test.Tally")]
pub struct Tally {
    /// Sum of everything added.
    pub total: i64,
    /// Number of additions.
    pub count: u64,
}

/// Adds to a tally.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.Add")]
pub struct Add {
    /// Amount to add.
    pub n: i64,
}

/// Something was added. Adding nothing is not a fact worth recording: validated before commit.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "test.Added", validate = check_added)]
pub struct Added {
    /// Amount added.
    pub n: i64,
    /// Total afterwards.
    pub total: i64,
}

fn check_added(e: &Added, v: &mut Violations) {
    v.check(e.n == 0, "n", "an addition of zero is not an event");
}

/// Owns tallies.
#[derive(Default)]
pub struct TallySaga;

#[saga(entity = Tally)]
impl TallySaga {
    #[handles]
    async fn add(&self, tally: &mut Tally, cmd: &Add, cx: &mut SagaContext) {
        tally.total += cmd.n;
        tally.count += 1;
        cx.publish(Added {
            n: cmd.n,
            total: tally.total,
        });
    }
}

/// The read model of a tally, to check views under contention.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "test.TallyView")]
pub struct TallyModel {
    /// Events applied.
    pub applied: u64,
    /// Last total seen.
    pub total: i64,
}

/// Projects tallies.
#[derive(Default)]
pub struct TallyView;

#[view(model = TallyModel)]
impl TallyView {
    #[projects_on]
    async fn added(&self, model: &mut TallyModel, e: &Added) {
        model.applied += 1;
        model.total = e.total;
    }
}

/// Totals over every tally: one model that the events of every stream update.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "test.TallyTotals")]
pub struct TallyTotals {
    /// Events applied.
    pub applied: u64,
    /// Sum of every addition.
    pub sum: i64,
}

/// Projects [`TallyTotals`] under the id `all` through `&mut ViewContext`. Not `Default`, so
/// not discovered: only the flows that register it have it.
pub struct TallyTotalsView {
    _registered_by_value: (),
}

impl TallyTotalsView {
    /// The id of the only model.
    pub fn id() -> EntityId {
        EntityId::from("all")
    }
}

#[view(model = TallyTotals)]
impl TallyTotalsView {
    #[projects_on]
    async fn added(&self, e: &Added, cx: &mut ViewContext) -> Result<(), DomainError> {
        let mut totals: TallyTotals = cx
            .load_or_default(&Self::id())
            .await
            .map_err(|e| DomainError::with_code("view_store", e.to_string()))?;
        totals.applied += 1;
        totals.sum += e.n;
        cx.save(&Self::id(), totals);
        Ok(())
    }
}

/// A flow over `store` with every discovered component.
pub async fn flow(store: Arc<dyn Store>) -> SourceFlow {
    SourceFlow::builder()
        .shared_store(store)
        .build()
        .await
        .expect("the test domain is wired correctly")
}

async fn open(flow: &SourceFlow, id: &EntityId, limit: i64) {
    flow.send(
        id,
        OpenAccount {
            owner: "Ada".into(),
            overdraft_limit: limit,
        },
    )
    .await
    .expect("open");
}

/// send -> saga -> events -> aggregate reaction -> follow-up command -> view, with one
/// correlation id across the chain and causation ids linking each step.
pub async fn end_to_end_chain(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 500).await;
    flow.send(&id, Deposit { amount: 100 }).await.unwrap();
    let receipt = flow.send(&id, Withdraw { amount: 150 }).await.unwrap();

    // The withdrawal recorded two events; the reaction's fee is already applied everywhere.
    let names: Vec<&str> = receipt
        .events
        .iter()
        .map(|e| e.envelope.name.as_ref())
        .collect();
    assert_eq!(names, ["bank.Withdrawn", "bank.Overdrawn"]);
    let view: AccountBalance = flow.view_model(&id).await.unwrap().unwrap();
    assert_eq!(
        view,
        AccountBalance {
            owner: "Ada".into(),
            balance: -50 - OVERDRAFT_FEE,
            movements: 3,
            fees_paid: OVERDRAFT_FEE,
            closed: false,
        }
    );

    let stream = StreamId::of::<Account>(&id);
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(commands.len(), 4, "open, deposit, withdraw, fee");
    let withdraw = &commands[2].envelope;
    let fee = &commands[3].envelope;
    assert_eq!(fee.name, "bank.ChargeOverdraftFee");
    let events = store.read_stream(&stream, Sequence(1)).await.unwrap();
    let overdrawn = events
        .iter()
        .find(|e| e.envelope.name == "bank.Overdrawn")
        .unwrap();
    let charged = events.last().unwrap();
    assert_eq!(charged.decode::<FeeCharged>().unwrap().balance, -75);

    // Correlation: the withdrawal started the chain, every later message carries its id.
    for envelope in [
        &overdrawn.envelope,
        fee,
        &charged.envelope,
        &receipt.events[0].envelope,
    ] {
        assert_eq!(envelope.correlation_id, withdraw.correlation_id);
    }
    // Causation: withdraw -> Overdrawn -> ChargeOverdraftFee -> FeeCharged.
    assert_eq!(overdrawn.envelope.causation_id, Some(withdraw.message_id));
    assert_eq!(fee.causation_id, Some(overdrawn.envelope.message_id));
    assert_eq!(charged.envelope.causation_id, Some(fee.message_id));
    assert_eq!(store.outbox_pending(10).await.unwrap(), vec![]);
}

/// 8 tasks x 500 commands on one stream, spread over two handles on one store (as two
/// processes would be): exact total, dense sequence, conflicts between the handles retried.
pub async fn contention_on_one_stream(store: Arc<dyn Store>) {
    let handles = [flow(store.clone()).await, flow(store.clone()).await];
    let id = EntityId::from("tally-1");
    let mut tasks = Vec::new();
    for task in 0..8 {
        let flow = handles[task % 2].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                flow.send(&id, Add { n: 2 })
                    .await
                    .expect("retried, never surfaced");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stream = StreamId::of::<Tally>(&id);
    assert_eq!(store.last_sequence(&stream).await.unwrap(), Sequence(4_000));
    let flow = &handles[0];
    let tally: Tally = flow.replay(&id).await.unwrap();
    assert_eq!(
        tally,
        Tally {
            total: 8_000,
            count: 4_000
        }
    );
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    assert!(commands
        .iter()
        .enumerate()
        .all(|(i, c)| c.sequence == Sequence(i as u64 + 1)));
    handles[1].catch_up().await.unwrap();
    let model: TallyModel = flow.view_model(&id).await.unwrap().unwrap();
    assert_eq!(
        model,
        TallyModel {
            applied: 4_000,
            total: 8_000
        }
    );
    let stats: Vec<Stats> = handles.iter().map(SourceFlow::stats).collect();
    assert_eq!(stats[0].committed + stats[1].committed, 4_000);
    assert!(
        stats[0].conflicts_retried + stats[1].conflicts_retried > 0,
        "two writers on one stream must have collided at least once: {stats:?}"
    );
}

/// Replay and state_at give the live state; rebuild gives the live view models; replay
/// appends nothing and delivers nothing.
pub async fn replay_and_rebuild_match_live(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let ids: Vec<EntityId> = (0..5)
        .map(|i| EntityId::from(format!("acct-{i}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        open(&flow, id, 500).await;
        for k in 0..(i as i64 + 3) {
            flow.send(id, Deposit { amount: 10 + k }).await.unwrap();
        }
        flow.send(id, Withdraw { amount: 200 }).await.unwrap();
    }
    let live_state: Account = {
        let stream = StreamId::of::<Account>(&ids[4]);
        let (_, bytes) = store.get_entity(&stream).await.unwrap().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let mut live_views = Vec::new();
    for id in &ids {
        live_views.push(
            flow.view_model::<AccountBalance>(id)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let head = store.head().await.unwrap();
    let before = flow.stats();

    let replayed: Account = flow.replay(&ids[4]).await.unwrap();
    assert_eq!(replayed, live_state);
    // Open, 7 deposits: the state after command 8 is the state before the withdrawal.
    let at: Account = flow.state_at(&ids[4], Sequence(8)).await.unwrap();
    assert_eq!(at.balance, (10..17).sum::<i64>());
    assert_eq!(at.owner, "Ada");
    let at_now: Account = flow.state_at(&ids[4], chrono::Utc::now()).await.unwrap();
    assert_eq!(at_now, live_state);

    assert_eq!(store.head().await.unwrap(), head, "replay appended events");
    let stream = StreamId::of::<Account>(&ids[4]);
    assert_eq!(store.last_sequence(&stream).await.unwrap(), Sequence(10));
    assert_eq!(flow.stats().events_projected, before.events_projected);

    let applied = flow.rebuild::<bank::BalanceView>().await.unwrap();
    assert_eq!(applied, head.0);
    for (id, live) in ids.iter().zip(&live_views) {
        let rebuilt: AccountBalance = flow.view_model(id).await.unwrap().unwrap();
        assert_eq!(&rebuilt, live);
    }
}

/// Replay and `state_at` over a stream longer than two of replay's pages (it reads 1,000
/// commands at a time) give the state after exactly the commands asked for, whether the bound
/// falls on a page's last command, its first, or inside one, by sequence or by time.
pub async fn replay_reads_long_streams_in_pages(store: Arc<dyn Store>) {
    const COMMANDS: u64 = 2_050;
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 0).await;
    for k in 2..=COMMANDS {
        flow.send(&id, Deposit { amount: k as i64 }).await.unwrap();
    }
    // Command 1 opens the account, command k >= 2 deposits k.
    let balance_after = |k: u64| (2..=k as i64).sum::<i64>();
    let stream = StreamId::of::<Account>(&id);
    let (_, live) = store.get_entity(&stream).await.unwrap().unwrap();
    let live: Account = serde_json::from_slice(&live).unwrap();
    assert_eq!(live.balance, balance_after(COMMANDS));

    let replayed: Account = flow.replay(&id).await.unwrap();
    assert_eq!(replayed, live);
    for k in [
        999,
        1_000,
        1_001,
        1_999,
        2_000,
        2_001,
        COMMANDS,
        COMMANDS + 5,
    ] {
        let at: Account = flow.state_at(&id, Sequence(k)).await.unwrap();
        assert_eq!(
            at.balance,
            balance_after(k.min(COMMANDS)),
            "state at sequence {k}"
        );
    }
    // By time: the commands stamped at or before the 1,500th command's timestamp (a later one
    // may share its microsecond).
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    let t = commands[1_499].envelope.timestamp;
    let included = commands
        .iter()
        .take_while(|c| c.envelope.timestamp <= t)
        .count() as u64;
    let at: Account = flow.state_at(&id, t).await.unwrap();
    assert_eq!(at.balance, balance_after(included));
    assert_eq!(
        flow.verify::<Account>(&id).await.unwrap(),
        sourceflow::Verification::Consistent {
            sequence: Sequence(COMMANDS)
        }
    );
}

/// A stored command with an unknown wire name, or a payload that no longer decodes, makes
/// replay fail with an error naming the stream and sequence.
pub async fn undecodable_commands_fail_replay(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 0).await;
    let stream = StreamId::of::<Account>(&id);
    let envelope = |name: &'static str| Envelope {
        message_id: Uuid::now_v7(),
        name: name.into(),
        version: 1,
        stream: stream.clone(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        timestamp: chrono::Utc::now(),
    };
    store
        .append_command(
            Sequence(1),
            sourceflow::message::StoredCommand {
                envelope: envelope("bank.Renamed"),
                sequence: Sequence(2),
                payload: br#"{"amount":1}"#.to_vec(),
            },
        )
        .await
        .unwrap();
    match flow.replay::<Account>(&id).await {
        Err(Error::UnknownMessage { name, at }) => {
            assert_eq!(name, "bank.Renamed");
            assert_eq!(
                at,
                Location::Stored {
                    stream: stream.clone(),
                    sequence: Sequence(2)
                }
            );
        }
        other => panic!("expected UnknownMessage, got {other:?}"),
    }

    let other = EntityId::new();
    open(&flow, &other, 0).await;
    let other_stream = StreamId::of::<Account>(&other);
    let mut corrupt = envelope("bank.Deposit");
    corrupt.stream = other_stream.clone();
    store
        .append_command(
            Sequence(1),
            sourceflow::message::StoredCommand {
                envelope: corrupt,
                sequence: Sequence(2),
                payload: br#"{"amount":"ten"}"#.to_vec(),
            },
        )
        .await
        .unwrap();
    match flow.replay::<Account>(&other).await {
        Err(Error::Decode { name, at, .. }) => {
            assert_eq!(name, "bank.Deposit");
            assert_eq!(
                at,
                Location::Stored {
                    stream: other_stream.clone(),
                    sequence: Sequence(2)
                }
            );
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

/// A refused or invalid command stores nothing anywhere.
pub async fn rejection_persists_nothing(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 0).await;
    flow.send(&id, Deposit { amount: 30 }).await.unwrap();
    let stream = StreamId::of::<Account>(&id);
    let entity_before = store.get_entity(&stream).await.unwrap();
    let head_before = store.head().await.unwrap();
    let view_before: Option<AccountBalance> = flow.view_model(&id).await.unwrap();

    match flow.send(&id, Withdraw { amount: 31 }).await {
        Err(Error::Rejected(e)) => assert_eq!(e.code, "insufficient_funds"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    match flow.send(&id, Deposit { amount: 0 }).await {
        Err(Error::Invalid(v)) => {
            assert_eq!(v.items.len(), 1);
            assert_eq!(v.items[0].field, "amount");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(store.last_sequence(&stream).await.unwrap(), Sequence(2));
    assert_eq!(store.get_entity(&stream).await.unwrap(), entity_before);
    assert_eq!(store.head().await.unwrap(), head_before);
    assert_eq!(
        flow.view_model::<AccountBalance>(&id).await.unwrap(),
        view_before
    );
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
    assert_eq!(flow.stats().rejected, 2);
}

/// A resent message id runs once; the repeat returns the original receipt.
pub async fn resent_message_id_runs_once(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 0).await;
    let key = Uuid::now_v7();
    let first = flow
        .send_with(
            &id,
            Deposit { amount: 5 },
            SendOptions::new().message_id(key),
        )
        .await
        .unwrap();
    flow.send(&id, Deposit { amount: 7 }).await.unwrap();
    let again = flow
        .send_with(
            &id,
            Deposit { amount: 5 },
            SendOptions::new().message_id(key),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(comparable(&again.events), comparable(&first.events));
    let account: Account = flow.replay(&id).await.unwrap();
    assert_eq!(account.balance, 12);
}

/// A transport stand-in: forwards deposits to a worker flow, passing `first_send` on, and keeps
/// what it forwarded.
struct Forward {
    worker: SourceFlow,
    forwarded: Arc<std::sync::Mutex<Vec<sourceflow::OutgoingCommand>>>,
}

#[async_trait::async_trait]
impl sourceflow::CommandDispatcher for Forward {
    fn name(&self) -> &str {
        "forward"
    }

    fn accepts(&self, command: &sourceflow::OutgoingCommand) -> bool {
        command.envelope.name == <Deposit as sourceflow::Message>::NAME
    }

    async fn dispatch(
        &self,
        command: sourceflow::OutgoingCommand,
    ) -> Result<sourceflow::CommandReceipt, Error> {
        self.forwarded.lock().unwrap().push(command.clone());
        if command.first_send {
            self.worker
                .dispatch_first_delivery(command.envelope, command.payload)
                .await
        } else {
            self.worker
                .dispatch_local(command.envelope, command.payload)
                .await
        }
    }
}

/// A command `send` gives a fresh message id reaches a transport as a first send (its first
/// delivery needs no duplicate lookup); one with an idempotency key does not. Should a stored
/// message id arrive as a first delivery all the same, the commit answers it with the original
/// receipt, and a lookup does too: the command counts once.
pub async fn first_sends_skip_the_duplicate_lookup(store: Arc<dyn Store>) {
    let worker = flow(store.clone()).await;
    let forwarded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let front = SourceFlow::builder()
        .shared_store(store.clone())
        .without_discovery()
        .dispatcher(Forward {
            worker: worker.clone(),
            forwarded: forwarded.clone(),
        })
        .build()
        .await
        .unwrap();
    let id = EntityId::new();
    open(&worker, &id, 0).await;
    let first = front.send(&id, Deposit { amount: 5 }).await.unwrap();
    let keyed = front
        .send_with(
            &id,
            Deposit { amount: 7 },
            SendOptions::new().message_id(Uuid::now_v7()),
        )
        .await
        .unwrap();
    assert!(!first.duplicate && !keyed.duplicate);
    let forwarded = forwarded.lock().unwrap().clone();
    assert_eq!(
        forwarded.iter().map(|c| c.first_send).collect::<Vec<_>>(),
        [true, false]
    );
    let resent = &forwarded[0];
    let again = worker
        .dispatch_first_delivery(resent.envelope.clone(), resent.payload.clone())
        .await
        .unwrap();
    let looked_up = worker
        .dispatch_local(resent.envelope.clone(), resent.payload.clone())
        .await
        .unwrap();
    for repeat in [again, looked_up] {
        assert!(repeat.duplicate);
        assert_eq!(repeat.sequence, first.sequence);
        assert_eq!(comparable(&repeat.events), comparable(&first.events));
    }
    let account: Account = worker.replay(&id).await.unwrap();
    assert_eq!(account.balance, 12);
    let stream = StreamId::of::<Account>(&id);
    assert_eq!(store.last_sequence(&stream).await.unwrap(), Sequence(3));
}

/// Events with their payloads as JSON values, for comparing what two runs recorded.
pub fn comparable(
    events: &[sourceflow::RecordedEvent],
) -> Vec<(Uuid, Sequence, Position, serde_json::Value)> {
    events
        .iter()
        .map(|e| {
            (
                e.envelope.message_id,
                e.sequence,
                e.position,
                e.payload_json().expect("stored payloads are JSON"),
            )
        })
        .collect()
}

/// Instantiates every runtime scenario as a `#[tokio::test]` for one backend.
///
/// `$factory` is a path to an async fn returning a fresh [`Backend`](crate::backends::Backend);
/// the attributes before it are put on every test (the Postgres suite's `ignore` when
/// `SOURCEFLOW_PG_URL` is not set).
#[macro_export]
macro_rules! runtime_suite {
    ($(#[$attribute:meta])* $factory:path) => {
        $crate::runtime_suite!(@tests [$(#[$attribute])*] $factory;
            end_to_end_chain,
            contention_on_one_stream,
            replay_and_rebuild_match_live,
            replay_reads_long_streams_in_pages,
            undecodable_commands_fail_replay,
            rejection_persists_nothing,
            resent_message_id_runs_once,
            first_sends_skip_the_duplicate_lookup,
            read_your_writes,
            views_exactly_once_across_handles,
            subscribe_sees_everything_in_order,
            reactions_exactly_once,
            idempotency_keys,
            validation_before_persistence,
            entity_state_is_a_cache,
            admin_listing,
            stale_cached_state_never_refuses,
            views_commit_with_their_command,
            remote_events_apply_exactly_once,
        );
    };
    (@tests $attributes:tt $factory:path; $($name:ident),* $(,)?) => {
        $($crate::runtime_suite!(@test $attributes $factory; $name);)*
    };
    (@test [$(#[$attribute:meta])*] $factory:path; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attribute])*
        async fn $name() {
            let backend = $factory().await;
            $crate::scenarios::$name(backend.store.clone()).await;
            backend.finish().await;
        }
    };
}

// ---- The consistency contract (DESIGN.md), one scenario per guarantee.

/// Contract 1: `send` returns after in-process views applied its events; a background view
/// catches up on `catch_up()`.
pub async fn read_your_writes(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 0).await;
    for amount in 1..=20 {
        flow.send(&id, Deposit { amount }).await.unwrap();
        let view: AccountBalance = flow.view_model(&id).await.unwrap().unwrap();
        assert_eq!(view.balance, (1..=amount).sum::<i64>());
    }

    let background = SourceFlow::builder()
        .shared_store(store.clone())
        .background::<TallyView>()
        .build()
        .await
        .unwrap();
    let tally = EntityId::new();
    for _ in 0..50 {
        background.send(&tally, Add { n: 1 }).await.unwrap();
    }
    background.catch_up().await.unwrap();
    let model: TallyModel = background.view_model(&tally).await.unwrap().unwrap();
    assert_eq!(
        model,
        TallyModel {
            applied: 50,
            total: 50
        }
    );
}

/// Contract 2: two handles on one store, projecting concurrently, apply each event exactly
/// once; a projection left behind (as by a crash) is finished by catch-up, not doubled.
pub async fn views_exactly_once_across_handles(store: Arc<dyn Store>) {
    let a = flow(store.clone()).await;
    let b = flow(store.clone()).await;
    let ids: Vec<EntityId> = (0..4).map(|i| EntityId::from(format!("t-{i}"))).collect();
    let mut tasks = Vec::new();
    for (k, flow) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                flow.send(&ids[(i + k) % ids.len()], Add { n: 1 })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    a.catch_up().await.unwrap();
    b.catch_up().await.unwrap();
    let mut applied = 0;
    for id in &ids {
        let model: TallyModel = a.view_model(id).await.unwrap().unwrap();
        let tally: Tally = a.replay(id).await.unwrap();
        assert_eq!(model.applied, tally.count, "{id}: every event applied once");
        assert_eq!(model.total, tally.total);
        applied += model.applied;
    }
    assert_eq!(applied, 400);

    // Commands committed by a process whose views never ran (it crashed right after the
    // commits): the next process finishes the projection when it starts, exactly once.
    let writer_only = SourceFlow::builder()
        .shared_store(store.clone())
        .without_discovery()
        .saga(TallySaga)
        .build()
        .await
        .unwrap();
    for _ in 0..30 {
        writer_only.send(&ids[0], Add { n: 10 }).await.unwrap();
    }
    let before: TallyModel = a.view_model(&ids[0]).await.unwrap().unwrap();
    let restarted = flow(store.clone()).await;
    restarted.catch_up().await.unwrap();
    a.catch_up().await.unwrap();
    let after: TallyModel = restarted.view_model(&ids[0]).await.unwrap().unwrap();
    assert_eq!(after.applied, before.applied + 30);
    assert_eq!(after.total, before.total + 300);
}

/// Contract 3 (in-process form): a subscriber reading while writers commit sees every event
/// exactly once, in position order, with no gaps.
pub async fn subscribe_sees_everything_in_order(store: Arc<dyn Store>) {
    use futures_util::StreamExt;
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    for _ in 0..10 {
        flow.send(&id, Add { n: 1 }).await.unwrap();
    }
    let reader = {
        let flow = flow.clone();
        tokio::spawn(async move {
            let events = flow.subscribe(Position::START).take(10 + 4 * 50);
            let events: Vec<_> = events.collect().await;
            events
                .into_iter()
                .map(|e| e.unwrap().position)
                .collect::<Vec<_>>()
        })
    };
    let mut writers = Vec::new();
    for w in 0..4 {
        let flow = flow.clone();
        writers.push(tokio::spawn(async move {
            let id = EntityId::from(format!("w-{w}"));
            for _ in 0..50 {
                flow.send(&id, Add { n: 1 }).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let positions = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the subscriber follows live commits")
        .unwrap();
    let expected: Vec<Position> = (1..=210).map(Position).collect();
    assert_eq!(positions, expected);
}

/// Contract 4: a reaction that runs again sends a follow-up with the same derived id, which is
/// acknowledged as a duplicate: the fee is charged once.
pub async fn reactions_exactly_once(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 100).await;
    flow.send(&id, Withdraw { amount: 40 }).await.unwrap();
    let charged: Account = flow.replay(&id).await.unwrap();
    assert_eq!(charged.balance, -40 - OVERDRAFT_FEE);

    // Forget that the policy ran (as if it crashed before recording its position) and start
    // another process: the reaction runs again, its command is a duplicate.
    store
        .set_position("OverdraftPolicy", Position::START)
        .await
        .unwrap();
    let again = flow_and_stats(store.clone()).await;
    assert!(
        again.1.duplicates >= 1,
        "the re-sent fee was acknowledged: {:?}",
        again.1
    );
    let account: Account = again.0.replay(&id).await.unwrap();
    assert_eq!(account.balance, -40 - OVERDRAFT_FEE, "charged once");
    let stream = StreamId::of::<Account>(&id);
    assert_eq!(store.last_sequence(&stream).await.unwrap(), Sequence(3));
}

async fn flow_and_stats(store: Arc<dyn Store>) -> (SourceFlow, Stats) {
    let flow = flow(store).await;
    let stats = flow.stats();
    (flow, stats)
}

/// Contract 5: idempotency keys: concurrent sends with one id commit once; the key is scoped to
/// the stream.
pub async fn idempotency_keys(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    let key = Uuid::now_v7();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let flow = flow.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            flow.send_with(&id, Add { n: 7 }, SendOptions::new().message_id(key))
                .await
                .unwrap()
        }));
    }
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(task.await.unwrap());
    }
    assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(receipts.iter().all(|r| r.sequence == Sequence(1)));
    assert!(receipts
        .iter()
        .all(|r| comparable(&r.events) == comparable(&receipts[0].events)));
    let tally: Tally = flow.replay(&id).await.unwrap();
    assert_eq!(tally, Tally { total: 7, count: 1 });

    // The same key on another stream is another command.
    let other = EntityId::new();
    let receipt = flow
        .send_with(&other, Add { n: 1 }, SendOptions::new().message_id(key))
        .await
        .unwrap();
    assert!(!receipt.duplicate);
}

/// Contract 6: validation before persistence: every problem listed with its field, nothing
/// stored; events are checked before the commit.
pub async fn validation_before_persistence(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    match flow
        .send(
            &id,
            OpenAccount {
                owner: " ".into(),
                overdraft_limit: -1,
            },
        )
        .await
    {
        Err(Error::Invalid(v)) => {
            assert_eq!(v.message, "bank.OpenAccount");
            let fields: Vec<&str> = v.items.iter().map(|i| i.field.as_str()).collect();
            assert_eq!(fields, ["owner", "overdraft_limit"]);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    match flow.send(&id, Add { n: 0 }).await {
        Err(Error::Invalid(v)) => {
            assert_eq!(v.message, "test.Added");
            assert_eq!(v.items[0].field, "n");
        }
        other => panic!("expected Invalid from the event check, got {other:?}"),
    }
    assert_eq!(store.head().await.unwrap(), Position::START);
    assert_eq!(store.entity_types().await.unwrap(), Vec::<String>::new());
}

/// Contract 8: the stored entity state is a cache: dropped, it is rebuilt exactly; `verify`
/// names the first sequence where stored data and replay disagree.
pub async fn entity_state_is_a_cache(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::new();
    open(&flow, &id, 0).await;
    for amount in [10, 20, 30] {
        flow.send(&id, Deposit { amount }).await.unwrap();
    }
    let stream = StreamId::of::<Account>(&id);
    assert!(matches!(
        flow.verify::<Account>(&id).await.unwrap(),
        sourceflow::Verification::Consistent {
            sequence: Sequence(4)
        }
    ));
    store.delete_entity(&stream).await.unwrap();
    assert!(matches!(
        flow.verify::<Account>(&id).await.unwrap(),
        sourceflow::Verification::NoStoredState {
            sequence: Sequence(4)
        }
    ));
    flow.send(&id, Deposit { amount: 40 }).await.unwrap();
    let (version, bytes) = store.get_entity(&stream).await.unwrap().unwrap();
    assert_eq!(version, Sequence(5));
    let account: Account = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(account.balance, 100);
    let view: AccountBalance = flow.view_model(&id).await.unwrap().unwrap();
    assert_eq!(view.balance, 100);

    // Tamper with the cache: verify reports the difference at the last sequence.
    let mut wrong = account.clone();
    wrong.balance = 1;
    store
        .put_entity(
            &stream,
            Sequence(5),
            Sequence(5),
            serde_json::to_vec(&wrong).unwrap(),
        )
        .await
        .unwrap();
    match flow.verify::<Account>(&id).await.unwrap() {
        sourceflow::Verification::Differs { sequence, detail } => {
            assert_eq!(sequence, Sequence(5));
            assert!(detail.contains("\"balance\":1"), "{detail}");
        }
        other => panic!("expected Differs, got {other:?}"),
    }

    // Events recorded behind the log's back: under the stream's last command, verify names
    // that command; before the first command, no command replays them.
    let stray = |stream: &StreamId| crate::conformance::event(stream, 1);
    let late = EntityId::new();
    open(&flow, &late, 0).await;
    let late_stream = StreamId::of::<Account>(&late);
    store
        .append_events(&late_stream, Sequence(1), vec![stray(&late_stream)])
        .await
        .unwrap();
    match flow.verify::<Account>(&late).await.unwrap() {
        sourceflow::Verification::Differs { sequence, detail } => {
            assert_eq!(sequence, Sequence(1));
            assert_eq!(detail, "replay emits 1 events, 2 are recorded");
        }
        other => panic!("expected Differs, got {other:?}"),
    }
    let early = EntityId::new();
    let early_stream = StreamId::of::<Account>(&early);
    store
        .append_events(&early_stream, Sequence(0), vec![stray(&early_stream)])
        .await
        .unwrap();
    open(&flow, &early, 0).await;
    match flow.verify::<Account>(&early).await.unwrap() {
        sourceflow::Verification::Differs { sequence, detail } => {
            assert_eq!(sequence, Sequence(0));
            assert!(detail.contains("did not reach"), "{detail}");
        }
        other => panic!("expected Differs, got {other:?}"),
    }
}

/// Contract 9: operators list entity types and the stream ids of a type, paged.
pub async fn admin_listing(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    for i in 0..7 {
        flow.send(format!("tally-{i:02}"), Add { n: 1 })
            .await
            .unwrap();
    }
    open(&flow, &EntityId::from("acct-x"), 0).await;
    assert_eq!(
        flow.entity_types().await.unwrap(),
        ["bank.Account", "test.Tally"]
    );
    let first = flow
        .stream_ids("test.Tally", sourceflow::store::Page::first(3))
        .await
        .unwrap();
    assert_eq!(
        first,
        ["tally-00", "tally-01", "tally-02"].map(EntityId::from)
    );
    let next = flow
        .stream_ids(
            "test.Tally",
            sourceflow::store::Page {
                after: first.last().cloned(),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(next.len(), 4);
    assert_eq!(next[0], EntityId::from("tally-03"));
}

/// A refusal decided on a state another process has since changed is not final: the handle
/// re-checks the stream and runs the command on the current state.
pub async fn stale_cached_state_never_refuses(store: Arc<dyn Store>) {
    let a = flow(store.clone()).await;
    let b = flow(store.clone()).await;
    let id = EntityId::new();
    open(&a, &id, 0).await; // `a` now caches the account at balance 0
    b.send(&id, Deposit { amount: 100 }).await.unwrap();
    let receipt = a
        .send(&id, Withdraw { amount: 60 })
        .await
        .expect("the deposit made by the other handle counts");
    assert_eq!(receipt.sequence, Sequence(3));
    let account: Account = a.replay(&id).await.unwrap();
    assert_eq!(account.balance, 40);
    match a.send(&id, Withdraw { amount: 41 }).await {
        Err(Error::Rejected(e)) => assert_eq!(e.code, "insufficient_funds"),
        other => panic!("a refusal on the current state stands: {other:?}"),
    }
}

/// Contract 1, fast path: a view this process keeps up commits its batch in the same
/// transaction as the command that emitted the events. When another process has moved the view
/// in between (so this process's cached models may be stale), the store refuses the inline
/// batch and the events are projected from the stored models instead: still exactly once.
pub async fn views_commit_with_their_command(store: Arc<dyn Store>) {
    async fn with_totals(store: &Arc<dyn Store>) -> SourceFlow {
        SourceFlow::builder()
            .shared_store(store.clone())
            .view(TallyTotalsView {
                _registered_by_value: (),
            })
            .build()
            .await
            .unwrap()
    }
    let a = with_totals(&store).await;
    let id = EntityId::from("inline-a");
    a.send(&id, Add { n: 1 }).await.unwrap();
    let before = a.stats().projected_inline;
    for n in 2..=11 {
        a.send(&id, Add { n }).await.unwrap();
        let model: TallyModel = a.view_model(&id).await.unwrap().unwrap();
        assert_eq!(model.total, (1..=n).sum::<i64>());
    }
    // Both views (TallyView and TallyTotalsView) took the fast path for each of the 10 sends.
    assert_eq!(a.stats().projected_inline - before, 20);

    // Two processes on distinct streams, both updating the shared totals model: each one's
    // cached totals go stale whenever the other commits.
    let b = with_totals(&store).await;
    let other = EntityId::from("inline-b");
    let mut sum = (1..=11).sum::<i64>();
    for round in 0..10 {
        let (flow, stream) = if round % 2 == 0 {
            (&b, &other)
        } else {
            (&a, &id)
        };
        flow.send(stream, Add { n: 100 }).await.unwrap();
        sum += 100;
        for reader in [&a, &b] {
            let totals: TallyTotals = reader
                .view_model(&TallyTotalsView::id())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                totals,
                TallyTotals {
                    applied: 12 + round,
                    sum
                },
                "round {round}"
            );
        }
    }
    a.catch_up().await.unwrap();
    b.catch_up().await.unwrap();
    let totals: TallyTotals = a.view_model(&TallyTotalsView::id()).await.unwrap().unwrap();
    assert_eq!(totals, TallyTotals { applied: 21, sum });
}

/// Events recorded by another process's store (as a transport delivers them) reach this
/// process's views exactly once: overlapping and repeated deliveries, and two processes
/// delivering at the same time, leave every model as one pass over the log would.
pub async fn remote_events_apply_exactly_once(store: Arc<dyn Store>) {
    // The origin: its own store, handling the commands.
    let origin_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let origin = SourceFlow::builder()
        .shared_store(origin_store.clone())
        .without_discovery()
        .saga(TallySaga)
        .build()
        .await
        .unwrap();
    let ids: Vec<EntityId> = (0..3).map(|i| EntityId::from(format!("r-{i}"))).collect();
    for n in 1..=20 {
        origin.send(&ids[n % 3], Add { n: n as i64 }).await.unwrap();
    }
    let log = origin_store.read_all(Position::START, 1_000).await.unwrap();
    assert_eq!(log.len(), 20);

    // Two remote processes with the same views on the store under test.
    let remote = || async {
        SourceFlow::builder()
            .shared_store(store.clone())
            .without_discovery()
            .view(TallyView)
            .view(TallyTotalsView {
                _registered_by_value: (),
            })
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (remote().await, remote().await);
    // Overlapping windows, each delivered twice, by both processes at once.
    let mut tasks = Vec::new();
    for flow in [a.clone(), b.clone()] {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for start in (0usize..20).step_by(5) {
                let window = &log[start.saturating_sub(3)..(start + 5).min(20)];
                flow.apply_remote(window).await.unwrap();
                flow.apply_remote(window).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Delivering the whole log again changes nothing.
    assert_eq!(a.apply_remote(&log).await.unwrap(), 0);

    let totals: TallyTotals = a.view_model(&TallyTotalsView::id()).await.unwrap().unwrap();
    assert_eq!(
        totals,
        TallyTotals {
            applied: 20,
            sum: (1..=20).sum()
        }
    );
    for id in &ids {
        let model: TallyModel = b.view_model(id).await.unwrap().unwrap();
        let tally: Tally = origin.replay(id).await.unwrap();
        assert_eq!(
            (model.applied, model.total),
            (tally.count, tally.total),
            "{id}"
        );
    }
}
