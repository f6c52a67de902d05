--
-- saga_check(), driven by saga_run_pending(): sagas run by the engine give
-- no violation; then each kind of violation is written into a copy of
-- their record by hand, and saga_check() must name it.  (The randomized
-- test t/011_checker.pl asks it of histories the engine wrote itself.)
--
CREATE EXTENSION saga;
SET saga.retry_backoff = 0;
SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_stock('widget', 10);

-- What saga_check() says, with the sagas named and the times taken out.
CREATE TABLE label (saga_id bigint PRIMARY KEY, name text NOT NULL);
CREATE FUNCTION checked(ended_within interval DEFAULT '1 hour',
                        deadline_slack interval DEFAULT '1 second')
RETURNS TABLE (saga text, violation text, detail text)
LANGUAGE sql AS $$
    SELECT coalesce(l.name, c.saga_id::text), c.violation,
           regexp_replace(regexp_replace(c.detail,
               '[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d(\.\d+)? \d{4}( [A-Z]+)?',
               '<time>', 'g'),
               'pending for [^(]*', 'pending for <age> ')
      FROM saga_check(ended_within, deadline_slack) c
      LEFT JOIN label l ON l.saga_id = c.saga_id
     ORDER BY 1, 2, 3
$$;

-- A trip: three steps, the last one without compensation and rejecting
-- some cities.
CREATE FUNCTION book(data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '{"booked": true}'::jsonb $$;
CREATE FUNCTION unbook(data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '{"unbooked": true}'::jsonb $$;
CREATE FUNCTION car(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF data->>'city' = 'Porto' THEN
        PERFORM saga_reject('no car in Porto');
    END IF;
    RETURN '{"car": true}';
END $$;
CREATE FUNCTION last(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF data->>'city' = 'Porto' THEN
        PERFORM saga_reject('nothing at all in Porto');
    END IF;
    RETURN '{}';
END $$;
SELECT saga_define('trip',
    saga_step('flight', 'book(jsonb)', 'unbook(jsonb)'),
    saga_step('hotel',  'book(jsonb)', 'unbook(jsonb)'),
    saga_step('car',    'car(jsonb)'),
    saga_step('last',   'last(jsonb)'));

--
-- 1. What the engine writes is clean: both patterns, completed and failed.
--
INSERT INTO label
SELECT saga_place_order('alice', 'widget', 1, 10.00), 'choreography completed' UNION ALL
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration'), 'orchestration completed' UNION ALL
SELECT saga_place_order('alice', 'widget', 1, 1000.00), 'choreography failed' UNION ALL
SELECT saga_place_order('alice', 'widget', 50, 10.00), 'choreography refunded' UNION ALL
SELECT saga_place_order('alice', 'widget', 50, 10.00, 'orchestration'), 'orchestration failed' UNION ALL
SELECT saga_start('trip', '{"city": "Lisbon"}'), 'trip completed' UNION ALL
SELECT saga_start('trip', '{"city": "Porto"}'), 'trip failed';
SELECT saga_run_pending();
SELECT l.name, i.status, i.reason FROM label l JOIN saga.instance i ON i.id = l.saga_id ORDER BY l.saga_id;
SELECT step_no, kind, outcome FROM saga.step_run
 WHERE saga_id = (SELECT saga_id FROM label WHERE name = 'trip failed') ORDER BY request_seq;
SELECT * FROM checked();
-- it runs in REPEATABLE READ too (without the saga_await() comparison)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM checked();
COMMIT;

--
-- 2. A saga that has not ended: reported once it is older than the bound.
--
INSERT INTO label SELECT saga_begin('signup'), 'begun, never ended';
SELECT * FROM checked();
UPDATE saga.instance SET started_at = started_at - interval '2 hours'
 WHERE id = (SELECT saga_id FROM label WHERE name = 'begun, never ended');
SELECT * FROM checked();
SELECT * FROM checked(ended_within => '3 hours');
SELECT saga_fail(saga_id, 'given up') FROM label WHERE name = 'begun, never ended';
SELECT * FROM checked();

--
-- 3. Records changed by hand (and put back): each change breaks a promise,
--    and saga_check() says which.
--
-- a failed saga without a reason
BEGIN;
UPDATE saga.instance SET reason = NULL WHERE id = (SELECT saga_id FROM label WHERE name = 'trip failed');
SELECT * FROM checked();
ROLLBACK;

-- a completed saga that had been aborted
BEGIN;
UPDATE saga.instance SET aborted_at = finished_at
 WHERE id = (SELECT saga_id FROM label WHERE name = 'choreography completed');
SELECT * FROM checked();
ROLLBACK;

-- an orchestrated saga completed long after its deadline, its steps begun
-- after it too; within the slack it is not reported
BEGIN;
UPDATE saga.instance SET deadline = finished_at - interval '1 minute'
 WHERE id = (SELECT saga_id FROM label WHERE name = 'trip completed');
SELECT * FROM checked();
SELECT * FROM checked(deadline_slack => '2 minutes');
ROLLBACK;
-- ... and one whose steps began after it
BEGIN;
UPDATE saga.instance SET deadline = started_at - interval '1 minute'
 WHERE id = (SELECT saga_id FROM label WHERE name = 'trip failed');
SELECT * FROM checked();
ROLLBACK;

-- a completed saga with a compensation: orchestrated (a step run) ...
BEGIN;
INSERT INTO saga.step_run (saga_id, step_no, step, service, kind, outcome, request,
                           request_seq, response_seq, started_at, finished_at)
SELECT r.saga_id, r.step_no, r.step, r.service, 'compensation', 'ok', 'undo',
       nextval('saga.trace_seq'), nextval('saga.trace_seq'), clock_timestamp(), clock_timestamp()
  FROM saga.step_run r
 WHERE r.saga_id = (SELECT saga_id FROM label WHERE name = 'trip completed') AND r.step_no = 1;
SELECT * FROM checked();
ROLLBACK;

-- ... and choreographed (a compensating delivery done)
BEGIN;
INSERT INTO saga.delivery (event_id, subscription_id, status, attempts, delivered_at, seq)
SELECT e.id, s.id, 'done', 1, clock_timestamp(), nextval('saga.trace_seq')
  FROM saga.event e, saga.subscription s
 WHERE e.saga_id = (SELECT saga_id FROM label WHERE name = 'choreography completed')
   AND e.event_type = 'InventoryReserved'
   AND s.consumer = 'payment' AND s.event_type = 'InventoryReservationFailed';
SELECT * FROM checked();
ROLLBACK;

-- a completed saga with a step missing
BEGIN;
DELETE FROM saga.step_run
 WHERE saga_id = (SELECT saga_id FROM label WHERE name = 'trip completed') AND step_no = 2;
SELECT * FROM checked();
ROLLBACK;

-- a step run twice
BEGIN;
INSERT INTO saga.step_run (saga_id, step_no, step, service, kind, outcome, request,
                           request_seq, response_seq, started_at, finished_at)
SELECT r.saga_id, r.step_no, r.step, r.service, r.kind, r.outcome, r.request,
       nextval('saga.trace_seq'), nextval('saga.trace_seq'), r.started_at, r.finished_at
  FROM saga.step_run r
 WHERE r.saga_id = (SELECT saga_id FROM label WHERE name = 'trip completed') AND r.step_no = 3;
SELECT * FROM checked();
ROLLBACK;

-- a failed saga: a compensation missing, one of a step never done, two in
-- the wrong order, one before the forward steps had ended
BEGIN;
DELETE FROM saga.step_run
 WHERE saga_id = (SELECT saga_id FROM label WHERE name = 'trip failed')
   AND step_no = 0 AND kind = 'compensation';
SELECT * FROM checked();
ROLLBACK;
BEGIN;
DELETE FROM saga.step_run
 WHERE saga_id = (SELECT saga_id FROM label WHERE name = 'trip failed')
   AND step_no = 1 AND kind = 'action';
SELECT * FROM checked();
ROLLBACK;
BEGIN;
UPDATE saga.step_run SET request_seq = request_seq + 1000000
 WHERE saga_id = (SELECT saga_id FROM label WHERE name = 'trip failed')
   AND kind = 'compensation' AND step_no = 1;
SELECT * FROM checked();
ROLLBACK;
BEGIN;
UPDATE saga.step_run SET request_seq = 0
 WHERE saga_id = (SELECT saga_id FROM label WHERE name = 'trip failed')
   AND kind = 'compensation' AND step_no = 1;
SELECT * FROM checked();
ROLLBACK;

-- forward work after the abort, and after the end
BEGIN;
UPDATE saga.instance SET aborted_at = started_at
 WHERE id IN (SELECT saga_id FROM label WHERE name IN ('trip failed', 'choreography failed'));
SELECT * FROM checked();
ROLLBACK;
BEGIN;
UPDATE saga.instance SET finished_at = started_at, finish_seq = start_seq
 WHERE id IN (SELECT saga_id FROM label WHERE name IN ('trip failed', 'choreography failed'));
SELECT * FROM checked();
ROLLBACK;

-- a compensating delivery dead-lettered
BEGIN;
UPDATE saga.delivery d SET status = 'dead', attempts = 5, last_error = 'refund service down'
  FROM saga.event e
 WHERE e.id = d.event_id AND e.event_type = 'InventoryReservationFailed'
   AND d.subscription_id = (SELECT id FROM saga.subscription
                             WHERE consumer = 'payment' AND event_type = 'InventoryReservationFailed')
   AND e.saga_id = (SELECT saga_id FROM label WHERE name = 'choreography refunded');
SELECT * FROM checked();
ROLLBACK;

-- a purged saga has no history left to judge, and is still clean
SELECT saga_purge('0');
SELECT * FROM checked();

--
-- 4. Who may call it, and what it refuses.
--
CREATE ROLE saga_checker_user NOLOGIN;
SET ROLE saga_checker_user;
SELECT * FROM saga_check();
RESET ROLE;
\set VERBOSITY terse
SELECT * FROM saga_check(ended_within => '-1 second');
SELECT * FROM saga_check(ended_within => NULL);
SELECT * FROM saga_check(deadline_slack => '-1 second');
\set VERBOSITY default
DROP ROLE saga_checker_user;
-- Clean up, as every suite does: the next one creates the extension afresh.
DROP EXTENSION saga CASCADE;
