//! The read side: delivering committed events to views and aggregates, catching up, rebuilding
//! and subscribing.

pub(crate) mod subscriber;
