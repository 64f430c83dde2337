//! The in-memory store.

/// Thread-safe in-memory store (placeholder).
#[derive(Debug, Default)]
pub struct MemoryStore;
