//! Group commit: the units of work that concurrent senders of one process hand to the store
//! while a commit is under way are committed together, by one call of `sf_commit_batch`, in
//! one transaction (one append lock, one WAL flush).
//!
//! Every sender queues its unit, then waits for the leader's turn (a fair lock). Whoever gets
//! the turn takes every unit queued so far, unless a leader before it took its own unit already.
//! One unit alone goes the single-unit path (`commit_unit`); several go as one batch, committed
//! on a task of its own so that a sender that stops waiting cannot cut the others' commit short.
//! A batch that fails as a whole (a deadlock with another process, a dropped connection) is
//! committed again unit by unit, each with the retry policy.

use std::sync::Mutex;

use sourceflow::store::{InlineProjection, StoreError, UnitOfWork};
use sourceflow::CommandReceipt;
use tokio::sync::oneshot;

use super::commit::{inline_outcome, unit_json};
use super::error::classify;
use super::queries::COMMIT_BATCH;
use super::Postgres;

/// The most units one batch carries.
const MAX_BATCH: usize = 128;

/// What a sender gets back: the receipt and which inline projections applied.
type Answer = Result<(CommandReceipt, Vec<bool>), StoreError>;

/// A queued unit of work and where its answer goes.
struct Pending {
    unit: UnitOfWork,
    projections: Vec<InlineProjection>,
    reply: oneshot::Sender<Answer>,
}

/// The queue: units in ticket order, `pushed` the last ticket handed out, `taken` the last one
/// a leader took.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    pushed: u64,
    taken: u64,
}

/// The group-commit state a store's clones share.
#[derive(Default)]
pub(super) struct Group {
    queue: Mutex<Queue>,
    turn: tokio::sync::Mutex<()>,
}

impl Postgres {
    /// Commits `unit`, together with those of concurrent senders of this process.
    pub(super) async fn commit_grouped(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Answer {
        let Some(group) = self.group.clone() else {
            return self.commit_unit(unit, &projections).await;
        };
        let (reply, answer) = oneshot::channel();
        let ticket = {
            let mut queue = group.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.pushed += 1;
            queue.pending.push(Pending {
                unit,
                projections,
                reply,
            });
            queue.pushed
        };
        {
            let _turn = group.turn.lock().await;
            let mut batch = {
                let mut queue = group.queue.lock().unwrap_or_else(|e| e.into_inner());
                if queue.taken >= ticket {
                    Vec::new()
                } else {
                    let n = queue.pending.len().min(MAX_BATCH);
                    queue.taken += n as u64;
                    queue.pending.drain(..n).collect::<Vec<_>>()
                }
            };
            match batch.len() {
                0 => {}
                1 => {
                    if let Some(one) = batch.pop() {
                        let answer = self.commit_unit(one.unit, &one.projections).await;
                        let _ = one.reply.send(answer);
                    }
                }
                _ => {
                    let store = self.clone();
                    // A panic reaches every sender of the batch as a dropped answer.
                    let _ = tokio::spawn(async move { store.commit_batch(batch).await }).await;
                }
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "the commit of a batch of units of work stopped before it answered".into(),
            ))
        })
    }

    /// Commits several units in one call, or one by one when the call fails.
    async fn commit_batch(&self, batch: Vec<Pending>) {
        let units = match batch
            .iter()
            .enumerate()
            .map(|(i, p)| unit_json(i + 1, &p.unit, &p.projections))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(units) => serde_json::Value::Array(units).to_string(),
            Err(_) => return self.commit_each(batch).await,
        };
        let rows = sqlx::query(COMMIT_BATCH)
            .bind(self.lock_key)
            .bind(units)
            .fetch_all(&self.pool)
            .await;
        let rows = match rows {
            Ok(rows) if rows.len() == batch.len() => rows,
            Ok(_) | Err(_) => {
                if let Err(e) = rows {
                    tracing::debug!(error = %classify(e), units = batch.len(), "batch commit failed; committing its units one by one");
                }
                return self.commit_each(batch).await;
            }
        };
        for (pending, row) in batch.into_iter().zip(&rows) {
            let stream = &pending.unit.command.envelope.stream;
            let answer = match inline_outcome(row, 1, stream, pending.unit.expected) {
                Ok(outcome) => {
                    self.settle(&pending.unit, &pending.projections, outcome)
                        .await
                }
                Err(e) => Err(e),
            };
            let _ = pending.reply.send(answer);
        }
    }

    /// Commits each unit alone, in order.
    async fn commit_each(&self, batch: Vec<Pending>) {
        for pending in batch {
            let answer = self.commit_unit(pending.unit, &pending.projections).await;
            let _ = pending.reply.send(answer);
        }
    }
}
