-- sourceflow schema v18 (Postgres): a projection batch runs only the writes it has.
--
-- `sf_commit_projection` commits every view batch: the batches a view or aggregate projects
-- after the commit (a follower of the log, a catch-up) and, through `sf_project_group`, the
-- views' writes of every group commit. v6 ran its three writes whatever the batch held. The
-- delete of models joins the table with the keys to delete, and PL/pgSQL kept no plan for it:
-- the plan made for the keys given (usually none) always looked cheaper than one for any keys,
-- so the statement was planned again on every call, the largest fixed cost of a batch that
-- deletes nothing. Each write now runs only when the batch has rows for it. The arguments, the
-- position check and the result are unchanged.

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

    -- A write with nothing to write is not run: a statement is planned before it runs.
    IF cardinality(p_delete_ids) > 0 THEN
        DELETE FROM sf_view_models m
         USING unnest(p_delete_types, p_delete_ids) AS d(model_type, model_id)
         WHERE m.model_type = d.model_type AND m.model_id = d.model_id;
    END IF;
    IF cardinality(p_put_ids) > 0 THEN
        INSERT INTO sf_view_models AS m (model_type, model_id, state, updated_at)
        SELECT u.model_type, u.model_id, u.state::json, now()
          FROM unnest(p_put_types, p_put_ids, p_put_states) AS u(model_type, model_id, state)
        ON CONFLICT (model_type, model_id) DO UPDATE
        SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;
    END IF;
    IF cardinality(p_outbox_ids) > 0 THEN
        PERFORM sf_insert_outbox(p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids,
                                 p_outbox_names, p_outbox_versions, p_outbox_correlations,
                                 p_outbox_causations, p_outbox_times, p_outbox_payloads);
    END IF;
    RETURN true;
END $$;
