//! The write side: a command's way from `send` to its commit.

pub mod bus;
pub(crate) mod cache;
