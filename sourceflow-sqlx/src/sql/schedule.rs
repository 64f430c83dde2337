//! Scheduled commands on both SQL backends: the [`ScheduleStore`] contract as writes handed to
//! the backend ([`ScheduleWrite`]; SQLite runs them on its writer thread, so claims from every
//! process are serialised by the file's write lock, Postgres claims with `FOR UPDATE SKIP
//! LOCKED`), and the row mapping both share.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sourceflow::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleRecord, ScheduleState,
    ScheduleStore,
};
use sourceflow::store::{OutboxMessage, StoreError, UnitOfWork};
use sourceflow::{CommandReceipt, EntityId, Envelope, StreamId};

use super::rows::Columns;
use super::write::{ScheduleAnswer, ScheduleWrite, Write, Written};
use super::{write_answer, Backend, SqlStore};

/// The schedule columns in the order [`schedule_row`] reads them, the payload as `$payload`.
macro_rules! schedule_columns {
    ($payload:literal) => {
        concat!(
            "id, state, due_at, stream_type, stream_id, message_id, name, version, \
             correlation_id, causation_id, created_at, ",
            $payload,
            ", attempts"
        )
    };
}
pub(crate) use schedule_columns;

/// Whether any schedule is claimable at `$1`: read on the reader pool before a claim, so an
/// idle scheduler's poll costs a read, not a write transaction. The earliest one, in the ready
/// index's order: without the order, a Postgres plan made on a young schema scanned the table
/// for the first match, every pending schedule on every poll that found none.
pub(crate) const ANY_CLAIMABLE: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM sf_schedules \
     WHERE ready_at IS NOT NULL AND ready_at <= $1 ORDER BY ready_at LIMIT 1) s";

/// Reads a schedule row (columns as [`schedule_columns`] lists them).
pub(crate) fn schedule_row(row: &impl Columns) -> Result<ScheduleRecord, StoreError> {
    let state = row.text(1)?;
    let state = ScheduleState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown schedule state {state:?}")))?;
    let version = row.int(7)?;
    let version = u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("message version out of range: {version}")))?;
    let attempts = row.int(12)?;
    Ok(ScheduleRecord {
        schedule: NewSchedule {
            id: ScheduleId(row.uuid(0)?),
            due: row.time(2)?,
            command: OutboxMessage {
                envelope: Envelope {
                    message_id: row.uuid(5)?,
                    name: row.name(6)?,
                    version,
                    stream: StreamId::new(row.text(3)?, EntityId::from(row.text(4)?)),
                    correlation_id: row.uuid(8)?,
                    causation_id: row.optional_uuid(9)?,
                    timestamp: row.time(10)?,
                },
                payload: row.text(11)?.into_bytes(),
            },
        },
        state,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    })
}

async fn schedule_answer<B: Backend>(
    backend: &B,
    write: ScheduleWrite,
) -> Result<ScheduleAnswer, StoreError> {
    write_answer(backend, Write::Schedules(write), |written| match written {
        Written::Schedules(answer) => Ok(answer),
        other => Err(other),
    })
    .await
}

fn unexpected<B: Backend>(answer: ScheduleAnswer) -> StoreError {
    super::write::unexpected(B::NAME, Written::Schedules(answer))
}

#[async_trait]
impl<B: Backend> ScheduleStore for SqlStore<B> {
    async fn commit_scheduled(
        &self,
        unit: UnitOfWork,
        changes: ScheduleChanges,
    ) -> Result<CommandReceipt, StoreError> {
        match schedule_answer(
            self.backend(),
            ScheduleWrite::Commit(Box::new((unit, changes))),
        )
        .await?
        {
            ScheduleAnswer::Receipt(receipt) => Ok(receipt),
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn add_schedules(&self, schedules: Vec<NewSchedule>) -> Result<(), StoreError> {
        match schedule_answer(self.backend(), ScheduleWrite::Add(schedules)).await? {
            ScheduleAnswer::Done => Ok(()),
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn cancel_schedule(
        &self,
        id: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError> {
        match schedule_answer(self.backend(), ScheduleWrite::Cancel { id, now }).await? {
            ScheduleAnswer::Cancel(outcome) => Ok(outcome),
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = super::read::fetch(
            self.backend(),
            "claimable schedules",
            ANY_CLAIMABLE,
            &[super::read::Param::Time(now)],
        )
        .await?;
        if rows.first().map(|row| row.int(0)).transpose()?.unwrap_or(0) == 0 {
            return Ok(Vec::new());
        }
        let claim = ScheduleWrite::Claim {
            now,
            lease_until,
            limit,
        };
        match schedule_answer(self.backend(), claim).await? {
            ScheduleAnswer::Records(mut records) => {
                records.sort_by_key(|r| (r.schedule.due, r.schedule.id));
                Ok(records)
            }
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn mark_fired(&self, ids: &[ScheduleId], now: DateTime<Utc>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        match schedule_answer(self.backend(), ScheduleWrite::MarkFired { ids, now }).await? {
            ScheduleAnswer::Done => Ok(()),
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn release_claims(
        &self,
        ids: &[ScheduleId],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        match schedule_answer(self.backend(), ScheduleWrite::Release { ids, at }).await? {
            ScheduleAnswer::Done => Ok(()),
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<ScheduleRecord>, StoreError> {
        match schedule_answer(self.backend(), ScheduleWrite::Get(id)).await? {
            ScheduleAnswer::Records(records) => Ok(records.into_iter().next()),
            other => Err(unexpected::<B>(other)),
        }
    }

    async fn pending_schedules(
        &self,
        after: Option<(DateTime<Utc>, ScheduleId)>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        match schedule_answer(self.backend(), ScheduleWrite::Pending { after, limit }).await? {
            ScheduleAnswer::Records(records) => Ok(records),
            other => Err(unexpected::<B>(other)),
        }
    }
}
