//! `BTreeStore` against the storage contract: the `core` group of `sourceflow-testkit`.
//!
//! The store keeps the provided `commit_inline` and implements no `StoreAdmin`, so the `inline`
//! and `admin` groups do not apply to it.

use btree_store::BTreeStore;
use sourceflow_testkit::{store_conformance, Fixture};

store_conformance! {
    mod conformance {
        fixture: Fixture::new(BTreeStore::new()),
        groups: [core],
    }
}
