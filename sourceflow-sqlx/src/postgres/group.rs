//! Group commit: the units of work that concurrent senders of one process hand to the store
//! while a commit is under way are committed together, by one call of `sf_commit_units` (the
//! common shape on distinct streams, set-based) or `sf_commit_batch` (any other), in one
//! transaction (one append lock, one WAL flush). Projection batches take no append lock and
//! commit on their own, concurrently (see the [module docs](super)).
//!
//! Every sender queues its unit, then waits for its turn (a fair lock) or its answer, whichever
//! comes first ([`Turns`], as the runtime's groups do). Whoever gets the turn takes every unit
//! queued so far (in batches of up to 128 until its own is taken) and holds the turn until
//! they are committed, so units queue up meanwhile; a unit an earlier turn took is answered by
//! that turn without a turn of its own. One unit alone goes the path it would take without
//! grouping; several go as one batch, committed on a task of its own
//! so that a sender that stops waiting cannot cut the others' commit short. A batch that fails
//! as a whole (a deadlock with another process, a dropped connection) is committed again unit
//! by unit, each with the retry policy.
//!
//! The runtime forms groups of its own concurrent commands, with the views' projection of the
//! whole group ([`GroupCommit`]); those commit through `sf_commit_units_group` or
//! `sf_commit_batch_group` (see the [module docs](super#group-commit-with-the-views-writes)).

use sourceflow::store::turns::{Turn, Turns};
use sourceflow::store::{
    GroupCommit, GroupOutcome, GroupProjection, InlineProjection, StoreError, UnitGroup, UnitOfWork,
};
use sourceflow::CommandReceipt;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use tokio::sync::oneshot;

use super::commit::{bind_units, inline_outcome, unit_json, ModelArrays, UnitArrays};
use super::error::classify;
use super::queries::{COMMIT_BATCH, COMMIT_BATCH_GROUP, COMMIT_UNITS, COMMIT_UNITS_GROUP};
use super::{get, Postgres};
use crate::sql::values::db_int;

/// The most units one batch carries.
const MAX_BATCH: usize = 128;

/// What a sender of a unit of work gets back: the receipt and which inline projections applied.
type Answer = Result<(CommandReceipt, Vec<bool>), StoreError>;

/// A queued unit of work and where its answer goes.
struct Job {
    unit: UnitOfWork,
    projections: Vec<InlineProjection>,
    reply: oneshot::Sender<Answer>,
}

/// The group-commit state a store's clones share: the queued jobs and the turn.
#[derive(Default)]
pub(super) struct Group {
    jobs: Turns<Job>,
}

fn stopped() -> StoreError {
    StoreError::Backend("the commit of a batch stopped before it answered".into())
}

impl Postgres {
    /// Commits `unit`, together with the writes of concurrent senders of this process.
    pub(super) async fn commit_grouped(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Answer {
        // A unit that carries a subject's first key commits in a transaction of its own.
        let Some(group) = self.group.clone().filter(|_| unit.keys.is_empty()) else {
            return self.commit_unit(unit, &projections).await;
        };
        let (reply, mut answer) = oneshot::channel();
        let ticket = group.jobs.push(Job {
            unit,
            projections,
            reply,
        });
        // The answer or the turn, whichever comes first: a unit an earlier turn took is
        // answered by that turn.
        let answered = match group.jobs.answer_or_turn(&mut answer).await {
            Ok(answered) => answered,
            Err(turn) => {
                // Until this unit is taken (more than a batch's worth may be queued ahead).
                while !turn.has_taken(ticket) {
                    self.take_batch(&turn).await;
                }
                drop(turn);
                answer.await
            }
        };
        answered.unwrap_or_else(|_| Err(stopped()))
    }

    /// With the turn held: takes every queued job (up to [`MAX_BATCH`]) and commits them.
    async fn take_batch(&self, turn: &Turn<'_, Job>) {
        let batch = turn.take(MAX_BATCH);
        if batch.len() == 1 {
            return self.commit_each(batch).await;
        }
        let store = self.clone();
        // A panic reaches every sender of the batch as a dropped answer.
        let _ = tokio::spawn(async move { store.commit_batch(batch).await }).await;
    }

    /// Commits several jobs in one call, or one by one when the call fails.
    async fn commit_batch(&self, batch: Vec<Job>) {
        let common = UnitArrays::new(batch.iter().map(|job| (&job.unit, &job.projections[..])));
        let rows = match common {
            // The common shape on distinct streams: one statement per table.
            Ok(Some(arrays)) => {
                bind_units(sqlx::query(COMMIT_UNITS).bind(self.lock_key), &arrays)
                    .fetch_all(&self.pool)
                    .await
            }
            Ok(None) => self.commit_batch_call(&batch).await,
            Err(_) => return self.commit_each(batch).await,
        };
        let rows = match rows {
            Ok(rows) if rows.len() == batch.len() => rows,
            Ok(_) => return self.commit_each(batch).await,
            Err(e) => {
                tracing::debug!(
                    error = %classify(e),
                    jobs = batch.len(),
                    "batch commit failed; committing its jobs one by one"
                );
                return self.commit_each(batch).await;
            }
        };
        for (job, row) in batch.into_iter().zip(&rows) {
            self.answer(job, row).await;
        }
    }

    /// Commits a batch of any shape through `sf_commit_batch`, unit by unit.
    async fn commit_batch_call(&self, batch: &[Job]) -> Result<Vec<PgRow>, sqlx::Error> {
        let elements = batch
            .iter()
            .enumerate()
            .map(|(i, job)| unit_json(i + 1, &job.unit, &job.projections))
            .collect::<Result<Vec<_>, _>>();
        let elements = elements.map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        sqlx::query(COMMIT_BATCH)
            .bind(self.lock_key)
            .bind(serde_json::Value::Array(elements).to_string())
            .fetch_all(&self.pool)
            .await
    }

    /// Answers a job of a committed batch from its row.
    async fn answer(&self, job: Job, row: &PgRow) {
        let Job {
            unit,
            projections,
            reply,
        } = job;
        let stream = &unit.command.envelope.stream;
        let answer = match inline_outcome(row, 1, stream, unit.expected) {
            Ok(outcome) => self.settle(&unit, &projections, outcome).await,
            Err(e) => Err(e),
        };
        let _ = reply.send(answer);
    }

    /// Commits each job alone, in order.
    async fn commit_each(&self, batch: Vec<Job>) {
        for job in batch {
            let _ = job
                .reply
                .send(self.commit_unit(job.unit, &job.projections).await);
        }
    }
}

/// A runtime's group with the views' projection of it: one call of `sf_commit_units_group`
/// (the common shape on distinct streams) or `sf_commit_batch_group` (any other), in one
/// transaction (migration `0013`). A group whose call fails as a whole, or one carrying a
/// subject's first key, commits unit by unit, each with the retry policy, and projects nothing.
#[async_trait::async_trait]
impl GroupCommit for Postgres {
    async fn commit_group(&self, group: UnitGroup<'_>) -> GroupOutcome {
        let projections = group.projections.len();
        if group.units.iter().all(|unit| unit.keys.is_empty()) {
            match self.commit_group_call(&group).await {
                Ok(outcome) => return outcome,
                Err(e) => tracing::debug!(
                    error = %e,
                    units = group.units.len(),
                    "group commit failed; committing its units one by one"
                ),
            }
        }
        let mut units = Vec::with_capacity(group.units.len());
        for unit in group.units {
            let committed = self.commit_unit(unit.clone(), &[]).await;
            units.push(committed.map(|(receipt, _)| receipt));
        }
        GroupOutcome::unprojected(units, projections)
    }
}

impl Postgres {
    /// The one call that commits `group`; an error means nothing of it was written. A group
    /// without projections (a deployment whose views run elsewhere) calls the units' function
    /// itself: `sf_project_group`'s wrapping costs a small group about half as much again as
    /// its units' own writes.
    async fn commit_group_call(&self, group: &UnitGroup<'_>) -> Result<GroupOutcome, StoreError> {
        let bare = group.projections.is_empty();
        let views = GroupArrays::new(&group.projections)?;
        let first_sequences = group
            .first_sequences
            .iter()
            .map(|s| s.map(|s| db_int(s.0, "event sequence")).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let common = UnitArrays::new(group.units.iter().map(|unit| (*unit, &[][..])))?;
        let rows = match common {
            Some(arrays) if bare => {
                bind_units(sqlx::query(COMMIT_UNITS).bind(self.lock_key), &arrays)
                    .fetch_all(&self.pool)
                    .await
            }
            Some(arrays) => {
                let query =
                    bind_units(sqlx::query(COMMIT_UNITS_GROUP).bind(self.lock_key), &arrays);
                views
                    .bind(query.bind(&first_sequences))
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                let elements = group
                    .units
                    .iter()
                    .enumerate()
                    .map(|(i, unit)| unit_json(i + 1, unit, &[]))
                    .collect::<Result<Vec<_>, _>>()?;
                let elements = serde_json::Value::Array(elements).to_string();
                if bare {
                    sqlx::query(COMMIT_BATCH)
                        .bind(self.lock_key)
                        .bind(elements)
                        .fetch_all(&self.pool)
                        .await
                } else {
                    let query = sqlx::query(COMMIT_BATCH_GROUP)
                        .bind(self.lock_key)
                        .bind(elements)
                        .bind(&first_sequences);
                    views.bind(query).fetch_all(&self.pool).await
                }
            }
        };
        let rows = rows.map_err(classify)?;
        // The group functions end with the projections' row; the units' functions do not.
        let (projected, rows) = if bare {
            (None, &rows[..])
        } else {
            match rows.split_last() {
                Some((projected, rows)) => (Some(projected), rows),
                None => {
                    return Err(StoreError::Corrupt(
                        "a group commit returned no rows".into(),
                    ))
                }
            }
        };
        if rows.len() != group.units.len()
            || projected.map_or(Ok(false), |row| get::<i32>(row, 0).map(|n| n != 0))?
        {
            return Err(StoreError::Corrupt(format!(
                "a group commit of {} units returned {} rows",
                group.units.len(),
                rows.len() + usize::from(projected.is_some())
            )));
        }
        let mut units = Vec::with_capacity(rows.len());
        for (unit, row) in group.units.iter().zip(rows) {
            let stream = &unit.command.envelope.stream;
            let answer = match inline_outcome(row, 1, stream, unit.expected) {
                Ok(outcome) => self.settle(unit, &[], outcome).await,
                Err(e) => Err(e),
            };
            units.push(answer.map(|(receipt, _)| receipt));
        }
        let mut projected: Vec<bool> = match projected {
            Some(row) => get(row, 6)?,
            None => Vec::new(),
        };
        projected.resize(group.projections.len(), false);
        Ok(GroupOutcome { units, projected })
    }
}

/// The views' projections of a group as the parallel arrays `sf_project_group` takes.
#[derive(Default)]
struct GroupArrays<'a> {
    handlers: Vec<&'a str>,
    expected: Vec<i64>,
    after: Vec<i64>,
    models: ModelArrays<'a>,
}

impl<'a> GroupArrays<'a> {
    fn new(projections: &'a [GroupProjection]) -> Result<Self, StoreError> {
        let mut arrays = Self::default();
        for (index, projection) in projections.iter().enumerate() {
            arrays.handlers.push(&projection.handler);
            arrays
                .expected
                .push(db_int(projection.expected.0, "position")?);
            arrays.after.push(db_int(projection.after.0, "position")?);
            arrays.models.push(index, &projection.models)?;
        }
        Ok(arrays)
    }

    /// Binds the arrays after the per-unit first sequences.
    fn bind<'q>(
        &'q self,
        query: Query<'q, sqlx::Postgres, PgArguments>,
    ) -> Query<'q, sqlx::Postgres, PgArguments> {
        let query = query
            .bind(&self.handlers)
            .bind(&self.expected)
            .bind(&self.after);
        self.models.bind(query)
    }
}
