//! Group commit: the units of work that concurrent senders of one process hand to the store
//! while a commit is under way are committed together, by one call of `sf_commit_units` (the
//! common shape on distinct streams, set-based) or `sf_commit_batch` (any other), in one
//! transaction (one append lock, one WAL flush). Projection batches take no append lock and
//! commit on their own, concurrently (see the [module docs](super)).
//!
//! Every sender queues its unit, then waits for its turn (a fair lock). Whoever gets the turn
//! takes every unit queued so far, unless an earlier turn took its own unit already, and holds
//! the turn until they are committed, so units queue up meanwhile. One unit alone goes the
//! path it would take without grouping; several go as one batch, committed on a task of its own
//! so that a sender that stops waiting cannot cut the others' commit short. A batch that fails
//! as a whole (a deadlock with another process, a dropped connection) is committed again unit
//! by unit, each with the retry policy.

use std::sync::Mutex;

use sourceflow::store::{InlineProjection, StoreError, UnitOfWork};
use sourceflow::CommandReceipt;
use sqlx::postgres::PgRow;
use tokio::sync::oneshot;

use super::commit::{bind_units, inline_outcome, unit_json, UnitArrays};
use super::error::classify;
use super::queries::{COMMIT_BATCH, COMMIT_UNITS};
use super::Postgres;

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

/// The queue: jobs in ticket order, `pushed` the last ticket handed out, `taken` the last one
/// a leader took.
#[derive(Default)]
struct Queue {
    pending: Vec<Job>,
    pushed: u64,
    taken: u64,
}

/// The group-commit state a store's clones share.
#[derive(Default)]
pub(super) struct Group {
    queue: Mutex<Queue>,
    turn: tokio::sync::Mutex<()>,
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
        if self.group.is_none() || !unit.keys.is_empty() {
            return self.commit_unit(unit, &projections).await;
        }
        let (reply, answer) = oneshot::channel();
        self.take_turn(Job {
            unit,
            projections,
            reply,
        })
        .await;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `job`, then waits for this sender's turn and commits everything queued so far,
    /// unless an earlier turn took `job` already.
    async fn take_turn(&self, job: Job) {
        let Some(group) = self.group.clone() else {
            return self.commit_each(vec![job]).await;
        };
        let ticket = {
            let mut queue = group.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.pushed += 1;
            queue.pending.push(job);
            queue.pushed
        };
        let _turn = group.turn.lock().await;
        let batch = {
            let mut queue = group.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.taken >= ticket {
                return;
            }
            let n = queue.pending.len().min(MAX_BATCH);
            queue.taken += n as u64;
            queue.pending.drain(..n).collect::<Vec<_>>()
        };
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
