//! Scheduled commands on [`SourceFlow`]: scheduling and cancelling outside handlers, listing,
//! firing by hand, and the scheduler task the builder starts.

use std::sync::{Arc, Weak};

use super::{FlowInner, SourceFlow};
use crate::base::clock::Clock;
use crate::base::error::Error;
use crate::base::message::{Command, EntityId};
use crate::store::schedule::{CancelOutcome, ScheduleId, ScheduleRecord, When};

impl SourceFlow {
    /// Schedules `command` to be sent to entity `id` when `when` comes: a delay (counted on
    /// the flow's [`Clock`]) or an absolute UTC time. The schedule is durable at once; any
    /// process of the application with a scheduler fires it, exactly once, unless it is
    /// [`cancel`](Self::cancel)led first. Inside a handler use
    /// [`SagaContext::schedule`](crate::SagaContext::schedule), which commits with the
    /// handler's unit of work.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use sourceflow::prelude::*;
    /// # use std::time::Duration;
    /// # #[derive(Debug, Clone, Serialize, Deserialize, Command)]
    /// # struct Remind;
    /// # #[derive(Default)] struct Reminders;
    /// # #[saga(name = "doc.Reminders")]
    /// # impl Reminders { #[handles] async fn remind(&self, _: &Remind, _: &mut SagaContext) {} }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let flow = SourceFlow::builder().store(MemoryStore::new()).build().await?;
    /// let id = flow.schedule(Duration::from_secs(3600), "user-7", Remind).await?;
    /// assert_eq!(flow.cancel(id).await?, sourceflow::schedule::CancelOutcome::Cancelled);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NoHandler`] for a command no saga handles, [`Error::Invalid`] if it fails
    /// validation, [`Error::Store`] on store faults (`Unsupported` for a store that does not
    /// keep schedules).
    pub async fn schedule<C: Command>(
        &self,
        when: impl Into<When>,
        id: impl Into<EntityId>,
        command: C,
    ) -> Result<ScheduleId, Error> {
        self.inner
            .write
            .schedule(when.into(), id.into(), command)
            .await
    }

    /// Cancels a schedule, unless a scheduler has claimed it: the answer says which happened,
    /// and exactly one of the two does ([`CancelOutcome::Cancelled`]: never sent;
    /// [`CancelOutcome::AlreadyFired`]: sent, or being sent, once).
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn cancel(&self, schedule: ScheduleId) -> Result<CancelOutcome, Error> {
        self.inner.write.cancel(schedule).await
    }

    /// One schedule and its state.
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn scheduled(&self, schedule: ScheduleId) -> Result<Option<ScheduleRecord>, Error> {
        self.inner.write.get_schedule(schedule).await
    }

    /// A page of the schedules not yet fired or cancelled, in due order: those after `after`
    /// (the last record of the previous page; `None` for the first).
    ///
    /// # Errors
    /// [`Error::Store`] on store faults.
    pub async fn pending_schedules(
        &self,
        after: Option<&ScheduleRecord>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, Error> {
        self.inner.write.pending_schedules(after, limit).await
    }

    /// Fires every schedule due now (on the flow's clock), oldest first, and returns how many
    /// this call fired. The scheduler does this on its own; call it in tests, or in a process
    /// built without a scheduler.
    ///
    /// # Errors
    /// [`Error::Store`] if claiming or settling schedules fails.
    pub async fn fire_due(&self) -> Result<u64, Error> {
        let inner = &*self.inner;
        inner.write.fire_due(&*inner.read).await
    }

    /// The clock this flow reads the time from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.write.scheduling.clock
    }

    /// Starts the scheduler task, if enabled and the store keeps schedules. Its first pass
    /// fires what fell due while no process ran.
    pub(crate) fn start_scheduler(&self) {
        let scheduling = &self.inner.write.scheduling;
        if !scheduling.options.enabled || self.inner.write.store.schedules().is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<FlowInner> = Arc::downgrade(&self.inner);
        let wake = scheduling.wake.clone();
        let poll = scheduling.options.poll;
        runtime.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let wait = match inner.write.fire_due(&*inner.read).await {
                    Ok(_) => inner.write.next_wait().await,
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler pass failed; retrying");
                        poll
                    }
                };
                // Only the weak handle survives the wait, so dropping the flow ends the task.
                drop(inner);
                let _ = tokio::time::timeout(wait, wake.notified()).await;
            }
        });
    }
}
