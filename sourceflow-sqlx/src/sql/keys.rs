//! Subject keys on both SQL backends: the [`KeyStore`] contract over the `sf_keys` table
//! (migrations `sqlite/0004_keys.sql`, `postgres/0010_keys.sql`). Lookups run on the reader
//! pool; a key's insertion and a subject's forgetting are writes handed to the backend
//! ([`KeyWrite`]: SQLite runs them on its writer thread).

use async_trait::async_trait;
use chrono::Utc;
use sourceflow::personal::{KeyState, KeyStore, SubjectKey};
use sourceflow::store::StoreError;

use super::read::{fetch, Param};
use super::rows::Columns;
use super::write::{KeyWrite, Write, Written};
use super::{write_answer, Backend, SqlStore};

/// A subject's key: no row if it never had one, an empty text if it was forgotten (both
/// backends, also on the SQLite writer's connection and in a Postgres unit's transaction).
pub(crate) const KEY_OF: &str = "SELECT COALESCE(key, '') FROM sf_keys WHERE subject = $1";

async fn key_write<B: Backend>(backend: &B, write: KeyWrite) -> Result<(), StoreError> {
    write_answer(backend, Write::Keys(write), |written| match written {
        Written::Done => Ok(()),
        other => Err(other),
    })
    .await
}

async fn key_of<B: Backend>(backend: &B, subject: &str) -> Result<KeyState, StoreError> {
    let rows = fetch(backend, "subject key", KEY_OF, &[Param::Text(subject)]).await?;
    let Some(row) = rows.first() else {
        return Ok(KeyState::Unknown);
    };
    let text = row.text(0)?;
    if text.is_empty() {
        return Ok(KeyState::Forgotten);
    }
    SubjectKey::from_text(&text)
        .map(KeyState::Active)
        .ok_or_else(|| StoreError::Corrupt(format!("the key of subject {subject:?} is not a key")))
}

#[async_trait]
impl<B: Backend> KeyStore for SqlStore<B> {
    async fn keys(&self, subjects: &[String]) -> Result<Vec<KeyState>, StoreError> {
        let mut states = Vec::with_capacity(subjects.len());
        for subject in subjects {
            states.push(key_of(self.backend(), subject).await?);
        }
        Ok(states)
    }

    async fn key_or_insert(
        &self,
        subject: &str,
        fresh: SubjectKey,
    ) -> Result<KeyState, StoreError> {
        let insert = KeyWrite::Insert {
            subject: subject.to_owned(),
            key: fresh.to_text(),
            now: Utc::now(),
        };
        key_write(self.backend(), insert).await?;
        // Whichever key was stored first (this one, or a concurrent caller's) is the key.
        key_of(self.backend(), subject).await
    }

    fn in_units(&self) -> bool {
        true
    }

    async fn forget(&self, subject: &str) -> Result<(), StoreError> {
        let forget = KeyWrite::Forget {
            subject: subject.to_owned(),
            now: Utc::now(),
        };
        key_write(self.backend(), forget).await
    }
}
