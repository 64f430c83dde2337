//! Every statement of the Postgres store's own: its text of the read queries that differ per
//! backend ([`READS`]), the single-statement commit, the calls of the server-side functions of
//! the migrations, and the other writes.

use crate::sql::read::ReadQueries;
use crate::sql::rows::event_columns;

/// The read queries of this backend's own (see [`ReadQueries`] for their arguments and
/// columns; the others are shared).
pub(super) const READS: ReadQueries = ReadQueries {
    // The command by its message id's unique key, then its events by their command's
    // sequence. Without statistics (a young schema, or a server without autovacuum) an
    // equality on an index's three columns costs the same as one on the first two of another
    // index that starts with the same two (the commands' primary key, the events' stream
    // key), and a plan could take that one and read the whole stream. So each part asks for
    // its index's order: the first key at or after (stream, message id), and the events
    // between two equal keys of (stream, command sequence), which that index alone reads
    // without a sort. Tested in `plans`.
    find_receipt: concat!(
        "SELECT c.sequence, ",
        event_columns!("e.", "CAST(e.payload AS TEXT)"),
        " FROM (SELECT stream_type, stream_id, message_id, sequence FROM sf_commands \
                 WHERE (stream_type, stream_id, message_id) >= ($1, $2, $3) \
                 ORDER BY stream_type, stream_id, message_id LIMIT 1) c \
         LEFT JOIN LATERAL (SELECT * FROM sf_events \
                             WHERE (stream_type, stream_id, command_sequence) \
                                   BETWEEN ($1, $2, c.sequence) AND ($1, $2, c.sequence) \
                             ORDER BY stream_type, stream_id, command_sequence) e ON true \
         WHERE c.stream_type = $1 AND c.stream_id = $2 AND c.message_id = $3 \
         ORDER BY e.sequence"
    ),
    stream_ids_first: STREAM_IDS,
    stream_ids_after: STREAM_IDS,
};

pub(super) const COMMIT_INLINE: &str = "SELECT r_status, r_sequence, r_first_event, r_positions, \
     r_payloads, r_projected FROM sf_commit_inline(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
     $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, \
     $38, $39)";
/// The common unit of work as one statement: a command with an entity state and one event,
/// no follow-up commands, and at most one inline view writing one model (`$20` NULL: none).
/// Each step feeds the next, so the append lock is taken before the event's position is
/// allocated, as in `sf_commit_inline`; the view's compare-and-set also checks that the event
/// landed where the projection assumed (`$22 + 1`, stream sequence `$23`). No row: nothing
/// written, a resent message id or a moved stream (the caller looks the message id up).
pub(super) const COMMIT_ONE: &str = "WITH cmd AS ( \
       INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
                                correlation_id, causation_id, created_at, payload) \
       SELECT $2, $3, $4 + 1, $5, $6, $7, $8, $9, $10, $11::json \
        WHERE coalesce((SELECT c.sequence FROM sf_commands c \
                         WHERE c.stream_type = $2 AND c.stream_id = $3 \
                         ORDER BY c.sequence DESC LIMIT 1), 0) = $4 \
       ON CONFLICT DO NOTHING \
       RETURNING sequence), \
     ent AS ( \
       INSERT INTO sf_entities AS s (entity_type, entity_id, version, state, updated_at) \
       SELECT $2, $3, cmd.sequence, $12::json, now() FROM cmd \
       ON CONFLICT (entity_type, entity_id) DO UPDATE \
       SET version = EXCLUDED.version, state = EXCLUDED.state, \
           updated_at = EXCLUDED.updated_at), \
     lk AS (SELECT cmd.sequence, pg_advisory_xact_lock($1) FROM cmd), \
     ev AS ( \
       INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
                              name, version, correlation_id, causation_id, created_at, payload) \
       SELECT $2, $3, coalesce((SELECT e.sequence FROM sf_events e \
                                 WHERE e.stream_type = $2 AND e.stream_id = $3 \
                                 ORDER BY e.sequence DESC LIMIT 1), 0) + 1, \
              lk.sequence, $13, $14, $15, $16, $17, $18, $19::json FROM lk \
       RETURNING position, sequence, payload::text AS payload), \
     pos AS ( \
       UPDATE sf_positions s SET position = ev.position, updated_at = now() FROM ev \
        WHERE $21 <> 0 AND s.handler = $20 AND s.position = $21 \
          AND ev.position = $22 + 1 AND ev.sequence = $23 \
       RETURNING 1), \
     pos0 AS ( \
       INSERT INTO sf_positions AS s (handler, position, updated_at) \
       SELECT $20, ev.position, now() FROM ev \
        WHERE $21 = 0 AND ev.position = $22 + 1 AND ev.sequence = $23 \
       ON CONFLICT (handler) DO UPDATE \
       SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at \
       WHERE s.position = 0 \
       RETURNING 1), \
     moved AS (SELECT 1 FROM pos UNION ALL SELECT 1 FROM pos0), \
     mdl AS ( \
       INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at) \
       SELECT $24, $25, $26::json, now() FROM moved \
       ON CONFLICT (model_type, model_id) DO UPDATE \
       SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at) \
     SELECT cmd.sequence, ev.position, ev.sequence, ev.payload, EXISTS (SELECT 1 FROM moved) \
       FROM cmd, ev";
/// Several units of work in one transaction (group commit): one row per unit, its 1-based place
/// in the batch first, then the columns of `COMMIT_INLINE`.
pub(super) const COMMIT_BATCH: &str = "SELECT r_unit, r_status, r_sequence, r_first_event, \
     r_positions, r_payloads, r_projected FROM sf_commit_batch($1, $2::jsonb)";
/// Units of work of the common shape on distinct streams in one transaction (group commit,
/// set-based): the columns of `COMMIT_BATCH`.
pub(super) const COMMIT_UNITS: &str = "SELECT r_unit, r_status, r_sequence, r_first_event, \
     r_positions, r_payloads, r_projected FROM sf_commit_units($1, $2, $3, $4, $5, $6, $7, $8, \
     $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";
/// A group of units of work of the common shape on distinct streams, with the views'
/// projection of the group: `COMMIT_UNITS`' arguments, then the per-unit first sequences and
/// the projections' arrays; its rows, then one with `r_unit` 0 and the projections' outcome.
pub(super) const COMMIT_UNITS_GROUP: &str = "SELECT r_unit, r_status, r_sequence, \
     r_first_event, r_positions, r_payloads, r_projected FROM sf_commit_units_group($1, $2, $3, \
     $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
     $23, $24, $25, $26, $27, $28, $29, $30)";
/// A group of units of work of any shape, with the views' projection of the group:
/// `COMMIT_BATCH`'s arguments, then as `COMMIT_UNITS_GROUP`.
pub(super) const COMMIT_BATCH_GROUP: &str = "SELECT r_unit, r_status, r_sequence, \
     r_first_event, r_positions, r_payloads, r_projected FROM sf_commit_batch_group($1, \
     $2::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
pub(super) const APPEND_EVENTS: &str =
    "SELECT r_ok, r_command_sequence, r_positions, r_payloads FROM \
     sf_append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// A projection batch, its transaction committed asynchronously (`synchronous_commit` off for
/// this transaction only: visible at once, flushed by the next synchronous commit or the WAL
/// writer); the second column is whether it applied.
pub(super) const COMMIT_PROJECTION: &str = "SELECT set_config('synchronous_commit', 'off', true), \
     sf_commit_projection($1, $2, $3, $4, $5, $6, $7, $8, \
     $9, $10, $11, $12, $13, $14, $15, $16, $17)";
pub(super) const INSERT_COMMAND: &str =
    "INSERT INTO sf_commands (stream_type, stream_id, sequence, \
     message_id, name, version, correlation_id, causation_id, created_at, payload) \
     SELECT $1, $2, $3 + 1, $4, $5, $6, $7, $8, $9, $10::json \
     WHERE COALESCE((SELECT sequence FROM sf_commands WHERE stream_type = $1 \
            AND stream_id = $2 ORDER BY sequence DESC LIMIT 1), 0) = $3";
/// `put_entity` expecting no stored state. Neither this nor the compare-and-set writes a state
/// older than the stream's last command (a deleted stream's tombstone, a command committed
/// meanwhile).
pub(super) const PUT_ENTITY_NEW: &str =
    "INSERT INTO sf_entities AS s (entity_type, entity_id, version, \
     state, updated_at) SELECT $1, $2, $3, $4::json, now() WHERE NOT EXISTS (SELECT 1 FROM \
     sf_commands WHERE stream_type = $1 AND stream_id = $2 AND sequence > $3) \
     ON CONFLICT (entity_type, entity_id) DO UPDATE \
     SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at \
     WHERE s.version = 0";
/// The stored state at `$3` over `$5`, if the stream has no command after `$3`: its last
/// command read in primary-key order (an `EXISTS` of a later one could be planned, on a young
/// schema, as a filter over the stream through the message-id key).
pub(super) const PUT_ENTITY_CAS: &str = "UPDATE sf_entities SET version = $3, state = $4::json, \
     updated_at = now() WHERE entity_type = $1 AND entity_id = $2 AND version = $5 \
     AND coalesce((SELECT sequence FROM sf_commands WHERE stream_type = $1 AND stream_id = $2 \
                   ORDER BY sequence DESC LIMIT 1), 0) <= $3";
pub(super) const DELETE_ENTITY: &str =
    "DELETE FROM sf_entities WHERE entity_type = $1 AND entity_id = $2";
/// The entity (row `n = 0`) and the present ones of `models` asked models (row `n` = 1-based
/// index), each model its own lookup by its key (`$1`, `$2` the stream; model `n`'s type and
/// id `$2n+1`, `$2n+2`). One statement text per number of models: every lookup is an equality
/// on a primary key, so the plan a connection keeps for it is the one it would make for any
/// keys. Given the keys as arrays, the statement was planned on every call (its plan for the
/// keys given always looked cheaper than one for any number of keys), which took longer than
/// running it; and as a join over the arrays, a plan made before the tables had statistics read
/// every view model (both tested in `plans`).
pub(super) fn get_entity_with_models(models: usize) -> String {
    use std::fmt::Write as _;

    let mut sql = String::from(
        "SELECT 0::bigint AS n, version, state::text FROM sf_entities \
         WHERE entity_type = $1 AND entity_id = $2",
    );
    for n in 1..=models {
        let (model_type, model_id) = (2 * n + 1, 2 * n + 2);
        // Writing to a String cannot fail.
        let _ = write!(
            sql,
            " UNION ALL SELECT {n}::bigint, NULL::bigint, state::text FROM sf_view_models \
             WHERE model_type = ${model_type} AND model_id = ${model_id}"
        );
    }
    sql
}
pub(super) const PUT_MODEL: &str =
    "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
     VALUES ($1, $2, $3::json, now()) ON CONFLICT (model_type, model_id) DO UPDATE \
     SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at";
pub(super) const DELETE_MODEL: &str =
    "DELETE FROM sf_view_models WHERE model_type = $1 AND model_id = $2";
pub(super) const CLEAR_MODELS: &str = "DELETE FROM sf_view_models WHERE model_type = $1";
pub(super) const SET_POSITION: &str = "INSERT INTO sf_positions (handler, position, updated_at) \
     VALUES ($1, $2, now()) ON CONFLICT (handler) DO UPDATE \
     SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at";
/// One statement, so one transaction: the models and the position go together.
pub(super) const RESET_PROJECTION: &str = "WITH models AS (DELETE FROM sf_view_models \
     WHERE model_type = ANY($2)) DELETE FROM sf_positions WHERE handler = $1";
pub(super) const OUTBOX_REMOVE: &str = "DELETE FROM sf_outbox WHERE id = ANY($1)";
/// A loose index scan over the stream ids of type `$1`: `$3` of them after `$2` (or from the
/// first when `$2` is null), deleted streams (whose last command is the tombstone) left out.
/// `n` counts the listed ids before the row.
pub(super) const STREAM_IDS: &str = "WITH RECURSIVE ids(id, n) AS ( \
       SELECT (SELECT MIN(stream_id) FROM sf_commands \
               WHERE stream_type = $1 AND ($2::text IS NULL OR stream_id > $2::text)), 0 \
       UNION ALL \
       SELECT (SELECT MIN(stream_id) FROM sf_commands \
               WHERE stream_type = $1 AND stream_id > ids.id), n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = $1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END \
       FROM ids WHERE ids.id IS NOT NULL AND n + CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = $1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END < $3) \
     SELECT id FROM ids WHERE id IS NOT NULL AND CASE WHEN (SELECT l.name FROM sf_commands l WHERE l.stream_type = $1 AND l.stream_id = ids.id ORDER BY l.sequence DESC LIMIT 1) = 'sourceflow.DeleteStream' THEN 0 ELSE 1 END = 1";

/// Stores a subject's first key (`$1` subject, `$2` key, `$3` now); a subject with a row keeps
/// it.
pub(super) const INSERT_KEY: &str = "INSERT INTO sf_keys (subject, key, created_at) \
     VALUES ($1, $2, $3) ON CONFLICT (subject) DO NOTHING";

/// Deletes a subject's key and marks it forgotten (`$1` subject, `$2` now).
pub(super) const FORGET_SUBJECT: &str = "INSERT INTO sf_keys (subject, key, created_at, \
     forgotten_at) VALUES ($1, NULL, $2, $2) ON CONFLICT (subject) DO UPDATE \
     SET key = NULL, forgotten_at = COALESCE(sf_keys.forgotten_at, excluded.forgotten_at)";
