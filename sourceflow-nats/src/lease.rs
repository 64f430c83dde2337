//! Leases: which process owns a command partition, a view feeder's consumer or the publisher.
//!
//! A lease is the one message of subject `<prefix>.lease.<key>` in the stream
//! `<prefix>_leases` (at most one message per subject, kept for the topology's lease TTL as
//! the stream's `max_age`). Taking a free lease publishes with
//! `Nats-Expected-Last-Subject-Sequence: 0`, renewing one publishes with the sequence of the
//! holder's last message, so of two processes racing for a key exactly one succeeds. A lease
//! its holder stops renewing disappears when its message ages out; releasing one deletes its
//! message. Only the NATS server's clock decides expiry.
//!
//! The holder counts its lease as held until `renewal sent + ttl - margin`, where the margin
//! covers a pull request it opened just before (see [`Lease::held`]): by the time any other
//! process can take the lease, no request of the previous holder is still open on the server.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::{ConsumerInfoErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures_util::TryStreamExt;
use tokio::time::Instant;

use crate::error::NatsError;
use crate::Topology;

/// The leases of one topology, taken in the name of one holder.
#[derive(Clone)]
pub(crate) struct Leases {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    config: stream::Config,
    prefix: String,
    ttl: Duration,
    margin: Duration,
    holder: String,
}

/// A lease this process holds (or held: see [`Lease::held`]).
pub(crate) struct Lease {
    key: String,
    sequence: Mutex<u64>,
    until: Mutex<Instant>,
}

impl Lease {
    /// Whether the lease is still certainly this process's: until `ttl - margin` after the
    /// last renewal was sent. Work that must not overlap with the next holder (pulling,
    /// extending acknowledgement deadlines) stops when this turns false.
    pub(crate) fn held(&self) -> bool {
        Instant::now() < *lock(&self.until)
    }

    /// Gives the lease up on this side at once (the message is left to age out).
    pub(crate) fn forfeit(&self) {
        *lock(&self.until) = Instant::now();
    }

    /// The leased key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Leases {
    /// Creates the lease stream if needed. `margin` is how long before the lease's expiry its
    /// holder stops counting on it.
    pub(crate) async fn open(
        mut jetstream: jetstream::Context,
        topology: &Topology,
        margin: Duration,
    ) -> Result<Self, NatsError> {
        crate::check_name(topology.prefix())?;
        // A request that hangs must not use up a holder's slack: give up on it in time for
        // the next renewal.
        jetstream.set_timeout((topology.lease_ttl / 4).max(Duration::from_millis(500)));
        let config = stream::Config {
            name: topology.lease_stream(),
            subjects: vec![format!("{}.lease.>", topology.prefix())],
            storage: stream::StorageType::Memory,
            max_messages_per_subject: 1,
            max_age: topology.lease_ttl,
            ..Default::default()
        };
        let stream = crate::get_or_create_stream(&jetstream, config.clone()).await?;
        // The stream may predate this process: its expiry is what counts.
        let ttl = match stream.cached_info().config.max_age {
            Duration::ZERO => topology.lease_ttl,
            existing => existing,
        };
        Ok(Self {
            jetstream,
            stream,
            config,
            prefix: topology.prefix().to_owned(),
            ttl,
            margin: margin.min(ttl / 2),
            holder: uuid::Uuid::now_v7().to_string(),
        })
    }

    /// Creates the stream again after the server lost it (leases live in memory, so a
    /// restarted server has none).
    async fn recreate(&self) -> Result<(), NatsError> {
        crate::get_or_create_stream(&self.jetstream, self.config.clone())
            .await
            .map(drop)
    }

    /// How often a holder renews: six times per lease TTL, so that a few slow or failed
    /// renewals in a row do not cost the lease.
    pub(crate) fn renew_every(&self) -> Duration {
        self.ttl / 6
    }

    /// This process's holder id (in each lease message's body).
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    fn subject(&self, key: &str) -> String {
        format!("{}.lease.{key}", self.prefix)
    }

    /// Publishes the lease message if the subject's last message is `expected` (0: none).
    /// `Ok(None)` when another holder's message is there.
    async fn put(&self, key: &str, expected: u64) -> Result<Option<(u64, Instant)>, NatsError> {
        match self.try_put(key, expected).await {
            Err(NatsError::Publish { source, .. })
                if source
                    .downcast_ref::<async_nats::jetstream::context::PublishError>()
                    .is_some_and(|e| e.kind() == PublishErrorKind::StreamNotFound) =>
            {
                self.recreate().await?;
                self.try_put(key, expected).await
            }
            other => other,
        }
    }

    async fn try_put(&self, key: &str, expected: u64) -> Result<Option<(u64, Instant)>, NatsError> {
        let subject = self.subject(key);
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string());
        let sent = Instant::now();
        let published = async {
            self.jetstream
                .publish_with_headers(subject.clone(), headers, self.holder.clone().into())
                .await?
                .await
        };
        match published.await {
            Ok(ack) => Ok(Some((ack.sequence, sent + self.ttl - self.margin))),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(NatsError::Publish {
                subject,
                source: e.into(),
            }),
        }
    }

    /// Takes `key` if no one holds it.
    pub(crate) async fn acquire(&self, key: &str) -> Result<Option<Lease>, NatsError> {
        Ok(self.put(key, 0).await?.map(|(sequence, until)| Lease {
            key: key.to_owned(),
            sequence: Mutex::new(sequence),
            until: Mutex::new(until),
        }))
    }

    /// Extends `lease`. `Ok(false)` if it was lost (it aged out, and possibly went to another
    /// holder); it then no longer counts as held.
    pub(crate) async fn renew(&self, lease: &Lease) -> Result<bool, NatsError> {
        let expected = *lock(&lease.sequence);
        if let Some((sequence, until)) = self.put(&lease.key, expected).await? {
            *lock(&lease.sequence) = sequence;
            *lock(&lease.until) = until;
            return Ok(true);
        }
        // An earlier renewal may have been stored after its acknowledgement was lost (a
        // timeout): the lease is then still this holder's, under a sequence it never heard of.
        if let Some(sequence) = self.last_of_ours(&lease.key).await? {
            if let Some((sequence, until)) = self.put(&lease.key, sequence).await? {
                *lock(&lease.sequence) = sequence;
                *lock(&lease.until) = until;
                return Ok(true);
            }
        }
        lease.forfeit();
        Ok(false)
    }

    /// Extends `lease`, or takes it again if it was lost and no one else took it: for leases
    /// that only tell that this process is alive (no one else ever takes them).
    pub(crate) async fn keep(&self, lease: &Lease) -> Result<(), NatsError> {
        if self.renew(lease).await? {
            return Ok(());
        }
        if let Some((sequence, until)) = self.put(&lease.key, 0).await? {
            *lock(&lease.sequence) = sequence;
            *lock(&lease.until) = until;
        }
        Ok(())
    }

    /// The sequence of `key`'s message if this holder wrote it.
    async fn last_of_ours(&self, key: &str) -> Result<Option<u64>, NatsError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(key))
            .await
        {
            Ok(message) => Ok(
                (message.payload.as_ref() == self.holder.as_bytes()).then_some(message.sequence)
            ),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(NatsError::Setup(e.into())),
        }
    }

    /// Gives `lease` back at once, for another process to take.
    pub(crate) async fn release(&self, lease: &Lease) {
        lease.forfeit();
        let sequence = *lock(&lease.sequence);
        // Deleting by sequence cannot remove a later holder's message. If it fails, the lease
        // ages out instead.
        if let Err(e) = self.stream.delete_message(sequence).await {
            tracing::debug!(key = %lease.key, error = %e, "cannot release a lease; it will age out");
        }
    }

    /// The keys under `prefix` (`"part."` for `part.0`, `part.1`, ...) someone holds now.
    pub(crate) async fn held_keys(&self, prefix: &str) -> Result<HashSet<String>, NatsError> {
        match self.try_held_keys(prefix).await {
            Ok(keys) => Ok(keys),
            Err(_) => {
                self.recreate().await?;
                self.try_held_keys(prefix).await
            }
        }
    }

    async fn try_held_keys(&self, prefix: &str) -> Result<HashSet<String>, NatsError> {
        let filter = format!("{}.lease.{prefix}>", self.prefix);
        let strip = format!("{}.lease.", self.prefix);
        let subjects = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| NatsError::Setup(e.into()))?;
        subjects
            .map_ok(|(subject, _)| subject.strip_prefix(&strip).unwrap_or(&subject).to_owned())
            .try_collect()
            .await
            .map_err(|e| NatsError::Setup(e.into()))
    }
}

/// Waits, after taking the lease of a consumer, until no message of it is in flight with a
/// previous holder: each one is acknowledged, or has waited out the consumer's `ack_wait`
/// (JetStream then redelivers it before any newer one). Returns that `ack_wait` and whether
/// the previous holder left messages behind, or `None` if the lease is lost or `give_up`
/// turns true meanwhile.
///
/// JetStream redelivers expired messages in the order they expired, which need not be their
/// stream order (a holder extends deadlines while others sit in its buffers); a holder that
/// inherits messages therefore takes everything its first pull request brings, and puts it in
/// order, before it handles any.
///
/// # Errors
/// [`NatsError::Consume`] if the consumer no longer exists.
pub(crate) async fn await_handoff(
    consumer: &PullConsumer,
    lease: &Lease,
    give_up: impl Fn() -> bool,
) -> Result<Option<(Duration, bool)>, NatsError> {
    let mut deadline = None;
    loop {
        if !lease.held() || give_up() {
            return Ok(None);
        }
        match consumer.get_info().await {
            Ok(info) => {
                let ack_wait = info.config.ack_wait;
                let deadline = *deadline
                    .get_or_insert_with(|| Instant::now() + ack_wait + Duration::from_secs(1));
                if info.num_ack_pending == 0 {
                    return Ok(Some((ack_wait, false)));
                }
                if Instant::now() >= deadline {
                    return Ok(Some((ack_wait, true)));
                }
                tracing::debug!(
                    pending = info.num_ack_pending,
                    lease = %lease.key,
                    "waiting for a previous holder's messages"
                );
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                return Err(NatsError::Consume {
                    consumer: consumer.cached_info().name.clone(),
                    source: e.into(),
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read a leased consumer"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Holds the lease `key` whenever no one else does, running `work` while it is held: the
/// loop of a role one process plays at a time (the publisher, a view feeder). `work` returns
/// when the lease is no longer held (the process then stands by again), or is dropped when a
/// renewal finds it lost. If `work` returns while the lease is still held, its role is over:
/// the lease is released and `hold` returns.
///
/// # Errors
/// The first error of `work`.
pub(crate) async fn hold<F, Fut>(leases: &Leases, key: &str, mut work: F) -> Result<(), NatsError>
where
    F: FnMut(std::sync::Arc<Lease>) -> Fut,
    Fut: std::future::Future<Output = Result<(), NatsError>>,
{
    loop {
        let lease = match leases.acquire(key).await {
            Ok(Some(lease)) => std::sync::Arc::new(lease),
            Ok(None) => {
                tokio::time::sleep(leases.renew_every()).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(lease = key, error = %e, "cannot take a lease; retrying");
                tokio::time::sleep(leases.renew_every()).await;
                continue;
            }
        };
        let renewing = async {
            loop {
                tokio::time::sleep(leases.renew_every()).await;
                match leases.renew(&lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(lease = key, error = %e, "cannot renew a lease"),
                }
            }
        };
        tokio::select! {
            worked = work(lease.clone()) => {
                worked?;
                if lease.held() {
                    leases.release(&lease).await;
                    return Ok(());
                }
            }
            () = renewing => {}
        }
        tracing::warn!(lease = key, "lease lost; standing by");
    }
}
