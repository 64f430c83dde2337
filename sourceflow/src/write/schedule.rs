//! Scheduled commands on the write side: committing a handler's schedules with its unit,
//! scheduling and cancelling from outside a handler, and firing what is due.
//!
//! Firing claims due schedules from the store (exclusive across processes, see
//! [`ScheduleStore::claim_due`]), sends each command through the ordinary dispatch path with
//! the message id derived from its schedule, and then marks them fired. A process that dies in
//! between leaves its claims leased: another one claims them again once the lease ends and
//! sends the same message ids, which the target streams acknowledge as duplicates if the
//! first send had committed. So each scheduled command runs exactly once.

use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use futures_util::stream::{self, StreamExt};
use tracing::{debug_span, error, warn, Instrument};
use uuid::Uuid;

use super::bus::OutgoingCommand;
use super::{Projector, WriteSide};
use crate::base::clock::Clock;
use crate::base::error::{Error, Location};
use crate::base::message::{Command, CommandReceipt, EntityId, StreamId};
use crate::codec::command_record;
use crate::context::saga::follow_up;
use crate::context::schedule::ScheduleRequests;
use crate::store::schedule::{
    CancelOutcome, NewSchedule, ScheduleId, ScheduleRecord, ScheduleStore, When,
};
use crate::store::{StoreError, UnitOfWork};

/// How a flow's scheduler fires due commands
/// ([`Builder::scheduler`](crate::Builder::scheduler)).
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    pub(crate) enabled: bool,
    pub(crate) poll: Duration,
    pub(crate) batch: usize,
    pub(crate) lease: Duration,
}

impl Default for SchedulerOptions {
    /// On, polling every 100 ms, claiming up to 256 schedules at a time, leased for 30 s.
    fn default() -> Self {
        Self {
            enabled: true,
            poll: Duration::from_millis(100),
            batch: 256,
            lease: Duration::from_secs(30),
        }
    }
}

impl SchedulerOptions {
    /// The defaults (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// No scheduler in this process (one that only reads, or a test that fires by hand with
    /// [`SourceFlow::fire_due`](crate::SourceFlow::fire_due)). Schedules are still made and
    /// cancelled; other processes fire them.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// How often the scheduler looks for due schedules that other processes made (its own
    /// wake it at once). Between passes it sleeps until the earliest pending schedule falls
    /// due, or this long if that is later: a command made by another process less than this
    /// long before it is due fires at most about this late.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(1));
        self
    }

    /// How many schedules one claim takes.
    pub fn batch(mut self, size: usize) -> Self {
        self.batch = size.max(1);
        self
    }

    /// How long a claim is exclusive: if the claiming process dies, another one fires its
    /// claims after this long. Longer than the slowest command.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Whether the flow runs a scheduler.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// The write side's scheduling: its clock, options, and the signal that wakes the scheduler.
pub(crate) struct Scheduling {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: SchedulerOptions,
    /// Wakes the scheduler when this process made a schedule.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// One firing pass at a time in this process (others wait for it).
    pub(crate) firing: tokio::sync::Mutex<()>,
}

impl Scheduling {
    pub(crate) fn new(clock: Arc<dyn Clock>, options: SchedulerOptions) -> Self {
        Self {
            clock,
            options,
            wake: Arc::new(tokio::sync::Notify::new()),
            firing: tokio::sync::Mutex::new(()),
        }
    }
}

/// How soon a scheduled command whose send met a fault worth another try is claimed again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many entities' scheduled commands one scheduler sends at once.
const FIRING_CONCURRENCY: usize = 32;

fn unsupported() -> StoreError {
    StoreError::Unsupported("scheduled commands")
}

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(365))
}

impl WriteSide {
    fn schedule_store(&self) -> Result<&dyn ScheduleStore, StoreError> {
        self.store.schedules().ok_or_else(unsupported)
    }

    /// Commits a unit whose handler scheduled or cancelled something, with those changes.
    pub(crate) async fn commit_scheduled(
        &self,
        unit: UnitOfWork,
        requests: ScheduleRequests,
    ) -> Result<CommandReceipt, StoreError> {
        let store = self.schedule_store()?;
        let changes = requests.resolve(self.scheduling.clock.now());
        let (added, cancelled) = (changes.add.len() as u64, changes.cancel.len() as u64);
        let receipt = store.commit_scheduled(unit, changes).await?;
        if !receipt.duplicate {
            metrics::counter!("sourceflow.schedule.scheduled").increment(added);
            metrics::counter!("sourceflow.schedule.cancel_requested").increment(cancelled);
            if added > 0 {
                self.scheduling.wake.notify_one();
            }
        }
        Ok(receipt)
    }

    /// Schedules `command` for entity `id` outside a handler.
    pub(crate) async fn schedule<C: Command>(
        &self,
        when: When,
        id: EntityId,
        command: C,
    ) -> Result<ScheduleId, Error> {
        let store = self.schedule_store()?;
        let schedule = ScheduleId(Uuid::now_v7());
        let message_id = schedule.message_id();
        let mut message = follow_up(
            &self.streams,
            id,
            &command,
            message_id,
            message_id,
            message_id,
        )?;
        message.envelope.causation_id = None;
        let now = self.scheduling.clock.now();
        message.envelope.timestamp = now;
        store
            .add_schedules(vec![NewSchedule {
                id: schedule,
                due: when.due(now),
                command: message,
            }])
            .await?;
        metrics::counter!("sourceflow.schedule.scheduled").increment(1);
        self.scheduling.wake.notify_one();
        Ok(schedule)
    }

    /// Cancels a schedule if no scheduler has claimed it yet.
    pub(crate) async fn cancel(&self, schedule: ScheduleId) -> Result<CancelOutcome, Error> {
        let store = self.schedule_store()?;
        let outcome = store
            .cancel_schedule(schedule, self.scheduling.clock.now())
            .await?;
        if outcome == CancelOutcome::Cancelled {
            metrics::counter!("sourceflow.schedule.cancelled").increment(1);
        }
        Ok(outcome)
    }

    /// One schedule, in any state.
    pub(crate) async fn get_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ScheduleRecord>, Error> {
        Ok(self.schedule_store()?.get_schedule(schedule).await?)
    }

    /// Schedules not yet fired or cancelled, in due order.
    pub(crate) async fn pending_schedules(
        &self,
        after: Option<&ScheduleRecord>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, Error> {
        let after = after.map(|r| (r.schedule.due, r.schedule.id));
        Ok(self
            .schedule_store()?
            .pending_schedules(after, limit)
            .await?)
    }

    /// How long the scheduler may sleep before its next pass: until the earliest pending
    /// schedule falls due, at most the polling interval (a schedule another process makes may
    /// fall due sooner). A schedule already due that this process did not claim (another one
    /// holds it) waits for the next poll.
    pub(crate) async fn next_wait(&self) -> Duration {
        let poll = self.scheduling.options.poll;
        let Some(store) = self.store.schedules() else {
            return poll;
        };
        let first = match store.pending_schedules(None, 1).await {
            Ok(first) => first,
            Err(_) => return poll,
        };
        let Some(record) = first.first() else {
            return poll;
        };
        match (record.schedule.due - self.scheduling.clock.now()).to_std() {
            Ok(until) if !until.is_zero() => until.min(poll),
            _ => poll,
        }
    }

    /// Fires every schedule due now, oldest first, claim by claim: the number fired.
    ///
    /// # Errors
    /// [`Error::Store`] if claiming or marking fails. A command that can never succeed
    /// (refused, invalid, unknown) is logged, counted (`sourceflow.schedule.failed`) and marked
    /// fired, as a follow-up command would be; one that met a transient fault or contention
    /// beyond the retry budget stays firing and is claimed again a second later (with the
    /// entity's later ones).
    pub(crate) async fn fire_due<P: Projector>(&self, projector: &P) -> Result<u64, Error> {
        let Some(store) = self.store.schedules() else {
            return Ok(0);
        };
        let _turn = self.scheduling.firing.lock().await;
        let options = &self.scheduling.options;
        let mut fired = 0;
        loop {
            let now = self.scheduling.clock.now();
            let lease_until = now + chrono_lease(options.lease);
            let claimed = store.claim_due(now, lease_until, options.batch).await?;
            if claimed.is_empty() {
                break;
            }
            let full = claimed.len() >= options.batch;
            // One entity's commands in due order, entities side by side (a store with group
            // commit shares their commits).
            let mut by_stream: Vec<Vec<ScheduleRecord>> = Vec::new();
            let mut index: HashMap<StreamId, usize> = HashMap::default();
            for record in claimed {
                let stream = record.schedule.command.envelope.stream.clone();
                let at = *index.entry(stream).or_insert_with(|| {
                    by_stream.push(Vec::new());
                    by_stream.len() - 1
                });
                by_stream[at].push(record);
            }
            // Each entity's fired ids, and those deferred: from the first that failed with a
            // fault worth another try (the entity's later ones wait for it).
            let outcomes: Vec<(Vec<ScheduleId>, Vec<ScheduleId>)> = stream::iter(by_stream)
                .map(|records| async move {
                    let mut done = Vec::with_capacity(records.len());
                    let mut records = records.into_iter();
                    while let Some(record) = records.next() {
                        let id = record.schedule.id;
                        if let Err(e) = self.fire(projector, record).await {
                            warn!(error = %e, schedule = %id, "scheduled command deferred; it fires again shortly");
                            let deferred = std::iter::once(id)
                                .chain(records.map(|r| r.schedule.id))
                                .collect();
                            return (done, deferred);
                        }
                        done.push(id);
                    }
                    (done, Vec::new())
                })
                .buffer_unordered(FIRING_CONCURRENCY)
                .collect()
                .await;
            let mut done = Vec::new();
            let mut deferred = Vec::new();
            for (ids, later) in outcomes {
                done.extend(ids);
                deferred.extend(later);
            }
            if !deferred.is_empty() {
                let at = self.scheduling.clock.now() + chrono_lease(RETRY_AFTER);
                if let Err(e) = store.release_claims(&deferred, at).await {
                    warn!(error = %e, "cannot release deferred claims; they fire again after their lease");
                }
            }
            let deferred = !deferred.is_empty();
            fired += done.len() as u64;
            store.mark_fired(&done, self.scheduling.clock.now()).await?;
            self.drain_outbox(projector).await;
            if deferred || !full {
                break;
            }
        }
        Ok(fired)
    }

    /// Sends one claimed schedule's command. `Err` only for a fault worth another try (a
    /// transient store fault, contention beyond the retry budget): the schedule is then
    /// claimed again shortly.
    async fn fire<P: Projector>(&self, projector: &P, record: ScheduleRecord) -> Result<(), Error> {
        let attempts = record.attempts;
        let NewSchedule { id, due, command } = record.schedule;
        let mut envelope = command.envelope;
        envelope.timestamp = crate::base::message::now();
        let name = envelope.name.to_string();
        let at = || Location::Sending {
            stream: envelope.stream.clone(),
        };
        let span = debug_span!(
            "sourceflow.schedule.fire",
            schedule = %id,
            command = %name,
            stream = %envelope.stream,
            attempt = attempts,
        );
        let stream = envelope.stream.to_string();
        let outcome = match command_record(&envelope.name) {
            // Scheduled by an earlier build, perhaps: decoded through the type's upcasters.
            Some(record) => {
                match record.decode_stored(&envelope.name, envelope.version, &command.payload, &at)
                {
                    Ok(message) => {
                        let command = OutgoingCommand {
                            envelope,
                            payload: command.payload,
                            message,
                            first_send: attempts == 1,
                        };
                        // A first attempt needs no duplicate check beforehand: the store
                        // answers a message id it has seen with its receipt anyway. After a
                        // crash, the check spares the handler a run.
                        self.dispatch(projector, command, attempts > 1, false)
                            .instrument(span)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            None => Err(Error::UnknownMessage {
                name: name.clone(),
                at: at(),
            }),
        };
        match outcome {
            Ok(receipt) => {
                if !receipt.duplicate {
                    metrics::counter!("sourceflow.schedule.fired").increment(1);
                    let delay = (self.scheduling.clock.now() - due)
                        .to_std()
                        .unwrap_or_default();
                    metrics::histogram!("sourceflow.schedule.fire_delay_seconds")
                        .record(delay.as_secs_f64());
                }
                Ok(())
            }
            // Worth another try: it fires again once its claim's lease ends.
            Err(e @ Error::Store(StoreError::Transient(_))) => Err(e),
            Err(e @ Error::Concurrency { .. }) => Err(e),
            Err(e) => {
                // A command that can never succeed (refused, unknown, invalid) is reported and
                // settled, not retried forever.
                error!(error = %e, command = %name, stream = %stream, schedule = %id, "scheduled command failed");
                metrics::counter!("sourceflow.schedule.failed").increment(1);
                Ok(())
            }
        }
    }
}
