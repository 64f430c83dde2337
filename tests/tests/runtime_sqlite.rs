//! The runtime scenarios on a `SqliteStore` file.

sourceflow_tests::runtime_suite!(sourceflow_tests::backends::sqlite_file);
