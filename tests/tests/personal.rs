//! Personal data: `Personal<T>` fields are sealed at rest with a key per subject, and
//! `forget` makes them unreadable everywhere while everything else keeps working. On memory, a
//! SQLite file and Postgres:
//! - the database (every table's bytes: the SQLite file and its WAL, every row of the Postgres
//!   schema) never holds the plaintext of a personal field, before or after `forget`;
//! - before `forget` every read path gives the plaintext; after it, entity loads, replay,
//!   `state_at`, `verify`, views (stored, caught up, rebuilt), `subscribe` and a new process
//!   on the same store give redacted values, never an error; another subject is untouched;
//! - a field written after `forget` is stored redacted;
//! - `forget` racing concurrent sends for the same subject loses no command of any subject;
//! - a subject's first key commits in the unit of work that first uses it, or not at all, and
//!   first uses racing in two processes agree on one key (every field reads back);
//! - a resent unit answered as a duplicate gets the original events opened, whether or not it
//!   carries personal fields itself.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sourceflow::personal::Personal;
use sourceflow::prelude::*;
use sourceflow::store::{Page, Store, StoreAdmin};
use sourceflow::{At, Verification};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    name: String,
    email: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "crm.Customer")]
struct Customer {
    contact: Option<Personal<Contact>>,
    addresses: Vec<Personal<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "crm.Register")]
struct Register {
    contact: Personal<Contact>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "crm.Ship")]
struct Ship {
    order: u32,
    address: Personal<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "crm.Registered")]
struct Registered {
    contact: Personal<Contact>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "crm.Shipped")]
struct Shipped {
    order: u32,
    address: Personal<String>,
}

#[derive(Default)]
struct Customers;

#[saga(entity = Customer)]
impl Customers {
    #[handles]
    fn register(&self, customer: &mut Customer, cmd: &Register, cx: &mut SagaContext) {
        customer.contact = Some(cmd.contact.clone());
        cx.publish(Registered {
            contact: cmd.contact.clone(),
        });
    }

    #[handles]
    fn ship(&self, customer: &mut Customer, cmd: &Ship, cx: &mut SagaContext) {
        customer.addresses.push(cmd.address.clone());
        cx.publish(Shipped {
            order: cmd.order,
            address: cmd.address.clone(),
        });
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "crm.Card")]
struct Card {
    name: Option<Personal<String>>,
    last_address: Option<Personal<String>>,
    shipments: u32,
}

#[derive(Default)]
struct Cards;

#[view(model = Card, name = "crm.Cards")]
impl Cards {
    #[projects_on]
    async fn registered(&self, card: &mut Card, e: &Registered) {
        card.name = Some(e.contact.clone().map(|c| c.name));
    }

    #[projects_on]
    async fn shipped(&self, card: &mut Card, e: &Shipped) {
        card.last_address = Some(e.address.clone());
        card.shipments += 1;
    }
}

const ALICE: &str = "cust-alice";
const BOB: &str = "cust-bob";

fn alice_contact() -> Personal<Contact> {
    Personal::new(
        ALICE,
        Contact {
            name: "Alice Lovelace".into(),
            email: "alice.lovelace@example.org".into(),
        },
    )
}

fn bob_contact() -> Personal<Contact> {
    Personal::new(
        BOB,
        Contact {
            name: "Bob Babbage".into(),
            email: "bob.babbage@example.org".into(),
        },
    )
}

/// Alice's plaintext, none of which may ever be in the database.
const ALICE_SECRETS: &[&str] = &[
    "Alice Lovelace",
    "alice.lovelace@example.org",
    "12 Analytical Engine Way",
    "99 Difference Road",
];

/// A store and a way to read every byte it keeps.
struct Subject {
    store: Arc<dyn Store>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

enum Raw {
    /// No files: the store's own reads of everything, as stored.
    Memory,
    /// The database file and its write-ahead log.
    Sqlite(PathBuf),
    /// Every row of every table of the schema, as text.
    Postgres { url: String, schema: String },
}

impl Subject {
    async fn memory() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            raw: Raw::Memory,
            _dir: None,
        }
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("personal.db");
        let store = sourceflow_sqlx::SqliteStore::open(&path).await.unwrap();
        Self {
            store: Arc::new(store),
            raw: Raw::Sqlite(path),
            _dir: Some(dir),
        }
    }

    #[cfg_attr(not(sourceflow_pg), allow(dead_code))]
    async fn postgres() -> Self {
        let url = sourceflow_tests::backends::pg_url();
        let schema = format!("sf_test_{}", uuid::Uuid::new_v4().simple());
        let store = sourceflow_sqlx::PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            raw: Raw::Postgres { url, schema },
            _dir: None,
        }
    }

    async fn flow(&self) -> SourceFlow {
        SourceFlow::builder()
            .shared_store(self.store.clone())
            .build()
            .await
            .unwrap()
    }

    /// Every byte the store keeps (for memory: every payload, state and model read as
    /// stored).
    async fn bytes(&self) -> Vec<u8> {
        match &self.raw {
            Raw::Memory => stored_payloads(&self.store).await,
            Raw::Sqlite(path) => sourceflow_tests::backends::sqlite_bytes(path),
            Raw::Postgres { url, schema } => {
                sourceflow_tests::backends::postgres_bytes(url, schema).await
            }
        }
    }

    async fn finish(self) {
        if let Raw::Postgres { url, schema } = &self.raw {
            sourceflow_tests::backends::drop_schema(url, schema).await;
        }
    }
}

/// The payloads, states and models of `store` as it returns them.
async fn stored_payloads(store: &Arc<dyn Store>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for event in store.read_all(Position::START, 10_000).await.unwrap() {
        bytes.extend(event.payload);
    }
    for id in [ALICE, BOB] {
        let stream = StreamId::new("crm.Customer", EntityId::from(id));
        for command in store
            .load_commands(&stream, Sequence(1), None)
            .await
            .unwrap()
        {
            bytes.extend(command.payload);
        }
        if let Some((_, state)) = store.get_entity(&stream).await.unwrap() {
            bytes.extend(state);
        }
    }
    for (_, model) in store
        .list_models("crm.Card", Page::first(100))
        .await
        .unwrap()
    {
        bytes.extend(model);
    }
    bytes
}

fn assert_holds_none(bytes: &[u8], secrets: &[&str], when: &str) {
    assert!(!bytes.is_empty(), "{when}: nothing was read");
    for secret in secrets {
        assert!(
            memchr::memmem::find(bytes, secret.as_bytes()).is_none(),
            "{when}: the store holds the plaintext {secret:?}"
        );
    }
}

fn name_of(card: &Card) -> Option<String> {
    card.name.as_ref().and_then(|n| n.get().cloned())
}

async fn card(flow: &SourceFlow, id: &str) -> Card {
    flow.view_model::<Card>(&EntityId::from(id))
        .await
        .unwrap()
        .expect("a card")
}

async fn subscribed(flow: &SourceFlow) -> Vec<Registered> {
    let mut found = Vec::new();
    let head = flow.store().head().await.unwrap();
    let mut events = std::pin::pin!(flow.subscribe(Position::START));
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if event.envelope.name == "crm.Registered" {
            found.push(event.decode::<Registered>().unwrap());
        }
        if event.position >= head {
            break;
        }
    }
    found
}

/// Registers Alice and Bob with their contacts.
async fn register_both(flow: &SourceFlow) -> (EntityId, EntityId) {
    let (alice, bob) = (EntityId::from(ALICE), EntityId::from(BOB));
    for (id, contact) in [(&alice, alice_contact()), (&bob, bob_contact())] {
        flow.send(id, Register { contact }).await.unwrap();
    }
    (alice, bob)
}

async fn sealed_at_rest_and_forgotten_everywhere(subject: Subject) {
    let flow = subject.flow().await;
    let (alice, bob) = register_both(&flow).await;
    let address = Personal::new(ALICE, "12 Analytical Engine Way".to_owned());
    flow.send(&alice, Ship { order: 1, address }).await.unwrap();
    flow.send(
        &bob,
        Ship {
            order: 2,
            address: Personal::new(BOB, "7 Gear St".to_owned()),
        },
    )
    .await
    .unwrap();

    // Before: plaintext on every read path, ciphertext at rest.
    let customer = flow.replay::<Customer>(&alice).await.unwrap();
    assert_eq!(customer.contact, Some(alice_contact()));
    assert_eq!(
        customer.addresses[0].get().unwrap(),
        "12 Analytical Engine Way"
    );
    assert_eq!(
        name_of(&card(&flow, ALICE).await).as_deref(),
        Some("Alice Lovelace")
    );
    assert_eq!(subscribed(&flow).await[0].contact, alice_contact());
    assert_holds_none(&subject.bytes().await, ALICE_SECRETS, "before forget");
    assert_holds_none(
        &stored_payloads(flow.raw_store()).await,
        ALICE_SECRETS,
        "raw store",
    );
    assert!(
        memchr::memmem::find(&stored_payloads(flow.store()).await, b"Alice Lovelace").is_some(),
        "the flow's store reads the plaintext"
    );

    flow.forget(ALICE).await.unwrap();

    // After: redacted everywhere for Alice, never an error; Bob untouched.
    let customer = flow.replay::<Customer>(&alice).await.unwrap();
    assert_eq!(customer.contact, Some(Personal::redacted(ALICE)));
    assert!(customer.addresses[0].is_redacted());
    let at_1 = flow
        .state_at::<Customer>(&alice, At::Sequence(Sequence(1)))
        .await
        .unwrap();
    assert!(at_1.contact.unwrap().is_redacted());
    assert!(matches!(
        flow.verify::<Customer>(&alice).await.unwrap(),
        Verification::Consistent { .. }
    ));
    let alice_card = card(&flow, ALICE).await;
    assert_eq!(name_of(&alice_card), None);
    assert!(alice_card.last_address.unwrap().is_redacted());
    assert_eq!(
        name_of(&card(&flow, BOB).await).as_deref(),
        Some("Bob Babbage")
    );
    let registered = subscribed(&flow).await;
    assert!(registered[0].contact.is_redacted());
    assert_eq!(registered[1].contact, bob_contact());
    assert_eq!(
        flow.replay::<Customer>(&bob).await.unwrap().contact,
        Some(bob_contact())
    );
    assert!(matches!(
        flow.verify::<Customer>(&bob).await.unwrap(),
        Verification::Consistent { .. }
    ));

    // Handlers keep working on redacted data; what they write for Alice is stored redacted.
    let address = Personal::new(ALICE, "99 Difference Road".to_owned());
    flow.send(&alice, Ship { order: 3, address }).await.unwrap();
    let customer = flow.replay::<Customer>(&alice).await.unwrap();
    assert_eq!(customer.addresses.len(), 2);
    assert!(customer.addresses.iter().all(Personal::is_redacted));
    assert_eq!(card(&flow, ALICE).await.shipments, 2);

    // A rebuilt view and another process on the same store see the same.
    flow.rebuild::<Cards>().await.unwrap();
    assert_eq!(name_of(&card(&flow, ALICE).await), None);
    assert_eq!(
        name_of(&card(&flow, BOB).await).as_deref(),
        Some("Bob Babbage")
    );
    let other = subject.flow().await;
    assert_eq!(
        other.replay::<Customer>(&alice).await.unwrap().contact,
        Some(Personal::redacted(ALICE))
    );
    assert_eq!(
        name_of(&card(&other, BOB).await).as_deref(),
        Some("Bob Babbage")
    );

    assert_holds_none(&subject.bytes().await, ALICE_SECRETS, "after forget");
    subject.finish().await;
}

#[tokio::test]
async fn memory_personal_fields_are_sealed_and_forgotten() {
    sealed_at_rest_and_forgotten_everywhere(Subject::memory().await).await;
}

#[tokio::test]
async fn sqlite_personal_fields_are_sealed_and_forgotten() {
    sealed_at_rest_and_forgotten_everywhere(Subject::sqlite().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_personal_fields_are_sealed_and_forgotten() {
    #[cfg(sourceflow_pg)]
    sealed_at_rest_and_forgotten_everywhere(Subject::postgres().await).await;
}

/// `forget` while sends for the same subject and another one are under way: every command
/// commits, the other subject reads its plaintext, and the forgotten one reads redacted
/// everywhere, including what was sent after.
async fn forget_racing_sends(subject: Subject) {
    const SENDS: u32 = 40;
    let flow = subject.flow().await;
    let (alice, bob) = register_both(&flow).await;
    let mut senders = Vec::new();
    for (id, who) in [(alice.clone(), ALICE), (bob.clone(), BOB)] {
        for worker in 0..4 {
            let (flow, id) = (flow.clone(), id.clone());
            senders.push(tokio::spawn(async move {
                for i in 0..SENDS / 4 {
                    let order = worker * 1_000 + i;
                    let address = Personal::new(who, format!("{who} street {order}"));
                    flow.send(&id, Ship { order, address }).await.unwrap();
                }
            }));
        }
    }
    tokio::task::yield_now().await;
    flow.forget(ALICE).await.unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    flow.catch_up().await.unwrap();

    let alice_state = flow.replay::<Customer>(&alice).await.unwrap();
    let bob_state = flow.replay::<Customer>(&bob).await.unwrap();
    assert_eq!(
        alice_state.addresses.len() as u32,
        SENDS,
        "no command of Alice lost"
    );
    assert_eq!(
        bob_state.addresses.len() as u32,
        SENDS,
        "no command of Bob lost"
    );
    assert!(alice_state.addresses.iter().all(Personal::is_redacted));
    assert!(alice_state.contact.unwrap().is_redacted());
    assert!(bob_state.addresses.iter().all(|a| !a.is_redacted()));
    assert_eq!(card(&flow, ALICE).await.shipments, SENDS);
    assert_eq!(card(&flow, BOB).await.shipments, SENDS);
    assert_eq!(
        name_of(&card(&flow, BOB).await).as_deref(),
        Some("Bob Babbage")
    );
    assert!(matches!(
        flow.verify::<Customer>(&alice).await.unwrap(),
        Verification::Consistent { .. }
    ));
    let bytes = subject.bytes().await;
    assert_holds_none(
        &bytes,
        &["Alice Lovelace", "cust-alice street"],
        "after the race",
    );
    subject.finish().await;
}

#[tokio::test]
async fn memory_forget_racing_sends_loses_nothing() {
    forget_racing_sends(Subject::memory().await).await;
}

#[tokio::test]
async fn sqlite_forget_racing_sends_loses_nothing() {
    forget_racing_sends(Subject::sqlite().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_forget_racing_sends_loses_nothing() {
    #[cfg(sourceflow_pg)]
    forget_racing_sends(Subject::postgres().await).await;
}

/// Tooling that reads the store directly (`StoreAdmin`) sees what handlers see.
#[tokio::test]
async fn tooling_reads_follow_forget() {
    let subject = Subject::sqlite().await;
    let flow = subject.flow().await;
    let alice = EntityId::from(ALICE);
    flow.send(
        &alice,
        Register {
            contact: alice_contact(),
        },
    )
    .await
    .unwrap();
    let stream = StreamId::new("crm.Customer", alice.clone());
    let read = |flow: SourceFlow| {
        let stream = stream.clone();
        async move {
            let events = flow
                .store()
                .read_stream(&stream, Sequence(1))
                .await
                .unwrap();
            events[0].decode::<Registered>().unwrap()
        }
    };
    assert_eq!(read(flow.clone()).await.contact, alice_contact());
    flow.forget(ALICE).await.unwrap();
    assert!(read(flow.clone()).await.contact.is_redacted());
    subject.finish().await;
}

/// A subject's first key commits with the unit of work that first uses it: a unit refused
/// with a conflict leaves no key behind, and the unit that commits stores it.
async fn a_first_key_commits_with_its_unit(subject: Subject) {
    use sourceflow::personal::{KeyState, SealedStore};
    use sourceflow::store::StoreError;
    use sourceflow_testkit::records::stream;

    let sealed = SealedStore::new(subject.store.clone());
    let keys = subject.store.keys().expect("the store keeps keys");
    let s = stream("crm.Customer", ALICE);
    sealed.commit(unit_with(&s, 0, None)).await.unwrap();
    let personal = || {
        serde_json::to_vec(&Register {
            contact: alice_contact(),
        })
        .unwrap()
    };
    // Built on a stale read: the stream is at 1.
    let refused = sealed.commit(unit_with(&s, 0, Some(personal()))).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        keys.keys(&[ALICE.to_owned()]).await.unwrap(),
        [KeyState::Unknown],
        "a refused unit leaves no key"
    );
    sealed
        .commit(unit_with(&s, 1, Some(personal())))
        .await
        .unwrap();
    assert!(matches!(
        keys.keys(&[ALICE.to_owned()]).await.unwrap()[..],
        [KeyState::Active(_)]
    ));
    let stored = sealed.load_commands(&s, Sequence(2), None).await.unwrap();
    let read: Register = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(read.contact, alice_contact());
    assert_holds_none(&subject.bytes().await, ALICE_SECRETS, "after the first use");
    subject.finish().await;
}

fn unit_with(
    s: &StreamId,
    expected: u64,
    payload: Option<Vec<u8>>,
) -> sourceflow::store::UnitOfWork {
    let mut unit = sourceflow_testkit::records::unit(s, expected, 0);
    unit.entity = None;
    if let Some(payload) = payload {
        unit.command.payload = payload;
    }
    unit
}

#[tokio::test]
async fn memory_a_first_key_commits_with_its_unit() {
    a_first_key_commits_with_its_unit(Subject::memory().await).await;
}

#[tokio::test]
async fn sqlite_a_first_key_commits_with_its_unit() {
    a_first_key_commits_with_its_unit(Subject::sqlite().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_a_first_key_commits_with_its_unit() {
    #[cfg(sourceflow_pg)]
    a_first_key_commits_with_its_unit(Subject::postgres().await).await;
}

/// A resent unit answered as a duplicate by the store gets the original receipt with its
/// events readable, also when the resent unit itself carries no personal field (it goes to the
/// store without sealing, and only the original events read back need opening).
async fn a_duplicate_of_a_sealed_unit_reads_back_opened(subject: Subject) {
    use sourceflow::personal::SealedStore;
    use sourceflow_testkit::records::stream;

    let sealed = SealedStore::new(subject.store.clone());
    let s = stream("crm.Customer", ALICE);
    let registered = Registered {
        contact: alice_contact(),
    };
    let mut original = sourceflow_testkit::records::unit(&s, 0, 1);
    original.events[0].payload = serde_json::to_vec(&registered).unwrap();
    let first = sealed.commit(original.clone()).await.unwrap();
    assert!(!first.duplicate);
    let mut plain = original;
    plain.events[0].payload = b"{}".to_vec();
    for resent in [plain.clone(), plain] {
        let receipt = sealed.commit(resent).await.unwrap();
        assert!(receipt.duplicate);
        assert_eq!(receipt.sequence, first.sequence);
        let read: Registered = serde_json::from_slice(&receipt.events[0].payload).unwrap();
        assert_eq!(read, registered, "the original event, opened");
    }
    assert_holds_none(&subject.bytes().await, ALICE_SECRETS, "after the resends");
    subject.finish().await;
}

#[tokio::test]
async fn memory_a_duplicate_of_a_sealed_unit_reads_back_opened() {
    a_duplicate_of_a_sealed_unit_reads_back_opened(Subject::memory().await).await;
}

#[tokio::test]
async fn sqlite_a_duplicate_of_a_sealed_unit_reads_back_opened() {
    a_duplicate_of_a_sealed_unit_reads_back_opened(Subject::sqlite().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_a_duplicate_of_a_sealed_unit_reads_back_opened() {
    #[cfg(sourceflow_pg)]
    a_duplicate_of_a_sealed_unit_reads_back_opened(Subject::postgres().await).await;
}

/// First uses of new subjects racing in two processes (two flows, each with its own key cache
/// and pending keys, on one store): one key per subject wins, the losing units are retried
/// with it, and a third process reads every field back.
async fn first_uses_race_in_two_processes(subject: Subject) {
    const SUBJECTS: usize = 12;
    let (one, two) = (subject.flow().await, subject.flow().await);
    let contact = |i: usize| {
        Personal::new(
            format!("cust-race-{i}"),
            Contact {
                name: format!("Racer {i}"),
                email: format!("racer{i}@example.org"),
            },
        )
    };
    let mut sends = Vec::new();
    for i in 0..SUBJECTS {
        for (flow, side) in [(one.clone(), "one"), (two.clone(), "two")] {
            let contact = contact(i);
            sends.push(tokio::spawn(async move {
                let id = EntityId::from(format!("race-{i}-{side}"));
                flow.send(&id, Register { contact }).await.unwrap();
            }));
        }
    }
    for send in sends {
        send.await.unwrap();
    }
    let third = subject.flow().await;
    for i in 0..SUBJECTS {
        for side in ["one", "two"] {
            let id = EntityId::from(format!("race-{i}-{side}"));
            let customer = third.replay::<Customer>(&id).await.unwrap();
            assert_eq!(customer.contact, Some(contact(i)), "{id}");
        }
    }
    let names: Vec<String> = (0..SUBJECTS).map(|i| format!("Racer {i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_holds_none(&subject.bytes().await, &names, "after the race");
    subject.finish().await;
}

#[tokio::test]
async fn memory_first_uses_race_in_two_processes() {
    first_uses_race_in_two_processes(Subject::memory().await).await;
}

#[tokio::test]
async fn sqlite_first_uses_race_in_two_processes() {
    first_uses_race_in_two_processes(Subject::sqlite().await).await;
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "needs SOURCEFLOW_PG_URL when built")]
async fn postgres_first_uses_race_in_two_processes() {
    #[cfg(sourceflow_pg)]
    first_uses_race_in_two_processes(Subject::postgres().await).await;
}
