//! Leases ([`Leases`], offered through [`Store::leases`]): one holder at a time, until its
//! time runs out or it gives the lease up; renewing keeps it; concurrent takers get it once;
//! names (exact text) are independent.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sourceflow::store::{Leases, Store};
use uuid::Uuid;

/// The store's leases; the scenarios of this group need them.
fn leases(store: &Arc<dyn Store>) -> &dyn Leases {
    store
        .leases()
        .expect("the `lease` group needs a store whose `leases()` returns `Some`")
}

/// An instant `seconds` after a fixed start (whole milliseconds, as stores keep them).
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).expect("a valid instant")
        + Duration::seconds(seconds)
}

/// A holder keeps a lease against others until its time runs out, renewing moves that time,
/// and once it has run out another holder takes the lease.
pub async fn a_lease_has_one_holder_until_its_time_runs_out(store: Arc<dyn Store>) {
    let leases = leases(&store);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(leases.hold("reader", a, at(0), at(10)).await.unwrap());
    assert!(
        !leases.hold("reader", b, at(1), at(11)).await.unwrap(),
        "a held lease is refused to another holder"
    );
    assert!(
        leases.hold("reader", a, at(5), at(15)).await.unwrap(),
        "its holder renews it"
    );
    assert!(
        !leases.hold("reader", b, at(12), at(22)).await.unwrap(),
        "the renewal moved its end"
    );
    assert!(
        leases.hold("reader", b, at(15), at(25)).await.unwrap(),
        "a lease whose time ran out goes to the next taker"
    );
    assert!(
        !leases.hold("reader", a, at(16), at(26)).await.unwrap(),
        "the holder whose time ran out has lost it"
    );
}

/// A released lease is free at once; a release by someone who does not hold it changes
/// nothing.
pub async fn a_released_lease_is_free_at_once(store: Arc<dyn Store>) {
    let leases = leases(&store);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert!(leases.hold("reader", a, at(0), at(10)).await.unwrap());
    leases.release("reader", a).await.unwrap();
    assert!(
        leases.hold("reader", b, at(1), at(11)).await.unwrap(),
        "released, the lease goes to the next taker before its time would have run out"
    );
    leases.release("reader", a).await.unwrap();
    leases.release("absent", a).await.unwrap();
    assert!(
        !leases.hold("reader", c, at(2), at(12)).await.unwrap(),
        "a release by a former holder leaves the current one holding it"
    );
}

/// Of many concurrent takers of a free lease, exactly one gets it.
pub async fn concurrent_takers_get_one_lease(store: Arc<dyn Store>) {
    let takers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                leases(&store)
                    .hold("contended", Uuid::new_v4(), at(0), at(10))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut held = 0;
    for taker in takers {
        held += usize::from(taker.await.unwrap());
    }
    assert_eq!(held, 1, "one taker holds the lease");
}

/// Leases of different names have their own holders.
pub async fn leases_are_independent_by_name(store: Arc<dyn Store>) {
    let leases = leases(&store);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(leases.hold("views: A", a, at(0), at(10)).await.unwrap());
    assert!(leases.hold("views: B", b, at(0), at(10)).await.unwrap());
    assert!(
        leases.hold("views: a", b, at(0), at(10)).await.unwrap(),
        "names are exact text"
    );
    assert!(!leases.hold("views: B", a, at(1), at(11)).await.unwrap());
    assert!(!leases.hold("views: A", b, at(1), at(11)).await.unwrap());
}
