//! Commands across processes: [`NatsCommandDispatcher`] sends, [`NatsCommandWorker`] handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use async_nats::{Client, HeaderMap};
use async_trait::async_trait;
use futures_util::StreamExt;
use sourceflow::{
    Command, CommandDispatcher, CommandReceipt, Error, OutgoingCommand, Sequence, SourceFlow,
};
use tracing::{debug, error, warn};

use crate::error::NatsError;
use crate::pull::Puller;
use crate::wire::{self, WireError, WireReceipt};
use crate::Topology;

/// What the sender waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Wait for the worker's receipt (or error), up to the dispatcher's timeout.
    #[default]
    Reply,
    /// Return once JetStream has stored the command. The receipt carries the message id and
    /// stream, sequence 0, no events and `duplicate = false` (a repeated message id is
    /// recognised by the store when a worker runs it).
    Enqueue,
}

/// Sends routed commands to JetStream, for a [`NatsCommandWorker`] to handle.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use sourceflow_nats::{NatsCommandDispatcher, Topology};
/// # #[derive(serde::Serialize, serde::Deserialize, sourceflow::Command)]
/// # #[command(name = "bank.Deposit")] struct Deposit { amount: i64 }
/// let dispatcher = NatsCommandDispatcher::builder(client, Topology::new("bank"))
///     .route::<Deposit>()
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct NatsCommandDispatcher {
    client: Client,
    jetstream: jetstream::Context,
    topology: Topology,
    routes: HashMap<String, Delivery>,
    timeout: Duration,
}

impl std::fmt::Debug for NatsCommandDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCommandDispatcher")
            .field("topology", &self.topology)
            .field("routes", &self.routes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`NatsCommandDispatcher`].
#[derive(Debug)]
pub struct DispatcherBuilder {
    client: Client,
    topology: Topology,
    routes: HashMap<String, Delivery>,
    timeout: Duration,
}

impl DispatcherBuilder {
    /// Routes command `C` over NATS, waiting for the worker's reply.
    pub fn route<C: Command>(self) -> Self {
        self.route_name(C::NAME, Delivery::Reply)
    }

    /// Routes command `C` over NATS with the given delivery.
    pub fn route_with<C: Command>(self, delivery: Delivery) -> Self {
        self.route_name(C::NAME, delivery)
    }

    /// Routes the command with wire name `name` over NATS.
    pub fn route_name(mut self, name: impl Into<String>, delivery: Delivery) -> Self {
        self.routes.insert(name.into(), delivery);
        self
    }

    /// How long a [`Delivery::Reply`] send waits for the worker (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates the command stream if it does not exist, and the dispatcher.
    ///
    /// # Errors
    /// [`NatsError::Setup`] if JetStream is unreachable or refuses the stream.
    pub async fn build(self) -> Result<NatsCommandDispatcher, NatsError> {
        let jetstream = jetstream::new(self.client.clone());
        self.topology.ensure_command_stream(&jetstream).await?;
        Ok(NatsCommandDispatcher {
            client: self.client,
            jetstream,
            topology: self.topology,
            routes: self.routes,
            timeout: self.timeout,
        })
    }
}

impl NatsCommandDispatcher {
    /// Starts configuring a dispatcher on `client` for `topology`.
    pub fn builder(client: Client, topology: Topology) -> DispatcherBuilder {
        DispatcherBuilder {
            client,
            topology,
            routes: HashMap::new(),
            timeout: Duration::from_secs(10),
        }
    }

    async fn send(
        &self,
        command: OutgoingCommand,
        delivery: Delivery,
    ) -> Result<CommandReceipt, Error> {
        let envelope = &command.envelope;
        let subject = self.topology.command_subject(&envelope.stream);
        let mut headers = wire::envelope_headers(envelope).map_err(|reason| {
            Error::from(NatsError::Wire(format!(
                "cannot send {}: {reason}",
                envelope.name
            )))
        })?;
        let publish_error = |source: async_nats::Error| {
            Error::from(NatsError::Publish {
                subject: subject.clone(),
                source,
            })
        };
        // Subscribe before publishing: the reply can only come after, on this connection.
        let mut replies = None;
        if delivery == Delivery::Reply {
            let inbox = self.client.new_inbox();
            headers.insert(wire::REPLY_TO, inbox.as_str());
            replies = Some(
                self.client
                    .subscribe(inbox)
                    .await
                    .map_err(|e| publish_error(e.into()))?,
            );
        }
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, command.payload.clone().into())
            .await
            .map_err(|e| publish_error(e.into()))?
            .await
            .map_err(|e| publish_error(e.into()))?;
        let Some(mut replies) = replies else {
            return Ok(CommandReceipt {
                message_id: envelope.message_id,
                stream: envelope.stream.clone(),
                sequence: Sequence::ZERO,
                events: Vec::new(),
                duplicate: ack.duplicate,
                retries: 0,
            });
        };
        let reply = tokio::time::timeout(self.timeout, replies.next())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::from(NatsError::Timeout {
                    message_id: envelope.message_id,
                    timeout_ms: self.timeout.as_millis(),
                })
            })?;
        let status = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::STATUS))
            .map(|v| v.as_str().to_owned());
        match status.as_deref() {
            Some("ok") => serde_json::from_slice::<WireReceipt>(&reply.payload)
                .map(WireReceipt::into_receipt)
                .map_err(|e| NatsError::Wire(format!("bad receipt: {e}")).into()),
            Some("error") => Err(serde_json::from_slice::<WireError>(&reply.payload)
                .map_err(|e| Error::from(NatsError::Wire(format!("bad error reply: {e}"))))?
                .into_error()),
            other => Err(NatsError::Wire(format!("reply with status {other:?}")).into()),
        }
    }
}

#[async_trait]
impl CommandDispatcher for NatsCommandDispatcher {
    fn name(&self) -> &str {
        "nats"
    }

    fn accepts(&self, command: &OutgoingCommand) -> bool {
        self.routes.contains_key(command.envelope.name.as_ref())
    }

    async fn dispatch(&self, command: OutgoingCommand) -> Result<CommandReceipt, Error> {
        let delivery = self
            .routes
            .get(command.envelope.name.as_ref())
            .copied()
            .unwrap_or_default();
        self.send(command, delivery).await
    }
}

/// Counters of one worker.
#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    poison: AtomicU64,
}

/// Handles commands from JetStream with a local [`SourceFlow`] (over the shared store).
///
/// Cheap to clone; clones share counters. Run several, in one process or many: see the
/// [crate docs](crate#design) for how partitions are shared.
#[derive(Clone)]
pub struct NatsCommandWorker {
    client: Client,
    flow: SourceFlow,
    topology: Topology,
    ack_wait: Duration,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for NatsCommandWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCommandWorker")
            .field("topology", &self.topology)
            .field("ack_wait", &self.ack_wait)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// How one message ended, for the ack.
enum Outcome {
    Done,
    Poison,
    Retry,
}

impl NatsCommandWorker {
    /// A worker handling `topology`'s commands with `flow`.
    ///
    /// Building the worker's flow with `.entity_cache(0)` is recommended: the next command of
    /// a stream may go to any worker, so a cached entity state is often stale and only costs a
    /// conflict and a re-run (or, for a refusal, a check of the stream head).
    pub fn new(client: Client, flow: SourceFlow, topology: Topology) -> Self {
        Self {
            client,
            flow,
            topology,
            ack_wait: Duration::from_secs(30),
            counters: Arc::default(),
        }
    }

    /// How long JetStream waits for an ack before handing the message to another worker
    /// (default 30 s). It bounds how long a dead worker's partition stalls. Every worker and
    /// sender of a topology should agree; the consumers are created with the first value seen.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
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

    /// Handles commands of every partition until the task is dropped or a consumer is deleted.
    ///
    /// # Errors
    /// [`NatsError::Setup`] if the stream or a consumer cannot be created;
    /// [`NatsError::Consume`] once a partition's consumer or the stream is deleted.
    pub async fn run(&self) -> Result<(), NatsError> {
        let jetstream = jetstream::new(self.client.clone());
        let stream = self.topology.ensure_command_stream(&jetstream).await?;
        let mut partitions = tokio::task::JoinSet::new();
        for partition in 0..self.topology.partitions {
            let name = self.topology.partition_consumer(partition);
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: self.topology.partition_subject(partition),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.ack_wait,
                        max_ack_pending: 1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| NatsError::Setup(e.into()))?;
            let worker = self.clone();
            partitions.spawn(async move { worker.consume(name, consumer).await });
        }
        // The first partition to fail ends the worker; dropping the set aborts the others.
        match partitions.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(NatsError::Setup(join.into())),
            None => Ok(()),
        }
    }

    async fn consume(
        &self,
        name: String,
        consumer: consumer::PullConsumer,
    ) -> Result<(), NatsError> {
        // One message per pull request: the consumer hands out one at a time anyway.
        let mut messages = Puller::new(name.clone(), consumer, 1);
        loop {
            let message = messages.next().await?;
            let outcome = self.handle_with_progress(&message).await;
            let ack = match outcome {
                Outcome::Done => AckKind::Ack,
                Outcome::Poison => AckKind::Term,
                Outcome::Retry => AckKind::Nak(Some(Duration::from_millis(500))),
            };
            if let Err(e) = message.ack_with(ack).await {
                // Not acknowledged: it comes back after ack_wait and runs as a duplicate.
                warn!(consumer = %name, error = %e, "ack failed");
            }
        }
    }

    /// Handles one message, telling JetStream it is still being worked on meanwhile.
    async fn handle_with_progress(&self, message: &jetstream::Message) -> Outcome {
        let handling = self.handle(message);
        tokio::pin!(handling);
        let mut ticks = tokio::time::interval((self.ack_wait / 2).max(Duration::from_millis(100)));
        ticks.tick().await;
        loop {
            tokio::select! {
                outcome = &mut handling => return outcome,
                _ = ticks.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        debug!(error = %e, "progress ack failed");
                    }
                }
            }
        }
    }

    async fn handle(&self, message: &jetstream::Message) -> Outcome {
        let reply_to = message
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::REPLY_TO))
            .map(|v| v.as_str().to_owned());
        let envelope = match wire::read_envelope(message.headers.as_ref()) {
            Ok(envelope) => envelope,
            Err(reason) => {
                self.poison(&message.subject, &reason);
                self.reply(reply_to, Err(WireError::malformed(reason)))
                    .await;
                return Outcome::Poison;
            }
        };
        let name = envelope.name.to_string();
        let stream = envelope.stream.to_string();
        match self
            .flow
            .dispatch_local(envelope, message.payload.to_vec())
            .await
        {
            Ok(receipt) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                self.reply(reply_to, Ok(WireReceipt::from_receipt(&receipt)))
                    .await;
                Outcome::Done
            }
            Err(Error::Store(e)) if e.is_transient() => {
                // The store may come back: leave the command queued (its partition waits).
                warn!(command = %name, stream = %stream, error = %e, "store unavailable; command redelivered later");
                Outcome::Retry
            }
            Err(
                e @ (Error::UnknownMessage { .. } | Error::Decode { .. } | Error::NoHandler { .. }),
            ) => {
                self.poison(&message.subject, &e.to_string());
                self.reply(reply_to, Err(WireError::from_error(&e))).await;
                Outcome::Poison
            }
            Err(e) => {
                // The handler's answer (rejected, invalid, conflict beyond the retry budget):
                // final, reported to the sender, not retried.
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                debug!(command = %name, stream = %stream, error = %e, "command failed");
                self.reply(reply_to, Err(WireError::from_error(&e))).await;
                Outcome::Done
            }
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
