//! Leases on both SQL backends: the [`Leases`] contract over the `sf_leases` table (migrations
//! `sqlite/0006_leases.sql`, `postgres/0016_leases.sql`). Taking, renewing and giving up a
//! lease are writes handed to the backend ([`LeaseWrite`]: SQLite runs them on its writer
//! thread); each is one statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sourceflow::store::{Leases, StoreError};
use uuid::Uuid;

use super::write::{LeaseWrite, Write, Written};
use super::{write_answer, Backend, SqlStore};

/// Takes or renews a lease (`$1` name, `$2` holder, `$3` its new end, `$4` now, both in
/// milliseconds): it changes one row if `$2` holds the lease now, none otherwise.
pub(crate) const HOLD_LEASE: &str = "INSERT INTO sf_leases (name, holder, expires_at) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
     SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE sf_leases.holder = excluded.holder OR sf_leases.expires_at <= $4";

/// Gives a lease up (`$1` name, `$2` holder) if that holder holds it.
pub(crate) const RELEASE_LEASE: &str = "DELETE FROM sf_leases WHERE name = $1 AND holder = $2";

#[async_trait]
impl<B: Backend> Leases for SqlStore<B> {
    async fn hold(
        &self,
        name: &str,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let hold = LeaseWrite::Hold {
            name: name.to_owned(),
            holder: holder.to_string(),
            now: now.timestamp_millis(),
            until: until.timestamp_millis(),
        };
        write_answer(
            self.backend(),
            Write::Leases(hold),
            |written| match written {
                Written::Held(held) => Ok(held),
                other => Err(other),
            },
        )
        .await
    }

    async fn release(&self, name: &str, holder: Uuid) -> Result<(), StoreError> {
        let release = LeaseWrite::Release {
            name: name.to_owned(),
            holder: holder.to_string(),
        };
        write_answer(
            self.backend(),
            Write::Leases(release),
            |written| match written {
                Written::Done => Ok(()),
                other => Err(other),
            },
        )
        .await
    }
}
