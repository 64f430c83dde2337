-- sourceflow schema v1 (Postgres).
--
-- Created in the first schema of the connection's search_path (PostgresStore's `schema`
-- option sets it). Key columns use the "C" collation so that ids sort byte-wise, exactly as in
-- the other backends, whatever the database's locale.

-- The command log: every accepted command, dense sequences from 1 per stream.
CREATE TABLE sf_commands (
    stream_type    text COLLATE "C" NOT NULL,
    stream_id      text COLLATE "C" NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    message_id     uuid        NOT NULL,
    name           text        NOT NULL,
    version        bigint      NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    created_at     timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    CONSTRAINT sf_commands_pkey PRIMARY KEY (stream_type, stream_id, sequence),
    -- A resent message id is a duplicate, never a second command.
    CONSTRAINT sf_commands_message_id_key UNIQUE (stream_type, stream_id, message_id)
);

-- The event log. `position` is the global position, allocated only while holding the append
-- lock (see sf_commit), so positions become visible in order.
CREATE TABLE sf_events (
    position         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_type      text COLLATE "C" NOT NULL,
    stream_id        text COLLATE "C" NOT NULL,
    sequence         bigint      NOT NULL CHECK (sequence > 0),
    command_sequence bigint      NOT NULL,
    message_id       uuid        NOT NULL,
    name             text        NOT NULL,
    version          bigint      NOT NULL,
    correlation_id   uuid        NOT NULL,
    causation_id     uuid,
    created_at       timestamptz NOT NULL,
    payload          jsonb       NOT NULL,
    CONSTRAINT sf_events_stream_sequence_key UNIQUE (stream_type, stream_id, sequence)
);
-- The events of one command (duplicate receipts).
CREATE INDEX sf_events_by_command ON sf_events (stream_type, stream_id, command_sequence);
-- Time-range reads.
CREATE INDEX sf_events_by_time ON sf_events (created_at, position);

-- Entity states: a cache of each stream, versioned by the command sequence it reflects.
CREATE TABLE sf_entities (
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    version     bigint      NOT NULL,
    state       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_type, entity_id)
);

-- View models.
CREATE TABLE sf_view_models (
    model_type text COLLATE "C" NOT NULL,
    model_id   text COLLATE "C" NOT NULL,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_type, model_id)
);

-- The last global position each view or aggregate applied.
CREATE TABLE sf_positions (
    handler    text COLLATE "C" NOT NULL PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Follow-up commands waiting to be sent.
CREATE TABLE sf_outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_type    text        NOT NULL,
    stream_id      text        NOT NULL,
    message_id     uuid        NOT NULL,
    name           text        NOT NULL,
    version        bigint      NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    created_at     timestamptz NOT NULL,
    payload        jsonb       NOT NULL
);

-- Appends events to a stream after event sequence `p_last`, emitted by command
-- `p_command_sequence`. Returns their positions and their payloads as stored (JSONB text, so
-- that a receipt carries the same bytes as a later read), in order. The caller holds the
-- append lock.
CREATE FUNCTION sf_insert_events(
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
                p_payloads[i]::jsonb)
        RETURNING position, payload::text INTO v_position, v_payload;
        r_positions := r_positions || v_position;
        r_payloads := r_payloads || v_payload;
    END LOOP;
END $$;

-- Queues follow-up commands, in order.
CREATE FUNCTION sf_insert_outbox(
    p_stream_types text[], p_stream_ids text[], p_ids uuid[], p_names text[],
    p_versions bigint[], p_correlations uuid[], p_causations uuid[], p_times timestamptz[],
    p_payloads text[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, version,
                               correlation_id, causation_id, created_at, payload)
        VALUES (p_stream_types[i], p_stream_ids[i], p_ids[i], p_names[i], p_versions[i],
                p_correlations[i], p_causations[i], p_times[i], p_payloads[i]::jsonb);
    END LOOP;
END $$;

-- One handled command, atomically and in one round trip: duplicate check, optimistic command
-- append, entity state, outbox, then the events under the append lock.
--
-- r_status is 'ok', 'duplicate' (r_sequence is the original command's) or 'conflict' (the
-- stream's last sequence is not p_expected; nothing written).
--
-- Visibility rule: `pg_advisory_xact_lock(p_lock_key)` is taken immediately before the events
-- are inserted and held until the transaction ends, so positions are allocated and committed
-- in lock order and a reader of sf_events can never see a position before a lower one that
-- commits later. The lock is taken as late as possible to keep the serialised section short.
CREATE FUNCTION sf_commit(
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
     WHERE (SELECT coalesce(max(c.sequence), 0) FROM sf_commands c
             WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id) = p_expected;
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
        SELECT coalesce(max(e.sequence), 0) INTO v_last_event FROM sf_events e
         WHERE e.stream_type = p_stream_type AND e.stream_id = p_stream_id;
        v_events := sf_insert_events(p_stream_type, p_stream_id, v_last_event, v_sequence,
                                     p_event_ids, p_event_names, p_event_versions,
                                     p_event_correlations, p_event_causations,
                                     p_event_times, p_event_payloads);
        v_positions := v_events.r_positions;
        v_payloads := v_events.r_payloads;
    END IF;
    RETURN QUERY SELECT 'ok'::text, v_sequence, v_last_event + 1, v_positions, v_payloads;
END $$;

-- Events without a command (EventLog::append_events): under the append lock, if the stream's
-- last event sequence is p_expected. r_ok = false is a conflict, nothing written.
CREATE FUNCTION sf_append_events(
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
    SELECT coalesce(max(e.sequence), 0) INTO v_last FROM sf_events e
     WHERE e.stream_type = p_stream_type AND e.stream_id = p_stream_id;
    IF v_last <> p_expected THEN
        RETURN QUERY SELECT false, NULL::bigint, NULL::bigint[], NULL::text[];
        RETURN;
    END IF;
    SELECT coalesce(max(c.sequence), 0) INTO v_command FROM sf_commands c
     WHERE c.stream_type = p_stream_type AND c.stream_id = p_stream_id;
    RETURN QUERY SELECT true, v_command, e.r_positions, e.r_payloads
      FROM sf_insert_events(p_stream_type, p_stream_id, v_last, v_command, p_ids, p_names,
                            p_versions, p_correlations, p_causations, p_times, p_payloads) e;
END $$;

-- A projection batch: compare-and-set of the handler's position (absent counts as 0), then
-- the model writes (at most one per model) and the outbox. Returns false on a position
-- conflict, with nothing written.
CREATE FUNCTION sf_commit_projection(
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
    SELECT u.model_type, u.model_id, u.state::jsonb, now()
      FROM unnest(p_put_types, p_put_ids, p_put_states) AS u(model_type, model_id, state)
    ON CONFLICT (model_type, model_id) DO UPDATE
    SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at;

    PERFORM sf_insert_outbox(p_outbox_stream_types, p_outbox_stream_ids, p_outbox_ids,
                             p_outbox_names, p_outbox_versions, p_outbox_correlations,
                             p_outbox_causations, p_outbox_times, p_outbox_payloads);
    RETURN true;
END $$;
