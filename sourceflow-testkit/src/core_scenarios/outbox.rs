//! The outbox: follow-up commands from commits and projections, pending until removed.

use std::sync::Arc;

use sourceflow::store::{ProjectionCommit, Store};
use sourceflow::Position;

use crate::records::{json_of, outbox, stream, unit};

/// Outbox entries from commits and projections wait in order until removed.
pub async fn outbox_pending_and_remove(store: Arc<dyn Store>) {
    let s = stream("conf.Account", "a");
    let target = stream("conf.Account", "t");
    let sent = [outbox(&target, 1), outbox(&target, 2), outbox(&s, 3)];
    let mut u = unit(&s, 0, 1);
    u.outbox = sent[..2].to_vec();
    store.commit(u).await.unwrap();
    store
        .commit_projection(ProjectionCommit {
            handler: "conf.Reactor".into(),
            expected: Position::START,
            position: Position(1),
            models: vec![],
            outbox: vec![sent[2].clone()],
        })
        .await
        .unwrap();

    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 3);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    for (p, s) in pending.iter().zip(&sent) {
        assert_eq!(p.message.envelope, s.envelope);
        assert_eq!(json_of(&p.message.payload), json_of(&s.payload));
    }
    assert_eq!(store.outbox_pending(2).await.unwrap().len(), 2);
    store
        .outbox_remove(&[pending[0].id, pending[2].id])
        .await
        .unwrap();
    let left = store.outbox_pending(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, pending[1].id);
    store.outbox_remove(&[]).await.unwrap();
    store
        .outbox_remove(&[pending[0].id, u64::MAX >> 2])
        .await
        .unwrap();
    store.outbox_remove(&[pending[1].id]).await.unwrap();
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
}
