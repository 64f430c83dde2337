//! The runtime scenarios on `MemoryStore`.

sourceflow_tests::runtime_suite!(sourceflow_tests::backends::memory);
