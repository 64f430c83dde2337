//! The scheduled-command scenarios on a `PostgresStore`, each in a schema of its own.
//!
//! Ignored unless `SOURCEFLOW_PG_URL` is set when the tests are built.

sourceflow_tests::deadline_suite!(
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    sourceflow_tests::backends::postgres
);
