-- sourceflow schema v3 (Postgres): a handled command and its views' updates in one transaction.
--
-- sf_commit_inline runs sf_commit and then, in the same transaction and still under the append
-- lock, each inline projection whose assumptions hold: the unit's first event got position
-- p_after[i] + 1 and stream sequence p_first_sequences[i], and the view's stored position is
-- still p_expected_positions[i] (sf_commit_projection's compare-and-set). A projection that
-- does not hold writes nothing and is reported false in r_projected; the unit commits anyway.
--
-- Model writes arrive flattened, each tagged with the 1-based index of its projection.
CREATE FUNCTION sf_commit_inline(
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
    v record;
    v_projected boolean[] := '{}';
    v_applies boolean;
    v_count int := coalesce(cardinality(p_handlers), 0);
    v_events int;
BEGIN
    SELECT * INTO v FROM sf_commit(
        p_lock_key, p_stream_type, p_stream_id, p_expected, p_message_id, p_name, p_version,
        p_correlation_id, p_causation_id, p_created_at, p_payload, p_entity,
        p_event_ids, p_event_names, p_event_versions, p_event_correlations, p_event_causations,
        p_event_times, p_event_payloads,
        p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids, p_outbox_names,
        p_outbox_versions, p_outbox_correlations, p_outbox_causations, p_outbox_times,
        p_outbox_payloads);
    v_events := coalesce(cardinality(v.r_positions), 0);
    FOR i IN 1 .. v_count LOOP
        v_applies := v.r_status = 'ok' AND v_events > 0
            AND v.r_positions[1] = p_after[i] + 1 AND v.r_first_event = p_first_sequences[i];
        IF v_applies THEN
            v_applies := sf_commit_projection(
                p_handlers[i], p_expected_positions[i], v.r_positions[v_events],
                ARRAY(SELECT t FROM unnest(p_put_owners, p_put_types) WITH ORDINALITY
                          AS x(o, t, n) WHERE o = i ORDER BY n),
                ARRAY(SELECT t FROM unnest(p_put_owners, p_put_ids) WITH ORDINALITY
                          AS x(o, t, n) WHERE o = i ORDER BY n),
                ARRAY(SELECT t FROM unnest(p_put_owners, p_put_states) WITH ORDINALITY
                          AS x(o, t, n) WHERE o = i ORDER BY n),
                ARRAY(SELECT t FROM unnest(p_delete_owners, p_delete_types) WITH ORDINALITY
                          AS x(o, t, n) WHERE o = i ORDER BY n),
                ARRAY(SELECT t FROM unnest(p_delete_owners, p_delete_ids) WITH ORDINALITY
                          AS x(o, t, n) WHERE o = i ORDER BY n),
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        END IF;
        v_projected := v_projected || v_applies;
    END LOOP;
    RETURN QUERY SELECT v.r_status, v.r_sequence, v.r_first_event, v.r_positions, v.r_payloads,
                        v_projected;
END $$;
