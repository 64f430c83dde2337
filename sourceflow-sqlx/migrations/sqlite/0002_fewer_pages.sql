-- sourceflow schema v2 (SQLite): fewer pages written per command.
--
-- Every page a transaction changes is written to the WAL and flushed by the commit's fsync, so
-- each index a command's rows update costs time on every command. v2 drops two of them:
--   - a command row records the range of stream sequences its events took (`first_event`,
--     `last_event`; NULL without events), so a command's receipt reads its events through the
--     stream's (stream_type, stream_id, sequence) key, and the sf_events_by_command index goes;
--   - event positions are plain rowids instead of AUTOINCREMENT ones, which saves updating
--     sqlite_sequence on every append. Events are never deleted, so the next rowid (the largest
--     plus one) is the same number AUTOINCREMENT would give.
-- The events table is rebuilt with the same rows and positions.

ALTER TABLE sf_commands ADD COLUMN first_event INTEGER;
ALTER TABLE sf_commands ADD COLUMN last_event INTEGER;

UPDATE sf_commands
   SET (first_event, last_event) = (
       SELECT min(e.sequence), max(e.sequence) FROM sf_events e
        WHERE e.stream_type = sf_commands.stream_type AND e.stream_id = sf_commands.stream_id
          AND e.command_sequence = sf_commands.sequence);

CREATE TABLE sf_events_v2 (
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
INSERT INTO sf_events_v2 (position, stream_type, stream_id, sequence, command_sequence,
                          message_id, name, version, correlation_id, causation_id, created_at,
                          payload)
SELECT position, stream_type, stream_id, sequence, command_sequence, message_id, name, version,
       correlation_id, causation_id, created_at, payload
  FROM sf_events ORDER BY position;
DROP TABLE sf_events;
ALTER TABLE sf_events_v2 RENAME TO sf_events;
CREATE INDEX sf_events_by_time ON sf_events (created_at);
DELETE FROM sqlite_sequence WHERE name IN ('sf_events', 'sf_events_v2');
