//! The `lifecycle` group: deleting, archiving and restoring a stream at the store level
//! ([`Store::delete_stream`], [`Store::archive_stream`], [`Store::restore_stream`] and the
//! archive reads), for stores that implement them. The runtime builds the marker units; these
//! scenarios build them the same way: a unit whose command carries the marker's name.

use std::borrow::Cow;
use std::sync::Arc;

use sourceflow::lifecycle::{ARCHIVE_STREAM, DELETE_STREAM, ERASED, RESTORE_STREAM};
use sourceflow::message::Message;
use sourceflow::store::{Page, Store, StoreAdmin, UnitOfWork};
use sourceflow::{Position, RecordedEvent, Sequence, StreamArchived, StreamDeleted, StreamId};

use crate::records::{assert_conflict, assert_same_events, stream, unit};

/// The marker unit `name` after `expected`, with one event `event` (or none).
fn marker(
    stream: &StreamId,
    expected: u64,
    name: &'static str,
    event: Option<&'static str>,
) -> UnitOfWork {
    let mut marker = unit(stream, expected, usize::from(event.is_some()));
    marker.command.envelope.name = Cow::Borrowed(name);
    marker.entity = None;
    if let (Some(name), Some(e)) = (event, marker.events.first_mut()) {
        e.envelope.name = Cow::Borrowed(name);
    }
    marker
}

async fn all_events(store: &dyn Store) -> Vec<RecordedEvent> {
    store.read_all(Position::START, usize::MAX).await.unwrap()
}

/// Deletion commits the tombstone and erases every earlier record of the stream in place:
/// sequences, positions and message ids kept, names `sourceflow.Erased`, payloads `null`;
/// the entity state goes; other streams are untouched; a resent message id is still a
/// duplicate. A tombstone built on a stale read goes after the commands committed since
/// ([`UnitOfWork::place_marker_after`]); one that would follow another marker is a conflict
/// that writes nothing.
pub async fn deletion_erases_in_place(store: Arc<dyn Store>) {
    let (s, other) = (
        stream("conf.Account", "gone"),
        stream("conf.Account", "kept"),
    );
    let first = store.commit(unit(&s, 0, 2)).await.unwrap();
    store.commit(unit(&other, 0, 1)).await.unwrap();
    store.commit(unit(&s, 1, 1)).await.unwrap();
    let before = all_events(&*store).await;

    // Built when the stream's last command was 1: it goes after 2.
    let tombstone = marker(&s, 1, DELETE_STREAM, Some(StreamDeleted::NAME));
    let receipt = store.delete_stream(tombstone.clone()).await.unwrap();
    assert_eq!(receipt.sequence, Sequence(3));
    assert_eq!(receipt.events.len(), 1);
    assert!(receipt.events[0].position > before.last().unwrap().position);
    let again = store.delete_stream(tombstone).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, Sequence(3));
    let events = all_events(&*store).await.len();
    assert_conflict(
        store
            .delete_stream(marker(&s, 2, DELETE_STREAM, Some(StreamDeleted::NAME)))
            .await,
        &s,
        2,
    );
    assert_eq!(all_events(&*store).await.len(), events);

    let commands = store.load_commands(&s, Sequence(1), None).await.unwrap();
    let sequences: Vec<u64> = commands.iter().map(|c| c.sequence.0).collect();
    assert_eq!(sequences, [1, 2, 3]);
    for command in &commands[..2] {
        assert_eq!(command.envelope.name, ERASED);
        assert_eq!(command.payload, b"null");
    }
    assert_eq!(commands[0].envelope.message_id, first.message_id);
    assert_eq!(commands[2].envelope.name, DELETE_STREAM);

    let after = all_events(&*store).await;
    assert_eq!(after.len(), before.len() + 1);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(
            (old.position, old.sequence, old.envelope.message_id),
            (new.position, new.sequence, new.envelope.message_id)
        );
        if new.envelope.stream == s {
            assert_eq!(new.envelope.name, ERASED);
            assert_eq!(new.payload, b"null");
        } else {
            assert_same_events(std::slice::from_ref(new), std::slice::from_ref(old));
        }
    }
    assert_eq!(after.last().unwrap().envelope.name, StreamDeleted::NAME);
    assert_eq!(store.get_entity(&s).await.unwrap(), None);
    assert!(store.get_entity(&other).await.unwrap().is_some());
    // A state computed before the deletion (a replay racing it) is not written back.
    assert_conflict(
        store
            .put_entity(&s, Sequence::ZERO, Sequence(2), b"{}".to_vec())
            .await,
        &s,
        0,
    );
    assert_eq!(store.get_entity(&s).await.unwrap(), None);

    let resent = store
        .find_receipt(&s, first.message_id)
        .await
        .unwrap()
        .expect("the original receipt");
    assert_eq!(resent.sequence, Sequence(1));
    assert_eq!(resent.events.len(), 2);
    if store.admin().is_some() {
        let ids = store
            .stream_ids("conf.Account", Page::first(10))
            .await
            .unwrap();
        assert_eq!(
            ids,
            std::slice::from_ref(&other.id),
            "deleted streams are not listed"
        );
    }
}

/// Deleting the stream that holds the newest events, then committing: positions keep
/// increasing, none is handed out twice.
pub async fn deleting_the_newest_stream_keeps_positions(store: Arc<dyn Store>) {
    let (s, other) = (
        stream("conf.Account", "newest"),
        stream("conf.Account", "next"),
    );
    store.commit(unit(&other, 0, 1)).await.unwrap();
    let newest = store.commit(unit(&s, 0, 2)).await.unwrap();
    let tombstone = store
        .delete_stream(marker(&s, 1, DELETE_STREAM, Some(StreamDeleted::NAME)))
        .await
        .unwrap();
    assert!(tombstone.events[0].position > newest.events[1].position);
    let next = store.commit(unit(&other, 1, 1)).await.unwrap();
    assert!(next.events[0].position > tombstone.events[0].position);
    assert_eq!(store.head().await.unwrap(), next.events[0].position);
    let log = all_events(&*store).await;
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(log.len(), 5);
}

/// Archiving moves every record before the marker to the archive (same sequences, positions
/// and payloads) and leaves the marker in the hot tables; restoring moves them back.
pub async fn archiving_moves_records_and_restoring_brings_them_back(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "cold");
    for expected in 0..3 {
        store.commit(unit(&s, expected, 1)).await.unwrap();
    }
    let commands = store.load_commands(&s, Sequence(1), None).await.unwrap();
    let events = store
        .read_stream_range(&s, Sequence(1), Sequence(100))
        .await
        .unwrap();

    // Built when the stream's last command was 2: it goes after 3.
    let archived = store
        .archive_stream(marker(&s, 2, ARCHIVE_STREAM, Some(StreamArchived::NAME)))
        .await
        .unwrap();
    assert_eq!(archived.sequence, Sequence(4));
    // Another archive built before this one landed would follow a marker: a conflict.
    assert_conflict(
        store
            .archive_stream(marker(&s, 3, ARCHIVE_STREAM, Some(StreamArchived::NAME)))
            .await,
        &s,
        3,
    );

    let hot = store.load_commands(&s, Sequence(1), None).await.unwrap();
    assert_eq!(hot.len(), 1);
    assert_eq!(hot[0].envelope.name, ARCHIVE_STREAM);
    let hot_events = store
        .read_stream_range(&s, Sequence(1), Sequence(100))
        .await
        .unwrap();
    assert_eq!(hot_events.len(), 1);
    assert_eq!(hot_events[0].envelope.name, StreamArchived::NAME);
    let log = all_events(&*store).await;
    assert_eq!(log.len(), 1, "only the marker's event is in the hot log");
    assert_eq!(store.head().await.unwrap(), archived.events[0].position);
    assert_eq!(store.last_sequence(&s).await.unwrap(), Sequence(4));
    assert_eq!(store.get_entity(&s).await.unwrap(), None);

    let cold = store
        .load_archived_commands(&s, Sequence(1), None)
        .await
        .unwrap();
    assert_eq!(cold, commands);
    let cold_events = store
        .read_archived_events(&s, Sequence(1), Sequence(100))
        .await
        .unwrap();
    assert_same_events(&cold_events, &events);
    let page = store
        .load_archived_commands(&s, Sequence(2), Some(Sequence(2)))
        .await
        .unwrap();
    assert_eq!(page, commands[1..2]);

    let restored = store
        .restore_stream(marker(&s, 4, RESTORE_STREAM, None))
        .await
        .unwrap();
    assert_eq!(restored.sequence, Sequence(5));
    let back = store.load_commands(&s, Sequence(1), None).await.unwrap();
    assert_eq!(back.len(), 5);
    assert_eq!(back[..3], commands[..]);
    let back_events = store
        .read_stream_range(&s, Sequence(1), Sequence(100))
        .await
        .unwrap();
    assert_same_events(&back_events[..3], &events);
    assert!(store
        .load_archived_commands(&s, Sequence(1), None)
        .await
        .unwrap()
        .is_empty());
    let next = store.commit(unit(&s, 5, 1)).await.unwrap();
    assert!(next.events[0].position > archived.events[0].position);
}

/// The listings leave deleted streams out and still fill their pages: a page of `limit` ids
/// holds `limit` live streams when there are that many after the cursor.
pub async fn listings_page_past_deleted_streams(store: Arc<dyn Store>) {
    if store.admin().is_none() {
        return;
    }
    for id in ["a", "b", "c", "d", "e", "f"] {
        store
            .commit(unit(&stream("conf.Listed", id), 0, 1))
            .await
            .unwrap();
    }
    for id in ["b", "c", "f"] {
        let s = stream("conf.Listed", id);
        store
            .delete_stream(marker(&s, 1, DELETE_STREAM, Some(StreamDeleted::NAME)))
            .await
            .unwrap();
    }
    let page = |after: Option<&str>, limit: usize| {
        let store = store.clone();
        let after = after.map(sourceflow::EntityId::from);
        async move {
            store
                .stream_ids("conf.Listed", Page { after, limit })
                .await
                .unwrap()
                .iter()
                .map(|id| id.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, ["a", "d"]);
    assert_eq!(page(Some("d"), 2).await, ["e"]);
    assert_eq!(page(Some("a"), 1).await, ["d"]);
    assert_eq!(page(None, 10).await, ["a", "d", "e"]);
    if let Some(inspect) = store.inspect() {
        let ids = inspect
            .stream_ids_with_prefix("conf.Listed", "", Page::first(2))
            .await
            .unwrap();
        assert_eq!(ids, ["a", "d"].map(sourceflow::EntityId::from));
        let ids = inspect
            .stream_ids_with_prefix("conf.Listed", "c", Page::first(2))
            .await
            .unwrap();
        assert!(ids.is_empty());
    }
}
