//! Subject keys: where the keys that seal personal fields are kept, and forgotten.
//!
//! Every store of this workspace keeps them in a key table of its own (`sf_keys` on SQLite and
//! Postgres, a map in [`MemoryStore`](super::MemoryStore)) and hands it out through
//! [`Store::keys`](super::Store::keys); an application that keeps keys in an external key
//! management system implements [`KeyStore`] over it and gives it to the builder
//! ([`Builder::key_store`](crate::Builder::key_store)).
//!
//! A key is made the first time a subject's field is written: [`KeyStore::key_or_insert`]
//! stores a fresh key unless the subject has one (or was forgotten), in its own transaction
//! before the unit of work that uses it. Concurrent first uses, in one process or several,
//! agree on the key that was stored first; a key whose unit of work then fails protects
//! nothing and is harmless. Forgetting deletes the key and leaves a mark, so the subject never
//! gets a new key and its fields written later are stored redacted.

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
}
