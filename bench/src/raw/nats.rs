//! W9's floor: the same commands over the same JetStream and Postgres through the least code
//! that does the work, to tell what the machine gives 1, 2 and 4 consumers apart from what the
//! framework costs.
//!
//! A sender publishes its deposit to a partition's subject of one in-memory stream (awaiting
//! JetStream's acknowledgement, as the dispatcher does) and waits for the reply on a core
//! subject of its own. Each consumer has a NATS connection and a pool of its own (as a
//! separate process would), a durable pull consumer for each partition it owns (partition `p`
//! goes to consumer `p % consumers`), and for each message writes the command's rows in one
//! statement ([`UnitOfWork`]: command, entity state, event and view model, no global order, no
//! grouping), replies and acknowledges. Nothing checks a stream's head or orders events, and a
//! lost message would be lost: it is a floor, not a transport.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use futures_util::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::postgres::UnitOfWork;

/// The header that carries a command's reply subject.
const REPLY_TO: &str = "Raw-Reply-To";

/// The consumers of one floor deployment, running until dropped.
pub struct RawDeployment {
    client: Client,
    jetstream: jetstream::Context,
    subject_prefix: String,
    partitions: u32,
    tasks: Vec<JoinHandle<()>>,
}

impl RawDeployment {
    /// Creates the stream `stream_name` (in memory, subjects `<subject_prefix>.<partition>`)
    /// and starts `consumers` consumers, each with a pool of `pool_size` connections made with
    /// `pg` (whose `search_path` holds [`create_tables`](super::postgres::create_tables)'s
    /// tables).
    ///
    /// # Errors
    /// If a server refuses the stream, a consumer or a connection.
    pub async fn start(
        nats: &str,
        pg: &PgConnectOptions,
        stream_name: &str,
        partitions: u32,
        consumers: usize,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        let client = async_nats::connect(nats).await?;
        let jetstream = jetstream::new(client.clone());
        let subject_prefix = format!("{stream_name}.raw");
        let stream = jetstream
            .create_stream(stream::Config {
                name: stream_name.to_owned(),
                subjects: vec![format!("{subject_prefix}.*")],
                storage: stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .context("cannot create the floor's stream")?;
        let mut tasks = Vec::new();
        for c in 0..consumers {
            let nats_client = async_nats::connect(nats).await?;
            let pool = PgPoolOptions::new()
                .max_connections(pool_size)
                .connect_with(pg.clone())
                .await?;
            let unit = Arc::new(UnitOfWork::new(pool));
            for partition in (0..partitions).filter(|p| *p as usize % consumers == c) {
                let consumer = stream
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(format!("raw{partition}")),
                        filter_subject: format!("{subject_prefix}.{partition}"),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(30),
                        max_ack_pending: 1_024,
                        ..Default::default()
                    })
                    .await
                    .context("cannot create a floor consumer")?;
                let (client, unit) = (nats_client.clone(), unit.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = consume(consumer, client, unit).await {
                        crate::workloads::progress(format!("W9 floor: a consumer stopped: {e}"));
                    }
                }));
            }
        }
        Ok(Self {
            client,
            jetstream,
            subject_prefix,
            partitions,
            tasks,
        })
    }

    /// A sender of this deployment, replying on a subject of its own.
    ///
    /// # Errors
    /// If the server refuses the subscription.
    pub async fn sender(&self) -> anyhow::Result<RawSender> {
        let inbox = self.client.new_inbox();
        let replies = self.client.subscribe(inbox.clone()).await?;
        Ok(RawSender {
            jetstream: self.jetstream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            partitions: self.partitions,
            inbox,
            replies: Mutex::new(replies),
        })
    }
}

impl Drop for RawDeployment {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One sender: a deposit at a time, each answered before the next.
pub struct RawSender {
    jetstream: jetstream::Context,
    subject_prefix: String,
    partitions: u32,
    inbox: String,
    replies: Mutex<async_nats::Subscriber>,
}

impl RawSender {
    /// Sends the `n`-th deposit to `account` and waits for its reply.
    ///
    /// # Errors
    /// If JetStream refuses the publish, or no reply comes within 30 s.
    pub async fn deposit(&self, account: u64, n: u64) -> anyhow::Result<()> {
        let mut replies = self.replies.lock().await;
        let mut headers = HeaderMap::new();
        headers.insert(REPLY_TO, self.inbox.as_str());
        let subject = format!(
            "{}.{}",
            self.subject_prefix,
            account % u64::from(self.partitions)
        );
        self.jetstream
            .publish_with_headers(subject, headers, format!("{account} {n}").into())
            .await?
            .await?;
        tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .context("no reply within 30 s")?
            .context("the reply subscription ended")?;
        Ok(())
    }
}

/// Handles a partition's messages, each in a task of its own: writes the unit, replies, acks.
async fn consume(
    consumer: consumer::Consumer<consumer::pull::Config>,
    client: Client,
    unit: Arc<UnitOfWork>,
) -> anyhow::Result<()> {
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let (client, unit) = (client.clone(), unit.clone());
        tokio::spawn(async move {
            let handled = async {
                let text = std::str::from_utf8(&message.payload)?;
                let (account, n) = text.split_once(' ').context("a floor payload")?;
                unit.commit(account.parse()?, n.parse()?).await?;
                let reply = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(REPLY_TO))
                    .context("no reply subject")?
                    .to_string();
                client.publish(reply, "ok".into()).await?;
                message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::Ok(())
            };
            if let Err(e) = handled.await {
                crate::workloads::progress(format!("W9 floor: a message failed: {e}"));
            }
        });
    }
    Ok(())
}
