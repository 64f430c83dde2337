-- sourceflow schema v13 (Postgres): group commit with the views' projection of the group.
--
-- Under concurrency the runtime hands the store a group of units of work together with, per
-- view, the view's projection of the whole group: computed before the commit on the
-- assumption that every unit commits and the group's events take the positions right after
-- the view's (`p_after[i] + 1 ..`), in group order, each unit's first event at the stream
-- sequence in `p_first_sequences` (NULL: a unit without events). The functions below commit
-- the units exactly as `sf_commit_units` (v12) or `sf_commit_batch` (v8) do, and then write
-- each projection whose assumption held, compare-and-set on the view's position
-- (`sf_commit_projection`), in the same transaction: one append lock, one WAL flush for the
-- commands and their views. A projection whose assumption failed writes nothing; the units
-- still commit.
--
-- They return the rows of the function they wrap, one per unit in group order, then one more
-- row with `r_unit` 0, `r_status` 'projected' and `r_projected` the outcome per projection
-- (`sf_project_group`, shared by both).

-- A unit's row as the wrapped functions return it.
CREATE TYPE sf_unit_row AS (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
                            r_positions bigint[], r_payloads text[], r_projected boolean[]);

-- The group's unit rows (`p_rows`, committed), then the projected row: writes each projection
-- whose assumption held. Model writes are tagged with the 1-based index of their projection.
CREATE OR REPLACE FUNCTION sf_project_group(
    p_rows sf_unit_row[], p_first_sequences bigint[],
    p_handlers text[], p_expected_positions bigint[], p_after bigint[],
    p_put_owners int[], p_put_types text[], p_put_ids text[], p_put_states text[],
    p_delete_owners int[], p_delete_types text[], p_delete_ids text[])
RETURNS TABLE (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
               r_positions bigint[], r_payloads text[], r_projected boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    v_committed boolean;
    v_positions bigint[];
    v_events int;
    v_projected boolean[] := '{}';
    v_applies boolean;
BEGIN
    -- Every unit committed, its first event at the expected stream sequence; the group's
    -- event positions in group order.
    SELECT coalesce(bool_and(u.r_status = 'ok'
                             AND coalesce(u.r_first_event = p_first_sequences[u.r_unit], true)),
                    true),
           coalesce(array_agg(e.pos ORDER BY u.r_unit, e.n) FILTER (WHERE e.pos IS NOT NULL),
                    '{}')
      INTO v_committed, v_positions
      FROM unnest(p_rows) AS u
      LEFT JOIN LATERAL unnest(u.r_positions) WITH ORDINALITY AS e(pos, n) ON true;
    v_events := cardinality(v_positions);
    FOR i IN 1 .. coalesce(cardinality(p_handlers), 0) LOOP
        -- Positions rise in group order, so first and last pin every one in between.
        v_applies := v_committed AND v_events > 0
                     AND v_positions[1] = p_after[i] + 1
                     AND v_positions[v_events] = p_after[i] + v_events;
        IF v_applies THEN
            v_applies := sf_commit_projection(
                p_handlers[i], p_expected_positions[i], v_positions[v_events],
                ARRAY(SELECT p_put_types[j] FROM generate_subscripts(p_put_owners, 1) AS j
                       WHERE p_put_owners[j] = i ORDER BY j),
                ARRAY(SELECT p_put_ids[j] FROM generate_subscripts(p_put_owners, 1) AS j
                       WHERE p_put_owners[j] = i ORDER BY j),
                ARRAY(SELECT p_put_states[j] FROM generate_subscripts(p_put_owners, 1) AS j
                       WHERE p_put_owners[j] = i ORDER BY j),
                ARRAY(SELECT p_delete_types[j] FROM generate_subscripts(p_delete_owners, 1) AS j
                       WHERE p_delete_owners[j] = i ORDER BY j),
                ARRAY(SELECT p_delete_ids[j] FROM generate_subscripts(p_delete_owners, 1) AS j
                       WHERE p_delete_owners[j] = i ORDER BY j),
                '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
        END IF;
        v_projected := v_projected || v_applies;
    END LOOP;
    RETURN QUERY SELECT u.r_unit, u.r_status, u.r_sequence, u.r_first_event, u.r_positions,
                        u.r_payloads, u.r_projected
                   FROM unnest(p_rows) AS u ORDER BY u.r_unit;
    RETURN QUERY SELECT 0, 'projected'::text, NULL::bigint, NULL::bigint, NULL::bigint[],
                        NULL::text[], v_projected;
END $$;

-- A group of the common shape on distinct streams (`sf_commit_units`' arguments), projected.
CREATE OR REPLACE FUNCTION sf_commit_units_group(
    p_lock_key bigint, p_stream_types text[], p_stream_ids text[], p_expected bigint[],
    p_message_ids uuid[], p_names text[], p_versions bigint[], p_correlations uuid[],
    p_causations uuid[], p_times timestamptz[], p_payloads text[], p_entities text[],
    p_event_ids uuid[], p_event_names text[], p_event_versions bigint[],
    p_event_correlations uuid[], p_event_causations uuid[], p_event_times timestamptz[],
    p_event_payloads text[],
    p_first_sequences bigint[], p_handlers text[], p_expected_positions bigint[],
    p_after bigint[], p_put_owners int[], p_put_types text[], p_put_ids text[],
    p_put_states text[], p_delete_owners int[], p_delete_types text[], p_delete_ids text[])
RETURNS TABLE (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
               r_positions bigint[], r_payloads text[], r_projected boolean[])
LANGUAGE sql AS $$
    SELECT * FROM sf_project_group(
        ARRAY(SELECT ROW(c.*)::sf_unit_row
                FROM sf_commit_units(
                         p_lock_key, p_stream_types, p_stream_ids, p_expected, p_message_ids,
                         p_names, p_versions, p_correlations, p_causations, p_times,
                         p_payloads, p_entities, p_event_ids, p_event_names, p_event_versions,
                         p_event_correlations, p_event_causations, p_event_times,
                         p_event_payloads) AS c),
        p_first_sequences, p_handlers, p_expected_positions, p_after, p_put_owners,
        p_put_types, p_put_ids, p_put_states, p_delete_owners, p_delete_types, p_delete_ids)
$$;

-- A group of any shape (`sf_commit_batch`'s JSON units, without inline projections of their
-- own), projected.
CREATE OR REPLACE FUNCTION sf_commit_batch_group(
    p_lock_key bigint, p_units jsonb,
    p_first_sequences bigint[], p_handlers text[], p_expected_positions bigint[],
    p_after bigint[], p_put_owners int[], p_put_types text[], p_put_ids text[],
    p_put_states text[], p_delete_owners int[], p_delete_types text[], p_delete_ids text[])
RETURNS TABLE (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
               r_positions bigint[], r_payloads text[], r_projected boolean[])
LANGUAGE sql AS $$
    SELECT * FROM sf_project_group(
        ARRAY(SELECT ROW(c.*)::sf_unit_row FROM sf_commit_batch(p_lock_key, p_units) AS c),
        p_first_sequences, p_handlers, p_expected_positions, p_after, p_put_owners,
        p_put_types, p_put_ids, p_put_states, p_delete_owners, p_delete_types, p_delete_ids)
$$;
