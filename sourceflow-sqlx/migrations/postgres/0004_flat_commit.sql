-- sourceflow schema v4 (Postgres): a handled command costs a handful of statements, not twenty.
--
-- v1-v3 composed the unit of work from nested PL/pgSQL functions (sf_commit_inline called
-- sf_commit, which called sf_insert_outbox and sf_insert_events; each projection called
-- sf_commit_projection with arrays re-filtered per projection). Every nested call and every
-- statement costs executor start-up inside the server, and that overhead, not the writes, was
-- most of a command's time. sf_commit_inline is now one flat function whose common case (one
-- event, no follow-up commands, one view writing one model) runs seven statements:
--   1. the command insert, conditional on the stream's head being p_expected; the unique keys
--      turn a resent message id, or a concurrent insert at the same sequence, into no insert;
--   2. the entity upsert;
--   3. the append lock (pg_advisory_xact_lock, as before: positions become visible in order);
--   4. the event insert, taking the next stream sequence itself, returning position and
--      stored payload;
--   5-6. per inline projection: the position compare-and-set and the model upsert.
-- Multi-event units, follow-up commands and model deletes take the general statements.
-- sf_commit is sf_commit_inline without projections.
--
-- Results and statuses are unchanged: 'ok' (r_sequence, r_first_event, r_positions,
-- r_payloads, r_projected), 'duplicate' (r_sequence of the original command) or 'conflict'
-- (nothing written).

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
    v_first bigint;
    v_position bigint;
    v_payload text;
    v_applies boolean;
BEGIN
    r_sequence := p_expected + 1;
    INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version,
                             correlation_id, causation_id, created_at, payload)
    SELECT p_stream_type, p_stream_id, r_sequence, p_message_id, p_name, p_version,
           p_correlation_id, p_causation_id, p_created_at, p_payload::jsonb
     WHERE coalesce((SELECT c.sequence FROM sf_commands c
                      WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
                      ORDER BY c.sequence DESC LIMIT 1), 0) = p_expected
    -- A resent message id hits the (stream, message_id) key: nothing is inserted.
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- A resent message id (committed before, or concurrently: this statement's snapshot
        -- is newer than the insert's), or the stream moved on.
        SELECT c.sequence INTO r_sequence FROM sf_commands c
         WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
           AND c.message_id = p_message_id;
        r_status := CASE WHEN FOUND THEN 'duplicate' ELSE 'conflict' END;
        IF NOT FOUND THEN
            r_sequence := NULL;
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;

    IF p_entity IS NOT NULL THEN
        INSERT INTO sf_entities AS s (entity_type, entity_id, version, state, updated_at)
        VALUES (p_stream_type, p_stream_id, r_sequence, p_entity::jsonb, now())
        ON CONFLICT (entity_type, entity_id) DO UPDATE
        SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
    END IF;

    IF coalesce(cardinality(p_outbox_ids), 0) > 0 THEN
        INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, version,
                               correlation_id, causation_id, created_at, payload)
        SELECT o.stream_type, o.stream_id, o.message_id, o.name, o.version, o.correlation_id,
               o.causation_id, o.created_at, o.payload::jsonb
          FROM unnest(p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids, p_outbox_names,
                      p_outbox_versions, p_outbox_correlations, p_outbox_causations,
                      p_outbox_times, p_outbox_payloads)
               WITH ORDINALITY AS o(stream_type, stream_id, message_id, name, version,
                                    correlation_id, causation_id, created_at, payload, n)
         ORDER BY o.n;
    END IF;

    r_positions := '{}';
    r_payloads := '{}';
    r_first_event := 1;
    IF v_events > 0 THEN
        PERFORM pg_advisory_xact_lock(p_lock_key);
        -- One row at a time, so positions follow the stream order of the events; each insert
        -- takes the stream's next sequence itself.
        FOR i IN 1 .. v_events LOOP
            INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence,
                                   message_id, name, version, correlation_id, causation_id,
                                   created_at, payload)
            SELECT p_stream_type, p_stream_id,
                   coalesce((SELECT e.sequence FROM sf_events e
                              WHERE e.stream_type = p_stream_type
                                AND e.stream_id = p_stream_id
                              ORDER BY e.sequence DESC LIMIT 1), 0) + 1,
                   r_sequence, p_event_ids[i], p_event_names[i], p_event_versions[i],
                   p_event_correlations[i], p_event_causations[i], p_event_times[i],
                   p_event_payloads[i]::jsonb
            RETURNING position, sequence, payload::text INTO v_position, v_first, v_payload;
            IF i = 1 THEN
                r_first_event := v_first;
            END IF;
            r_positions := r_positions || v_position;
            r_payloads := r_payloads || v_payload;
        END LOOP;
    END IF;

    r_projected := '{}';
    FOR i IN 1 .. v_projections LOOP
        v_applies := v_events > 0 AND r_positions[1] = p_after[i] + 1
                     AND r_first_event = p_first_sequences[i];
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
            IF coalesce(cardinality(p_delete_owners), 0) > 0 THEN
                DELETE FROM sf_view_models m
                 USING unnest(p_delete_owners, p_delete_types, p_delete_ids)
                       AS d(owner, model_type, model_id)
                 WHERE d.owner = i AND m.model_type = d.model_type
                   AND m.model_id = d.model_id;
            END IF;
            IF cardinality(p_put_owners) = 1 AND p_put_owners[1] = i THEN
                INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at)
                VALUES (p_put_types[1], p_put_ids[1], p_put_states[1]::jsonb, now())
                ON CONFLICT (model_type, model_id) DO UPDATE
                SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
            ELSIF coalesce(cardinality(p_put_owners), 0) > 0 THEN
                INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at)
                SELECT u.model_type, u.model_id, u.state::jsonb, now()
                  FROM unnest(p_put_owners, p_put_types, p_put_ids, p_put_states)
                       AS u(owner, model_type, model_id, state)
                 WHERE u.owner = i
                ON CONFLICT (model_type, model_id) DO UPDATE
                SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
            END IF;
        END IF;
        r_projected := r_projected || v_applies;
    END LOOP;
    r_status := 'ok';
    RETURN NEXT;
END $$;

CREATE OR REPLACE FUNCTION sf_commit(
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
    p_outbox_causations uuid[], p_outbox_times timestamptz[], p_outbox_payloads text[]
) RETURNS TABLE (r_status text, r_sequence bigint, r_first_event bigint, r_positions bigint[],
                r_payloads text[])
LANGUAGE sql AS $$
    SELECT c.r_status, c.r_sequence, c.r_first_event, c.r_positions, c.r_payloads
      FROM sf_commit_inline(
        p_lock_key, p_stream_type, p_stream_id, p_expected, p_message_id, p_name, p_version,
        p_correlation_id, p_causation_id, p_created_at, p_payload, p_entity,
        p_event_ids, p_event_names, p_event_versions, p_event_correlations, p_event_causations,
        p_event_times, p_event_payloads,
        p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids, p_outbox_names,
        p_outbox_versions, p_outbox_correlations, p_outbox_causations, p_outbox_times,
        p_outbox_payloads,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL) c
$$;
