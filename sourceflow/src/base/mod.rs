//! The leaves every other layer builds on: messages and their ids, envelopes and receipts,
//! validation, and the error types. Nothing here knows about stores, handlers or the runtime.

pub mod clock;
pub mod error;
pub mod lifecycle;
pub mod message;
pub mod personal;
pub mod validate;
