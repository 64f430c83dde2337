-- sourceflow schema v2 (Postgres): the stream-head lookups in sf_commit and sf_append_events
-- read one index entry however long the stream is.
--
-- v1 took the head as an aggregate over the stream's rows. Inside a PL/pgSQL function those
-- statements run as cached generic plans, and on a table without statistics the planner may
-- pick the (stream, command_sequence) index and aggregate every row of the stream, so a
-- command's cost grew with its stream's length. `ORDER BY sequence DESC LIMIT 1` always reads
-- the unique (stream, sequence) index backwards and stops at the first entry.

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
LANGUAGE plpgsql AS $$
DECLARE
    v_sequence bigint;
    v_last_event bigint := 0;
    v_events record;
    v_positions bigint[] := '{}';
    v_payloads text[] := '{}';
BEGIN
    SELECT c.sequence INTO v_sequence FROM sf_commands c
     WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
       AND c.message_id = p_message_id;
    IF FOUND THEN
        RETURN QUERY SELECT 'duplicate'::text, v_sequence, NULL::bigint, NULL::bigint[],
                            NULL::text[];
        RETURN;
    END IF;

    INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version,
                             correlation_id, causation_id, created_at, payload)
    SELECT p_stream_type, p_stream_id, p_expected + 1, p_message_id, p_name, p_version,
           p_correlation_id, p_causation_id, p_created_at, p_payload::jsonb
     WHERE coalesce((SELECT c.sequence FROM sf_commands c
                      WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
                      ORDER BY c.sequence DESC LIMIT 1), 0) = p_expected;
    IF NOT FOUND THEN
        -- The stream moved on. If it moved on with this very message (a concurrent duplicate
        -- committed between the check above and the insert), that is a duplicate: this
        -- statement's snapshot is newer and sees it.
        SELECT c.sequence INTO v_sequence FROM sf_commands c
         WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id
           AND c.message_id = p_message_id;
        IF FOUND THEN
            RETURN QUERY SELECT 'duplicate'::text, v_sequence, NULL::bigint, NULL::bigint[],
                                NULL::text[];
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::bigint, NULL::bigint, NULL::bigint[],
                                NULL::text[];
        END IF;
        RETURN;
    END IF;
    v_sequence := p_expected + 1;

    IF p_entity IS NOT NULL THEN
        INSERT INTO sf_entities AS s (entity_type, entity_id, version, state, updated_at)
        VALUES (p_stream_type, p_stream_id, v_sequence, p_entity::jsonb, now())
        ON CONFLICT (entity_type, entity_id) DO UPDATE
        SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
    END IF;

    PERFORM sf_insert_outbox(p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids,
                             p_outbox_names, p_outbox_versions, p_outbox_correlations,
                             p_outbox_causations, p_outbox_times, p_outbox_payloads);

    IF coalesce(cardinality(p_event_ids), 0) > 0 THEN
        PERFORM pg_advisory_xact_lock(p_lock_key);
        v_last_event := coalesce((SELECT e.sequence FROM sf_events e
                                  WHERE e.stream_type = p_stream_type
                                    AND e.stream_id = p_stream_id
                                  ORDER BY e.sequence DESC LIMIT 1), 0);
        v_events := sf_insert_events(p_stream_type, p_stream_id, v_last_event, v_sequence,
                                     p_event_ids, p_event_names, p_event_versions,
                                     p_event_correlations, p_event_causations,
                                     p_event_times, p_event_payloads);
        v_positions := v_events.r_positions;
        v_payloads := v_events.r_payloads;
    END IF;
    RETURN QUERY SELECT 'ok'::text, v_sequence, v_last_event + 1, v_positions, v_payloads;
END $$;

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
