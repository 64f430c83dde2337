//! The command bus: how a command travels from `send` to the dispatcher that runs it.
//!
//! Every command is wrapped in an [`OutgoingCommand`] (envelope, JSON payload and the typed
//! value) and offered to the registered [`CommandDispatcher`]s in order; the first that accepts
//! it dispatches it. The local dispatcher, which runs the saga against the store, is always last
//! and accepts every command that has a local saga. Remote transports plug in here without
//! touching the bus.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::base::error::Error;
use crate::base::message::{CommandReceipt, Envelope};
use crate::codec::ErasedMessage;

/// A command on its way to a dispatcher.
#[derive(Clone)]
pub struct OutgoingCommand {
    /// The command's metadata.
    pub envelope: Envelope,
    /// The JSON payload, as it will be stored.
    pub payload: Vec<u8>,
    /// The typed command (`Arc<C>` behind `dyn Any`), so the local path never re-decodes it.
    pub message: ErasedMessage,
    /// Whether no earlier attempt can have stored this message id: `send` generated it for
    /// this call (no idempotency key), or a schedule fires for the first time. A follow-up
    /// command's derived id, a caller's key and a retry are not first sends. A transport passes
    /// this on, so that the receiving side can skip the duplicate lookup on the command's first
    /// delivery ([`SourceFlow::dispatch_first_delivery`](crate::SourceFlow::dispatch_first_delivery)).
    pub first_send: bool,
}

impl std::fmt::Debug for OutgoingCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingCommand")
            .field("envelope", &self.envelope)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Somewhere a command can be dispatched to: another process, a queue, a remote service.
///
/// Register one with [`Builder::dispatcher`](crate::Builder::dispatcher). Dispatchers are
/// offered each command in registration order before the local one.
#[async_trait]
pub trait CommandDispatcher: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Whether this dispatcher takes the command.
    fn accepts(&self, command: &OutgoingCommand) -> bool;

    /// Dispatches the command and returns its receipt.
    ///
    /// # Errors
    /// Whatever the remote side reports, as [`Error`] variants.
    async fn dispatch(&self, command: OutgoingCommand) -> Result<CommandReceipt, Error>;
}

/// Per-call options of [`SourceFlow::send_with`](crate::SourceFlow::send_with).
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    pub(crate) message_id: Option<Uuid>,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
}

impl SendOptions {
    /// Default options: a fresh message id and a fresh correlation id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `id` as the command's message id: the idempotency key. A second command with the
    /// same id in the same stream is not run again; `send` returns the original receipt.
    pub fn message_id(mut self, id: Uuid) -> Self {
        self.message_id = Some(id);
        self
    }

    /// Joins an existing correlation (e.g. an incoming request's trace id).
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Records which message caused this command.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }
}

/// How often and how patiently a command is retried after a concurrency conflict.
///
/// Delays grow exponentially from `base_delay` up to `max_delay`, with full jitter, so
/// contending writers spread out instead of colliding again in lockstep.
///
/// Within one process, commands to one stream queue instead of conflicting; conflicts come
/// from other processes. A process that writes one stream in a tight loop wins most races
/// against another (it reuses its cached state and skips a read), so the default budget —
/// 400 attempts, about twenty seconds of backoff — is sized to outlast such bursts; lower it
/// where a caller would rather hear `Error::Concurrency` sooner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times the handler may run in total (at least 1).
    pub max_attempts: u32,
    /// Delay bound before the first retry.
    pub base_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 400,
            base_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// Never retry: the first conflict is returned as [`Error::Concurrency`].
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The jittered delay before retry number `retry` (1-based): uniformly random between zero
    /// and `min(max_delay, base_delay * 2^(retry - 1))`.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let bound = exp.min(self.max_delay);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_stay_within_the_exponential_bound() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(8),
        };
        for retry in 1..=40 {
            let bound = Duration::from_millis(1 << (retry - 1).min(3));
            assert!(policy.delay(retry) <= bound, "retry {retry}");
        }
    }
}
