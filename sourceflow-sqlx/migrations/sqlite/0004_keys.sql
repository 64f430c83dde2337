-- Subject keys: the key that seals a subject's personal fields (unpadded base64 of 32 bytes),
-- made the first time one of them is written. Forgetting a subject deletes its key and keeps
-- the row with `forgotten_at`, so no new key is ever made for it.
CREATE TABLE IF NOT EXISTS sf_keys (
    subject      TEXT NOT NULL PRIMARY KEY,
    key          TEXT,
    created_at   TEXT NOT NULL,
    forgotten_at TEXT,
    CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
);
