-- sourceflow schema v1 (SQLite).
--
-- Meant to be read with the sqlite3 tool: ids are hyphenated UUID text, timestamps are UTC
-- RFC 3339 text with nine fractional digits (fixed width, so they also sort as text), payloads
-- and states are JSON text. `IF NOT EXISTS` everywhere keeps a migration that a second process
-- applied at the same moment harmless.

-- The command log: every accepted command, dense sequences from 1 per stream.
CREATE TABLE IF NOT EXISTS sf_commands (
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence > 0),
    message_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT,
    created_at     TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    PRIMARY KEY (stream_type, stream_id, sequence),
    -- A resent message id is a duplicate, never a second command.
    UNIQUE (stream_type, stream_id, message_id)
);

-- The event log. `position` is the global position: AUTOINCREMENT so that a position is never
-- handed out twice, even if the newest rows were deleted by hand.
CREATE TABLE IF NOT EXISTS sf_events (
    position         INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_type      TEXT    NOT NULL,
    stream_id        TEXT    NOT NULL,
    sequence         INTEGER NOT NULL CHECK (sequence > 0),
    command_sequence INTEGER NOT NULL,
    message_id       TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    correlation_id   TEXT    NOT NULL,
    causation_id     TEXT,
    created_at       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    UNIQUE (stream_type, stream_id, sequence)
);
-- The events of one command (duplicate receipts).
CREATE INDEX IF NOT EXISTS sf_events_by_command
    ON sf_events (stream_type, stream_id, command_sequence);
-- Time-range reads.
CREATE INDEX IF NOT EXISTS sf_events_by_time ON sf_events (created_at);

-- Entity states: a cache of each stream, versioned by the command sequence it reflects.
CREATE TABLE IF NOT EXISTS sf_entities (
    entity_type TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);

-- View models.
CREATE TABLE IF NOT EXISTS sf_view_models (
    model_type TEXT NOT NULL,
    model_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model_type, model_id)
);

-- The last global position each view or aggregate applied.
CREATE TABLE IF NOT EXISTS sf_positions (
    handler    TEXT    NOT NULL PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);

-- Follow-up commands waiting to be sent.
CREATE TABLE IF NOT EXISTS sf_outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT,
    created_at     TEXT    NOT NULL,
    payload        TEXT    NOT NULL
);
