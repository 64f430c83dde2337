-- sourceflow schema v8 (Postgres): group commit. Units of work and projection batches that
-- concurrent senders of one process hand to the store together are committed by one call, in
-- one transaction: one append lock for all of them and one commit (one WAL flush).
--
-- `p_units` is a JSON array, each element an object with `n`, its 1-based place in the batch,
-- and either the arguments of `sf_commit_inline` (after the lock key) under the names below, or
-- `projection: true` and the arguments of `sf_commit_projection` (`handler`,
-- `expected_position`, `position`, the model writes under `put_types`, `put_ids`,
-- `put_states`, `delete_types`, `delete_ids`, and the outbox); a projection's row is 'ok' or
-- 'position_conflict' (nothing written). Payloads travel as JSON strings, so they arrive byte
-- for byte. Elements commit in order, each exactly as its function commits it alone: a unit
-- that conflicts with an earlier one of the batch (the same stream at the same expected
-- sequence, or the same message id) is reported 'conflict' or 'duplicate' and writes nothing,
-- and the others commit. One row per element, `r_unit` its `n`. An error aborts the whole
-- batch; the store then commits its elements one by one.
CREATE OR REPLACE FUNCTION sf_commit_batch(p_lock_key bigint, p_units jsonb)
RETURNS TABLE (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
               r_positions bigint[], r_payloads text[], r_projected boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    u record;
BEGIN
    FOR u IN
        SELECT * FROM jsonb_to_recordset(p_units) AS x(
            n int, projection boolean, handler text, expected_position bigint,
            "position" bigint, stream_type text, stream_id text, expected bigint,
            message_id uuid, name text, version bigint, correlation_id uuid,
            causation_id uuid, created_at timestamptz, payload text, entity text,
            event_ids uuid[], event_names text[], event_versions bigint[],
            event_correlations uuid[], event_causations uuid[], event_times timestamptz[],
            event_payloads text[],
            outbox_stream_types text[], outbox_stream_ids text[], outbox_ids uuid[],
            outbox_names text[], outbox_versions bigint[], outbox_correlations uuid[],
            outbox_causations uuid[], outbox_times timestamptz[], outbox_payloads text[],
            handlers text[], expected_positions bigint[], after bigint[],
            first_sequences bigint[],
            put_owners int[], put_types text[], put_ids text[], put_states text[],
            delete_owners int[], delete_types text[], delete_ids text[])
        ORDER BY x.n
    LOOP
        IF coalesce(u.projection, false) THEN
            RETURN QUERY SELECT u.n,
                   CASE WHEN sf_commit_projection(
                            u.handler, u.expected_position, u."position", u.put_types,
                            u.put_ids, u.put_states, u.delete_types, u.delete_ids,
                            u.outbox_stream_types, u.outbox_stream_ids, u.outbox_ids,
                            u.outbox_names, u.outbox_versions, u.outbox_correlations,
                            u.outbox_causations, u.outbox_times, u.outbox_payloads)
                        THEN 'ok' ELSE 'position_conflict' END,
                   NULL::bigint, NULL::bigint, NULL::bigint[], NULL::text[], NULL::boolean[];
            CONTINUE;
        END IF;
        RETURN QUERY SELECT u.n, c.r_status, c.r_sequence, c.r_first_event, c.r_positions,
                            c.r_payloads, c.r_projected
          FROM sf_commit_inline(
                   p_lock_key, u.stream_type, u.stream_id, u.expected, u.message_id, u.name,
                   u.version, u.correlation_id, u.causation_id, u.created_at, u.payload,
                   u.entity, u.event_ids, u.event_names, u.event_versions,
                   u.event_correlations, u.event_causations, u.event_times, u.event_payloads,
                   u.outbox_stream_types, u.outbox_stream_ids, u.outbox_ids, u.outbox_names,
                   u.outbox_versions, u.outbox_correlations, u.outbox_causations,
                   u.outbox_times, u.outbox_payloads, u.handlers, u.expected_positions,
                   u.after, u.first_sequences, u.put_owners, u.put_types, u.put_ids,
                   u.put_states, u.delete_owners, u.delete_types, u.delete_ids) c;
    END LOOP;
END $$;
