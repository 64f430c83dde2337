//! The scheduled-command scenarios on a `MemoryStore`.

sourceflow_tests::deadline_suite!(sourceflow_tests::backends::memory);
