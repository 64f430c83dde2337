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
-- They return the rows of the function they wrap, one per unit, then one more row with
-- `r_unit` 0, `r_status` 'projected' and `r_projected` the outcome per projection.

-- Writes each projection whose assumption held; `p_committed` says whether every unit
-- committed with its first event at the expected sequence, `p_positions` the group's event
-- positions in group order. Model writes are tagged with the 1-based index of their projection.
CREATE OR REPLACE FUNCTION sf_project_group(
    p_committed boolean, p_positions bigint[],
    p_handlers text[], p_expected_positions bigint[], p_after bigint[],
    p_put_owners int[], p_put_types text[], p_put_ids text[], p_put_states text[],
    p_delete_owners int[], p_delete_types text[], p_delete_ids text[])
RETURNS boolean[] LANGUAGE plpgsql AS $$
DECLARE
    v_events int := coalesce(cardinality(p_positions), 0);
    v_projected boolean[] := '{}';
    v_applies boolean;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_handlers), 0) LOOP
        -- Positions rise in group order, so first and last pin every one in between.
        v_applies := p_committed AND v_events > 0
                     AND p_positions[1] = p_after[i] + 1
                     AND p_positions[v_events] = p_after[i] + v_events;
        IF v_applies THEN
            v_applies := sf_commit_projection(
                p_handlers[i], p_expected_positions[i], p_positions[v_events],
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
    RETURN v_projected;
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
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    v_committed boolean := true;
    v_positions bigint[] := '{}';
BEGIN
    FOR c IN SELECT * FROM sf_commit_units(
                 p_lock_key, p_stream_types, p_stream_ids, p_expected, p_message_ids,
                 p_names, p_versions, p_correlations, p_causations, p_times, p_payloads,
                 p_entities, p_event_ids, p_event_names, p_event_versions,
                 p_event_correlations, p_event_causations, p_event_times, p_event_payloads) x
    LOOP
        r_unit := c.r_unit; r_status := c.r_status; r_sequence := c.r_sequence;
        r_first_event := c.r_first_event; r_positions := c.r_positions;
        r_payloads := c.r_payloads; r_projected := c.r_projected;
        RETURN NEXT;
        v_committed := v_committed AND c.r_status = 'ok'
                       AND coalesce(c.r_first_event = p_first_sequences[c.r_unit], true);
        v_positions := v_positions || c.r_positions;
    END LOOP;
    r_unit := 0; r_status := 'projected'; r_sequence := NULL; r_first_event := NULL;
    r_positions := NULL; r_payloads := NULL;
    r_projected := sf_project_group(v_committed, v_positions, p_handlers, p_expected_positions,
                                    p_after, p_put_owners, p_put_types, p_put_ids, p_put_states,
                                    p_delete_owners, p_delete_types, p_delete_ids);
    RETURN NEXT;
END $$;

-- A group of any shape (`sf_commit_batch`'s JSON units, without inline projections of their
-- own), projected.
CREATE OR REPLACE FUNCTION sf_commit_batch_group(
    p_lock_key bigint, p_units jsonb,
    p_first_sequences bigint[], p_handlers text[], p_expected_positions bigint[],
    p_after bigint[], p_put_owners int[], p_put_types text[], p_put_ids text[],
    p_put_states text[], p_delete_owners int[], p_delete_types text[], p_delete_ids text[])
RETURNS TABLE (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
               r_positions bigint[], r_payloads text[], r_projected boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    v_committed boolean := true;
    v_positions bigint[] := '{}';
BEGIN
    FOR c IN SELECT * FROM sf_commit_batch(p_lock_key, p_units) x LOOP
        r_unit := c.r_unit; r_status := c.r_status; r_sequence := c.r_sequence;
        r_first_event := c.r_first_event; r_positions := c.r_positions;
        r_payloads := c.r_payloads; r_projected := c.r_projected;
        RETURN NEXT;
        v_committed := v_committed AND c.r_status = 'ok'
                       AND coalesce(c.r_first_event = p_first_sequences[c.r_unit], true);
        v_positions := v_positions || c.r_positions;
    END LOOP;
    r_unit := 0; r_status := 'projected'; r_sequence := NULL; r_first_event := NULL;
    r_positions := NULL; r_payloads := NULL;
    r_projected := sf_project_group(v_committed, v_positions, p_handlers, p_expected_positions,
                                    p_after, p_put_owners, p_put_types, p_put_ids, p_put_states,
                                    p_delete_owners, p_delete_types, p_delete_ids);
    RETURN NEXT;
END $$;
