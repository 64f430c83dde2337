//! Rolling upgrades over NATS: messages written by version 1 of a domain still in the streams
//! when version 2 starts are read as version 2, and an event this build cannot decode stops
//! its consumer instead of being skipped. Real NATS (`SOURCEFLOW_NATS_URL`) and Postgres
//! (`SOURCEFLOW_PG_URL`); ignored unless both were set when the tests were built.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;
use sourceflow::store::{ModelWrite, Store};
use sourceflow::RecordedEvent;
use sourceflow_nats::{
    EventHandler, NatsCommandDispatcher, NatsCommandWorker, NatsEventSubscriber, NatsViewFeeder,
};

// ---- version 2 of the domain: `amount` became `cents`, the event was renamed and gained a
// currency.

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "nv.Wallet")]
struct Wallet {
    cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "nv.Fund", version = 2)]
struct Fund {
    cents: i64,
}

#[upcast(Fund, from = 1)]
fn fund_v1(payload: &mut serde_json::Value) -> Result<(), String> {
    let amount = payload
        .as_object_mut()
        .and_then(|o| o.remove("amount"))
        .ok_or("version 1 has `amount`")?;
    payload["cents"] = amount;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "nv.WalletFunded", version = 2, aliases = ["nv.Funded"])]
struct WalletFunded {
    cents: i64,
    currency: String,
}

#[upcast(WalletFunded, from = 1)]
fn funded_v1(payload: &mut serde_json::Value) -> Result<(), String> {
    let amount = payload
        .as_object_mut()
        .and_then(|o| o.remove("amount"))
        .ok_or("version 1 has `amount`")?;
    payload["cents"] = amount;
    payload["currency"] = "EUR".into();
    Ok(())
}

#[derive(Default)]
struct Wallets;

#[saga(entity = Wallet)]
impl Wallets {
    #[handles]
    fn fund(&self, wallet: &mut Wallet, cmd: &Fund, cx: &mut SagaContext) {
        wallet.cents += cmd.cents;
        cx.publish(WalletFunded {
            cents: cmd.cents,
            currency: "EUR".into(),
        });
    }
}

/// What a read side knows of a wallet: the amounts funded, as version 2 reads them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "nv.Funding")]
struct Funding {
    cents: Vec<i64>,
    currencies: Vec<String>,
}

/// Registered explicitly by the read side only (no `Default`: not discovered by workers).
struct FundingView {
    _read_side_only: (),
}

#[view(model = Funding, name = "nv.FundingView")]
impl FundingView {
    #[projects_on]
    fn funded(&self, funding: &mut Funding, e: &WalletFunded) {
        funding.cents.push(e.cents);
        funding.currencies.push(e.currency.clone());
    }
}

// ---- environment: `support` (the servers, a fresh schema and topology per test)

mod support;

use support::{env, Fixture};

/// Publishes a message to the JetStream stream that holds `subject`, as an earlier build did.
async fn publish(fixture: &Fixture, subject: String, headers: Vec<(&str, String)>, body: &[u8]) {
    let mut map = async_nats::HeaderMap::new();
    for (key, value) in headers {
        map.insert(key, value.as_str());
    }
    jetstream::new(fixture.client().await)
        .publish_with_headers(subject, map, body.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// The headers of a message as a build of `version` wrote it.
fn envelope(name: &str, version: u32, stream_id: &str) -> Vec<(&'static str, String)> {
    let id = uuid::Uuid::now_v7().to_string();
    vec![
        ("Sf-Name", name.to_owned()),
        ("Sf-Version", version.to_string()),
        ("Sf-Message-Id", id.clone()),
        ("Sf-Correlation-Id", id),
        ("Sf-Stream-Type", "nv.Wallet".to_owned()),
        ("Sf-Stream-Id", stream_id.to_owned()),
        ("Sf-Timestamp", chrono::Utc::now().to_rfc3339()),
    ]
}

fn event_headers(
    name: &str,
    version: u32,
    position: u64,
    stream_id: &str,
) -> Vec<(&'static str, String)> {
    let mut headers = envelope(name, version, stream_id);
    headers.push(("Nats-Msg-Id", uuid::Uuid::now_v7().to_string()));
    headers.push(("Sf-Sequence", position.to_string()));
    headers.push(("Sf-Command-Sequence", position.to_string()));
    headers.push(("Sf-Position", position.to_string()));
    headers
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_v1_command_published_before_a_v2_worker_starts_is_handled_by_it() {
    let fixture = Fixture::new(env("a_v1_command_published_before_a_v2_worker_starts"), 1).await;
    // The command stream exists (a sender created it); a version 1 sender left a command in
    // it, and no worker ran yet.
    NatsCommandDispatcher::builder(fixture.client().await, fixture.topology.clone())
        .route::<Fund>()
        .build()
        .await
        .expect("command stream");
    let subject = format!("{}.cmd.0", fixture.topology.prefix());
    publish(
        &fixture,
        subject,
        envelope("nv.Fund", 1, "w1"),
        br#"{"amount":42}"#,
    )
    .await;

    let flow = SourceFlow::builder()
        .shared_store(fixture.store.clone())
        .build()
        .await
        .expect("version 2 worker flow");
    let worker = NatsCommandWorker::new(
        fixture.client().await,
        flow.clone(),
        fixture.topology.clone(),
    );
    let running = worker.clone();
    let task = tokio::spawn(async move { running.run().await });
    wait_for("the worker to handle the version 1 command", async || {
        worker.handled() == 1
    })
    .await;
    assert_eq!(worker.poisoned(), 0);
    assert_eq!(
        flow.replay::<Wallet>("w1").await.expect("replay"),
        Wallet { cents: 42 },
        "upcast for the handler and again on replay"
    );
    // The log keeps the command as it was sent.
    let stored = fixture
        .store
        .load_commands(&StreamId::new("nv.Wallet", "w1"), Sequence(1), None)
        .await
        .expect("commands");
    assert_eq!(
        (stored[0].envelope.version, &stored[0].payload[..]),
        (1, &br#"{"amount":42}"#[..])
    );
    task.abort();
    fixture.finish().await;
}

/// Records the events it applies as version 2 values; refuses what it cannot decode, unless it
/// stands for a newer build that knows version 3.
struct Funded {
    seen: Arc<Mutex<Vec<WalletFunded>>>,
    knows_version_3: bool,
}

#[async_trait::async_trait]
impl EventHandler for Funded {
    async fn apply(&self, event: &RecordedEvent) -> Result<Vec<ModelWrite>, Error> {
        let funded = if self.knows_version_3 && event.envelope.version == 3 {
            serde_json::from_slice::<WalletFunded>(&event.payload).expect("a version 3 payload")
        } else {
            event.decode::<WalletFunded>()?
        };
        self.seen.lock().unwrap().push(funded);
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn v1_events_reach_a_v2_consumer_as_v2_and_a_newer_one_stops_it_until_a_newer_build_runs() {
    let fixture = Fixture::new(env("v1_events_reach_a_v2_consumer_as_v2"), 1).await;
    let (first_seen, newer_seen) = (Arc::default(), Arc::default());
    let subscriber = Arc::new(NatsEventSubscriber::new(
        fixture.client().await,
        fixture.store.clone(),
        fixture.topology.clone(),
        "audit",
        Funded {
            seen: Arc::clone(&first_seen),
            knows_version_3: false,
        },
    ));
    let running = subscriber.clone();
    let task = tokio::spawn(async move { running.run().await });
    let subject = fixture.topology.event_subject("nv.Wallet");
    // A version 1 event under its old name, a version 3 event (newer than this build), and a
    // version 2 event behind it.
    tokio::time::sleep(Duration::from_millis(300)).await; // the subscriber creates the stream
    publish(
        &fixture,
        subject.clone(),
        event_headers("nv.Funded", 1, 1, "w1"),
        br#"{"amount":5}"#,
    )
    .await;
    publish(
        &fixture,
        subject.clone(),
        event_headers("nv.WalletFunded", 3, 2, "w1"),
        br#"{"cents":6,"currency":"CHF","memo":"v3"}"#,
    )
    .await;
    publish(
        &fixture,
        subject.clone(),
        event_headers("nv.WalletFunded", 2, 3, "w1"),
        br#"{"cents":7,"currency":"EUR"}"#,
    )
    .await;

    wait_for(
        "the subscriber to stop at the version 3 event",
        async || subscriber.stopped_at().is_some(),
    )
    .await;
    let stopped = subscriber.stopped_at().expect("stopped");
    assert!(
        stopped.contains("nv.WalletFunded version 3 at position 2") && stopped.contains("newer"),
        "{stopped}"
    );
    // It stays there: the event behind it is not applied, nothing is terminated.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(subscriber.applied(), 1);
    assert_eq!(subscriber.poisoned(), 0);
    assert_eq!(
        fixture
            .store
            .get_position("nats:audit")
            .await
            .expect("position"),
        Position(1)
    );
    task.abort();
    let _ = task.await;

    // A build that knows version 3 takes over the same durable consumer and resumes.
    let newer = Arc::new(NatsEventSubscriber::new(
        fixture.client().await,
        fixture.store.clone(),
        fixture.topology.clone(),
        "audit",
        Funded {
            seen: Arc::clone(&newer_seen),
            knows_version_3: true,
        },
    ));
    let running = newer.clone();
    let task = tokio::spawn(async move { running.run().await });
    wait_for("the newer build to apply the rest", async || {
        newer.applied() == 2
    })
    .await;
    assert_eq!(newer.stopped_at(), None);
    assert_eq!(
        fixture
            .store
            .get_position("nats:audit")
            .await
            .expect("position"),
        Position(3)
    );
    task.abort();

    let first: Vec<WalletFunded> = first_seen.lock().unwrap().clone();
    assert_eq!(
        first,
        [WalletFunded {
            cents: 5,
            currency: "EUR".into()
        }],
        "the version 1 event arrived as version 2"
    );
    let rest: Vec<i64> = newer_seen.lock().unwrap().iter().map(|e| e.cents).collect();
    assert_eq!(rest, [6, 7]);
    fixture.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
async fn a_view_feeder_reads_v1_events_as_v2_and_stands_still_at_one_it_cannot_decode() {
    let fixture = Fixture::new(env("a_view_feeder_reads_v1_events_as_v2"), 1).await;
    let read_store: Arc<dyn Store> = Arc::new(sourceflow::MemoryStore::new());
    let read_side = SourceFlow::builder()
        .shared_store(read_store.clone())
        .without_discovery()
        .view(FundingView {
            _read_side_only: (),
        })
        .build()
        .await
        .expect("read side");
    let feeder = NatsViewFeeder::new(
        fixture.client().await,
        read_side.clone(),
        fixture.topology.clone(),
        "funding",
    );
    let running = feeder.clone();
    let task = tokio::spawn(async move { running.run().await });
    tokio::time::sleep(Duration::from_millis(300)).await; // the feeder creates the stream
    let subject = fixture.topology.event_subject("nv.Wallet");
    for (name, version, position, body) in [
        ("nv.Funded", 1, 1, &br#"{"amount":5}"#[..]),
        ("nv.WalletFunded", 2, 2, br#"{"cents":6,"currency":"EUR"}"#),
        (
            "nv.WalletFunded",
            3,
            3,
            br#"{"cents":7,"currency":"CHF","memo":"v3"}"#,
        ),
        ("nv.WalletFunded", 2, 4, br#"{"cents":8,"currency":"EUR"}"#),
    ] {
        publish(
            &fixture,
            subject.clone(),
            event_headers(name, version, position, "w1"),
            body,
        )
        .await;
    }
    wait_for("the feeder to stop at the version 3 event", async || {
        feeder.stopped_at().is_some()
    })
    .await;
    let stopped = feeder.stopped_at().expect("stopped");
    assert!(stopped.contains("version 3 at position 3"), "{stopped}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let funding: Funding = read_side
        .view_model("w1")
        .await
        .expect("read")
        .expect("the events before it were applied");
    assert_eq!(
        funding.cents,
        [5, 6],
        "the version 1 event read as version 2, nothing after 3"
    );
    assert_eq!(funding.currencies, ["EUR", "EUR"]);
    assert_eq!(feeder.poisoned(), 0, "nothing terminated");
    assert_eq!(
        read_store
            .get_position("nv.FundingView")
            .await
            .expect("position"),
        Position(2)
    );
    task.abort();
    fixture.finish().await;
}
