//! [`SourceFlow`]: the handle an application keeps, and its [`Builder`].

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{debug_span, error, warn, Instrument};

use crate::base::error::take_problems;
use crate::base::error::Error;
use crate::base::message::{
    Command, CommandReceipt, Entity, EntityId, Envelope, Position, RecordedEvent, Sequence,
    StoredCommand, StreamId, ViewModel,
};
use crate::base::validate::Violations;
use crate::codec::{
    command_record, decode_model, ErasedComponent, ErasedMessage, ErasedState, StateVtable,
    TypeKind, TypeRecord,
};
use crate::context::saga::{CommandStreams, SagaContext};
use crate::read::subscriber::Subscriber;
use crate::routes::{ComponentKind, ComponentRecord, HandleFn, Registry, RouteFn};
use crate::store::{Page, Store, StoreAdmin, StoreError, UnitOfWork};
use crate::write::bus::{CommandDispatcher, OutgoingCommand, RetryPolicy, SendOptions};
use crate::write::cache::{EntityCache, StreamLocks};

/// A saga method that handles one command type, with everything needed to run it.
pub(crate) struct SagaRoute {
    pub(crate) saga: ErasedComponent,
    pub(crate) saga_name: &'static str,
    pub(crate) method: &'static str,
    pub(crate) handle: HandleFn,
    pub(crate) state: Option<StateVtable>,
    pub(crate) command: TypeRecord,
}

/// Counters of what this handle has done since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands committed.
    pub committed: u64,
    /// Handler re-runs after a concurrency conflict.
    pub conflicts_retried: u64,
    /// Commands acknowledged as duplicates of an accepted message id.
    pub duplicates: u64,
    /// Commands refused by their handler or by validation.
    pub rejected: u64,
    /// Events applied by views and aggregates.
    pub events_projected: u64,
    /// View batches committed inline, in the same transaction as the command that emitted
    /// their events (the fast path); the others were projected after the commit.
    pub projected_inline: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) committed: AtomicU64,
    pub(crate) conflicts_retried: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) events_projected: AtomicU64,
    pub(crate) projected_inline: AtomicU64,
}

pub(crate) struct FlowInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sagas: HashMap<TypeId, SagaRoute>,
    pub(crate) subscribers: Vec<Arc<Subscriber>>,
    pub(crate) streams: CommandStreams,
    pub(crate) dispatchers: Vec<Arc<dyn CommandDispatcher>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) counters: Counters,
    pub(crate) head: tokio::sync::watch::Sender<Position>,
    pub(crate) outbox_dirty: AtomicBool,
    pub(crate) drain_lock: tokio::sync::Mutex<()>,
    pub(crate) drain_outbox: bool,
    pub(crate) background: Arc<tokio::sync::Notify>,
    pub(crate) entities: EntityCache,
    pub(crate) stream_locks: StreamLocks,
    /// Commands of this process between handler and commit: the inline fast path is for a
    /// command alone in flight; concurrent commands are grouped instead.
    pub(crate) in_flight: AtomicUsize,
    /// The events this process committed last, decoded, by position: a projection that
    /// catches up with other commands of this process takes them from here instead of reading
    /// and decoding them back from the store.
    pub(crate) recent: crate::read::subscriber::Recent,
}

/// Counts a command in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running application: send commands, read view models, replay and rebuild.
///
/// One concrete type, cheap to clone, `Send + Sync`: share it across tasks or keep it in a web
/// framework's state. Build it with [`SourceFlow::builder`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sourceflow::prelude::*;
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Command)]
/// struct Deposit { amount: i64 }
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// struct Deposited { amount: i64, balance: i64 }
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
/// struct Account { balance: i64 }
///
/// #[derive(Default)]
/// struct AccountSaga;
///
/// #[saga(entity = Account)]
/// impl AccountSaga {
///     #[handles]
///     async fn deposit(&self, account: &mut Account, cmd: &Deposit, cx: &mut SagaContext)
///         -> Result<(), DomainError>
///     {
///         account.balance += cmd.amount;
///         cx.publish(Deposited { amount: cmd.amount, balance: account.balance });
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sourceflow::Error> {
/// let flow = SourceFlow::builder().store(MemoryStore::new()).build().await?;
/// let id = EntityId::from("acct-1");
/// let receipt = flow.send(&id, Deposit { amount: 100 }).await?;
/// assert_eq!(receipt.sequence, Sequence(1));
/// assert_eq!(flow.replay::<Account>(&id).await?.balance, 100);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SourceFlow {
    pub(crate) inner: Arc<FlowInner>,
}

impl std::fmt::Debug for SourceFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFlow")
            .field("store", &self.inner.store)
            .field("sagas", &self.inner.sagas.len())
            .field("subscribers", &self.inner.subscribers.len())
            .finish_non_exhaustive()
    }
}

/// A point in a stream's history for [`SourceFlow::state_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// After the command with this sequence.
    Sequence(Sequence),
    /// After every command sent at or before this instant.
    Time(DateTime<Utc>),
}

impl From<Sequence> for At {
    fn from(value: Sequence) -> Self {
        At::Sequence(value)
    }
}

impl From<DateTime<Utc>> for At {
    fn from(value: DateTime<Utc>) -> Self {
        At::Time(value)
    }
}

/// The outcome of [`SourceFlow::verify`].
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// Replaying the command log reproduced the stored events and the stored state.
    Consistent {
        /// The last sequence checked.
        sequence: Sequence,
    },
    /// Replaying produced something else: a handler is not deterministic, or stored data was
    /// changed behind the log's back.
    Differs {
        /// The first command sequence whose replay differs (in events, or in the final state
        /// when the events all match).
        sequence: Sequence,
        /// What differs, for a human.
        detail: String,
    },
    /// There is no stored state to compare with (the cache was dropped); the log replays fine.
    NoStoredState {
        /// The last sequence replayed.
        sequence: Sequence,
    },
}

/// Commands a replay reads per page.
const REPLAY_PAGE: u64 = 1_000;

struct Replayed {
    last: Sequence,
    state: Option<ErasedState>,
}

/// A stream's command log up to `to`, read in pages of [`REPLAY_PAGE`] as a replay consumes
/// it. Stores check that a page is dense; this also checks the seams between pages, so a
/// command missing at the end of a page is reported rather than taken for the end of the log.
struct CommandPages<'a> {
    stream: &'a StreamId,
    to: Option<Sequence>,
    page: std::collections::VecDeque<StoredCommand>,
    /// The last sequence read from the store, and the last one handed out.
    fetched: Sequence,
    returned: Sequence,
    done: bool,
}

impl<'a> CommandPages<'a> {
    fn new(stream: &'a StreamId, to: Option<Sequence>) -> Self {
        Self {
            stream,
            to,
            page: std::collections::VecDeque::new(),
            fetched: Sequence::ZERO,
            returned: Sequence::ZERO,
            done: false,
        }
    }

    async fn next(&mut self, store: &dyn Store) -> Result<Option<StoredCommand>, Error> {
        if self.page.is_empty() && !self.done {
            let page_end = Sequence(self.fetched.0 + REPLAY_PAGE);
            let end = self.to.map_or(page_end, |to| to.min(page_end));
            if end <= self.fetched {
                self.done = true;
            } else {
                let commands = store
                    .load_commands(self.stream, self.fetched.next(), Some(end))
                    .await?;
                match commands.last() {
                    // A short page ends the log, unless a missing command cut it short: the
                    // next read (from just after it) then finds nothing, or reports the gap.
                    Some(last) => self.fetched = last.sequence,
                    None => self.done = true,
                }
                self.page.extend(commands);
            }
        }
        let Some(next) = self.page.pop_front() else {
            return Ok(None);
        };
        let expected = self.returned.next();
        if next.sequence != expected {
            return Err(StoreError::Gap {
                stream: self.stream.clone(),
                expected,
                found: next.sequence,
            }
            .into());
        }
        self.returned = next.sequence;
        Ok(Some(next))
    }
}

/// A stream's recorded events, read in pages of [`REPLAY_PAGE`] as [`SourceFlow::verify`]
/// consumes them.
struct EventPages<'a> {
    stream: &'a StreamId,
    page: std::collections::VecDeque<RecordedEvent>,
    next: Sequence,
    done: bool,
}

impl<'a> EventPages<'a> {
    fn new(stream: &'a StreamId) -> Self {
        Self {
            stream,
            page: std::collections::VecDeque::new(),
            next: Sequence(1),
            done: false,
        }
    }

    /// The next event if it was recorded under a command at or before `command`.
    async fn next_before(
        &mut self,
        store: &dyn Store,
        command: Sequence,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        if self.page.is_empty() && !self.done {
            let to = Sequence(self.next.0 + REPLAY_PAGE - 1);
            let events = store.read_stream_range(self.stream, self.next, to).await?;
            match events.last() {
                // A short page may be cut short by a missing event: the next read reports it.
                Some(last) => self.next = last.sequence.next(),
                None => self.done = true,
            }
            self.page.extend(events);
        }
        Ok(self
            .page
            .front()
            .is_some_and(|e| e.command_sequence <= command)
            .then(|| self.page.pop_front())
            .flatten())
    }
}

impl SourceFlow {
    /// Starts configuring a flow.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The store behind this flow (for tooling: listings, exports, inspection).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// What this handle has done so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            committed: c.committed.load(Ordering::Relaxed),
            conflicts_retried: c.conflicts_retried.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            events_projected: c.events_projected.load(Ordering::Relaxed),
            projected_inline: c.projected_inline.load(Ordering::Relaxed),
        }
    }

    /// Sends a command to entity `id` and waits until it is committed and every in-process view
    /// and aggregate has applied its events (read your writes).
    ///
    /// # Errors
    /// - [`Error::Invalid`] if the command (or an event it emits) fails validation;
    /// - [`Error::Rejected`] if the handler refuses it;
    /// - [`Error::NoHandler`] if no saga handles it;
    /// - [`Error::Concurrency`] if other writers kept winning beyond the retry policy;
    /// - [`Error::Store`] if the store fails.
    ///
    /// In every error case nothing was stored.
    pub async fn send<C: Command>(
        &self,
        id: impl Into<EntityId>,
        command: C,
    ) -> Result<CommandReceipt, Error> {
        self.send_with(id, command, SendOptions::default()).await
    }

    /// [`send`](Self::send) with a caller-chosen message id (idempotency key) or correlation id.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_with<C: Command>(
        &self,
        id: impl Into<EntityId>,
        command: C,
        options: SendOptions,
    ) -> Result<CommandReceipt, Error> {
        let id = id.into();
        let Some(entity_type) = self.inner.streams.get(&TypeId::of::<C>()).cloned() else {
            return Err(Error::NoHandler {
                message: C::NAME.to_owned(),
            });
        };
        // Validation runs in the pipeline (`execute`), the one place every command passes:
        // sent here, drained from the outbox, or received from a remote transport.
        let stream = StreamId::new(entity_type, id);
        let payload = serde_json::to_vec(&command).map_err(|source| Error::Decode {
            name: C::NAME.to_owned(),
            stream: stream.to_string(),
            sequence: 0,
            source,
        })?;
        let (generated, timestamp) = crate::base::message::id_and_now();
        let message_id = options.message_id.unwrap_or(generated);
        let command = OutgoingCommand {
            envelope: Envelope {
                message_id,
                name: Cow::Borrowed(C::NAME),
                version: 1,
                stream,
                correlation_id: options.correlation_id.unwrap_or(message_id),
                causation_id: options.causation_id,
                timestamp,
            },
            payload,
            message: Arc::new(command),
        };
        let check_duplicate = options.message_id.is_some();
        if self.inner.dispatchers.iter().any(|d| d.accepts(&command)) {
            return self.dispatch(command, check_duplicate, true).await;
        }
        // The local pipeline, awaited in place (no boxed future on the hot path).
        let receipt = self.run_local(&command, check_duplicate).await?;
        self.drain_outbox().await;
        Ok(receipt)
    }

    /// Runs a command that arrived as an envelope and JSON payload (from a remote transport)
    /// through the local pipeline. The message id is checked for duplicates.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`Error::UnknownMessage`] / [`Error::Decode`] for a payload
    /// no registered command type matches.
    pub async fn dispatch_local(
        &self,
        envelope: Envelope,
        payload: Vec<u8>,
    ) -> Result<CommandReceipt, Error> {
        let record = command_record(&envelope.name).ok_or_else(|| Error::UnknownMessage {
            name: envelope.name.to_string(),
            stream: envelope.stream.to_string(),
            sequence: 0,
        })?;
        let message = (record.decode)(&payload).map_err(|source| Error::Decode {
            name: envelope.name.to_string(),
            stream: envelope.stream.to_string(),
            sequence: 0,
            source,
        })?;
        let command = OutgoingCommand {
            envelope,
            payload,
            message,
        };
        let receipt = self.run_local(&command, true).await?;
        self.drain_outbox().await;
        Ok(receipt)
    }

    pub(crate) fn dispatch(
        &self,
        command: OutgoingCommand,
        check_duplicate: bool,
        top_level: bool,
    ) -> futures_util::future::BoxFuture<'_, Result<CommandReceipt, Error>> {
        Box::pin(async move {
            for dispatcher in &self.inner.dispatchers {
                if dispatcher.accepts(&command) {
                    return dispatcher.dispatch(command).await;
                }
            }
            let receipt = self.run_local(&command, check_duplicate).await?;
            if top_level {
                self.drain_outbox().await;
            }
            Ok(receipt)
        })
    }

    /// The local pipeline: load, handle, commit, project.
    async fn run_local(
        &self,
        command: &OutgoingCommand,
        check_duplicate: bool,
    ) -> Result<CommandReceipt, Error> {
        let type_id = Any::type_id(&*command.message);
        let Some(route) = self.inner.sagas.get(&type_id) else {
            return Err(Error::NoHandler {
                message: command.envelope.name.to_string(),
            });
        };
        let span = debug_span!(
            "sourceflow.send",
            command = %command.envelope.name,
            stream = %command.envelope.stream,
            saga = route.saga_name,
            seq = tracing::field::Empty,
        );
        let started = Instant::now();
        // Futures are only wrapped in their span when something listens: the wrapper moves
        // the whole pipeline's state machine, a cost on every command otherwise.
        let executing = self.execute(route, command, check_duplicate);
        let (receipt, decoded) = if span.is_disabled() {
            executing.await?
        } else {
            executing.instrument(span.clone()).await?
        };
        if !span.is_disabled() {
            span.record("seq", receipt.sequence.0);
        }
        metrics::histogram!("sourceflow.command.duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if !receipt.duplicate {
            // With other commands in flight, one projection batch will likely cover this
            // command's events too: keep them at hand, decoded.
            if self.inner.in_flight.load(Ordering::Acquire) > 0 {
                self.inner.recent.record(&receipt.events, &decoded);
            }
            if let Some(last) = receipt.events.last() {
                // Wake subscribers only if there are any: without receivers the value is
                // still updated, and a subscriber that arrives later reads the store first.
                let wake = self.inner.head.receiver_count() > 0;
                self.inner.head.send_if_modified(|head| {
                    let moved = last.position > *head;
                    if moved {
                        *head = last.position;
                    }
                    moved && wake
                });
            }
            let projecting = self.project_after_commit(&receipt, decoded);
            if span.is_disabled() {
                projecting.await;
            } else {
                projecting.instrument(span).await;
            }
        }
        Ok(receipt)
    }

    async fn execute(
        &self,
        route: &SagaRoute,
        command: &OutgoingCommand,
        check_duplicate: bool,
    ) -> Result<(CommandReceipt, Vec<ErasedMessage>), Error> {
        let inner = &self.inner;
        let stream = &command.envelope.stream;
        if check_duplicate {
            if let Some(receipt) = inner
                .store
                .find_receipt(stream, command.envelope.message_id)
                .await?
            {
                inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sourceflow.commands.duplicates").increment(1);
                return Ok((receipt, Vec::new()));
            }
        }
        let mut violations = Violations::default();
        (route.command.validate)(&*command.message, &mut violations);
        if !violations.is_empty() {
            violations.message = route.command.name.to_owned();
            inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Invalid(violations));
        }
        // Commands to one stream from this process queue here instead of racing: a conflict
        // then only comes from another process (or another handle on the same store).
        let _turn = inner.stream_locks.lock(stream).await;
        let mut attempt: u32 = 0;
        let mut trust_cache = true;
        loop {
            attempt += 1;
            // The cached state is taken synchronously; only a miss awaits the store (boxed, so
            // the hot path does not carry the loading state machine).
            let cached = match (trust_cache, &route.state) {
                (true, Some(vtable)) => inner.entities.take(stream, vtable),
                _ => None,
            };
            let (expected, mut state, unverified, last_event) = match cached {
                Some((version, state, last_event)) => (version, Some(state), true, last_event),
                None => Box::pin(self.load_state(route, stream, trust_cache)).await?,
            };
            let mut cx = SagaContext::new(&command.envelope, false, inner.streams.clone());
            let handled = (route.handle)(
                &*route.saga,
                state.as_deref_mut().map(|s| s as &mut (dyn Any + Send)),
                &*command.message,
                &mut cx,
            )
            .await;
            if let Err(e) = handled.and_then(|()| take_problems(&mut cx.problems)) {
                // A refusal decided on this process's cached state stands only if no other
                // process has moved the stream since: a stale state that leads to a commit is
                // caught by the commit, one that leads to a refusal must be checked here.
                if unverified && inner.store.last_sequence(stream).await? != expected {
                    inner.entities.remove(stream);
                    trust_cache = false;
                    continue;
                }
                inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sourceflow.commands.rejected").increment(1);
                return Err(e);
            }
            let entity = match (&state, route.state) {
                (Some(state), Some(vtable)) => Some((vtable.encode)(state.as_ref()).map_err(
                    |source| Error::Decode {
                        name: vtable.name.to_owned(),
                        stream: stream.to_string(),
                        sequence: expected.next().0,
                        source,
                    },
                )?),
                _ => None,
            };
            let (events, decoded) = (cx.events, cx.decoded);
            let has_outbox = !cx.outbox.is_empty();
            // Views this process keeps up with apply the events now and commit with the unit:
            // one transaction per command, and a view never lags its command.
            //
            // Only for a command alone in flight: under concurrency the view's lock would be
            // held across this commit while other commands wait to project theirs, and after
            // the commit one projection batch covers every command committed meanwhile.
            let mut prepared: smallvec::SmallVec<[_; 2]> = smallvec::SmallVec::new();
            let mut projections = Vec::new();
            let _in_flight = InFlight::enter(&inner.in_flight);
            if let (Some(last_event), false, 1) = (
                last_event,
                events.is_empty(),
                inner.in_flight.load(Ordering::Acquire),
            ) {
                for subscriber in &inner.subscribers {
                    if let Some((ready, projection)) = subscriber
                        .prepare_inline(inner, stream, last_event.next(), &events, &decoded)
                        .await
                    {
                        prepared.push(ready);
                        projections.push(projection);
                    }
                }
            }
            let unit = UnitOfWork {
                expected,
                command: StoredCommand {
                    envelope: command.envelope.clone(),
                    sequence: expected.next(),
                    payload: command.payload.clone(),
                },
                entity,
                events,
                outbox: cx.outbox,
            };
            let committed = if projections.is_empty() {
                inner.store.commit(unit).await.map(|r| (r, Vec::new()))
            } else {
                inner.store.commit_inline(unit, projections).await
            };
            let (applied, last_position) = match &committed {
                Ok((receipt, applied)) if !receipt.duplicate => {
                    (&applied[..], receipt.events.last().map(|e| e.position))
                }
                _ => (&[][..], None),
            };
            for (i, ready) in prepared.into_iter().enumerate() {
                ready.settle(
                    inner,
                    applied.get(i).copied().unwrap_or(false),
                    last_position,
                );
            }
            match committed.map(|(receipt, _)| receipt) {
                Ok(mut receipt) => {
                    if receipt.duplicate {
                        inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("sourceflow.commands.duplicates").increment(1);
                        return Ok((receipt, Vec::new()));
                    }
                    receipt.retries = attempt - 1;
                    if let Some(state) = state {
                        let last_event = match receipt.events.last() {
                            Some(event) => Some(event.sequence),
                            None => last_event,
                        };
                        inner
                            .entities
                            .put(stream, receipt.sequence, state, last_event);
                    }
                    if has_outbox {
                        inner.outbox_dirty.store(true, Ordering::Release);
                    }
                    inner.counters.committed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("sourceflow.commands.committed").increment(1);
                    return Ok((receipt, decoded));
                }
                Err(StoreError::Conflict { .. }) => {
                    inner.entities.remove(stream);
                    inner
                        .counters
                        .conflicts_retried
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("sourceflow.commands.conflicts").increment(1);
                    if attempt >= inner.retry.max_attempts.max(1) {
                        return Err(Error::Concurrency {
                            stream: stream.clone(),
                            expected,
                            attempts: attempt,
                        });
                    }
                    trust_cache = false;
                    tokio::time::sleep(inner.retry.delay(attempt)).await;
                }
                Err(e) => return Err(Error::Store(e)),
            }
        }
    }

    /// The entity state a handler starts from when this process has none cached: the sequence
    /// it reflects, whether that is unverified (an assumed new stream: a refusal must then be
    /// checked against the head), and, when known, the stream's last event sequence.
    async fn load_state(
        &self,
        route: &SagaRoute,
        stream: &StreamId,
        trust_cache: bool,
    ) -> Result<(Sequence, Option<ErasedState>, bool, Option<Sequence>), Error> {
        let store = &self.inner.store;
        let Some(vtable) = route.state else {
            return Ok((store.last_sequence(stream).await?, None, false, None));
        };
        let cached = if trust_cache {
            self.get_entity_prefetching_models(stream).await?
        } else {
            store.get_entity(stream).await?
        };
        if cached.is_none() && trust_cache {
            // No stored state: most likely a new stream, so start from the default state
            // without asking for the head. If the stream does exist (its state was dropped),
            // the commit conflicts, or a refusal is re-checked against the head, as for a
            // cached state.
            return Ok((
                Sequence::ZERO,
                Some((vtable.default)()),
                true,
                Some(Sequence::ZERO),
            ));
        }
        let last = match (&cached, trust_cache) {
            // The unit of work saves the state with the command, so a stored version is the
            // stream's head unless someone dropped or bypassed the cache; a stale version shows
            // up as a conflict, after which the head is checked explicitly.
            (Some((version, _)), true) => *version,
            _ => store.last_sequence(stream).await?,
        };
        if let Some((version, bytes)) = cached {
            if version == last {
                if let Ok(state) = (vtable.decode)(&bytes) {
                    return Ok((version, Some(state), false, None));
                }
                // A state that no longer decodes (the type changed) is rebuilt from the log.
            }
        }
        if last == Sequence::ZERO {
            return Ok((last, Some((vtable.default)()), false, Some(Sequence::ZERO)));
        }
        let replayed = self
            .replay_stream(stream, Some(vtable), Some(last), None)
            .await?;
        Ok((replayed.last, replayed.state, false, None))
    }

    /// The stored entity of `stream`, read together with the models the views will most
    /// likely need for its events (their models keyed by the stream's id, when not cached):
    /// one round trip instead of one per view on the first command of a stream.
    async fn get_entity_prefetching_models(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        let store = &self.inner.store;
        let wanted: Vec<(&Subscriber, &'static str, Position)> = self
            .inner
            .subscribers
            .iter()
            .filter_map(|s| s.model_to_prefetch(stream).map(|(t, at)| (&**s, t, at)))
            .collect();
        if wanted.is_empty() {
            return store.get_entity(stream).await;
        }
        let keys: Vec<(&'static str, EntityId)> = wanted
            .iter()
            .map(|(_, model_type, _)| (*model_type, stream.id.clone()))
            .collect();
        let (entity, models) = store.get_entity_with_models(stream, &keys).await?;
        for ((subscriber, _, at), stored) in wanted.iter().zip(&models) {
            subscriber.offer_model(&stream.id, *at, stored.as_deref());
        }
        Ok(entity)
    }

    /// Re-runs the command log of `stream` against a fresh state, with `is_replay = true`,
    /// reading it in pages of [`REPLAY_PAGE`] commands: memory stays bounded however long the
    /// stream, and a time bound stops the reading where it stops the replay.
    async fn replay_stream(
        &self,
        stream: &StreamId,
        vtable: Option<StateVtable>,
        to: Option<Sequence>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Replayed, Error> {
        let mut state = vtable.map(|v| (v.default)());
        let mut last = Sequence::ZERO;
        let mut commands = CommandPages::new(stream, to);
        while let Some(stored) = commands.next(&*self.inner.store).await? {
            if until.is_some_and(|t| stored.envelope.timestamp > t) {
                break;
            }
            self.replay_command(stream, &stored, &mut state).await?;
            last = stored.sequence;
        }
        Ok(Replayed { last, state })
    }

    /// Runs one stored command of a replay against `state`; returns the events it published.
    async fn replay_command(
        &self,
        stream: &StreamId,
        stored: &StoredCommand,
        state: &mut Option<ErasedState>,
    ) -> Result<Vec<crate::base::message::NewEvent>, Error> {
        let record =
            command_record(&stored.envelope.name).ok_or_else(|| Error::UnknownMessage {
                name: stored.envelope.name.to_string(),
                stream: stream.to_string(),
                sequence: stored.sequence.0,
            })?;
        let message = (record.decode)(&stored.payload).map_err(|source| Error::Decode {
            name: stored.envelope.name.to_string(),
            stream: stream.to_string(),
            sequence: stored.sequence.0,
            source,
        })?;
        let route = self
            .inner
            .sagas
            .get(&(record.type_id)())
            .ok_or_else(|| Error::NoHandler {
                message: record.name.to_owned(),
            })?;
        let mut cx = SagaContext::new(&stored.envelope, true, self.inner.streams.clone());
        (route.handle)(
            &*route.saga,
            state.as_deref_mut().map(|s| s as &mut (dyn Any + Send)),
            &*message,
            &mut cx,
        )
        .await?;
        take_problems(&mut cx.problems)?;
        Ok(cx.events)
    }

    /// Rebuilds entity `E`'s state from its command log, saves it as the stored state and
    /// returns it. Nothing is appended and no event is re-delivered. The log is read in pages
    /// of 1,000 commands, so a long stream replays in bounded memory.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] / [`Error::Decode`] for a stored command that no longer
    /// decodes (naming its stream and sequence), [`Error::Rejected`] if a handler now refuses a
    /// command it once accepted, [`Error::Store`] on store faults (a command missing from the
    /// log is [`StoreError::Gap`](crate::store::StoreError::Gap)).
    pub async fn replay<E: Entity>(&self, id: impl Into<EntityId>) -> Result<E, Error> {
        let stream = StreamId::of::<E>(id);
        let (last, state) = self.rebuild_entity::<E>(&stream, None).await?;
        let bytes = serde_json::to_vec(&state).map_err(|source| Error::Decode {
            name: E::NAME.to_owned(),
            stream: stream.to_string(),
            sequence: last.0,
            source,
        })?;
        let store = &self.inner.store;
        let current = store.get_entity(&stream).await?.map(|(v, _)| v);
        if last > Sequence::ZERO && current.is_none_or(|v| v <= last) {
            match store
                .put_entity(&stream, current.unwrap_or(Sequence::ZERO), last, bytes)
                .await
            {
                // A concurrent command saved a newer state: keep it, it is just as exact.
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(state)
    }

    /// Entity `E`'s state after the command at a sequence, or at a point in time. Nothing is
    /// saved.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub async fn state_at<E: Entity>(
        &self,
        id: impl Into<EntityId>,
        at: impl Into<At>,
    ) -> Result<E, Error> {
        let stream = StreamId::of::<E>(id);
        Ok(self.rebuild_entity::<E>(&stream, Some(at.into())).await?.1)
    }

    async fn rebuild_entity<E: Entity>(
        &self,
        stream: &StreamId,
        at: Option<At>,
    ) -> Result<(Sequence, E), Error> {
        let (to, until) = match at {
            None => (None, None),
            Some(At::Sequence(s)) => (Some(s), None),
            Some(At::Time(t)) => (None, Some(t)),
        };
        let replayed = self
            .replay_stream(stream, Some(StateVtable::entity::<E>()), to, until)
            .await?;
        let state = replayed
            .state
            .and_then(|s| (s as Box<dyn Any>).downcast::<E>().ok())
            .map(|s| *s)
            .unwrap_or_default();
        Ok((replayed.last, state))
    }

    /// Replays entity `E`'s command log and compares the result with what is stored: the
    /// events each command recorded, then the stored state. Catches handlers that are not
    /// deterministic and data changed outside the framework. Commands and events are read in
    /// pages, so a long stream is verified in bounded memory.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub async fn verify<E: Entity>(&self, id: impl Into<EntityId>) -> Result<Verification, Error> {
        let stream = StreamId::of::<E>(id);
        let vtable = StateVtable::entity::<E>();
        // Commands and events are both read in pages, side by side: a command's events follow
        // its predecessors' in the stream, so memory stays bounded however long the stream.
        let mut state = Some((vtable.default)());
        let mut last = Sequence::ZERO;
        let mut recorded = EventPages::new(&stream);
        // Events recorded under a command that replay does not reach: reported only if every
        // replayed command matches (the first differing command is the more useful answer).
        let mut orphan: Option<Sequence> = None;
        let mut commands = CommandPages::new(&stream, None);
        while let Some(stored) = commands.next(&*self.inner.store).await? {
            let emitted = self.replay_command(&stream, &stored, &mut state).await?;
            let mut mine = Vec::new();
            while let Some(event) = recorded
                .next_before(&*self.inner.store, stored.sequence)
                .await?
            {
                if event.command_sequence < stored.sequence {
                    orphan.get_or_insert(event.command_sequence);
                } else {
                    mine.push(event);
                }
            }
            let mine: Vec<&RecordedEvent> = mine.iter().collect();
            if let Some(detail) = compare_events(&emitted, &mine) {
                return Ok(Verification::Differs {
                    sequence: stored.sequence,
                    detail,
                });
            }
            last = stored.sequence;
        }
        if let Some(event) = recorded
            .next_before(&*self.inner.store, Sequence(u64::MAX))
            .await?
        {
            orphan.get_or_insert(event.command_sequence);
        }
        if let Some(sequence) = orphan {
            return Ok(Verification::Differs {
                sequence,
                detail: "events recorded for a command that replay did not reach".to_owned(),
            });
        }
        let Some((version, bytes)) = self.inner.store.get_entity(&stream).await? else {
            return Ok(Verification::NoStoredState { sequence: last });
        };
        if version != last {
            return Ok(Verification::Differs {
                sequence: version.min(last).next(),
                detail: format!(
                    "stored state reflects sequence {version}, the log ends at {}",
                    last
                ),
            });
        }
        let stored: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
                name: E::NAME.to_owned(),
                stream: stream.to_string(),
                sequence: version.0,
                source,
            })?;
        let replayed_json = match &state {
            Some(state) => (vtable.to_json)(state.as_ref()).map_err(|source| Error::Decode {
                name: E::NAME.to_owned(),
                stream: stream.to_string(),
                sequence: version.0,
                source,
            })?,
            None => serde_json::Value::Null,
        };
        if stored != replayed_json {
            return Ok(Verification::Differs {
                sequence: last,
                detail: format!("stored state {stored} but replay gives {replayed_json}"),
            });
        }
        Ok(Verification::Consistent { sequence: last })
    }

    /// The view model `id` of type `M`, as its view last projected it.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults, [`Error::Decode`] if the stored model does not match `M`.
    pub async fn view_model<M: ViewModel>(
        &self,
        id: impl Into<EntityId>,
    ) -> Result<Option<M>, Error> {
        let id = id.into();
        let Some(bytes) = self.inner.store.get_model(M::NAME, &id).await? else {
            return Ok(None);
        };
        decode_model::<M>(&id, &bytes).map(Some)
    }

    /// A page of view models of type `M`, ordered by id.
    ///
    /// # Errors
    /// As [`view_model`](Self::view_model).
    pub async fn view_models<M: ViewModel>(&self, page: Page) -> Result<Vec<(EntityId, M)>, Error> {
        let rows = self.inner.store.list_models(M::NAME, page).await?;
        rows.into_iter()
            .map(|(id, bytes)| decode_model::<M>(&id, &bytes).map(|m| (id, m)))
            .collect()
    }

    /// Entity types that have at least one stream.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn entity_types(&self) -> Result<Vec<String>, Error> {
        Ok(self.inner.store.entity_types().await?)
    }

    /// A page of the stream ids of one entity type.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, Error> {
        Ok(self.inner.store.stream_ids(entity_type, page).await?)
    }

    /// Sends every command waiting in the outbox (left by a crash, or by another process), in
    /// order, each with its own message id so a repeat is acknowledged as a duplicate.
    pub(crate) async fn drain_outbox(&self) {
        if !self.inner.drain_outbox || !self.inner.outbox_dirty.load(Ordering::Acquire) {
            return;
        }
        let _guard = self.inner.drain_lock.lock().await;
        loop {
            self.inner.outbox_dirty.store(false, Ordering::Release);
            let pending = match self.inner.store.outbox_pending(64).await {
                Ok(pending) => pending,
                Err(e) => {
                    error!(error = %e, "cannot read the outbox; will retry on the next send");
                    self.inner.outbox_dirty.store(true, Ordering::Release);
                    return;
                }
            };
            if pending.is_empty() {
                return;
            }
            for entry in pending {
                let envelope = entry.message.envelope;
                let name = envelope.name.to_string();
                let stream = envelope.stream.to_string();
                let outcome = match command_record(&envelope.name) {
                    Some(record) => match (record.decode)(&entry.message.payload) {
                        Ok(message) => {
                            let command = OutgoingCommand {
                                envelope,
                                payload: entry.message.payload,
                                message,
                            };
                            self.dispatch(command, true, false).await
                        }
                        Err(source) => Err(Error::Decode {
                            name: name.clone(),
                            stream: stream.clone(),
                            sequence: 0,
                            source,
                        }),
                    },
                    None => Err(Error::UnknownMessage {
                        name: name.clone(),
                        stream: stream.clone(),
                        sequence: 0,
                    }),
                };
                match outcome {
                    Ok(_) => {}
                    Err(Error::Store(e)) if e.is_transient() => {
                        warn!(error = %e, command = %name, "follow-up command deferred");
                        self.inner.outbox_dirty.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        // A follow-up that can never succeed (refused, unknown, invalid) is
                        // reported and removed, not retried forever.
                        error!(error = %e, command = %name, stream = %stream, "follow-up command failed");
                        metrics::counter!("sourceflow.outbox.failed").increment(1);
                    }
                }
                if let Err(e) = self.inner.store.outbox_remove(&[entry.id]).await {
                    error!(error = %e, "cannot remove a sent outbox entry; it will be re-sent and acknowledged as a duplicate");
                    self.inner.outbox_dirty.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

fn compare_events(
    emitted: &[crate::base::message::NewEvent],
    stored: &[&RecordedEvent],
) -> Option<String> {
    if emitted.len() != stored.len() {
        return Some(format!(
            "replay emits {} events, {} are recorded",
            emitted.len(),
            stored.len()
        ));
    }
    for (new, old) in emitted.iter().zip(stored) {
        if new.envelope.name != old.envelope.name {
            return Some(format!(
                "replay emits {}, {} is recorded",
                new.envelope.name, old.envelope.name
            ));
        }
        let a: Option<serde_json::Value> = serde_json::from_slice(&new.payload).ok();
        let b: Option<serde_json::Value> = serde_json::from_slice(&old.payload).ok();
        if a != b {
            return Some(format!(
                "replay emits {} {}, recorded {}",
                new.envelope.name,
                a.unwrap_or_default(),
                b.unwrap_or_default()
            ));
        }
    }
    None
}

/// Configures and validates a [`SourceFlow`].
pub struct Builder {
    store: Option<Arc<dyn Store>>,
    instances: Vec<(TypeId, ComponentKind, &'static str, ErasedComponent)>,
    dispatchers: Vec<Arc<dyn CommandDispatcher>>,
    retry: RetryPolicy,
    no_discovery: bool,
    keep_outbox: bool,
    background: HashSet<TypeId>,
    entity_cache: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            store: None,
            instances: Vec::new(),
            dispatchers: Vec::new(),
            retry: RetryPolicy::default(),
            no_discovery: false,
            keep_outbox: false,
            background: HashSet::new(),
            entity_cache: 10_000,
        }
    }
}

impl Builder {
    /// The store to use: `MemoryStore`, `SqliteStore`, `PostgresStore` or your own.
    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared elsewhere.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Registers a `#[saga]` instance (needed when the type is not `Default`, or holds
    /// dependencies such as clients or configuration).
    pub fn saga<S: Send + Sync + 'static>(self, saga: S) -> Self {
        self.component(ComponentKind::Saga, saga)
    }

    /// Registers a `#[view]` instance.
    pub fn view<V: Send + Sync + 'static>(self, view: V) -> Self {
        self.component(ComponentKind::View, view)
    }

    /// Registers an `#[aggregate]` instance.
    pub fn aggregate<A: Send + Sync + 'static>(self, aggregate: A) -> Self {
        self.component(ComponentKind::Aggregate, aggregate)
    }

    fn component<T: Send + Sync + 'static>(mut self, kind: ComponentKind, value: T) -> Self {
        self.instances.push((
            TypeId::of::<T>(),
            kind,
            std::any::type_name::<T>(),
            Arc::new(value),
        ));
        self
    }

    /// Projects view `V` in the background instead of before `send` returns: higher
    /// throughput, but a read right after `send` may not see the command's events yet.
    /// [`SourceFlow::catch_up`] waits for it.
    pub fn background<V: 'static>(mut self) -> Self {
        self.background.insert(TypeId::of::<V>());
        self
    }

    /// Adds a dispatcher offered every command before the local one (a remote transport).
    pub fn dispatcher(mut self, dispatcher: impl CommandDispatcher) -> Self {
        self.dispatchers.push(Arc::new(dispatcher));
        self
    }

    /// How many entity states this process keeps in memory between commands (default
    /// 10,000; 0 disables the cache). A cached state is checked by the commit's expected
    /// sequence, so a write from another process is never missed, only costs a retry. A
    /// command hands the state to its handler and puts the new one back when it commits; a
    /// command that is refused or fails leaves no entry (its handler may have changed the
    /// state half-way), so the stream's next command reads it from the store.
    pub fn entity_cache(mut self, capacity: usize) -> Self {
        self.entity_cache = capacity;
        self
    }

    /// How conflicting writes are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Uses only the components registered with [`saga`](Self::saga), [`view`](Self::view) and
    /// [`aggregate`](Self::aggregate), instead of also discovering every `Default` one linked
    /// into the binary. Commands of sagas left out are then not reported as unhandled.
    pub fn without_discovery(mut self) -> Self {
        self.no_discovery = true;
        self
    }

    /// Leaves follow-up commands in the outbox instead of sending them (used by the testing
    /// harness to inspect them).
    pub(crate) fn keep_outbox(mut self) -> Self {
        self.keep_outbox = true;
        self
    }

    /// Validates the routing table, finishes what a crash interrupted (drains the outbox,
    /// catches views and aggregates up to the log) and returns the flow.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem at once: no store, a command no saga handles, a
    /// command handled by two sagas, a wire name used by two types, a registered value that is
    /// not a component, two views or aggregates with one name, a component that is not
    /// `Default` and was not registered. [`Error::Store`] if catching up fails.
    pub async fn build(self) -> Result<SourceFlow, Error> {
        let registry = Registry::global();
        let mut problems = Vec::new();
        let store = match self.store {
            Some(store) => Some(store),
            None => {
                problems.push(
                    "no store: call .store(MemoryStore::new()) (or SqliteStore / PostgresStore)"
                        .to_owned(),
                );
                None
            }
        };

        // Components: explicit instances first, then discovered Default ones.
        let mut chosen: Vec<(ComponentRecord, ErasedComponent)> = Vec::new();
        let mut seen = HashSet::new();
        for (type_id, kind, rust_name, instance) in self.instances {
            match registry.component(type_id) {
                Some(record) if record.kind == kind => {
                    if seen.insert(type_id) {
                        chosen.push((*record, instance));
                    } else {
                        problems.push(format!("`{rust_name}` is registered twice"));
                    }
                }
                Some(record) => problems.push(format!(
                    "`{rust_name}` is a {:?}, not a {kind:?}: register it with .{}(..)",
                    record.kind,
                    kind_method(record.kind)
                )),
                None => problems.push(format!(
                    "`{rust_name}` is not a #[{}] type (or its crate is not linked)",
                    kind_method(kind)
                )),
            }
        }
        let mut missing_instances: HashMap<TypeId, &'static str> = HashMap::default();
        if !self.no_discovery {
            let mut discovered: Vec<&ComponentRecord> = registry
                .components()
                .filter(|r| !seen.contains(&(r.type_id)()))
                .collect();
            discovered.sort_by_key(|r| r.name);
            for record in discovered {
                match (record.construct)() {
                    Some(instance) => chosen.push((*record, instance)),
                    None => {
                        missing_instances.insert((record.type_id)(), record.name);
                    }
                }
            }
        }

        // Sagas: one owner per command.
        let mut sagas: HashMap<TypeId, SagaRoute> = HashMap::default();
        let mut streams: HashMap<TypeId, Cow<'static, str>> = HashMap::default();
        for (record, instance) in chosen.iter().filter(|(r, _)| r.kind == ComponentKind::Saga) {
            for route in registry.routes_of((record.type_id)()) {
                let RouteFn::Handle(handle) = route.call else {
                    continue;
                };
                let command_id = (route.message)();
                let Some(command) = registry.type_record(command_id) else {
                    problems.push(format!(
                        "command {} of saga {} is not registered",
                        (route.message_name)(),
                        record.name
                    ));
                    continue;
                };
                if let Some(existing) = sagas.get(&command_id) {
                    problems.push(format!(
                        "command {} is handled by two sagas: {} and {}; each command needs exactly one owner",
                        command.name, existing.saga_name, record.name
                    ));
                    continue;
                }
                let stream_type = record.state.map_or(record.name, |s| s.name);
                streams.insert(command_id, Cow::Borrowed(stream_type));
                sagas.insert(
                    command_id,
                    SagaRoute {
                        saga: instance.clone(),
                        saga_name: record.name,
                        method: route.method,
                        handle,
                        state: record.state,
                        command: *command,
                    },
                );
            }
        }
        debug_assert!(sagas.values().all(|r| !r.method.is_empty()));

        // Commands nobody handles, and wire names used twice.
        let mut by_name: BTreeMap<&str, Vec<&TypeRecord>> = BTreeMap::new();
        for record in registry.types() {
            by_name.entry(record.name).or_default().push(record);
        }
        for (name, records) in &by_name {
            if records.len() > 1 {
                let mut types: Vec<&str> = records.iter().map(|r| (r.rust_name)()).collect();
                types.sort_unstable();
                problems.push(format!(
                    "wire name {name:?} is used by {}; give each a distinct name",
                    types.join(" and ")
                ));
            }
            for record in records {
                if record.kind != TypeKind::Command || sagas.contains_key(&(record.type_id)()) {
                    continue;
                }
                let owner = registry
                    .components()
                    .filter(|c| missing_instances.contains_key(&(c.type_id)()))
                    .find(|c| {
                        registry
                            .routes_of((c.type_id)())
                            .iter()
                            .any(|r| (r.message)() == (record.type_id)())
                    });
                match owner {
                    Some(owner) => problems.push(format!(
                        "command {name} is handled by saga {} which has no Default impl: register an instance with .saga(..)",
                        owner.name
                    )),
                    None if !self.no_discovery => {
                        problems.push(format!("command {name} has no saga handling it"));
                    }
                    None => {}
                }
            }
        }

        // Subscribers: views and aggregates.
        let mut subscribers = Vec::new();
        let mut subscriber_names = HashSet::new();
        let mut consumed = HashSet::new();
        for (record, instance) in chosen.iter().filter(|(r, _)| r.kind != ComponentKind::Saga) {
            if !subscriber_names.insert(record.name) {
                problems.push(format!(
                    "two views or aggregates are named {}; positions are kept per name, give one `name = \"..\"`",
                    record.name
                ));
                continue;
            }
            let routes = registry.routes_of((record.type_id)());
            consumed.extend(routes.iter().map(|r| (r.message)()));
            let background = record.background || self.background.contains(&(record.type_id)());
            match Subscriber::new(record, instance.clone(), routes, background) {
                Ok(subscriber) => subscribers.push(Arc::new(subscriber)),
                Err(problem) => problems.push(problem),
            }
        }
        for record in registry.types().filter(|r| r.kind == TypeKind::Event) {
            if !consumed.contains(&(record.type_id)()) {
                tracing::debug!(
                    event = record.name,
                    "no view or aggregate consumes this event"
                );
            }
        }

        let store = match (store, problems.is_empty()) {
            (Some(store), true) => store,
            _ => {
                problems.sort();
                problems.dedup();
                return Err(Error::Config(problems));
            }
        };
        // Follow-ups may target sagas of other services: route every registered saga's commands
        // to their stream type even when the saga is not part of this flow.
        for record in registry
            .components()
            .filter(|c| c.kind == ComponentKind::Saga)
        {
            for route in registry.routes_of((record.type_id)()) {
                streams
                    .entry((route.message)())
                    .or_insert(Cow::Borrowed(record.state.map_or(record.name, |s| s.name)));
            }
        }
        let head = store.head().await?;
        let flow = SourceFlow {
            inner: Arc::new(FlowInner {
                store,
                sagas,
                subscribers,
                streams: Arc::new(streams),
                dispatchers: self.dispatchers,
                retry: self.retry,
                counters: Counters::default(),
                head: tokio::sync::watch::Sender::new(head),
                outbox_dirty: AtomicBool::new(true),
                drain_lock: tokio::sync::Mutex::new(()),
                drain_outbox: !self.keep_outbox,
                background: Arc::new(tokio::sync::Notify::new()),
                entities: EntityCache::new(self.entity_cache),
                stream_locks: StreamLocks::new(),
                in_flight: AtomicUsize::new(0),
                recent: crate::read::subscriber::Recent::default(),
            }),
        };
        flow.catch_up().await?;
        flow.drain_outbox().await;
        flow.start_background();
        Ok(flow)
    }
}

fn kind_method(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Saga => "saga",
        ComponentKind::View => "view",
        ComponentKind::Aggregate => "aggregate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::validate::Violation;

    #[test]
    fn validation_problems_from_several_messages_are_merged() {
        let invalid = |message: &str, field: &str| {
            Error::Invalid(Violations {
                message: message.into(),
                items: vec![Violation {
                    field: field.into(),
                    message: "bad".into(),
                }],
            })
        };
        let mut problems = vec![
            invalid("a.Placed", "qty"),
            Error::NoHandler {
                message: "x".into(),
            },
            invalid("a.Priced", "price"),
        ];
        match take_problems(&mut problems) {
            Err(Error::Invalid(v)) => {
                assert_eq!(v.message, "a.Placed, a.Priced");
                assert_eq!(v.items.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(take_problems(&mut problems).is_ok());
    }
}
