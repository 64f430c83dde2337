-- The archive (SQLite): streams moved out of the hot tables by `archive_stream`, with their own
-- sequences and global positions, until `restore_stream` moves them back. Deleting a stream
-- erases its rows in place instead (name 'sourceflow.Erased', payload 'null'): event positions
-- are rowids, and a removed newest row would hand its position out again.
CREATE TABLE IF NOT EXISTS sf_archived_commands (
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
    first_event    INTEGER,
    last_event     INTEGER,
    PRIMARY KEY (stream_type, stream_id, sequence)
);

CREATE TABLE IF NOT EXISTS sf_archived_events (
    position         INTEGER PRIMARY KEY,
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
