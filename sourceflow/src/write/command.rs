//! A command's way through this process: validation, the saga's handler on the entity's state,
//! the atomic commit, and the hand-over to the read side.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug_span, Instrument};

use super::bus::{OutgoingCommand, SendOptions};
use super::{Projector, SagaRoute, WriteSide};
use crate::base::error::{take_problems, Error, Location};
use crate::base::message::{
    Command, CommandReceipt, EntityId, Envelope, Sequence, StoredCommand, StreamId,
};
use crate::base::validate::Violations;
use crate::codec::storable;
use crate::codec::{command_record, ErasedMessage, ErasedState};
use crate::context::SagaContext;
use crate::store::{StoreError, UnitOfWork};

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

impl WriteSide {
    /// [`send`](crate::SourceFlow::send) with a caller-chosen message id (idempotency key) or correlation id.
    ///
    /// # Errors
    /// As [`send`](crate::SourceFlow::send).
    pub(crate) async fn send_with<C: Command, P: Projector>(
        &self,
        projector: &P,
        id: impl Into<EntityId>,
        command: C,
        options: SendOptions,
    ) -> Result<CommandReceipt, Error> {
        let id = id.into();
        let Some(entity_type) = self.streams.get(&TypeId::of::<C>()).cloned() else {
            return Err(Error::NoHandler {
                message: C::NAME.to_owned(),
            });
        };
        // Validation runs in the pipeline (`execute`), the one place every command passes:
        // sent here, drained from the outbox, or received from a remote transport.
        let stream = StreamId::new(entity_type, id);
        let payload = storable::encode(&command).map_err(|e| {
            e.into_error(C::NAME, || Location::Sending {
                stream: stream.clone(),
            })
        })?;
        let (generated, timestamp) = crate::base::message::id_and_now();
        let message_id = options.message_id.unwrap_or(generated);
        let command = OutgoingCommand {
            envelope: Envelope {
                message_id,
                name: Cow::Borrowed(C::NAME),
                version: C::VERSION,
                stream,
                correlation_id: options.correlation_id.unwrap_or(message_id),
                causation_id: options.causation_id,
                timestamp,
            },
            payload,
            message: Arc::new(command),
            first_send: options.message_id.is_none(),
        };
        let check_duplicate = options.message_id.is_some();
        if self.dispatchers.iter().any(|d| d.accepts(&command)) {
            return self
                .dispatch(projector, command, check_duplicate, true)
                .await;
        }
        // The local pipeline, awaited in place (no boxed future on the hot path).
        let receipt = self.run_local(projector, &command, check_duplicate).await?;
        self.drain_outbox(projector).await;
        Ok(receipt)
    }

    /// Runs a command that arrived as an envelope and JSON payload (from a remote transport)
    /// through the local pipeline. The message id is checked for duplicates before the handler
    /// runs if `check_duplicate`.
    ///
    /// # Errors
    /// As [`send`](crate::SourceFlow::send), plus [`Error::UnknownMessage`] / [`Error::Decode`] for a payload
    /// no registered command type matches.
    pub(crate) async fn dispatch_local<P: Projector>(
        &self,
        projector: &P,
        envelope: Envelope,
        payload: Vec<u8>,
        check_duplicate: bool,
    ) -> Result<CommandReceipt, Error> {
        let at = || Location::Sending {
            stream: envelope.stream.clone(),
        };
        let record = command_record(&envelope.name).ok_or_else(|| Error::UnknownMessage {
            name: envelope.name.to_string(),
            at: at(),
        })?;
        // An older version is upcast for the handler and stored as it came (name, version and
        // payload): the log keeps what was sent, and every read upcasts it the same way.
        let message = record.decode_stored(&envelope.name, envelope.version, &payload, &at)?;
        let command = OutgoingCommand {
            envelope,
            payload,
            message,
            first_send: false,
        };
        let receipt = self.run_local(projector, &command, check_duplicate).await?;
        self.drain_outbox(projector).await;
        Ok(receipt)
    }

    pub(crate) fn dispatch<'a, P: Projector>(
        &'a self,
        projector: &'a P,
        command: OutgoingCommand,
        check_duplicate: bool,
        top_level: bool,
    ) -> futures_util::future::BoxFuture<'a, Result<CommandReceipt, Error>> {
        Box::pin(async move {
            for dispatcher in &self.dispatchers {
                if dispatcher.accepts(&command) {
                    return dispatcher.dispatch(command).await;
                }
            }
            let receipt = self.run_local(projector, &command, check_duplicate).await?;
            if top_level {
                self.drain_outbox(projector).await;
            }
            Ok(receipt)
        })
    }

    /// The local pipeline: load, handle, commit, project.
    async fn run_local<P: Projector>(
        &self,
        projector: &P,
        command: &OutgoingCommand,
        check_duplicate: bool,
    ) -> Result<CommandReceipt, Error> {
        let type_id = Any::type_id(&*command.message);
        let Some(route) = self.sagas.get(&type_id) else {
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
        // the whole pipeline's state machine, a cost on every command otherwise. Each branch
        // makes its own future where it is awaited, so the plain one is not moved either.
        let (receipt, decoded) = if span.is_disabled() {
            self.execute(projector, route, command, check_duplicate)
                .await?
        } else {
            self.execute(projector, route, command, check_duplicate)
                .instrument(span.clone())
                .await?
        };
        if !span.is_disabled() {
            span.record("seq", receipt.sequence.0);
        }
        metrics::histogram!("sourceflow.command.duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if !receipt.duplicate {
            // With other commands in flight, one projection batch will likely cover this
            // command's events too: keep them at hand, decoded.
            if self.in_flight.load(Ordering::Acquire) > 0 {
                projector.remember(&receipt.events, &decoded);
            }
            if let Some(last) = receipt.events.last() {
                // Wake subscribers only if there are any: without receivers the value is
                // still updated, and a subscriber that arrives later reads the store first.
                let wake = self.signals.head.receiver_count() > 0;
                self.signals.head.send_if_modified(|head| {
                    let moved = last.position > *head;
                    if moved {
                        *head = last.position;
                    }
                    moved && wake
                });
            }
            if span.is_disabled() {
                projector.project(&receipt, decoded).await;
            } else {
                projector.project(&receipt, decoded).instrument(span).await;
            }
        }
        Ok(receipt)
    }

    async fn execute<P: Projector>(
        &self,
        projector: &P,
        route: &SagaRoute,
        command: &OutgoingCommand,
        check_duplicate: bool,
    ) -> Result<(CommandReceipt, Vec<ErasedMessage>), Error> {
        let inner = self;
        let stream = &command.envelope.stream;
        if check_duplicate {
            if let Some(receipt) = inner
                .store
                .find_receipt(stream, command.envelope.message_id)
                .await?
            {
                inner
                    .signals
                    .counters
                    .duplicates
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sourceflow.commands.duplicates").increment(1);
                return Ok((receipt, Vec::new()));
            }
        }
        let mut violations = Violations::default();
        (route.command.validate)(&*command.message, &mut violations);
        if !violations.is_empty() {
            violations.message = route.command.name.to_owned();
            inner
                .signals
                .counters
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::Invalid(violations));
        }
        // Commands to one stream from this process queue here instead of racing: a conflict
        // then only comes from another process (or another handle on the same store).
        let _turn = inner.stream_locks.lock(stream).await;
        let mut attempt: u32 = 0;
        let mut trust_cache = true;
        loop {
            attempt += 1;
            let generation = inner.entities.generation();
            // The cached state is taken synchronously; only a miss awaits the store (boxed, so
            // the hot path does not carry the loading state machine).
            let cached = match (trust_cache, &route.state) {
                (true, Some(vtable)) => inner.entities.take(stream, vtable),
                _ => None,
            };
            let (expected, mut state, unverified, last_event) = match cached {
                Some((version, state, last_event)) => (version, Some(state), true, last_event),
                None => Box::pin(self.load_state(projector, route, stream, trust_cache)).await?,
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
                inner
                    .signals
                    .counters
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sourceflow.commands.rejected").increment(1);
                return Err(e);
            }
            let entity = match (&state, route.state) {
                (Some(state), Some(vtable)) => {
                    match vtable.encode_stored(state.as_ref()) {
                        Ok(bytes) => Some(bytes),
                        Err(e) => {
                            // Refused like a handler's refusal: nothing is stored.
                            inner.entities.remove(stream);
                            return Err(e.into_error(vtable.name, || Location::Stored {
                                stream: stream.clone(),
                                sequence: expected.next(),
                            }));
                        }
                    }
                }
                _ => None,
            };
            let scheduling = std::mem::take(&mut cx.scheduling);
            let (events, decoded) = (cx.events, cx.decoded);
            let has_outbox = !cx.outbox.is_empty();
            // Views this process keeps up with apply the events now and commit with the unit:
            // one transaction per command, and a view never lags its command.
            //
            // Only for a command alone in flight: under concurrency the view's lock would be
            // held across this commit while other commands wait to project theirs, and after
            // the commit one projection batch covers every command committed meanwhile.
            //
            // Concurrent commands commit in groups instead, with the views' projection of the
            // whole group, when the store offers that (`write/group.rs`).
            let _in_flight = InFlight::enter(&inner.in_flight);
            let alone = inner.in_flight.load(Ordering::Acquire) == 1;
            let (prepared, projections) = match (
                last_event,
                events.is_empty() || !scheduling.is_empty(),
                alone,
            ) {
                (Some(last_event), false, true) => {
                    projector
                        .prepare_inline(stream, last_event.next(), &events, &decoded)
                        .await
                }
                _ => Default::default(),
            };
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
                keys: Vec::new(),
            };
            // The scheduling and group branches are boxed: their state machines are the
            // largest, and unboxed they would size (and be moved with) every command's future,
            // on the paths that take neither too.
            let committing = async {
                if !scheduling.is_empty() {
                    // Schedules commit with the unit (without the inline fast path).
                    Box::pin(self.commit_scheduled(unit, scheduling))
                        .await
                        .map(|r| (r, Vec::new()))
                } else if let (false, Some(groups)) = (alone, inner.store.groups()) {
                    let first_sequence = last_event.map(Sequence::next);
                    Box::pin(self.commit_in_group(
                        projector,
                        groups,
                        unit,
                        first_sequence,
                        &decoded,
                    ))
                    .await
                    .map(|r| (r, Vec::new()))
                } else if projections.is_empty() {
                    inner.store.commit(unit).await.map(|r| (r, Vec::new()))
                } else {
                    inner.store.commit_inline(unit, projections).await
                }
            };
            let span = debug_span!("sourceflow.commit", seq = expected.next().0, attempt);
            let committed = if span.is_disabled() {
                committing.await
            } else {
                committing.instrument(span).await
            };
            let (applied, last_position) = match &committed {
                Ok((receipt, applied)) if !receipt.duplicate => {
                    (&applied[..], receipt.events.last().map(|e| e.position))
                }
                _ => (&[][..], None),
            };
            for (i, ready) in prepared.into_iter().enumerate() {
                projector.settle(
                    ready,
                    applied.get(i).copied().unwrap_or(false),
                    last_position,
                );
            }
            match committed.map(|(receipt, _)| receipt) {
                Ok(mut receipt) => {
                    if receipt.duplicate {
                        inner
                            .signals
                            .counters
                            .duplicates
                            .fetch_add(1, Ordering::Relaxed);
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
                            .put(generation, stream, receipt.sequence, state, last_event);
                    }
                    if has_outbox {
                        inner.signals.outbox_dirty.store(true, Ordering::Release);
                    }
                    inner
                        .signals
                        .counters
                        .committed
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("sourceflow.commands.committed").increment(1);
                    return Ok((receipt, decoded));
                }
                Err(StoreError::Conflict { .. }) => {
                    inner.entities.remove(stream);
                    inner
                        .signals
                        .counters
                        .conflicts_retried
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("sourceflow.commands.conflicts").increment(1);
                    if attempt >= inner.retry.max_attempts.max(1) {
                        // The stream may have been deleted or archived meanwhile: say so.
                        let (_, status) = self.stream_status(stream).await?;
                        if let Some(refused) = Self::refusal(stream, status) {
                            return Err(refused);
                        }
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
    async fn load_state<P: Projector>(
        &self,
        projector: &P,
        route: &SagaRoute,
        stream: &StreamId,
        trust_cache: bool,
    ) -> Result<(Sequence, Option<ErasedState>, bool, Option<Sequence>), Error> {
        let store = &self.store;
        let Some(vtable) = route.state else {
            return Ok((store.last_sequence(stream).await?, None, false, None));
        };
        let cached = if trust_cache {
            self.get_entity_prefetching_models(projector, stream)
                .await?
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
                match vtable.decode_stored(&bytes) {
                    Ok(state) => return Ok((version, Some(state), false, None)),
                    // A state stored by another version of the type, or that no longer
                    // decodes, is a cache miss: the stream is replayed and the state rewritten
                    // by this command's commit.
                    Err(miss) => {
                        tracing::warn!(
                            %stream,
                            entity = vtable.name,
                            "stored entity state {miss}; replaying the stream"
                        );
                        self.signals
                            .counters
                            .state_misses
                            .fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("sourceflow.entities.state_misses").increment(1);
                    }
                }
            }
        }
        if last == Sequence::ZERO {
            return Ok((last, Some((vtable.default)()), false, Some(Sequence::ZERO)));
        }
        let replayed = self
            .replay_stream(stream, Some(vtable), Some(last), None)
            .await?;
        // A deleted or archived stream takes no command: its last command is the marker.
        if let Some(refused) = Self::refusal(stream, replayed.status) {
            return Err(refused);
        }
        Ok((replayed.last, replayed.state, false, None))
    }

    /// The stored entity of `stream`, read together with the models the views will most
    /// likely need for its events (their models keyed by the stream's id, when not cached):
    /// one round trip instead of one per view on the first command of a stream.
    async fn get_entity_prefetching_models<P: Projector>(
        &self,
        projector: &P,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        let store = &self.store;
        let wanted = projector.prefetch(stream);
        if wanted.is_empty() {
            return store.get_entity(stream).await;
        }
        let keys: Vec<(&'static str, EntityId)> = wanted
            .iter()
            .map(|p| (p.model_type, stream.id.clone()))
            .collect();
        let (entity, models) = store.get_entity_with_models(stream, &keys).await?;
        projector.offer(stream, &wanted, &models);
        Ok(entity)
    }
}
