//! Every statement of the SQLite store's own: its text of the read queries that differ per
//! backend ([`READS`]) and the writer's statements. `tests::hot_queries_use_indexes` checks
//! that each, and each shared read query, uses an index.

use crate::sql::read::ReadQueries;
use crate::sql::rows::{command_columns, event_columns};

/// The read queries of this backend's own (see [`ReadQueries`] for their arguments and
/// columns; the others are shared).
pub(super) const READS: ReadQueries = ReadQueries {
    // The receipt of a command: its sequence and its events (the range of stream sequences the
    // command row records), in one query.
    find_receipt: concat!(
        "SELECT c.sequence, ",
        event_columns!("e.", "CAST(e.payload AS TEXT)"),
        " FROM sf_commands c LEFT JOIN sf_events e \
         ON e.stream_type = c.stream_type AND e.stream_id = c.stream_id \
         AND e.sequence BETWEEN c.first_event AND c.last_event \
         WHERE c.stream_type = ?1 AND c.stream_id = ?2 AND c.message_id = ?3 ORDER BY e.sequence"
    ),
    // As `stream_ids_after`, from the first id (`?2` is unused but bound).
    stream_ids_first: "WITH RECURSIVE ids(id, n) AS ( \
           SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND ?2 IS NULL), 0 \
           UNION ALL \
           SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND stream_id > ids.id), \
                  n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END \
           FROM ids WHERE ids.id IS NOT NULL AND n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END < ?3) \
         SELECT id FROM ids WHERE id IS NOT NULL AND CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END = 1",
    // A loose index scan over the stream ids of one type, `?3` of them after `?2`; deleted
    // streams (whose last command is the tombstone) are left out. `n` counts the listed ids
    // before the row.
    stream_ids_after: "WITH RECURSIVE ids(id, n) AS ( \
           SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND stream_id > ?2), 0 \
           UNION ALL \
           SELECT (SELECT MIN(stream_id) FROM sf_commands WHERE stream_type = ?1 AND stream_id > ids.id), \
                  n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END \
           FROM ids WHERE ids.id IS NOT NULL AND n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END < ?3) \
         SELECT id FROM ids WHERE id IS NOT NULL AND CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = ?1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END = 1",
};

// ---- the writer's statements ----------------------------------------------------------------

/// The optimistic append: one statement inserts at `?3 + 1` only if `?3` is the stream's last
/// sequence (an index lookup on the primary key); 0 rows means a conflict. `?11`..`?12` are the
/// stream sequences its events take (NULL without events).
pub(super) const INSERT_COMMAND: &str = concat!(
    "INSERT INTO sf_commands (",
    command_columns!("payload"),
    ", first_event, last_event) SELECT ?1, ?2, ?3 + 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
     WHERE (SELECT COALESCE(MAX(sequence), 0) FROM sf_commands \
            WHERE stream_type = ?1 AND stream_id = ?2) = ?3"
);
pub(super) const LAST_EVENT_SEQUENCE: &str =
    "SELECT COALESCE(MAX(sequence), 0) FROM sf_events WHERE stream_type = ?1 AND stream_id = ?2";
/// An event at stream sequence `?3` (the caller read the stream's last one in this transaction).
pub(super) const INSERT_EVENT: &str = "INSERT INTO sf_events (stream_type, stream_id, sequence, \
     command_sequence, message_id, name, version, correlation_id, causation_id, created_at, \
     payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING position";
pub(super) const INSERT_OUTBOX: &str =
    "INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, \
     version, correlation_id, causation_id, created_at, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
pub(super) const UPSERT_ENTITY: &str =
    "INSERT INTO sf_entities (entity_type, entity_id, version, state, \
     updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (entity_type, entity_id) DO UPDATE \
     SET version = excluded.version, state = excluded.state, updated_at = excluded.updated_at";
/// `put_entity` expecting no stored state (or one stored at version 0). Neither writes a state
/// older than the stream's last command (a deleted stream's tombstone, a command committed
/// meanwhile).
pub(super) const PUT_ENTITY_NEW: &str =
    "INSERT INTO sf_entities (entity_type, entity_id, version, state, \
     updated_at) SELECT ?1, ?2, ?3, ?4, ?5 WHERE ?6 = 0 AND NOT EXISTS (SELECT 1 FROM \
     sf_commands WHERE stream_type = ?1 AND stream_id = ?2 AND sequence > ?3) \
     ON CONFLICT (entity_type, entity_id) DO UPDATE \
     SET version = excluded.version, state = excluded.state, updated_at = excluded.updated_at \
     WHERE sf_entities.version = 0";
pub(super) const PUT_ENTITY_CAS: &str = "UPDATE sf_entities SET version = ?3, state = ?4, \
     updated_at = ?5 WHERE entity_type = ?1 AND entity_id = ?2 AND version = ?6 \
     AND NOT EXISTS (SELECT 1 FROM sf_commands WHERE stream_type = ?1 AND stream_id = ?2 \
     AND sequence > ?3)";
/// Widens a command's range of event sequences to events appended after it without a command.
pub(super) const EXTEND_COMMAND_EVENTS: &str = "UPDATE sf_commands \
     SET first_event = COALESCE(first_event, ?4), last_event = ?5 \
     WHERE stream_type = ?1 AND stream_id = ?2 AND sequence = ?3";
pub(super) const DELETE_ENTITY: &str =
    "DELETE FROM sf_entities WHERE entity_type = ?1 AND entity_id = ?2";
pub(super) const PUT_MODEL: &str =
    "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model_type, model_id) DO UPDATE \
     SET state = excluded.state, updated_at = excluded.updated_at";
pub(super) const DELETE_MODEL: &str =
    "DELETE FROM sf_view_models WHERE model_type = ?1 AND model_id = ?2";
pub(super) const CLEAR_MODELS: &str = "DELETE FROM sf_view_models WHERE model_type = ?1";
pub(super) const SET_POSITION: &str = "INSERT INTO sf_positions (handler, position, updated_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (handler) DO UPDATE \
     SET position = excluded.position, updated_at = excluded.updated_at";
/// The position compare-and-set when the handler expects to start from the beginning: no row
/// yet, or a row at 0.
pub(super) const CAS_POSITION_NEW: &str =
    "INSERT INTO sf_positions (handler, position, updated_at) \
     SELECT ?1, ?2, ?3 WHERE ?4 = 0 ON CONFLICT (handler) DO UPDATE \
     SET position = excluded.position, updated_at = excluded.updated_at \
     WHERE sf_positions.position = 0";
pub(super) const CAS_POSITION: &str = "UPDATE sf_positions SET position = ?2, updated_at = ?3 \
     WHERE handler = ?1 AND position = ?4";
pub(super) const DELETE_POSITION: &str = "DELETE FROM sf_positions WHERE handler = ?1";
pub(super) const DELETE_OUTBOX: &str = "DELETE FROM sf_outbox WHERE id = ?1";

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::sql::queries as shared;
    use crate::SqliteStore;

    /// The plan of every hot query uses an index: no full `SCAN` of the logs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_queries_use_indexes() {
        let store = SqliteStore::memory().await.expect("open");
        let pool = store.reader_pool();
        let queries: &[(&str, &str)] = &[
            ("last_sequence", shared::LAST_SEQUENCE),
            ("load_commands", shared::LOAD_COMMANDS),
            ("load_archived_commands", shared::LOAD_ARCHIVED_COMMANDS),
            ("read_archived_events", shared::READ_ARCHIVED_EVENTS),
            ("find_receipt", READS.find_receipt),
            ("read_stream_range", shared::READ_STREAM_RANGE),
            ("read_all", shared::READ_ALL),
            ("read_between", shared::READ_BETWEEN),
            ("head", shared::HEAD),
            ("get_entity", shared::GET_ENTITY),
            ("get_model", shared::GET_MODEL),
            ("list_models_first", shared::LIST_MODELS_FIRST),
            ("list_models_after", shared::LIST_MODELS_AFTER),
            ("get_position", shared::GET_POSITION),
            ("entity_types", shared::ENTITY_TYPES),
            ("stream_ids_first", READS.stream_ids_first),
            ("stream_ids_after", READS.stream_ids_after),
            ("insert_command", INSERT_COMMAND),
            ("last_event_sequence", LAST_EVENT_SEQUENCE),
            ("extend_command_events", EXTEND_COMMAND_EVENTS),
            ("put_entity_cas", PUT_ENTITY_CAS),
            ("cas_position", CAS_POSITION),
            ("delete_model", DELETE_MODEL),
            ("clear_models", CLEAR_MODELS),
        ];
        for (name, query) in queries {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            eprintln!("{name}: {plan:?}");
            for step in &plan {
                for table in [
                    "sf_archived_commands",
                    "sf_archived_events",
                    "sf_commands",
                    "sf_events",
                    "sf_entities",
                    "sf_view_models",
                    "sf_positions",
                ] {
                    // `SCAN t` is a full table scan, `SCAN t USING ... INDEX` a full index scan.
                    let scan = format!("SCAN {table}");
                    assert!(
                        !(*step == scan || step.starts_with(&format!("{scan} "))),
                        "{name} scans {table}: {plan:?}"
                    );
                }
            }
            assert!(
                plan.iter().any(|s| s.starts_with("SEARCH")),
                "{name} searches no index: {plan:?}"
            );
        }
    }
}
