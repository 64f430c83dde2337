//! The in-memory store's answers to inspectors: scans of its maps under the one lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::super::{Activity, Correlated, Page, StoreError, StoreInspect};
use super::MemoryStore;
use crate::base::message::{EntityId, Position, RecordedEvent, Sequence, StreamId};

#[async_trait]
impl StoreInspect for MemoryStore {
    async fn entity_state_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let inner = self.lock();
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for (stream, data) in &inner.streams {
            if data.entity.is_some() {
                *counts.entry(stream.entity_type.to_string()).or_default() += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }

    async fn stream_ids_with_prefix(
        &self,
        entity_type: &str,
        prefix: &str,
        page: Page,
    ) -> Result<Vec<EntityId>, StoreError> {
        let inner = self.lock();
        let mut ids: Vec<EntityId> = inner
            .streams
            .iter()
            .filter(|(stream, data)| {
                stream.entity_type == entity_type
                    && data.listed()
                    && stream.id.as_str().starts_with(prefix)
            })
            .map(|(stream, _)| stream.id.clone())
            .filter(|id| page.after.as_ref().is_none_or(|after| id > after))
            .collect();
        ids.sort();
        ids.truncate(page.limit);
        Ok(ids)
    }

    async fn events_of_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let Some(data) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        Ok(data
            .hot()
            .1
            .iter()
            .map(|&at| inner.events.get(at))
            .filter(|e| e.command_sequence >= from && e.command_sequence <= to)
            .cloned()
            .collect())
    }

    async fn correlated(
        &self,
        correlation_id: Uuid,
        limit: usize,
    ) -> Result<Correlated, StoreError> {
        let inner = self.lock();
        let mut commands: Vec<_> = inner
            .streams
            .values()
            .flat_map(|data| data.hot().0.iter())
            .filter(|c| c.envelope.correlation_id == correlation_id)
            .cloned()
            .collect();
        commands.sort_by(|a, b| {
            (a.envelope.timestamp, &a.envelope.stream, a.sequence).cmp(&(
                b.envelope.timestamp,
                &b.envelope.stream,
                b.sequence,
            ))
        });
        commands.truncate(limit);
        let events = inner
            .events
            .iter_from(0)
            .filter(|e| e.envelope.correlation_id == correlation_id)
            .take(limit)
            .cloned()
            .collect();
        Ok(Correlated { commands, events })
    }

    async fn leases(&self) -> Result<Vec<crate::store::LeaseRecord>, StoreError> {
        let inner = self.lock();
        let mut leases: Vec<_> = inner
            .leases
            .iter()
            .map(|(name, (holder, until))| crate::store::LeaseRecord {
                name: name.clone(),
                holder: *holder,
                expires_at: *until,
            })
            .collect();
        leases.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(leases)
    }

    async fn positions(&self) -> Result<Vec<(String, Position)>, StoreError> {
        let inner = self.lock();
        let mut positions: Vec<_> = inner
            .positions
            .iter()
            .map(|(handler, position)| (handler.clone(), *position))
            .collect();
        positions.sort();
        Ok(positions)
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().outbox.len() as u64)
    }

    async fn recorded_since(&self, since: DateTime<Utc>) -> Result<Activity, StoreError> {
        let inner = self.lock();
        // Timestamps rise with positions (within clock skew): walk back from the head.
        let mut commands = std::collections::HashSet::new();
        let mut events = 0;
        for at in (0..inner.events.len()).rev() {
            let event = inner.events.get(at);
            if event.envelope.timestamp < since {
                break;
            }
            if inner.events.archived.contains(&at) {
                continue;
            }
            events += 1;
            commands.insert((&event.envelope.stream, event.command_sequence));
        }
        Ok(Activity {
            events,
            commands: commands.len() as u64,
            commands_estimated: false,
        })
    }
}
