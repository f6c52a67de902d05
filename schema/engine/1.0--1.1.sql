/* schema/engine/1.0--1.1.sql: the engine, from 1.0 to 1.1; the Makefile appends schema/example/1.0--1.1.sql to make saga--1.0--1.1.sql */

\echo Use "ALTER EXTENSION saga UPDATE TO '1.1'" to load this file. \quit

/*
 * 1.1 adds what a DBA needs to run sagas in production: views of the
 * workers and cumulative counters (from shared memory), the backlog per
 * consumer, a Mermaid rendering of a saga's trace, retention of finished
 * sagas (done by the workers, see saga.retention), and pg_dump support.
 * Nothing in 1.0's tables changes shape but for two new columns.
 */

------------------------------------------------------------------------------
-- Observability
------------------------------------------------------------------------------

CREATE FUNCTION saga_worker_status(OUT pid integer, OUT dboid oid, OUT state text,
                                   OUT deliveries bigint, OUT failures bigint,
                                   OUT batches bigint, OUT started_at timestamptz,
                                   OUT last_activity timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'saga_worker_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

CREATE VIEW saga_workers AS
    SELECT w.pid, d.datname AS database, w.state, w.deliveries, w.failures,
           w.batches, w.started_at, w.last_activity
      FROM saga_worker_status() w
      LEFT JOIN pg_database d ON d.oid = w.dboid;
COMMENT ON VIEW saga_workers IS
'the launcher and every database''s workers, from shared memory: pid, database, state (idle, busy, starting, stopping), work done, last activity';

CREATE FUNCTION saga_counters(OUT sagas_started bigint, OUT sagas_completed bigint,
                              OUT sagas_failed bigint, OUT sagas_aborted bigint,
                              OUT compensations bigint, OUT events_published bigint,
                              OUT deliveries bigint, OUT steps bigint,
                              OUT retries bigint, OUT dead_letters bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'saga_counters'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

CREATE VIEW saga_stats AS
    SELECT current_database() AS database, c.*,
           (SELECT count(*) FROM saga_worker_status() w
             WHERE w.dboid = (SELECT oid FROM pg_database WHERE datname = current_database()))
             AS workers
      FROM saga_counters() c;
COMMENT ON VIEW saga_stats IS
'this database''s cumulative counters since the server started (NULL without shared_preload_libraries), in one row';

CREATE VIEW saga_backlog AS
    SELECT 'deliveries'::text AS kind, s.consumer,
           count(d.id) AS pending,
           min(e.published_at) AS oldest,
           coalesce(now() - min(e.published_at), interval '0') AS lag,
           p.consumer IS NOT NULL AS paused
      FROM saga.subscription s
      LEFT JOIN saga.delivery d ON d.subscription_id = s.id AND d.status = 'pending'
      LEFT JOIN saga.event e ON e.id = d.event_id
      LEFT JOIN saga.paused_consumer p ON p.consumer = s.consumer
     GROUP BY s.consumer, p.consumer
    UNION ALL
    SELECT 'steps', ds.service,
           count(*), min(i.started_at), now() - min(i.started_at),
           p.consumer IS NOT NULL
      FROM saga.instance i
      JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version
       AND ds.step_no = i.step
      LEFT JOIN saga.paused_consumer p ON p.consumer = ds.service
     WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating', 'stuck')
     GROUP BY ds.service, p.consumer;
COMMENT ON VIEW saga_backlog IS
'per consumer (choreography) and service (orchestration): work waiting, the oldest item and the lag';

------------------------------------------------------------------------------
-- The trace as a Mermaid sequence diagram
------------------------------------------------------------------------------

-- Mermaid reads ';' and '#' in a message as syntax: write them as entities
-- (through a placeholder, so that the ';' of '#35;' is not escaped again).
CREATE FUNCTION saga.mermaid_text(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT replace(replace(translate(value, E'#\n\r', E'\x01  '), ';', '#59;'),
                   E'\x01', '#35;')
$$;

CREATE FUNCTION saga_trace_mermaid(saga_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    diagram text;
    i saga.instance;
BEGIN
    SELECT * INTO i FROM saga.instance WHERE id = saga_trace_mermaid.saga_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'saga % does not exist', coalesce(saga_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;

    WITH t AS (SELECT * FROM @extschema@.saga_trace(saga_trace_mermaid.saga_id)),
         names AS (SELECT name, min(seq) AS first
                     FROM (SELECT sender AS name, seq FROM t
                           UNION ALL
                           SELECT receiver, seq FROM t) x
                    GROUP BY name),
         p AS (SELECT name, 'p' || row_number() OVER (ORDER BY first, name) AS alias
                 FROM names)
    SELECT string_agg(line, E'\n' ORDER BY ord1, ord2)
      INTO diagram
      FROM (SELECT 0 AS ord1, 0::bigint AS ord2, 'sequenceDiagram' AS line
            UNION ALL
            SELECT 1, names.first, format('    participant %s as %s', p.alias, saga.mermaid_text(p.name))
              FROM p JOIN names USING (name)
            UNION ALL
            SELECT 2, t.seq, format('    %s->>%s: %s', ps.alias, pr.alias, saga.mermaid_text(t.message))
              FROM t
              JOIN p ps ON ps.name = t.sender
              JOIN p pr ON pr.name = t.receiver
            UNION ALL
            SELECT 3, 0, format('    Note over %s: %s', p.alias,
                                saga.mermaid_text(CASE i.status
                                                  WHEN 'pending' THEN 'still running'
                                                  WHEN 'completed' THEN 'completed'
                                                  ELSE 'failed: ' || coalesce(i.reason, 'no reason given') END))
              FROM p
             WHERE p.name = i.saga_type) lines;
    RETURN diagram;
END
$$;
COMMENT ON FUNCTION saga_trace_mermaid(bigint) IS
'the saga''s trace as a Mermaid sequenceDiagram, ending with a note of its outcome';

------------------------------------------------------------------------------
-- Retention
------------------------------------------------------------------------------

ALTER TABLE saga.instance ADD COLUMN purged_at timestamptz;
CREATE INDEX instance_finished_idx ON saga.instance (finished_at)
    WHERE status <> 'pending' AND purged_at IS NULL;
CREATE INDEX event_loose_idx ON saga.event (id) WHERE saga_id IS NULL;

CREATE FUNCTION saga_purge(older_than interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'saga_purge'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_purge(interval) IS
'remove now the events, deliveries and step records of sagas finished longer ago than older_than (default saga.retention); returns how many sagas and loose events went';
REVOKE ALL ON FUNCTION saga_purge(interval) FROM PUBLIC;

------------------------------------------------------------------------------
-- pg_dump
------------------------------------------------------------------------------

/*
 * The engine's tables are the state of users' sagas: pg_dump must dump
 * their rows, except those the install script itself creates (the example
 * order saga's subscriptions and definition), which CREATE EXTENSION makes
 * again on restore.
 */
ALTER TABLE saga.subscription ADD COLUMN builtin boolean NOT NULL DEFAULT false;
ALTER TABLE saga.definition ADD COLUMN builtin boolean NOT NULL DEFAULT false;
ALTER TABLE saga.definition_step ADD COLUMN builtin boolean NOT NULL DEFAULT false;

UPDATE saga.subscription s SET builtin = true
 WHERE s.handler IN (SELECT d.objid::regprocedure
                       FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass
                        AND d.refclassid = 'pg_extension'::regclass
                        AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga')
                        AND d.deptype = 'e');

SELECT pg_extension_config_dump('saga.subscription', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('saga.definition', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('saga.definition_step', 'WHERE NOT builtin');
-- one call per statement: each call updates pg_extension's row
SELECT pg_extension_config_dump('saga.instance', '');
SELECT pg_extension_config_dump('saga.event', '');
SELECT pg_extension_config_dump('saga.delivery', '');
SELECT pg_extension_config_dump('saga.step_run', '');
SELECT pg_extension_config_dump('saga.paused_consumer', '');
SELECT pg_extension_config_dump('saga.trace_seq', '');
SELECT pg_extension_config_dump('saga.instance_id_seq', '');
SELECT pg_extension_config_dump('saga.subscription_id_seq', '');
SELECT pg_extension_config_dump('saga.event_id_seq', '');
SELECT pg_extension_config_dump('saga.delivery_id_seq', '');

-- The workers' pids and all databases' oids, and the counters, are for the
-- DBA, like the views on them.
REVOKE ALL ON FUNCTION saga_worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_counters() FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA saga FROM PUBLIC;

CREATE OR REPLACE VIEW saga_instances AS
    SELECT i.id, i.saga_type, i.pattern, i.status, i.phase, i.step,
           i.reason, i.attempts, i.last_error, i.data, i.deadline, i.aborted_at,
           i.started_at, i.finished_at, i.finished_at - i.started_at AS duration,
           i.purged_at
      FROM saga.instance i;
