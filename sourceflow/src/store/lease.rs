//! Leases: a named role that one holder at a time plays among the processes sharing a store,
//! for a bounded time that the holder renews while it plays it.
//!
//! [`SourceFlow::follow`](crate::SourceFlow::follow) takes one per read side, so that of several
//! processes following the same log with the same views one applies it and the others stand by
//! and take over when it stops (it gives the lease up) or dies (its time runs out). A lease is
//! never what keeps data right: views apply each event exactly once whoever applies it (their
//! positions are compare-and-set), so a holder that lost its lease without noticing yet costs
//! duplicated work, not duplicated effects. Times are the holders' clocks: processes whose
//! clocks disagree by more than a lease's length may both play the role for a while.
//!
//! Every store of this workspace keeps leases (a table `sf_leases` on SQLite and Postgres, a
//! map in [`MemoryStore`](super::MemoryStore)) and hands them out through
//! [`Store::leases`](super::Store::leases).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::base::error::StoreError;

/// A lease as stored, for inspectors ([`StoreInspect::leases`](super::StoreInspect::leases)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease's name (a follower's is `sourceflow.follow:` and its views' names).
    pub name: String,
    /// Who holds it (a follower's id, made when it starts following).
    pub holder: Uuid,
    /// When it runs out unless renewed (in the past: free to take).
    pub expires_at: DateTime<Utc>,
}

/// Named leases kept in a store.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes lease `name` for `holder` until `until`, or renews it: granted when nobody holds
    /// it, when `holder` does, or when its holder's time ran out by `now`. Returns whether
    /// `holder` holds it now (until `until`). Concurrent callers never both get it.
    async fn hold(
        &self,
        name: &str,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives lease `name` up if `holder` holds it (and does nothing otherwise), so another
    /// holder can take it at once.
    async fn release(&self, name: &str, holder: Uuid) -> Result<(), StoreError>;
}
