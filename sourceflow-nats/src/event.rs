//! Events across processes: [`NatsEventPublisher`] publishes the log; elsewhere,
//! [`NatsViewFeeder`] feeds it to a flow's `#[view]`s and `#[aggregate]`s, and
//! [`NatsEventSubscriber`] to a hand-written [`EventHandler`].

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, consumer, AckKind};
use async_nats::{Client, HeaderMap};
use async_trait::async_trait;
use futures_util::StreamExt;
use sourceflow::store::{ModelWrite, ProjectionCommit, Store, StoreError};
use sourceflow::{Error, Position, RecordedEvent, SourceFlow};
use tokio::time::Instant;
use tracing::{debug_span, error, warn, Instrument, Span};

use crate::error::NatsError;
use crate::lease::{await_handoff, hold, Lease, Leases};
use crate::pull::{Puller, LEASED_PULL_EXPIRES, PULL_EXPIRES};
use crate::trace::{self, TraceContext};
use crate::wire;
use crate::Topology;

/// Publishes every committed event of a flow's store to JetStream, in log order.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client, flow: sourceflow::SourceFlow) {
/// use sourceflow_nats::{NatsEventPublisher, Topology};
/// let publisher = NatsEventPublisher::new(client, flow, Topology::new("bank"));
/// tokio::spawn(async move { publisher.run().await });
/// # }
/// ```
#[derive(Clone)]
pub struct NatsEventPublisher {
    client: Client,
    flow: SourceFlow,
    topology: Topology,
    name: String,
    checkpoint_every: u64,
    window: usize,
    published: Arc<AtomicU64>,
}

impl std::fmt::Debug for NatsEventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEventPublisher")
            .field("topology", &self.topology)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NatsEventPublisher {
    /// A publisher of `flow`'s event log; its position is stored as `"nats-publisher"`.
    pub fn new(client: Client, flow: SourceFlow, topology: Topology) -> Self {
        Self {
            client,
            flow,
            topology,
            name: "nats-publisher".to_owned(),
            checkpoint_every: 64,
            window: 256,
            published: Arc::default(),
        }
    }

    /// The key under which the publisher's position is stored.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Record the position after this many events (default 64; always when idle).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }

    /// How many events may await JetStream's acknowledgement at once (default 256; 1
    /// publishes one event at a time). Each names its predecessor
    /// (`Nats-Expected-Last-Msg-Id`), so a failed publish cannot be overtaken by the next.
    pub fn window(mut self, events: usize) -> Self {
        self.window = events.max(1);
        self
    }

    /// Events published (and acknowledged by JetStream) so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Publishes the log from the stored position on, forever.
    ///
    /// One publisher of a name is active per topology: it holds the lease
    /// `publisher.<name>`, and the others (every worker process may run one) stand by and take
    /// over within the topology's lease TTL when it stops. Transient failures (NATS or the
    /// store unreachable) are logged and retried with backoff.
    ///
    /// # Errors
    /// [`NatsError::Setup`] if the events stream cannot be created; [`NatsError::Store`] if
    /// the starting position cannot be read; [`NatsError::Wire`] for an event whose ids
    /// cannot be written as headers.
    pub async fn run(&self) -> Result<(), NatsError> {
        let jetstream = jetstream::new(self.client.clone());
        self.topology.ensure_event_stream(&jetstream).await?;
        // Two publishers at once would only duplicate work (JetStream drops the repeats), so
        // the lease needs no margin.
        let leases = Leases::open(
            jetstream.clone(),
            &self.topology,
            Duration::from_millis(500),
        )
        .await?;
        let key = format!("publisher.{}", crate::subject_token(&self.name));
        hold(&leases, &key, |lease| {
            let jetstream = jetstream.clone();
            async move { self.publish_log(&jetstream, &lease).await }
        })
        .await
    }

    /// Publishes the log from the stored position on while `lease` is held.
    async fn publish_log(
        &self,
        jetstream: &jetstream::Context,
        lease: &Lease,
    ) -> Result<(), NatsError> {
        // The log as stored: personal fields travel sealed, so JetStream's copies hold no
        // plaintext either, and receivers open them with the shared subject keys.
        let store = self.flow.raw_store().clone();
        let recorded = store.get_position(&self.name).await?;
        let mut progress = Progress {
            acknowledged: recorded,
            recorded,
            chain: None,
            failures: 0,
        };
        let events = self.flow.subscribe_as_stored(recorded);
        let mut events = std::pin::pin!(events);
        let mut in_flight: VecDeque<(RecordedEvent, AckFuture)> = VecDeque::new();
        let mut log_open = true;
        while log_open || !in_flight.is_empty() {
            if !lease.held() {
                return Ok(());
            }
            tokio::select! {
                biased;
                ack = first_ack(&mut in_flight) => match ack {
                    Ok(_) => {
                        if let Some((event, _)) = in_flight.pop_front() {
                            self.acknowledged(store.as_ref(), &mut progress, &event).await;
                        }
                    }
                    Err(e) => {
                        progress.failures += 1;
                        let position = in_flight.front().map_or(0, |(event, _)| event.position.0);
                        warn!(position, error = %e, retry = progress.failures, "publish failed; publishing again from that event");
                        if progress.failures > 1 {
                            tokio::time::sleep(backoff(progress.failures)).await;
                        }
                        // Every event after the failed one named its predecessor, so none of
                        // them can have been stored ahead of it: send them all again, in order
                        // (the ones JetStream holds are acknowledged as duplicates).
                        progress.chain = None;
                        let resend: Vec<RecordedEvent> =
                            in_flight.drain(..).map(|(event, _)| event).collect();
                        for event in resend {
                            self.send(jetstream, store.as_ref(), &mut progress, &mut in_flight, event)
                                .await?;
                        }
                    }
                },
                next = tokio::time::timeout(IDLE, events.next()),
                    if log_open && in_flight.len() < self.window =>
                {
                    match next {
                        Ok(Some(Ok(event))) => {
                            self.send(jetstream, store.as_ref(), &mut progress, &mut in_flight, event)
                                .await?;
                        }
                        Ok(Some(Err(e))) => {
                            warn!(error = %e, "cannot read the event log; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(None) => log_open = false,
                        Err(_idle) => {
                            if in_flight.is_empty() && progress.acknowledged != progress.recorded {
                                self.checkpoint(store.as_ref(), &mut progress).await;
                            }
                        }
                    }
                }
            }
        }
        if progress.acknowledged != progress.recorded {
            self.checkpoint(store.as_ref(), &mut progress).await;
        }
        Ok(())
    }

    /// Sends `event` after the ones in flight, chained to its predecessor with
    /// `Nats-Expected-Last-Msg-Id`. With no chain yet (the first event, or the first after a
    /// failure) it publishes the event alone and waits for JetStream to hold it, so that the
    /// chain starts from a stored event.
    async fn send(
        &self,
        jetstream: &jetstream::Context,
        store: &dyn Store,
        progress: &mut Progress,
        in_flight: &mut VecDeque<(RecordedEvent, AckFuture)>,
        event: RecordedEvent,
    ) -> Result<(), NatsError> {
        let subject = self
            .topology
            .event_subject(&event.envelope.stream.entity_type);
        let mut headers = wire::event_headers(&event).map_err(NatsError::Wire)?;
        wire::insert_trace(&mut headers, &trace::of_event(&event.envelope));
        let Some(previous) = progress.chain.replace(event.envelope.message_id) else {
            self.publish(jetstream, &subject, headers, &event).await;
            self.acknowledged(store, progress, &event).await;
            return Ok(());
        };
        headers.insert(NATS_EXPECTED_LAST_MESSAGE_ID, previous.to_string());
        let ack: AckFuture = match jetstream
            .publish_with_headers(subject, headers, event.payload.clone().into())
            .await
        {
            Ok(ack) => ack.into_future(),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        in_flight.push_back((event, ack));
        Ok(())
    }

    /// Counts an event JetStream holds, and records the position every `checkpoint_every`.
    async fn acknowledged(
        &self,
        store: &dyn Store,
        progress: &mut Progress,
        event: &RecordedEvent,
    ) {
        progress.acknowledged = event.position;
        progress.failures = 0;
        self.published.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sourceflow.nats.published").increment(1);
        if progress.acknowledged.0 - progress.recorded.0 >= self.checkpoint_every {
            self.checkpoint(store, progress).await;
        }
    }

    async fn checkpoint(&self, store: &dyn Store, progress: &mut Progress) {
        match store.set_position(&self.name, progress.acknowledged).await {
            Ok(()) => progress.recorded = progress.acknowledged,
            // Only costs re-publishing (deduplicated) after a restart.
            Err(e) => warn!(error = %e, "cannot record the publisher position"),
        }
    }

    /// Publishes one event, unchained, until JetStream acknowledges it.
    async fn publish(
        &self,
        jetstream: &jetstream::Context,
        subject: &str,
        headers: HeaderMap,
        event: &RecordedEvent,
    ) {
        let mut retry = 0u32;
        loop {
            let attempt = async {
                jetstream
                    .publish_with_headers(
                        subject.to_owned(),
                        headers.clone(),
                        event.payload.clone().into(),
                    )
                    .await?
                    .await
            };
            match attempt.await {
                Ok(_) => return,
                Err(e) => {
                    retry += 1;
                    warn!(subject, position = event.position.0, error = %e, retry, "publish failed; retrying");
                    tokio::time::sleep(backoff(retry)).await;
                }
            }
        }
    }
}

/// How long the log may stay quiet before the publisher records its position.
const IDLE: Duration = Duration::from_millis(250);

/// A publish acknowledgement still to be read.
type AckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// Where a publisher is.
struct Progress {
    /// The last event JetStream acknowledged (every earlier one was acknowledged too).
    acknowledged: Position,
    /// The last position recorded in the store.
    recorded: Position,
    /// The last event sent: the predecessor the next one names.
    chain: Option<uuid::Uuid>,
    /// Failed publishes in a row.
    failures: u32,
}

/// The oldest acknowledgement in flight; never resolves when there is none.
async fn first_ack(
    in_flight: &mut VecDeque<(RecordedEvent, AckFuture)>,
) -> Result<PublishAck, PublishError> {
    match in_flight.front_mut() {
        Some((_, ack)) => ack.await,
        None => std::future::pending().await,
    }
}

fn backoff(retry: u32) -> Duration {
    Duration::from_millis(50u64 << retry.min(6))
}

/// Applies remote events: what a [`NatsEventSubscriber`] runs for each event.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event`, returning the view-model writes to commit with the subscriber's new
    /// position (atomically). Return no writes for events of no interest.
    ///
    /// # Errors
    /// Every error is retried later, in order: an event this build cannot decode
    /// ([`Error::UnknownMessage`], [`Error::Decode`], [`Error::NewerVersion`],
    /// [`Error::Upcast`]) stops the subscriber at that event, logged as an error, until a build
    /// that decodes it runs. Only a message that is not a sourceflow event at all is
    /// terminated as poison.
    async fn apply(&self, event: &RecordedEvent) -> Result<Vec<ModelWrite>, Error>;
}

/// Feeds remote events to an [`EventHandler`] from a durable JetStream consumer.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client, store: std::sync::Arc<dyn sourceflow::store::Store>) {
/// use sourceflow::store::ModelWrite;
/// use sourceflow::{Error, RecordedEvent};
/// use sourceflow_nats::{EventHandler, NatsEventSubscriber, Topology};
///
/// struct Audit;
/// #[async_trait::async_trait]
/// impl EventHandler for Audit {
///     async fn apply(&self, event: &RecordedEvent) -> Result<Vec<ModelWrite>, Error> {
///         println!("{} at {}", event.envelope.name, event.position);
///         Ok(Vec::new())
///     }
/// }
///
/// let subscriber = NatsEventSubscriber::new(client, store, Topology::new("bank"), "audit", Audit);
/// tokio::spawn(async move { subscriber.run().await });
/// # }
/// ```
pub struct NatsEventSubscriber<H> {
    client: Client,
    store: Arc<dyn Store>,
    topology: Topology,
    durable: String,
    handler: H,
    applied: AtomicU64,
    poison: AtomicU64,
    stopped: Stopped,
}

impl<H> std::fmt::Debug for NatsEventSubscriber<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEventSubscriber")
            .field("topology", &self.topology)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl<H: EventHandler> NatsEventSubscriber<H> {
    /// A subscriber named `durable` (the JetStream consumer and the stored position key
    /// `nats:<durable>`), applying events with `handler` and committing to `store`. Pass a
    /// flow's [`store`](SourceFlow::store) to have personal fields opened with its subject keys
    /// (another store leaves them sealed: they decode as redacted).
    pub fn new(
        client: Client,
        store: Arc<dyn Store>,
        topology: Topology,
        durable: impl Into<String>,
        handler: H,
    ) -> Self {
        Self {
            client,
            store,
            topology,
            durable: durable.into(),
            handler,
            applied: AtomicU64::new(0),
            poison: AtomicU64::new(0),
            stopped: Stopped::default(),
        }
    }

    /// The event this subscriber waits on because this build cannot decode it (an unknown
    /// type, or a version newer than the code knows), if any. It is not skipped: the consumer
    /// stands still until a build that decodes it runs.
    pub fn stopped_at(&self) -> Option<String> {
        self.stopped.get()
    }

    /// Events applied by this instance.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Poison events terminated by this instance.
    pub fn poisoned(&self) -> u64 {
        self.poison.load(Ordering::Relaxed)
    }

    fn position_key(&self) -> String {
        format!("nats:{}", self.durable)
    }

    /// Applies events until the task is dropped or the consumer is deleted.
    ///
    /// # Errors
    /// [`NatsError::Config`] for a durable name JetStream refuses, [`NatsError::Setup`] if
    /// the stream or consumer cannot be created, [`NatsError::Consume`] once the consumer or
    /// the stream is deleted.
    pub async fn run(&self) -> Result<(), NatsError> {
        let mut messages = event_messages(&self.client, &self.topology, &self.durable).await?;
        let key = self.position_key();
        let mut last = self.store.get_position(&key).await?;
        loop {
            let message = messages.next().await?;
            let ack = match wire::read_event(message.headers.as_ref(), &message.payload) {
                Err(reason) => self.poison(&message.subject, &reason),
                Ok(event) => {
                    let (context, span) = event_span(message.headers.as_ref(), &event);
                    let applying = context.scope(self.apply(&key, &mut last, event));
                    if span.is_disabled() {
                        applying.await
                    } else {
                        applying.instrument(span).await
                    }
                }
            };
            if let Err(e) = message.ack_with(ack).await {
                warn!(consumer = %self.durable, error = %e, "ack failed");
            }
        }
    }

    async fn apply(&self, key: &str, last: &mut Position, mut event: RecordedEvent) -> AckKind {
        if event.position <= *last {
            return AckKind::Ack;
        }
        if let Err(e) = self
            .store
            .open_received(std::slice::from_mut(&mut event))
            .await
        {
            warn!(consumer = %self.durable, position = event.position.0, error = %e, "cannot read subject keys; retrying");
            return AckKind::Nak(Some(Duration::from_millis(500)));
        }
        let models = match self.handler.apply(&event).await {
            Ok(models) => models,
            Err(e) if undecodable(&e) => {
                self.stopped.set(&self.durable, &event, &e);
                return AckKind::Nak(Some(UNDECODABLE_RETRY));
            }
            Err(e) => {
                warn!(consumer = %self.durable, position = event.position.0, error = %e, "apply failed; retrying");
                return AckKind::Nak(Some(Duration::from_millis(500)));
            }
        };
        let commit = ProjectionCommit {
            handler: key.to_owned().into(),
            expected: *last,
            position: event.position,
            models,
            outbox: Vec::new(),
        };
        match self.store.commit_projection(commit).await {
            Ok(()) => {
                self.stopped.clear();
                *last = event.position;
                self.applied.fetch_add(1, Ordering::Relaxed);
                AckKind::Ack
            }
            Err(StoreError::PositionConflict { .. }) => {
                // Another instance applied events meanwhile: catch up with its position.
                match self.store.get_position(key).await {
                    Ok(position) => *last = position,
                    Err(e) => warn!(error = %e, "cannot read the subscriber position"),
                }
                if event.position <= *last {
                    AckKind::Ack
                } else {
                    AckKind::Nak(Some(Duration::from_millis(100)))
                }
            }
            Err(e) => {
                warn!(consumer = %self.durable, error = %e, "cannot commit an applied event; retrying");
                AckKind::Nak(Some(Duration::from_millis(500)))
            }
        }
    }

    fn poison(&self, what: &str, reason: &str) -> AckKind {
        poison(&self.poison, &self.durable, what, reason)
    }
}

/// The span an event is received in, continuing the trace of its publisher (see
/// [`crate::trace`]), and the context to handle it in.
fn event_span(headers: Option<&HeaderMap>, event: &RecordedEvent) -> (TraceContext, Span) {
    let (context, parent) = trace::for_receiving(
        wire::read_trace(headers),
        event.envelope.correlation_id,
        trace::random_span_id(),
    );
    let span = debug_span!(
        "sourceflow.nats.event",
        event = %event.envelope.name,
        stream = %event.envelope.stream,
        position = event.position.0,
        trace_id = %context.trace_id_hex(),
        span_id = %context.span_id_hex(),
        parent_span_id = parent.as_deref(),
    );
    (context, span)
}

/// How long a consumer stopped at an undecodable event waits before trying it again.
const UNDECODABLE_RETRY: Duration = Duration::from_secs(2);

/// Errors that say this build cannot read the event (rather than that applying it failed).
fn undecodable(e: &Error) -> bool {
    matches!(
        e,
        Error::UnknownMessage { .. }
            | Error::Decode { .. }
            | Error::NewerVersion { .. }
            | Error::Upcast { .. }
    )
}

/// The event a consumer stands still at because this build cannot decode it.
#[derive(Debug, Default, Clone)]
struct Stopped(Arc<std::sync::Mutex<Option<(Position, String)>>>);

impl Stopped {
    /// Records the event (logged as an error the first time, counted every time).
    fn set(&self, durable: &str, event: &RecordedEvent, e: &Error) {
        metrics::counter!("sourceflow.nats.undecodable").increment(1);
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|(at, _)| *at != event.position) {
            error!(
                consumer = %durable,
                position = event.position.0,
                event = %event.envelope.name,
                version = event.envelope.version,
                error = %e,
                "this build cannot decode the event; the consumer waits at it until a build \
                 that can runs"
            );
            *slot = Some((
                event.position,
                format!(
                    "{} version {} at position {}: {e}",
                    event.envelope.name, event.envelope.version, event.position.0
                ),
            ));
        }
    }

    fn clear(&self) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *slot = None;
    }

    fn get(&self) -> Option<String> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|(_, what)| what.clone())
    }
}

/// Terminates a poison event: counted, logged, never redelivered.
fn poison(counter: &AtomicU64, durable: &str, what: &str, reason: &str) -> AckKind {
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("sourceflow.nats.poison").increment(1);
    error!(consumer = %durable, what, reason, "poison event terminated");
    AckKind::Term
}

/// The durable pull consumer `durable` on the event stream, delivering one message at a time
/// (several instances of one subscriber still apply in stream order).
async fn event_messages(
    client: &Client,
    topology: &Topology,
    durable: &str,
) -> Result<Puller, NatsError> {
    crate::check_name(durable)?;
    let jetstream = jetstream::new(client.clone());
    let stream = topology.ensure_event_stream(&jetstream).await?;
    let consumer = crate::create_consumer(
        &stream,
        consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: topology.event_filter(),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 1,
            ..Default::default()
        },
    )
    .await?;
    // One message is in flight at a time; a request for several saves pulls while they stream.
    Ok(Puller::new(durable, consumer, 64, PULL_EXPIRES))
}

/// Feeds remote events to the `#[view]`s and `#[aggregate]`s of a flow in this process, from
/// a durable JetStream consumer: the read side of another process's write side.
///
/// Events go through [`SourceFlow::apply_remote`] in batches of up to
/// [`batch`](Self::batch) (whatever arrived while the previous batch was applied): every view
/// and aggregate commits its writes for the whole batch with its own position (the last
/// event's global position in the origin log), compare-and-set, so a redelivered event, or two
/// feeders on one store, apply it once; reactions' follow-up commands leave through the flow's
/// outbox and dispatchers (for example a [`NatsCommandDispatcher`](crate::NatsCommandDispatcher)
/// back to the workers). One feeder of a durable applies at a time (it holds the durable's
/// lease), so batches never overtake each other. An event that is malformed on the wire, or
/// whose payload does not decode as the registered type, is terminated and counted
/// (`sourceflow.nats.poison`); any other failure is retried in place.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client, read_side: sourceflow::SourceFlow) {
/// use sourceflow_nats::{NatsViewFeeder, Topology};
/// // `read_side` is built with the views (and a store of its own for their models).
/// let feeder = NatsViewFeeder::new(client, read_side, Topology::new("bank"), "bank-views");
/// tokio::spawn(async move { feeder.run().await });
/// # }
/// ```
#[derive(Clone)]
pub struct NatsViewFeeder {
    client: Client,
    flow: SourceFlow,
    topology: Topology,
    durable: String,
    batch: usize,
    ack_wait: Duration,
    delivered: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    poison: Arc<AtomicU64>,
    stopped: Stopped,
}

impl std::fmt::Debug for NatsViewFeeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsViewFeeder")
            .field("topology", &self.topology)
            .field("durable", &self.durable)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl NatsViewFeeder {
    /// A feeder named `durable` (the JetStream consumer), applying events to `flow`.
    pub fn new(
        client: Client,
        flow: SourceFlow,
        topology: Topology,
        durable: impl Into<String>,
    ) -> Self {
        Self {
            client,
            flow,
            topology,
            durable: durable.into(),
            batch: 256,
            ack_wait: Duration::from_secs(30),
            delivered: Arc::new(AtomicU64::new(0)),
            batches: Arc::new(AtomicU64::new(0)),
            poison: Arc::new(AtomicU64::new(0)),
            stopped: Stopped::default(),
        }
    }

    /// The event this feeder waits on because this build cannot decode it (an unknown type,
    /// or a version newer than the code knows), if any. It is not skipped: the feeder stands
    /// still at it until a build that decodes it holds the lease.
    pub fn stopped_at(&self) -> Option<String> {
        self.stopped.get()
    }

    /// The most events applied at once (default 256, at least 1): one
    /// [`apply_remote`](SourceFlow::apply_remote) call, so one commit per view, for every
    /// event that arrived meanwhile. It is the consumer's `max_ack_pending`; every feeder of a
    /// durable should agree.
    pub fn batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// How long JetStream waits for a batch's acks before redelivering it (default 30 s). It
    /// bounds how long the events a dead feeder held stall the next one.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Events taken off the stream and acknowledged (applied, or already applied before).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Batches applied by this feeder: one [`apply_remote`](SourceFlow::apply_remote) call
    /// each, so one commit per view.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Poison events terminated by this feeder.
    pub fn poisoned(&self) -> u64 {
        self.poison.load(Ordering::Relaxed)
    }

    /// Applies events until the task is dropped or the consumer is deleted.
    ///
    /// Feeders of one durable take turns: the one holding the lease `feeder.<durable>` pulls
    /// and applies, the others stand by and take over within the topology's lease TTL (plus
    /// the consumer's `ack_wait`, if the previous one died holding events).
    ///
    /// # Errors
    /// As [`NatsEventSubscriber::run`].
    pub async fn run(&self) -> Result<(), NatsError> {
        crate::check_name(&self.durable)?;
        let jetstream = jetstream::new(self.client.clone());
        let stream = self.topology.ensure_event_stream(&jetstream).await?;
        let consumer = crate::create_consumer(
            &stream,
            consumer::pull::Config {
                durable_name: Some(self.durable.clone()),
                filter_subject: self.topology.event_filter(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                max_ack_pending: i64::try_from(self.batch).unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await?;
        let leases = Leases::open(
            jetstream,
            &self.topology,
            LEASED_PULL_EXPIRES + Duration::from_secs(1),
        )
        .await?;
        let key = format!("feeder.{}", self.durable);
        hold(&leases, &key, |lease| {
            let consumer = consumer.clone();
            async move { self.feed(consumer, &lease).await }
        })
        .await
    }

    /// Pulls and applies batches while `lease` is held.
    async fn feed(&self, consumer: consumer::PullConsumer, lease: &Lease) -> Result<(), NatsError> {
        let Some((ack_wait, mut inherited)) = await_handoff(&consumer, lease, || false).await?
        else {
            return Ok(());
        };
        let mut puller = Puller::new(
            self.durable.clone(),
            consumer,
            self.batch,
            LEASED_PULL_EXPIRES,
        );
        loop {
            if !lease.held() {
                return Ok(());
            }
            if !puller.is_open() {
                puller.open(self.batch).await?;
            }
            let first = tokio::select! {
                received = puller.recv() => received?,
                () = tokio::time::sleep(Duration::from_millis(250)) => continue,
            };
            let Some(first) = first else { continue };
            // The first event, and whatever arrived with it; after a previous holder left
            // events behind, everything the request brings (see `await_handoff`).
            let mut messages = vec![first];
            while messages.len() < self.batch {
                let wait = if inherited {
                    LEASED_PULL_EXPIRES + Duration::from_secs(1)
                } else {
                    Duration::ZERO
                };
                match tokio::time::timeout(wait, puller.recv()).await {
                    Ok(Ok(Some(message))) => messages.push(message),
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(None)) | Err(_) => break,
                }
            }
            inherited = false;
            self.apply(messages, lease, ack_wait).await;
        }
    }

    /// Applies a batch and acknowledges it. Events are applied in one call; when one of them
    /// cannot be decoded by this build the call fails as a whole, and the batch is applied one
    /// event at a time, so the events before it are applied and the feeder stands still at it.
    /// Every failure is retried in place, while the lease is held: applying an event after one
    /// that failed would skip the failed one for good. Only a message that is not a sourceflow
    /// event at all is terminated as poison.
    async fn apply(&self, messages: Vec<jetstream::Message>, lease: &Lease, ack_wait: Duration) {
        let mut readable = Vec::with_capacity(messages.len());
        for message in messages {
            match wire::read_event(message.headers.as_ref(), &message.payload) {
                Ok(event) => readable.push((event, message)),
                Err(reason) => {
                    let ack = poison(&self.poison, &self.durable, &message.subject, &reason);
                    self.ack(&message, ack).await;
                }
            }
        }
        // Redeliveries may come out of order; a view takes events in log order.
        readable.sort_by_key(|(event, _)| event.position);
        // Each event's span continues its sender's trace; the batch is applied in one span
        // that follows from all of them.
        let batch_span = debug_span!("sourceflow.nats.apply", events = readable.len());
        if !batch_span.is_disabled() {
            for (event, message) in &readable {
                let (_, span) = event_span(message.headers.as_ref(), event);
                batch_span.follows_from(&span);
            }
        }
        self.apply_batch(readable, lease, ack_wait)
            .instrument(batch_span)
            .await;
    }

    /// Applies readable events, in log order, and acknowledges them.
    async fn apply_batch(
        &self,
        readable: Vec<(RecordedEvent, jetstream::Message)>,
        lease: &Lease,
        ack_wait: Duration,
    ) {
        let (events, carriers): (Vec<RecordedEvent>, Vec<jetstream::Message>) =
            readable.into_iter().unzip();
        let mut start = 0;
        let mut one_by_one = false;
        let mut failures = 0u32;
        let mut progressed = Instant::now();
        while start < events.len() {
            if !lease.held() {
                // Left unacknowledged, for the next holder.
                return;
            }
            let end = if one_by_one { start + 1 } else { events.len() };
            match self.flow.apply_remote(&events[start..end]).await {
                Ok(_) => {
                    self.stopped.clear();
                    for message in &carriers[start..end] {
                        self.ack(message, AckKind::Ack).await;
                    }
                    self.delivered
                        .fetch_add((end - start) as u64, Ordering::Relaxed);
                    self.batches.fetch_add(1, Ordering::Relaxed);
                    start = end;
                    failures = 0;
                }
                Err(e) if undecodable(&e) && !one_by_one => {
                    // Apply the events before the one this build cannot read, then stand still.
                    one_by_one = true;
                }
                Err(e) => {
                    failures += 1;
                    if undecodable(&e) {
                        self.stopped.set(&self.durable, &events[start], &e);
                    } else {
                        warn!(consumer = %self.durable, position = events[start].position.0, error = %e, retry = failures, "apply failed; retrying");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                    if progressed.elapsed() >= ack_wait / 2 && lease.held() {
                        progressed = Instant::now();
                        for message in &carriers[start..] {
                            self.ack(message, AckKind::Progress).await;
                        }
                    }
                }
            }
        }
    }

    async fn ack(&self, message: &jetstream::Message, ack: AckKind) {
        if let Err(e) = message.ack_with(ack).await {
            warn!(consumer = %self.durable, error = %e, "ack failed");
        }
    }
}
