-- The archive (Postgres): streams moved out of the hot tables by `archive_stream`, with their
-- own sequences and global positions, until `restore_stream` moves them back. Deleting a
-- stream erases its rows in place instead (name 'sourceflow.Erased', payload 'null'), so the
-- global log keeps every position.
CREATE TABLE sf_archived_commands (
    stream_type    text COLLATE "C" NOT NULL,
    stream_id      text COLLATE "C" NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    message_id     uuid        NOT NULL,
    name           text        NOT NULL,
    version        bigint      NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    created_at     timestamptz NOT NULL,
    payload        json        NOT NULL,
    PRIMARY KEY (stream_type, stream_id, sequence)
);

CREATE TABLE sf_archived_events (
    position         bigint PRIMARY KEY,
    stream_type      text COLLATE "C" NOT NULL,
    stream_id        text COLLATE "C" NOT NULL,
    sequence         bigint      NOT NULL CHECK (sequence > 0),
    command_sequence bigint      NOT NULL,
    message_id       uuid        NOT NULL,
    name             text        NOT NULL,
    version          bigint      NOT NULL,
    correlation_id   uuid        NOT NULL,
    causation_id     uuid,
    created_at       timestamptz NOT NULL,
    payload          json        NOT NULL,
    UNIQUE (stream_type, stream_id, sequence)
);
