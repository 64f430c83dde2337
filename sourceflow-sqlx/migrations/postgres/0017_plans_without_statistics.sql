-- sourceflow schema v17 (Postgres): `sf_commit_inline`'s lookups read one row whatever the
-- statistics.
--
-- PL/pgSQL keeps a plan per connection, and on a young schema (or for good on a server without
-- autovacuum) the tables have no statistics: an equality on all three columns of one index then
-- costs the planner the same as an equality on the first two columns of another index that
-- starts with the same two, and v6's plans took the wrong one and filtered the whole stream:
-- - the stream-head check (`EXISTS` a command at the expected sequence, three columns of the
--   primary key) read the stream through the message-id key; it now reads the stream's last
--   command in primary-key order (`ORDER BY sequence DESC LIMIT 1`, as `sf_commit_units` does
--   since v15), which no other index gives without a sort. Sequences are dense, so it accepts
--   exactly the units the v6 check accepted;
-- - the lookup of a resent message id after nothing was written (three columns of the
--   message-id key) read the stream through the primary key; it now reads the first key at or
--   after (stream, message id) in the message-id key's order.
-- The arguments, the checks and the rows returned are unchanged.

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
    -- The command, at p_expected + 1 if p_expected is the stream's head (its last command in
    -- primary-key order). The unique keys turn a stream that moved on, or a resent message id
    -- (also one committed concurrently), into no insert.
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
         WHERE (SELECT c.sequence FROM sf_commands c
                 WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
                 ORDER BY c.sequence DESC LIMIT 1) = p_expected
        ON CONFLICT DO NOTHING;
    END IF;
    IF NOT FOUND THEN
        -- Nothing written. This statement's snapshot is newer than the insert's, so it also
        -- sees a resent message id that committed concurrently.
        SELECT c.sequence INTO r_sequence
          FROM (SELECT stream_type, stream_id, message_id, sequence FROM sf_commands
                 WHERE (stream_type, stream_id, message_id)
                       >= (p_stream_type, p_stream_id, p_message_id)
                 ORDER BY stream_type, stream_id, message_id LIMIT 1) c
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
