-- Leases (SQLite): a named role one holder plays at a time among the processes sharing the
-- file, until `expires_at` (milliseconds since the Unix epoch, the holder's clock) unless it
-- renews it. `SourceFlow::follow` takes one per read side.
CREATE TABLE IF NOT EXISTS sf_leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
