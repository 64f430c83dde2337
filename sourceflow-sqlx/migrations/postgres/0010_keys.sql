-- Subject keys: the key that seals a subject's personal fields (unpadded base64 of 32 bytes),
-- made the first time one of them is written. Forgetting a subject deletes its key and keeps
-- the row with `forgotten_at`, so no new key is ever made for it.
CREATE TABLE IF NOT EXISTS sf_keys (
    subject      text        NOT NULL PRIMARY KEY,
    key          text,
    created_at   timestamptz NOT NULL,
    forgotten_at timestamptz,
    CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
);
