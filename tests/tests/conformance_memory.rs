//! The store conformance suite on `MemoryStore`, the reference the SQL stores are held to.

use sourceflow::MemoryStore;
use sourceflow_tests::conformance::Fixture;
use sourceflow_tests::conformance_suite;

async fn memory() -> Option<Fixture> {
    Some(Fixture::new(MemoryStore::new()))
}

conformance_suite!(memory, memory());
