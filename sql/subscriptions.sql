--
-- The generic engine: users' own handlers subscribed to their own events,
-- a user-defined choreographed saga, retries and dead letters, and
-- handlers running with their subscriber's rights only.
--
CREATE EXTENSION saga;
SET saga.retry_backoff = 0;

-- A handler is a function taking saga.event.
CREATE TABLE shipment (order_id bigint PRIMARY KEY, note text);
CREATE FUNCTION record_shipment(e saga.event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shipment VALUES ((e.payload->>'order_id')::bigint, e.payload->>'note');
    -- publish from a handler: saga id, publisher and cause default to the event's
    PERFORM saga_publish('ShipmentRecorded', e.payload);
END $$;

SELECT saga_subscribe('shipping', 'OrderShipped', 'record_shipment(saga.event)');
SELECT consumer, event_type, handler, owner = current_user::regrole AS mine
  FROM saga_subscriptions WHERE consumer = 'shipping';

-- Subscribing twice, or a function of the wrong shape, is refused.
\set VERBOSITY terse
SELECT saga_subscribe('shipping', 'OrderShipped', 'record_shipment(saga.event)');
CREATE FUNCTION wrong_shape(e saga.event, extra int) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT saga_subscribe('shipping', 'Other', 'wrong_shape(saga.event, int)');
CREATE PROCEDURE a_procedure(e saga.event) LANGUAGE sql AS 'SELECT';
SELECT saga_subscribe('shipping', 'Other', 'a_procedure(saga.event)');
\set VERBOSITY default

SELECT saga_publish('OrderShipped', '{"order_id": 7, "note": "fragile"}', 42) AS shipped \gset
SELECT saga_publish('NobodyListens', '{}');
SELECT saga_run_pending();
SELECT * FROM shipment;
SELECT event_type, saga_id, publisher, caused_by = :shipped AS caused_by_shipped
  FROM saga.event ORDER BY id;

-- A user-defined choreographed saga: sign-up, welcome mail, done.
CREATE TABLE mailbox (saga_id bigint, body text);
CREATE FUNCTION send_welcome(e saga.event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailbox VALUES (e.saga_id, 'welcome ' || (e.payload->>'user'));
    PERFORM saga_publish('WelcomeSent', e.payload);
END $$;
CREATE FUNCTION finish_signup(e saga.event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_complete(e.saga_id);
END $$;
SELECT saga_subscribe('mailer', 'UserSignedUp', 'send_welcome(saga.event)');
SELECT saga_subscribe('signup', 'WelcomeSent', 'finish_signup(saga.event)');

SELECT saga_begin('signup') AS signup \gset
SELECT saga_publish('UserSignedUp', '{"user": "zoe"}', :signup, 'signup');
SELECT saga_status(:signup);
SELECT saga_run_pending();
SELECT saga_status(:signup);
SELECT * FROM mailbox;
SELECT seq, sender, receiver, message FROM saga_trace(:signup);

-- A handler that raises rolls back alone: its writes are undone, the error
-- is recorded, and it is retried until saga.max_attempts, then dead.
CREATE TABLE attempts_log (n int);
CREATE FUNCTION flaky(e saga.event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO attempts_log VALUES (1);
    IF (SELECT count(*) FROM shipment WHERE order_id = 99) = 0 THEN
        RAISE EXCEPTION 'shipment 99 not there yet' USING ERRCODE = 'P0099';
    END IF;
END $$;
SELECT saga_subscribe('flaky', 'Ping', 'flaky(saga.event)');
SELECT saga_publish('Ping', '{}') AS ping \gset
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT status, attempts, last_error FROM saga.delivery WHERE event_id = :ping;
SELECT count(*) AS rows_left_by_failed_attempts FROM attempts_log;
INSERT INTO shipment VALUES (99, 'now');
SELECT saga_run_pending();
SELECT status, attempts, last_error FROM saga.delivery WHERE event_id = :ping;
SELECT count(*) AS rows_left FROM attempts_log;

SET saga.max_attempts = 2;
SELECT saga_publish('Ping', '{}', NULL, 'tester') AS ping2 \gset
DELETE FROM shipment WHERE order_id = 99;
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT status, attempts, last_error FROM saga.delivery WHERE event_id = :ping2;
RESET saga.max_attempts;

-- Another batch member is not hurt by a failing one.
SELECT saga_publish('Ping', '{}') AS ping3 \gset
SELECT saga_publish('OrderShipped', '{"order_id": 8, "note": "after a failure"}') AS shipped2 \gset
SELECT saga_run_pending();
SELECT * FROM shipment WHERE order_id = 8;

-- Unsubscribing drops pending deliveries; only the owner may unsubscribe.
SELECT saga_publish('Ping', '{}') AS ping4 \gset
SELECT saga_unsubscribe('flaky', 'Ping');
SELECT saga_unsubscribe('flaky', 'Ping');
SELECT count(*) FROM saga.delivery WHERE event_id = :ping4;

-- Handlers run as the role that subscribed them, with its rights only.
CREATE ROLE app_role LOGIN;
CREATE TABLE app_table (v text);
CREATE TABLE secret_table (v text);
GRANT INSERT, SELECT ON app_table TO app_role;
GRANT EXECUTE ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean, text),
                          saga_unsubscribe(text, text),
                          saga_publish(text, jsonb, bigint, text) TO app_role;
CREATE SCHEMA app AUTHORIZATION app_role;
SET ROLE app_role;
CREATE FUNCTION app.on_note(e saga.event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.app_table VALUES (current_user || ': ' || (e.payload->>'v'));
    IF e.payload ? 'secret' THEN
        INSERT INTO public.secret_table VALUES (e.payload->>'secret');
    END IF;
END $$;
SELECT saga_subscribe('app', 'Note', 'app.on_note(saga.event)');
SELECT saga_publish('Note', '{"v": "hello"}') AS note1 \gset
SELECT saga_publish('Note', '{"v": "sneaky", "secret": "x"}') AS note2 \gset
-- an ordinary role cannot read or write the engine's tables directly
\set VERBOSITY terse
-- ... nor subscribe to another role's event type, or publish it (1.2)
SELECT saga_subscribe('app_spy', 'OrderShipped', 'app.on_note(saga.event)');
SELECT saga_publish('OrderShipped', '{"order_id": 9}');
SELECT count(*) FROM saga.delivery;
INSERT INTO saga.event (event_type, payload, publisher) VALUES ('Forged', '{}', 'me');
-- nor run other roles' handlers by hand
SELECT saga_run_pending();
\set VERBOSITY default
RESET ROLE;
SELECT saga_run_pending();
SELECT * FROM app_table;
SELECT count(*) AS secrets FROM secret_table;
SELECT e.payload->>'v' AS note, d.status, d.last_error
  FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
 WHERE e.id IN (:note1, :note2) ORDER BY e.id;

-- Another role may not remove app_role's subscription ... but its owner may.
CREATE ROLE other_role;
GRANT EXECUTE ON FUNCTION saga_unsubscribe(text, text) TO other_role;
SET ROLE other_role;
\set VERBOSITY terse
SELECT saga_unsubscribe('app', 'Note');
\set VERBOSITY default
SET ROLE app_role;
SELECT saga_unsubscribe('app', 'Note');
RESET ROLE;

-- Clean up: the handlers go with the extension (they take saga.event).
DROP EXTENSION saga CASCADE;
DROP SCHEMA app;
DROP TABLE shipment, mailbox, attempts_log, app_table, secret_table;
DROP ROLE app_role, other_role;
