//! Subject keys: where the keys that seal personal fields are kept, and forgotten.
//!
//! Every store of this workspace keeps them in a key table of its own (`sf_keys` on SQLite and
//! Postgres, a map in [`MemoryStore`](super::MemoryStore)) and hands it out through
//! [`Store::keys`](super::Store::keys); an application that keeps keys in an external key
//! management system implements [`KeyStore`] over it and gives it to the builder
//! ([`Builder::key_store`](crate::Builder::key_store)).
//!
//! A key is made the first time a subject's field is written. With the store's own key table
//! ([`KeyStore::in_units`]) it travels in that unit of work ([`UnitOfWork::keys`](super::UnitOfWork::keys))
//! and commits in the unit's transaction, or not at all: concurrent first uses, in one process
//! or several, race like any two commits, and the loser is refused with a conflict and retried
//! with the winner's key. Elsewhere (an external key management system, and writes outside a
//! unit of work) [`KeyStore::key_or_insert`] stores a fresh key unless the subject has one,
//! before the write that uses it; concurrent callers agree on the key stored first. Forgetting
//! deletes the key and leaves a mark, so the subject never gets a new key and its fields
//! written later are stored redacted.

use std::fmt;

use async_trait::async_trait;

use crate::base::error::StoreError;
pub use crate::codec::personal::{KeyState, SubjectKey};

/// Where subject keys are kept: the store's own key table, or an external key management
/// system.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The keys of `subjects`, in the same order.
    async fn keys(&self, subjects: &[String]) -> Result<Vec<KeyState>, StoreError>;

    /// The key of `subject`; if it has none, `fresh` is stored as its key and returned. A
    /// forgotten subject stays forgotten ([`KeyState::Forgotten`]). Concurrent callers get
    /// the same key.
    async fn key_or_insert(&self, subject: &str, fresh: SubjectKey)
        -> Result<KeyState, StoreError>;

    /// Deletes `subject`'s key for good and marks the subject forgotten (also when it never had
    /// a key, so none is made for it later).
    async fn forget(&self, subject: &str) -> Result<(), StoreError>;

    /// Whether this is the key table of the store it is handed out by, committing a unit of
    /// work's new keys ([`UnitOfWork::keys`](super::UnitOfWork::keys)) in the unit's own
    /// transaction. `false` (the default, and right for an external key management system):
    /// new keys are stored by [`key_or_insert`](Self::key_or_insert) before the unit.
    fn in_units(&self) -> bool {
        false
    }
}
