//! Which SQLite errors are transient, through sqlx (the readers, the migrations) and through
//! the writer's own connection: `SQLITE_BUSY` (and `BUSY_SNAPSHOT`, `BUSY_RECOVERY`,
//! `BUSY_TIMEOUT`), `SQLITE_LOCKED` (and `LOCKED_SHAREDCACHE`, `LOCKED_VTAB`), and faults of the
//! connection itself. Everything else is [`StoreError::Backend`].

use sourceflow::store::StoreError;

use crate::retry::{self, is_connection_fault};

/// True for an extended result code whose primary code (the low byte) is busy or locked.
fn is_busy_or_locked(code: i32) -> bool {
    matches!(
        code & 0xff,
        rusqlite::ffi::SQLITE_BUSY | rusqlite::ffi::SQLITE_LOCKED
    )
}

/// True for driver errors of a reader or migration connection that may pass if the operation
/// is run again.
pub(super) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(is_busy_or_locked),
        other => is_connection_fault(other),
    }
}

/// Maps a driver error of a reader or migration connection to the store's error.
pub(super) fn classify(err: sqlx::Error) -> StoreError {
    retry::classify(err, is_transient)
}

/// True when a migration failed because another connection holds the file's lock.
pub(super) fn migration_is_busy(err: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    matches!(
        err,
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) if is_transient(e)
    )
}

/// The extended result code of an error SQLite itself returned.
fn writer_code(err: &rusqlite::Error) -> Option<i32> {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code),
        _ => None,
    }
}

/// True for errors of the writer's connection that may pass if the transaction is run again.
pub(super) fn is_transient_writer(err: &rusqlite::Error) -> bool {
    writer_code(err).is_some_and(is_busy_or_locked)
}

/// Maps an error of the writer's connection to the store's error, keeping it as the source.
pub(super) fn classify_writer(err: rusqlite::Error) -> StoreError {
    retry::classify(err, is_transient_writer)
}

/// True for a unique or primary-key constraint violation on the writer's connection (the codes
/// sqlx reports as a unique violation).
pub(super) fn is_unique_violation_writer(err: &rusqlite::Error) -> bool {
    writer_code(err).is_some_and(|code| {
        matches!(
            code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_errors_are_classified() {
        use rusqlite::ffi;
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_LOCKED_SHAREDCACHE,
        ] {
            assert!(classify_writer(failure(code)).is_transient(), "{code}");
        }
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
        ] {
            assert!(is_unique_violation_writer(&failure(code)), "{code}");
            assert!(!classify_writer(failure(code)).is_transient(), "{code}");
        }
        assert!(!is_unique_violation_writer(&failure(
            ffi::SQLITE_CONSTRAINT_NOTNULL
        )));
        assert!(!classify_writer(failure(ffi::SQLITE_IOERR)).is_transient());
        assert!(!classify_writer(rusqlite::Error::QueryReturnedNoRows).is_transient());
    }
}
