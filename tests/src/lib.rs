//! Shared test code: runtime scenarios written once and run against every backend, fresh
//! backends for them, and the conformance kit's record builders for backend-specific tests.
//!
//! The Postgres tests are ignored unless `SOURCEFLOW_PG_URL` is set when they are built
//! (`cfg(sourceflow_pg)`, set by `build.rs`).

pub mod backends;
pub mod conformance;
pub mod deadlines;
pub mod lifecycle;
pub mod members;
pub mod scenarios;
