//! The `inline` group: [`Store::commit_inline`] writing a view's batch in the same
//! transaction as the command whose events it projects, when the batch's assumptions hold.
//!
//! For stores that override `commit_inline`. The provided implementation writes no batch
//! (every flag `false`), which is always correct: the runtime then projects the events after
//! the commit. A store that keeps it leaves this group out.

use std::sync::Arc;

use serde_json::json;
use sourceflow::store::{InlineProjection, ModelWrite, Store};
use sourceflow::{Envelope, Position, Sequence, StreamId};

use crate::records::{
    all_events, assert_conflict, assert_same_events, delete, model, put, seed_models, stream, unit,
};

/// Why the first batch of the group may not apply.
const NOT_APPLIED: &str = "commit_inline wrote no batch where every assumption held; a store \
                           that keeps the provided commit_inline leaves the `inline` group out";

/// An inline projection for handler `handler` assuming the view is at `expected` (and has
/// passed `after`) and the unit's first event lands at stream sequence `first`.
fn inline(
    handler: &str,
    expected: u64,
    after: u64,
    first: u64,
    models: Vec<ModelWrite>,
) -> InlineProjection {
    InlineProjection {
        handler: handler.to_owned().into(),
        expected: Position(expected),
        after: Position(after),
        first_sequence: Sequence(first),
        models,
    }
}

/// `commit_inline` writes a view's batch in the unit's transaction when the view's position,
/// the unit's first position and its first stream sequence are what the batch assumed; the
/// view's position becomes the unit's last event's.
pub async fn inline_projection_commits_with_the_unit(store: Arc<dyn Store>) {
    let (view, m) = ("conf.InlineView", "conf.Inline");
    let s = stream("conf.Account", "inline");
    seed_models(&*store, vec![put(m, "gone", json!({"v": 0}))]).await;
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 0, 2),
            vec![inline(
                view,
                0,
                0,
                1,
                vec![put(m, "a", json!({"v": 1})), delete(m, "gone")],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true], "{NOT_APPLIED}");
    assert!(!receipt.duplicate);
    assert_eq!(receipt.events.len(), 2);
    let last = receipt.events[1].position;
    assert_eq!(store.get_position(view).await.unwrap(), last);
    assert_eq!(model(&*store, m, "a").await, Some(json!({"v": 1})));
    assert_eq!(model(&*store, m, "gone").await, None);

    // The next command's batch, from there.
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 1, 1),
            vec![inline(
                view,
                last.0,
                last.0,
                3,
                vec![put(m, "a", json!({"v": 2}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    assert_eq!(receipt.events[0].sequence, Sequence(3));
    assert_eq!(
        store.get_position(view).await.unwrap(),
        receipt.events[0].position
    );
    assert_eq!(model(&*store, m, "a").await, Some(json!({"v": 2})));
    assert_eq!(
        store
            .load_commands(&s, Sequence(1), None)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A batch whose assumptions no longer hold writes nothing, while the unit still commits:
/// the view's position moved, other events came in between, or the stream's event sequence
/// is not the one assumed. Several views decide independently; a unit without events applies
/// no batch.
pub async fn inline_projection_is_refused_when_an_assumption_fails(store: Arc<dyn Store>) {
    let (view, m) = ("conf.InlineView", "conf.Inline");
    let s = stream("conf.Account", "refused");

    // The view's stored position is not the one the batch started from.
    store.set_position(view, Position(7)).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 0, 1),
            vec![inline(view, 0, 0, 1, vec![put(m, "x", json!({"v": 1}))])],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(model(&*store, m, "x").await, None);
    assert_eq!(store.get_position(view).await.unwrap(), Position(7));
    assert_eq!(
        store
            .load_commands(&s, Sequence(1), None)
            .await
            .unwrap()
            .len(),
        1,
        "the unit itself committed"
    );
    assert_same_events(&all_events(&*store).await, &receipt.events);
    let head = receipt.events[0].position;

    // Another stream's events committed after the view's `after`: the batch would skip them.
    store.set_position(view, head).await.unwrap();
    let other = stream("conf.Account", "other");
    store.commit(unit(&other, 0, 1)).await.unwrap();
    let (_, applied) = store
        .commit_inline(
            unit(&s, 1, 1),
            vec![inline(
                view,
                head.0,
                head.0,
                2,
                vec![put(m, "x", json!({"v": 2}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(model(&*store, m, "x").await, None);
    assert_eq!(store.get_position(view).await.unwrap(), head);

    // The stream's events are not where the batch assumed (sequence 3 is next, not 5).
    let now = store.head().await.unwrap();
    store.set_position(view, now).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 2, 1),
            vec![inline(
                view,
                now.0,
                now.0,
                5,
                vec![put(m, "x", json!({"v": 3}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(receipt.events[0].sequence, Sequence(3));
    assert_eq!(model(&*store, m, "x").await, None);
    assert_eq!(store.get_position(view).await.unwrap(), now);

    // Two views: one holds, one started from a stale position.
    let now = store.head().await.unwrap();
    store.set_position(view, now).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 3, 1),
            vec![
                inline(view, now.0, now.0, 4, vec![put(m, "x", json!({"v": 4}))]),
                inline(
                    "conf.OtherView",
                    3,
                    now.0,
                    4,
                    vec![put("conf.Other", "y", json!({}))],
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true, false]);
    assert_eq!(model(&*store, m, "x").await, Some(json!({"v": 4})));
    assert_eq!(model(&*store, "conf.Other", "y").await, None);
    assert_eq!(
        store.get_position(view).await.unwrap(),
        receipt.events[0].position
    );
    assert_eq!(
        store.get_position("conf.OtherView").await.unwrap(),
        Position::START
    );

    // A unit with no events carries no batch.
    let now = store.head().await.unwrap();
    store.set_position(view, now).await.unwrap();
    let (receipt, applied) = store
        .commit_inline(
            unit(&s, 4, 0),
            vec![inline(
                view,
                now.0,
                now.0,
                5,
                vec![put(m, "x", json!({"v": 5}))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false]);
    assert_eq!(receipt.sequence, Sequence(5), "the unit itself committed");
    assert!(receipt.events.is_empty());
    assert_eq!(model(&*store, m, "x").await, Some(json!({"v": 4})));
    assert_eq!(store.get_position(view).await.unwrap(), now);
}

/// A unit that conflicts writes neither itself nor its batch; a resent message id is answered
/// with the original receipt and writes no batch.
pub async fn inline_projection_is_atomic_with_the_unit(store: Arc<dyn Store>) {
    let (view, m) = ("conf.InlineView", "conf.Inline");
    let s = stream("conf.Account", "atomic");
    let (first, applied) = store
        .commit_inline(
            unit(&s, 0, 1),
            vec![inline(view, 0, 0, 1, vec![put(m, "z", json!({"v": 1}))])],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    let position = first.events[0].position;

    // Wrong expected sequence: the batch would hold, but nothing is written.
    let result = store
        .commit_inline(
            unit(&s, 0, 1),
            vec![inline(
                view,
                position.0,
                position.0,
                2,
                vec![put(m, "z", json!({"v": 2}))],
            )],
        )
        .await;
    assert_conflict(result, &s, 0);
    assert_eq!(model(&*store, m, "z").await, Some(json!({"v": 1})));
    assert_eq!(store.get_position(view).await.unwrap(), position);
    assert_eq!(store.head().await.unwrap(), position);

    // The same message again: the original receipt, no batch.
    let mut resent = unit(&s, 1, 1);
    resent.command.envelope = first_command_envelope(&*store, &s).await;
    let (receipt, applied) = store
        .commit_inline(
            resent,
            vec![inline(
                view,
                position.0,
                position.0,
                2,
                vec![put(m, "z", json!({"v": 3}))],
            )],
        )
        .await
        .unwrap();
    assert!(receipt.duplicate);
    assert_eq!(receipt.sequence, Sequence(1));
    assert_eq!(applied, vec![false]);
    assert_eq!(model(&*store, m, "z").await, Some(json!({"v": 1})));
    assert_eq!(store.get_position(view).await.unwrap(), position);
}

async fn first_command_envelope(store: &dyn Store, s: &StreamId) -> Envelope {
    store
        .load_commands(s, Sequence(1), Some(Sequence(1)))
        .await
        .unwrap()
        .remove(0)
        .envelope
}
