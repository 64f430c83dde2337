//! The transport's error type, and how it surfaces through the runtime's [`sourceflow::Error`].

use sourceflow::store::StoreError;

/// What can go wrong on the NATS side of the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A JetStream stream or consumer could not be created or looked up.
    #[error("jetstream setup failed: {0}")]
    Setup(#[source] async_nats::Error),
    /// A message could not be published, or JetStream did not acknowledge it.
    #[error("publish to {subject} failed: {source}")]
    Publish {
        /// The subject published to.
        subject: String,
        /// What the client said.
        #[source]
        source: async_nats::Error,
    },
    /// Pulling messages from a consumer failed.
    #[error("consuming {consumer} failed: {source}")]
    Consume {
        /// The consumer's name.
        consumer: String,
        /// What the client said.
        #[source]
        source: async_nats::Error,
    },
    /// No reply came within the dispatcher's timeout. The command is queued durably and will
    /// still run; resend it with the same message id to learn its receipt.
    #[error("no reply for command {message_id} within {timeout_ms} ms")]
    Timeout {
        /// The command's message id.
        message_id: uuid::Uuid,
        /// The timeout that elapsed.
        timeout_ms: u128,
    },
    /// A message on the wire is not what this transport writes.
    #[error("malformed message: {0}")]
    Wire(String),
    /// The store failed (reading or writing a position).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed (the event log subscription).
    #[error(transparent)]
    Runtime(#[from] sourceflow::Error),
    /// A name given to the builder cannot be used in a stream or subject name.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<NatsError> for sourceflow::Error {
    /// Transport faults reach `send` callers as transient store faults: the runtime has no
    /// transport variant, and like a dropped database connection they may pass when retried.
    fn from(value: NatsError) -> Self {
        match value {
            NatsError::Runtime(e) => e,
            NatsError::Store(e) => sourceflow::Error::Store(e),
            other => sourceflow::Error::Store(StoreError::Transient(Box::new(other))),
        }
    }
}
