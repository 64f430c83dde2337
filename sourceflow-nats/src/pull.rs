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

/// How long the server keeps an unanswered pull request. An idle consumer re-pulls this often;
/// a request the server lost (a restart) is noticed 5 s after it.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The messages of one durable pull consumer.
pub(crate) struct Puller {
    name: String,
    consumer: PullConsumer,
    batch: usize,
    open: Option<consumer::pull::Batch>,
    failures: u32,
}

impl Puller {
    /// Pulls up to `batch` messages per request from `consumer` (named `name` in logs and errors).
    pub(crate) fn new(name: impl Into<String>, consumer: PullConsumer, batch: usize) -> Self {
        Self {
            name: name.into(),
            consumer,
            batch: batch.max(1),
            open: None,
            failures: 0,
        }
    }

    /// The next message, pulling as often as it takes. Transport faults are logged and retried
    /// with backoff.
    ///
    /// Cancel-safe while it waits on an open request: the request stays open for the next
    /// call. Cancelled while opening one, the request is dropped with its inbox, and a message
    /// the server had already sent to it is redelivered after the consumer's `ack_wait`.
    ///
    /// # Errors
    /// [`NatsError::Consume`] once the consumer or its stream no longer exists.
    pub(crate) async fn next(&mut self) -> Result<jetstream::Message, NatsError> {
        loop {
            let open = match &mut self.open {
                Some(open) => open,
                None => match self
                    .consumer
                    .batch()
                    .max_messages(self.batch)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                {
                    Ok(open) => self.open.insert(open),
                    Err(e) => {
                        self.failed(e.into()).await?;
                        continue;
                    }
                },
            };
            match open.next().await {
                Some(Ok(message)) => {
                    self.failures = 0;
                    return Ok(message);
                }
                Some(Err(e)) => {
                    self.open = None;
                    self.failed(e).await?;
                }
                // Completed or expired: open the next request.
                None => self.open = None,
            }
        }
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
