//! The scheduled-command scenarios on a `SqliteStore` file.

sourceflow_tests::deadline_suite!(sourceflow_tests::backends::sqlite_file);
