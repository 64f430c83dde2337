//! Scheduled-command scenarios, written once and run against every backend with
//! [`deadline_suite!`](crate::deadline_suite): deadlines scheduled and cancelled by handlers,
//! firing exactly once on a manual clock, cancel racing fire, and overdue schedules fired at
//! start in due order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::schedule::{CancelOutcome, Clock, ManualClock, ScheduleId, ScheduleState, When};
use sourceflow::store::Store;
use sourceflow::CommandReceipt;
use sourceflow::Verification;

/// A reservation that expires unless confirmed in time.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "test.Reservation")]
pub struct Reservation {
    /// The pending expiry, while there is one.
    pub deadline: Option<ScheduleId>,
    /// Confirmed in time.
    pub confirmed: bool,
    /// How many times the expiry ran (exactly once, or never).
    pub expired: u32,
}

/// Reserves, with an expiry after `ttl_secs`; `refuse` makes the handler refuse after it
/// scheduled.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.Reserve")]
pub struct Reserve {
    /// Seconds until the expiry.
    pub ttl_secs: u64,
    /// Refuse the command after scheduling.
    pub refuse: bool,
}

/// Confirms: the expiry is cancelled.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.Confirm")]
pub struct Confirm;

/// The expiry, sent by the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "test.Expire")]
pub struct Expire;

/// The reservation expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "test.Expired")]
pub struct Expired {
    /// The expiry's count so far.
    pub count: u32,
}

/// Owns reservations.
#[derive(Default)]
pub struct ReservationSaga;

#[saga(entity = Reservation)]
impl ReservationSaga {
    #[handles]
    async fn reserve(
        &self,
        r: &mut Reservation,
        cmd: &Reserve,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        let id = cx.entity_id().clone();
        r.deadline = Some(cx.schedule(Duration::from_secs(cmd.ttl_secs), id, Expire));
        if cmd.refuse {
            return Err(DomainError::rejected("refused after scheduling"));
        }
        Ok(())
    }

    #[handles]
    async fn confirm(&self, r: &mut Reservation, _: &Confirm, cx: &mut SagaContext) {
        if let Some(deadline) = r.deadline.take() {
            cx.cancel(deadline);
        }
        r.confirmed = true;
    }

    #[handles]
    async fn expire(&self, r: &mut Reservation, _: &Expire, cx: &mut SagaContext) {
        r.deadline = None;
        r.expired += 1;
        cx.publish(Expired { count: r.expired });
    }
}

/// A log of the ticks an entity received, in order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "test.Ticks")]
pub struct Ticks {
    /// The `n` of every tick, in the order they ran.
    pub seen: Vec<u64>,
}

/// One tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "test.Tick")]
pub struct Tick {
    /// Its number.
    pub n: u64,
}

/// Asks for a tick a minute later (through a reaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "test.Ping")]
pub struct Ping {
    /// The tick's number.
    pub n: u64,
}

/// A ping was received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "test.Pinged")]
pub struct Pinged {
    /// The tick's number.
    pub n: u64,
}

/// How long [`TickSaga`] takes over each tick, in milliseconds (0 unless a process sets it):
/// a scheduler process that is to be killed while it holds claims runs slowly, so that it
/// holds them most of the time.
pub static TICK_DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Owns tick logs.
#[derive(Default)]
pub struct TickSaga;

#[saga(entity = Ticks)]
impl TickSaga {
    #[handles]
    async fn tick(&self, t: &mut Ticks, cmd: &Tick, _: &mut SagaContext) {
        let delay = TICK_DELAY_MS.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        t.seen.push(cmd.n);
    }

    #[handles]
    async fn ping(&self, _: &mut Ticks, cmd: &Ping, cx: &mut SagaContext) {
        cx.publish(Pinged { n: cmd.n });
    }
}

/// The name [`PongAggregate`]'s position is kept under.
const PONG: &str = "test.PongAggregate";

/// Reacts to pings: a tick to `pong` one minute after the ping, and one to `pong-ack` now.
#[derive(Default)]
pub struct PongAggregate;

#[aggregate(entity = Ticks, name = "test.PongAggregate")]
impl PongAggregate {
    #[subscribes]
    async fn on_pinged(&self, e: &Pinged, cx: &mut ReactionContext) {
        cx.schedule(Duration::from_secs(60), "pong", Tick { n: e.n });
        // And an immediate acknowledgement, through the outbox.
        cx.send_to("pong-ack", Tick { n: e.n });
    }
}

/// A flow over `store` with the two sagas above, on `clock`, without a scheduler: the
/// scenarios fire by hand.
pub async fn manual_flow(store: Arc<dyn Store>, clock: &ManualClock) -> SourceFlow {
    SourceFlow::builder()
        .shared_store(store)
        .without_discovery()
        .saga(ReservationSaga)
        .saga(TickSaga)
        .aggregate(PongAggregate)
        .clock(clock.clone())
        .without_scheduler()
        .build()
        .await
        .expect("the deadline domain is wired correctly")
}

async fn state<E: Entity>(flow: &SourceFlow, id: &EntityId) -> E {
    flow.replay::<E>(id).await.expect("replay")
}

/// A deadline made by a handler fires once when due, not before, with the scheduling
/// command's correlation id, its message id as causation, and the schedule's message id.
pub async fn deadline_fires_once_when_due(store: Arc<dyn Store>) {
    // Stores keep whole microseconds: a clock on a whole second compares exactly.
    let clock = ManualClock::starting_at(chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0));
    let flow = manual_flow(store.clone(), &clock).await;
    let id = EntityId::from("r-1");
    let reserved = flow
        .send(
            &id,
            Reserve {
                ttl_secs: 1800,
                refuse: false,
            },
        )
        .await
        .unwrap();
    let r: Reservation = state(&flow, &id).await;
    let deadline = r.deadline.expect("a deadline");
    let pending = flow.pending_schedules(None, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let record = &pending[0];
    assert_eq!(record.schedule.id, deadline);
    assert_eq!(record.state, ScheduleState::Pending);
    assert_eq!(
        record.schedule.due,
        When::After(Duration::from_secs(1800)).due(clock.now())
    );
    let envelope = &record.schedule.command.envelope;
    assert_eq!(envelope.name, "test.Expire");
    assert_eq!(envelope.stream, StreamId::of::<Reservation>(&id));

    assert_eq!(flow.fire_due().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1799));
    assert_eq!(flow.fire_due().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(flow.fire_due().await.unwrap(), 1);
    assert_eq!(flow.fire_due().await.unwrap(), 0);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(flow.fire_due().await.unwrap(), 0);

    let r: Reservation = state(&flow, &id).await;
    assert_eq!((r.expired, r.deadline), (1, None));
    let commands = store
        .load_commands(&StreamId::of::<Reservation>(&id), Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(commands.len(), 2);
    let fired = &commands[1].envelope;
    assert_eq!(fired.name, "test.Expire");
    assert_eq!(fired.message_id, deadline.message_id());
    assert_eq!(fired.causation_id, Some(reserved.message_id));
    assert_eq!(fired.correlation_id, commands[0].envelope.correlation_id);
    let settled = flow.scheduled(deadline).await.unwrap().unwrap();
    assert_eq!(settled.state, ScheduleState::Fired);
    assert_eq!(
        flow.cancel(deadline).await.unwrap(),
        CancelOutcome::AlreadyFired
    );
    assert!(flow.pending_schedules(None, 10).await.unwrap().is_empty());
}

/// A handler's cancel commits with its command: the deadline never fires.
pub async fn cancelled_deadline_never_fires(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let flow = manual_flow(store, &clock).await;
    let id = EntityId::from("r-2");
    flow.send(
        &id,
        Reserve {
            ttl_secs: 60,
            refuse: false,
        },
    )
    .await
    .unwrap();
    let deadline = state::<Reservation>(&flow, &id).await.deadline.unwrap();
    flow.send(&id, Confirm).await.unwrap();
    assert_eq!(
        flow.scheduled(deadline).await.unwrap().map(|r| r.state),
        Some(ScheduleState::Cancelled)
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(flow.fire_due().await.unwrap(), 0);
    let r: Reservation = state(&flow, &id).await;
    assert_eq!((r.confirmed, r.expired), (true, 0));
    assert_eq!(
        flow.cancel(deadline).await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
}

/// A refused handler schedules nothing; a replay schedules nothing and returns the same ids,
/// so the replayed state matches the stored one.
pub async fn refused_and_replayed_handlers_schedule_nothing(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let flow = manual_flow(store, &clock).await;
    let id = EntityId::from("r-3");
    let refused = flow
        .send(
            &id,
            Reserve {
                ttl_secs: 0,
                refuse: true,
            },
        )
        .await;
    assert!(matches!(refused, Err(Error::Rejected(_))), "{refused:?}");
    assert!(flow.pending_schedules(None, 10).await.unwrap().is_empty());
    assert_eq!(flow.fire_due().await.unwrap(), 0);

    flow.send(
        &id,
        Reserve {
            ttl_secs: 60,
            refuse: false,
        },
    )
    .await
    .unwrap();
    let stored = state::<Reservation>(&flow, &id).await;
    assert!(stored.deadline.is_some());
    assert_eq!(flow.pending_schedules(None, 10).await.unwrap().len(), 1);
    assert!(matches!(
        flow.verify::<Reservation>(&id).await.unwrap(),
        Verification::Consistent { .. }
    ));
    assert_eq!(flow.replay::<Reservation>(&id).await.unwrap(), stored);
    assert_eq!(flow.pending_schedules(None, 10).await.unwrap().len(), 1);
}

/// Outside handlers: schedule at an absolute time, cancel, and the answers of a second cancel
/// and of a cancel after firing.
pub async fn schedule_and_cancel_outside_handlers(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let flow = manual_flow(store, &clock).await;
    let id = EntityId::from("ticks-1");
    let later = clock.now() + chrono::Duration::minutes(5);
    let cancelled = flow.schedule(later, &id, Tick { n: 1 }).await.unwrap();
    let kept = flow.schedule(later, &id, Tick { n: 2 }).await.unwrap();
    assert_eq!(
        flow.cancel(cancelled).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        flow.cancel(cancelled).await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(
        flow.cancel(ScheduleId(uuid::Uuid::now_v7())).await.unwrap(),
        CancelOutcome::NotFound
    );
    clock.set(later);
    assert_eq!(flow.fire_due().await.unwrap(), 1);
    assert_eq!(
        flow.cancel(kept).await.unwrap(),
        CancelOutcome::AlreadyFired
    );
    assert_eq!(state::<Ticks>(&flow, &id).await.seen, [2]);
}

/// A cancel racing the firing of the same due schedule, 1,000 times, from two handles on the
/// store (as two processes): each schedule ends cancelled (its command never ran) or fired
/// (its command ran once), as the cancel reports.
pub async fn cancel_racing_fire_has_one_winner(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let firing = manual_flow(store.clone(), &clock).await;
    let cancelling = manual_flow(store.clone(), &clock).await;
    let (mut cancelled, mut fired) = (0u32, 0u32);
    for i in 0..1_000u64 {
        let id = EntityId::from(format!("race-{}", i % 10));
        let schedule = cancelling
            .schedule(clock.now(), &id, Tick { n: i })
            .await
            .unwrap();
        let fire = {
            let firing = firing.clone();
            tokio::spawn(async move { firing.fire_due().await.unwrap() })
        };
        let cancel = {
            let cancelling = cancelling.clone();
            tokio::spawn(async move { cancelling.cancel(schedule).await.unwrap() })
        };
        let (count, outcome) = (fire.await.unwrap(), cancel.await.unwrap());
        let stream = StreamId::of::<Ticks>(&id);
        let ran = store
            .find_receipt(&stream, schedule.message_id())
            .await
            .unwrap()
            .is_some();
        match outcome {
            CancelOutcome::Cancelled => {
                assert!(!ran && count == 0, "schedule {i}: cancelled, yet it ran");
                cancelled += 1;
            }
            CancelOutcome::AlreadyFired => {
                assert!(ran && count == 1, "schedule {i}: fired, yet it did not run");
                fired += 1;
            }
            other => panic!("schedule {i}: unexpected outcome {other:?}"),
        }
    }
    eprintln!("cancel won {cancelled} times, fire {fired} times");
    let mut seen: Vec<u64> = Vec::new();
    for k in 0..10 {
        seen.extend(
            state::<Ticks>(&firing, &EntityId::from(format!("race-{k}")))
                .await
                .seen,
        );
    }
    assert_eq!(seen.len() as u32, fired);
}

/// Schedules that fell due while no process ran fire when a flow with a scheduler starts,
/// in due order, each once.
pub async fn overdue_schedules_fire_at_start_in_due_order(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let id = EntityId::from("ticks-overdue");
    let start = clock.now();
    {
        let flow = manual_flow(store.clone(), &clock).await;
        // Made in scrambled order, due a second apart.
        for n in [7u64, 2, 9, 0, 5, 3, 8, 1, 6, 4] {
            let due = start + chrono::Duration::seconds(n as i64 + 1);
            flow.schedule(due, &id, Tick { n }).await.unwrap();
        }
    }
    clock.advance(Duration::from_secs(3600));
    let flow = SourceFlow::builder()
        .shared_store(store)
        .without_discovery()
        .saga(ReservationSaga)
        .saga(TickSaga)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    // The scheduler started with the flow; wait until it has fired everything.
    for _ in 0..1_000 {
        if flow.pending_schedules(None, 1).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(flow.pending_schedules(None, 1).await.unwrap().is_empty());
    assert_eq!(
        state::<Ticks>(&flow, &id).await.seen,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(flow.fire_due().await.unwrap(), 0);
}

/// A reaction's schedule is made once per event, even when the reaction runs again (events
/// delivered a second time), with the event as causation; it fires a minute after the event.
pub async fn reactions_schedule_once_per_event(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let flow = manual_flow(store.clone(), &clock).await;
    let receipt = flow.send("pinger", Ping { n: 5 }).await.unwrap();
    let pinged = &receipt.events[0];
    let pending = flow.pending_schedules(None, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let envelope = &pending[0].schedule.command.envelope;
    assert_eq!(envelope.causation_id, Some(pinged.envelope.message_id));
    assert_eq!(envelope.correlation_id, pinged.envelope.correlation_id);
    assert_eq!(
        pending[0].schedule.due,
        pinged.envelope.timestamp + chrono::Duration::seconds(60)
    );
    // The reaction runs again for the same event: a second handle on the store (a process
    // started after a crash), from the reaction's stored position, which is behind.
    store.set_position(PONG, Position::START).await.unwrap();
    let again = manual_flow(store.clone(), &clock).await;
    assert!(
        again.stats().events_projected >= 1,
        "the reaction ran again"
    );
    assert_eq!(again.pending_schedules(None, 10).await.unwrap().len(), 1);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(flow.fire_due().await.unwrap(), 1);
    assert_eq!(
        state::<Ticks>(&flow, &EntityId::from("pong")).await.seen,
        [5]
    );
    assert_eq!(
        state::<Ticks>(&flow, &EntityId::from("pong-ack"))
            .await
            .seen,
        [5]
    );
}

/// A transport stand-in: takes the ticks and runs them on a worker flow, counting them.
struct ToWorker {
    worker: SourceFlow,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl sourceflow::CommandDispatcher for ToWorker {
    fn name(&self) -> &str {
        "to-worker"
    }

    fn accepts(&self, command: &sourceflow::OutgoingCommand) -> bool {
        command.envelope.name == "test.Tick"
    }

    async fn dispatch(
        &self,
        command: sourceflow::OutgoingCommand,
    ) -> Result<CommandReceipt, Error> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.worker
            .dispatch_local(command.envelope, command.payload)
            .await
    }
}

/// A fired command goes through the flow's dispatchers (a transport runs it on its workers),
/// with its derived message id: firing it again is a duplicate there.
pub async fn fired_commands_go_through_dispatchers(store: Arc<dyn Store>) {
    let clock = ManualClock::new();
    let worker = manual_flow(store.clone(), &clock).await;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let front = SourceFlow::builder()
        .shared_store(store.clone())
        .without_discovery()
        .saga(ReservationSaga)
        .dispatcher(ToWorker {
            worker: worker.clone(),
            sent: sent.clone(),
        })
        .clock(clock.clone())
        .without_scheduler()
        .build()
        .await
        .unwrap();
    let id = EntityId::from("remote-ticks");
    let schedule = front
        .schedule(clock.now(), &id, Tick { n: 3 })
        .await
        .unwrap();
    assert_eq!(front.fire_due().await.unwrap(), 1);
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(state::<Ticks>(&worker, &id).await.seen, [3]);
    // The same command again (as after a crash before the schedule was marked fired).
    let again = worker
        .dispatch_local(
            front
                .scheduled(schedule)
                .await
                .unwrap()
                .unwrap()
                .schedule
                .command
                .envelope,
            serde_json::to_vec(&Tick { n: 3 }).unwrap(),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(state::<Ticks>(&worker, &id).await.seen, [3]);
}

/// Instantiates the deadline scenarios for one backend factory (see
/// [`backends`](crate::backends)).
#[macro_export]
macro_rules! deadline_suite {
    ($(#[$attribute:meta])* $factory:path) => {
        $crate::deadline_suite!(@tests [$(#[$attribute])*] $factory;
            deadline_fires_once_when_due,
            cancelled_deadline_never_fires,
            refused_and_replayed_handlers_schedule_nothing,
            schedule_and_cancel_outside_handlers,
            cancel_racing_fire_has_one_winner,
            overdue_schedules_fire_at_start_in_due_order,
            reactions_schedule_once_per_event,
            fired_commands_go_through_dispatchers,
        );
    };
    (@tests $attributes:tt $factory:path; $($name:ident),* $(,)?) => {
        $($crate::deadline_suite!(@test $attributes $factory; $name);)*
    };
    (@test [$(#[$attribute:meta])*] $factory:path; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attribute])*
        async fn $name() {
            let backend = $factory().await;
            $crate::deadlines::$name(backend.store.clone()).await;
            backend.finish().await;
        }
    };
}
