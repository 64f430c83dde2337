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
//!
//! It also does not wait for the server to say that a request expired. The server answers an
//! expired request with a `408` status, but a server that finds a request expired only when a
//! message arrives for it (nats-server 2.9 does so when the message comes a few milliseconds
//! after the expiry) drops the request without a word. The message then waits for the next
//! request, and async-nats's `Batch` ends a silent request only 5 s after its expiry: under
//! load, a command now and then waited 5 s for its reply, and a view as long for an event. A
//! [`Puller`] ends a request itself [`GRACE`] after its expiry (taking the messages already
//! received first), so such a message waits at most that long.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::warn;

use crate::error::NatsError;

/// How long the server keeps an unanswered pull request of a consumer nobody leases: an idle
/// consumer re-pulls this often, and a request the server lost (a restart) is noticed 5 s
/// after it.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The same for a leased consumer: short, so that a holder about to lose its lease has no
/// request left open by the time another process may take it (see [`crate::lease`]).
pub(crate) const LEASED_PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long after its expiry a request that the server has not ended is taken as ended: a
/// message the server sent before the expiry arrives within it unless a round trip to the
/// server takes longer (one that arrived after the inbox is gone comes back after the
/// consumer's `ack_wait`).
pub(crate) const GRACE: Duration = Duration::from_millis(500);

/// The messages of one durable pull consumer.
pub(crate) struct Puller {
    name: String,
    consumer: PullConsumer,
    batch: usize,
    expires: Duration,
    /// The open request, and when it is over at the latest (its expiry plus [`GRACE`]).
    open: Option<(consumer::pull::Batch, Instant)>,
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
        // Counted from before the request is sent: the server's expiry is later.
        let over_by = Instant::now() + self.expires + GRACE;
        match self
            .consumer
            .batch()
            .max_messages(max.max(1))
            .expires(self.expires)
            .messages()
            .await
        {
            Ok(open) => {
                self.open = Some((open, over_by));
                Ok(())
            }
            Err(e) => self.failed(e.into()).await,
        }
    }

    /// The open request's next message, or `None` once the server completed or expired it,
    /// or [`GRACE`] after its expiry without a word from the server (or after a transport
    /// fault, backed off). Never resolves while no request is open.
    ///
    /// Cancel-safe: cancelled, the request stays open for the next call.
    ///
    /// # Errors
    /// [`NatsError::Consume`] once the consumer or its stream no longer exists.
    pub(crate) async fn recv(&mut self) -> Result<Option<jetstream::Message>, NatsError> {
        let Some((open, over_by)) = &mut self.open else {
            return std::future::pending().await;
        };
        // A message already received is taken even past the deadline (the request is polled
        // before the timer).
        let Ok(next) = tokio::time::timeout_at(*over_by, open.next()).await else {
            self.open = None;
            return Ok(None);
        };
        match next {
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::{consumer::AckPolicy, stream};

    /// Requests that expire while messages come in around their expiry, over and over: each
    /// message is taken within a request's life of being published, never after the 5 s that
    /// a request the server dropped without a word would hold it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(sourceflow_nats),
        ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
    )]
    async fn messages_arriving_as_requests_expire_wait_no_longer_than_a_request() {
        const EXPIRES: Duration = Duration::from_millis(50);
        const MESSAGES: u32 = 100;
        let url = std::env::var("SOURCEFLOW_NATS_URL").expect("SOURCEFLOW_NATS_URL");
        let client = async_nats::connect(url).await.expect("NATS");
        let jetstream = jetstream::new(client);
        let name = format!("sf_pull_{}", uuid::Uuid::new_v4().simple());
        let subject = format!("{name}.m");
        let stream = jetstream
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                ..Default::default()
            })
            .await
            .expect("a stream");
        let consumer: PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("puller".to_owned()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("a consumer");
        let mut puller = Puller::new("puller", consumer, 1, EXPIRES);
        let mut slow = Vec::new();
        for n in 0..MESSAGES {
            puller.open(1).await.expect("a pull request");
            // Published from 1 ms before to 2 ms after the request expires, in steps of 30 us.
            let offset = Duration::from_micros(u64::from(n) * 30);
            tokio::time::sleep(EXPIRES - Duration::from_millis(1) + offset).await;
            let published = Instant::now();
            jetstream
                .publish(subject.clone(), n.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
            let message = puller.next().await.expect("a message");
            let waited = published.elapsed();
            message.ack().await.expect("ack");
            assert_eq!(message.payload.as_ref(), n.to_string().as_bytes());
            if waited > EXPIRES + GRACE + Duration::from_millis(1500) {
                slow.push(format!("message {n}: {waited:?}"));
            }
            // The rest of a request that delivered its message is not waited for.
            puller.close();
        }
        jetstream
            .delete_stream(&name)
            .await
            .expect("delete the stream");
        assert!(
            slow.is_empty(),
            "messages waited past their request's expiry: {slow:?}"
        );
    }
}
