//! Personal data over NATS: events travel sealed (JetStream's copies hold no plaintext), a read
//! side that shares the subject keys reads them opened, and one that consumes the stream after
//! `forget` reads the forgotten subject redacted, the others untouched. Real NATS
//! (`SOURCEFLOW_NATS_URL`) and Postgres (`SOURCEFLOW_PG_URL`); ignored unless both were set when
//! the tests were built.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use sourceflow::personal::{KeyStore, Personal};
use sourceflow::prelude::*;
use sourceflow_nats::{NatsEventPublisher, NatsViewFeeder};

mod support;

use support::{env, Fixture};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "np.Member")]
struct Member {
    registered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "np.Join")]
struct Join {
    name: Personal<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "np.Joined")]
struct Joined {
    name: Personal<String>,
}

#[derive(Default)]
struct Members;

#[saga(entity = Member)]
impl Members {
    #[handles]
    fn join(&self, member: &mut Member, cmd: &Join, cx: &mut SagaContext) {
        member.registered = true;
        cx.publish(Joined {
            name: cmd.name.clone(),
        });
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "np.Badge")]
struct Badge {
    name: Option<Personal<String>>,
}

/// Registered explicitly by the read sides only.
struct Badges {
    _read_side_only: (),
}

#[view(model = Badge, name = "np.Badges")]
impl Badges {
    #[projects_on]
    fn joined(&self, badge: &mut Badge, e: &Joined) {
        badge.name = Some(e.name.clone());
    }
}

const ALICE: &str = "m-alice";
const BOB: &str = "m-bob";

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A read side with its own (memory) store and the write side's subject keys, fed from
/// JetStream by a feeder named `durable`; returns its flow and the feeder's task.
async fn read_side(
    fixture: &Fixture,
    keys: Arc<dyn KeyStore>,
    durable: &str,
) -> (SourceFlow, tokio::task::JoinHandle<()>) {
    let flow = SourceFlow::builder()
        .store(MemoryStore::new())
        .shared_key_store(keys)
        .without_discovery()
        .view(Badges {
            _read_side_only: (),
        })
        .build()
        .await
        .expect("read side");
    let feeder = NatsViewFeeder::new(
        fixture.client().await,
        flow.clone(),
        fixture.topology.clone(),
        durable,
    );
    let task = tokio::spawn(async move {
        let _ = feeder.run().await;
    });
    (flow, task)
}

async fn badge_name(flow: &SourceFlow, id: &str) -> Option<Option<String>> {
    let badge: Option<Badge> = flow.view_model(id).await.expect("read a badge");
    badge.map(|b| b.name.and_then(|n| n.get().cloned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn events_travel_sealed_and_a_later_consumer_reads_a_forgotten_subject_redacted() {
    let fixture = Fixture::new(env("events_travel_sealed"), 1).await;
    let keys: Arc<dyn KeyStore> = Arc::new(
        sourceflow_sqlx::PostgresStore::connect_with_schema(&fixture.env.pg, &fixture.schema)
            .await
            .expect("the write side's key table"),
    );
    let writer = SourceFlow::builder()
        .shared_store(fixture.store.clone())
        .build()
        .await
        .expect("write side");
    let publisher = NatsEventPublisher::new(
        fixture.client().await,
        writer.clone(),
        fixture.topology.clone(),
    );
    let publishing = tokio::spawn(async move {
        let _ = publisher.run().await;
    });
    let (before, feeding_before) = read_side(&fixture, keys.clone(), "badges-before").await;

    for (id, name) in [(ALICE, "Alice Lovelace"), (BOB, "Bob Babbage")] {
        let name = Personal::new(id, name.to_owned());
        writer
            .send(&EntityId::from(id), Join { name })
            .await
            .expect("join");
    }
    wait_for("the read side to see both members", async || {
        badge_name(&before, BOB).await.is_some() && badge_name(&before, ALICE).await.is_some()
    })
    .await;
    assert_eq!(
        badge_name(&before, ALICE).await,
        Some(Some("Alice Lovelace".to_owned())),
        "a read side with the keys reads the plaintext"
    );

    // What JetStream holds: ciphertext only.
    let jetstream = jetstream::new(fixture.client().await);
    let stream = jetstream
        .get_stream(fixture.topology.event_stream())
        .await
        .expect("the event stream");
    for sequence in 1..=2 {
        let message = stream.get_raw_message(sequence).await.expect("a message");
        let body = String::from_utf8_lossy(&message.payload).into_owned();
        assert!(body.contains("\"sealed\""), "{body}");
        for plaintext in ["Alice Lovelace", "Bob Babbage"] {
            assert!(
                !body.contains(plaintext),
                "JetStream holds {plaintext:?}: {body}"
            );
        }
    }

    writer.forget(ALICE).await.expect("forget");
    let (after, feeding_after) = read_side(&fixture, keys, "badges-after").await;
    wait_for("the later read side to see both members", async || {
        badge_name(&after, BOB).await.is_some() && badge_name(&after, ALICE).await.is_some()
    })
    .await;
    assert_eq!(
        badge_name(&after, ALICE).await,
        Some(None),
        "consumed after forget: redacted"
    );
    assert_eq!(
        badge_name(&after, BOB).await,
        Some(Some("Bob Babbage".to_owned()))
    );

    for task in [publishing, feeding_before, feeding_after] {
        task.abort();
    }
    fixture.finish().await;
}
