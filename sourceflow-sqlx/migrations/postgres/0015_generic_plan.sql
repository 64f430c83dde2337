-- sourceflow schema v15 (Postgres): `sf_commit_units` is planned once per connection.
--
-- v14 planned it on every call, a fixed cost of each group commit that more processes, each
-- committing smaller groups, pay more often. A plan made once must stay right while the tables
-- grow from empty, so nothing in it may depend on their sizes:
-- - the stream-head check reads the stream's last command (`ORDER BY sequence DESC LIMIT 1`)
--   and compares its sequence with the expected one. Sequences are dense, so this accepts
--   exactly the units the v14 check (a command at the expected sequence exists) accepted. As
--   a scalar subquery with `LIMIT` it runs per unit and cannot become a join (the `EXISTS` could
--   become a hashed or merged semi-join over all of `sf_commands`, the plan that grew slower
--   with every command stored), and its order is the primary key's, so on empty tables the
--   planner cannot prefer the message-id index, whose order would need a sort;
-- - `enable_seqscan = off` leaves each per-unit lookup (the stream-head check, the stream's
--   last event) an index scan even when the plan is made on empty tables.
-- The arguments, the checks and the rows returned are unchanged.

CREATE OR REPLACE FUNCTION sf_commit_units(
    p_lock_key bigint, p_stream_types text[], p_stream_ids text[], p_expected bigint[],
    p_message_ids uuid[], p_names text[], p_versions bigint[], p_correlations uuid[],
    p_causations uuid[], p_times timestamptz[], p_payloads text[], p_entities text[],
    p_event_ids uuid[], p_event_names text[], p_event_versions bigint[],
    p_event_correlations uuid[], p_event_causations uuid[], p_event_times timestamptz[],
    p_event_payloads text[])
RETURNS TABLE (r_unit int, r_status text, r_sequence bigint, r_first_event bigint,
               r_positions bigint[], r_payloads text[], r_projected boolean[])
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
        WITH u AS (
            SELECT * FROM unnest(p_stream_types, p_stream_ids, p_expected, p_message_ids, p_names,
                                 p_versions, p_correlations, p_causations, p_times, p_payloads,
                                 p_entities, p_event_ids, p_event_names, p_event_versions,
                                 p_event_correlations, p_event_causations, p_event_times,
                                 p_event_payloads)
                   WITH ORDINALITY AS u(stream_type, stream_id, expected, message_id, name, version,
                                        correlation_id, causation_id, created_at, payload, entity,
                                        event_id, event_name, event_version, event_correlation,
                                        event_causation, event_time, event_payload, n)),
        cmd AS (
            INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version,
                                     correlation_id, causation_id, created_at, payload)
            SELECT u.stream_type, u.stream_id, u.expected + 1, u.message_id, u.name, u.version,
                   u.correlation_id, u.causation_id, u.created_at, u.payload::json
              FROM u
             WHERE u.expected = 0
                OR (SELECT c.sequence FROM sf_commands c
                     WHERE c.stream_type = u.stream_type AND c.stream_id = u.stream_id
                     ORDER BY c.sequence DESC LIMIT 1) = u.expected
             ORDER BY u.n
            ON CONFLICT DO NOTHING
            RETURNING stream_type, stream_id, sequence),
        written AS (
            SELECT u.*, cmd.sequence
              FROM u JOIN cmd ON cmd.stream_type = u.stream_type AND cmd.stream_id = u.stream_id),
        ent AS (
            INSERT INTO sf_entities AS s (entity_type, entity_id, version, state, updated_at)
            SELECT w.stream_type, w.stream_id, w.sequence, w.entity::json, now() FROM written w
            ON CONFLICT (entity_type, entity_id) DO UPDATE
            SET version = EXCLUDED.version, state = EXCLUDED.state,
                updated_at = EXCLUDED.updated_at),
        lk AS (SELECT pg_advisory_xact_lock(p_lock_key) FROM (SELECT FROM cmd LIMIT 1) AS first_unit),
        ev AS (
            INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id,
                                   name, version, correlation_id, causation_id, created_at,
                                   payload)
            SELECT w.stream_type, w.stream_id,
                   coalesce((SELECT e.sequence FROM sf_events e
                              WHERE e.stream_type = w.stream_type AND e.stream_id = w.stream_id
                              ORDER BY e.sequence DESC LIMIT 1), 0) + 1,
                   w.sequence, w.event_id, w.event_name, w.event_version, w.event_correlation,
                   w.event_causation, w.event_time, w.event_payload::json
              FROM written w, lk
             ORDER BY w.n
            RETURNING stream_type, stream_id, position, sequence, payload::text AS payload)
        SELECT u.n::int,
               CASE WHEN ev.position IS NULL THEN 'not_written' ELSE 'ok' END,
               cmd.sequence, ev.sequence, ARRAY[ev.position], ARRAY[ev.payload], '{}'::boolean[]
          FROM u
          LEFT JOIN cmd ON cmd.stream_type = u.stream_type AND cmd.stream_id = u.stream_id
          LEFT JOIN ev ON ev.stream_type = u.stream_type AND ev.stream_id = u.stream_id
         ORDER BY u.n;
END $$;
