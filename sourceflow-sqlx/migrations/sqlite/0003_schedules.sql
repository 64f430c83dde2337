-- Scheduled commands: one row per schedule, committed with the unit of work that made it.
--
-- `state` is `pending` (waiting for `due_at`, may be cancelled), `firing` (claimed by a
-- scheduler until `ready_at`; if that process dies, another one claims it after then),
-- `fired` or `cancelled`. `ready_at` is when a scheduler may claim the row: the due time while
-- pending, the end of the lease while firing, NULL once settled. The command columns are those
-- of `sf_outbox`; `message_id` is the id the command is sent with (derived from `id`), so a
-- second send after a crash is a duplicate in the target stream.
CREATE TABLE IF NOT EXISTS sf_schedules (
    id             TEXT    NOT NULL PRIMARY KEY,
    state          TEXT    NOT NULL
        CHECK (state IN ('pending', 'firing', 'fired', 'cancelled')),
    due_at         TEXT    NOT NULL,
    ready_at       TEXT,
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT,
    created_at     TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    settled_at     TEXT
);
-- What a scheduler may claim, in the order it claims it.
CREATE INDEX IF NOT EXISTS sf_schedules_ready ON sf_schedules (ready_at)
    WHERE ready_at IS NOT NULL;
-- Listing what is still to come, in due order.
CREATE INDEX IF NOT EXISTS sf_schedules_open ON sf_schedules (due_at, id)
    WHERE state IN ('pending', 'firing');
