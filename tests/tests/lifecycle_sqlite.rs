//! Deleting and archiving streams on a `SqliteStore` file.

sourceflow_tests::lifecycle_suite!(sourceflow_tests::backends::sqlite_file);
