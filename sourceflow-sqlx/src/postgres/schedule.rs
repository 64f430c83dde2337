//! Scheduled commands on Postgres: a unit of work and its schedules in one transaction, and
//! claims with `FOR UPDATE SKIP LOCKED`, so processes sharing the database split the due
//! schedules between them and a cancel waits for (and then loses to) a claim in flight, or
//! wins before it.

use chrono::{DateTime, Utc};
use sourceflow::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleRecord, ScheduleState,
};
use sourceflow::store::{StoreError, UnitOfWork};
use sourceflow::CommandReceipt;
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres as Pg};
use uuid::Uuid;

use super::commit::{
    bind_inline, inline_outcome, BindEnvelope, EventArrays, InlineArrays, OutboxArrays, Outcome,
};
use super::error::{classify, is_unique_violation};
use super::queries::COMMIT_INLINE;
use super::Postgres;
use crate::sql::schedule::{schedule_columns, schedule_row};
use crate::sql::values::{db_int, db_limit, micros, payload_text};
use crate::sql::write::Written;
use crate::sql::write::{ScheduleAnswer, ScheduleWrite};
use crate::sql::Backend;

const INSERT_SCHEDULES: &str = "INSERT INTO sf_schedules (id, state, due_at, ready_at, \
     stream_type, stream_id, message_id, name, version, correlation_id, causation_id, \
     created_at, payload) \
     SELECT id, 'pending', due, due, stream_type, stream_id, message_id, name, version, \
            correlation_id, causation_id, created_at, payload::json \
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::uuid[], \
                 $6::text[], $7::bigint[], $8::uuid[], $9::uuid[], $10::timestamptz[], \
                 $11::text[]) \
          AS s(id, due, stream_type, stream_id, message_id, name, version, correlation_id, \
               causation_id, created_at, payload) \
     ON CONFLICT (id) DO NOTHING";

const CANCEL_SCHEDULES: &str = "UPDATE sf_schedules SET state = 'cancelled', ready_at = NULL, \
     settled_at = $2 WHERE id = ANY($1) AND state = 'pending' RETURNING id";

const SCHEDULE_STATE: &str = "SELECT state FROM sf_schedules WHERE id = $1";

const CLAIM_SCHEDULES: &str = concat!(
    "UPDATE sf_schedules s SET state = 'firing', ready_at = $2, attempts = s.attempts + 1 \
     FROM (SELECT id FROM sf_schedules WHERE ready_at <= $1 ORDER BY ready_at LIMIT $3 \
           FOR UPDATE SKIP LOCKED) c \
     WHERE s.id = c.id RETURNING ",
    "s.id, s.state, s.due_at, s.stream_type, s.stream_id, s.message_id, s.name, s.version, \
     s.correlation_id, s.causation_id, s.created_at, s.payload::text, s.attempts::bigint"
);

const MARK_FIRED: &str = "UPDATE sf_schedules SET state = 'fired', ready_at = NULL, \
     settled_at = $2 WHERE id = ANY($1) AND state = 'firing'";

const RELEASE_CLAIMS: &str =
    "UPDATE sf_schedules SET ready_at = $2 WHERE id = ANY($1) AND state = 'firing'";

const GET_SCHEDULE: &str = concat!(
    "SELECT ",
    schedule_columns!("payload::text"),
    "::bigint FROM sf_schedules WHERE id = $1"
);

/// A page of open schedules in due order, after (`$1`, `$2`) (both NULL: from the first). One
/// row comparison the open index can start from: as `$1 IS NULL OR (..) > (..)`, a generic
/// plan could only filter, and read every earlier schedule for each page.
pub(super) const PENDING_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!("payload::text"),
    "::bigint FROM sf_schedules WHERE state IN ('pending', 'firing') \
     AND (due_at, id) > (coalesce($1::timestamptz, '-infinity'), \
                         coalesce($2::uuid, '00000000-0000-0000-0000-000000000000')) \
     ORDER BY due_at, id LIMIT $3"
);

/// The columns of new schedules, as arrays for one statement.
struct ScheduleArrays<'a> {
    ids: Vec<Uuid>,
    due: Vec<DateTime<Utc>>,
    stream_types: Vec<&'a str>,
    stream_ids: Vec<&'a str>,
    message_ids: Vec<Uuid>,
    names: Vec<&'a str>,
    versions: Vec<i64>,
    correlations: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<&'a str>,
}

impl<'a> ScheduleArrays<'a> {
    fn new(schedules: &'a [NewSchedule]) -> Result<Self, StoreError> {
        let mut arrays = Self {
            ids: Vec::with_capacity(schedules.len()),
            due: Vec::with_capacity(schedules.len()),
            stream_types: Vec::with_capacity(schedules.len()),
            stream_ids: Vec::with_capacity(schedules.len()),
            message_ids: Vec::with_capacity(schedules.len()),
            names: Vec::with_capacity(schedules.len()),
            versions: Vec::with_capacity(schedules.len()),
            correlations: Vec::with_capacity(schedules.len()),
            causations: Vec::with_capacity(schedules.len()),
            times: Vec::with_capacity(schedules.len()),
            payloads: Vec::with_capacity(schedules.len()),
        };
        for schedule in schedules {
            let envelope = &schedule.command.envelope;
            arrays.ids.push(schedule.id.0);
            arrays.due.push(micros(schedule.due));
            arrays.stream_types.push(&envelope.stream.entity_type);
            arrays.stream_ids.push(envelope.stream.id.as_str());
            arrays.message_ids.push(envelope.message_id);
            arrays.names.push(&envelope.name);
            arrays.versions.push(i64::from(envelope.version));
            arrays.correlations.push(envelope.correlation_id);
            arrays.causations.push(envelope.causation_id);
            arrays.times.push(micros(envelope.timestamp));
            arrays.payloads.push(payload_text(
                &schedule.command.payload,
                "scheduled command payload",
            )?);
        }
        Ok(arrays)
    }

    async fn insert<'e>(
        &self,
        executor: impl Executor<'e, Database = Pg>,
    ) -> Result<(), sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(INSERT_SCHEDULES)
            .bind(&self.ids)
            .bind(&self.due)
            .bind(&self.stream_types)
            .bind(&self.stream_ids)
            .bind(&self.message_ids)
            .bind(&self.names)
            .bind(&self.versions)
            .bind(&self.correlations)
            .bind(&self.causations)
            .bind(&self.times)
            .bind(&self.payloads)
            .execute(executor)
            .await
            .map(drop)
    }
}

fn records(rows: &[PgRow]) -> Result<Vec<ScheduleRecord>, StoreError> {
    rows.iter().map(schedule_row).collect()
}

impl Postgres {
    /// Runs one scheduling write.
    pub(super) async fn schedules(&self, write: ScheduleWrite) -> Result<Written, StoreError> {
        let pool = &self.pool;
        let answer = match write {
            ScheduleWrite::Commit(commit) => {
                let (unit, changes) = *commit;
                ScheduleAnswer::Receipt(self.commit_scheduled(unit, changes).await?)
            }
            ScheduleWrite::Add(schedules) => {
                let arrays = ScheduleArrays::new(&schedules)?;
                let arrays = &arrays;
                self.backoff
                    .run(Self::NAME, "schedule", || async move {
                        arrays.insert(pool).await.map_err(classify)
                    })
                    .await?;
                ScheduleAnswer::Done
            }
            ScheduleWrite::Cancel { id, now } => {
                let ids = [id.0];
                let ids = &ids;
                let cancelled = self
                    .backoff
                    .run(Self::NAME, "cancel", || async move {
                        sqlx::query(CANCEL_SCHEDULES)
                            .bind(&ids[..])
                            .bind(micros(now))
                            .fetch_optional(pool)
                            .await
                            .map_err(classify)
                    })
                    .await?;
                if cancelled.is_some() {
                    ScheduleAnswer::Cancel(CancelOutcome::Cancelled)
                } else {
                    // A new statement, so a claim that made the cancel wait is seen.
                    let state: Option<String> = self
                        .backoff
                        .run(Self::NAME, "cancel", || async move {
                            sqlx::query_scalar(SCHEDULE_STATE)
                                .bind(id.0)
                                .fetch_optional(pool)
                                .await
                                .map_err(classify)
                        })
                        .await?;
                    let state = state
                        .map(|s| {
                            ScheduleState::parse(&s).ok_or_else(|| {
                                StoreError::Corrupt(format!("unknown schedule state {s:?}"))
                            })
                        })
                        .transpose()?;
                    ScheduleAnswer::Cancel(CancelOutcome::of_state(state))
                }
            }
            ScheduleWrite::Claim {
                now,
                lease_until,
                limit,
            } => {
                let rows = self
                    .backoff
                    .run(Self::NAME, "claim", || async move {
                        sqlx::query(CLAIM_SCHEDULES)
                            .bind(micros(now))
                            .bind(micros(lease_until))
                            .bind(db_limit(limit))
                            .fetch_all(pool)
                            .await
                            .map_err(classify)
                    })
                    .await?;
                ScheduleAnswer::Records(records(&rows)?)
            }
            ScheduleWrite::MarkFired { ids, now } => {
                let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
                let ids = &ids;
                self.backoff
                    .run(Self::NAME, "mark fired", || async move {
                        sqlx::query(MARK_FIRED)
                            .bind(ids)
                            .bind(micros(now))
                            .execute(pool)
                            .await
                            .map_err(classify)
                    })
                    .await?;
                ScheduleAnswer::Done
            }
            ScheduleWrite::Release { ids, at } => {
                let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
                let ids = &ids;
                self.backoff
                    .run(Self::NAME, "release claims", || async move {
                        sqlx::query(RELEASE_CLAIMS)
                            .bind(ids)
                            .bind(micros(at))
                            .execute(pool)
                            .await
                            .map_err(classify)
                    })
                    .await?;
                ScheduleAnswer::Done
            }
            ScheduleWrite::Get(id) => {
                let rows = self
                    .backoff
                    .run(Self::NAME, "get schedule", || async move {
                        sqlx::query(GET_SCHEDULE)
                            .bind(id.0)
                            .fetch_all(pool)
                            .await
                            .map_err(classify)
                    })
                    .await?;
                ScheduleAnswer::Records(records(&rows)?)
            }
            ScheduleWrite::Pending { after, limit } => {
                let (due, id) = match after {
                    Some((due, id)) => (Some(micros(due)), Some(id.0)),
                    None => (None, None),
                };
                let rows = self
                    .backoff
                    .run(Self::NAME, "pending schedules", || async move {
                        sqlx::query(PENDING_SCHEDULES)
                            .bind(due)
                            .bind(id)
                            .bind(db_limit(limit))
                            .fetch_all(pool)
                            .await
                            .map_err(classify)
                    })
                    .await?;
                ScheduleAnswer::Records(records(&rows)?)
            }
        };
        Ok(Written::Schedules(answer))
    }

    /// A unit of work through `sf_commit_inline` and its schedule changes, in one
    /// transaction: a duplicate or a conflict writes none of them.
    async fn commit_scheduled(
        &self,
        unit: UnitOfWork,
        changes: ScheduleChanges,
    ) -> Result<CommandReceipt, StoreError> {
        let envelope = &unit.command.envelope;
        let stream = &envelope.stream;
        let expected = db_int(unit.expected.0, "sequence")?;
        let payload = payload_text(&unit.command.payload, "command payload")?;
        let entity = unit
            .entity
            .as_deref()
            .map(|state| payload_text(state, "entity state"))
            .transpose()?;
        let events = EventArrays::new(&unit.events)?;
        let outbox = OutboxArrays::new(&unit.outbox)?;
        let inline = InlineArrays::new(&[])?;
        let schedules = ScheduleArrays::new(&changes.add)?;
        let cancels: Vec<Uuid> = changes.cancel.iter().map(|id| id.0).collect();
        let (events, outbox, inline, schedules, cancels) =
            (&events, &outbox, &inline, &schedules, &cancels);
        let (pool, lock_key, unit_ref) = (&self.pool, self.lock_key, &unit);
        let outcome = self
            .backoff
            .run(Self::NAME, "commit", || async move {
                let mut tx = pool.begin().await.map_err(classify)?;
                if !unit_ref.keys.is_empty()
                    && !super::keys::insert(&mut tx, &unit_ref.keys).await?
                {
                    return Ok(Outcome::NotWritten);
                }
                let query = sqlx::query(COMMIT_INLINE)
                    .bind(lock_key)
                    .bind(&*stream.entity_type)
                    .bind(stream.id.as_str())
                    .bind(expected)
                    .bind_envelope(envelope)
                    .bind(payload)
                    .bind(entity);
                let row = match bind_inline(query, events, outbox, inline)
                    .fetch_one(&mut *tx)
                    .await
                {
                    Ok(row) => row,
                    Err(e) if is_unique_violation(&e) => return Ok(Outcome::NotWritten),
                    Err(e) => return Err(classify(e)),
                };
                let outcome = inline_outcome(&row, 0, stream, unit_ref.expected)?;
                if let Outcome::Committed(..) = outcome {
                    schedules.insert(&mut *tx).await.map_err(classify)?;
                    if !cancels.is_empty() {
                        sqlx::query(CANCEL_SCHEDULES)
                            .bind(cancels)
                            .bind(micros(Utc::now()))
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                    }
                    tx.commit().await.map_err(classify)?;
                }
                Ok(outcome)
            })
            .await?;
        let (receipt, _) = self.settle(&unit, &[], outcome).await?;
        Ok(receipt)
    }
}
