//! The scheduled commands of a [`MemoryStore`]: a table and its claim order, under the
//! store's one lock.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{micros, MemoryStore};
use crate::base::message::CommandReceipt;
use crate::store::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleRecord, ScheduleState,
    ScheduleStore,
};
use crate::store::{StoreError, UnitOfWork};

/// Every schedule, and the claimable ones in the order they may be claimed.
#[derive(Debug, Default)]
pub(super) struct ScheduleTable {
    rows: BTreeMap<ScheduleId, Row>,
    /// (when claimable, id): the due time while pending, the lease's end while firing.
    ready: BTreeSet<(DateTime<Utc>, ScheduleId)>,
}

#[derive(Debug)]
struct Row {
    record: ScheduleRecord,
    ready_at: Option<DateTime<Utc>>,
}

impl ScheduleTable {
    fn add(&mut self, mut schedule: NewSchedule) {
        if self.rows.contains_key(&schedule.id) {
            return;
        }
        schedule.due = micros(schedule.due);
        let envelope = &mut schedule.command.envelope;
        envelope.timestamp = micros(envelope.timestamp);
        self.ready.insert((schedule.due, schedule.id));
        self.rows.insert(
            schedule.id,
            Row {
                ready_at: Some(schedule.due),
                record: ScheduleRecord {
                    schedule,
                    state: ScheduleState::Pending,
                    attempts: 0,
                },
            },
        );
    }

    fn settle(&mut self, id: ScheduleId, from: ScheduleState, to: ScheduleState) -> bool {
        let Some(row) = self.rows.get_mut(&id) else {
            return false;
        };
        if row.record.state != from {
            return false;
        }
        if let Some(at) = row.ready_at.take() {
            self.ready.remove(&(at, id));
        }
        row.record.state = to;
        true
    }

    fn cancel(&mut self, id: ScheduleId) -> CancelOutcome {
        if self.settle(id, ScheduleState::Pending, ScheduleState::Cancelled) {
            return CancelOutcome::Cancelled;
        }
        CancelOutcome::of_state(self.rows.get(&id).map(|r| r.record.state))
    }

    pub(super) fn apply(&mut self, changes: ScheduleChanges) {
        for schedule in changes.add {
            self.add(schedule);
        }
        for id in changes.cancel {
            self.cancel(id);
        }
    }

    fn claim(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<ScheduleRecord> {
        let lease_until = micros(lease_until);
        let due: Vec<_> = self
            .ready
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .copied()
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for (at, id) in due {
            self.ready.remove(&(at, id));
            self.ready.insert((lease_until, id));
            if let Some(row) = self.rows.get_mut(&id) {
                row.ready_at = Some(lease_until);
                row.record.state = ScheduleState::Firing;
                row.record.attempts += 1;
                claimed.push(row.record.clone());
            }
        }
        claimed.sort_by_key(|r| (r.schedule.due, r.schedule.id));
        claimed
    }
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn commit_scheduled(
        &self,
        unit: UnitOfWork,
        changes: ScheduleChanges,
    ) -> Result<CommandReceipt, StoreError> {
        let mut inner = self.lock();
        let receipt = inner.commit(unit)?;
        if !receipt.duplicate {
            inner.schedules.apply(changes);
        }
        Ok(receipt)
    }

    async fn add_schedules(&self, schedules: Vec<NewSchedule>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for schedule in schedules {
            inner.schedules.add(schedule);
        }
        Ok(())
    }

    async fn cancel_schedule(
        &self,
        id: ScheduleId,
        _now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError> {
        Ok(self.lock().schedules.cancel(id))
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(self.lock().schedules.claim(now, lease_until, limit))
    }

    async fn mark_fired(&self, ids: &[ScheduleId], _now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for id in ids {
            inner
                .schedules
                .settle(*id, ScheduleState::Firing, ScheduleState::Fired);
        }
        Ok(())
    }

    async fn release_claims(
        &self,
        ids: &[ScheduleId],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let table = &mut inner.schedules;
        let at = micros(at);
        for id in ids {
            let Some(row) = table.rows.get_mut(id) else {
                continue;
            };
            if row.record.state != ScheduleState::Firing {
                continue;
            }
            if let Some(old) = row.ready_at.replace(at) {
                table.ready.remove(&(old, *id));
            }
            table.ready.insert((at, *id));
        }
        Ok(())
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<ScheduleRecord>, StoreError> {
        Ok(self
            .lock()
            .schedules
            .rows
            .get(&id)
            .map(|r| r.record.clone()))
    }

    async fn pending_schedules(
        &self,
        after: Option<(DateTime<Utc>, ScheduleId)>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let inner = self.lock();
        let mut open: Vec<&ScheduleRecord> = inner
            .schedules
            .rows
            .values()
            .map(|r| &r.record)
            .filter(|r| matches!(r.state, ScheduleState::Pending | ScheduleState::Firing))
            .filter(|r| after.is_none_or(|a| (r.schedule.due, r.schedule.id) > a))
            .collect();
        open.sort_by_key(|r| (r.schedule.due, r.schedule.id));
        Ok(open.into_iter().take(limit).cloned().collect())
    }
}
