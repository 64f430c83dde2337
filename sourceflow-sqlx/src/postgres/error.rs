//! Which Postgres errors are transient (serialization failures `40001`, deadlocks `40P01`,
//! lock timeouts `55P03`, server shutdown and restarts `57P0x`, too many connections `53300`,
//! the connection exception class `08`, and faults of the connection itself), and which are a
//! concurrent writer getting there first (unique violations). Everything else is
//! [`StoreError::Backend`].

use sourceflow::store::StoreError;

use crate::retry::{self, is_connection_fault};

/// True for driver errors that may pass if the operation is run again.
pub(super) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(
                &*code,
                "40001" // serialization_failure
                    | "40P01" // deadlock_detected
                    | "55P03" // lock_not_available
                    | "57P01" // admin_shutdown
                    | "57P02" // crash_shutdown
                    | "57P03" // cannot_connect_now
                    | "53300" // too_many_connections
            ) || code.starts_with("08") // connection_exception class
        }),
        other => is_connection_fault(other),
    }
}

/// Maps a driver error to the store's error, keeping it as the source.
pub(super) fn classify(err: sqlx::Error) -> StoreError {
    retry::classify(err, is_transient)
}

/// A configuration or migration error as [`StoreError::Backend`].
pub(super) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// True for a unique-constraint violation (a concurrent writer got there first).
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// True when `err` is the stream's event sequence already being taken (the single-statement
/// commit computed it from a snapshot older than the append lock).
pub(super) fn is_event_sequence_taken(err: &sqlx::Error) -> bool {
    is_unique_violation(err)
        && err
            .as_database_error()
            .and_then(|db| db.constraint())
            .is_some_and(|name| name == "sf_events_stream_sequence_key")
}
