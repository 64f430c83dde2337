//! Subject keys ([`KeyStore`], offered through [`Store::keys`]): a subject has no key until
//! its first use stores one, concurrent first uses agree on one key, and a forgotten subject
//! never gets a key again. For a key table that commits keys with units of work
//! ([`KeyStore::in_units`]): a unit's new keys commit with it or not at all, and a unit whose
//! subject has another key already is refused with a conflict, writing nothing.

use std::collections::HashSet;
use std::sync::Arc;

use sourceflow::personal::{KeyState, KeyStore, NewKey, SubjectKey};
use sourceflow::store::{Store, StoreError, UnitOfWork};
use sourceflow::Sequence;

use crate::records::{assert_conflict, stream, unit};

/// The store's key table; the scenarios of this group need one.
fn keys(store: &Arc<dyn Store>) -> &dyn KeyStore {
    store
        .keys()
        .expect("the `keys` group needs a store whose `keys()` returns `Some`")
}

fn active(state: KeyState) -> SubjectKey {
    match state {
        KeyState::Active(key) => key,
        other => panic!("expected a key, got {other:?}"),
    }
}

/// No key before the first use; the first stored key is the subject's from then on.
pub async fn a_subject_has_no_key_until_its_first_use(store: Arc<dyn Store>) {
    let keys = keys(&store);
    let subjects = ["cust-1".to_owned(), "cust-2".to_owned()];
    assert_eq!(
        keys.keys(&subjects).await.unwrap(),
        vec![KeyState::Unknown, KeyState::Unknown]
    );
    let first = SubjectKey::generate();
    let stored = active(keys.key_or_insert("cust-1", first.clone()).await.unwrap());
    assert_eq!(stored, first, "the first key given is stored");
    let again = active(
        keys.key_or_insert("cust-1", SubjectKey::generate())
            .await
            .unwrap(),
    );
    assert_eq!(again, first, "a subject keeps its key");
    assert_eq!(
        keys.keys(&subjects).await.unwrap(),
        vec![KeyState::Active(first), KeyState::Unknown]
    );
}

/// Subjects are compared exactly: case, non-ASCII text and long ids are subjects of their own.
pub async fn subjects_are_exact_text(store: Arc<dyn Store>) {
    let keys = keys(&store);
    let subjects = [
        "Kunde-Ø".to_owned(),
        "kunde-ø".to_owned(),
        "x".repeat(500),
        "kunde-ø ".to_owned(),
    ];
    let mut stored = Vec::new();
    for subject in &subjects {
        stored.push(active(
            keys.key_or_insert(subject, SubjectKey::generate())
                .await
                .unwrap(),
        ));
    }
    let distinct: HashSet<[u8; 32]> = stored.iter().map(|k| *k.as_bytes()).collect();
    assert_eq!(
        distinct.len(),
        subjects.len(),
        "every subject has its own key"
    );
    let read: Vec<SubjectKey> = keys
        .keys(&subjects)
        .await
        .unwrap()
        .into_iter()
        .map(active)
        .collect();
    assert_eq!(read, stored);
}

/// Sixteen first uses at once store one key, and every caller gets it.
pub async fn concurrent_first_uses_agree_on_one_key(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            keys(&store)
                .key_or_insert("cust-race", SubjectKey::generate())
                .await
                .unwrap()
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        seen.insert(*active(task.await.unwrap()).as_bytes());
    }
    assert_eq!(seen.len(), 1, "concurrent first uses got different keys");
    let stored = active(
        keys(&store)
            .keys(&["cust-race".to_owned()])
            .await
            .unwrap()
            .remove(0),
    );
    assert!(seen.contains(stored.as_bytes()));
}

/// Forgetting deletes the key for good: no new key is made, also for a subject forgotten
/// before it ever had one, and forgetting twice is no error.
pub async fn a_forgotten_subject_never_gets_a_key_again(store: Arc<dyn Store>) {
    let keys = keys(&store);
    keys.key_or_insert("cust-1", SubjectKey::generate())
        .await
        .unwrap();
    keys.key_or_insert("cust-2", SubjectKey::generate())
        .await
        .unwrap();
    keys.forget("cust-1").await.unwrap();
    keys.forget("cust-1").await.unwrap();
    keys.forget("never-seen").await.unwrap();
    for subject in ["cust-1", "never-seen"] {
        assert_eq!(
            keys.key_or_insert(subject, SubjectKey::generate())
                .await
                .unwrap(),
            KeyState::Forgotten,
            "{subject} got a new key"
        );
    }
    let states = keys
        .keys(&[
            "cust-1".to_owned(),
            "never-seen".to_owned(),
            "cust-2".to_owned(),
        ])
        .await
        .unwrap();
    assert_eq!(states[0], KeyState::Forgotten);
    assert_eq!(states[1], KeyState::Forgotten);
    assert!(
        matches!(states[2], KeyState::Active(_)),
        "other subjects keep theirs"
    );
}

/// A unit of `stream` at `expected` carrying the new key `key` of `subject`.
fn keyed(
    stream: &sourceflow::StreamId,
    expected: u64,
    subject: &str,
    key: &SubjectKey,
) -> UnitOfWork {
    let mut unit = unit(stream, expected, 1);
    unit.keys.push(NewKey {
        subject: subject.to_owned(),
        key: key.clone(),
    });
    unit
}

/// Whether the store commits keys with units. When it does not, what it must do instead is
/// checked here: a unit carrying keys commits as any unit does and its keys are not stored
/// (the runtime stores new keys through [`KeyStore::key_or_insert`] for such a store, and never
/// hands it a unit with keys); the caller's scenario then has nothing more to check.
async fn commits_keys_with_units(store: &Arc<dyn Store>, stream_id: &str) -> bool {
    if keys(store).in_units() {
        return true;
    }
    let s = stream("conf.Keyed", stream_id);
    let receipt = store
        .commit(keyed(&s, 0, "cust-ignored", &SubjectKey::generate()))
        .await
        .unwrap();
    assert_eq!(receipt.sequence, Sequence(1));
    assert_eq!(
        keys(store)
            .keys(&["cust-ignored".to_owned()])
            .await
            .unwrap(),
        [KeyState::Unknown],
        "a key table that does not commit keys with units stored one"
    );
    false
}

/// A unit's new key commits with the unit: refused for a stale sequence, it leaves no key;
/// committed, the key is the subject's; a resent unit is a duplicate, not a conflict.
pub async fn a_units_key_commits_with_it_or_not_at_all(store: Arc<dyn Store>) {
    if !commits_keys_with_units(&store, "ignored-one").await {
        return;
    }
    let s = stream("conf.Keyed", "one");
    store.commit(unit(&s, 0, 1)).await.unwrap();
    let key = SubjectKey::generate();
    assert_conflict(store.commit(keyed(&s, 0, "cust-unit", &key)).await, &s, 0);
    assert_eq!(
        keys(&store).keys(&["cust-unit".to_owned()]).await.unwrap(),
        [KeyState::Unknown],
        "a refused unit left its key"
    );
    let unit = keyed(&s, 1, "cust-unit", &key);
    let receipt = store.commit(unit.clone()).await.unwrap();
    assert_eq!(receipt.sequence, Sequence(2));
    assert_eq!(
        keys(&store).keys(&["cust-unit".to_owned()]).await.unwrap(),
        [KeyState::Active(key)]
    );
    let again = store.commit(unit).await.unwrap();
    assert!(
        again.duplicate,
        "a resent unit is answered with its receipt"
    );
}

/// Two units carrying different first keys for one subject (first uses in two processes):
/// the first to commit wins, the other is refused with a conflict and writes nothing; a unit
/// carrying the winning key, or a key for a forgotten subject, commits.
pub async fn a_unit_whose_subject_has_another_key_is_refused(store: Arc<dyn Store>) {
    if !commits_keys_with_units(&store, "ignored-two").await {
        return;
    }
    let (a, b) = (stream("conf.Keyed", "a"), stream("conf.Keyed", "b"));
    let (winner, loser) = (SubjectKey::generate(), SubjectKey::generate());
    store
        .commit(keyed(&a, 0, "cust-both", &winner))
        .await
        .unwrap();
    assert_conflict(store.commit(keyed(&b, 0, "cust-both", &loser)).await, &b, 0);
    assert_eq!(store.last_sequence(&b).await.unwrap(), Sequence::ZERO);
    assert!(store
        .read_stream_range(&b, Sequence(1), Sequence(100))
        .await
        .unwrap()
        .is_empty());
    store
        .commit(keyed(&b, 0, "cust-both", &winner))
        .await
        .unwrap();
    assert_eq!(
        keys(&store).keys(&["cust-both".to_owned()]).await.unwrap(),
        [KeyState::Active(winner)]
    );
    keys(&store).forget("cust-gone").await.unwrap();
    let c = stream("conf.Keyed", "c");
    let committed = store.commit(keyed(&c, 0, "cust-gone", &loser)).await;
    assert!(
        !matches!(committed, Err(StoreError::Conflict { .. })),
        "{committed:?}"
    );
    committed.unwrap();
    assert_eq!(
        keys(&store).keys(&["cust-gone".to_owned()]).await.unwrap(),
        [KeyState::Forgotten],
        "a forgotten subject stays forgotten"
    );
}
