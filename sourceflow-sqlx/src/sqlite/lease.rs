//! Leases on the writer thread: each take, renewal or release is one statement in the writer's
//! `BEGIN IMMEDIATE` transaction, serialised with every other write to the file.

use rusqlite::{params, Connection};
use sourceflow::store::StoreError;

use super::statement::{db_err, execute};
use crate::sql::lease::{HOLD_LEASE, RELEASE_LEASE};
use crate::sql::write::{LeaseWrite, Written};

/// Runs one lease write inside the writer's transaction.
pub(super) fn apply(connection: &Connection, write: &LeaseWrite) -> Result<Written, StoreError> {
    match write {
        LeaseWrite::Hold {
            name,
            holder,
            now,
            until,
        } => {
            let changed = execute(connection, HOLD_LEASE, params![name, holder, until, now])
                .map_err(db_err)?;
            Ok(Written::Held(changed == 1))
        }
        LeaseWrite::Release { name, holder } => {
            execute(connection, RELEASE_LEASE, params![name, holder]).map_err(db_err)?;
            Ok(Written::Done)
        }
    }
}
