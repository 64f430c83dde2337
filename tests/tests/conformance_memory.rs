//! The store conformance suite on `MemoryStore`, the reference the SQL stores are held to.

use sourceflow::MemoryStore;
use sourceflow_testkit::{store_conformance, Fixture};

store_conformance! {
    mod memory {
        fixture: Fixture::new(MemoryStore::new()),
        groups: [core, inline, admin, schedule, keys, lease, lifecycle],
    }
}
