//! NATS JetStream transport for sourceflow: commands handled in another process, events
//! published to other services.
//!
//! - [`NatsCommandDispatcher`] plugs into [`Builder::dispatcher`](sourceflow::Builder::dispatcher):
//!   the commands it routes go to JetStream instead of the local saga, partitioned by entity
//!   stream, and `send` returns the remote handler's receipt (or error).
//! - [`NatsCommandWorker`] handles them with [`SourceFlow::dispatch_local`](sourceflow::SourceFlow::dispatch_local) against the shared
//!   store: the workers share the partitions out by lease, each runs several commands at once,
//!   one entity's commands one at a time and in order; a dead worker's partitions are taken
//!   over by the others; duplicates are answered with the original receipt.
//! - [`NatsEventPublisher`] follows the event log and publishes every committed event,
//!   deduplicated by message id, one publisher per topology at a time; [`NatsViewFeeder`]
//!   applies them to another process's views in batches, and [`NatsEventSubscriber`] to a
//!   hand-written handler, exactly once. A read side that shares the workers' store needs
//!   neither: [`SourceFlow::follow`](sourceflow::SourceFlow::follow) applies the store's log
//!   directly, without a second copy of it on JetStream.
//!
//! Commands and events carry the W3C trace context of the span that sent them, and the worker
//! or subscriber handles them in that trace: see [`trace`] for the spans and their fields.
//!
//! The [`wire`] module documents the headers. A message a worker cannot read (unknown wire
//! name, undecodable payload or envelope) is terminated, logged and counted, never retried.
//!
//! ```no_run
//! use sourceflow::prelude::*;
//! use sourceflow_nats::{NatsCommandDispatcher, NatsCommandWorker, Topology};
//! # #[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, Entity)]
//! # #[entity(name = "doc.Counter")] struct Counter { n: i64 }
//! # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Command)]
//! # #[command(name = "doc.Bump")] struct Bump;
//! # #[derive(Default)] struct CounterSaga;
//! # #[saga(entity = Counter)] impl CounterSaga {
//! #     #[handles] async fn bump(&self, c: &mut Counter, _: &Bump, _: &mut SagaContext) { c.n += 1; }
//! # }
//!
//! # async fn demo(store: std::sync::Arc<dyn sourceflow::store::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let topology = Topology::new("doc").partitions(8);
//!
//! // The worker process: handles commands against the shared store.
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let flow = SourceFlow::builder().shared_store(store).build().await?;
//! let worker = NatsCommandWorker::new(client, flow, topology.clone());
//! tokio::spawn(async move { worker.run().await });
//!
//! // The API process: `send` travels over NATS and returns the worker's receipt.
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let dispatcher = NatsCommandDispatcher::builder(client, topology).route::<Bump>().build().await?;
//! let api = SourceFlow::builder().store(MemoryStore::new()).dispatcher(dispatcher).build().await?;
//! let receipt = api.send("c-1", Bump).await?;
//! assert!(receipt.sequence.0 >= 1);
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! ## Partitions, leases and order
//! A command goes to subject `<prefix>.cmd.<p>`, where `p = fnv1a(stream) % partitions`, in
//! the stream `<prefix>_commands`. Each partition has one durable pull consumer,
//! `<prefix>_cmd_p<p>`, with `max_ack_pending` = the workers' [`window`](NatsCommandWorker::window).
//!
//! One worker at a time owns a partition: it holds the partition's lease, a message in the
//! in-memory stream `<prefix>_leases` that it renews six times per
//! [`lease_ttl`](Topology::lease_ttl) and that ages out when it stops (see below). Each worker
//! also holds a membership lease; every renewal it counts the live workers and moves towards
//! `ceil(partitions / workers)` partitions, taking free ones and giving up extra ones once their
//! commands in flight are answered. Within its partitions a worker runs up to `window` commands
//! at once, queued per entity stream, so
//! - one entity's commands run one at a time, in the order they were published, while
//!   commands of different entities run side by side;
//! - adding a worker adds handlers: partitions spread over the workers, and no two workers
//!   handle one entity (its commands reach the owner, whose entity cache stays current);
//! - a transient store fault holds the failing command (and its entity's later ones) in place
//!   and retries it, while the partition's other entities go on.
//!
//! Failover: a worker that dies stops renewing; its leases age out within `lease_ttl` and the
//! others take its partitions. The commands it held unanswered are redelivered by JetStream
//! after `ack_wait`, before any newer command of the partition: a new owner that finds
//! commands in flight elsewhere waits until they are acknowledged or `ack_wait` has passed
//! (a worker that loses a lease stops pulling, stops extending deadlines and drops its
//! handlers before the lease can be taken), then collects everything its first pull brings
//! and puts each entity's commands in command stream order before running any (JetStream
//! redelivers in the order messages expired). A command that was committed but not
//! acknowledged runs again as a duplicate: `dispatch_local` finds its message id in the store
//! and returns the original receipt, so nothing is applied twice.
//!
//! That lookup is a store read per command, needed only when the message id may have been
//! stored before. The dispatcher marks a command whose id `send` generated for it
//! ([`OutgoingCommand::first_send`](sourceflow::OutgoingCommand::first_send), header
//! `Sf-First-Send`), and the worker runs such a command's first delivery (JetStream's delivery
//! count 1) through `dispatch_first_delivery`, without the lookup. A redelivery, a resend with
//! an idempotency key and a retry after a store fault are looked up; an id stored all the same
//! is still answered with the original receipt by the commit.
//!
//! While commands are held (running or queued behind their entity's earlier ones), the worker
//! extends their deadlines with `+WPI` (progress) acks every half `ack_wait`, all of them at
//! once in command stream order, so a slow handler is not mistaken for a dead worker and held
//! commands expire in their order.
//!
//! Leases use `Nats-Expected-Last-Subject-Sequence` for compare-and-set and the stream's
//! `max_age` for expiry, so only the NATS server's clock decides; a holder counts on its lease
//! only until `renewal + lease_ttl - 2 s` (its pull requests expire within 1 s), so its last
//! request is closed before anyone else can take the lease. Every worker of a topology should
//! run this version: older workers pulled every partition with one command in flight.
//!
//! ## Replies and errors
//! With [`Delivery::Reply`] the sender names a subject of its own in `Sf-Reply-To`
//! (`<inbox>.<n>`: a dispatcher subscribes once to `<inbox>.*` and hands each reply to the send
//! awaiting it, so a command costs no SUB and UNSUB; a reply that comes after its send gave up
//! reaches no other send), publishes the command (waiting for JetStream to store it) and waits
//! up to its timeout for the worker's answer: the receipt, or the handler's error rebuilt as the same
//! [`sourceflow::Error`] variant (`Rejected` keeps its code, `Invalid` its violations). NATS
//! faults and a missing reply reach the caller as `Error::Store(StoreError::Transient(..))`
//! wrapping a [`NatsError`]: the command may still run, and resending it with the same
//! message id ([`SendOptions::message_id`](sourceflow::SendOptions::message_id)) returns its
//! receipt without running it twice. With [`Delivery::Enqueue`] `send` returns once JetStream
//! has stored the command.
//!
//! A worker terminates (`AckKind::Term`) a message whose envelope it cannot read, whose wire
//! name no command type has, whose payload does not decode, or that no saga handles; it logs
//! it, counts it ([`NatsCommandWorker::poisoned`], metric `sourceflow.nats.poison`) and
//! answers the sender if one waits. A transient store fault leaves the command queued (`Nak`
//! with a delay); the partition waits for it, so order is kept.
//!
//! ## Nothing lost, nothing applied twice
//! The publisher follows the store's global log ([`SourceFlow::subscribe`](sourceflow::SourceFlow::subscribe)) from the position
//! it last recorded and publishes each event with `Nats-Msg-Id` = the event's message id,
//! keeping up to [`window`](NatsEventPublisher::window) events in flight. Each one names its
//! predecessor in `Nats-Expected-Last-Msg-Id`, so JetStream refuses it unless the event
//! before it is the stream's last: a publish that fails cannot be overtaken, and the
//! publisher sends the events from the failed one on again (those already stored come back
//! as duplicates). It records the last position JetStream acknowledged (with every earlier
//! one) every `checkpoint_every` events and whenever the log is idle. A crash between commit
//! and publish loses nothing (the log still holds the event); a crash after publish but
//! before the position is recorded re-publishes, and JetStream drops the repeat within its
//! duplicate window. JetStream checks duplicates before the predecessor, so two publishers of
//! one log keep the stream in log order too: racing at its head, one at worst resends what the
//! other stored.
//!
//! The subscriber keeps the last global position it applied in the store and commits the
//! handler's view-model writes together with that position
//! ([`Store::commit_projection`](sourceflow::store::Store::commit_projection)), so a
//! redelivered or re-published event is recognised and skipped.
//!
//! # Metrics
//! | name | what |
//! | --- | --- |
//! | `sourceflow.nats.poison` | messages terminated because they cannot be read |
//! | `sourceflow.nats.published` | events published by a [`NatsEventPublisher`] |

mod command;
mod error;
mod event;
mod lease;
mod pull;
pub mod trace;
pub mod wire;
mod worker;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use sourceflow::StreamId;

pub use command::{Delivery, DispatcherBuilder, NatsCommandDispatcher};
pub use error::NatsError;
pub use event::{EventHandler, NatsEventPublisher, NatsEventSubscriber, NatsViewFeeder};
pub use trace::TraceContext;
pub use worker::NatsCommandWorker;

/// Where a deployment's commands and events live in JetStream. Every sender, worker,
/// publisher and subscriber of one deployment uses the same topology.
///
/// With prefix `p` and `n` partitions:
/// - commands: stream `p_commands`, subjects `p.cmd.0` .. `p.cmd.<n-1>`, consumers `p_cmd_p<k>`;
/// - events: stream `p_events`, subjects `p.evt.<entity type>`.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    partitions: u32,
    duplicate_window: Duration,
    lease_ttl: Duration,
    storage: stream::StorageType,
}

impl Topology {
    /// A topology named `prefix` (letters, digits, `_` and `-`), with 16 partitions, a two
    /// minute duplicate window, 6 second leases and file storage.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            partitions: 16,
            duplicate_window: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(6),
            storage: stream::StorageType::File,
        }
    }

    /// How many command partitions (at least 1). Changing it on a live deployment moves
    /// streams between partitions: drain the commands first.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// How long JetStream remembers message ids to drop re-publishes (default 2 minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How long a lease (a worker's partition, the publisher's role) outlives its holder's last
    /// renewal (default 6 s, at least 4 s). Holders renew six times per period. A dead
    /// worker's partitions move to the others within about this long, plus the consumers'
    /// `ack_wait` if it held commands. Every process of a topology should agree; the lease
    /// stream is created with the first value seen.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(4));
        self
    }

    /// Keeps the streams in memory instead of files (tests, benchmarks).
    pub fn in_memory(mut self) -> Self {
        self.storage = stream::StorageType::Memory;
        self
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The command stream's name.
    pub fn command_stream(&self) -> String {
        format!("{}_commands", self.prefix)
    }

    /// The event stream's name.
    pub fn event_stream(&self) -> String {
        format!("{}_events", self.prefix)
    }

    /// The lease stream's name (always in memory: leases do not outlive the server).
    pub fn lease_stream(&self) -> String {
        format!("{}_leases", self.prefix)
    }

    /// The partition of an entity stream: FNV-1a of `type/id`, stable across processes.
    pub fn partition_of(&self, stream: &StreamId) -> u32 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = stream
            .entity_type
            .as_bytes()
            .iter()
            .chain(b"/")
            .chain(stream.id.as_str().as_bytes());
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        u32::try_from(hash % u64::from(self.partitions)).unwrap_or(0)
    }

    fn partition_subject(&self, partition: u32) -> String {
        format!("{}.cmd.{partition}", self.prefix)
    }

    fn partition_consumer(&self, partition: u32) -> String {
        format!("{}_cmd_p{partition}", self.prefix)
    }

    fn command_subject(&self, stream: &StreamId) -> String {
        self.partition_subject(self.partition_of(stream))
    }

    /// The subject an entity type's events are published on (characters a subject cannot
    /// hold become `_`).
    pub fn event_subject(&self, entity_type: &str) -> String {
        format!("{}.evt.{}", self.prefix, subject_token(entity_type))
    }

    fn event_filter(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    async fn ensure(
        &self,
        jetstream: &jetstream::Context,
        name: String,
        subject: String,
    ) -> Result<stream::Stream, NatsError> {
        check_name(&self.prefix)?;
        get_or_create_stream(
            jetstream,
            stream::Config {
                name,
                subjects: vec![subject],
                storage: self.storage,
                duplicate_window: self.duplicate_window,
                ..Default::default()
            },
        )
        .await
    }

    async fn ensure_command_stream(
        &self,
        jetstream: &jetstream::Context,
    ) -> Result<stream::Stream, NatsError> {
        self.ensure(
            jetstream,
            self.command_stream(),
            format!("{}.cmd.*", self.prefix),
        )
        .await
    }

    async fn ensure_event_stream(
        &self,
        jetstream: &jetstream::Context,
    ) -> Result<stream::Stream, NatsError> {
        self.ensure(jetstream, self.event_stream(), self.event_filter())
            .await
    }

    /// Deletes the topology's streams and their consumers (tests, teardown). Absent streams
    /// are fine.
    ///
    /// # Errors
    /// [`NatsError::Setup`] if JetStream refuses.
    pub async fn delete_streams(&self, jetstream: &jetstream::Context) -> Result<(), NatsError> {
        for name in [
            self.command_stream(),
            self.event_stream(),
            self.lease_stream(),
        ] {
            match jetstream.delete_stream(&name).await {
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {}
                Err(e) => return Err(NatsError::Setup(e.into())),
            }
        }
        Ok(())
    }
}

/// Gets the stream, or creates it. Processes that start together race to create it, and the
/// server may refuse the loser (for example as overlapping its own subjects): a refused
/// creation is retried a few times, by which time the stream exists.
async fn get_or_create_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let mut attempt = 0u32;
    loop {
        match jetstream.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(e) if attempt < 4 => {
                attempt += 1;
                tracing::debug!(stream = %config.name, error = %e, attempt, "creating a stream failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => return Err(NatsError::Setup(e.into())),
        }
    }
}

/// Creates the durable pull consumer, or updates it to `config`, retrying a refusal a few
/// times as [`get_or_create_stream`] does (workers that start together race for it).
async fn create_consumer(
    stream: &stream::Stream,
    config: jetstream::consumer::pull::Config,
) -> Result<jetstream::consumer::PullConsumer, NatsError> {
    let mut attempt = 0u32;
    loop {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if attempt < 4 => {
                attempt += 1;
                tracing::debug!(consumer = ?config.durable_name, error = %e, attempt, "creating a consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => return Err(NatsError::Setup(e.into())),
        }
    }
}

/// `name` as subject tokens: characters a subject cannot hold become `_`, and so does an
/// empty token.
fn subject_token(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned
        .trim_matches('.')
        .split('.')
        .map(|token| if token.is_empty() { "_" } else { token })
        .collect::<Vec<_>>()
        .join(".")
}

/// Stream and consumer names: no dots, spaces or wildcards.
fn check_name(name: &str) -> Result<(), NatsError> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(NatsError::Config(format!(
            "{name:?}: use letters, digits, `_` and `-`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_in_range() {
        let topology = Topology::new("t").partitions(7);
        let stream = StreamId::new("bank.Account", "acc-42");
        let p = topology.partition_of(&stream);
        assert!(p < 7);
        assert_eq!(p, topology.partition_of(&stream.clone()));
        let spread: std::collections::HashSet<u32> = (0..200)
            .map(|i| topology.partition_of(&StreamId::new("bank.Account", i as u64)))
            .collect();
        assert_eq!(spread.len(), 7, "200 streams reach every partition");
    }

    #[test]
    fn event_subjects_are_valid_tokens() {
        let topology = Topology::new("t");
        assert_eq!(topology.event_subject("bank.Account"), "t.evt.bank.Account");
        assert_eq!(topology.event_subject("a b*>"), "t.evt.a_b__");
        assert_eq!(topology.event_subject("a..b"), "t.evt.a._.b");
        assert_eq!(topology.event_subject("."), "t.evt._");
    }

    #[test]
    fn names_with_dots_are_refused() {
        assert!(check_name("ok_name-1").is_ok());
        assert!(check_name("no.dots").is_err());
        assert!(check_name("").is_err());
    }
}
