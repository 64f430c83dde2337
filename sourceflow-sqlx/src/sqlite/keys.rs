//! Subject keys on the writer thread: a key's insertion and a subject's forgetting run in the
//! writer's `BEGIN IMMEDIATE` transaction, serialised with every other write to the file.

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};
use sourceflow::store::{NewKey, StoreError};

use super::columns::time_text;
use super::statement::{db_err, execute};
use crate::sql::keys::KEY_OF;
use crate::sql::write::KeyWrite;
use crate::sql::write::Written;

const INSERT_KEY: &str = "INSERT INTO sf_keys (subject, key, created_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (subject) DO NOTHING";

const FORGET_SUBJECT: &str = "INSERT INTO sf_keys (subject, key, created_at, forgotten_at) \
     VALUES (?1, NULL, ?2, ?2) ON CONFLICT (subject) DO UPDATE SET key = NULL, \
     forgotten_at = COALESCE(sf_keys.forgotten_at, excluded.forgotten_at)";

/// Whether one of a unit's new keys lost: its subject has another key already. Checked before
/// the unit writes anything, so a refused unit leaves nothing behind.
pub(super) fn taken(connection: &Connection, keys: &[NewKey]) -> Result<bool, StoreError> {
    for new in keys {
        let stored: Option<String> = connection
            .prepare_cached(KEY_OF)
            .and_then(|mut statement| {
                statement
                    .query_row(params![new.subject], |row| row.get(0))
                    .optional()
            })
            .map_err(db_err)?;
        if stored.is_some_and(|stored| !stored.is_empty() && stored != new.key.to_text()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Inserts a committed unit's new keys (a forgotten subject keeps no key).
pub(super) fn insert(connection: &Connection, keys: &[NewKey]) -> Result<(), StoreError> {
    let now = time_text(&Utc::now());
    for new in keys {
        execute(
            connection,
            INSERT_KEY,
            params![new.subject, new.key.to_text(), now],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

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
