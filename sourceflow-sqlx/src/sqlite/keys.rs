//! Subject keys on the writer thread: a key's insertion and a subject's forgetting run in the
//! writer's `BEGIN IMMEDIATE` transaction, serialised with every other write to the file.

use rusqlite::{params, Connection};
use sourceflow::store::StoreError;

use super::columns::time_text;
use super::writer::{db_err, execute};
use crate::sql::keys::KeyWrite;
use crate::sql::write::Written;

const INSERT_KEY: &str = "INSERT INTO sf_keys (subject, key, created_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (subject) DO NOTHING";

const FORGET_SUBJECT: &str = "INSERT INTO sf_keys (subject, key, created_at, forgotten_at) \
     VALUES (?1, NULL, ?2, ?2) ON CONFLICT (subject) DO UPDATE SET key = NULL, \
     forgotten_at = COALESCE(sf_keys.forgotten_at, excluded.forgotten_at)";

/// Runs one key write inside the writer's transaction.
pub(super) fn apply(connection: &Connection, write: &KeyWrite) -> Result<Written, StoreError> {
    match write {
        KeyWrite::Insert { subject, key, now } => execute(
            connection,
            INSERT_KEY,
            params![subject, key, time_text(now)],
        ),
        KeyWrite::Forget { subject, now } => {
            execute(connection, FORGET_SUBJECT, params![subject, time_text(now)])
        }
    }
    .map_err(db_err)?;
    Ok(Written::Done)
}
