//! The transport against a real NATS server (`SOURCEFLOW_NATS_URL`, with JetStream) and a
//! real Postgres (`SOURCEFLOW_PG_URL`); each test skips itself when either is missing. Every
//! test uses its own stream prefix and Postgres schema and deletes them at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::store::{ModelWrite, Store};
use sourceflow::RecordedEvent;
mod support;

use support::{env, Fixture};

use sourceflow_nats::{
    Delivery, DispatcherBuilder, EventHandler, NatsCommandDispatcher, NatsCommandWorker,
    NatsEventPublisher, NatsEventSubscriber, NatsViewFeeder,
};

// ---- The domain: a ledger that notices commands arriving out of order.

/// Counts steps and remembers the last one, so order and duplicates show in the state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "nt.Ledger")]
pub struct Ledger {
    /// The last step handled.
    pub last: u64,
    /// Steps handled.
    pub count: u64,
    /// Steps that did not follow the previous one.
    pub out_of_order: u64,
}

/// Step `n` of a ledger; steps are sent 1, 2, 3, ...
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "nt.Step")]
pub struct Step {
    /// The step number.
    pub n: u64,
}

/// A step was taken.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "nt.Stepped")]
pub struct Stepped {
    /// The step number.
    pub n: u64,
}

/// Owns ledgers.
#[derive(Default)]
pub struct LedgerSaga;

#[saga(entity = Ledger)]
impl LedgerSaga {
    #[handles]
    async fn step(&self, ledger: &mut Ledger, cmd: &Step, cx: &mut SagaContext) {
        if cmd.n != ledger.last + 1 {
            ledger.out_of_order += 1;
        }
        ledger.last = cmd.n;
        ledger.count += 1;
        cx.publish(Stepped { n: cmd.n });
    }

    #[handles]
    async fn strict_step(
        &self,
        ledger: &mut Ledger,
        cmd: &StrictStep,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        if cmd.n != ledger.last + 1 {
            return Err(DomainError::rejected(format!(
                "step {} does not follow step {}",
                cmd.n, ledger.last
            )));
        }
        ledger.last = cmd.n;
        ledger.count += 1;
        cx.publish(Stepped { n: cmd.n });
        Ok(())
    }
}

/// Step `n` of a ledger, refused unless it follows the last one.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "nt.StrictStep")]
pub struct StrictStep {
    /// The step number.
    pub n: u64,
}

/// Takes `ms` milliseconds, recording how many handlers run at once, overall and per probe.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "nt.Probe")]
pub struct Probe {
    /// The last step handled.
    pub last: u64,
    /// Steps that did not follow the previous one.
    pub out_of_order: u64,
}

/// Step `n` of a probe, holding its handler for `ms` milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "nt.Hold")]
pub struct Hold {
    /// The step number.
    pub n: u64,
    /// How long the handler takes.
    pub ms: u64,
}

/// Handlers of `Hold` running now, the most seen at once, and how often one started while
/// another of the same probe was running.
static HOLDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MOST_HOLDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PROBES_BUSY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static SAME_PROBE_OVERLAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Owns probes.
#[derive(Default)]
pub struct ProbeSaga;

#[saga(entity = Probe)]
impl ProbeSaga {
    #[handles]
    async fn hold(&self, probe: &mut Probe, cmd: &Hold, cx: &mut SagaContext) {
        use std::sync::atomic::Ordering::SeqCst;
        let id = cx.entity_id().to_string();
        {
            let mut busy = PROBES_BUSY.lock().unwrap_or_else(|e| e.into_inner());
            if busy.contains(&id) {
                SAME_PROBE_OVERLAPS.fetch_add(1, SeqCst);
            }
            busy.push(id.clone());
        }
        let now = HOLDING.fetch_add(1, SeqCst) + 1;
        MOST_HOLDING.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(cmd.ms)).await;
        HOLDING.fetch_sub(1, SeqCst);
        {
            let mut busy = PROBES_BUSY.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = busy.iter().position(|b| *b == id) {
                busy.remove(i);
            }
        }
        if cmd.n != probe.last + 1 {
            probe.out_of_order += 1;
        }
        probe.last = cmd.n;
    }
}

// ---- Environment: `support` (the servers, a fresh schema and topology per test).

impl Fixture {
    async fn worker_flow(&self) -> SourceFlow {
        SourceFlow::builder()
            .shared_store(self.store.clone())
            .build()
            .await
            .expect("the test domain is wired correctly")
    }

    /// A worker on a connection of its own, running on a task of its own.
    async fn spawn_worker(&self) -> (NatsCommandWorker, tokio::task::JoinHandle<()>) {
        let worker = NatsCommandWorker::new(
            self.client().await,
            self.worker_flow().await,
            self.topology.clone(),
        )
        .ack_wait(Duration::from_secs(2));
        let running = worker.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = running.run().await {
                eprintln!("worker stopped: {e}");
            }
        });
        (worker, task)
    }

    /// An API-side flow whose `Step` commands go over NATS.
    async fn sender(&self, delivery: Delivery) -> SourceFlow {
        self.sender_with_timeout(delivery, Duration::from_secs(30))
            .await
    }

    /// An API-side flow whose `Step` commands go over NATS, waiting up to `timeout` for each
    /// reply.
    async fn sender_with_timeout(&self, delivery: Delivery, timeout: Duration) -> SourceFlow {
        self.sender_routing(|routes| routes.route_with::<Step>(delivery), timeout)
            .await
    }

    /// An API-side flow whose commands `routes` names go over NATS, waiting up to `timeout`
    /// for each reply.
    async fn sender_routing(
        &self,
        routes: impl FnOnce(DispatcherBuilder) -> DispatcherBuilder,
        timeout: Duration,
    ) -> SourceFlow {
        let builder = NatsCommandDispatcher::builder(self.client().await, self.topology.clone());
        let dispatcher = routes(builder)
            .timeout(timeout)
            .build()
            .await
            .expect("dispatcher");
        SourceFlow::builder()
            .store(MemoryStore::new())
            .dispatcher(dispatcher)
            .build()
            .await
            .expect("sender flow")
    }

    async fn ledgers(&self, streams: usize) -> Vec<Ledger> {
        let flow = self.worker_flow().await;
        let mut ledgers = Vec::new();
        for s in 0..streams {
            ledgers.push(
                flow.replay::<Ledger>(format!("ledger-{s}"))
                    .await
                    .expect("replay"),
            );
        }
        ledgers
    }
}

const STREAMS: usize = 50;
const STEPS: u64 = 40;

/// What a single process makes of the same commands.
async fn single_process_ledgers() -> Vec<Ledger> {
    let flow = SourceFlow::builder()
        .store(MemoryStore::new())
        .build()
        .await
        .expect("local flow");
    for s in 0..STREAMS {
        for n in 1..=STEPS {
            flow.send(format!("ledger-{s}"), Step { n })
                .await
                .expect("local send");
        }
    }
    let mut ledgers = Vec::new();
    for s in 0..STREAMS {
        ledgers.push(
            flow.replay::<Ledger>(format!("ledger-{s}"))
                .await
                .expect("replay"),
        );
    }
    ledgers
}

async fn assert_every_stream_complete(fixture: &Fixture) {
    let expected = single_process_ledgers().await;
    let ledgers = fixture.ledgers(STREAMS).await;
    for (s, ledger) in ledgers.iter().enumerate() {
        assert_eq!(
            ledger,
            &Ledger {
                last: STEPS,
                count: STEPS,
                out_of_order: 0
            },
            "ledger-{s}"
        );
        let stream = StreamId::of::<Ledger>(format!("ledger-{s}"));
        let logged = fixture
            .store
            .last_sequence(&stream)
            .await
            .expect("last sequence");
        assert_eq!(
            logged.0, STEPS,
            "ledger-{s}: every command logged exactly once"
        );
    }
    assert_eq!(ledgers, expected, "same states as a single-process run");
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

// ---- Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn two_workers_handle_every_command_once_in_stream_order() {
    let env = env("two_workers_handle_every_command_once_in_stream_order");
    let fixture = Fixture::new(env, 16).await;
    let (first, first_task) = fixture.spawn_worker().await;
    let (second, second_task) = fixture.spawn_worker().await;
    let sender = fixture.sender(Delivery::Reply).await;
    wait_for(
        "the workers to share the partitions",
        Duration::from_secs(60),
        || first.partitions().len() == 8 && second.partitions().len() == 8,
    )
    .await;

    // 50 streams in parallel, each sending its steps in order and waiting for every receipt.
    let start = Instant::now();
    let per_stream = (0..STREAMS).map(|s| {
        let sender = sender.clone();
        async move {
            let mut latencies = Vec::new();
            for n in 1..=STEPS {
                let sent = Instant::now();
                let receipt = sender
                    .send(format!("ledger-{s}"), Step { n })
                    .await
                    .expect("send");
                latencies.push(sent.elapsed());
                assert_eq!(receipt.sequence.0, n, "ledger-{s} step {n}");
                assert_eq!(receipt.events.len(), 1);
                assert!(!receipt.duplicate);
            }
            latencies
        }
    });
    let mut latencies: Vec<Duration> = join_all(per_stream).await.into_iter().flatten().collect();
    let elapsed = start.elapsed();
    latencies.sort();
    let total = latencies.len();
    eprintln!(
        "NATS request/reply: {total} commands, 50 streams, 2 workers, 16 partitions: {:.0} commands/s, p50 {:.2} ms, p99 {:.2} ms",
        total as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    assert_eq!(first.handled() + second.handled(), 2_000);
    assert!(
        first.handled() > 0 && second.handled() > 0,
        "both workers took part"
    );
    assert_eq!(first.poisoned() + second.poisoned(), 0);

    assert_every_stream_complete(&fixture).await;

    // One caller alone: the round trip without queueing behind other streams.
    let mut alone = Vec::new();
    for n in 1..=200 {
        let sent = Instant::now();
        sender.send("ledger-alone", Step { n }).await.expect("send");
        alone.push(sent.elapsed());
    }
    alone.sort();
    eprintln!(
        "NATS request/reply, one caller: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&alone, 0.50).as_secs_f64() * 1e3,
        percentile(&alone, 0.99).as_secs_f64() * 1e3,
    );
    // The same caller in the worker's process, without NATS: what the transport adds.
    let local = fixture.worker_flow().await;
    let mut direct = Vec::new();
    for n in 1..=200 {
        let sent = Instant::now();
        local.send("ledger-direct", Step { n }).await.expect("send");
        direct.push(sent.elapsed());
    }
    direct.sort();
    eprintln!(
        "in-process send on the worker's flow, one caller: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&direct, 0.50).as_secs_f64() * 1e3,
        percentile(&direct, 0.99).as_secs_f64() * 1e3,
    );
    first_task.abort();
    second_task.abort();
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn one_worker_runs_several_entities_at_once_and_each_entity_in_order() {
    let env = env("one_worker_runs_several_entities_at_once_and_each_entity_in_order");
    // One partition, one worker: whatever runs at once runs in one partition of one worker.
    let fixture = Fixture::new(env, 1).await;
    let (worker, task) = fixture.spawn_worker().await;
    let dispatcher =
        NatsCommandDispatcher::builder(fixture.client().await, fixture.topology.clone())
            .route_with::<Hold>(Delivery::Enqueue)
            .build()
            .await
            .expect("dispatcher");
    let sender = SourceFlow::builder()
        .store(MemoryStore::new())
        .dispatcher(dispatcher)
        .build()
        .await
        .expect("sender flow");
    // Four steps of each of eight probes, queued at once, interleaved.
    for n in 1..=4 {
        for p in 0..8 {
            sender
                .send(format!("probe-{p}"), Hold { n, ms: 50 })
                .await
                .expect("enqueue");
        }
    }
    wait_for("32 commands handled", Duration::from_secs(60), || {
        worker.handled() >= 32
    })
    .await;
    let flow = fixture.worker_flow().await;
    let mut probes = Vec::new();
    for p in 0..8 {
        probes.push(
            flow.replay::<Probe>(format!("probe-{p}"))
                .await
                .expect("replay"),
        );
    }
    task.abort();
    fixture.finish().await;
    use std::sync::atomic::Ordering::SeqCst;
    assert!(
        MOST_HOLDING.load(SeqCst) > 1,
        "commands of different probes ran side by side"
    );
    assert_eq!(
        SAME_PROBE_OVERLAPS.load(SeqCst),
        0,
        "no probe ran two commands at once"
    );
    for (p, probe) in probes.iter().enumerate() {
        assert_eq!(
            probe,
            &Probe {
                last: 4,
                out_of_order: 0
            },
            "probe-{p}: every step once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_refusal_on_a_stale_cached_entity_is_checked_against_the_store() {
    let env = env("a_refusal_on_a_stale_cached_entity_is_checked_against_the_store");
    let fixture = Fixture::new(env, 1).await;
    let (worker, task) = fixture.spawn_worker().await;
    let sender = fixture
        .sender_routing(
            |routes| routes.route::<StrictStep>(),
            Duration::from_secs(30),
        )
        .await;
    // The worker handles step 1 and caches the ledger at step 1.
    sender
        .send("ledger-0", StrictStep { n: 1 })
        .await
        .expect("step 1");
    // Another process moves the ledger on behind the worker's back.
    let elsewhere = fixture.worker_flow().await;
    for n in 2..=3 {
        elsewhere
            .send("ledger-0", StrictStep { n })
            .await
            .expect("step elsewhere");
    }
    // On its cached state step 4 does not follow; on the stored one it does.
    let receipt = sender
        .send("ledger-0", StrictStep { n: 4 })
        .await
        .expect("step 4 follows the stored state");
    assert_eq!(receipt.sequence.0, 4);
    // A step that follows neither is still refused.
    let refused = sender.send("ledger-0", StrictStep { n: 9 }).await;
    let failed = worker.failed();
    task.abort();
    fixture.finish().await;
    assert!(matches!(refused, Err(Error::Rejected(_))), "{refused:?}");
    assert_eq!(failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_view_feeder_applies_waiting_events_in_batches_exactly_once() {
    let env = env("a_view_feeder_applies_waiting_events_in_batches_exactly_once");
    let fixture = Fixture::new(env, 2).await;
    let origin = fixture.worker_flow().await;
    for s in 0..5 {
        for n in 1..=20 {
            origin
                .send(format!("ledger-{s}"), Step { n })
                .await
                .expect("send");
        }
    }
    let publisher = NatsEventPublisher::new(
        fixture.client().await,
        origin.clone(),
        fixture.topology.clone(),
    );
    let running = publisher.clone();
    let publishing = tokio::spawn(async move { running.run().await });
    wait_for("100 events published", Duration::from_secs(30), || {
        publisher.published() >= 100
    })
    .await;

    // The read side starts behind: 100 events wait on the stream.
    let dir = tempfile::tempdir().expect("temporary directory");
    let read_store: Arc<dyn Store> = Arc::new(
        sourceflow_sqlx::SqliteStore::open(dir.path().join("read.db"))
            .await
            .expect("open the read-side store"),
    );
    let read_side = SourceFlow::builder()
        .shared_store(read_store.clone())
        .without_discovery()
        .view(SeenStepsView {
            _read_side_only: (),
        })
        .build()
        .await
        .expect("read side");
    let feeder = NatsViewFeeder::new(
        fixture.client().await,
        read_side.clone(),
        fixture.topology.clone(),
        "batched-steps",
    )
    .batch(32);
    let running = feeder.clone();
    let feeding = tokio::spawn(async move { running.run().await });
    wait_for("100 events delivered", Duration::from_secs(30), || {
        feeder.delivered() >= 100
    })
    .await;
    let mut seen = Vec::new();
    for s in 0..5 {
        let steps: SeenSteps = read_side
            .view_model(format!("ledger-{s}"))
            .await
            .expect("read")
            .expect("present");
        seen.push(steps.steps);
    }
    let (delivered, batches) = (feeder.delivered(), feeder.batches());
    eprintln!("view feeder: {delivered} events in {batches} batches");
    feeding.abort();
    publishing.abort();
    fixture.finish().await;
    assert_eq!(delivered, 100);
    assert!(
        batches < delivered,
        "waiting events were applied together ({batches} batches for {delivered} events)"
    );
    for (s, steps) in seen.iter().enumerate() {
        assert_eq!(
            steps,
            &(1..=20).collect::<Vec<_>>(),
            "ledger-{s}: every event once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_worker_takes_its_partitions_again_after_the_server_lost_the_leases() {
    let env = env("a_worker_takes_its_partitions_again_after_the_server_lost_the_leases");
    let fixture = Fixture::new(env, 2).await;
    let (worker, task) = fixture.spawn_worker().await;
    let sender = fixture.sender(Delivery::Reply).await;
    for n in 1..=3 {
        sender.send("ledger-0", Step { n }).await.expect("before");
    }
    // Leases live in memory: a restarted server has none, and no lease stream either.
    let jetstream = jetstream::new(fixture.client().await);
    jetstream
        .delete_stream(fixture.topology.lease_stream())
        .await
        .expect("delete the lease stream");
    // Past the lease TTL (6 s) the worker no longer counts on its old leases.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for n in 4..=6 {
        let receipt = sender
            .send("ledger-0", Step { n })
            .await
            .expect("after the leases were lost");
        assert_eq!(receipt.sequence.0, n);
    }
    let mut leases = jetstream
        .get_stream(fixture.topology.lease_stream())
        .await
        .expect("the lease stream exists again");
    let held = leases.info().await.expect("info").state.messages;
    let partitions = worker.partitions();
    task.abort();
    fixture.finish().await;
    assert_eq!(partitions, vec![0, 1]);
    assert_eq!(held, 3, "two partition leases and the worker's membership");
}

/// How long any one command may wait for its reply under load. Generous: a command is handled
/// in milliseconds, while a partition that stops pulling stands still for 5 s (a pull request
/// the server dropped without a word, see `pull.rs`) or for its `ack_wait`.
const REPLY_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn under_concurrent_load_every_command_is_answered_within_seconds() {
    let env = env("under_concurrent_load_every_command_is_answered_within_seconds");
    // One worker: no other worker's pull request can hide a partition that stopped pulling.
    let fixture = Fixture::new(env, 8).await;
    let (worker, task) = fixture.spawn_worker().await;
    let sender = fixture
        .sender_with_timeout(Delivery::Reply, REPLY_BOUND)
        .await;

    // 32 senders, one stream each, each sending its steps back to back.
    const SENDERS: usize = 32;
    const PER_SENDER: u64 = 100;
    let per_sender = (0..SENDERS).map(|s| {
        let sender = sender.clone();
        async move {
            let mut slow = Vec::new();
            for n in 1..=PER_SENDER {
                let sent = Instant::now();
                let result = sender.send(format!("ledger-{s}"), Step { n }).await;
                let waited = sent.elapsed();
                match result {
                    Ok(receipt) if waited <= REPLY_BOUND => {
                        assert_eq!(receipt.sequence.0, n, "ledger-{s} step {n}");
                    }
                    Ok(_) => slow.push(format!("ledger-{s} step {n}: answered after {waited:?}")),
                    Err(e) => {
                        slow.push(format!("ledger-{s} step {n}: {e} (after {waited:?})"));
                        // The stream's next steps would only queue behind this one.
                        break;
                    }
                }
            }
            slow
        }
    });
    let slow: Vec<String> = join_all(per_sender).await.into_iter().flatten().collect();
    let handled = worker.handled();
    task.abort();
    fixture.finish().await;
    assert!(
        slow.is_empty(),
        "{} of {} commands waited longer than {REPLY_BOUND:?} for their reply:\n{}",
        slow.len(),
        SENDERS as u64 * PER_SENDER,
        slow.join("\n")
    );
    assert_eq!(handled, SENDERS as u64 * PER_SENDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_killed_worker_loses_nothing_and_applies_nothing_twice() {
    let env = env("a_killed_worker_loses_nothing_and_applies_nothing_twice");
    let fixture = Fixture::new(env, 8).await;
    let (doomed, doomed_task) = fixture.spawn_worker().await;
    let (survivor, survivor_task) = fixture.spawn_worker().await;
    let sender = fixture.sender(Delivery::Enqueue).await;

    // Enqueue everything (per stream in step order); the workers drain it meanwhile.
    let enqueue = (0..STREAMS).map(|s| {
        let sender = sender.clone();
        async move {
            for n in 1..=STEPS {
                sender
                    .send(format!("ledger-{s}"), Step { n })
                    .await
                    .expect("enqueue");
            }
        }
    });
    let enqueued = tokio::spawn(join_all(enqueue));

    wait_for(
        "the doomed worker to get going",
        Duration::from_secs(300),
        || doomed.handled() >= 200,
    )
    .await;
    // Killed mid-run: possibly inside a handler or between commit and ack. Aborting only
    // requests cancellation: a partition task already running finishes its current step, so
    // the doomed worker's count is read once it has stopped moving.
    doomed_task.abort();
    let _ = doomed_task.await;
    let mut killed_at = doomed.handled();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = doomed.handled();
        if now == killed_at {
            break;
        }
        killed_at = now;
    }
    enqueued.await.expect("enqueued");

    wait_for("the survivor to finish", Duration::from_secs(600), || {
        killed_at + survivor.handled() >= 2_000
    })
    .await;
    // Give a redelivered duplicate, if any, time to show up in the counters.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "killed worker handled {killed_at}, survivor {} (duplicates answered from the store count too)",
        survivor.handled()
    );
    assert!(survivor.handled() >= 2_000 - killed_at);
    assert_every_stream_complete(&fixture).await;
    survivor_task.abort();
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn poison_messages_are_terminated_and_the_partition_keeps_flowing() {
    let env = env("poison_messages_are_terminated_and_the_partition_keeps_flowing");
    // One partition: the poison sits in front of the good commands.
    let fixture = Fixture::new(env, 1).await;
    let (worker, task) = fixture.spawn_worker().await;
    let sender = fixture.sender(Delivery::Reply).await;
    sender
        .send("ledger-0", Step { n: 1 })
        .await
        .expect("first step");

    let client = fixture.client().await;
    let jetstream = jetstream::new(client.clone());
    let subject = format!("{}.cmd.0", fixture.topology.prefix());
    let good = |name: &str| {
        let mut headers = async_nats::HeaderMap::new();
        for (key, value) in [
            ("Sf-Name", name.to_owned()),
            ("Sf-Version", "1".to_owned()),
            ("Sf-Message-Id", uuid::Uuid::now_v7().to_string()),
            ("Sf-Correlation-Id", uuid::Uuid::now_v7().to_string()),
            ("Sf-Stream-Type", "nt.Ledger".to_owned()),
            ("Sf-Stream-Id", "ledger-0".to_owned()),
            ("Sf-Timestamp", chrono::Utc::now().to_rfc3339()),
        ] {
            headers.insert(key, value.as_str());
        }
        headers
    };
    let poison = [
        (good("nt.NoSuchCommand"), br#"{"n":2}"#.to_vec()),
        (good("nt.Step"), b"{not json".to_vec()),
        (async_nats::HeaderMap::new(), br#"{"n":2}"#.to_vec()),
    ];
    for (headers, body) in poison {
        jetstream
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    // The partition is not stuck behind them.
    for n in 2..=5 {
        let receipt = sender
            .send("ledger-0", Step { n })
            .await
            .expect("after the poison");
        assert_eq!(receipt.sequence.0, n);
    }
    assert_eq!(
        worker.poisoned(),
        3,
        "every poison message terminated and counted"
    );
    assert_eq!(worker.handled(), 5);
    let ledger = fixture
        .worker_flow()
        .await
        .replay::<Ledger>("ledger-0")
        .await
        .expect("replay");
    assert_eq!(
        ledger,
        Ledger {
            last: 5,
            count: 5,
            out_of_order: 0
        }
    );

    // Terminated, not waiting for redelivery.
    let mut consumer: jetstream::consumer::PullConsumer = jetstream
        .get_consumer_from_stream(
            format!("{}_cmd_p0", fixture.topology.prefix()),
            fixture.topology.command_stream(),
        )
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
    task.abort();
    fixture.finish().await;
}

/// Counts `Stepped` events per ledger in a view model, committed with the position.
struct StepCounter {
    store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl EventHandler for StepCounter {
    async fn apply(&self, event: &RecordedEvent) -> Result<Vec<ModelWrite>, Error> {
        let stepped: Stepped = event.decode()?;
        let id = event.envelope.stream.id.clone();
        let seen: Vec<u64> = match self.store.get_model("nt.RemoteSteps", &id).await? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut seen = seen;
        seen.push(stepped.n);
        Ok(vec![ModelWrite {
            model_type: "nt.RemoteSteps".into(),
            id,
            state: serde_json::to_vec(&seen).ok(),
        }])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn published_events_reach_a_remote_subscriber_exactly_once() {
    let env = env("published_events_reach_a_remote_subscriber_exactly_once");
    let fixture = Fixture::new(env, 4).await;
    let flow = fixture.worker_flow().await;
    for s in 0..5 {
        for n in 1..=10 {
            flow.send(format!("ledger-{s}"), Step { n })
                .await
                .expect("send");
        }
    }
    let publisher = NatsEventPublisher::new(
        fixture.client().await,
        flow.clone(),
        fixture.topology.clone(),
    )
    .checkpoint_every(7);
    let running = publisher.clone();
    let publishing = tokio::spawn(async move { running.run().await });
    let subscriber = Arc::new(NatsEventSubscriber::new(
        fixture.client().await,
        fixture.store.clone(),
        fixture.topology.clone(),
        "remote-steps",
        StepCounter {
            store: fixture.store.clone(),
        },
    ));
    let running = subscriber.clone();
    let subscribing = tokio::spawn(async move { running.run().await });
    wait_for("50 events applied", Duration::from_secs(30), || {
        subscriber.applied() >= 50
    })
    .await;

    // A publisher that lost its position re-publishes everything: JetStream drops the
    // repeats, and the subscriber would skip any that got through.
    publishing.abort();
    fixture
        .store
        .set_position("nats-publisher", Position::START)
        .await
        .expect("reset");
    let again = NatsEventPublisher::new(
        fixture.client().await,
        flow.clone(),
        fixture.topology.clone(),
    );
    let running = again.clone();
    let republishing = tokio::spawn(async move { running.run().await });
    wait_for("re-publish", Duration::from_secs(30), || {
        again.published() >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let jetstream = jetstream::new(fixture.client().await);
    let mut stream = jetstream
        .get_stream(fixture.topology.event_stream())
        .await
        .expect("stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        50,
        "repeats deduplicated"
    );
    assert_eq!(subscriber.applied(), 50);
    let mut models = HashMap::new();
    for s in 0..5 {
        let id = EntityId::from(format!("ledger-{s}"));
        let bytes = fixture
            .store
            .get_model("nt.RemoteSteps", &id)
            .await
            .expect("model")
            .expect("present");
        let seen: Vec<u64> = serde_json::from_slice(&bytes).expect("json");
        models.insert(s, seen);
    }
    for (s, seen) in models {
        assert_eq!(
            seen,
            (1..=10).collect::<Vec<_>>(),
            "ledger-{s}: every event once, in order"
        );
    }
    republishing.abort();
    subscribing.abort();
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_publisher_with_acks_in_flight_keeps_log_order_when_a_publish_fails() {
    let env = env("a_publisher_with_acks_in_flight_keeps_log_order_when_a_publish_fails");
    let fixture = Fixture::new(env, 2).await;
    let flow = fixture.worker_flow().await;
    let publisher = NatsEventPublisher::new(
        fixture.client().await,
        flow.clone(),
        fixture.topology.clone(),
    )
    .window(16);
    let running = publisher.clone();
    let publishing = tokio::spawn(async move { running.run().await });

    // Foreign messages land on the event stream meanwhile: each one that lands between two
    // events breaks the chain, and the publishes in flight behind it fail.
    let client = fixture.client().await;
    let subject = fixture.topology.event_subject("nt.Ledger");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interfering = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .publish(subject.clone(), "foreign".into())
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            client.flush().await.expect("flush");
        })
    };
    let sending = (0..5).map(|s| {
        let flow = flow.clone();
        async move {
            for n in 1..=40 {
                flow.send(format!("ledger-{s}"), Step { n })
                    .await
                    .expect("send");
            }
        }
    });
    join_all(sending).await;
    wait_for("200 events published", Duration::from_secs(30), || {
        publisher.published() >= 200
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    interfering.await.expect("interfering task");

    // JetStream holds every event once, in log order.
    let jetstream = jetstream::new(fixture.client().await);
    let mut stream = jetstream
        .get_stream(fixture.topology.event_stream())
        .await
        .expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut positions = Vec::new();
    let mut foreign_between = 0;
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        match message.headers.get("Sf-Position") {
            Some(position) => positions.push(position.as_str().parse::<u64>().expect("number")),
            None if !positions.is_empty() && positions.len() < 200 => foreign_between += 1,
            None => {}
        }
    }
    let logged: Vec<u64> = fixture
        .store
        .read_all(Position::START, 1_000)
        .await
        .expect("read the log")
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_eq!(logged.len(), 200);
    assert_eq!(positions, logged, "every event once, in log order");
    assert!(
        foreign_between > 0,
        "no foreign message landed between two events: the chain was never broken"
    );
    publishing.abort();
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_reply_that_comes_after_its_send_gave_up_reaches_no_other_send() {
    let env = env("a_reply_that_comes_after_its_send_gave_up_reaches_no_other_send");
    let fixture = Fixture::new(env, 1).await;
    let (_worker, task) = fixture.spawn_worker().await;
    let sender = fixture
        .sender_routing(|routes| routes.route::<Hold>(), Duration::from_millis(300))
        .await;
    // The first reply comes about 500 ms after its send gave up, while sends of another probe
    // follow each other, each waiting for its own reply.
    let gave_up = sender.send("slow", Hold { n: 1, ms: 800 }).await;
    assert!(
        matches!(&gave_up, Err(sourceflow::Error::Store(e)) if e.is_transient()),
        "{gave_up:?}"
    );
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1_000) {
        n += 1;
        let receipt = sender
            .send("quick", Hold { n, ms: 0 })
            .await
            .expect("a quick send's own reply");
        assert_eq!(
            (receipt.stream.id.as_str(), receipt.sequence.0),
            ("quick", n),
            "{receipt:?}"
        );
    }
    assert!(n > 1);
    task.abort();
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_resent_message_id_is_answered_with_the_original_receipt() {
    let env = env("a_resent_message_id_is_answered_with_the_original_receipt");
    let fixture = Fixture::new(env, 2).await;
    let (worker, task) = fixture.spawn_worker().await;
    let sender = fixture.sender(Delivery::Reply).await;
    let id = uuid::Uuid::now_v7();
    let options = || sourceflow::SendOptions::new().message_id(id);
    let first = sender
        .send_with("ledger-0", Step { n: 1 }, options())
        .await
        .expect("first");
    let again = sender
        .send_with("ledger-0", Step { n: 1 }, options())
        .await
        .expect("again");
    assert!(!first.duplicate);
    assert!(again.duplicate, "answered from the store");
    assert_eq!(
        (again.message_id, again.sequence),
        (first.message_id, first.sequence)
    );
    let ledger = fixture
        .worker_flow()
        .await
        .replay::<Ledger>("ledger-0")
        .await
        .expect("replay");
    assert_eq!(ledger.count, 1, "ran once");
    assert_eq!(worker.handled(), 2);
    task.abort();
    fixture.finish().await;
}

/// The steps a remote read side has seen for one ledger, in the order it applied them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "nt.SeenSteps")]
pub struct SeenSteps {
    /// Step numbers, in application order.
    pub steps: Vec<u64>,
}

/// A plain `#[view]` in the read-side process. Not `Default`: only the read side registers it.
pub struct SeenStepsView {
    _read_side_only: (),
}

#[view(model = SeenSteps)]
impl SeenStepsView {
    #[projects_on]
    async fn stepped(&self, seen: &mut SeenSteps, e: &Stepped) {
        seen.steps.push(e.n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn published_events_feed_remote_views_exactly_once() {
    let env = env("published_events_feed_remote_views_exactly_once");
    let fixture = Fixture::new(env, 2).await;
    let origin = fixture.worker_flow().await;
    let publisher = NatsEventPublisher::new(
        fixture.client().await,
        origin.clone(),
        fixture.topology.clone(),
    );
    let running = publisher.clone();
    let publishing = tokio::spawn(async move { running.run().await });

    // The read side: a store of its own, the view, and two feeders sharing one durable
    // consumer (two processes of one read side).
    let dir = tempfile::tempdir().expect("temporary directory");
    let read_store: Arc<dyn Store> = Arc::new(
        sourceflow_sqlx::SqliteStore::open(dir.path().join("read.db"))
            .await
            .expect("open the read-side store"),
    );
    let read_side = || async {
        SourceFlow::builder()
            .shared_store(read_store.clone())
            .without_discovery()
            .view(SeenStepsView {
                _read_side_only: (),
            })
            .build()
            .await
            .expect("read side")
    };
    let mut feeders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let feeder = NatsViewFeeder::new(
            fixture.client().await,
            read_side().await,
            fixture.topology.clone(),
            "seen-steps",
        );
        let running = feeder.clone();
        tasks.push(tokio::spawn(async move { running.run().await }));
        feeders.push(feeder);
    }

    for s in 0..5 {
        for n in 1..=10 {
            origin
                .send(format!("ledger-{s}"), Step { n })
                .await
                .expect("send");
        }
    }
    // A poison event on the wire: terminated and counted, the rest keeps flowing.
    let client = fixture.client().await;
    client
        .publish(fixture.topology.event_subject("nt.Ledger"), "{}".into())
        .await
        .expect("publish poison");
    client.flush().await.expect("flush");
    for n in 11..=12 {
        origin.send("ledger-0", Step { n }).await.expect("send");
    }

    let reader = read_side().await;
    let done = || async {
        let seen: Option<SeenSteps> = reader.view_model("ledger-0").await.expect("read");
        seen.is_some_and(|s| s.steps.len() >= 12)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "the read side never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        feeders.iter().map(NatsViewFeeder::poisoned).sum::<u64>(),
        1,
        "the poison event was terminated once"
    );
    for s in 0..5 {
        let seen: SeenSteps = reader
            .view_model(format!("ledger-{s}"))
            .await
            .expect("read")
            .expect("present");
        let last = if s == 0 { 12 } else { 10 };
        assert_eq!(
            seen.steps,
            (1..=last).collect::<Vec<_>>(),
            "ledger-{s}: every event once, in order"
        );
    }
    for task in tasks {
        task.abort();
    }
    publishing.abort();
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn scheduled_commands_fire_through_the_transport_onto_the_workers() {
    let env = env("scheduled_commands_fire_through_the_transport_onto_the_workers");
    let fixture = Fixture::new(env, 4).await;
    // A worker whose process runs no scheduler of its own: every fired command reaches it
    // over NATS.
    let worker_flow = SourceFlow::builder()
        .shared_store(fixture.store.clone())
        .without_scheduler()
        .build()
        .await
        .expect("worker flow");
    let worker = NatsCommandWorker::new(
        fixture.client().await,
        worker_flow,
        fixture.topology.clone(),
    )
    .ack_wait(Duration::from_secs(2));
    let running = worker.clone();
    let worker_task = tokio::spawn(async move {
        if let Err(e) = running.run().await {
            eprintln!("worker stopped: {e}");
        }
    });
    wait_for(
        "the worker to take the partitions",
        Duration::from_secs(60),
        || worker.partitions().len() == 4,
    )
    .await;
    // The scheduling process: the shared store keeps its schedules, and its `Step` commands
    // (the fired ones included) go over NATS.
    let dispatcher =
        NatsCommandDispatcher::builder(fixture.client().await, fixture.topology.clone())
            .route_with::<Step>(Delivery::Reply)
            .timeout(Duration::from_secs(30))
            .build()
            .await
            .expect("dispatcher");
    let scheduler = SourceFlow::builder()
        .shared_store(fixture.store.clone())
        .dispatcher(dispatcher)
        .without_scheduler()
        .build()
        .await
        .expect("scheduling flow");
    let now = chrono::Utc::now();
    for n in (1..=20u64).rev() {
        let due = now - chrono::Duration::milliseconds(100 - n as i64);
        scheduler
            .schedule(due, "ledger-scheduled", Step { n })
            .await
            .expect("schedule");
    }
    assert_eq!(scheduler.fire_due().await.expect("fire"), 20);
    assert_eq!(
        worker.handled(),
        20,
        "every fired command ran on the worker"
    );
    let ledger: Ledger = fixture
        .worker_flow()
        .await
        .replay("ledger-scheduled")
        .await
        .expect("replay");
    assert_eq!(
        (ledger.count, ledger.last, ledger.out_of_order),
        (20, 20, 0),
        "each once, in due order"
    );
    assert_eq!(scheduler.fire_due().await.expect("fire"), 0);
    worker_task.abort();
    fixture.finish().await;
}
