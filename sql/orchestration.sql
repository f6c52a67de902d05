--
-- Orchestration, driven by saga_run_pending(): the order saga's three
-- outcomes with the seed's orchestration diagram as trace, a user-defined
-- trip saga compensated in reverse, technical errors, a compensation that
-- fails twice, a stuck saga retried by hand, definitions replaced while
-- an instance runs, and steps run with their definer's rights only.
--
CREATE EXTENSION saga;
SET saga.retry_backoff = 0;

SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_balance('bob', 5.00);
SELECT saga_set_stock('widget', 10);
SELECT saga_set_stock('gadget', 0);

-- 1. Happy path
SELECT saga_place_order('alice', 'widget', 2, 30.00, 'orchestration') AS happy \gset
SELECT saga_order_status(:happy);
SELECT saga_run_pending();
SELECT saga_order_status(:happy), saga_balance('alice'), saga_stock('widget');
SELECT pattern, status, reason FROM saga_orders WHERE order_id = :happy;
SELECT seq, sender, receiver, message FROM saga_trace(:happy);

-- 2. Payment fails: nothing to compensate
SELECT saga_place_order('bob', 'widget', 1, 50.00, 'orchestration') AS nofunds \gset
SELECT saga_run_pending();
SELECT saga_order_status(:nofunds), saga_balance('bob'), saga_stock('widget');
SELECT status, reason FROM saga_orders WHERE order_id = :nofunds;
SELECT count(*) AS payments FROM saga.payment WHERE order_id = :nofunds;
SELECT seq, sender, receiver, message FROM saga_trace(:nofunds);

-- 3. Inventory fails: the payment is cancelled (refunded), then the order fails
SELECT saga_place_order('alice', 'gadget', 1, 20.00, 'orchestration') AS nostock \gset
SELECT saga_run_pending();
SELECT saga_order_status(:nostock), saga_balance('alice'), saga_stock('gadget');
SELECT status, reason FROM saga_orders WHERE order_id = :nostock;
SELECT id AS payment_id, status FROM saga.payment WHERE order_id = :nostock \gset
SELECT :'status' AS payment_status;
-- the trace names the real payment: DELETE /payments/<id>
SELECT seq, sender, receiver,
       regexp_replace(message, '/payments/\d+$', '/payments/<payment_id>') AS message
  FROM saga_trace(:nostock);
SELECT message = 'DELETE /payments/' || :payment_id AS names_the_payment
  FROM saga_trace(:nostock) WHERE message LIKE 'DELETE%';

-- Both patterns over the same data, side by side.
SELECT saga_place_order('alice', 'widget', 1, 5.00) AS chor \gset
SELECT saga_place_order('alice', 'widget', 1, 5.00, 'orchestration') AS orch \gset
SELECT saga_run_pending();
SELECT order_id = :chor AS choreographed, pattern, status FROM saga_orders
 WHERE order_id IN (:chor, :orch) ORDER BY order_id;
SELECT saga_balance('alice'), saga_stock('widget');

-- An unknown mode is an error, and nothing is written.
SELECT count(*) AS orders_before FROM saga.orders \gset
\set VERBOSITY terse
SELECT saga_place_order('alice', 'widget', 1, 1.00, 'telepathy');
SELECT saga_place_order('alice', 'widget', 1, 1.00, NULL);
\set VERBOSITY default
SELECT count(*) = :orders_before AS nothing_written FROM saga.orders;

--
-- A user-defined saga: book a trip (flight, hotel, car).  The car cannot
-- be had, so the hotel, then the flight, are cancelled.
--
CREATE TABLE booking_log (n serial, what text);
CREATE FUNCTION book(what text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO booking_log (what) VALUES ('book ' || what);
    RETURN jsonb_build_object(what || '_ref', upper(what) || '-' || (data->>'saga_id'));
END $$;
CREATE FUNCTION book_flight(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT book('flight', data) $$;
CREATE FUNCTION book_hotel(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT book('hotel', data) $$;
CREATE FUNCTION book_car(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO booking_log (what) VALUES ('car: checking (undone if rejected)');
    IF data->>'car' = 'none left' THEN
        PERFORM saga_reject('no car available in ' || (data->>'city'));
    END IF;
    RETURN book('car', data);
END $$;
CREATE FUNCTION cancel_flight(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO booking_log (what) VALUES ('cancel ' || (data->>'flight_ref'));
    RETURN '{"flight_cancelled": true}';
END $$;
CREATE FUNCTION cancel_hotel(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO booking_log (what) VALUES ('cancel ' || (data->>'hotel_ref'));
    RETURN '{"hotel_cancelled": true}';
END $$;

SELECT saga_define('trip',
    saga_step('flight', 'book_flight(jsonb)', 'cancel_flight(jsonb)'),
    saga_step('hotel',  'book_hotel(jsonb)',  'cancel_hotel(jsonb)'),
    saga_step('car',    'book_car(jsonb)'));

SELECT saga_start('trip', '{"city": "Lisbon"}') AS trip_ok \gset
SELECT saga_start('trip', '{"city": "Porto", "car": "none left"}') AS trip_nocar \gset
SELECT saga_run_pending();
SELECT saga_status(:trip_ok), saga_status(:trip_nocar);
SELECT what FROM booking_log ORDER BY n;
SELECT status, phase, reason, data - 'saga_id' AS data FROM saga_instances WHERE id = :trip_nocar;
SELECT seq, sender, receiver, message FROM saga_trace(:trip_nocar);
SELECT step, kind, outcome FROM saga.step_run WHERE saga_id = :trip_ok ORDER BY request_seq;

--
-- A technical error (the function raises) is retried with backoff, then,
-- after saga.max_attempts, treated as a failure.
--
CREATE SEQUENCE hiccups;
CREATE FUNCTION flaky_step(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('hiccups') <= (data->>'hiccups')::int THEN
        RAISE EXCEPTION 'service unavailable' USING ERRCODE = 'P0123';
    END IF;
    RETURN '{"flaky": "ok"}';
END $$;
SELECT saga_define('flaky', saga_step('first', 'book_flight(jsonb)', 'cancel_flight(jsonb)'),
                            saga_step('flaky', 'flaky_step(jsonb)'));
SET saga.max_attempts = 3;
SELECT saga_start('flaky', '{"hiccups": 2}') AS recovers \gset
SELECT saga_run_pending();   -- first step, then flaky fails (1)
SELECT saga_run_pending();   -- flaky fails (2)
SELECT status, phase, attempts, last_error FROM saga_instances WHERE id = :recovers;
SELECT saga_run_pending();   -- flaky succeeds
SELECT status, phase, attempts, last_error FROM saga_instances WHERE id = :recovers;

SELECT setval('hiccups', 1, false);
SELECT saga_start('flaky', '{"hiccups": 100}') AS gives_up \gset
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT saga_run_pending();   -- third failure: compensate
SELECT saga_run_pending();
SELECT status, phase, reason FROM saga_instances WHERE id = :gives_up;
SELECT seq, sender, receiver, message FROM saga_trace(:gives_up);
RESET saga.max_attempts;

--
-- A compensation that fails twice, then succeeds: retried, never skipped.
--
CREATE SEQUENCE refund_tries;
CREATE FUNCTION fragile_cancel(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO booking_log (what) VALUES ('fragile cancel attempt');
    IF nextval('refund_tries') <= 2 THEN
        RAISE EXCEPTION 'refund service down';
    END IF;
    RETURN '{"cancelled": true}';
END $$;
CREATE FUNCTION always_no(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_reject('no');
    RETURN NULL;
END $$;
SELECT saga_define('fragile', saga_step('book', 'book_flight(jsonb)', 'fragile_cancel(jsonb)'),
                              saga_step('refuse', 'always_no(jsonb)'));
TRUNCATE booking_log;
SELECT saga_start('fragile', '{}') AS fragile \gset
SELECT saga_run_pending();
SELECT status, phase, attempts, last_error FROM saga_instances WHERE id = :fragile;
SELECT saga_run_pending();
SELECT status, phase, attempts, last_error FROM saga_instances WHERE id = :fragile;
SELECT saga_run_pending();
SELECT status, phase, attempts, last_error FROM saga_instances WHERE id = :fragile;
SELECT what, count(*) FROM booking_log GROUP BY what ORDER BY what;

--
-- A compensation that keeps failing marks the saga stuck, for a person;
-- saga_retry() resumes it once the cause is fixed.
--
SET saga.max_attempts = 2;
SELECT setval('refund_tries', 1, false);
ALTER SEQUENCE refund_tries MAXVALUE 1000;
CREATE TABLE refund_switch (broken boolean);
INSERT INTO refund_switch VALUES (true);
CREATE OR REPLACE FUNCTION fragile_cancel(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT broken FROM refund_switch) THEN
        RAISE EXCEPTION 'refund service down';
    END IF;
    RETURN '{"cancelled": true}';
END $$;
SELECT saga_start('fragile', '{}') AS stuck \gset
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT status, phase, attempts, last_error FROM saga_instances WHERE id = :stuck;
SELECT saga_run_pending();   -- a stuck saga is left alone
UPDATE refund_switch SET broken = false;
SELECT saga_retry(:stuck);
SELECT saga_retry(:stuck);   -- not stuck any more
SELECT saga_run_pending();
SELECT status, phase, reason FROM saga_instances WHERE id = :stuck;
RESET saga.max_attempts;

--
-- Replacing a definition does not change instances already running: they
-- finish on the version they started with.
--
CREATE TABLE version_log (v text);
CREATE SEQUENCE v1_hiccup;
-- v1's second step fails once, so that the old run is still in flight
-- when the definition is replaced
CREATE FUNCTION v1_step(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('v1_hiccup') = 1 THEN
        RAISE EXCEPTION 'not yet';
    END IF;
    INSERT INTO version_log VALUES ('v1 step ' || (data->>'saga_id'));
    RETURN NULL;
END $$;
CREATE FUNCTION v2_step(data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ INSERT INTO version_log VALUES ('v2 step ' || (data->>'saga_id')) RETURNING NULL::jsonb $$;
SELECT saga_define('evolving', saga_step('one', 'book_flight(jsonb)'), saga_step('two', 'v1_step(jsonb)'));
SELECT saga_start('evolving') AS old_run \gset
SELECT saga_run_pending();        -- the old run is past step one, and waits for a retry
SELECT status, step, phase, last_error FROM saga_instances WHERE id = :old_run;
SELECT saga_define('evolving', saga_step('one', 'book_flight(jsonb)'), saga_step('two', 'v2_step(jsonb)'),
                               saga_step('three', 'v2_step(jsonb)'));
SELECT saga_start('evolving') AS new_run \gset
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT replace(replace(v, :'old_run', 'old'), :'new_run', 'new') AS v FROM version_log ORDER BY v;
SELECT id = :old_run AS old_run, i.status, d.version
  FROM saga.instance i JOIN saga.definition d ON d.name = i.saga_type AND d.version = i.definition_version
 WHERE i.id IN (:old_run, :new_run) ORDER BY i.id;

--
-- Bad definitions are refused, and write nothing.
--
\set VERBOSITY terse
SELECT saga_define('empty', VARIADIC ARRAY[]::saga.step[]);
SELECT saga_define('', saga_step('a', 'book_flight(jsonb)'));
SELECT saga_define('dup', saga_step('a', 'book_flight(jsonb)'), saga_step('a', 'book_hotel(jsonb)'));
SELECT saga_define('shape', saga_step('a', 'lower(text)'));
SELECT saga_define('noaction', saga_step('a', NULL));
SELECT saga_define('nullstep', NULL::saga.step);
SELECT saga_start('no such saga');
SELECT saga_start('trip', '[]');
SELECT saga_start('trip', NULL);
SELECT saga_retry(-1);
\set VERBOSITY default
SELECT count(*) AS bad_definitions FROM saga.definition
 WHERE name IN ('empty', '', 'dup', 'shape', 'noaction', 'nullstep');

--
-- Steps run as the role that defined the saga, with its rights only.
--
CREATE ROLE planner;
CREATE TABLE planner_notes (note text);
CREATE TABLE ledger (entry text);
GRANT INSERT ON planner_notes TO planner;
GRANT EXECUTE ON FUNCTION saga_define(text, saga.step[]), saga_start(text, jsonb, interval) TO planner;
CREATE SCHEMA planner AUTHORIZATION planner;
SET ROLE planner;
CREATE FUNCTION planner.note(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.planner_notes VALUES (current_user || ' noted ' || (data->>'what'));
    RETURN NULL;
END $$;
CREATE FUNCTION planner.cook_books(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ledger VALUES ('forged by ' || current_user);
    RETURN NULL;
END $$;
SELECT saga_define('plan', saga_step('note', 'planner.note(jsonb)'),
                           saga_step('cook', 'planner.cook_books(jsonb)'));
SELECT saga_start('plan', '{"what": "the plan"}') AS plan \gset
-- another role's definition cannot be started or replaced
\set VERBOSITY terse
SELECT saga_start('trip', '{}');
SELECT saga_define('trip', saga_step('x', 'planner.note(jsonb)'));
\set VERBOSITY default
RESET ROLE;
SET saga.max_attempts = 1;
SELECT saga_run_pending();
SELECT saga_run_pending();
RESET saga.max_attempts;
SELECT * FROM planner_notes;
SELECT count(*) AS forged_entries FROM ledger;
SELECT status, reason FROM saga_instances WHERE id = :plan;
SELECT step, outcome, detail FROM saga.step_run WHERE saga_id = :plan ORDER BY request_seq;

-- Long definitions: up to 10,000 steps, defined in linear time (this one
-- took seconds and a gigabyte before), each name checked once; one more is
-- refused, as is a name given twice far apart.  A long saga runs to its end.
CREATE FUNCTION tick(data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('ticks', coalesce((data->>'ticks')::int, 0) + 1) $$;
SELECT saga_define('long', VARIADIC (SELECT array_agg(saga_step('s' || i, 'tick(jsonb)', 'tick(jsonb)'))
                                      FROM generate_series(1, 10000) i)) AS version;
SELECT count(*) AS steps, count(DISTINCT name) AS names, min(step_no), max(step_no),
       bool_and(name = 's' || (step_no + 1)) AS in_order
  FROM saga.definition_step WHERE definition = 'long';
\set VERBOSITY terse
SELECT saga_define('longer', VARIADIC (SELECT array_agg(saga_step('s' || i, 'tick(jsonb)'))
                                        FROM generate_series(1, 10001) i));
SELECT saga_define('twice', VARIADIC (SELECT array_agg(saga_step('s' || (i % 2999), 'tick(jsonb)'))
                                       FROM generate_series(1, 3000) i));
\set VERBOSITY default
SELECT count(*) AS nothing_written FROM saga.definition WHERE name IN ('longer', 'twice');
SELECT saga_define('walk', VARIADIC (SELECT array_agg(saga_step('s' || i, 'tick(jsonb)'))
                                      FROM generate_series(1, 250) i)) AS version;
SELECT saga_start('walk') AS walk \gset
SELECT saga_run_pending() >= 250 AS ran_every_step;
SELECT status, data->>'ticks' AS ticks FROM saga_instances WHERE id = :walk;

-- A Mermaid trace lists its participants as they take part, the sender of
-- a message before its receiver, whatever their names ("booking" used to
-- come before "client").
SELECT saga_define('booking', saga_step('flight', 'book_flight(jsonb)'));
SELECT saga_start('booking') AS booking \gset
SELECT saga_run_pending() > 0 AS ran;
SELECT line FROM regexp_split_to_table(saga_trace_mermaid(:booking), E'\n') line
 WHERE line LIKE '%participant%';

-- Clean up.
DROP EXTENSION saga CASCADE;
DROP FUNCTION tick(jsonb);
DROP SCHEMA planner CASCADE;
DROP TABLE booking_log, version_log, refund_switch, planner_notes, ledger;
DROP SEQUENCE hiccups, refund_tries, v1_hiccup;
DROP FUNCTION book(text, jsonb), book_flight(jsonb), book_hotel(jsonb), book_car(jsonb),
              cancel_flight(jsonb), cancel_hotel(jsonb), flaky_step(jsonb), fragile_cancel(jsonb),
              always_no(jsonb), v1_step(jsonb), v2_step(jsonb);
DROP ROLE planner;
