//! Pulling from a durable JetStream consumer, one pull request at a time.
//!
//! `PullConsumer::stream()` (async-nats) pipelines pull requests: a background task sends them
//! and reports each one sent, and the stream counts the messages its requests still owe, pulling
//! again only when that count falls to half a batch. When the server answers a request before
//! the stream has read the report (a one-message request is answered within a fraction of a
//! millisecond, so a preempted thread is enough), the message's decrement hits zero and is
//! lost, and the late report leaves the stream believing a message is still owed. With a batch
//! of one it then sends no request until its fallback timer (the request's expiry plus 5 s,
//! 35 s by default) fires, and a consumer with `max_ack_pending = 1` stands still meanwhile.
//!
//! A [`Puller`] keeps no count across requests: it opens one request (a
//! [`Batch`](consumer::pull::Batch) on an inbox of its own), takes its messages until the
//! server completes or expires it, and only then opens the next.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use futures_util::StreamExt;
use tracing::warn;

use crate::error::NatsError;

/// How long the server keeps an unanswered pull request of a consumer nobody leases: an idle
/// consumer re-pulls this often, and a request the server lost (a restart) is noticed 5 s
/// after it.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The same for a leased consumer: short, so that a holder about to lose its lease has no
/// request left open by the time another process may take it (see [`crate::lease`]).
pub(crate) const LEASED_PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The messages of one durable pull consumer.
pub(crate) struct Puller {
    name: String,
    consumer: PullConsumer,
    batch: usize,
    expires: Duration,
    open: Option<consumer::pull::Batch>,
    failures: u32,
}

impl Puller {
    /// Pulls up to `batch` messages per request from `consumer` (named `name` in logs and
    /// errors), each request kept open by the server for `expires`.
    pub(crate) fn new(
        name: impl Into<String>,
        consumer: PullConsumer,
        batch: usize,
        expires: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            consumer,
            batch: batch.max(1),
            expires,
            open: None,
            failures: 0,
        }
    }

    /// The next message, pulling as often as it takes. Transport faults are logged and retried
    /// with backoff.
    ///
    /// # Errors
    /// [`NatsError::Consume`] once the consumer or its stream no longer exists.
    pub(crate) async fn next(&mut self) -> Result<jetstream::Message, NatsError> {
        loop {
            if !self.is_open() {
                self.open(self.batch).await?;
            }
            if let Some(message) = self.recv().await? {
                return Ok(message);
            }
        }
    }

    /// Whether a pull request is open.
    pub(crate) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Opens a pull request for up to `max` messages, unless one is open. After a transport
    /// fault it backs off and returns with none open.
    ///
    /// Not cancel-safe: dropped halfway, the request may be dropped with its inbox after the
    /// server sent it a message, which then comes back only after the consumer's `ack_wait`.
    ///
    /// # Errors
    /// [`NatsError::Consume`] once the consumer or its stream no longer exists.
    pub(crate) async fn open(&mut self, max: usize) -> Result<(), NatsError> {
        if self.open.is_some() {
            return Ok(());
        }
        match self
            .consumer
            .batch()
            .max_messages(max.max(1))
            .expires(self.expires)
            .messages()
            .await
        {
            Ok(open) => {
                self.open = Some(open);
                Ok(())
            }
            Err(e) => self.failed(e.into()).await,
        }
    }

    /// The open request's next message, or `None` once the server completed or expired it
    /// (or after a transport fault, backed off). Never resolves while no request is open.
    ///
    /// Cancel-safe: cancelled, the request stays open for the next call.
    ///
    /// # Errors
    /// [`NatsError::Consume`] once the consumer or its stream no longer exists.
    pub(crate) async fn recv(&mut self) -> Result<Option<jetstream::Message>, NatsError> {
        let Some(open) = &mut self.open else {
            return std::future::pending().await;
        };
        match open.next().await {
            Some(Ok(message)) => {
                self.failures = 0;
                Ok(Some(message))
            }
            Some(Err(e)) => {
                self.open = None;
                self.failed(e).await?;
                Ok(None)
            }
            None => {
                self.open = None;
                Ok(None)
            }
        }
    }

    /// Drops the open request (see [`open`](Self::open) for what that costs).
    pub(crate) fn close(&mut self) {
        self.open = None;
    }

    /// Backs off after a failed pull, or ends the pulling if the consumer is gone.
    async fn failed(&mut self, error: async_nats::Error) -> Result<(), NatsError> {
        if let Err(e) = self.consumer.get_info().await {
            if matches!(
                e.kind(),
                ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
            ) {
                return Err(NatsError::Consume {
                    consumer: self.name.clone(),
                    source: e.into(),
                });
            }
        }
        self.failures = self.failures.saturating_add(1);
        let delay = Duration::from_millis(50u64 << self.failures.min(5));
        warn!(consumer = %self.name, error = %error, retry_in_ms = delay.as_millis(), "pull failed");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}
