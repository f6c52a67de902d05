/* saga--1.1--1.2.sql: upgrade the saga extension from 1.1 to 1.2 */

\echo Use "ALTER EXTENSION saga UPDATE TO '1.2'" to load this file. \quit

/*
 * 1.2 keeps the engine's promise off the beaten path: every saga ends,
 * completed or compensated; nothing forward runs after an abort; nothing
 * is applied twice.  Each section below belongs to one concern.
 */

------------------------------------------------------------------------------
-- Sagas end by the engine's own rules (aborts, deadlines, late events)
------------------------------------------------------------------------------

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

------------------------------------------------------------------------------
-- The history checker: saga_check()
------------------------------------------------------------------------------
