//! Shared test code: runtime scenarios and the store conformance suite, written once and run
//! against every backend.

pub mod backends;
pub mod conformance;
pub mod scenarios;
