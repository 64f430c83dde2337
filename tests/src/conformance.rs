//! The builders and assertions of the store conformance suite (`sourceflow-testkit`), for the
//! backend-specific tests next to it: records written behind a store's back, schema upgrades,
//! several stores on one database.

pub use sourceflow_testkit::records::*;
pub use sourceflow_testkit::Fixture;
