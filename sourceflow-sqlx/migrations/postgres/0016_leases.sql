-- sourceflow schema v16 (Postgres): leases, a named role one holder plays at a time among the
-- processes sharing the schema, until `expires_at` (milliseconds since the Unix epoch, the
-- holder's clock) unless it renews it. `SourceFlow::follow` takes one per read side.
CREATE TABLE IF NOT EXISTS sf_leases (
    name       text   NOT NULL PRIMARY KEY,
    holder     text   NOT NULL,
    expires_at bigint NOT NULL
);
