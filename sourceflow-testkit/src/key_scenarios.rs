//! Subject keys ([`KeyStore`], offered through [`Store::keys`]): a subject has no key until
//! its first use stores one, concurrent first uses agree on one key, and a forgotten subject
//! never gets a key again.

use std::collections::HashSet;
use std::sync::Arc;

use sourceflow::personal::{KeyState, KeyStore, SubjectKey};
use sourceflow::store::Store;

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
