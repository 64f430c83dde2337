//! [`SourceFlow::follow`]: a read-side process keeps its views and aggregates current with a
//! store other processes write to, and of several processes following the same log with the
//! same views, one applies it while the others stand by (a [lease](crate::store::Leases)).

use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::SourceFlow;
use crate::base::error::Error;
use crate::base::message::RecordedEvent;
use crate::read::subscriber::{Progress, BATCH};
use crate::store::{Leases, Store};

/// How long a follower's lease lasts unless renewed: how long a follower that died leaves
/// the read side without anyone applying the log.
const LEASE_TERM: Duration = Duration::from_secs(10);
/// How often the follower holding the lease renews it.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a follower standing by tries to take the lease.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

impl SourceFlow {
    /// Keeps every view and aggregate of this flow current with the store's log for as long as
    /// it runs: the process that serves the read side of a store other processes write to
    /// (writers built with their sagas only, a NATS deployment's workers on a shared
    /// Postgres). It first [catches up](Self::catch_up), then applies what any process commits,
    /// in log order, in batches of what one read of the log returns (one commit per view per
    /// batch), within milliseconds of the commit while the log keeps growing (the polling of
    /// [`subscribe`](Self::subscribe)). Views stay exactly once however many processes project
    /// them. Reactions' follow-up commands are sent after each batch.
    ///
    /// ```no_run
    /// # use sourceflow::prelude::*;
    /// # async fn demo(read_side: SourceFlow) -> Result<(), Error> {
    /// tokio::spawn(async move { read_side.follow().await });
    /// # Ok(()) }
    /// ```
    ///
    /// Several processes may follow one store with the same views and aggregates, for
    /// availability: one of them applies the log while it holds the read side's lease (every
    /// store of this workspace keeps leases, [`Store::leases`]), and the others stand by,
    /// trying to take it every second. The holder renews it every 2 s; if it stops following
    /// (the task is dropped) it gives the lease up and another process takes over within a
    /// second, and if it dies the lease runs out after 10 s. A holder that cannot renew in time
    /// (the store unreachable), or finds another holder, stops applying and stands by. The
    /// lease is only about work: whoever applies the log, each event reaches each view once.
    /// On a store without leases every follower applies the log.
    ///
    /// A transient fault of the store (the database restarting, a dropped connection) is
    /// logged and retried with backoff, reading or applying, for as long as it lasts.
    ///
    /// # Errors
    /// The first failure of a view or aggregate ([`Error::Decode`], a lasting
    /// [`Error::Store`], or a handler's error); nothing of that subscriber's failed batch is
    /// committed, so following again retries it. It never returns otherwise.
    pub async fn follow(&self) -> Result<(), Error> {
        self.follow_with(|_| {}).await
    }

    /// [`follow`](Self::follow), reporting progress after every batch applied
    /// ([`Progress::applied`] counts the events taken off the log since this process last took
    /// the read side over, [`Progress::position`] is the last one's position).
    ///
    /// # Errors
    /// As [`follow`](Self::follow).
    pub async fn follow_with(
        &self,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<(), Error> {
        let store = self.inner.read.store.clone();
        if store.leases().is_none() {
            return self.follow_log(&mut progress, None).await;
        }
        let lease = Lease {
            store,
            name: self.follow_lease_name(),
            holder: Uuid::new_v4(),
        };
        loop {
            lease.take().await;
            tracing::info!(lease = %lease.name, "follow: this process applies the log");
            let released = Release(&lease);
            self.follow_log(&mut progress, Some(&lease)).await?;
            drop(released);
            tracing::info!(lease = %lease.name, "follow: lost the read side's lease; standing by");
        }
    }

    /// The read side's lease: its views and aggregates by name, so that processes following
    /// with the same ones share it and others do not.
    fn follow_lease_name(&self) -> String {
        let mut names: Vec<&str> = self.inner.read.subscribers.iter().map(|s| s.name).collect();
        names.sort_unstable();
        format!("sourceflow.follow:{}", names.join(","))
    }

    /// Catches up, then applies the log as it grows; with a `lease`, until it is lost (`Ok`).
    async fn follow_log(
        &self,
        progress: &mut (impl FnMut(Progress) + Send),
        lease: Option<&Lease>,
    ) -> Result<(), Error> {
        use futures_util::StreamExt as _;
        let read = &self.inner.read;
        let mut holding = lease.map(Holding::new);
        // Read from the head as it was before catching up: what commits meanwhile is read
        // again and skipped by each subscriber's position.
        let from = read.store.head().await?;
        self.catch_up().await?;
        let mut batches = std::pin::pin!(read.clone().subscribe(from).ready_chunks(BATCH));
        let (mut applied, mut failures) = (0, 0);
        loop {
            let batch = match &mut holding {
                None => batches.next().await,
                Some(holding) => {
                    let due = tokio::time::Instant::from_std(holding.renew_at);
                    let next = tokio::time::timeout_at(due, batches.next()).await;
                    if !holding.keep().await {
                        return Ok(());
                    }
                    match next {
                        Ok(batch) => batch,
                        Err(_) => continue,
                    }
                }
            };
            let Some(batch) = batch else { return Ok(()) };
            // A failed read leaves the subscription where it was: the events around it are
            // still in log order.
            let (mut events, mut failed) = (Vec::with_capacity(batch.len()), None);
            for item in batch {
                match item {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(last) = events.last() {
                self.apply_followed(&events).await?;
                applied += events.len() as u64;
                progress(Progress {
                    position: last.position,
                    head: last.position,
                    applied,
                });
            }
            match failed {
                Some(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "follow: cannot read the log; retrying");
                    tokio::time::sleep(follow_backoff(failures)).await;
                    failures += 1;
                }
                Some(e) => return Err(e),
                None => failures = 0,
            }
        }
    }

    /// Applies one batch [`follow`](Self::follow) read, retrying while the store's failures are
    /// transient, then sends reactions' follow-ups.
    async fn apply_followed(&self, events: &[RecordedEvent]) -> Result<(), Error> {
        let mut failures = 0;
        loop {
            match self.inner.read.apply_remote(events).await {
                Ok(_) => break,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "follow: cannot apply a batch; retrying");
                    tokio::time::sleep(follow_backoff(failures)).await;
                    failures += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.drain_outbox().await;
        Ok(())
    }
}

/// A follower's lease on its read side.
struct Lease {
    store: std::sync::Arc<dyn Store>,
    name: String,
    holder: Uuid,
}

impl Lease {
    fn leases(&self) -> &dyn Leases {
        self.store
            .leases()
            .expect("a lease is only made for a store that keeps them")
    }

    /// Takes or renews the lease: whether this follower holds it now.
    async fn renew(&self) -> Result<bool, Error> {
        let now = Utc::now();
        let until = now + LEASE_TERM;
        Ok(self
            .leases()
            .hold(&self.name, self.holder, now, until)
            .await?)
    }

    /// Waits until this follower holds the lease.
    async fn take(&self) {
        let mut told = false;
        loop {
            match self.renew().await {
                Ok(true) => return,
                Ok(false) if !told => {
                    tracing::info!(lease = %self.name, "follow: another process applies the log; standing by");
                    told = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "follow: cannot take the lease; retrying"),
            }
            tokio::time::sleep(STANDBY_RETRY).await;
        }
    }
}

/// A lease this follower holds: until when it lasts, and when to renew it next.
struct Holding<'a> {
    lease: &'a Lease,
    until: Instant,
    renew_at: Instant,
}

impl<'a> Holding<'a> {
    /// The lease just taken.
    fn new(lease: &'a Lease) -> Self {
        let now = Instant::now();
        Self {
            lease,
            until: now + LEASE_TERM,
            renew_at: now + RENEW_EVERY,
        }
    }

    /// Renews the lease when that is due; `false` once it is lost (another process holds it,
    /// or it could not be renewed before it runs out).
    async fn keep(&mut self) -> bool {
        let now = Instant::now();
        if now < self.renew_at {
            return true;
        }
        match self.lease.renew().await {
            Ok(true) => {
                self.until = now + LEASE_TERM;
                self.renew_at = now + RENEW_EVERY;
                true
            }
            Ok(false) => false,
            Err(e) if now + RENEW_EVERY < self.until => {
                tracing::warn!(error = %e, "follow: cannot renew the lease; retrying");
                self.renew_at = now + STANDBY_RETRY;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "follow: cannot renew the lease in time");
                false
            }
        }
    }
}

/// Gives the lease up when following stops (dropped, or failed), so that a process standing
/// by takes over at once rather than when the lease runs out.
struct Release<'a>(&'a Lease);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, name, holder) = (self.0.store.clone(), self.0.name.clone(), self.0.holder);
        runtime.spawn(async move {
            if let Some(leases) = store.leases() {
                if let Err(e) = leases.release(&name, holder).await {
                    tracing::debug!(error = %e, "follow: cannot give the lease up (it runs out)");
                }
            }
        });
    }
}

/// True for a store fault worth retrying (the database restarting, a dropped connection).
fn is_transient(error: &Error) -> bool {
    matches!(error, Error::Store(e) if e.is_transient())
}

/// How long [`SourceFlow::follow`] waits after its `failures`-th transient fault in a row:
/// 50 ms, doubling up to 3.2 s.
fn follow_backoff(failures: u32) -> Duration {
    Duration::from_millis(50 << failures.min(6))
}
