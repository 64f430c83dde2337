//! The read queries written once for both backends: standard SQL that SQLite and Postgres run
//! alike, with `$N` parameters (sqlx binds them by number on both) and payloads read as
//! `CAST(... AS TEXT)`. The few reads whose best text differs per backend are each backend's
//! [`ReadQueries`](super::read::ReadQueries). The arguments and columns of each are documented
//! in [`read`](super::read).

use super::rows::{command_columns, event_columns};

/// The stream's last command sequence, 0 if none: one index entry, however long the stream.
pub(crate) const LAST_SEQUENCE: &str = "SELECT COALESCE((SELECT sequence FROM sf_commands \
     WHERE stream_type = $1 AND stream_id = $2 ORDER BY sequence DESC LIMIT 1), 0)";

/// The stream's last command: its sequence and name (no row for an empty stream).
pub(crate) const LAST_COMMAND: &str = "SELECT sequence, name FROM sf_commands \
     WHERE stream_type = $1 AND stream_id = $2 ORDER BY sequence DESC LIMIT 1";

/// A stream's commands between two sequences.
pub(crate) const LOAD_COMMANDS: &str = concat!(
    "SELECT ",
    command_columns!("CAST(payload AS TEXT)"),
    " FROM sf_commands WHERE stream_type = $1 AND stream_id = $2 \
     AND sequence >= $3 AND sequence <= $4 ORDER BY sequence"
);

/// A stream's archived commands between two sequences.
pub(crate) const LOAD_ARCHIVED_COMMANDS: &str = concat!(
    "SELECT ",
    command_columns!("CAST(payload AS TEXT)"),
    " FROM sf_archived_commands WHERE stream_type = $1 AND stream_id = $2 \
     AND sequence >= $3 AND sequence <= $4 ORDER BY sequence"
);

/// A stream's archived events between two sequences.
pub(crate) const READ_ARCHIVED_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!("", "CAST(payload AS TEXT)"),
    " FROM sf_archived_events WHERE stream_type = $1 AND stream_id = $2 AND sequence >= $3 \
     AND sequence <= $4 ORDER BY sequence"
);

/// A stream's events between two sequences.
pub(crate) const READ_STREAM_RANGE: &str = concat!(
    "SELECT ",
    event_columns!("", "CAST(payload AS TEXT)"),
    " FROM sf_events WHERE stream_type = $1 AND stream_id = $2 AND sequence >= $3 \
     AND sequence <= $4 ORDER BY sequence"
);

/// A page of the global log.
pub(crate) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!("", "CAST(payload AS TEXT)"),
    " FROM sf_events WHERE position > $1 ORDER BY position LIMIT $2"
);

/// A page of the global log's events in a time range.
pub(crate) const READ_BETWEEN: &str = concat!(
    "SELECT ",
    event_columns!("", "CAST(payload AS TEXT)"),
    " FROM sf_events WHERE created_at >= $1 AND created_at < $2 AND position > $3 \
     ORDER BY position LIMIT $4"
);

/// The highest position.
pub(crate) const HEAD: &str = "SELECT COALESCE(MAX(position), 0) FROM sf_events";

/// An entity's version and state.
pub(crate) const GET_ENTITY: &str = "SELECT version, CAST(state AS TEXT) FROM sf_entities \
     WHERE entity_type = $1 AND entity_id = $2";

/// A view model's state.
pub(crate) const GET_MODEL: &str = "SELECT CAST(state AS TEXT) FROM sf_view_models \
     WHERE model_type = $1 AND model_id = $2";

/// The first page of a model type's models.
pub(crate) const LIST_MODELS_FIRST: &str = "SELECT model_id, CAST(state AS TEXT) \
     FROM sf_view_models WHERE model_type = $1 ORDER BY model_id LIMIT $2";

/// A later page of a model type's models.
pub(crate) const LIST_MODELS_AFTER: &str = "SELECT model_id, CAST(state AS TEXT) \
     FROM sf_view_models WHERE model_type = $1 AND model_id > $2 ORDER BY model_id LIMIT $3";

/// A handler's position.
pub(crate) const GET_POSITION: &str = "SELECT position FROM sf_positions WHERE handler = $1";

/// The oldest outbox entries.
pub(crate) const OUTBOX_PENDING: &str = "SELECT id, stream_type, stream_id, message_id, name, \
     version, correlation_id, causation_id, created_at, CAST(payload AS TEXT) FROM sf_outbox \
     ORDER BY id LIMIT $1";

/// A loose index scan: one index probe per entity type, however many commands each has.
pub(crate) const ENTITY_TYPES: &str = "WITH RECURSIVE types(t) AS ( \
       SELECT MIN(stream_type) FROM sf_commands \
       UNION ALL \
       SELECT (SELECT MIN(stream_type) FROM sf_commands WHERE stream_type > types.t) \
       FROM types WHERE types.t IS NOT NULL) \
     SELECT t FROM types WHERE t IS NOT NULL";
