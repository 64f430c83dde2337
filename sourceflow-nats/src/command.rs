//! Sending commands to other processes: [`NatsCommandDispatcher`] (a
//! [`NatsCommandWorker`](crate::NatsCommandWorker) handles them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, Message, Subscriber};
use async_trait::async_trait;
use futures_util::StreamExt;
use sourceflow::{Command, CommandDispatcher, CommandReceipt, Error, OutgoingCommand, Sequence};
use tokio::sync::oneshot;
use tracing::{debug_span, error, Instrument};

use crate::error::NatsError;
use crate::trace::TraceContext;
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

/// Sends routed commands to JetStream, for a
/// [`NatsCommandWorker`](crate::NatsCommandWorker) to handle.
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
    jetstream: jetstream::Context,
    topology: Topology,
    routes: HashMap<String, Delivery>,
    timeout: Duration,
    replies: Replies,
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
        let replies = Replies::subscribe(&self.client).await?;
        Ok(NatsCommandDispatcher {
            jetstream,
            topology: self.topology,
            routes: self.routes,
            timeout: self.timeout,
            replies,
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
        trace: &TraceContext,
    ) -> Result<CommandReceipt, Error> {
        let envelope = &command.envelope;
        let subject = self.topology.command_subject(&envelope.stream);
        let mut headers = wire::envelope_headers(envelope).map_err(|reason| {
            Error::from(NatsError::Wire(format!(
                "cannot send {}: {reason}",
                envelope.name
            )))
        })?;
        wire::insert_trace(&mut headers, trace);
        if command.first_send {
            headers.insert(wire::FIRST_SEND, "1");
        }
        let publish_error = |source: async_nats::Error| {
            Error::from(NatsError::Publish {
                subject: subject.clone(),
                source,
            })
        };
        // Registered before publishing: the reply can only come after.
        let mut reply = None;
        if delivery == Delivery::Reply {
            let awaited = self.replies.expect();
            headers.insert(wire::REPLY_TO, awaited.subject.as_str());
            reply = Some(awaited);
        }
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, command.payload.clone().into())
            .await
            .map_err(|e| publish_error(e.into()))?
            .await
            .map_err(|e| publish_error(e.into()))?;
        let Some(mut reply) = reply else {
            return Ok(CommandReceipt {
                message_id: envelope.message_id,
                stream: envelope.stream.clone(),
                sequence: Sequence::ZERO,
                events: Vec::new(),
                duplicate: ack.duplicate,
                retries: 0,
            });
        };
        let reply = tokio::time::timeout(self.timeout, &mut reply.answer)
            .await
            .ok()
            .and_then(Result::ok)
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

/// The replies of one dispatcher: one subscription to `<inbox>.*`, each awaited reply on a
/// subject of its own under it (`<inbox>.<n>`), routed to its sender by a task. A subscription
/// per command would cost a SUB and an UNSUB for the server to apply to its interest graph,
/// and a channel, per command.
struct Replies {
    prefix: String,
    next: AtomicU64,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Message>>>>,
    router: tokio::task::JoinHandle<()>,
}

/// A reply being awaited; dropped, it stops waiting.
struct Awaited<'a> {
    replies: &'a Replies,
    token: u64,
    subject: String,
    answer: oneshot::Receiver<Message>,
}

impl Drop for Awaited<'_> {
    fn drop(&mut self) {
        lock(&self.replies.waiting).remove(&self.token);
    }
}

impl Replies {
    async fn subscribe(client: &Client) -> Result<Self, NatsError> {
        let prefix = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{prefix}.*"))
            .await
            .map_err(|e| NatsError::Setup(format!("cannot subscribe to replies: {e}").into()))?;
        let waiting = Arc::default();
        let router = tokio::spawn(route(subscriber, prefix.clone(), Arc::clone(&waiting)));
        Ok(Self {
            prefix,
            next: AtomicU64::new(0),
            waiting,
            router,
        })
    }

    /// Registers a reply to await: its subject goes into the command's headers.
    fn expect(&self) -> Awaited<'_> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, answer) = oneshot::channel();
        lock(&self.waiting).insert(token, sender);
        Awaited {
            replies: self,
            token,
            subject: format!("{}.{token}", self.prefix),
            answer,
        }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.router.abort();
    }
}

/// Hands each reply to the send awaiting it (a reply nobody awaits any more is dropped).
async fn route(
    mut subscriber: Subscriber,
    prefix: String,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Message>>>>,
) {
    while let Some(message) = subscriber.next().await {
        let token = message
            .subject
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|token| token.parse::<u64>().ok());
        let Some(token) = token else { continue };
        if let Some(sender) = lock(&waiting).remove(&token) {
            let _ = sender.send(message);
        }
    }
    error!("the reply subscription ended: sends awaiting a reply will time out");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        // The worker continues this span's trace (see `crate::trace`).
        let (trace, parent) = TraceContext::for_sending(
            command.envelope.correlation_id,
            crate::trace::random_span_id(),
        );
        let span = debug_span!(
            "sourceflow.nats.send",
            command = %command.envelope.name,
            stream = %command.envelope.stream,
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_span_id = parent.as_deref(),
        );
        if span.is_disabled() {
            self.send(command, delivery, &trace).await
        } else {
            self.send(command, delivery, &trace).instrument(span).await
        }
    }
}
