//! The bounded backoff that retries transient faults, and what every backend counts as one.

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
        store: &'static str,
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
                    tracing::debug!(store, operation = what, attempt, error = %e, "transient store fault, retrying");
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// True for driver faults of the connection itself (I/O, a pool that timed out, a crashed
/// worker), transient on every backend; each backend adds its own transient error codes.
pub(crate) fn is_connection_fault(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed
    )
}

/// Maps a driver error to the store's error, keeping it as the source: transient if
/// `is_transient` says so.
pub(crate) fn classify<E>(err: E, is_transient: impl FnOnce(&E) -> bool) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if is_transient(&err) {
        StoreError::Transient(Box::new(err))
    } else {
        StoreError::Backend(Box::new(err))
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
    fn connection_faults_are_transient() {
        let err = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(classify(err, is_connection_fault).is_transient());
        assert!(!classify(sqlx::Error::RowNotFound, is_connection_fault).is_transient());
    }
}
