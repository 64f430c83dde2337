//! The runtime scenarios on `PostgresStore` (when `SOURCEFLOW_PG_URL` is set).

sourceflow_tests::runtime_suite!(sourceflow_tests::backends::postgres);
