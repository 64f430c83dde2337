//! The `group` group: [`GroupCommit::commit_group`] committing the units of concurrent senders
//! in order, in one transaction, together with the views' projection of the whole group when
//! its assumptions hold.
//!
//! For stores whose [`Store::groups`] returns `Some`.

use std::sync::Arc;

use serde_json::json;
use sourceflow::store::{
    GroupCommit, GroupOutcome, GroupProjection, ModelWrite, Store, StoreError, UnitGroup,
    UnitOfWork,
};
use sourceflow::{Position, Sequence};

use crate::records::{
    all_events, assert_conflict, delete, model, outbox, put, seed_models, stream, unit,
};

/// The store's group commit; a store in this group must offer one.
fn groups(store: &dyn Store) -> &dyn GroupCommit {
    store.groups().expect(
        "Store::groups returns None; a store without group commit leaves the `group` group out",
    )
}

/// A view's projection of a whole group.
fn view(handler: &str, expected: u64, after: u64, models: Vec<ModelWrite>) -> GroupProjection {
    GroupProjection {
        handler: handler.to_owned().into(),
        expected: Position(expected),
        after: Position(after),
        models,
    }
}

/// Commits `units` as one group with `projections`, each unit's first event expected at
/// `first_sequences`.
async fn commit(
    store: &dyn Store,
    units: &[UnitOfWork],
    first_sequences: &[Option<u64>],
    projections: Vec<GroupProjection>,
) -> GroupOutcome {
    let group = UnitGroup {
        units: units.iter().collect(),
        first_sequences: first_sequences.iter().map(|s| s.map(Sequence)).collect(),
        projections,
    };
    groups(store).commit_group(group).await
}

/// Every unit's receipt, asserting each committed (not as a duplicate).
fn committed(outcome: &GroupOutcome) -> Vec<&sourceflow::CommandReceipt> {
    outcome
        .units
        .iter()
        .map(|unit| {
            let receipt = unit.as_ref().expect("the unit commits");
            assert!(!receipt.duplicate);
            receipt
        })
        .collect()
}

/// A group's units commit in order, their events at consecutive positions in group order, and
/// a view's projection of the group commits with them: its models, and its position at the
/// group's last event. The next group's projection starts there; several views decide
/// independently.
pub async fn a_group_commits_its_units_and_views_together(store: Arc<dyn Store>) {
    let (v, m) = ("conf.GroupView", "conf.Group");
    seed_models(&*store, vec![put(m, "gone", json!({"v": 0}))]).await;
    let streams = [
        stream("conf.Account", "g-a"),
        stream("conf.Account", "g-b"),
        stream("conf.Account", "g-c"),
    ];
    let units: Vec<_> = streams.iter().map(|s| unit(s, 0, 1)).collect();
    let models = vec![
        put(m, "g-a", json!({"v": 1})),
        put(m, "g-b", json!({"v": 1})),
        put(m, "g-c", json!({"v": 1})),
        delete(m, "gone"),
    ];
    let outcome = commit(
        &*store,
        &units,
        &[Some(1), Some(1), Some(1)],
        vec![view(v, 0, 0, models)],
    )
    .await;
    let receipts = committed(&outcome);
    let positions: Vec<u64> = receipts.iter().map(|r| r.events[0].position.0).collect();
    assert_eq!(
        positions,
        vec![1, 2, 3],
        "events at consecutive positions in group order"
    );
    assert!(receipts.iter().all(|r| r.sequence == Sequence(1)));
    assert_eq!(
        outcome.projected,
        vec![true],
        "the view's projection of the group"
    );
    assert_eq!(store.get_position(v).await.unwrap(), Position(3));
    for id in ["g-a", "g-b", "g-c"] {
        assert_eq!(model(&*store, m, id).await, Some(json!({"v": 1})));
    }
    assert_eq!(model(&*store, m, "gone").await, None);
    let events = all_events(&*store).await;
    assert_eq!(events.len(), 3);

    // The next group, from there, with a second view whose position is stale.
    let units: Vec<_> = streams[..2].iter().map(|s| unit(s, 1, 1)).collect();
    let outcome = commit(
        &*store,
        &units,
        &[Some(2), Some(2)],
        vec![
            view(v, 3, 3, vec![put(m, "g-a", json!({"v": 2}))]),
            view(
                "conf.OtherView",
                2,
                3,
                vec![put("conf.Other", "x", json!({}))],
            ),
        ],
    )
    .await;
    let receipts = committed(&outcome);
    assert_eq!(receipts[1].events[0].position, Position(5));
    assert_eq!(outcome.projected, vec![true, false]);
    assert_eq!(store.get_position(v).await.unwrap(), Position(5));
    assert_eq!(model(&*store, m, "g-a").await, Some(json!({"v": 2})));
    assert_eq!(model(&*store, "conf.Other", "x").await, None);
    assert_eq!(
        store.get_position("conf.OtherView").await.unwrap(),
        Position::START
    );
}

/// A projection whose assumption fails writes nothing, while every unit that can commits: a
/// unit of the group that conflicts (refused, the others commit), a resent message id
/// (answered with its receipt), another stream's event after the view's `after`, a first
/// event at another stream sequence than assumed.
pub async fn a_group_whose_assumption_fails_commits_its_units_only(store: Arc<dyn Store>) {
    let (v, m) = ("conf.GroupView", "conf.Group");
    let a = stream("conf.Account", "f-a");
    let b = stream("conf.Account", "f-b");

    // A unit at a stale sequence is refused; the others commit; the view writes nothing.
    let units = vec![unit(&a, 0, 1), unit(&b, 3, 1)];
    let outcome = commit(
        &*store,
        &units,
        &[Some(1), Some(1)],
        vec![view(v, 0, 0, vec![put(m, "f", json!({"v": 1}))])],
    )
    .await;
    assert!(outcome.units[0].is_ok(), "{:?}", outcome.units[0]);
    let mut answers = outcome.units.into_iter();
    let first = answers.next().unwrap().unwrap();
    assert_conflict(answers.next().unwrap(), &b, 3);
    assert_eq!(outcome.projected, vec![false]);
    assert_eq!(model(&*store, m, "f").await, None);
    assert_eq!(store.get_position(v).await.unwrap(), Position::START);
    let head = first.events[0].position;

    // A resent message id is answered with its receipt; the view writes nothing.
    let mut resent = unit(&a, 0, 1);
    resent.command.envelope.message_id = units[0].command.envelope.message_id;
    let units = vec![resent, unit(&b, 0, 1)];
    let outcome = commit(
        &*store,
        &units,
        &[Some(1), Some(1)],
        vec![view(v, 0, head.0, vec![put(m, "f", json!({"v": 2}))])],
    )
    .await;
    let duplicate = outcome.units[0]
        .as_ref()
        .expect("the resent unit's receipt");
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.sequence, first.sequence);
    assert!(outcome.units[1].as_ref().is_ok_and(|r| !r.duplicate));
    assert_eq!(outcome.projected, vec![false]);
    assert_eq!(model(&*store, m, "f").await, None);

    // Another stream's event committed after the view's `after`.
    let head = store.head().await.unwrap();
    store.set_position(v, head).await.unwrap();
    store
        .commit(unit(&stream("conf.Account", "f-c"), 0, 1))
        .await
        .unwrap();
    let outcome = commit(
        &*store,
        &[unit(&a, 1, 1)],
        &[Some(2)],
        vec![view(v, head.0, head.0, vec![put(m, "f", json!({"v": 3}))])],
    )
    .await;
    assert!(outcome.units[0].is_ok());
    assert_eq!(outcome.projected, vec![false]);
    assert_eq!(model(&*store, m, "f").await, None);
    assert_eq!(store.get_position(v).await.unwrap(), head);

    // The first event lands at stream sequence 3, not the 5 the view assumed.
    let head = store.head().await.unwrap();
    store.set_position(v, head).await.unwrap();
    let outcome = commit(
        &*store,
        &[unit(&a, 2, 1)],
        &[Some(5)],
        vec![view(v, head.0, head.0, vec![put(m, "f", json!({"v": 4}))])],
    )
    .await;
    let receipt = outcome.units[0].as_ref().unwrap();
    assert_eq!(receipt.events[0].sequence, Sequence(3));
    assert_eq!(outcome.projected, vec![false]);
    assert_eq!(model(&*store, m, "f").await, None);
    assert_eq!(store.get_position(v).await.unwrap(), head);
}

/// Units of any shape commit in group order, each checked as alone: several events, follow-up
/// commands, no entity state, no events, and one stream twice (the second unit after the
/// first); the view's projection of them all applies.
pub async fn a_group_of_any_shape_commits_in_order(store: Arc<dyn Store>) {
    let (v, m) = ("conf.GroupView", "conf.Group");
    let a = stream("conf.Account", "s-a");
    let b = stream("conf.Account", "s-b");
    let c = stream("conf.Account", "s-c");
    let mut with_outbox = unit(&b, 0, 1);
    with_outbox.outbox.push(outbox(&c, 1));
    let mut stateless = unit(&c, 0, 1);
    stateless.entity = None;
    let units = vec![
        unit(&a, 0, 2),
        with_outbox,
        unit(&a, 1, 1),
        stateless,
        unit(&b, 1, 0),
    ];
    let outcome = commit(
        &*store,
        &units,
        &[Some(1), Some(1), Some(3), Some(1), None],
        vec![view(v, 0, 0, vec![put(m, "s", json!({"v": 5}))])],
    )
    .await;
    let receipts = committed(&outcome);
    let positions: Vec<u64> = receipts
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.position.0))
        .collect();
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
    assert_eq!(receipts[2].sequence, Sequence(2));
    assert_eq!(receipts[2].events[0].sequence, Sequence(3));
    assert_eq!(receipts[4].sequence, Sequence(2));
    assert!(receipts[4].events.is_empty());
    assert_eq!(outcome.projected, vec![true]);
    assert_eq!(store.get_position(v).await.unwrap(), Position(5));
    assert_eq!(model(&*store, m, "s").await, Some(json!({"v": 5})));
    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message.envelope.stream, c);
    // The same stream twice at the same sequence: the second is a conflict.
    let outcome = commit(
        &*store,
        &[unit(&a, 2, 1), unit(&a, 2, 1)],
        &[Some(4), Some(4)],
        vec![],
    )
    .await;
    assert!(outcome.units[0].is_ok());
    assert!(matches!(outcome.units[1], Err(StoreError::Conflict { .. })));
    assert!(outcome.projected.is_empty());
}

/// A group without projections (the views run elsewhere), of one event per unit on distinct
/// streams and of any other shape: units commit in group order, their events at consecutive
/// positions; a unit at a stale sequence is refused while the others commit, and a resent
/// message id is answered with its first receipt.
pub async fn a_group_without_views_commits_its_units(store: Arc<dyn Store>) {
    let a = stream("conf.Account", "w-a");
    let b = stream("conf.Account", "w-b");
    let c = stream("conf.Account", "w-c");
    let units = vec![unit(&a, 0, 1), unit(&b, 0, 1), unit(&c, 0, 1)];
    let outcome = commit(&*store, &units, &[Some(1), Some(1), Some(1)], vec![]).await;
    assert!(outcome.projected.is_empty());
    let receipts = committed(&outcome);
    let positions: Vec<u64> = receipts
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.position.0))
        .collect();
    let first = positions[0];
    assert_eq!(positions, (first..first + 3).collect::<Vec<_>>());
    assert_eq!(all_events(&*store).await.len(), 3);

    let mut resent = unit(&a, 0, 1);
    resent.command.envelope.message_id = units[0].command.envelope.message_id;
    // Two events in a unit: the general shape.
    let outcome = commit(
        &*store,
        &[resent, unit(&b, 0, 1), unit(&c, 1, 2)],
        &[Some(1), Some(1), Some(2)],
        vec![],
    )
    .await;
    let duplicate = outcome.units[0]
        .as_ref()
        .expect("the resent unit's receipt");
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.sequence, receipts[0].sequence);
    let mut answers = outcome.units.into_iter().skip(1);
    assert_conflict(answers.next().unwrap(), &b, 0);
    let last = answers.next().unwrap().expect("the third unit commits");
    assert_eq!(last.sequence, Sequence(2));
    let positions: Vec<u64> = last.events.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, vec![first + 3, first + 4]);
    assert_eq!(last.events[1].sequence, Sequence(3));
    assert_eq!(all_events(&*store).await.len(), 5);
}
