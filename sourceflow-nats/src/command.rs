//! Sending commands to other processes: [`NatsCommandDispatcher`] (a
//! [`NatsCommandWorker`](crate::NatsCommandWorker) handles them).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::Client;
use async_trait::async_trait;
use futures_util::StreamExt;
use sourceflow::{Command, CommandDispatcher, CommandReceipt, Error, OutgoingCommand, Sequence};
use tracing::{debug_span, Instrument};

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
