--
-- Deliveries that wait in a batch's memory (1.2): a delivery that a handler
-- of the batch published, and a later round of the same batch runs, is
-- written once, done.  Off that path: its consumer is paused, its handler
-- fails, and its saga was aborted and must not end before it has run.
-- Driven by saga_run_pending(), which runs batches as the workers do, by an
-- ordinary role.
--
CREATE EXTENSION saga;
SET saga.retry_backoff = 0;

CREATE ROLE relay;
GRANT EXECUTE ON FUNCTION
    saga_publish(text, jsonb, bigint, text),
    saga_subscribe(text, text, regprocedure, text, boolean, text),
    saga_begin(text, interval), saga_cancel(bigint, text)
TO relay;
CREATE FUNCTION run_pending() RETURNS bigint LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT public.saga_run_pending() $$;
GRANT EXECUTE ON FUNCTION run_pending() TO relay;
CREATE SCHEMA relay AUTHORIZATION relay;
ALTER ROLE relay SET search_path = relay, public;

SET ROLE relay;
SET search_path = relay, public;
CREATE TABLE relay.heard (
    n       serial PRIMARY KEY,
    saga_id bigint NOT NULL,
    who     text NOT NULL,
    what    text NOT NULL
);
-- a hears Ping and publishes Pong; b hears Pong, and fails when told to
CREATE FUNCTION relay.a_on_ping(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO heard (saga_id, who, what) VALUES (e.saga_id, 'a', e.event_type);
    PERFORM saga_publish('Pong', e.payload);
END $$;
CREATE FUNCTION relay.b_on_pong(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.payload->>'fail' = 'yes' THEN
        RAISE EXCEPTION 'b is out of paper';
    END IF;
    INSERT INTO heard (saga_id, who, what) VALUES (e.saga_id, 'b', e.event_type);
END $$;
-- compensations: a undoes on SagaAborted and says so; b hears of it
CREATE FUNCTION relay.a_on_aborted(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO heard (saga_id, who, what) VALUES (e.saga_id, 'a', e.event_type);
    PERFORM saga_publish('PingUndone', '{}');
END $$;
CREATE FUNCTION relay.b_on_undone(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO heard (saga_id, who, what) VALUES (e.saga_id, 'b', e.event_type);
END $$;
SELECT count(*) AS subscribed FROM (VALUES
    (saga_subscribe('a', 'Ping', 'a_on_ping(saga.event)', saga_type => 'relay')),
    (saga_subscribe('b', 'Pong', 'b_on_pong(saga.event)', saga_type => 'relay')),
    (saga_subscribe('a', 'SagaAborted', 'a_on_aborted(saga.event)', forward => false,
                    saga_type => 'relay')),
    (saga_subscribe('b', 'PingUndone', 'b_on_undone(saga.event)', forward => false,
                    saga_type => 'relay'))) s;

RESET ROLE;
-- a saga's deliveries, in order, as the DBA sees them
CREATE FUNCTION public.deliveries(saga bigint)
RETURNS TABLE (event_type text, consumer text, status text, attempts int, last_error text)
LANGUAGE sql AS $$
    SELECT e.event_type, s.consumer, d.status, d.attempts, d.last_error
      FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE e.saga_id = saga ORDER BY d.id
$$;

--
-- 1. The plain path: Ping's delivery was written pending by the client and
--    is marked done; Pong's is written once, done.  Counted in the
--    transaction that runs both (pg_stat_xact_user_tables).
--
BEGIN;
SET LOCAL ROLE relay;
SELECT saga_begin('relay') AS plain \gset
SELECT saga_publish('Ping', '{}', :plain) > 0 AS published;
SELECT run_pending();
RESET ROLE;
SELECT n_tup_ins AS delivery_rows_inserted, n_tup_upd AS delivery_rows_updated
  FROM pg_stat_xact_user_tables WHERE relid = 'saga.delivery'::regclass;
COMMIT;
SELECT * FROM deliveries(:plain);
SELECT who, what FROM relay.heard WHERE saga_id = :plain ORDER BY n;

--
-- 2. Pong's consumer is paused: its delivery is written pending, as
--    published, and waits; it runs once b is resumed.
--
SELECT saga_pause_consumer('b');
SET ROLE relay;
SELECT saga_begin('relay') AS paused \gset
SELECT saga_publish('Ping', '{}', :paused) > 0 AS published;
SELECT run_pending();
RESET ROLE;
SELECT * FROM deliveries(:paused);
SELECT who, what FROM relay.heard WHERE saga_id = :paused ORDER BY n;
SELECT problem, work FROM saga_stuck WHERE saga_id = :paused;
SELECT saga_resume_consumer('b');
SELECT run_pending();
SELECT * FROM deliveries(:paused);
SELECT who, what FROM relay.heard WHERE saga_id = :paused ORDER BY n;

--
-- 3. Pong's handler fails: its delivery is written pending with the
--    attempt and the error, and a's work stays; the retry fails alike.
--
SET ROLE relay;
SELECT saga_begin('relay') AS failing \gset
SELECT saga_publish('Ping', '{"fail": "yes"}', :failing) > 0 AS published;
SELECT run_pending();
RESET ROLE;
SELECT * FROM deliveries(:failing);
SELECT who, what FROM relay.heard WHERE saga_id = :failing ORDER BY n;
SELECT run_pending();
SELECT * FROM deliveries(:failing);

--
-- 4. An aborted saga whose compensation publishes another compensation:
--    the engine fails it only once both have run, not between them, when
--    the second is still in the batch's memory.  Its end is the last line
--    of its trace, and the checker finds nothing.
--
SET ROLE relay;
SELECT saga_begin('relay') AS aborted \gset
SELECT saga_cancel(:aborted, 'changed my mind');
SELECT status FROM saga_my_sagas WHERE id = :aborted;
SELECT run_pending();
SELECT status, reason FROM saga_my_sagas WHERE id = :aborted;
SELECT who, what FROM heard WHERE saga_id = :aborted ORDER BY n;
SELECT sender, receiver, message FROM saga_trace(:aborted);
RESET ROLE;
SELECT i.finished_at >= max(d.delivered_at) AS ended_after_its_compensations
  FROM saga.instance i JOIN saga.event e ON e.saga_id = i.id
  JOIN saga.delivery d ON d.event_id = e.id
 WHERE i.id = :aborted GROUP BY i.finished_at;
SELECT * FROM deliveries(:aborted);
SELECT * FROM saga_check();

-- Clean up.
SET client_min_messages = warning;
DROP EXTENSION saga CASCADE;
DROP SCHEMA relay CASCADE;
DROP FUNCTION run_pending(), deliveries(bigint);
DROP ROLE relay;
