//! Deleting and archiving streams on `PostgresStore`, ignored unless `SOURCEFLOW_PG_URL` is set
//! when the tests are built.

sourceflow_tests::lifecycle_suite!(
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    sourceflow_tests::backends::postgres
);
