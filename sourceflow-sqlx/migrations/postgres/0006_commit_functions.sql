-- sourceflow schema v6 (Postgres): the server-side functions of the commit path, each in the
-- form the store calls it.
--
-- Versions 2 to 5 only replaced these functions; this migration holds their result, so their
-- files are gone. A database migrated through them keeps their rows in _sqlx_migrations, and
-- the store accepts those versions as retired (see `postgres::migrate`); on such a database
-- this migration re-creates the same functions. `sf_commit` (the unit of work without inline
-- views) is dropped: the store calls `sf_commit_inline` for every shape it does not send as a
-- single statement of its own.
--
-- Payload arguments are text, cast to `json` where they are inserted: the payload columns take
-- that type by assignment, whatever their type (`jsonb` in schema v1).

DROP FUNCTION IF EXISTS sf_commit(
    bigint, text, text, bigint, uuid, text, bigint, uuid, uuid, timestamptz, text, text,
    uuid[], text[], bigint[], uuid[], uuid[], timestamptz[], text[],
    text[], text[], uuid[], text[], bigint[], uuid[], uuid[], timestamptz[], text[]);

-- Appends events to a stream after event sequence `p_last`, emitted by command
-- `p_command_sequence`. Returns their positions and their payloads as stored (so that a
-- receipt carries the same bytes as a later read), in order. The caller holds the append lock.
CREATE OR REPLACE FUNCTION sf_insert_events(
    p_stream_type text, p_stream_id text, p_last bigint, p_command_sequence bigint,
    p_ids uuid[], p_names text[], p_versions bigint[], p_correlations uuid[],
    p_causations uuid[], p_times timestamptz[], p_payloads text[],
    OUT r_positions bigint[], OUT r_payloads text[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_position bigint;
    v_payload text;
BEGIN
    r_positions := '{}';
    r_payloads := '{}';
    -- One row at a time, so positions follow the stream order of the events.
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id,
                               name, version, correlation_id, causation_id, created_at, payload)
        VALUES (p_stream_type, p_stream_id, p_last + i, p_command_sequence, p_ids[i],
                p_names[i], p_versions[i], p_correlations[i], p_causations[i], p_times[i],
                p_payloads[i]::json)
        RETURNING position, payload::text INTO v_position, v_payload;
        r_positions := r_positions || v_position;
        r_payloads := r_payloads || v_payload;
    END LOOP;
END $$;

-- Queues follow-up commands, in order.
CREATE OR REPLACE FUNCTION sf_insert_outbox(
    p_stream_types text[], p_stream_ids text[], p_ids uuid[], p_names text[],
    p_versions bigint[], p_correlations uuid[], p_causations uuid[], p_times timestamptz[],
    p_payloads text[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, version,
                               correlation_id, causation_id, created_at, payload)
        VALUES (p_stream_types[i], p_stream_ids[i], p_ids[i], p_names[i], p_versions[i],
                p_correlations[i], p_causations[i], p_times[i], p_payloads[i]::json);
    END LOOP;
END $$;

-- Events without a command (StoreAdmin::append_events): under the append lock, if the stream's
-- last event sequence is p_expected, recorded under the stream's last command. r_ok = false is
-- a conflict, nothing written. The stream heads are read from one index entry each
-- (`ORDER BY sequence DESC LIMIT 1`), however long the stream.
CREATE OR REPLACE FUNCTION sf_append_events(
    p_lock_key bigint, p_stream_type text, p_stream_id text, p_expected bigint,
    p_ids uuid[], p_names text[], p_versions bigint[], p_correlations uuid[],
    p_causations uuid[], p_times timestamptz[], p_payloads text[]
) RETURNS TABLE (r_ok boolean, r_command_sequence bigint, r_positions bigint[],
                r_payloads text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_command bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    v_last := coalesce((SELECT e.sequence FROM sf_events e
                         WHERE e.stream_type = p_stream_type AND e.stream_id = p_stream_id
                         ORDER BY e.sequence DESC LIMIT 1), 0);
    IF v_last <> p_expected THEN
        RETURN QUERY SELECT false, NULL::bigint, NULL::bigint[], NULL::text[];
        RETURN;
    END IF;
    v_command := coalesce((SELECT c.sequence FROM sf_commands c
                            WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
                            ORDER BY c.sequence DESC LIMIT 1), 0);
    RETURN QUERY SELECT true, v_command, e.r_positions, e.r_payloads
      FROM sf_insert_events(p_stream_type, p_stream_id, v_last, v_command, p_ids, p_names,
                            p_versions, p_correlations, p_causations, p_times, p_payloads) e;
END $$;

-- A projection batch: compare-and-set of the handler's position (absent counts as 0), then
-- the model writes (at most one per model) and the outbox. Returns false on a position
-- conflict, with nothing written.
CREATE OR REPLACE FUNCTION sf_commit_projection(
    p_handler text, p_expected bigint, p_position bigint,
    p_put_types text[], p_put_ids text[], p_put_states text[],
    p_delete_types text[], p_delete_ids text[],
    p_outbox_stream_types text[], p_outbox_stream_ids text[], p_outbox_ids uuid[],
    p_outbox_names text[], p_outbox_versions bigint[], p_outbox_correlations uuid[],
    p_outbox_causations uuid[], p_outbox_times timestamptz[], p_outbox_payloads text[]
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_expected = 0 THEN
        INSERT INTO sf_positions AS s (handler, position, updated_at)
        VALUES (p_handler, p_position, now())
        ON CONFLICT (handler) DO UPDATE
        SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at
        WHERE s.position = 0;
    ELSE
        UPDATE sf_positions s SET position = p_position, updated_at = now()
         WHERE s.handler = p_handler AND s.position = p_expected;
    END IF;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    DELETE FROM sf_view_models m
     USING unnest(p_delete_types, p_delete_ids) AS d(model_type, model_id)
     WHERE m.model_type = d.model_type AND m.model_id = d.model_id;
    INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at)
    SELECT u.model_type, u.model_id, u.state::json, now()
      FROM unnest(p_put_types, p_put_ids, p_put_states) AS u(model_type, model_id, state)
    ON CONFLICT (model_type, model_id) DO UPDATE
    SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;

    PERFORM sf_insert_outbox(p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids,
                             p_outbox_names, p_outbox_versions, p_outbox_correlations,
                             p_outbox_causations, p_outbox_times, p_outbox_payloads);
    RETURN true;
END $$;

-- One handled command and its inline views' updates, in one transaction and one round trip
-- (the store sends the common shape as a single statement of its own; this function carries
-- every other one):
--   1. the command, at p_expected + 1 if p_expected is the stream's head: sequences are dense,
--      so the head is p_expected exactly when the row at p_expected exists (or p_expected = 0)
--      and the unique keys refuse p_expected + 1; a resent message id (also one committed
--      concurrently) is no insert either;
--   2. the entity state and the follow-up commands (one statement for all of them);
--   3. the append lock (pg_advisory_xact_lock, held to commit, so positions become visible in
--      order), then the events after the stream's last one, read under the lock, inserted in
--      stream order by one statement (so they get their positions in that order);
--   4. each inline projection whose assumptions hold: the unit's first event got position
--      p_after[i] + 1 and stream sequence p_first_sequences[i], and the view's stored
--      position is still p_expected_positions[i] (compare-and-set, an absent row counting as
--      0); then its model writes, which arrive flattened, each tagged with the 1-based index
--      of its projection. A projection that does not hold writes nothing and is reported false
--      in r_projected; the unit commits anyway.
-- r_status is 'ok' (r_sequence, r_first_event, r_positions, r_payloads, r_projected),
-- 'duplicate' (r_sequence of the original command) or 'conflict' (nothing written). Each
-- step is its own statement: PL/pgSQL keeps their plans for the connection's lifetime.
CREATE OR REPLACE FUNCTION sf_commit_inline(
    p_lock_key bigint,
    p_stream_type text, p_stream_id text, p_expected bigint,
    p_message_id uuid, p_name text, p_version bigint, p_correlation_id uuid,
    p_causation_id uuid, p_created_at timestamptz, p_payload text,
    p_entity text,
    p_event_ids uuid[], p_event_names text[], p_event_versions bigint[],
    p_event_correlations uuid[], p_event_causations uuid[], p_event_times timestamptz[],
    p_event_payloads text[],
    p_outbox_stream_types text[], p_outbox_stream_ids text[], p_outbox_ids uuid[],
    p_outbox_names text[], p_outbox_versions bigint[], p_outbox_correlations uuid[],
    p_outbox_causations uuid[], p_outbox_times timestamptz[], p_outbox_payloads text[],
    p_handlers text[], p_expected_positions bigint[], p_after bigint[],
    p_first_sequences bigint[],
    p_put_owners int[], p_put_types text[], p_put_ids text[], p_put_states text[],
    p_delete_owners int[], p_delete_types text[], p_delete_ids text[]
) RETURNS TABLE (r_status text, r_sequence bigint, r_first_event bigint, r_positions bigint[],
                r_payloads text[], r_projected boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    v_events int := coalesce(cardinality(p_event_ids), 0);
    v_projections int := coalesce(cardinality(p_handlers), 0);
    v_position bigint;
    v_payload text;
    v_applies boolean;
BEGIN
    -- The command, at p_expected + 1 if p_expected is the stream's head: sequences are dense,
    -- so the head is p_expected exactly when the row at p_expected exists (or p_expected = 0)
    -- and the row at p_expected + 1 does not. The unique keys turn a stream that moved on, or a
    -- resent message id (also one committed concurrently), into no insert.
    IF p_expected = 0 THEN
        INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version,
                                 correlation_id, causation_id, created_at, payload)
        VALUES (p_stream_type, p_stream_id, 1, p_message_id, p_name, p_version,
                p_correlation_id, p_causation_id, p_created_at, p_payload::json)
        ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version,
                                 correlation_id, causation_id, created_at, payload)
        SELECT p_stream_type, p_stream_id, p_expected + 1, p_message_id, p_name, p_version,
               p_correlation_id, p_causation_id, p_created_at, p_payload::json
         WHERE EXISTS (SELECT FROM sf_commands c
                        WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
                          AND c.sequence = p_expected)
        ON CONFLICT DO NOTHING;
    END IF;
    IF NOT FOUND THEN
        -- Nothing written. This statement's snapshot is newer than the insert's, so it also
        -- sees a resent message id that committed concurrently.
        SELECT c.sequence INTO r_sequence FROM sf_commands c
         WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
           AND c.message_id = p_message_id;
        r_status := CASE WHEN FOUND THEN 'duplicate' ELSE 'conflict' END;
        RETURN NEXT;
        RETURN;
    END IF;
    r_sequence := p_expected + 1;

    IF p_entity IS NOT NULL THEN
        INSERT INTO sf_entities AS s (entity_type, entity_id, version, state, updated_at)
        VALUES (p_stream_type, p_stream_id, r_sequence, p_entity::json, now())
        ON CONFLICT (entity_type, entity_id) DO UPDATE
        SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
    END IF;

    IF cardinality(p_outbox_ids) > 0 THEN
        INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, version,
                               correlation_id, causation_id, created_at, payload)
        SELECT o.stream_type, o.stream_id, o.message_id, o.name, o.version, o.correlation_id,
               o.causation_id, o.created_at, o.payload::json
          FROM unnest(p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids, p_outbox_names,
                      p_outbox_versions, p_outbox_correlations, p_outbox_causations,
                      p_outbox_times, p_outbox_payloads)
               WITH ORDINALITY AS o(stream_type, stream_id, message_id, name, version,
                                    correlation_id, causation_id, created_at, payload, n)
         ORDER BY o.n;
    END IF;

    r_status := 'ok';
    r_first_event := 1;
    r_positions := '{}';
    r_payloads := '{}';
    r_projected := '{}';
    IF v_events = 0 THEN
        IF v_projections > 0 THEN
            r_projected := array_fill(false, ARRAY[v_projections]);
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;

    -- The append lock, then the events after the stream's last one (read under the lock).
    PERFORM pg_advisory_xact_lock(p_lock_key);
    IF v_events = 1 THEN
        INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id,
                               name, version, correlation_id, causation_id, created_at, payload)
        SELECT p_stream_type, p_stream_id,
               coalesce((SELECT e.sequence FROM sf_events e
                          WHERE e.stream_type = p_stream_type AND e.stream_id = p_stream_id
                          ORDER BY e.sequence DESC LIMIT 1), 0) + 1,
               r_sequence, p_event_ids[1], p_event_names[1], p_event_versions[1],
               p_event_correlations[1], p_event_causations[1], p_event_times[1],
               p_event_payloads[1]::json
        RETURNING position, sequence, payload::text INTO v_position, r_first_event, v_payload;
        r_positions := ARRAY[v_position];
        r_payloads := ARRAY[v_payload];
    ELSE
        -- One statement; rows are inserted, and so given positions, in stream order.
        WITH ev AS (
            INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence,
                                   message_id, name, version, correlation_id, causation_id,
                                   created_at, payload)
            SELECT p_stream_type, p_stream_id, h.last + e.n, r_sequence, e.message_id, e.name,
                   e.version, e.correlation_id, e.causation_id, e.created_at, e.payload::json
              FROM (SELECT coalesce((SELECT x.sequence FROM sf_events x
                                      WHERE x.stream_type = p_stream_type
                                        AND x.stream_id = p_stream_id
                                      ORDER BY x.sequence DESC LIMIT 1), 0) AS last) h,
                   unnest(p_event_ids, p_event_names, p_event_versions, p_event_correlations,
                          p_event_causations, p_event_times, p_event_payloads)
                   WITH ORDINALITY AS e(message_id, name, version, correlation_id,
                                        causation_id, created_at, payload, n)
             ORDER BY e.n
            RETURNING position, sequence, payload::text AS payload)
        SELECT min(ev.sequence), array_agg(ev.position ORDER BY ev.sequence),
               array_agg(ev.payload ORDER BY ev.sequence)
          INTO r_first_event, r_positions, r_payloads
          FROM ev;
    END IF;

    FOR i IN 1 .. v_projections LOOP
        -- The view applies only if the unit's events landed where its projection assumed.
        v_applies := coalesce(r_positions[1] = p_after[i] + 1
                              AND r_first_event = p_first_sequences[i], false);
        IF v_applies THEN
            -- The view's position, compare-and-set (an absent row counts as 0).
            IF p_expected_positions[i] = 0 THEN
                INSERT INTO sf_positions AS s (handler, position, updated_at)
                VALUES (p_handlers[i], r_positions[v_events], now())
                ON CONFLICT (handler) DO UPDATE
                SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at
                WHERE s.position = 0;
            ELSE
                UPDATE sf_positions s SET position = r_positions[v_events], updated_at = now()
                 WHERE s.handler = p_handlers[i] AND s.position = p_expected_positions[i];
            END IF;
            v_applies := FOUND;
        END IF;
        IF v_applies THEN
            IF i = ANY (p_delete_owners) THEN
                DELETE FROM sf_view_models m
                 USING unnest(p_delete_owners, p_delete_types, p_delete_ids)
                       AS d(owner, model_type, model_id)
                 WHERE d.owner = i AND m.model_type = d.model_type
                   AND m.model_id = d.model_id;
            END IF;
            IF cardinality(p_put_owners) = 1 AND p_put_owners[1] = i THEN
                INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at)
                VALUES (p_put_types[1], p_put_ids[1], p_put_states[1]::json, now())
                ON CONFLICT (model_type, model_id) DO UPDATE
                SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
            ELSIF i = ANY (p_put_owners) THEN
                INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at)
                SELECT u.model_type, u.model_id, u.state::json, now()
                  FROM unnest(p_put_owners, p_put_types, p_put_ids, p_put_states)
                       AS u(owner, model_type, model_id, state)
                 WHERE u.owner = i
                ON CONFLICT (model_type, model_id) DO UPDATE
                SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
            END IF;
        END IF;
        r_projected := r_projected || v_applies;
    END LOOP;
    RETURN NEXT;
END $$;
