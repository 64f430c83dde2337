//! Taking turns at committing queued work: the mechanism under group commit, for the runtime's
//! groups of units with their views and for a store that batches the units handed to it.
//!
//! Each sender queues its job with [`Turns::push`] (which hands out a [`Ticket`] in queue
//! order), then waits for its answer or the turn, whichever comes first
//! ([`Turns::answer_or_turn`]). A job that an earlier turn took is answered by that turn, so
//! the senders of one batch never pass the turn along one by one before the next batch can
//! start (each handoff is a task switch). Whoever gets the turn takes batches
//! ([`Turn::take`]) until its own job is among those taken ([`Turn::has_taken`]), and holds the
//! turn while it commits them, so jobs queue up meanwhile and the next batch is larger.
//!
//! ```
//! use sourceflow::store::turns::Turns;
//! use tokio::sync::oneshot;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let turns: Turns<(u32, oneshot::Sender<u32>)> = Turns::default();
//! let (reply, mut answer) = oneshot::channel();
//! let ticket = turns.push((20, reply));
//! let doubled = match turns.answer_or_turn(&mut answer).await {
//!     Ok(answered) => answered.unwrap(),
//!     Err(turn) => {
//!         while !turn.has_taken(ticket) {
//!             for (n, reply) in turn.take(128) {
//!                 let _ = reply.send(n * 2); // the batch's commit, answering each sender
//!             }
//!         }
//!         drop(turn);
//!         answer.await.unwrap()
//!     }
//! };
//! assert_eq!(doubled, 40);
//! # }
//! ```

use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// A job's place in a [`Turns`] queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Jobs in ticket order: `pushed` is the last ticket handed out, `taken` the last one a turn
/// took.
struct Queue<J> {
    pending: Vec<J>,
    pushed: u64,
    taken: u64,
}

/// Queued jobs and the turn that commits them (see the [module docs](self)).
pub struct Turns<J> {
    queue: Mutex<Queue<J>>,
    turn: tokio::sync::Mutex<()>,
}

impl<J> Default for Turns<J> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                pushed: 0,
                taken: 0,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl<J> std::fmt::Debug for Turns<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turns")
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl<J> Turns<J> {
    fn lock(&self) -> MutexGuard<'_, Queue<J>> {
        // Jobs are pushed and drained whole: a panic elsewhere leaves the queue valid.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` behind the jobs queued so far.
    pub fn push(&self, job: J) -> Ticket {
        let mut queue = self.lock();
        queue.pushed += 1;
        queue.pending.push(job);
        Ticket(queue.pushed)
    }

    /// How many jobs are queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.lock().pending.len()
    }

    /// Waits for `answer` or the turn, whichever comes first (the answer when both are ready):
    /// `Ok` with the answer (an error if its sender was dropped unanswered), or `Err` with the
    /// turn.
    ///
    /// # Errors
    /// `Err` is not a failure: it is the turn, to take batches with until the caller's own job
    /// is taken.
    pub async fn answer_or_turn<A>(
        &self,
        answer: &mut oneshot::Receiver<A>,
    ) -> Result<Result<A, oneshot::error::RecvError>, Turn<'_, J>> {
        tokio::select! {
            biased;
            answered = answer => Ok(answered),
            guard = self.turn.lock() => Err(Turn { turns: self, _guard: guard }),
        }
    }
}

/// The turn, held until dropped: its holder takes and commits batches.
pub struct Turn<'a, J> {
    turns: &'a Turns<J>,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

impl<J> std::fmt::Debug for Turn<'_, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn").finish_non_exhaustive()
    }
}

impl<J> Turn<'_, J> {
    /// Whether the job with `ticket` was taken (by this turn or an earlier one).
    pub fn has_taken(&self, ticket: Ticket) -> bool {
        self.turns.lock().taken >= ticket.0
    }

    /// Takes up to `max` of the queued jobs, oldest first.
    pub fn take(&self, max: usize) -> Vec<J> {
        let mut queue = self.turns.lock();
        let n = queue.pending.len().min(max);
        queue.taken += n as u64;
        queue.pending.drain(..n).collect()
    }

    /// How many jobs are queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.turns.queued()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// 64 concurrent senders, each answered exactly once with its own job's result, by batches
    /// that never exceed their size and take jobs in queue order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_is_answered_once_by_ordered_batches() {
        let turns: Arc<Turns<(u64, oneshot::Sender<u64>)>> = Arc::default();
        let batches: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
        let senders = (0..64u64).map(|n| {
            let (turns, batches) = (turns.clone(), batches.clone());
            tokio::spawn(async move {
                let (reply, mut answer) = oneshot::channel();
                let ticket = turns.push((n, reply));
                match turns.answer_or_turn(&mut answer).await {
                    Ok(answered) => answered.expect("answered"),
                    Err(turn) => {
                        while !turn.has_taken(ticket) {
                            let batch = turn.take(8);
                            assert!(!batch.is_empty() && batch.len() <= 8);
                            tokio::task::yield_now().await; // the batch's commit
                            batches
                                .lock()
                                .unwrap()
                                .push(batch.iter().map(|(n, _)| *n).collect());
                            for (n, reply) in batch {
                                let _ = reply.send(n * 10);
                            }
                        }
                        drop(turn);
                        answer.await.expect("answered")
                    }
                }
            })
        });
        let answers: Vec<u64> = futures_util::future::join_all(senders)
            .await
            .into_iter()
            .map(|joined| joined.expect("a sender"))
            .collect();
        assert_eq!(answers, (0..64).map(|n| n * 10).collect::<Vec<_>>());
        let mut taken: Vec<u64> = batches.lock().unwrap().concat();
        assert_eq!(taken.len(), 64, "each job taken once");
        taken.sort_unstable();
        assert_eq!(taken, (0..64).collect::<Vec<_>>());
        assert_eq!(turns.queued(), 0);
    }

    /// A job queued behind more than one batch's worth is taken by the same turn, batch after
    /// batch.
    #[tokio::test]
    async fn a_turn_takes_batches_until_its_own_job_is_taken() {
        let turns: Turns<u32> = Turns::default();
        for n in 0..5 {
            turns.push(n);
        }
        let ticket = turns.push(5);
        let (_reply, mut answer) = oneshot::channel::<()>();
        let turn = turns
            .answer_or_turn(&mut answer)
            .await
            .expect_err("no answer: the turn");
        let mut batches = Vec::new();
        while !turn.has_taken(ticket) {
            batches.push(turn.take(4));
        }
        assert_eq!(batches, vec![vec![0, 1, 2, 3], vec![4, 5]]);
    }

    /// The answer wins over a free turn, so a sender an earlier turn answered never takes one.
    #[tokio::test]
    async fn an_answer_comes_before_the_turn() {
        let turns: Turns<()> = Turns::default();
        let (reply, mut answer) = oneshot::channel();
        reply.send(7).unwrap();
        assert_eq!(
            turns.answer_or_turn(&mut answer).await.ok().map(Result::ok),
            Some(Some(7))
        );
    }
}
