//! Forgetting a subject, and the store as stored.

use std::sync::Arc;

use futures_core::Stream;

use super::SourceFlow;
use crate::base::error::Error;
use crate::base::message::{Position, RecordedEvent};
use crate::store::Store;

impl SourceFlow {
    /// Forgets `subject` for good: deletes its key, so every [`Personal`] field of that subject
    /// reads as redacted from now on, on every read path (entity loads, replay, `state_at`,
    /// `verify`, views' catch-up and rebuild, `subscribe`, remote consumers, exports), and any
    /// such field written later is stored redacted. The stored data keeps only ciphertext no
    /// key opens. This process's cached entity states and view models are dropped; other
    /// processes sharing the store stop reading the subject within their key cache time
    /// ([`Builder::key_cache`](crate::Builder::key_cache)).
    ///
    /// Forgetting a subject that never had a key marks it forgotten all the same.
    ///
    /// # Errors
    /// [`Error::Store`] if the key store fails (nothing is forgotten), or if the store keeps no
    /// subject keys.
    ///
    /// [`Personal`]: crate::personal::Personal
    pub async fn forget(&self, subject: &str) -> Result<(), Error> {
        self.inner.sealed.forget(subject).await?;
        self.inner.write.entities.clear();
        self.inner.read.drop_caches().await;
        tracing::info!(subject, "subject forgotten");
        Ok(())
    }

    /// The store as stored: personal fields sealed. What a transport that forwards the log
    /// publishes (so that its copies hold no plaintext either), and what a backup holds.
    /// [`store`](Self::store) is the same store with personal fields opened.
    pub fn raw_store(&self) -> &Arc<dyn Store> {
        self.inner.sealed.inner()
    }

    /// [`subscribe`](Self::subscribe) with personal fields as stored (sealed): what a
    /// transport that forwards the log publishes, so that its copies hold no plaintext and a
    /// receiver that consumes them after [`forget`](Self::forget) reads them redacted.
    pub fn subscribe_as_stored(
        &self,
        from: Position,
    ) -> impl Stream<Item = Result<RecordedEvent, Error>> {
        let store = self.raw_store().clone();
        self.inner.read.clone().subscribe_to(store, from)
    }
}
