//! Deleting and archiving streams on a `MemoryStore`.

sourceflow_tests::lifecycle_suite!(sourceflow_tests::backends::memory);
