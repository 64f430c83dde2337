//! Transient faults: which driver errors are worth retrying, and the bounded backoff that
//! retries them.

use std::future::Future;
use std::time::Duration;

use sourceflow::store::StoreError;
use sourceflow::RetryPolicy;

/// How a store retries transient faults (busy or locked database, dropped connection,
/// serialization failure, deadlock, server restart) before returning
/// [`StoreError::Transient`] to the caller.
///
/// The schedule is the runtime's [`RetryPolicy`] (delays grow exponentially from `base_delay`
/// up to `max_delay`, with full jitter so that contending writers spread out instead of
/// colliding again in lockstep); `Backoff` only gives it the store's own defaults: 10 attempts,
/// 2 ms up to 500 ms. Builders take `impl Into<Backoff>`, so a [`RetryPolicy`] can be passed
/// directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The attempts and delays.
    pub policy: RetryPolicy,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            policy: RetryPolicy {
                max_attempts: 10,
                base_delay: Duration::from_millis(2),
                max_delay: Duration::from_millis(500),
            },
        }
    }
}

impl From<RetryPolicy> for Backoff {
    fn from(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl From<Backoff> for RetryPolicy {
    fn from(backoff: Backoff) -> Self {
        backoff.policy
    }
}

impl Backoff {
    /// Never retry: the first transient fault is returned as [`StoreError::Transient`].
    pub fn none() -> Self {
        let mut backoff = Self::default();
        backoff.policy.max_attempts = 1;
        backoff
    }

    /// How many times an operation may run in total.
    pub fn max_attempts(&self) -> u32 {
        self.policy.max_attempts
    }

    /// The jittered delay before retry number `retry` (1-based): [`RetryPolicy::delay`].
    pub fn delay(&self, retry: u32) -> Duration {
        self.policy.delay(retry)
    }

    /// Runs `op` until it succeeds, fails permanently, or the attempts are used up.
    ///
    /// `op` is called afresh for each attempt, so it must not have committed anything when it
    /// returns a transient error (every store operation is one transaction, rolled back on
    /// failure).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.max_attempts() => {
                    tracing::debug!(operation = what, attempt, error = %e, "transient store fault, retrying");
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Which database produced an error: the transient codes differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

/// True for driver errors that may pass if the operation is run again.
pub(crate) fn is_transient(err: &sqlx::Error, dialect: Dialect) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            match dialect {
                // Extended result codes: the primary code is the low byte.
                // 5 = SQLITE_BUSY (and BUSY_SNAPSHOT, BUSY_RECOVERY), 6 = SQLITE_LOCKED.
                Dialect::Sqlite => code
                    .parse::<i32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
                Dialect::Postgres => {
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
                }
            }
        }
        _ => false,
    }
}

/// Maps a driver error to the store's error, keeping it as the source.
pub(crate) fn classify(err: sqlx::Error, dialect: Dialect) -> StoreError {
    if is_transient(&err, dialect) {
        StoreError::Transient(Box::new(err))
    } else {
        StoreError::Backend(Box::new(err))
    }
}

/// True for a unique-constraint violation (a concurrent writer got there first).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// True for SQLite errors of the SQLite writer's own connection that may pass if the
/// transaction is run again: `SQLITE_BUSY` (and `BUSY_SNAPSHOT`, `BUSY_RECOVERY`, `BUSY_TIMEOUT`)
/// and `SQLITE_LOCKED` (and `LOCKED_SHAREDCACHE`, `LOCKED_VTAB`), as [`is_transient`] judges
/// the same codes coming through sqlx.
#[cfg(feature = "sqlite")]
pub(crate) fn is_transient_sqlite(err: &rusqlite::Error) -> bool {
    sqlite_code(err).is_some_and(|code| {
        matches!(
            code & 0xff,
            rusqlite::ffi::SQLITE_BUSY | rusqlite::ffi::SQLITE_LOCKED
        )
    })
}

/// Maps an error of the SQLite writer's connection to the store's error, keeping it as the
/// source.
#[cfg(feature = "sqlite")]
pub(crate) fn classify_sqlite(err: rusqlite::Error) -> StoreError {
    if is_transient_sqlite(&err) {
        StoreError::Transient(Box::new(err))
    } else {
        StoreError::Backend(Box::new(err))
    }
}

/// True for a unique or primary-key constraint violation on the SQLite writer's connection
/// (the codes sqlx reports as a unique violation).
#[cfg(feature = "sqlite")]
pub(crate) fn is_unique_violation_sqlite(err: &rusqlite::Error) -> bool {
    sqlite_code(err).is_some_and(|code| {
        matches!(
            code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    })
}

/// The extended result code of an error SQLite itself returned.
#[cfg(feature = "sqlite")]
fn sqlite_code(err: &rusqlite::Error) -> Option<i32> {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded() {
        let backoff = Backoff::default();
        for retry in 1..40 {
            assert!(backoff.delay(retry) <= backoff.policy.max_delay);
        }
        assert!(backoff.delay(1) <= backoff.policy.base_delay);
        assert_eq!(Backoff::none().max_attempts(), 1);
        assert_eq!(Backoff::from(RetryPolicy::none()).max_attempts(), 1);
    }

    #[test]
    fn io_errors_are_transient() {
        let err = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_transient(&err, Dialect::Postgres));
        assert!(classify(err, Dialect::Sqlite).is_transient());
        assert!(!classify(sqlx::Error::RowNotFound, Dialect::Sqlite).is_transient());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_writer_errors_are_classified() {
        use rusqlite::ffi;
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_LOCKED_SHAREDCACHE,
        ] {
            assert!(classify_sqlite(failure(code)).is_transient(), "{code}");
        }
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
        ] {
            assert!(is_unique_violation_sqlite(&failure(code)), "{code}");
            assert!(!classify_sqlite(failure(code)).is_transient(), "{code}");
        }
        assert!(!is_unique_violation_sqlite(&failure(
            ffi::SQLITE_CONSTRAINT_NOTNULL
        )));
        assert!(!classify_sqlite(failure(ffi::SQLITE_IOERR)).is_transient());
        assert!(!classify_sqlite(rusqlite::Error::QueryReturnedNoRows).is_transient());
    }
}
