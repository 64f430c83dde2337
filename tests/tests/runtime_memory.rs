//! The runtime scenarios on `MemoryStore`.

use std::sync::Arc;

use sourceflow::store::Store;
use sourceflow::MemoryStore;

sourceflow_tests::runtime_suite!(async { Some(Arc::new(MemoryStore::new()) as Arc<dyn Store>) });
