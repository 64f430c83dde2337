//! The subject keys of a [`MemoryStore`]: a map beside the log, `None` for a forgotten subject.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::keys::{KeyState, KeyStore, SubjectKey};
use crate::store::StoreError;

#[async_trait]
impl KeyStore for MemoryStore {
    async fn keys(&self, subjects: &[String]) -> Result<Vec<KeyState>, StoreError> {
        let inner = self.lock();
        let keys = &inner.keys;
        Ok(subjects
            .iter()
            .map(|subject| match keys.get(subject) {
                Some(Some(key)) => KeyState::Active(key.clone()),
                Some(None) => KeyState::Forgotten,
                None => KeyState::Unknown,
            })
            .collect())
    }

    async fn key_or_insert(
        &self,
        subject: &str,
        fresh: SubjectKey,
    ) -> Result<KeyState, StoreError> {
        let mut inner = self.lock();
        let keys = &mut inner.keys;
        Ok(
            match keys.entry(subject.to_owned()).or_insert(Some(fresh)) {
                Some(key) => KeyState::Active(key.clone()),
                None => KeyState::Forgotten,
            },
        )
    }

    fn in_units(&self) -> bool {
        true
    }

    async fn forget(&self, subject: &str) -> Result<(), StoreError> {
        self.lock().keys.insert(subject.to_owned(), None);
        Ok(())
    }
}
