/* schema/engine/1.1--1.2.sql: the engine, from 1.1 to 1.2; the Makefile appends schema/example/1.1--1.2.sql to make saga--1.1--1.2.sql */

\echo Use "ALTER EXTENSION saga UPDATE TO '1.2'" to load this file. \quit

/*
 * 1.2 keeps the engine's promise off the beaten path: every saga ends,
 * completed or compensated; nothing forward runs after an abort; nothing
 * is applied twice.  Each section below belongs to one concern.
 */

------------------------------------------------------------------------------
-- Sagas end by the engine's own rules (aborts, deadlines, late events)
------------------------------------------------------------------------------

/*
 * An aborted choreographed saga fails by the engine's own rule once its
 * compensation is over, with the abort's reason (kept in reason from the
 * abort on); forward work of a saga that is over is cancelled when
 * claimed; an orchestrated saga's deadline is checked around each step.
 * These are rules of the C code: no table changes shape for them.
 */

-- Every failed attempt is kept, for the trace: a step's in step_run
-- (outcome 'retry', with its attempt number), a delivery's here.
ALTER TABLE saga.step_run ADD COLUMN attempt integer;
ALTER TABLE saga.step_run DROP CONSTRAINT step_run_outcome_check;
ALTER TABLE saga.step_run ADD CONSTRAINT step_run_outcome_check
    CHECK (outcome IN ('ok', 'rejected', 'error', 'retry'));
COMMENT ON COLUMN saga.step_run.outcome IS
'ok; rejected (a business no); error (failed saga.max_attempts times: compensated as a rejection); retry (an attempt that failed and was tried again, or, for a compensation, left stuck)';
COMMENT ON COLUMN saga.step_run.attempt IS 'which attempt at the step this was, from 1';

CREATE TABLE saga.delivery_failure (
    delivery_id bigint NOT NULL,
    saga_id     bigint,
    attempt     integer NOT NULL,
    error       text NOT NULL,
    dead        boolean NOT NULL,
    seq         bigint NOT NULL DEFAULT nextval('saga.trace_seq'),
    failed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX delivery_failure_saga_id_idx ON saga.delivery_failure (saga_id);
CREATE INDEX delivery_failure_delivery_id_idx ON saga.delivery_failure (delivery_id);
COMMENT ON TABLE saga.delivery_failure IS
'every failed attempt at a delivery (lock conflicts aside), the last of a dead letter marked dead';
REVOKE ALL ON saga.delivery_failure FROM PUBLIC;
SELECT pg_extension_config_dump('saga.delivery_failure', '');

-- Subscriptions for one saga type only.
ALTER TABLE saga.subscription ADD COLUMN saga_type text;
COMMENT ON COLUMN saga.subscription.saga_type IS
'NULL: events of every saga (and outside sagas); else only events of sagas of this type';

-- saga_subscribe() gets a sixth argument; the grants DBAs gave on the old
-- one are given again on the new one.
CREATE TEMPORARY TABLE saga_subscribe_grants AS
    SELECT a.grantee::regrole::text AS grantee
      FROM pg_proc p, aclexplode(p.proacl) a
     WHERE p.oid = 'saga_subscribe(text, text, regprocedure, text, boolean)'::regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;
DROP FUNCTION saga_subscribe(text, text, regprocedure, text, boolean);
CREATE FUNCTION saga_subscribe(consumer text, event_type text, handler regprocedure,
                               on_failure text DEFAULT NULL, forward boolean DEFAULT true,
                               saga_type text DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'saga_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean, text) IS
'make consumer handle every later event of event_type with handler(saga.event), run as the calling role; on_failure: event published when a delivery is dead-lettered; forward = false for a compensation, which still runs after its saga is aborted; saga_type: only events of sagas of that type';
REVOKE ALL ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean, text) FROM PUBLIC;
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT grantee FROM saga_subscribe_grants LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.saga_subscribe(text, text, regprocedure, text, boolean, text) TO %s',
                       g.grantee);
    END LOOP;
END
$$;
DROP TABLE saga_subscribe_grants;

CREATE OR REPLACE VIEW saga_subscriptions AS
    SELECT s.id, s.consumer, s.event_type, s.handler, s.owner, s.on_failure, s.forward,
           p.consumer IS NOT NULL AS paused, s.created_at, s.saga_type
      FROM saga.subscription s
      LEFT JOIN saga.paused_consumer p ON p.consumer = s.consumer;

-- A delivery that keeps meeting a lock another session holds notes since
-- when (see "Hanging handlers, held locks" below): saga_stuck shows it.
ALTER TABLE saga.delivery ADD COLUMN blocked_since timestamptz;
COMMENT ON COLUMN saga.delivery.blocked_since IS
'since when its handler keeps meeting a lock held by another transaction; NULL once it got past it';
-- ... and which session held it, as far as the worker could tell.
ALTER TABLE saga.delivery ADD COLUMN blocked_by int;
COMMENT ON COLUMN saga.delivery.blocked_by IS
'the pid of the session holding the lock its handler last waited for while blocked (blocked_since), when seen; NULL with blocked_since, or when not seen';
-- An orchestrated saga's step can be blocked so too.
ALTER TABLE saga.instance ADD COLUMN blocked_since timestamptz;
COMMENT ON COLUMN saga.instance.blocked_since IS
'since when its current step keeps meeting a lock held by another transaction; NULL once it got past it';
ALTER TABLE saga.instance ADD COLUMN blocked_by int;
COMMENT ON COLUMN saga.instance.blocked_by IS
'the pid of the session holding the lock its step last waited for while blocked (blocked_since), when seen; NULL with blocked_since, or when not seen';

-- saga_stuck changes in several ways in 1.2; its one new definition is
-- further down ("What is stuck"), once everything it shows exists.

/*
 * Who starts a saga, as its trace shows it: by default a "client" that
 * sends "start" and is answered with the saga's status.  A saga type may
 * name them otherwise, per owner (the example's orders come from a
 * "customer" who sends "POST /orders" and is answered "201 Created" or
 * "500 Internal Server Error").  1.1 had the example's labels written into
 * saga_trace itself.
 */
CREATE TABLE saga.trace_client (
    saga_type         text NOT NULL,
    owner             regrole NOT NULL,
    client            text NOT NULL,
    start_message     text NOT NULL,
    completed_message text NOT NULL,
    failed_message    text NOT NULL,
    builtin           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (saga_type, owner)
);
COMMENT ON TABLE saga.trace_client IS
'how the traces of owner''s sagas of saga_type name the client that starts them, its request and the answers it gets (without a row: client, start, and the saga''s status)';
REVOKE ALL ON saga.trace_client FROM PUBLIC;
SELECT pg_extension_config_dump('saga.trace_client', 'WHERE NOT builtin');

/*
 * The trace shows failed attempts: a step's as its request and a 500
 * answer naming the attempt and the error (and, for the last, that the
 * step was given up), a delivery's as an arrow from the broker naming the
 * attempt (or the dead letter) and the error.  Its
 * client's labels come from saga.trace_client.
 */
CREATE OR REPLACE FUNCTION saga_trace(saga_id bigint)
RETURNS TABLE (seq integer, sender text, receiver text, message text, at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (row_number() OVER (ORDER BY t.s))::integer, t.sender, t.receiver, t.message, t.at
      FROM (SELECT i.start_seq AS s, coalesce(c.client, 'client') AS sender,
                   i.saga_type AS receiver, coalesce(c.start_message, 'start') AS message,
                   i.started_at AS at
              FROM saga.instance i
              LEFT JOIN saga.trace_client c ON c.saga_type = i.saga_type AND c.owner = i.owner
             WHERE i.id = saga_trace.saga_id
            UNION ALL
            SELECT e.seq, e.publisher, 'broker', e.event_type, e.published_at
              FROM saga.event e
             WHERE e.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT d.seq, 'broker', coalesce(s.consumer, '(unsubscribed)'), e.event_type, d.delivered_at
              FROM saga.event e
              JOIN saga.delivery d ON d.event_id = e.id
              LEFT JOIN saga.subscription s ON s.id = d.subscription_id
             WHERE e.saga_id = saga_trace.saga_id AND d.status = 'done'
            UNION ALL
            SELECT f.seq, 'broker', coalesce(s.consumer, '(unsubscribed)'),
                   e.event_type ||
                   CASE WHEN f.dead THEN ' (dead letter after attempt ' || f.attempt || ': '
                        ELSE ' (attempt ' || f.attempt || ' failed: ' END || f.error || ')',
                   f.failed_at
              FROM saga.delivery_failure f
              JOIN saga.delivery d ON d.id = f.delivery_id
              JOIN saga.event e ON e.id = d.event_id
              LEFT JOIN saga.subscription s ON s.id = d.subscription_id
             WHERE f.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT r.request_seq, i.saga_type, r.service, r.request, r.started_at
              FROM saga.step_run r
              JOIN saga.instance i ON i.id = r.saga_id
             WHERE r.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT r.response_seq, r.service, i.saga_type,
                   CASE r.outcome WHEN 'ok' THEN '200 OK'
                                  WHEN 'rejected' THEN '400 Bad Request'
                                  WHEN 'retry' THEN '500 Internal Server Error (attempt '
                                                    || r.attempt || ' failed: ' || r.detail || ')'
                                  ELSE '500 Internal Server Error'
                                       || coalesce(' (attempt ' || r.attempt || ' failed, given up: '
                                                   || r.detail || ')', '') END,
                   r.finished_at
              FROM saga.step_run r
              JOIN saga.instance i ON i.id = r.saga_id
             WHERE r.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT i.finish_seq, i.saga_type, coalesce(c.client, 'client'),
                   CASE WHEN c.client IS NULL THEN i.status
                        WHEN i.status = 'completed' THEN c.completed_message
                        ELSE c.failed_message END,
                   i.finished_at
              FROM saga.instance i
              LEFT JOIN saga.trace_client c ON c.saga_type = i.saga_type AND c.owner = i.owner
             WHERE i.id = saga_trace.saga_id AND i.finish_seq IS NOT NULL) t
     ORDER BY t.s
$$;


------------------------------------------------------------------------------
-- Workers: why they exit
------------------------------------------------------------------------------

-- A worker that meets an error outside the subtransaction of a handler or
-- step (its batch's own bookkeeping, a deadline sweep) exits, and the
-- launcher starts another after a delay.  Before exiting it records the
-- error in shared memory, per database; saga_worker_status() gains four
-- columns for it, and a row (state 'exited') for a database whose workers
-- all exited so.  A function's OUT columns cannot change in place: the
-- function and the two views on it are made again, with the same columns
-- first (as pg_stat_statements' upgrades do: privileges granted on the
-- views must be granted again).
DROP VIEW saga_stats;
DROP VIEW saga_workers;
DROP FUNCTION saga_worker_status();

CREATE FUNCTION saga_worker_status(OUT pid integer, OUT dboid oid, OUT state text,
                                   OUT deliveries bigint, OUT failures bigint,
                                   OUT batches bigint, OUT started_at timestamptz,
                                   OUT last_activity timestamptz,
                                   OUT last_error text, OUT last_error_sqlstate text,
                                   OUT last_error_at timestamptz,
                                   OUT last_error_pid integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'saga_worker_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION saga_worker_status() FROM PUBLIC;

CREATE VIEW saga_workers AS
    SELECT w.pid, d.datname AS database, w.state, w.deliveries, w.failures,
           w.batches, w.started_at, w.last_activity,
           w.last_error, w.last_error_sqlstate, w.last_error_at, w.last_error_pid
      FROM saga_worker_status() w
      LEFT JOIN pg_database d ON d.oid = w.dboid;
COMMENT ON VIEW saga_workers IS
'the launcher and every database''s workers, from shared memory: pid, database, state (idle, busy, starting, stopping; exited: none runs, the last exited on an error), work done, last activity, and the last error that made a worker of the database exit (message, SQLSTATE, when, its pid)';

CREATE VIEW saga_stats AS
    SELECT current_database() AS database, c.*,
           (SELECT count(*) FROM saga_worker_status() w
             WHERE w.dboid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND w.state <> 'exited')
             AS workers
      FROM saga_counters() c;
COMMENT ON VIEW saga_stats IS
'this database''s cumulative counters since the server started (NULL without shared_preload_libraries), in one row';

------------------------------------------------------------------------------
-- What a saga's owner sees
------------------------------------------------------------------------------

/*
 * The DBA's views (saga_instances, saga_stuck, saga_dead_letters) show
 * every role's sagas and are not granted to PUBLIC.  A saga's owner sees
 * its own: the saga_my_* views show the sagas whose owner the current
 * role has the privileges of (as pg_has_role(owner, 'USAGE') says: the
 * role itself, roles it inherits, and everything for a superuser), and
 * saga_info() one of them.  They are not SECURITY DEFINER: views read the
 * tables with their owner's rights but test the role asking.
 */
CREATE VIEW saga_my_sagas AS
    SELECT i.id, i.saga_type, i.pattern, i.status,
           CASE WHEN i.status <> 'pending' THEN 'done'
                WHEN i.pattern = 'orchestration' THEN i.phase
                WHEN EXISTS (SELECT FROM @extschema@.saga_stuck st
                              WHERE st.saga_id = i.id
                                AND st.problem IN ('dead letter', 'nothing pending')) THEN 'stuck'
                WHEN i.aborted_at IS NOT NULL THEN 'compensating'
                ELSE 'forward' END AS phase,
           CASE WHEN i.pattern = 'orchestration' THEN
                     (SELECT ds.name FROM saga.definition_step ds
                       WHERE ds.definition = i.saga_type AND ds.version = i.definition_version
                         AND ds.step_no = i.step AND i.status = 'pending')
                ELSE (SELECT string_agg(s.consumer || ' <- ' || e.event_type, ', ' ORDER BY d.id)
                        FROM saga.event e
                        JOIN saga.delivery d ON d.event_id = e.id
                        JOIN saga.subscription s ON s.id = d.subscription_id
                       WHERE e.saga_id = i.id AND d.status IN ('pending', 'dead')) END AS current_step,
           i.reason, i.data, i.deadline, i.aborted_at,
           CASE WHEN i.pattern = 'orchestration' THEN i.attempts
                ELSE coalesce((SELECT max(d.attempts) FROM saga.event e
                                 JOIN saga.delivery d ON d.event_id = e.id
                                WHERE e.saga_id = i.id AND d.status IN ('pending', 'dead')), 0) END
             AS attempts,
           CASE WHEN i.pattern = 'orchestration' THEN i.last_error
                ELSE (SELECT d.last_error FROM saga.event e
                        JOIN saga.delivery d ON d.event_id = e.id
                       WHERE e.saga_id = i.id AND d.status IN ('pending', 'dead')
                         AND d.last_error IS NOT NULL
                       ORDER BY d.attempts DESC, d.id LIMIT 1) END AS last_error,
           i.started_at, i.finished_at, i.owner
      FROM saga.instance i
     WHERE pg_has_role(i.owner, 'USAGE');
COMMENT ON VIEW saga_my_sagas IS
'the sagas of the current role (and of roles it has the privileges of): phase (forward, compensating, stuck, done), the current step or waiting deliveries, reason, data, deadline, attempts and last error';
GRANT SELECT ON saga_my_sagas TO PUBLIC;

CREATE VIEW saga_my_stuck AS
    SELECT st.*
      FROM @extschema@.saga_stuck st
      JOIN saga.instance i ON i.id = st.saga_id
     WHERE pg_has_role(i.owner, 'USAGE');
COMMENT ON VIEW saga_my_stuck IS
'saga_stuck for the current role''s sagas: what is not moving on, why, and the remedy';
GRANT SELECT ON saga_my_stuck TO PUBLIC;

CREATE VIEW saga_my_dead_letters AS
    SELECT dl.*
      FROM @extschema@.saga_dead_letters dl
      JOIN saga.instance i ON i.id = dl.saga_id
     WHERE pg_has_role(i.owner, 'USAGE');
COMMENT ON VIEW saga_my_dead_letters IS
'saga_dead_letters for the current role''s sagas';
GRANT SELECT ON saga_my_dead_letters TO PUBLIC;

CREATE FUNCTION saga_info(saga_id bigint)
RETURNS SETOF saga_my_sagas
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM @extschema@.saga_my_sagas m WHERE m.id = saga_info.saga_id;
    IF NOT FOUND THEN
        -- raises if it does not exist, or if the caller may not see it at all
        IF @extschema@.saga_status(saga_id) IS NOT NULL THEN
            RAISE EXCEPTION 'saga % is not one of yours', saga_id
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'saga_info() shows the sagas of the current role (and of roles it has the privileges of).',
                      HINT = 'Its owner shared its status and trace with you: use saga_status() and saga_trace().';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION saga_info(bigint) IS
'one of the current role''s sagas, as saga_my_sagas shows it; an error for a saga that does not exist or belongs to another role';

-- A stuck saga's Mermaid trace says so, with what it is stuck on.  Its
-- participants appear in the order they take part, of one message the
-- sender first (1.1 sorted those by name: a saga "booking" came before
-- the "client" who started it).
CREATE OR REPLACE FUNCTION saga_trace_mermaid(saga_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    diagram text;
    i saga.instance;
    stuck text;
BEGIN
    SELECT * INTO i FROM saga.instance WHERE id = saga_trace_mermaid.saga_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'saga % does not exist', coalesce(saga_id::text, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    SELECT st.problem || ': ' || st.work || coalesce(' (' || st.last_error || ')', '')
      INTO stuck
      FROM @extschema@.saga_stuck st
     WHERE st.saga_id = saga_trace_mermaid.saga_id
       AND st.problem IN ('compensation failing', 'dead letter')
     ORDER BY st.problem, st.delivery_id
     LIMIT 1;

    WITH t AS (SELECT * FROM @extschema@.saga_trace(saga_trace_mermaid.saga_id)),
         names AS (SELECT name, min(at) AS first
                     FROM (SELECT sender AS name, 2 * seq AS at FROM t
                           UNION ALL
                           SELECT receiver, 2 * seq + 1 FROM t) x
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
                                saga.mermaid_text(CASE WHEN i.status = 'pending' AND stuck IS NOT NULL
                                                       THEN 'stuck: ' || stuck
                                                       WHEN i.status = 'pending' THEN 'still running'
                                                       WHEN i.status = 'completed' THEN 'completed'
                                                       ELSE 'failed: ' || coalesce(i.reason, 'no reason given') END))
              FROM p
             WHERE p.name = i.saga_type) lines;
    RETURN diagram;
END
$$;

------------------------------------------------------------------------------
-- Replication: replica identities, and subscribers that do not run sagas again
------------------------------------------------------------------------------

/*
 * A publication that publishes deletes (CREATE PUBLICATION ... FOR ALL
 * TABLES) refuses a DELETE on a table without a replica identity, and a
 * subscriber can only apply updates and deletes by one.  saga.step_run and
 * saga.delivery_failure had none, so every purge failed on a publisher.
 * Their request_seq and seq are taken from saga.trace_seq, one value per
 * row: they become the primary keys (the default replica identity).  The
 * index is built by one scan of the table; nothing is rewritten, and the
 * columns are NOT NULL already, so ADD PRIMARY KEY USING INDEX only marks
 * it.  Should a table hold the same value twice (trace_seq set back by
 * hand), it gets REPLICA IDENTITY FULL instead, with a WARNING.  Every
 * other table of schema saga has a primary key already.
 */
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('step_run', 'request_seq'), ('delivery_failure', 'seq')) v(tab, col)
    LOOP
        BEGIN
            EXECUTE format('CREATE UNIQUE INDEX %I ON saga.%I (%I)', t.tab || '_pkey', t.tab, t.col);
            EXECUTE format('ALTER TABLE saga.%I ADD PRIMARY KEY USING INDEX %I', t.tab, t.tab || '_pkey');
        EXCEPTION WHEN unique_violation THEN
            RAISE WARNING 'saga.%.% holds a value twice: the table is given REPLICA IDENTITY FULL', t.tab, t.col
                USING HINT = 'Logical replication then applies its updates and deletes by whole rows.';
            EXECUTE format('ALTER TABLE saga.%I REPLICA IDENTITY FULL', t.tab);
        END;
    END LOOP;
END
$$;

/*
 * A database that subscribes to another's saga.instance, saga.event or
 * saga.delivery is a copy: the publisher runs those sagas, and this
 * database's workers run nothing (see src/replica.c).  saga_copy_of()
 * names the subscription; saga_workers shows the workers in state 'copy'.
 */
CREATE FUNCTION saga_copy_of()
RETURNS name
AS 'MODULE_PATHNAME', 'saga_copy_of'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION saga_copy_of() IS
'the subscription that makes this database a logical copy of another that runs the sagas (its workers run none), or NULL when the sagas run here';
REVOKE ALL ON FUNCTION saga_copy_of() FROM PUBLIC;

/*
 * Logical replication does not carry sequences: a copy's stay where its
 * CREATE EXTENSION left them, behind the ids of the rows it received.
 * Before a former copy runs sagas of its own, each sequence of schema saga
 * owned by a column is moved past that column's largest value (a probe of
 * its primary key), and then, if one was behind, saga.trace_seq past
 * every value taken from it (scans of the tables, once).  The workers call
 * it when they find the database is not a copy (at start, and when the
 * subscription has gone); a DBA may too.  Returns how many were moved.
 */
CREATE FUNCTION saga.advance_sequences()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    top bigint;
    moved integer := 0;
BEGIN
    FOR s IN SELECT d.objid::regclass AS seq, d.refobjid::regclass AS tab, a.attname AS col
               FROM pg_depend d
               JOIN pg_class c ON c.oid = d.objid
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                AND d.deptype = 'a' AND c.relkind = 'S'
                AND c.relnamespace = 'saga'::regnamespace
              ORDER BY 1
    LOOP
        EXECUTE format('SELECT max(%I) FROM %s', s.col, s.tab) INTO top;
        IF top > coalesce(pg_sequence_last_value(s.seq), 0) THEN
            PERFORM setval(s.seq, top);
            moved := moved + 1;
        END IF;
    END LOOP;
    IF moved > 0 THEN
        SELECT max(v) INTO top
          FROM (SELECT max(greatest(start_seq, finish_seq)) FROM saga.instance
                UNION ALL SELECT max(seq) FROM saga.event
                UNION ALL SELECT max(seq) FROM saga.delivery
                UNION ALL SELECT max(greatest(request_seq, response_seq)) FROM saga.step_run
                UNION ALL SELECT max(seq) FROM saga.delivery_failure) t(v);
        IF top > coalesce(pg_sequence_last_value('saga.trace_seq'), 0) THEN
            PERFORM setval('saga.trace_seq', top);
            moved := moved + 1;
        END IF;
    END IF;
    RETURN moved;
END
$$;
COMMENT ON FUNCTION saga.advance_sequences() IS
'move the extension''s sequences past the rows their tables hold (a former logical copy''s are behind); returns how many were moved';
REVOKE ALL ON FUNCTION saga.advance_sequences() FROM PUBLIC;

------------------------------------------------------------------------------
-- Capacity: every database with the extension is served
------------------------------------------------------------------------------

/*
 * The launcher starts workers from a pool shared by the whole server
 * (max_worker_processes): every database gets its first worker before any
 * gets a second, and one left without any for want of a slot is named in
 * a WARNING every minute.  saga_databases shows, from any database with
 * the extension, what the launcher knows of every database where the
 * extension is installed or may be, its workers, and in words whether it
 * is served and if not why; saga_stuck says so in a database that has no
 * worker.
 */
CREATE FUNCTION saga_database_status(OUT dboid oid, OUT state text, OUT workers integer,
                                     OUT wanted integer, OUT status text,
                                     OUT since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'saga_database_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION saga_database_status() FROM PUBLIC;

CREATE VIEW saga_databases AS
    SELECT d.datname AS database, s.state, s.workers, s.wanted, s.status, s.since
      FROM saga_database_status() s
      LEFT JOIN pg_database d ON d.oid = s.dboid;
COMMENT ON VIEW saga_databases IS
'every database where the extension is installed (or may be: not looked at yet), from shared memory: state (installed, unknown, paused), workers running and wanted, status (served; no worker or short of workers for want of a background worker slot, with the setting to raise; restarting after a failure; no new worker while ALLOW_CONNECTIONS is false; held back by a restore; paused), since when it has been short of workers for want of a slot';


------------------------------------------------------------------------------
-- What is stuck
------------------------------------------------------------------------------

-- Whether this database is left without a worker, for saga_stuck (which
-- any saga owner reads through saga_my_stuck): saga_database_status()
-- itself shows every database and is the DBA's.
CREATE FUNCTION saga.unserved_status()
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.status FROM @extschema@.saga_database_status() s
     WHERE s.dboid = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND s.workers = 0 AND s.since IS NOT NULL
$$;
COMMENT ON FUNCTION saga.unserved_status() IS
'why this database has no worker for want of a slot, or NULL';

/*
 * What is stuck.  A dead letter is settled, not stuck, when its
 * subscription published its on_failure event (the saga's other
 * participants took over), when it is forward work of a saga that has
 * ended or been aborted (saga_retry_delivery() refuses it: nothing but
 * compensation runs then), or when its subscription is gone.  Steps are
 * named by their names.  New in 1.2 too: deliveries and steps waiting for a lock
 * another session holds ("Hanging handlers, held locks" below), a row
 * when this database has no worker for want of a slot (Capacity, above),
 * and a choreographed saga that nobody ends: nothing of it pending, not
 * aborted, and nothing published into it for ten seconds (its dead letter
 * published its on_failure event, say, and the compensations ran, but no
 * handler failed the saga).  The last column, blocking_pid, is the session
 * that held the lock a delivery or step waits for, when the worker saw it.
 */
CREATE OR REPLACE VIEW saga_stuck AS
    SELECT 'compensation failing'::text AS problem, i.id AS saga_id, NULL::bigint AS delivery_id,
           i.saga_type || ' step ' || coalesce(ds.name, i.step::text) AS work, i.attempts, i.last_error,
           'saga_retry(' || i.id || ')' AS remedy, NULL::int AS blocking_pid
      FROM saga.instance i
      LEFT JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version AND ds.step_no = i.step
     WHERE i.status = 'pending' AND i.phase = 'stuck'
    UNION ALL
    SELECT 'step retrying', i.id, NULL, i.saga_type || ' step ' || coalesce(ds.name, i.step::text),
           i.attempts, i.last_error,
           CASE WHEN i.next_attempt_at > now() THEN 'wait (next attempt at ' || i.next_attempt_at || ')'
                ELSE 'wait (it is due: a worker takes it, or has it already)' END
           || ', or saga_cancel(' || i.id || ')', NULL
      FROM saga.instance i
      LEFT JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version AND ds.step_no = i.step
     WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating') AND i.attempts > 0
    UNION ALL
    SELECT CASE WHEN p.consumer IS NOT NULL THEN 'consumer paused' ELSE 'delivery retrying' END,
           e.saga_id, d.id, s.consumer || ' <- ' || e.event_type, d.attempts, d.last_error,
           CASE WHEN p.consumer IS NOT NULL THEN 'saga_resume_consumer(' || quote_literal(s.consumer) || ')'
                WHEN d.next_attempt_at > now() THEN 'wait (next attempt at ' || d.next_attempt_at || ')'
                ELSE 'wait (it is due: a worker takes it, or has it already)' END, NULL
      FROM saga.delivery d
      JOIN saga.event e ON e.id = d.event_id
      JOIN saga.subscription s ON s.id = d.subscription_id
      LEFT JOIN saga.paused_consumer p ON p.consumer = s.consumer
     WHERE d.status = 'pending' AND (d.attempts > 0 OR p.consumer IS NOT NULL)
    UNION ALL
    SELECT 'service paused', i.id, NULL, i.saga_type || ' step ' || ds.name || ' (' || ds.service || ')',
           i.attempts, i.last_error, 'saga_resume_consumer(' || quote_literal(ds.service) || ')', NULL
      FROM saga.instance i
      JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version AND ds.step_no = i.step
      JOIN saga.paused_consumer p ON p.consumer = ds.service
     WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating')
    UNION ALL
    SELECT 'past its deadline', i.id, NULL, i.saga_type, i.attempts, i.last_error,
           CASE WHEN i.aborted_at IS NULL THEN 'wait for a worker'
                ELSE 'wait for its compensation' END, NULL
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.deadline < now()
    UNION ALL
    SELECT 'dead letter', e.saga_id, d.id, s.consumer || ' <- ' || e.event_type, d.attempts, d.last_error,
           'saga_retry_delivery(' || d.id || ')', NULL
      FROM saga.delivery d
      JOIN saga.event e ON e.id = d.event_id
      JOIN saga.subscription s ON s.id = d.subscription_id
      LEFT JOIN saga.instance i ON i.id = e.saga_id
     WHERE d.status = 'dead' AND s.on_failure IS NULL
       AND NOT (s.forward AND i.id IS NOT NULL AND (i.status <> 'pending' OR i.aborted_at IS NOT NULL))
    UNION ALL
    SELECT 'waiting for a lock', e.saga_id, d.id, s.consumer || ' <- ' || e.event_type, d.attempts,
           d.last_error,
           CASE WHEN d.blocked_by IS NOT NULL
                THEN 'pid ' || d.blocked_by || ' (see pg_stat_activity) holds a lock its handler needs'
                     || ' (waiting since ' || d.blocked_since || '): end that transaction, or wait for it'
                ELSE 'another session holds a lock its handler needs (waiting since ' || d.blocked_since
                     || '); the worker did not see which (a deadlock, a serialization failure or NOWAIT does not wait)'
                     || ': find it with pg_blocking_pids() of the saga worker while it waits, or in pg_locks' END,
           d.blocked_by
      FROM saga.delivery d
      JOIN saga.event e ON e.id = d.event_id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE d.status = 'pending' AND d.blocked_since < now() - interval '1 second'
    UNION ALL
    SELECT 'waiting for a lock', i.id, NULL, i.saga_type || ' step ' || coalesce(ds.name, i.step::text),
           i.attempts, i.last_error,
           CASE WHEN i.blocked_by IS NOT NULL
                THEN 'pid ' || i.blocked_by || ' (see pg_stat_activity) holds a lock its step needs'
                     || ' (waiting since ' || i.blocked_since || '): end that transaction, or wait for it'
                ELSE 'another session holds a lock its step needs (waiting since ' || i.blocked_since
                     || '); the worker did not see which (a deadlock, a serialization failure or NOWAIT does not wait)'
                     || ': find it with pg_blocking_pids() of the saga worker while it waits, or in pg_locks' END,
           i.blocked_by
      FROM saga.instance i
      LEFT JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version AND ds.step_no = i.step
     WHERE i.status = 'pending' AND i.blocked_since < now() - interval '1 second'
    UNION ALL
    SELECT 'no worker', NULL, NULL, 'everything due in database ' || current_database()::text COLLATE "default",
           NULL, u.status,
           'raise max_worker_processes (this needs a restart), or lower saga.workers; see saga_databases', NULL
      FROM saga.unserved_status() u(status)
     WHERE u.status IS NOT NULL
    UNION ALL
    SELECT 'nothing pending', i.id, NULL, i.saga_type, NULL, NULL,
           'no delivery of it is pending and no handler ended it: saga_fail(' || i.id
           || ', reason) or saga_complete(' || i.id || ') by its owner, or saga_cancel(' || i.id || ')',
           NULL
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.pattern = 'choreography' AND i.aborted_at IS NULL
       AND i.started_at < now() - interval '10 seconds'
       AND EXISTS (SELECT FROM saga.event e WHERE e.saga_id = i.id)
       AND NOT EXISTS (SELECT FROM saga.event e
                         JOIN saga.delivery d ON d.event_id = e.id
                        WHERE e.saga_id = i.id AND d.status = 'pending')
       AND NOT EXISTS (SELECT FROM saga.event e
                        WHERE e.saga_id = i.id AND e.published_at > now() - interval '10 seconds');

-- saga_my_stuck (above, "What a saga's owner sees") has saga_stuck's columns
-- as they were when it was made: it gets blocking_pid too.
CREATE OR REPLACE VIEW saga_my_stuck AS
    SELECT st.*
      FROM @extschema@.saga_stuck st
      JOIN saga.instance i ON i.id = st.saga_id
     WHERE pg_has_role(i.owner, 'USAGE');

------------------------------------------------------------------------------
-- Who may see and subscribe to what: event types, traces, statuses
------------------------------------------------------------------------------

/*
 * An event type belongs to a role: the first that publishes it, subscribes
 * to it or grants on it (saga.event_type).  Another role may subscribe to
 * it, or publish it, only with a grant of its owner's (saga.event_grant,
 * saga_grant_events(); the grantee '-', i.e. 0, is PUBLIC): else any role
 * allowed to subscribe would read every other role's events, and any role
 * allowed to publish could forge them into another service's handlers.  A
 * subscription's on_failure event is published for its subscriber: it
 * needs the right to publish it.  Revoking the right to subscribe removes
 * the subscriptions it allowed, with their pending deliveries.
 *
 * A saga's status and trace (saga_status, saga_await, saga_trace,
 * saga_trace_mermaid) are shown to the roles that have its owner's
 * privileges, and to those the owner granted its sagas of that type to
 * (saga.saga_grant, saga_grant_sagas()); nobody else.  saga_trace and
 * saga_trace_mermaid become C functions that check the caller (a SECURITY
 * DEFINER function cannot tell who called it), then read the trace as the
 * tables' owner through the SQL functions of those names, moved to schema
 * saga.
 *
 * The example's event types are the extension owner's: its services alone
 * subscribe to them and publish them.  SagaAborted, which the engine
 * publishes, is open to every role for subscribing (a role's compensations
 * listen to it), but reaches a subscription only if its role may see the
 * saga (publish.c).  The example grants its 'order'
 * sagas to PUBLIC: saga_place_order's customers see their orders.
 */
CREATE TABLE saga.event_type (
    name       text PRIMARY KEY,
    owner      regrole NOT NULL,
    builtin    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE saga.event_type IS
'who owns each event type: the first role that published it, subscribed to it or granted on it';

CREATE TABLE saga.event_grant (
    event_type text NOT NULL REFERENCES saga.event_type ON DELETE CASCADE,
    grantee    regrole NOT NULL,
    privilege  text NOT NULL CHECK (privilege IN ('subscribe', 'publish')),
    builtin    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (event_type, privilege, grantee)
);
CREATE INDEX event_grant_grantee_idx ON saga.event_grant (grantee);
COMMENT ON TABLE saga.event_grant IS
'what an event type''s owner allowed other roles (grantee 0, shown as -, is PUBLIC): to subscribe to it or to publish it';

CREATE TABLE saga.saga_grant (
    saga_type  text NOT NULL,
    owner      regrole NOT NULL,
    grantee    regrole NOT NULL,
    builtin    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (saga_type, owner, grantee)
);
CREATE INDEX saga_grant_grantee_idx ON saga.saga_grant (grantee);
COMMENT ON TABLE saga.saga_grant IS
'roles (grantee 0, shown as -, is PUBLIC) that see the status and trace of owner''s sagas of saga_type';

REVOKE ALL ON saga.event_type, saga.event_grant, saga.saga_grant FROM PUBLIC;
SELECT pg_extension_config_dump('saga.event_type', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('saga.event_grant', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('saga.saga_grant', 'WHERE NOT builtin');

-- The engine's SagaAborted (the example's event types: schema/example).
INSERT INTO saga.event_type (name, owner, builtin)
SELECT 'SagaAborted', c.relowner::regrole, true FROM pg_class c WHERE c.oid = 'saga.event'::regclass;
INSERT INTO saga.event_grant (event_type, grantee, privilege, builtin)
VALUES ('SagaAborted', 0, 'subscribe', true);

-- Users' event types subscribed to before 1.2: the role of the oldest
-- subscription owns each, and the other roles that subscribe keep the right.
INSERT INTO saga.event_type (name, owner)
SELECT DISTINCT ON (s.event_type) s.event_type, s.owner
  FROM saga.subscription s
 WHERE NOT s.builtin
 ORDER BY s.event_type, s.id
ON CONFLICT (name) DO NOTHING;
INSERT INTO saga.event_grant (event_type, grantee, privilege)
SELECT DISTINCT s.event_type, s.owner, 'subscribe'
  FROM saga.subscription s JOIN saga.event_type t ON t.name = s.event_type
 WHERE NOT s.builtin AND s.owner <> t.owner
ON CONFLICT DO NOTHING;

CREATE FUNCTION saga_grant_events(event_type text, grantee text, privilege text DEFAULT 'subscribe')
RETURNS void
AS 'MODULE_PATHNAME', 'saga_grant_events'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_grant_events(text, text, text) IS
'allow grantee (a role, or PUBLIC) to subscribe to (privilege ''subscribe'') or publish (''publish'') an event type of the calling role''s; an unowned type becomes the caller''s';

CREATE FUNCTION saga_revoke_events(event_type text, grantee text, privilege text DEFAULT 'subscribe')
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_revoke_events'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_revoke_events(text, text, text) IS
'take back a grant of saga_grant_events(); subscriptions left without the right go, with their pending deliveries; false if there was no such grant';

CREATE FUNCTION saga_grant_sagas(saga_type text, grantee text)
RETURNS void
AS 'MODULE_PATHNAME', 'saga_grant_sagas'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_grant_sagas(text, text) IS
'let grantee (a role, or PUBLIC) see the status and trace of the calling role''s sagas of saga_type';

CREATE FUNCTION saga_revoke_sagas(saga_type text, grantee text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_revoke_sagas'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_revoke_sagas(text, text) IS
'take back a grant of saga_grant_sagas(); false if there was none';

REVOKE ALL ON FUNCTION saga_grant_events(text, text, text), saga_revoke_events(text, text, text),
                       saga_grant_sagas(text, text), saga_revoke_sagas(text, text) FROM PUBLIC;

CREATE VIEW saga_event_types AS
    SELECT t.name, t.owner,
           ARRAY(SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::text END
                   FROM saga.event_grant g
                  WHERE g.event_type = t.name AND g.privilege = 'subscribe'
                  ORDER BY g.grantee::text) AS subscribers,
           ARRAY(SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::text END
                   FROM saga.event_grant g
                  WHERE g.event_type = t.name AND g.privilege = 'publish'
                  ORDER BY g.grantee::text) AS publishers,
           t.builtin, t.created_at
      FROM saga.event_type t;
COMMENT ON VIEW saga_event_types IS
'every event type: its owner, and the roles it allows to subscribe and to publish besides itself';
GRANT SELECT ON saga_event_types TO PUBLIC;

-- The trace functions check their caller, then read as the tables' owner.
-- (moved to schema saga, keeping their names: their bodies name their
-- arguments by them)
ALTER FUNCTION saga_trace(bigint) SET SCHEMA saga;
ALTER FUNCTION saga.saga_trace(bigint) SECURITY INVOKER;
REVOKE ALL ON FUNCTION saga.saga_trace(bigint) FROM PUBLIC;
ALTER FUNCTION saga_trace_mermaid(bigint) SET SCHEMA saga;
ALTER FUNCTION saga.saga_trace_mermaid(bigint) SECURITY INVOKER;
REVOKE ALL ON FUNCTION saga.saga_trace_mermaid(bigint) FROM PUBLIC;

CREATE FUNCTION saga_trace(saga_id bigint)
RETURNS TABLE (seq integer, sender text, receiver text, message text, at timestamptz)
AS 'MODULE_PATHNAME', 'saga_trace'
LANGUAGE C STABLE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_trace(bigint) IS
'the messages of one saga in the order they happened, as arrows of a sequence diagram (its owner, and the roles it granted the saga type to)';

CREATE FUNCTION saga_trace_mermaid(saga_id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'saga_trace_mermaid'
LANGUAGE C STABLE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_trace_mermaid(bigint) IS
'the saga''s trace as a Mermaid sequenceDiagram, ending with a note of its outcome (its owner, and the roles it granted the saga type to)';

------------------------------------------------------------------------------
-- Hanging handlers, held locks, settings: work that waits does not hold up other work
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- The history checker: saga_check()
------------------------------------------------------------------------------

/*
 * saga_check() reads the engine's record of every saga and returns one row
 * per broken promise: a saga that has not ended within its bound, a
 * completed saga that was compensated or aborted, a step run twice, a
 * failed saga whose steps were not each undone once in reverse order,
 * forward work after an abort, saga_status() or saga_await() disagreeing
 * with the record.  It is what the randomized test (t/011_checker.pl) asks
 * after every run, shipped so that users can ask it of their own database.
 *
 * It judges only what the record can tell.  In orchestration the engine
 * knows each step and its compensation (saga.definition_step, one
 * saga.step_run row per run), so it checks the whole shape of a saga's
 * history.  In choreography it cannot know which handler undoes which: it
 * checks what is generic (no compensation in a completed saga, no forward
 * delivery handled after the abort or of an event published after the end,
 * no compensation given up as a dead letter).  Sagas purged by retention have lost their history and
 * are judged by their instance row alone.
 *
 * A step_run row counts as a step done (or compensated) only if its
 * outcome is 'ok'; 'rejected' and 'error' end a forward step that failed;
 * any other outcome is an attempt that will be tried again.
 *
 * It reads every role's sagas, so it is for the DBA (see the README).
 */
CREATE FUNCTION saga_check(ended_within interval DEFAULT '1 hour',
                           deadline_slack interval DEFAULT '1 second')
RETURNS TABLE (saga_id bigint, violation text, detail text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    read_committed boolean :=
        current_setting('transaction_isolation') = 'read committed';
BEGIN
    IF ended_within IS NULL OR ended_within < interval '0' THEN
        RAISE EXCEPTION 'ended_within must be an interval of zero or more, not %',
                        coalesce(ended_within::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF deadline_slack IS NULL OR deadline_slack < interval '0' THEN
        RAISE EXCEPTION 'deadline_slack must be an interval of zero or more, not %',
                        coalesce(deadline_slack::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- not_ended: pending for longer than the bound
    RETURN QUERY
    SELECT i.id, 'not_ended'::text,
           format('pending for %s (bound %s)', date_trunc('second', now() - i.started_at),
                  ended_within)
           || CASE WHEN i.aborted_at IS NOT NULL
                   THEN format('; aborted %s ago', date_trunc('second', now() - i.aborted_at))
                   WHEN i.deadline < now()
                   THEN format('; deadline passed %s ago', date_trunc('second', now() - i.deadline))
                   ELSE '' END
           || CASE WHEN i.pattern = 'orchestration'
                   THEN format('; phase %s, step %s, attempts %s', i.phase, i.step, i.attempts)
                   ELSE format('; %s deliveries pending, %s dead',
                               (SELECT count(*) FROM saga.event e JOIN saga.delivery d ON d.event_id = e.id
                                 WHERE e.saga_id = i.id AND d.status = 'pending'),
                               (SELECT count(*) FROM saga.event e JOIN saga.delivery d ON d.event_id = e.id
                                 WHERE e.saga_id = i.id AND d.status = 'dead')) END
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.started_at <= now() - ended_within;

    -- failed_without_reason: a failed saga must say why
    RETURN QUERY
    SELECT i.id, 'failed_without_reason'::text,
           format('failed at %s with no reason', i.finished_at)
      FROM saga.instance i
     WHERE i.status = 'failed' AND coalesce(btrim(i.reason), '') = '';

    -- completed_after_abort: an aborted saga must fail
    RETURN QUERY
    SELECT i.id, 'completed_after_abort'::text,
           format('aborted at %s, completed at %s', i.aborted_at, i.finished_at)
      FROM saga.instance i
     WHERE i.status = 'completed' AND i.aborted_at IS NOT NULL;

    -- completed_after_deadline: an orchestrated saga looks at its deadline
    -- before each step and when a step ends, so it cannot complete after it
    -- (but for the moment between that look and writing the end)
    RETURN QUERY
    SELECT i.id, 'completed_after_deadline'::text,
           format('deadline %s, completed at %s (%s late)', i.deadline, i.finished_at,
                  i.finished_at - i.deadline)
      FROM saga.instance i
     WHERE i.status = 'completed' AND i.pattern = 'orchestration'
       AND i.finished_at > i.deadline + deadline_slack;

    -- step_after_deadline: nor does a forward step (or an attempt at one)
    -- begin after it
    RETURN QUERY
    SELECT i.id, 'step_after_deadline'::text,
           format('step %s (%s) began at %s, after the deadline %s', r.step_no, r.step,
                  r.started_at, i.deadline)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.pattern = 'orchestration' AND i.purged_at IS NULL
       AND r.kind = 'action' AND r.started_at > i.deadline + deadline_slack;

    -- completed_with_compensation: nothing of a completed saga is undone
    RETURN QUERY
    SELECT i.id, 'completed_with_compensation'::text,
           format('step %s (%s) compensated at %s', r.step_no, r.step, r.started_at)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.status = 'completed' AND i.purged_at IS NULL
       AND r.kind = 'compensation' AND r.outcome = 'ok';
    RETURN QUERY
    SELECT i.id, 'completed_with_compensation'::text,
           format('compensating delivery %s (%s <- %s) handled at %s',
                  d.id, s.consumer, e.event_type, d.delivered_at)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.status = 'completed' AND i.purged_at IS NULL
       AND d.status = 'done' AND NOT s.forward;

    -- completed_incomplete: a completed orchestrated saga did every step,
    -- and none failed
    RETURN QUERY
    SELECT i.id, 'completed_incomplete'::text,
           format('%s of %s steps done; runs: %s', h.done, def.steps, h.runs)
      FROM saga.instance i
      JOIN saga.definition def ON def.name = i.saga_type AND def.version = i.definition_version
      CROSS JOIN LATERAL (
          SELECT count(DISTINCT r.step_no) FILTER (WHERE r.outcome = 'ok') AS done,
                 count(*) FILTER (WHERE r.outcome IN ('rejected', 'error')) AS failed,
                 string_agg(r.step_no || ':' || r.outcome, ',' ORDER BY r.request_seq) AS runs
            FROM saga.step_run r
           WHERE r.saga_id = i.id AND r.kind = 'action') h
     WHERE i.status = 'completed' AND i.pattern = 'orchestration' AND i.purged_at IS NULL
       AND (h.done <> def.steps OR h.failed > 0);

    -- step_twice: a step's action, or its compensation, ran to its end
    -- more than once
    RETURN QUERY
    SELECT r.saga_id, 'step_twice'::text,
           format('%s of step %s (%s) ran %s times: %s', r.kind, r.step_no, min(r.step),
                  count(*), string_agg(r.outcome || ' at ' || r.started_at, ', ' ORDER BY r.request_seq))
      FROM saga.step_run r
     WHERE r.outcome IN ('ok', 'rejected', 'error')
       AND (r.kind = 'action' OR r.outcome = 'ok')
     GROUP BY r.saga_id, r.step_no, r.kind
    HAVING count(*) > 1;

    -- forward_order: forward steps run one after the other from the first,
    -- and only the last may fail
    RETURN QUERY
    SELECT f.saga_id, 'forward_order'::text,
           format('run %s of the forward steps was step %s (%s)', f.rn, f.step_no, f.outcome)
      FROM (SELECT r.saga_id, r.step_no, r.outcome,
                   row_number() OVER w - 1 AS rn,
                   count(*) OVER (PARTITION BY r.saga_id) - 1 AS last
              FROM saga.step_run r
             WHERE r.kind = 'action' AND r.outcome IN ('ok', 'rejected', 'error')
            WINDOW w AS (PARTITION BY r.saga_id ORDER BY r.request_seq)) f
     WHERE f.step_no <> f.rn OR (f.outcome <> 'ok' AND f.rn <> f.last);

    -- forward_after_abort: once a saga is aborted, nothing forward begins
    RETURN QUERY
    SELECT i.id, 'forward_after_abort'::text,
           format('step %s (%s) began at %s, aborted at %s', r.step_no, r.step,
                  r.started_at, i.aborted_at)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.aborted_at IS NOT NULL AND i.purged_at IS NULL
       AND r.kind = 'action' AND r.started_at > i.aborted_at;
    RETURN QUERY
    SELECT i.id, 'forward_after_abort'::text,
           format('delivery %s (%s <- %s) handled at %s, aborted at %s',
                  d.id, s.consumer, e.event_type, d.delivered_at, i.aborted_at)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.aborted_at IS NOT NULL AND i.purged_at IS NULL
       AND d.status = 'done' AND s.forward AND d.delivered_at > i.aborted_at;

    -- forward_after_end: nor once it has ended (aborted or not): no step
    -- after the end, and no forward delivery of an event published after
    -- it (those published before it may still be handled after it)
    RETURN QUERY
    SELECT i.id, 'forward_after_end'::text,
           format('step %s (%s) began at %s, saga %s at %s', r.step_no, r.step,
                  r.started_at, i.status, i.finished_at)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.status <> 'pending' AND i.purged_at IS NULL
       AND r.kind = 'action' AND r.started_at > i.finished_at;
    RETURN QUERY
    SELECT i.id, 'forward_after_end'::text,
           format('delivery %s (%s <- %s) handled at %s, of an event published at %s, saga %s at %s',
                  d.id, s.consumer, e.event_type, d.delivered_at, e.published_at, i.status,
                  i.finished_at)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.status <> 'pending' AND i.purged_at IS NULL
       AND d.status = 'done' AND s.forward AND e.seq > i.finish_seq;

    -- compensation_missing: a failed orchestrated saga undid every step it
    -- had done that has a compensation
    RETURN QUERY
    SELECT i.id, 'compensation_missing'::text,
           format('step %s (%s) was done at %s but never compensated', ds.step_no, ds.name,
                  min(r.finished_at))
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id AND r.kind = 'action' AND r.outcome = 'ok'
      JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version
       AND ds.step_no = r.step_no
     WHERE i.status = 'failed' AND i.pattern = 'orchestration' AND i.purged_at IS NULL
       AND ds.compensation IS NOT NULL
       AND NOT EXISTS (SELECT FROM saga.step_run c
                        WHERE c.saga_id = i.id AND c.step_no = r.step_no
                          AND c.kind = 'compensation' AND c.outcome = 'ok')
     GROUP BY i.id, ds.step_no, ds.name;

    -- compensation_extra: nothing is undone that was not done
    RETURN QUERY
    SELECT c.saga_id, 'compensation_extra'::text,
           format('step %s (%s) was compensated at %s but never done', c.step_no, c.step,
                  c.started_at)
      FROM saga.step_run c
     WHERE c.kind = 'compensation' AND c.outcome = 'ok'
       AND NOT EXISTS (SELECT FROM saga.step_run r
                        WHERE r.saga_id = c.saga_id AND r.step_no = c.step_no
                          AND r.kind = 'action' AND r.outcome = 'ok');

    -- compensation_order: compensations run last step first, each after
    -- the forward steps have ended
    RETURN QUERY
    SELECT c.saga_id, 'compensation_order'::text,
           CASE WHEN c.request_seq < c.last_forward
                THEN format('step %s was compensated before the forward steps ended', c.step_no)
                ELSE format('step %s was compensated after step %s', c.step_no, c.prev_step) END
      FROM (SELECT r.saga_id, r.step_no, r.request_seq,
                   lag(r.step_no) OVER (PARTITION BY r.saga_id ORDER BY r.request_seq) AS prev_step,
                   (SELECT max(a.response_seq) FROM saga.step_run a
                     WHERE a.saga_id = r.saga_id AND a.kind = 'action'
                       AND a.outcome IN ('ok', 'rejected', 'error')) AS last_forward
              FROM saga.step_run r
             WHERE r.kind = 'compensation' AND r.outcome = 'ok') c
     WHERE c.step_no >= c.prev_step OR c.request_seq < c.last_forward;

    -- compensation_dead: a compensating delivery given up after
    -- saga.max_attempts: that part of the saga stays done
    RETURN QUERY
    SELECT i.id, 'compensation_dead'::text,
           format('delivery %s (%s <- %s) dead after %s attempts: %s',
                  d.id, s.consumer, e.event_type, d.attempts, d.last_error)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.purged_at IS NULL AND d.status = 'dead' AND NOT s.forward;

    -- status_mismatch, await_mismatch: an ended saga's status, as the
    -- functions report it, is its record's (saga_await needs READ
    -- COMMITTED, and returns at once for an ended saga)
    RETURN QUERY
    SELECT i.id, 'status_mismatch'::text,
           format('saga_status() says %s, the record %s', st.s, i.status)
      FROM saga.instance i
      CROSS JOIN LATERAL (SELECT @extschema@.saga_status(i.id) AS s) st
     WHERE i.status <> 'pending' AND st.s IS DISTINCT FROM i.status;
    IF read_committed THEN
        RETURN QUERY
        SELECT i.id, 'await_mismatch'::text,
               format('saga_await() says %s, the record %s', aw.s, i.status)
          FROM saga.instance i
          CROSS JOIN LATERAL (SELECT @extschema@.saga_await(i.id, interval '0') AS s) aw
         WHERE i.status <> 'pending' AND aw.s IS DISTINCT FROM i.status;
    END IF;
END
$$;
COMMENT ON FUNCTION saga_check(interval, interval) IS
'one row per violation of the engine''s promises in the record of every saga: not_ended, failed_without_reason, completed_after_abort, completed_after_deadline, step_after_deadline, completed_with_compensation, completed_incomplete, step_twice, forward_order, forward_after_abort, forward_after_end, compensation_missing, compensation_extra, compensation_order, compensation_dead, status_mismatch, await_mismatch';
REVOKE ALL ON FUNCTION saga_check(interval, interval) FROM PUBLIC;

------------------------------------------------------------------------------
-- Fixes from a walk through the README
------------------------------------------------------------------------------

/*
 * saga_backlog lists every orchestrated service, at zero when nothing of
 * it waits, as it lists every consumer: before, a service showed only
 * while one of its steps was due, so a DBA looking at an idle database
 * could not tell the services from nothing.
 */
CREATE OR REPLACE VIEW saga_backlog AS
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
    SELECT 'steps', sv.service,
           count(w.id), min(w.started_at), coalesce(now() - min(w.started_at), interval '0'),
           p.consumer IS NOT NULL
      FROM (SELECT DISTINCT service FROM saga.definition_step) sv
      LEFT JOIN (SELECT i.id, i.started_at, ds.service
                   FROM saga.instance i
                   JOIN saga.definition_step ds
                     ON ds.definition = i.saga_type AND ds.version = i.definition_version
                    AND ds.step_no = i.step
                  WHERE i.status = 'pending'
                    AND i.phase IN ('forward', 'compensating', 'stuck')) w
        ON w.service = sv.service
      LEFT JOIN saga.paused_consumer p ON p.consumer = sv.service
     GROUP BY sv.service, p.consumer;


------------------------------------------------------------------------------
-- Trace labels: how a role's own sagas' traces name their client
------------------------------------------------------------------------------

-- saga.trace_client without a SQL API could be written by the DBA only.
-- A role labels the traces of its own sagas of a type (the row's owner is
-- the calling role); the example's builtin row is left alone.
CREATE FUNCTION saga_label_trace(saga_type text, client text, start_message text,
                                 completed_message text, failed_message text)
RETURNS void
AS 'MODULE_PATHNAME', 'saga_label_trace'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION saga_label_trace(text, text, text, text, text) IS
'the traces of the calling role''s sagas of saga_type show client sending start_message and answered completed_message or failed_message';

CREATE FUNCTION saga_unlabel_trace(saga_type text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_unlabel_trace'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION saga_unlabel_trace(text) IS
'the traces of the calling role''s sagas of saga_type show "client", "start" and the status again; false if they did already';

REVOKE ALL ON FUNCTION saga_label_trace(text, text, text, text, text), saga_unlabel_trace(text)
    FROM PUBLIC;

------------------------------------------------------------------------------
-- Pictures: a definition and the choreography as Mermaid flowcharts
------------------------------------------------------------------------------

/*
 * saga_definition_mermaid(name, version) draws an orchestrated saga's
 * steps and compensations; saga_topology_mermaid(saga_type) draws who
 * publishes and who consumes which event types.  Both show a role only
 * what it may see (README, "Who may see and subscribe to what"): a
 * definition, or a subscription for one saga type, to the roles that have
 * its owner's privileges and to those the owner granted that saga type to
 * (as saga_trace_mermaid shows sagas); an unrestricted subscription to the
 * roles with its owner's privileges; the events of a saga to the roles
 * that may see the saga, an event outside sagas to the roles with its
 * type's owner's privileges.  A role with the tables' owner's privileges
 * (the DBA) sees everything.
 *
 * The check needs the caller, which a SECURITY DEFINER function cannot
 * tell; a view can (current_user in a view is the role that reads it,
 * while the view reads the tables as its owner).  So the rows a role may
 * see are views, security barriers so that no function of the reader's
 * sees the rows before the check, which PUBLIC may read (beside the other
 * views, not in schema saga, whose relations nobody else may read); the
 * functions are SECURITY INVOKER and read nothing else.
 */

-- Text inside a quoted label of a Mermaid flowchart: the quote ends the
-- label, '#' starts an entity, '<', '>' and '&' are HTML, '|' ends an
-- edge label, a backtick starts a Markdown string, ';' ends a statement
-- in some renderers.  Each is written as its entity (the originals of
-- '#' and ';' through placeholders, so that the entities' own are kept).
CREATE FUNCTION saga.mermaid_label(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT replace(replace(
           replace(replace(replace(replace(replace(replace(
               translate(value, E'#;\n\r\t', E'\x01\x02   '),
               '"', '#34;'), '<', '#60;'), '>', '#62;'), '&', '#38;'), '|', '#124;'), '`', '#96;'),
           E'\x01', '#35;'), E'\x02', '#59;')
$$;

-- Whether the reader has the privileges of the owner of the engine's tables.
CREATE FUNCTION saga.reader_is_dba()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = 'saga.definition'::regclass
$$;
GRANT EXECUTE ON FUNCTION saga.reader_is_dba() TO PUBLIC;

CREATE VIEW saga_definitions WITH (security_barrier) AS
    SELECT d.name, d.version, d.owner, d.steps, d.created_at
      FROM saga.definition d
     WHERE saga.reader_is_dba()
        OR pg_has_role(d.owner, 'USAGE')
        OR EXISTS (SELECT FROM saga.saga_grant g
                    WHERE g.saga_type = d.name AND g.owner = d.owner
                      AND (g.grantee = 0 OR pg_has_role(g.grantee, 'USAGE')));
COMMENT ON VIEW saga_definitions IS
'the versions of orchestrated sagas (saga_define) the current role may see: its own, and those shared with it by saga_grant_sagas()';
GRANT SELECT ON saga_definitions TO PUBLIC;

CREATE VIEW saga_definition_steps WITH (security_barrier) AS
    SELECT ds.definition, ds.version, ds.step_no, ds.name, ds.service,
           ds.action, ds.compensation, ds.request, ds.compensation_request
      FROM saga.definition_step ds
      JOIN saga.definition d ON d.name = ds.definition AND d.version = ds.version
     WHERE saga.reader_is_dba()
        OR pg_has_role(d.owner, 'USAGE')
        OR EXISTS (SELECT FROM saga.saga_grant g
                    WHERE g.saga_type = d.name AND g.owner = d.owner
                      AND (g.grantee = 0 OR pg_has_role(g.grantee, 'USAGE')));
COMMENT ON VIEW saga_definition_steps IS
'the steps of the definitions the current role may see (saga_definition_mermaid reads them)';
GRANT SELECT ON saga_definition_steps TO PUBLIC;

CREATE VIEW saga_visible_subscriptions WITH (security_barrier) AS
    SELECT s.id, s.consumer, s.event_type, s.handler, s.owner, s.on_failure, s.forward, s.saga_type
      FROM saga.subscription s
     WHERE saga.reader_is_dba()
        OR pg_has_role(s.owner, 'USAGE')
        OR (s.saga_type IS NOT NULL
            AND EXISTS (SELECT FROM saga.saga_grant g
                         WHERE g.saga_type = s.saga_type AND g.owner = s.owner
                           AND (g.grantee = 0 OR pg_has_role(g.grantee, 'USAGE'))));
COMMENT ON VIEW saga_visible_subscriptions IS
'the subscriptions the current role may see (saga_topology_mermaid reads them)';
GRANT SELECT ON saga_visible_subscriptions TO PUBLIC;

-- Who published which event type, in answer to which (the type of the
-- event whose handler published it, caused_by), in sagas of which type:
-- one row per combination still kept (saga.retention), SagaAborted aside
-- (the engine publishes it).
CREATE VIEW saga_publications WITH (security_barrier) AS
    SELECT p.event_type, p.publisher, p.cause_type, p.saga_type
      FROM (SELECT e.event_type, e.publisher, c.event_type AS cause_type,
                   i.saga_type, i.owner, e.saga_id IS NULL AS outside
              FROM saga.event e
              LEFT JOIN saga.event c ON c.id = e.caused_by
              LEFT JOIN saga.instance i ON i.id = e.saga_id
             WHERE e.event_type <> 'SagaAborted'
             GROUP BY e.event_type, e.publisher, c.event_type, i.saga_type, i.owner,
                      e.saga_id IS NULL) p
      LEFT JOIN saga.event_type t ON t.name = p.event_type
     WHERE saga.reader_is_dba()
        OR (p.owner IS NOT NULL
            AND (pg_has_role(p.owner, 'USAGE')
                 OR EXISTS (SELECT FROM saga.saga_grant g
                             WHERE g.saga_type = p.saga_type AND g.owner = p.owner
                               AND (g.grantee = 0 OR pg_has_role(g.grantee, 'USAGE')))))
        OR (p.outside AND t.owner IS NOT NULL AND pg_has_role(t.owner, 'USAGE'));
COMMENT ON VIEW saga_publications IS
'which publisher published which event type, caused by which, in sagas of which type, as far as the current role may see and the events are kept (saga_topology_mermaid reads it)';
GRANT SELECT ON saga_publications TO PUBLIC;

/*
 * saga_definition_mermaid: the forward chain start -> step -> ... ->
 * completed, solid; for each step the way back when it fails (its own
 * writes are rolled back, it has nothing to undo): dotted, to the
 * compensation of the last step before it that has one, then from
 * compensation to compensation, last first, to failed.
 */
CREATE FUNCTION saga_definition_mermaid(name text, version integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v integer := saga_definition_mermaid.version;
    versions text;
    diagram text;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Give the name of an orchestrated saga: SELECT DISTINCT name FROM saga_definitions lists those you may see.';
    END IF;
    SELECT string_agg(d.version::text, ', ' ORDER BY d.version), max(d.version)
      INTO versions, v
      FROM @extschema@.saga_definitions d
     WHERE d.name = saga_definition_mermaid.name;
    IF versions IS NULL THEN
        RAISE EXCEPTION 'saga definition "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'A definition is shown to its owner, to roles that have the owner''s privileges and to those the owner granted its saga type to.',
                  HINT = 'SELECT DISTINCT name FROM saga_definitions lists the definitions you may see.';
    END IF;
    IF saga_definition_mermaid.version IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM @extschema@.saga_definitions d
                        WHERE d.name = saga_definition_mermaid.name
                          AND d.version = saga_definition_mermaid.version) THEN
            RAISE EXCEPTION 'saga definition "%" has no version %', name, saga_definition_mermaid.version
                USING ERRCODE = 'undefined_object',
                      HINT = format(CASE WHEN versions LIKE '%,%' THEN 'Its versions are %s'
                                         ELSE 'Its only version is %s' END
                                    || '; leave the version out for the latest.', versions);
        END IF;
        v := saga_definition_mermaid.version;
    END IF;

    WITH s AS (
        SELECT ds.step_no, ds.name, ds.service, ds.action, ds.compensation, ds.request,
               coalesce(ds.compensation_request, 'compensate ' || ds.name) AS compensation_request,
               'n' || (ds.step_no + 1) AS node, 'c' || (ds.step_no + 1) AS cnode,
               lead('n' || (ds.step_no + 1), 1, 'completed') OVER w AS next_node,
               -- where a failure of this step goes: the compensation of the
               -- last step before it that has one, else failed
               coalesce((SELECT 'c' || (p.step_no + 1) FROM @extschema@.saga_definition_steps p
                          WHERE p.definition = ds.definition AND p.version = ds.version
                            AND p.step_no < ds.step_no AND p.compensation IS NOT NULL
                          ORDER BY p.step_no DESC LIMIT 1), 'failed') AS back_node
          FROM @extschema@.saga_definition_steps ds
         WHERE ds.definition = saga_definition_mermaid.name AND ds.version = v
        WINDOW w AS (ORDER BY ds.step_no))
    SELECT string_agg(line, E'\n' ORDER BY ord1, ord2)
      INTO diagram
      FROM (SELECT 0 AS ord1, 0 AS ord2, 'flowchart LR' AS line
            UNION ALL
            SELECT 1, 0, format('    start(["%s v%s"])', saga.mermaid_label(saga_definition_mermaid.name), v)
            UNION ALL
            SELECT 2, s.step_no, format('    %s["%s<br/>%s: %s<br/>%s"]', s.node,
                                        saga.mermaid_label(s.name), saga.mermaid_label(s.service),
                                        saga.mermaid_label(s.request), saga.mermaid_label(s.action::text))
              FROM s
            UNION ALL
            SELECT 3, 0, '    completed(["completed"])'
            UNION ALL
            SELECT 4, -s.step_no, format('    %s["undo %s<br/>%s: %s<br/>%s"]:::undo', s.cnode,
                                         saga.mermaid_label(s.name), saga.mermaid_label(s.service),
                                         saga.mermaid_label(s.compensation_request),
                                         saga.mermaid_label(s.compensation::text))
              FROM s WHERE s.compensation IS NOT NULL
            UNION ALL
            SELECT 5, 0, '    failed(["failed"])'
            UNION ALL
            SELECT 6, 0, '    start --> n1'
            UNION ALL
            SELECT 7, s.step_no, format('    %s -->|ok| %s', s.node, s.next_node) FROM s
            UNION ALL
            SELECT 8, s.step_no, format('    %s -.->|fails| %s', s.node, s.back_node) FROM s
            UNION ALL
            -- a compensation done goes on to the one before it
            SELECT 9, -s.step_no, format('    %s -.-> %s', s.cnode,
                                         (SELECT b.back_node FROM s b WHERE b.step_no = s.step_no))
              FROM s WHERE s.compensation IS NOT NULL
            UNION ALL
            SELECT 10, 0, '    classDef undo stroke-dasharray: 5 5') lines;
    RETURN diagram;
END
$$;
COMMENT ON FUNCTION saga_definition_mermaid(text, integer) IS
'an orchestrated saga''s steps (default: its latest version) as a Mermaid flowchart: the steps forward, and the compensations that run, last first, when a later step fails (its owner, and the roles it granted the saga type to)';

/*
 * saga_topology_mermaid: event types (rounded), the subscriptions that
 * consume them (consumer and handler), and who publishes them.  The
 * subscriptions say who consumes; who publishes is learnt from the events
 * still kept (saga.retention): an event published by a handler (its
 * publisher is the consumer, caused_by the event it handled) is drawn
 * from that subscription, any other from its publisher (the name given to
 * saga_publish, else the role).  A subscription's on_failure event is
 * published on a dead letter, SagaAborted by the engine on an abort: both
 * are known without history.  An event type that is consumed with no
 * known publisher, or published with no subscriber, is drawn dashed, and
 * says so: before any event has been published, every consumed type
 * but those is "no known publisher".
 *
 * With a saga type: its subscriptions, the events of its sagas, and the
 * subscriptions for every saga type to the event types those involve.
 */
CREATE FUNCTION saga_topology_mermaid(saga_type text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    diagram text;
BEGIN
    WITH typed AS (
        SELECT s.* FROM @extschema@.saga_visible_subscriptions s
         WHERE saga_topology_mermaid.saga_type IS NULL OR s.saga_type = saga_topology_mermaid.saga_type),
    pubs AS (
        SELECT DISTINCT p.event_type, p.publisher, p.cause_type
          FROM @extschema@.saga_publications p
         WHERE saga_topology_mermaid.saga_type IS NULL OR p.saga_type = saga_topology_mermaid.saga_type),
    subs AS (
        SELECT * FROM typed
        UNION ALL
        SELECT s.* FROM @extschema@.saga_visible_subscriptions s
         WHERE saga_topology_mermaid.saga_type IS NOT NULL AND s.saga_type IS NULL
           AND s.event_type IN (SELECT t.event_type FROM typed t
                                UNION SELECT t.on_failure FROM typed t
                                UNION SELECT p.event_type FROM pubs p)),
    types AS (
        SELECT s.event_type AS name FROM subs s
        UNION SELECT s.on_failure FROM subs s WHERE s.on_failure IS NOT NULL
        UNION SELECT p.event_type FROM pubs p),
    tn AS (
        SELECT t.name, row_number() OVER (ORDER BY t.name COLLATE "C") AS num,
               EXISTS (SELECT FROM subs s WHERE s.event_type = t.name) AS consumed,
               (t.name = 'SagaAborted'
                OR EXISTS (SELECT FROM pubs p WHERE p.event_type = t.name)
                OR EXISTS (SELECT FROM subs s WHERE s.on_failure = t.name)) AS published
          FROM types t),
    sn AS (
        SELECT s.consumer, s.event_type, s.handler, s.on_failure, s.forward,
               row_number() OVER (ORDER BY s.consumer COLLATE "C", s.event_type COLLATE "C") AS num
          FROM subs s),
    -- each publication: from the subscription whose handler published it,
    -- else from its publisher
    pe AS (
        SELECT p.event_type, p.publisher,
               (SELECT sn.num FROM sn WHERE sn.consumer = p.publisher AND sn.event_type = p.cause_type) AS sub
          FROM pubs p),
    pn AS (
        SELECT x.publisher, row_number() OVER (ORDER BY x.publisher COLLATE "C") AS num
          FROM (SELECT DISTINCT pe.publisher FROM pe WHERE pe.sub IS NULL) x),
    -- edges: (kind, from, to); nodes are e<n> (event types), h<n>
    -- (subscriptions), p<n> (publishers) and engine
    edges AS (
        SELECT DISTINCT 1 AS kind,
               CASE WHEN pe.sub IS NOT NULL THEN 'h' ELSE 'p' END AS fp, coalesce(pe.sub, pn.num) AS fnum,
               'e' AS tp, tn.num AS tnum, '-->' AS arrow
          FROM pe
          LEFT JOIN pn ON pe.sub IS NULL AND pn.publisher = pe.publisher
          JOIN tn ON tn.name = pe.event_type
        UNION ALL
        SELECT 2, 'h', sn.num, 'e', tn.num, '-.->|on failure|'
          FROM sn JOIN tn ON tn.name = sn.on_failure
        UNION ALL
        SELECT 3, 'engine', NULL, 'e', tn.num, '-.->|on abort|'
          FROM tn WHERE tn.name = 'SagaAborted'
        UNION ALL
        SELECT 4, 'e', tn.num, 'h', sn.num,
               CASE WHEN sn.forward THEN '-->' ELSE '-.->|compensation|' END
          FROM sn JOIN tn ON tn.name = sn.event_type)
    SELECT string_agg(line, E'\n' ORDER BY ord1, ord2, ord3, ord4)
      INTO diagram
      FROM (SELECT 0 AS ord1, 0::bigint AS ord2, 0::bigint AS ord3, 0::bigint AS ord4,
                   'flowchart LR' AS line
            UNION ALL
            SELECT 1, tn.num, 0, 0,
                   format('    e%s(["%s%s%s"])%s', tn.num, saga.mermaid_label(tn.name),
                          CASE WHEN NOT tn.published THEN '<br/>no known publisher' ELSE '' END,
                          CASE WHEN NOT tn.consumed THEN '<br/>no subscriber' ELSE '' END,
                          CASE WHEN tn.published AND tn.consumed THEN '' ELSE ':::missing' END)
              FROM tn
            UNION ALL
            SELECT 2, sn.num, 0, 0,
                   format('    h%s["%s<br/>%s"]%s', sn.num, saga.mermaid_label(sn.consumer),
                          saga.mermaid_label(sn.handler::text),
                          CASE WHEN sn.forward THEN '' ELSE ':::undo' END)
              FROM sn
            UNION ALL
            SELECT 3, pn.num, 0, 0, format('    p%s("%s")', pn.num, saga.mermaid_label(pn.publisher))
              FROM pn
            UNION ALL
            SELECT 4, 0, 0, 0, '    engine{{"saga engine"}}'
              FROM tn WHERE tn.name = 'SagaAborted'
            UNION ALL
            SELECT 5, 0, 0, 0, '    empty["no subscriptions or published events to show"]'
             WHERE NOT EXISTS (SELECT FROM tn)
            UNION ALL
            SELECT 6, edges.kind * 10 + CASE edges.fp WHEN 'e' THEN 1 WHEN 'h' THEN 2 WHEN 'p' THEN 3 ELSE 4 END,
                   coalesce(edges.fnum, 0), edges.tnum,
                   format('    %s%s %s %s%s', edges.fp, coalesce(edges.fnum::text, ''), edges.arrow,
                          edges.tp, edges.tnum)
              FROM edges
            UNION ALL
            SELECT 7, 0, 0, 0, '    classDef missing stroke:#c00,stroke-width:2px,stroke-dasharray: 5 5'
            UNION ALL
            SELECT 7, 1, 0, 0, '    classDef undo stroke-dasharray: 5 5') lines;
    RETURN diagram;
END
$$;
COMMENT ON FUNCTION saga_topology_mermaid(text) IS
'the choreography as a Mermaid flowchart: which subscriptions consume which event types and, as far as the events kept show, who publishes them; a type consumed with no known publisher or published with no subscriber is dashed (what the current role may see; saga_type: only what sagas of that type involve)';

------------------------------------------------------------------------------
-- Application roles in one step
------------------------------------------------------------------------------

/*
 * An application role defines and runs sagas of its own: it may call the
 * functions below (saga.app_functions()).  saga_grant_app(role) grants
 * EXECUTE on them, saga_revoke_app(role) takes it back; both are for the
 * extension's owner (or a member of it, or a superuser), who owns the
 * functions and so may grant on them.
 *
 * Why functions that grant, and not a role the extension creates that
 * users are made members of: roles are the cluster's, not the database's.
 * A role made by CREATE EXTENSION would outlive DROP EXTENSION, collide
 * with the same CREATE EXTENSION in another database, and a member of it
 * would be an application role in every database that has the extension.
 * GRANTs on the extension's functions belong to this database and go
 * with DROP EXTENSION; pg_dump keeps them (they differ from pg_init_privs).
 *
 * Not SECURITY DEFINER: the caller must be able to grant on the functions
 * itself, which is checked first so that a caller who cannot gets an
 * error, not GRANT's "no privileges were granted" warning.  A later
 * version that adds an application function tells the DBA to run
 * saga_grant_app() again for each application role (it is idempotent)
 * rather than GRANT it in its update script: PostgreSQL records a GRANT
 * made there as the extension's initial privilege (pg_init_privs), which
 * pg_dump leaves out, so that a restore would lose it.
 */
CREATE FUNCTION saga.app_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.saga_publish(text, jsonb, bigint, text)',
        '@extschema@.saga_subscribe(text, text, regprocedure, text, boolean, text)',
        '@extschema@.saga_unsubscribe(text, text)',
        '@extschema@.saga_begin(text, interval)',
        '@extschema@.saga_complete(bigint)',
        '@extschema@.saga_fail(bigint, text)',
        '@extschema@.saga_define(text, saga.step[])',
        '@extschema@.saga_start(text, jsonb, interval)',
        '@extschema@.saga_retry(bigint)',
        '@extschema@.saga_cancel(bigint, text)',
        '@extschema@.saga_grant_events(text, text, text)',
        '@extschema@.saga_revoke_events(text, text, text)',
        '@extschema@.saga_grant_sagas(text, text)',
        '@extschema@.saga_revoke_sagas(text, text)',
        '@extschema@.saga_label_trace(text, text, text, text, text)',
        '@extschema@.saga_unlabel_trace(text)'
    ]::regprocedure[]
$$;
COMMENT ON FUNCTION saga.app_functions() IS
'the functions an application role may call (saga_grant_app() grants them)';

-- The checks both functions make; returns the extension's owner.
CREATE FUNCTION saga.check_app_role(role regrole, verb text)
RETURNS regrole
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner regrole;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Name the role: SELECT saga_%s_app(''app'').', verb);
    END IF;
    IF role = 0 THEN
        RAISE EXCEPTION 'an application role must be a role, not PUBLIC'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Make a group role the application role (SELECT saga_%s_app(''apps'')) and its users members of it (GRANT apps TO alice).', verb);
    END IF;
    SELECT e.extowner::regrole INTO owner FROM pg_extension e WHERE e.extname = 'saga';
    IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
        RAISE EXCEPTION '%', CASE verb WHEN 'grant' THEN format('permission denied to make role %s an application role', role)
                                       ELSE format('permission denied to revoke the application functions from role %s', role) END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('The extension''s owner (%s), a member of it, or a superuser can.', owner);
    END IF;
    RETURN owner;
END
$$;
COMMENT ON FUNCTION saga.check_app_role(regrole, text) IS
'the checks of saga_grant_app() and saga_revoke_app(); returns the extension''s owner';

CREATE FUNCTION saga_grant_app(role regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM saga.check_app_role(role, 'grant');
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s',
                   array_to_string(saga.app_functions()::text[], ', '), role);
END
$$;
COMMENT ON FUNCTION saga_grant_app(regrole) IS
'make role an application role: grant it EXECUTE on the functions that define and run sagas (saga.app_functions()); idempotent';

CREATE FUNCTION saga_revoke_app(role regrole)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner regrole := saga.check_app_role(role, 'revoke');
    had boolean;
    through text;
BEGIN
    IF role = owner THEN
        RAISE EXCEPTION 'role % owns the extension: it keeps its functions', role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The example''s functions (saga_place_order) call them with its rights.';
    END IF;
    SELECT EXISTS (SELECT FROM pg_proc p, aclexplode(p.proacl) a
                    WHERE p.oid = ANY (saga.app_functions()) AND a.grantee = role)
      INTO had;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s',
                   array_to_string(saga.app_functions()::text[], ', '), role);
    -- It may still have them through PUBLIC or a role it inherits from.
    SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                      ', ')
      INTO through
      FROM pg_proc p, aclexplode(p.proacl) a
     WHERE p.oid = ANY (saga.app_functions()) AND a.privilege_type = 'EXECUTE'
       AND (a.grantee = 0 OR (a.grantee <> owner AND pg_has_role(role, a.grantee, 'USAGE')));
    IF (SELECT rolsuper FROM pg_roles WHERE oid = role) THEN
        RAISE WARNING 'role % is a superuser: it may still call every function', role;
    ELSIF through IS NOT NULL THEN
        RAISE WARNING 'role % may still call the application functions through %', role, through
            USING HINT = 'Revoke them from those roles too, or take role ' || role || ' out of them.';
    END IF;
    RETURN had;
END
$$;
COMMENT ON FUNCTION saga_revoke_app(regrole) IS
'undo saga_grant_app(): revoke EXECUTE on the application functions from role; false if it had none of them (a WARNING if it still has them through PUBLIC or a role it inherits)';

-- (saga.check_app_role() stays callable: a DBA granted saga_grant_app()
-- who does not own the extension gets its error, which says who may.)
REVOKE ALL ON FUNCTION saga_grant_app(regrole), saga_revoke_app(regrole),
                       saga.app_functions() FROM PUBLIC;

------------------------------------------------------------------------------
-- pg_monitor reads the DBA's views
------------------------------------------------------------------------------

/*
 * As PostgreSQL's statistics views are, the DBA's views are readable by
 * the members of pg_monitor (a monitoring system's login, such as
 * postgres_exporter's): SELECT on each, and EXECUTE on the functions that
 * read shared memory for them (a view's functions are checked against the
 * user of the view, not its owner).  They show every role's sagas, with
 * their data and last errors, as pg_stat_activity shows pg_monitor every
 * session's query.  Nothing else: not the tables, not saga_run_pending().
 */
GRANT SELECT ON saga_instances, saga_stuck, saga_dead_letters, saga_backlog,
                saga_subscriptions, saga_workers, saga_stats, saga_databases
   TO pg_monitor;
GRANT EXECUTE ON FUNCTION saga_worker_status(), saga_counters(), saga_database_status()
   TO pg_monitor;


------------------------------------------------------------------------------
-- The owner's views are security barriers
------------------------------------------------------------------------------

-- saga_my_sagas, saga_my_stuck and saga_my_dead_letters show the rows whose
-- owner the reader has the privileges of.  Without the barrier, a cheap
-- function of the reader's in a WHERE clause ran before that check and
-- saw every role's sagas, remedies and errors.
ALTER VIEW saga_my_sagas SET (security_barrier = true);
ALTER VIEW saga_my_stuck SET (security_barrier = true);
ALTER VIEW saga_my_dead_letters SET (security_barrier = true);


------------------------------------------------------------------------------
-- Clients that are told: a NOTIFY when a saga ends
------------------------------------------------------------------------------

-- A client asks, in the transaction that starts a saga, to be told when it
-- ends; the transaction that ends it (a worker's batch, most often) sends
-- one NOTIFY per channel with "id:status" of every such saga it ended.
ALTER TABLE saga.instance ADD COLUMN notify_channel text;
COMMENT ON COLUMN saga.instance.notify_channel IS
'the channel NOTIFYed when the saga ends (saga_notify_on_end), or NULL';
-- what a committing transaction looks up for the sagas it ended: only
-- those that asked, so that the others cost one probe of an index that
-- is empty but for them
CREATE INDEX instance_notify_idx ON saga.instance (id) WHERE notify_channel IS NOT NULL;

CREATE FUNCTION saga_notify_on_end(saga_id bigint, channel text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_notify_on_end'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION saga_notify_on_end(bigint, text) IS
'when the saga ends, NOTIFY channel with "id:status" (one NOTIFY per channel and committing transaction, for every such saga it ended); false if the saga has ended already';
-- as saga_status: any role, for the sagas it may see
GRANT EXECUTE ON FUNCTION saga_notify_on_end(bigint, text) TO PUBLIC;

------------------------------------------------------------------------------
-- pg_monitor may ask saga_check()
------------------------------------------------------------------------------

-- The checker only reads, and what it tells (saga ids, the promise broken,
-- a detail from the record) pg_monitor already reads in saga_instances and
-- saga_stuck: a monitoring login may run it on a schedule and alert on any
-- row, without being made the extension's owner.
GRANT EXECUTE ON FUNCTION saga_check(interval, interval) TO pg_monitor;
