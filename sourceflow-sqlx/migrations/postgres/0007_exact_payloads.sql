-- sourceflow schema v7 (Postgres): payloads and states stored as the exact JSON text written.
--
-- JSONB normalises what it stores: it cannot hold the escape \u0000 (a string holding U+0000 was
-- refused), it drops the sign of -0.0, and it keeps numbers as decimals, so a float such as
-- f64::MAX came back as a 309-digit integer that no longer reads as the f64 written. The `json`
-- type keeps the text as given (after checking that it is JSON), so every payload reads back
-- byte for byte, as on the other backends. Queries over payloads still work (`payload->>'x'`,
-- or `payload::jsonb` for the jsonb operators and indexes).
--
-- Existing rows keep the text they have been read as so far (JSONB's rendering). Each table is
-- rewritten once, under an exclusive lock: plan for it on a large database.

ALTER TABLE sf_commands ALTER COLUMN payload TYPE json USING payload::text::json;
ALTER TABLE sf_events ALTER COLUMN payload TYPE json USING payload::text::json;
ALTER TABLE sf_entities ALTER COLUMN state TYPE json USING state::text::json;
ALTER TABLE sf_view_models ALTER COLUMN state TYPE json USING state::text::json;
ALTER TABLE sf_outbox ALTER COLUMN payload TYPE json USING payload::text::json;
