//! Deleting and archiving streams, written once and run against every backend with
//! [`lifecycle_suite!`](crate::lifecycle_suite): sends refused with a typed error, reads
//! empty, views notified, readers carrying on past erased events, resent message ids still
//! answered, deletion racing sends, and archived streams replaying from the archive.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sourceflow::lifecycle::{is_erased, ARCHIVE_STREAM, DELETE_STREAM, ERASED};
use sourceflow::prelude::*;
use sourceflow::store::{Store, StoreAdmin};
use sourceflow::{RecordedEvent, StreamDeleted, StreamStatus, Verification};

use crate::scenarios::{flow, Add, Added, Tally, TallyModel, TallyView};

/// One entry per live tally: created by its events, dropped when its stream is deleted.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "test.TallyIndexEntry")]
pub struct TallyIndexEntry {
    /// Events seen.
    pub events: u64,
}

/// Keeps [`TallyIndexEntry`]s. Not `Default`, so only the flows of this module have it.
pub struct TallyIndex {
    _registered_by_value: (),
}

#[view(model = TallyIndexEntry)]
impl TallyIndex {
    #[projects_on]
    async fn added(&self, entry: &mut TallyIndexEntry, _e: &Added) {
        entry.events += 1;
    }

    #[projects_on]
    async fn deleted(&self, e: &StreamDeleted, cx: &mut ViewContext) {
        if e.is::<Tally>() {
            cx.delete::<TallyIndexEntry>(&e.id);
        }
    }
}

/// A flow over `store` with the discovered components and [`TallyIndex`].
pub async fn indexed_flow(store: Arc<dyn Store>) -> SourceFlow {
    SourceFlow::builder()
        .shared_store(store)
        .view(TallyIndex {
            _registered_by_value: (),
        })
        .build()
        .await
        .expect("the test domain is wired correctly")
}

fn tally(id: &EntityId) -> StreamId {
    StreamId::of::<Tally>(id)
}

async fn add(flow: &SourceFlow, id: &EntityId, n: i64) -> CommandReceipt {
    flow.send(id, Add { n })
        .await
        .expect("a send to a live tally")
}

fn assert_deleted(result: Result<CommandReceipt, Error>, id: &EntityId) {
    match result {
        Err(Error::StreamDeleted { stream }) => assert_eq!(stream, tally(id)),
        other => panic!("expected StreamDeleted for {id}, got {other:?}"),
    }
}

/// Every event of the stream is erased (no name, `null` payload) but the tombstone's own.
async fn assert_erased(store: &Arc<dyn Store>, id: &EntityId, payload_text: &str) {
    let events = store.read_stream(&tally(id), Sequence(1)).await.unwrap();
    let (last, erased) = events.split_last().expect("the tombstone's event");
    assert_eq!(last.envelope.name, "sourceflow.StreamDeleted");
    for event in erased {
        assert_eq!(event.envelope.name, ERASED, "{event:?}");
        assert_eq!(event.payload, b"null");
    }
    let commands = store
        .load_commands(&tally(id), Sequence(1), None)
        .await
        .unwrap();
    let (last, erased) = commands.split_last().expect("the tombstone");
    assert_eq!(last.envelope.name, DELETE_STREAM);
    for command in erased {
        assert_eq!(command.envelope.name, ERASED);
        assert_eq!(command.payload, b"null");
    }
    // Nothing of the erased payloads is left in the global log.
    let log = store.read_all(Position::START, usize::MAX).await.unwrap();
    for event in log.iter().filter(|e| e.envelope.stream == tally(id)) {
        assert!(
            !String::from_utf8_lossy(&event.payload).contains(payload_text),
            "{event:?}"
        );
    }
}

/// A deleted stream refuses sends with `StreamDeleted` (in this process and another), reads
/// empty, loses its entity state, and its views drop their models; other streams go on.
pub async fn deleted_stream_refuses_sends_and_reads_empty(store: Arc<dyn Store>) {
    let flow = indexed_flow(store.clone()).await;
    let (a, b) = (EntityId::from("del-a"), EntityId::from("del-b"));
    add(&flow, &a, 40).await;
    add(&flow, &a, 2).await;
    add(&flow, &b, 5).await;
    let entry: Option<TallyIndexEntry> = flow.view_model(&a).await.unwrap();
    assert_eq!(entry, Some(TallyIndexEntry { events: 2 }));

    let tombstone = flow.delete_stream::<Tally>(&a).await.unwrap();
    assert_eq!(tombstone.sequence, Sequence(3));
    assert!(!tombstone.duplicate);
    assert_eq!(tombstone.events.len(), 1);

    assert_deleted(flow.send(&a, Add { n: 1 }).await, &a);
    // A handle that never saw the stream (another process) is refused too.
    let other = flow_without_cache(&store).await;
    assert_deleted(other.send(&a, Add { n: 1 }).await, &a);
    assert_eq!(store.last_sequence(&tally(&a)).await.unwrap(), Sequence(3));

    assert_eq!(flow.replay::<Tally>(&a).await.unwrap(), Tally::default());
    assert_eq!(
        flow.state_at::<Tally>(&a, Sequence(2)).await.unwrap(),
        Tally::default()
    );
    assert!(matches!(
        flow.verify::<Tally>(&a).await.unwrap(),
        Verification::NoStoredState { .. }
    ));
    assert_eq!(store.get_entity(&tally(&a)).await.unwrap(), None);
    assert_eq!(
        flow.stream_status::<Tally>(&a).await.unwrap(),
        StreamStatus::Deleted
    );
    assert_erased(&store, &a, "\"total\":42").await;

    // The view dropped its model on StreamDeleted; the other stream's is untouched.
    let entry: Option<TallyIndexEntry> = flow.view_model(&a).await.unwrap();
    assert_eq!(entry, None);
    let entry: Option<TallyIndexEntry> = flow.view_model(&b).await.unwrap();
    assert_eq!(entry, Some(TallyIndexEntry { events: 1 }));
    add(&flow, &b, 1).await;
    assert_eq!(flow.replay::<Tally>(&b).await.unwrap().total, 6);

    // Deleting again answers the tombstone's receipt.
    let again = flow.delete_stream::<Tally>(&a).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, tombstone.sequence);
    // A stream never written to can be deleted: its id takes no commands.
    let fresh = EntityId::from("del-never");
    flow.delete_stream::<Tally>(&fresh).await.unwrap();
    assert_deleted(flow.send(&fresh, Add { n: 1 }).await, &fresh);
}

/// The bank's balance view drops a deleted account's balance; other accounts keep theirs.
pub async fn deleted_account_drops_its_balance(store: Arc<dyn Store>) {
    use bank::{Account, AccountBalance, Deposit, OpenAccount};
    let flow = flow(store.clone()).await;
    let (gone, kept) = (EntityId::from("acct-gone"), EntityId::from("acct-kept"));
    for id in [&gone, &kept] {
        flow.send(
            id,
            OpenAccount {
                owner: "Ada".into(),
                overdraft_limit: 0,
            },
        )
        .await
        .unwrap();
        flow.send(id, Deposit { amount: 10 }).await.unwrap();
    }
    flow.delete_stream::<Account>(&gone).await.unwrap();
    let balance: Option<AccountBalance> = flow.view_model(&gone).await.unwrap();
    assert!(balance.is_none());
    let balance: AccountBalance = flow.view_model(&kept).await.unwrap().unwrap();
    assert_eq!(balance.balance, 10);
    // A rebuild from the log does not bring it back either.
    flow.rebuild::<bank::BalanceView>().await.unwrap();
    let balance: Option<AccountBalance> = flow.view_model(&gone).await.unwrap();
    assert!(balance.is_none());
}

async fn flow_without_cache(store: &Arc<dyn Store>) -> SourceFlow {
    indexed_flow(store.clone()).await
}

/// The next `n` events of `subscription`, failing after a generous wait.
async fn next_events(
    events: &mut (impl futures_util::Stream<Item = Result<RecordedEvent, Error>> + Unpin),
    n: usize,
) -> Vec<RecordedEvent> {
    let mut found = Vec::new();
    while found.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the subscription keeps delivering")
            .expect("the subscription never ends")
            .expect("no error");
        found.push(next);
    }
    found
}

/// Catch-up readers and views positioned before a deleted stream's events, and after them,
/// carry on: they skip the erased events, see the tombstone's event and every later event.
pub async fn readers_continue_past_a_deleted_stream(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let (a, b) = (EntityId::from("past-a"), EntityId::from("past-b"));
    add(&flow, &b, 1).await;
    let before = store.head().await.unwrap();
    for n in 1..=3 {
        add(&flow, &a, n).await;
    }
    let after = store.head().await.unwrap();
    flow.delete_stream::<Tally>(&a).await.unwrap();
    add(&flow, &b, 2).await;

    for from in [Position::START, before, after] {
        let mut events = std::pin::pin!(flow.subscribe(from));
        let expected = if from == Position::START { 3 } else { 2 };
        let seen = next_events(&mut events, expected).await;
        assert!(seen.iter().all(|e| !is_erased(&e.envelope.name)));
        assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
        let names: Vec<&str> = seen.iter().map(|e| &*e.envelope.name).collect();
        assert_eq!(
            &names[names.len() - 2..],
            ["sourceflow.StreamDeleted", "test.Added"],
            "from {from}"
        );
    }

    // A view rebuilt from the start goes through the erased events without an error.
    flow.rebuild::<TallyView>().await.unwrap();
    let model: Option<TallyModel> = flow.view_model(&a).await.unwrap();
    assert_eq!(model, None, "erased events are not projected again");
    let model: TallyModel = flow.view_model(&b).await.unwrap().unwrap();
    assert_eq!(model.applied, 2);
    // A second handle catching up from its stored position sees the later events too.
    let other = crate::scenarios::flow(store.clone()).await;
    add(&other, &b, 3).await;
    flow.catch_up().await.unwrap();
    let model: TallyModel = flow.view_model(&b).await.unwrap().unwrap();
    assert_eq!(model.total, 6);
}

/// A message id accepted before the deletion is still a duplicate after it: the original
/// receipt, not a command on a new stream.
pub async fn resent_message_id_after_deletion_gets_the_original_receipt(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::from("resent");
    let key = uuid::Uuid::now_v7();
    let options = || SendOptions::new().message_id(key);
    let first = flow.send_with(&id, Add { n: 7 }, options()).await.unwrap();
    add(&flow, &id, 1).await;
    flow.delete_stream::<Tally>(&id).await.unwrap();
    let again = flow.send_with(&id, Add { n: 7 }, options()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(again.message_id, key);
    assert_eq!(store.last_sequence(&tally(&id)).await.unwrap(), Sequence(3));
}

/// Deletion racing sends on the same stream (from another handle, so through the store's
/// conflict): every send either committed before the tombstone or was refused with
/// `StreamDeleted`; nothing commits after the tombstone. The sender never pauses, so the
/// deletion lands only because the store places it after the commands it did not see.
pub async fn delete_racing_sends_never_commits_after_the_tombstone(store: Arc<dyn Store>) {
    let sender = flow(store.clone()).await;
    let deleter = flow(store.clone()).await;
    let id = EntityId::from("race");
    add(&sender, &id, 1).await;
    let sending = {
        let (sender, id) = (sender.clone(), id.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            // Until refused: the deletion lands while sends are under way.
            for _ in 0..100_000 {
                let outcome = sender.send(&id, Add { n: 1 }).await;
                let refused = matches!(outcome, Err(Error::StreamDeleted { .. }));
                outcomes.push(outcome);
                if refused {
                    break;
                }
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let tombstone = deleter.delete_stream::<Tally>(&id).await.unwrap();
    let outcomes = sending.await.unwrap();
    assert!(
        matches!(outcomes.last(), Some(Err(Error::StreamDeleted { .. }))),
        "the sender ran into the deletion"
    );
    for outcome in &outcomes {
        match outcome {
            Ok(receipt) => assert!(receipt.sequence < tombstone.sequence, "{receipt:?}"),
            Err(Error::StreamDeleted { .. }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_deleted(sender.send(&id, Add { n: 1 }).await, &id);
    assert_eq!(
        store.last_sequence(&tally(&id)).await.unwrap(),
        tombstone.sequence
    );
    let commands = store
        .load_commands(&tally(&id), Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(commands.len() as u64, tombstone.sequence.0);
    assert!(commands[..commands.len() - 1]
        .iter()
        .all(|c| c.envelope.name == ERASED));
}

/// Deleting the newest stream, then committing more: positions keep increasing, and a view
/// whose position is the old head sees the new events.
pub async fn deleting_the_newest_stream_keeps_positions_increasing(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let (a, b) = (EntityId::from("newest-a"), EntityId::from("newest-b"));
    add(&flow, &b, 1).await;
    let last_of_a = add(&flow, &a, 1).await.events[0].position;
    let tombstone = flow.delete_stream::<Tally>(&a).await.unwrap();
    let marker = tombstone.events[0].position;
    assert!(marker > last_of_a);
    let next = add(&flow, &b, 2).await.events[0].position;
    assert!(next > marker, "{next} after the tombstone at {marker}");
    let log = store.read_all(Position::START, usize::MAX).await.unwrap();
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.head().await.unwrap(), next);
    let model: TallyModel = flow.view_model(&b).await.unwrap().unwrap();
    assert_eq!((model.applied, model.total), (2, 3));
    // Another handle whose views stood at the old head catches up to the new event.
    let other = crate::scenarios::flow(store.clone()).await;
    other.catch_up().await.unwrap();
    let model: TallyModel = other.view_model(&b).await.unwrap().unwrap();
    assert_eq!(model.total, 3);
}

/// An archived stream is out of the hot tables, replays to the same state from the archive,
/// refuses sends with `StreamArchived` until restored, and goes on after a restore.
pub async fn archived_stream_replays_from_the_archive(store: Arc<dyn Store>) {
    let flow = flow(store.clone()).await;
    let id = EntityId::from("archived");
    for n in 1..=3 {
        add(&flow, &id, n).await;
    }
    let live = flow.replay::<Tally>(&id).await.unwrap();
    let at_two = flow.state_at::<Tally>(&id, Sequence(2)).await.unwrap();
    let stream = tally(&id);
    let marker = flow.archive_stream::<Tally>(&id).await.unwrap();
    assert_eq!(marker.sequence, Sequence(4));
    assert_eq!(
        flow.stream_status::<Tally>(&id).await.unwrap(),
        StreamStatus::Archived
    );

    // Out of the hot tables: only the marker is left there.
    let hot = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(hot.len(), 1);
    assert_eq!(hot[0].envelope.name, ARCHIVE_STREAM);
    let hot_events = store.read_stream(&stream, Sequence(1)).await.unwrap();
    assert_eq!(hot_events.len(), 1);
    assert_eq!(hot_events[0].envelope.name, "sourceflow.StreamArchived");
    let log = store.read_all(Position::START, usize::MAX).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.envelope.stream == stream && e.envelope.name == "test.Added")
            .count(),
        0
    );
    assert_eq!(store.get_entity(&stream).await.unwrap(), None);
    let archived = store
        .load_archived_commands(&stream, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(archived.len(), 3);

    // Replayable on demand, from the archive.
    assert_eq!(flow.replay::<Tally>(&id).await.unwrap(), live);
    assert_eq!(
        flow.state_at::<Tally>(&id, Sequence(2)).await.unwrap(),
        at_two
    );
    match flow.send(&id, Add { n: 1 }).await {
        Err(Error::StreamArchived { stream: refused }) => assert_eq!(refused, stream),
        other => panic!("expected StreamArchived, got {other:?}"),
    }
    let again = flow.archive_stream::<Tally>(&id).await.unwrap();
    assert!(again.duplicate);

    // Restored: the rows are back at their own sequences and positions, sends go on.
    let before = archived_positions(&store, &stream).await;
    flow.restore_stream::<Tally>(&id).await.unwrap().unwrap();
    assert_eq!(flow.restore_stream::<Tally>(&id).await.unwrap(), None);
    let restored = store.read_stream(&stream, Sequence(1)).await.unwrap();
    assert_eq!(
        restored.iter().map(|e| e.position).collect::<Vec<_>>()[..3],
        before[..]
    );
    let receipt = add(&flow, &id, 10).await;
    assert_eq!(receipt.sequence, Sequence(6));
    assert_eq!(flow.replay::<Tally>(&id).await.unwrap().total, 16);
    assert!(matches!(
        flow.verify::<Tally>(&id).await.unwrap(),
        Verification::Consistent { .. }
    ));

    // Deleting an archived stream erases what the archive held too.
    flow.archive_stream::<Tally>(&id).await.unwrap();
    flow.delete_stream::<Tally>(&id).await.unwrap();
    assert!(store
        .load_archived_commands(&stream, Sequence(1), None)
        .await
        .unwrap()
        .is_empty());
    assert_erased(&store, &id, "\"total\"").await;
}

async fn archived_positions(store: &Arc<dyn Store>, stream: &StreamId) -> Vec<Position> {
    store
        .read_archived_events(stream, Sequence(1), Sequence(u64::MAX >> 1))
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect()
}

/// Instantiates every lifecycle scenario as a `#[tokio::test]` for one backend (see
/// [`runtime_suite!`](crate::runtime_suite) for the arguments).
#[macro_export]
macro_rules! lifecycle_suite {
    ($(#[$attribute:meta])* $factory:path) => {
        $crate::lifecycle_suite!(@tests [$(#[$attribute])*] $factory;
            deleted_stream_refuses_sends_and_reads_empty,
            deleted_account_drops_its_balance,
            readers_continue_past_a_deleted_stream,
            resent_message_id_after_deletion_gets_the_original_receipt,
            delete_racing_sends_never_commits_after_the_tombstone,
            deleting_the_newest_stream_keeps_positions_increasing,
            archived_stream_replays_from_the_archive,
        );
    };
    (@tests $attributes:tt $factory:path; $($name:ident),* $(,)?) => {
        $($crate::lifecycle_suite!(@test $attributes $factory; $name);)*
    };
    (@test [$(#[$attribute:meta])*] $factory:path; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attribute])*
        async fn $name() {
            let backend = $factory().await;
            $crate::lifecycle::$name(backend.store.clone()).await;
            backend.finish().await;
        }
    };
}
