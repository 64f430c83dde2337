//! The leases of a [`MemoryStore`]: a map of holders and the end of their time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::store::lease::Leases;
use crate::store::StoreError;

#[async_trait]
impl Leases for MemoryStore {
    async fn hold(
        &self,
        name: &str,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let lease = inner
            .leases
            .entry(name.to_owned())
            .or_insert((holder, until));
        if lease.0 == holder || lease.1 <= now {
            *lease = (holder, until);
            return Ok(true);
        }
        Ok(false)
    }

    async fn release(&self, name: &str, holder: Uuid) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.leases.get(name).is_some_and(|(h, _)| *h == holder) {
            inner.leases.remove(name);
        }
        Ok(())
    }
}
