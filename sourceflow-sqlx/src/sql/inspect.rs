//! The read-only queries for inspectors ([`StoreInspect`]), written once for both backends
//! with each backend's text of the few that differ ([`InspectQueries`]). Every one binds its
//! arguments; none is built from input.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sourceflow::store::{Activity, Correlated, LeaseRecord, Page, StoreError, StoreInspect};
use sourceflow::{EntityId, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

use super::read::{fetch, Param};
use super::rows::{command_columns, command_row, event_columns, log_events, Columns};
use super::values::{bound, db_limit, from_db, time_bound};
use super::{Backend, SqlStore};

/// The inspector queries whose best text differs per backend. Arguments, in order:
/// - `stream_ids_with_prefix`: stream type, prefix, id after (null for the first page), limit;
///   the ids of the type's streams that start with the prefix, in order (a loose index scan
///   from the prefix on, stopping at the first id without it), deleted streams left out.
/// - `events_of_commands`: stream type, stream id, first and last command sequence;
///   [`event_columns!`] of the events those commands recorded, in stream order.
#[derive(Debug)]
pub(crate) struct InspectQueries {
    pub stream_ids_with_prefix: &'static str,
    pub events_of_commands: &'static str,
}

/// SQLite's text: a command row records the range of stream sequences its events took.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: InspectQueries = InspectQueries {
    stream_ids_with_prefix: "WITH RECURSIVE ids(id, n) AS ( \
           SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 \
                   AND stream_id >= ?2 AND (?3 IS NULL OR stream_id > ?3)), 0 \
           UNION ALL \
           SELECT (SELECT MIN(stream_id) FROM sf_commands \
                   WHERE stream_type = ?1 AND stream_id > ids.id), n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END \
           FROM ids WHERE ids.id IS NOT NULL AND substr(ids.id, 1, length(?2)) = ?2 \
           AND n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END < ?4) \
         SELECT id FROM ids WHERE id IS NOT NULL AND substr(id, 1, length(?2)) = ?2 \
         AND CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END = 1",
    events_of_commands: concat!(
        "SELECT ",
        event_columns!("", "CAST(payload AS TEXT)"),
        " FROM sf_events WHERE stream_type = ?1 AND stream_id = ?2 \
         AND sequence >= (SELECT MIN(first_event) FROM sf_commands WHERE stream_type = ?1 \
                          AND stream_id = ?2 AND sequence >= ?3 AND sequence <= ?4) \
         AND sequence <= (SELECT MAX(last_event) FROM sf_commands WHERE stream_type = ?1 \
                          AND stream_id = ?2 AND sequence >= ?3 AND sequence <= ?4) \
         AND command_sequence >= ?3 AND command_sequence <= ?4 ORDER BY sequence"
    ),
};

/// Postgres' text: events are indexed by the command that recorded them.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: InspectQueries = InspectQueries {
    stream_ids_with_prefix: "WITH RECURSIVE ids(id, n) AS ( \
           SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = $1 \
                   AND stream_id >= $2::text AND ($3::text IS NULL OR stream_id > $3::text)), 0 \
           UNION ALL \
           SELECT (SELECT MIN(stream_id) FROM sf_commands \
                   WHERE stream_type = $1 AND stream_id > ids.id), n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = $1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END \
           FROM ids WHERE ids.id IS NOT NULL \
           AND substr(ids.id, 1, length($2::text)) = $2::text AND n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = $1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END < $4) \
         SELECT id FROM ids WHERE id IS NOT NULL AND substr(id, 1, length($2::text)) = $2::text \
         AND CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = $1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END = 1",
    events_of_commands: concat!(
        "SELECT ",
        event_columns!("", "CAST(payload AS TEXT)"),
        " FROM sf_events WHERE stream_type = $1 AND stream_id = $2 \
         AND command_sequence >= $3 AND command_sequence <= $4 ORDER BY sequence"
    ),
};

/// Stored entity states per type: the entities' primary key answers it.
pub(crate) const ENTITY_STATE_COUNTS: &str = "SELECT entity_type, COUNT(*) FROM sf_entities \
     GROUP BY entity_type ORDER BY entity_type";

/// The commands of one correlation id. No index leads there: a scan of the command log.
pub(crate) const CORRELATED_COMMANDS: &str = concat!(
    "SELECT ",
    command_columns!("CAST(payload AS TEXT)"),
    " FROM sf_commands WHERE correlation_id = $1 \
     ORDER BY created_at, stream_type, stream_id, sequence LIMIT $2"
);

/// The events of one correlation id. No index leads there: a scan of the event log.
pub(crate) const CORRELATED_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!("", "CAST(payload AS TEXT)"),
    " FROM sf_events WHERE correlation_id = $1 ORDER BY position LIMIT $2"
);

/// Every handler's position (one row per view, aggregate or checkpoint).
pub(crate) const POSITIONS: &str = "SELECT handler, position FROM sf_positions ORDER BY handler";

/// Every lease: name, holder (text), end in milliseconds since the Unix epoch.
pub(crate) const LEASES: &str = "SELECT name, holder, expires_at FROM sf_leases ORDER BY name";

/// The outbox backlog.
pub(crate) const OUTBOX_LEN: &str = "SELECT COUNT(*) FROM sf_outbox";

/// Events since a moment, through the events' time index.
pub(crate) const EVENTS_SINCE: &str = "SELECT COUNT(*) FROM sf_events WHERE created_at >= $1";

/// The newest events (position after `$2`): how many, how many of them since `$1`, and the
/// commands that recorded those. Reads the primary key's last range only (materialized first:
/// otherwise SQLite plans the distinct count as a walk of a whole index).
pub(crate) const NEWEST_SINCE: &str = "WITH newest AS MATERIALIZED ( \
       SELECT stream_type, stream_id, command_sequence, created_at FROM sf_events \
        WHERE position > $2) \
     SELECT (SELECT COUNT(*) FROM newest), \
       (SELECT COUNT(*) FROM newest WHERE created_at >= $1), \
       (SELECT COUNT(*) FROM (SELECT DISTINCT stream_type, stream_id, command_sequence \
          FROM newest WHERE created_at >= $1) AS recorded)";

/// Commands are counted over at most this many of the newest events (a distinct count over
/// a whole busy minute would cost a read of every one of its rows).
const COMMAND_SAMPLE: u64 = 2_000;

#[async_trait]
impl<B: Backend> StoreInspect for SqlStore<B> {
    async fn entity_state_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = ENTITY_STATE_COUNTS;
        let rows = fetch(self.backend(), "entity_state_counts", sql, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.text(0)?, from_db(row.int(1)?, "count")?)))
            .collect()
    }

    async fn stream_ids_with_prefix(
        &self,
        entity_type: &str,
        prefix: &str,
        page: Page,
    ) -> Result<Vec<EntityId>, StoreError> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let params = [
            Param::Text(entity_type),
            Param::Text(prefix),
            Param::OptionalText(page.after.as_ref().map(EntityId::as_str)),
            Param::Int(db_limit(page.limit)),
        ];
        let sql = B::INSPECT.stream_ids_with_prefix;
        let rows = fetch(self.backend(), "stream_ids_with_prefix", sql, &params).await?;
        rows.iter()
            .map(|row| row.text(0).map(EntityId::from))
            .collect()
    }

    async fn events_of_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let params = [
            Param::Text(&stream.entity_type),
            Param::Text(stream.id.as_str()),
            Param::Int(bound(from.0)),
            Param::Int(bound(to.0)),
        ];
        let sql = B::INSPECT.events_of_commands;
        let rows = fetch(self.backend(), "events_of_commands", sql, &params).await?;
        log_events(&rows)
    }

    async fn correlated(
        &self,
        correlation_id: Uuid,
        limit: usize,
    ) -> Result<Correlated, StoreError> {
        let params = [Param::Uuid(correlation_id), Param::Int(db_limit(limit))];
        let backend = self.backend();
        let rows = fetch(backend, "correlated", CORRELATED_COMMANDS, &params).await?;
        let commands = rows.iter().map(command_row).collect::<Result<_, _>>()?;
        let rows = fetch(backend, "correlated", CORRELATED_EVENTS, &params).await?;
        let events = log_events(&rows)?;
        Ok(Correlated { commands, events })
    }

    async fn positions(&self) -> Result<Vec<(String, Position)>, StoreError> {
        let rows = fetch(self.backend(), "positions", POSITIONS, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.text(0)?, Position(from_db(row.int(1)?, "position")?))))
            .collect()
    }

    async fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        let rows = fetch(self.backend(), "leases", LEASES, &[]).await?;
        rows.iter()
            .map(|row| {
                let holder = row.text(1)?;
                let expires_at = row.int(2)?;
                Ok(LeaseRecord {
                    name: row.text(0)?,
                    holder: Uuid::parse_str(&holder).map_err(|_| {
                        StoreError::Corrupt(format!("lease holder {holder:?} is not a UUID"))
                    })?,
                    expires_at: DateTime::from_timestamp_millis(expires_at).ok_or_else(|| {
                        StoreError::Corrupt(format!("lease end {expires_at} is out of range"))
                    })?,
                })
            })
            .collect()
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        let rows = fetch(self.backend(), "outbox_len", OUTBOX_LEN, &[]).await?;
        match rows.first() {
            Some(row) => from_db(row.int(0)?, "count"),
            None => Ok(0),
        }
    }

    async fn recorded_since(&self, since: DateTime<Utc>) -> Result<Activity, StoreError> {
        let backend = self.backend();
        let since = Param::Time(time_bound(since));
        let rows = fetch(backend, "recorded_since", EVENTS_SINCE, &[since]).await?;
        let events = match rows.first() {
            Some(row) => from_db(row.int(0)?, "count")?,
            None => 0,
        };
        if events == 0 {
            return Ok(Activity::default());
        }
        let head = super::read::head(backend).await?;
        let after = Param::Int(bound(head.0.saturating_sub(COMMAND_SAMPLE)));
        let rows = fetch(backend, "recorded_since", NEWEST_SINCE, &[since, after]).await?;
        let (sampled, recent, commands) = match rows.first() {
            Some(row) => (
                from_db(row.int(0)?, "count")?,
                from_db(row.int(1)?, "count")?,
                from_db(row.int(2)?, "count")?,
            ),
            None => (0, 0, 0),
        };
        // The sample holds every event of the window unless all of it is in the window and
        // the window holds more.
        if recent < sampled || events <= recent {
            return Ok(Activity {
                events,
                commands,
                commands_estimated: false,
            });
        }
        let scaled = (commands as f64 * events as f64 / recent.max(1) as f64).round() as u64;
        Ok(Activity {
            events,
            commands: scaled,
            commands_estimated: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use sourceflow::message::{NewEvent, StoredCommand};
    use sourceflow::store::StoreAdmin;
    use sourceflow::Envelope;
    use sqlx::Row;

    use super::*;
    use crate::SqliteStore;

    /// A busy window's commands are scaled from the newest events, and flagged as estimated;
    /// the events are counted exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_windows_estimate_their_commands() {
        let store = SqliteStore::memory().await.expect("open");
        let envelope = |stream: &StreamId| Envelope {
            message_id: Uuid::now_v7(),
            name: "t.Happened".into(),
            version: 1,
            stream: stream.clone(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            timestamp: Utc::now(),
        };
        let before = Utc::now() - TimeDelta::seconds(1);
        // 30 commands, each followed by 100 events recorded under it.
        for s in 0..30 {
            let stream = StreamId::new("t.Thing", format!("thing-{s:02}"));
            let command = StoredCommand {
                envelope: envelope(&stream),
                sequence: Sequence::ZERO,
                payload: b"{}".to_vec(),
            };
            store
                .append_command(Sequence::ZERO, command)
                .await
                .expect("command");
            let events = (0..100)
                .map(|_| NewEvent {
                    envelope: envelope(&stream),
                    payload: b"{}".to_vec(),
                })
                .collect();
            store
                .append_events(&stream, Sequence::ZERO, events)
                .await
                .expect("events");
        }
        let busy = store.recorded_since(before).await.expect("activity");
        assert_eq!(
            busy,
            Activity {
                events: 3_000,
                commands: 30,
                commands_estimated: true
            }
        );
        let later = Utc::now() + TimeDelta::hours(1);
        assert_eq!(
            store.recorded_since(later).await.expect("activity"),
            Activity::default()
        );
    }

    /// The inspector's reads that pages run on every visit use an index on SQLite: no full scan
    /// of the logs. (The correlation reads scan: no index leads to a correlation id.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_inspector_reads_use_indexes() {
        let store = SqliteStore::memory().await.expect("open");
        let pool = store.reader_pool();
        let queries: &[(&str, &str)] = &[
            ("entity_state_counts", ENTITY_STATE_COUNTS),
            ("stream_ids_with_prefix", SQLITE.stream_ids_with_prefix),
            ("events_of_commands", SQLITE.events_of_commands),
            ("events_since", EVENTS_SINCE),
            ("newest_since", NEWEST_SINCE),
        ];
        for (name, query) in queries {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            for step in &plan {
                for table in ["sf_commands", "sf_events"] {
                    let scan = format!("SCAN {table}");
                    assert!(
                        !(*step == scan || step.starts_with(&format!("{scan} "))),
                        "{name} scans {table}: {plan:?}"
                    );
                }
            }
        }
    }
}
