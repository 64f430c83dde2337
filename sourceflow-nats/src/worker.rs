//! Handling commands from JetStream: [`NatsCommandWorker`] leases command partitions and
//! handles each one's commands, several at a time, one at a time per entity stream.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, HeaderMap};
use futures_util::future::join_all;
use sourceflow::{Envelope, Error, SourceFlow, StreamId};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, debug_span, error, info, warn, Instrument};

use crate::error::NatsError;
use crate::lease::{await_handoff, Lease, Leases};
use crate::pull::{Puller, LEASED_PULL_EXPIRES};
use crate::trace::{self, TraceContext};
use crate::wire::{self, WireError, WireReceipt};
use crate::Topology;

/// Counters of one worker.
#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    poison: AtomicU64,
    partitions: Mutex<BTreeSet<u32>>,
}

/// Handles commands from JetStream with a local [`SourceFlow`] (over the shared store).
///
/// Cheap to clone; clones share counters. Run several, in one process or many: each leases
/// a fair share of the partitions and handles up to [`window`](Self::window) commands of each
/// at once (see the [crate docs](crate#design)).
#[derive(Clone)]
pub struct NatsCommandWorker {
    client: Client,
    flow: SourceFlow,
    topology: Topology,
    ack_wait: Duration,
    window: usize,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for NatsCommandWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCommandWorker")
            .field("topology", &self.topology)
            .field("ack_wait", &self.ack_wait)
            .field("window", &self.window)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// How one message ended, for the ack.
enum Outcome {
    /// Answered (receipt or final error): acknowledged.
    Done,
    /// Unreadable: terminated.
    Poison,
    /// The partition's lease was lost while the store was failing: left unacknowledged, for
    /// JetStream to redeliver to the next owner.
    Abandoned,
}

impl NatsCommandWorker {
    /// A worker handling `topology`'s commands with `flow`.
    ///
    /// The flow may keep its entity cache (the default): a partition's commands go to the
    /// worker that leases it, so the cached state is the current one unless the partition
    /// moved meanwhile. A stale state costs a conflict and a re-run when the handler accepts
    /// the command, and a check of the stream head when it refuses it (the refusal is
    /// reported only if the state was current).
    pub fn new(client: Client, flow: SourceFlow, topology: Topology) -> Self {
        Self {
            client,
            flow,
            topology,
            ack_wait: Duration::from_secs(30),
            window: 16,
            counters: Arc::default(),
        }
    }

    /// How long JetStream waits for an ack before redelivering a command (default 30 s). It
    /// bounds how long the commands a dead worker held stall: after its partition lease ages
    /// out, the next owner waits up to this long for them. Every worker of a topology should
    /// agree; the consumers are created (or updated) with the last value seen.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many commands of one partition may be in flight at once (default 16, at least 1):
    /// JetStream's `max_ack_pending` for the partition's consumer. Commands of one entity
    /// stream still run one at a time, in order. Every worker of a topology should agree.
    pub fn window(mut self, commands: usize) -> Self {
        self.window = commands.max(1);
        self
    }

    /// Commands handled (receipts, duplicates included).
    pub fn handled(&self) -> u64 {
        self.counters.handled.load(Ordering::Relaxed)
    }

    /// Commands the handler refused or failed (errors replied to the sender, not retried).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Poison messages terminated: unknown wire name, undecodable payload or envelope.
    pub fn poisoned(&self) -> u64 {
        self.counters.poison.load(Ordering::Relaxed)
    }

    /// The partitions this worker leases now.
    pub fn partitions(&self) -> Vec<u32> {
        lock(&self.counters.partitions).iter().copied().collect()
    }

    /// Handles commands until the task is dropped or a consumer is deleted.
    ///
    /// Every `lease_ttl / 6` the worker renews its leases, counts the live workers of the
    /// topology and moves towards its fair share of the partitions: it takes free ones, and
    /// gives up extra ones once their commands in flight are answered. Dropped, it stops at
    /// once; its leases age out and its unanswered commands are redelivered after `ack_wait`.
    ///
    /// # Errors
    /// [`NatsError::Setup`] if the streams or consumers cannot be created;
    /// [`NatsError::Consume`] once a partition's consumer or the stream is deleted.
    pub async fn run(&self) -> Result<(), NatsError> {
        let jetstream = jetstream::new(self.client.clone());
        let stream = self.topology.ensure_command_stream(&jetstream).await?;
        let mut consumers = Vec::new();
        for partition in 0..self.topology.partitions {
            let name = self.topology.partition_consumer(partition);
            // Created, or updated to this worker's window and ack_wait.
            let consumer = crate::create_consumer(
                &stream,
                consumer::pull::Config {
                    durable_name: Some(name),
                    filter_subject: self.topology.partition_subject(partition),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: i64::try_from(self.window).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await?;
            consumers.push(consumer);
        }
        let leases = Leases::open(
            jetstream,
            &self.topology,
            LEASED_PULL_EXPIRES + Duration::from_secs(1),
        )
        .await?;
        let result = Coordinator {
            worker: self.clone(),
            member_key: format!("member.{}", leases.holder()),
            leases,
            consumers,
            owned: HashMap::new(),
            renewed: Arc::default(),
            runners: JoinSet::new(),
        }
        .run()
        .await;
        lock(&self.counters.partitions).clear();
        result
    }

    /// Runs one command in the trace its sender started (see [`crate::trace`]).
    async fn handle(
        &self,
        message: &jetstream::Message,
        envelope: Envelope,
        lease: &Lease,
    ) -> Outcome {
        let (context, parent) = trace::for_receiving(
            wire::read_trace(message.headers.as_ref()),
            envelope.correlation_id,
            trace::command_span_id(envelope.message_id),
        );
        if context.trace_id() != TraceContext::of_correlation(envelope.correlation_id) {
            // For this process's publisher: the command's events join the same trace.
            trace::remember(envelope.message_id, &context);
        }
        let span = debug_span!(
            "sourceflow.nats.command",
            command = %envelope.name,
            stream = %envelope.stream,
            trace_id = %context.trace_id_hex(),
            span_id = %context.span_id_hex(),
            parent_span_id = parent.as_deref(),
        );
        let handling = context.scope(self.handle_in_trace(message, envelope, lease));
        if span.is_disabled() {
            handling.await
        } else {
            handling.instrument(span).await
        }
    }

    /// Runs one command and answers its sender. A transient store fault is retried for as
    /// long as the partition stays leased.
    async fn handle_in_trace(
        &self,
        message: &jetstream::Message,
        envelope: Envelope,
        lease: &Lease,
    ) -> Outcome {
        let reply_to = message
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::REPLY_TO))
            .map(|v| v.as_str().to_owned());
        // The first delivery of a first send cannot be a duplicate: no duplicate lookup. A
        // redelivery, a resend with the same message id and a retry here are looked up.
        let first_delivery = message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(wire::FIRST_SEND).is_some())
            && message.info().is_ok_and(|info| info.delivered == 1);
        let mut retry = 0u32;
        loop {
            let payload = message.payload.to_vec();
            let result = if first_delivery && retry == 0 {
                self.flow
                    .dispatch_first_delivery(envelope.clone(), payload)
                    .await
            } else {
                self.flow.dispatch_local(envelope.clone(), payload).await
            };
            return match result {
                Ok(receipt) => {
                    self.counters.handled.fetch_add(1, Ordering::Relaxed);
                    self.reply(reply_to, Ok(WireReceipt::from_receipt(&receipt)))
                        .await;
                    Outcome::Done
                }
                Err(Error::Store(e)) if e.is_transient() => {
                    // The store may come back. The command stays at the head of its entity
                    // stream's queue (the stream's later commands wait behind it) for as long
                    // as this worker owns the partition.
                    if !lease.held() {
                        return Outcome::Abandoned;
                    }
                    retry += 1;
                    warn!(command = %envelope.name, stream = %envelope.stream, error = %e, retry, "store unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(100u64 << retry.min(4))).await;
                    continue;
                }
                Err(
                    e @ (Error::UnknownMessage { .. }
                    | Error::Decode { .. }
                    | Error::NoHandler { .. }),
                ) => {
                    self.poison(&message.subject, &e.to_string());
                    self.reply(reply_to, Err(WireError::from_error(&e))).await;
                    Outcome::Poison
                }
                Err(e) => {
                    // The handler's answer (rejected, invalid, conflict beyond the retry
                    // budget): final, reported to the sender, not retried.
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    debug!(command = %envelope.name, stream = %envelope.stream, error = %e, "command failed");
                    self.reply(reply_to, Err(WireError::from_error(&e))).await;
                    Outcome::Done
                }
            };
        }
    }

    fn poison(&self, subject: &str, reason: &str) {
        self.counters.poison.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sourceflow.nats.poison").increment(1);
        error!(subject, reason, "poison command terminated");
    }

    async fn reply(&self, reply_to: Option<String>, result: Result<WireReceipt, WireError>) {
        let Some(reply_to) = reply_to else { return };
        let mut headers = HeaderMap::new();
        let body = match &result {
            Ok(receipt) => {
                headers.insert(wire::STATUS, "ok");
                serde_json::to_vec(receipt)
            }
            Err(error) => {
                headers.insert(wire::STATUS, "error");
                serde_json::to_vec(error)
            }
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                error!(error = %e, "cannot encode a reply");
                return;
            }
        };
        // A lost reply is not a lost command: the sender times out and may resend it with the
        // same message id, which is answered as a duplicate with the original receipt.
        if let Err(e) = self
            .client
            .publish_with_headers(reply_to, headers, body.into())
            .await
        {
            warn!(error = %e, "cannot publish a reply");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A partition this worker leases, and how to tell its runner to give it up.
struct Owned {
    lease: Arc<Lease>,
    stop: watch::Sender<bool>,
}

/// One worker's leases: its membership, and the partitions it owns.
struct Coordinator {
    worker: NatsCommandWorker,
    leases: Leases,
    member_key: String,
    consumers: Vec<PullConsumer>,
    owned: HashMap<u32, Owned>,
    /// The partition leases the renewer keeps alive.
    renewed: Arc<Mutex<Vec<Arc<Lease>>>>,
    runners: JoinSet<(u32, Result<(), NatsError>)>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Coordinator {
    async fn run(mut self) -> Result<(), NatsError> {
        let member = self
            .leases
            .acquire(&self.member_key)
            .await?
            .ok_or_else(|| NatsError::Setup("the worker's membership key is taken".into()))?;
        // Renewals run on a task of their own, so that a slow rebalance never delays them.
        let _renewer = AbortOnDrop(tokio::spawn(renew(
            self.leases.clone(),
            member,
            self.renewed.clone(),
        )));
        let mut tick = tokio::time::interval(self.leases.renew_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.rebalance().await {
                        warn!(error = %e, "cannot rebalance the command partitions");
                    }
                }
                Some(joined) = self.runners.join_next() => {
                    let (partition, result) = joined.map_err(|e| NatsError::Setup(e.into()))?;
                    if let Some(owned) = self.owned.remove(&partition) {
                        lock(&self.renewed).retain(|lease| !Arc::ptr_eq(lease, &owned.lease));
                        // Given up with nothing in flight: free it now, for the next owner to
                        // start at once. (A lost lease is left to age out.)
                        if owned.lease.held() {
                            self.leases.release(&owned.lease).await;
                        }
                    }
                    lock(&self.worker.counters.partitions).remove(&partition);
                    result?;
                }
            }
        }
    }

    /// Moves towards `ceil(partitions / live workers)` partitions.
    async fn rebalance(&mut self) -> Result<(), NatsError> {
        let members = self.leases.held_keys("member.").await?;
        let live = members.len().max(1);
        let total = self.consumers.len();
        let share = total.div_ceil(live);
        let mut active: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, owned)| !*owned.stop.borrow())
            .map(|(partition, _)| *partition)
            .collect();
        active.sort_unstable();
        if active.len() > share {
            for partition in &active[share..] {
                info!(
                    partition,
                    share, live, "giving a partition up to another worker"
                );
                if let Some(owned) = self.owned.get(partition) {
                    owned.stop.send_replace(true);
                }
            }
            return Ok(());
        }
        let mut wanted = share - active.len();
        if wanted == 0 {
            return Ok(());
        }
        let held = self.leases.held_keys("part.").await?;
        // Workers start looking at different partitions, so that they rarely race.
        let mut ranked: Vec<&String> = members.iter().collect();
        ranked.sort_unstable();
        let rank = ranked
            .iter()
            .position(|m| **m == self.member_key)
            .unwrap_or(0);
        let start = rank * total / live;
        for i in 0..total {
            if wanted == 0 {
                break;
            }
            let index = (start + i) % total;
            let Ok(partition) = u32::try_from(index) else {
                break;
            };
            let key = format!("part.{partition}");
            if self.owned.contains_key(&partition) || held.contains(&key) {
                continue;
            }
            let Some(lease) = self.leases.acquire(&key).await? else {
                continue;
            };
            let lease = Arc::new(lease);
            let (stop, stopped) = watch::channel(false);
            let runner = Runner {
                worker: self.worker.clone(),
                consumer: self.consumers[index].clone(),
                lease: lease.clone(),
                stop: stopped,
            };
            self.runners
                .spawn(async move { (partition, runner.run().await) });
            lock(&self.renewed).push(lease.clone());
            self.owned.insert(partition, Owned { lease, stop });
            lock(&self.worker.counters.partitions).insert(partition);
            info!(partition, share, live, "partition leased");
            wanted -= 1;
        }
        Ok(())
    }
}

/// Renews a worker's membership and partition leases, every `lease_ttl / 6`, forever.
async fn renew(leases: Leases, member: Lease, partitions: Arc<Mutex<Vec<Arc<Lease>>>>) {
    let mut tick = tokio::time::interval(leases.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current: Vec<Arc<Lease>> = lock(&partitions).clone();
        let (renewed, kept) = tokio::join!(
            join_all(current.iter().map(|lease| leases.renew(lease))),
            leases.keep(&member)
        );
        if let Err(e) = kept {
            warn!(error = %e, "cannot renew the worker's membership");
        }
        for (result, lease) in renewed.into_iter().zip(&current) {
            match result {
                Ok(true) => {}
                Ok(false) => warn!(lease = lease.key(), "partition lease lost"),
                Err(e) => warn!(lease = lease.key(), error = %e, "cannot renew a partition lease"),
            }
        }
    }
}

/// A command held by a runner: queued behind its stream's earlier commands, or running.
struct Held {
    message: jetstream::Message,
    envelope: Envelope,
    /// Its position in the command stream.
    sequence: u64,
}

/// Handles one leased partition.
struct Runner {
    worker: NatsCommandWorker,
    consumer: PullConsumer,
    lease: Arc<Lease>,
    stop: watch::Receiver<bool>,
}

impl Runner {
    async fn run(mut self) -> Result<(), NatsError> {
        let name = self.consumer.cached_info().name.clone();
        let stop = self.stop.clone();
        let Some((ack_wait, inherited)) =
            await_handoff(&self.consumer, &self.lease, || *stop.borrow()).await?
        else {
            return Ok(());
        };
        // Commands a previous owner left are all collected from the first request, in order,
        // before any runs.
        let mut collecting = inherited;
        let window = self.worker.window;
        let mut puller = Puller::new(name, self.consumer.clone(), window, LEASED_PULL_EXPIRES);
        let mut queues: HashMap<StreamId, VecDeque<Held>> = HashMap::new();
        let mut held = 0usize;
        let mut handlers: JoinSet<(StreamId, Outcome)> = JoinSet::new();
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        let mut progressed = Instant::now();
        loop {
            if !self.lease.held() {
                // Another worker may own the partition soon: stop everything at once and
                // extend no deadline, so that what this worker held is redelivered to it.
                handlers.abort_all();
                puller.close();
                return Ok(());
            }
            let stopping = *self.stop.borrow();
            if stopping && !puller.is_open() && held == 0 {
                return Ok(());
            }
            if !stopping && !puller.is_open() && held < window {
                puller.open(window - held).await?;
            }
            tokio::select! {
                biased;
                Some(joined) = handlers.join_next() => {
                    let (stream, outcome) = joined.map_err(|e| NatsError::Setup(e.into()))?;
                    let Some(queue) = queues.get_mut(&stream) else { continue };
                    let Some(done) = queue.pop_front() else { continue };
                    held -= 1;
                    let ack = match outcome {
                        Outcome::Done => AckKind::Ack,
                        Outcome::Poison => AckKind::Term,
                        Outcome::Abandoned => continue,
                    };
                    if let Err(e) = done.message.ack_with(ack).await {
                        // Not acknowledged: it comes back after ack_wait and runs as a
                        // duplicate, answered from the store.
                        warn!(error = %e, "ack failed");
                    }
                    match queue.front() {
                        Some(next) => self.start(&mut handlers, next),
                        None => {
                            queues.remove(&stream);
                        }
                    }
                }
                received = puller.recv(), if puller.is_open() => {
                    let Some(message) = received? else {
                        if collecting {
                            collecting = false;
                            for queue in queues.values() {
                                if let Some(first) = queue.front() {
                                    self.start(&mut handlers, first);
                                }
                            }
                        }
                        continue;
                    };
                    let envelope = match wire::read_envelope(message.headers.as_ref()) {
                        Ok(envelope) => envelope,
                        Err(reason) => {
                            self.reject(&message, reason).await;
                            continue;
                        }
                    };
                    let sequence = message.info().map_or(0, |info| info.stream_sequence);
                    let queue = queues.entry(envelope.stream.clone()).or_default();
                    // In command stream order, behind the command running (if any).
                    let running = usize::from(!collecting && !queue.is_empty());
                    let at = queue
                        .iter()
                        .skip(running)
                        .position(|held| held.sequence > sequence)
                        .map_or(queue.len(), |i| i + running);
                    queue.insert(at, Held { message, envelope, sequence });
                    held += 1;
                    if !collecting && queue.len() == 1 {
                        if let Some(first) = queue.front() {
                            self.start(&mut handlers, first);
                        }
                    }
                }
                _ = housekeeping.tick() => {
                    if self.lease.held() && progressed.elapsed() >= ack_wait / 2 {
                        progressed = Instant::now();
                        extend_deadlines(&queues).await;
                    }
                }
                _ = self.stop.changed(), if !stopping => {}
            }
        }
    }

    /// Runs the handler of the command at the head of its stream's queue.
    fn start(&self, handlers: &mut JoinSet<(StreamId, Outcome)>, held: &Held) {
        let worker = self.worker.clone();
        let lease = self.lease.clone();
        let message = held.message.clone();
        let envelope = held.envelope.clone();
        handlers.spawn(async move {
            let stream = envelope.stream.clone();
            let outcome = worker.handle(&message, envelope, &lease).await;
            (stream, outcome)
        });
    }

    /// Terminates a message whose envelope cannot be read, answering its sender if it names
    /// one.
    async fn reject(&self, message: &jetstream::Message, reason: String) {
        let reply_to = message
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::REPLY_TO))
            .map(|v| v.as_str().to_owned());
        self.worker.poison(&message.subject, &reason);
        self.worker
            .reply(reply_to, Err(WireError::malformed(reason)))
            .await;
        if let Err(e) = message.ack_with(AckKind::Term).await {
            warn!(error = %e, "cannot terminate a poison message");
        }
    }
}

/// Tells JetStream that every held command is still being worked on.
///
/// All of them at once, in command stream order: JetStream redelivers expired messages in the
/// order they expire, and a new owner must get one entity's commands back in their order. A
/// command delivered after this still expires later than every one extended here.
async fn extend_deadlines(queues: &HashMap<StreamId, VecDeque<Held>>) {
    let mut held: Vec<&Held> = queues.values().flatten().collect();
    held.sort_unstable_by_key(|held| held.sequence);
    for held in held {
        if let Err(e) = held.message.ack_with(AckKind::Progress).await {
            debug!(error = %e, "progress ack failed");
        }
    }
}
