--
-- The engine's promises off the beaten path (1.2), driven by
-- saga_run_pending(): every saga ends, completed or compensated; nothing
-- forward runs after an abort but compensation; nothing is applied twice.
-- A trip (flight, hotel, car) in both patterns, defined, subscribed and
-- run by an ordinary role, with its own search_path.
--
CREATE EXTENSION saga;
SET saga.retry_backoff = 0;

CREATE ROLE traveller;
CREATE ROLE stranger;
GRANT EXECUTE ON FUNCTION
    saga_publish(text, jsonb, bigint, text),
    saga_subscribe(text, text, regprocedure, text, boolean, text),
    saga_begin(text, interval), saga_complete(bigint), saga_fail(bigint, text),
    saga_define(text, saga.step[]), saga_start(text, jsonb, interval),
    saga_retry(bigint), saga_cancel(bigint, text)
TO traveller;
-- the queue is run by hand here, as the DBA would (no workers)
CREATE FUNCTION run_pending() RETURNS bigint LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT public.saga_run_pending() $$;
GRANT EXECUTE ON FUNCTION run_pending() TO traveller;
CREATE SCHEMA travel AUTHORIZATION traveller;
-- handlers find their tables through the role's own search_path
ALTER ROLE traveller SET search_path = travel, public;

SET ROLE traveller;
SET search_path = travel, public;
-- what the trip's services did, in order
CREATE TABLE travel.bookings (
    n       serial PRIMARY KEY,
    saga_id bigint,
    what    text NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('book', 'cancel'))
);

-- Choreography: flight -> hotel -> car; each undoes its part on the
-- failure events after it, and on SagaAborted.
CREATE FUNCTION travel.book(e saga.event, what text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bookings (saga_id, what, kind) VALUES (e.saga_id, what, 'book')
$$;
CREATE FUNCTION travel.unbook(e saga.event, what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM bookings b WHERE b.saga_id = e.saga_id AND b.what = unbook.what AND b.kind = 'book')
       AND NOT EXISTS (SELECT FROM bookings b WHERE b.saga_id = e.saga_id AND b.what = unbook.what AND b.kind = 'cancel') THEN
        INSERT INTO bookings (saga_id, what, kind) VALUES (e.saga_id, what, 'cancel');
        RETURN true;
    END IF;
    RETURN false;
END $$;
CREATE FUNCTION travel.flight_on_trip(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM book(e, 'flight');
    PERFORM saga_publish('FlightBooked', e.payload);
END $$;
CREATE FUNCTION travel.hotel_on_flight(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.payload->>'hotel' = 'full' THEN
        PERFORM saga_publish('HotelFailed', e.payload);
        RETURN;
    END IF;
    PERFORM book(e, 'hotel');
    PERFORM saga_publish('HotelBooked', e.payload);
END $$;
CREATE FUNCTION travel.car_on_hotel(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.payload->>'car' = 'broken' THEN
        RAISE EXCEPTION 'car rental system down';
    END IF;
    PERFORM book(e, 'car');
    PERFORM saga_publish('CarBooked', e.payload);
END $$;
CREATE FUNCTION travel.trip_on_car(e saga.event) RETURNS void LANGUAGE sql AS $$
    SELECT saga_complete(e.saga_id)
$$;
CREATE FUNCTION travel.hotel_on_car_failed(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unbook(e, 'hotel');
    PERFORM saga_publish('HotelCancelled', e.payload);
END $$;
CREATE FUNCTION travel.flight_on_hotel_gone(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unbook(e, 'flight');
    PERFORM saga_publish('FlightCancelled', e.payload);
END $$;
CREATE FUNCTION travel.trip_on_flight_cancelled(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF saga_status(e.saga_id) = 'pending' THEN
        PERFORM saga_fail(e.saga_id, 'trip cancelled');
    END IF;
END $$;
-- on SagaAborted, each service undoes its own part; nobody fails the
-- saga: the engine does, once that is done
CREATE FUNCTION travel.flight_on_aborted(e saga.event) RETURNS void LANGUAGE sql AS $$
    SELECT unbook(e, 'flight')
$$;
CREATE FUNCTION travel.hotel_on_aborted(e saga.event) RETURNS void LANGUAGE sql AS $$
    SELECT unbook(e, 'hotel')
$$;

SELECT count(*) AS subscriptions FROM (VALUES
    (saga_subscribe('flight', 'TripBooked', 'flight_on_trip(saga.event)', saga_type => 'trip')),
    (saga_subscribe('hotel', 'FlightBooked', 'hotel_on_flight(saga.event)', saga_type => 'trip')),
    (saga_subscribe('car', 'HotelBooked', 'car_on_hotel(saga.event)', on_failure => 'CarFailed',
                    saga_type => 'trip')),
    (saga_subscribe('trip', 'CarBooked', 'trip_on_car(saga.event)', saga_type => 'trip')),
    (saga_subscribe('hotel', 'CarFailed', 'hotel_on_car_failed(saga.event)', forward => false,
                    saga_type => 'trip')),
    (saga_subscribe('flight', 'HotelFailed', 'flight_on_hotel_gone(saga.event)', forward => false,
                    saga_type => 'trip')),
    (saga_subscribe('flight', 'HotelCancelled', 'flight_on_hotel_gone(saga.event)', forward => false,
                    saga_type => 'trip')),
    (saga_subscribe('trip', 'FlightCancelled', 'trip_on_flight_cancelled(saga.event)', forward => false,
                    saga_type => 'trip')),
    (saga_subscribe('flight', 'SagaAborted', 'flight_on_aborted(saga.event)', forward => false,
                    saga_type => 'trip')),
    (saga_subscribe('hotel', 'SagaAborted', 'hotel_on_aborted(saga.event)', forward => false,
                    saga_type => 'trip'))) s(id);

CREATE FUNCTION travel.start_trip(payload jsonb, deadline interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    id bigint := saga_begin('trip', deadline);
BEGIN
    PERFORM saga_publish('TripBooked', payload, id);
    RETURN id;
END $$;
CREATE FUNCTION travel.booked(id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(kind || ' ' || what, ', ' ORDER BY n), '-') FROM bookings WHERE saga_id = id
$$;

-- 1. The happy trip.
SELECT start_trip('{}') AS happy \gset
SELECT run_pending();
SELECT saga_status(:happy), booked(:happy);

--
-- 2. An aborted saga ends failed with its reason by the engine's rule,
--    also when nobody listens, and when its deadline passes.
--
SELECT saga_begin('lonely') AS lonely \gset
SELECT saga_cancel(:lonely, 'nobody listens');
SELECT status, reason FROM saga_my_sagas WHERE id = :lonely;
SELECT saga_await(:lonely, '5 s');
SELECT saga_begin('lonely', '10 ms') AS late_lonely \gset
SELECT pg_sleep(0.05);
SELECT run_pending();
SELECT status, reason FROM saga_my_sagas WHERE id = :late_lonely;

-- A trip cancelled while the car service is down: flight and hotel undo
-- their parts on SagaAborted, and then the trip has failed.
RESET ROLE;
SELECT saga_pause_consumer('car');
SET ROLE traveller;
SELECT start_trip('{}') AS cancelled \gset
SELECT run_pending();
SELECT saga_status(:cancelled), booked(:cancelled);
SELECT saga_cancel(:cancelled, 'changed plans');
SELECT status, reason, phase FROM saga_my_sagas WHERE id = :cancelled;
SELECT run_pending();
SELECT status, reason, phase FROM saga_my_sagas WHERE id = :cancelled;
SELECT booked(:cancelled);
SELECT seq, sender, receiver, message FROM saga_trace(:cancelled);

--
-- 3. Nothing forward runs after an abort, nor after a saga ended: the
--    car comes back, an event arrives late, an event into a finished saga.
--
RESET ROLE;
SELECT saga_resume_consumer('car');
SET ROLE traveller;
SELECT saga_publish('HotelBooked', '{}', :cancelled);
SELECT saga_publish('FlightBooked', '{}', :happy);
SELECT run_pending();
SELECT booked(:cancelled) AS cancelled_trip, booked(:happy) AS happy_trip;
RESET ROLE;
SELECT e.event_type, s.consumer, d.status, d.last_error
  FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
  JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE e.saga_id IN (:cancelled, :happy) AND d.status = 'cancelled'
 ORDER BY d.id;
-- a compensation still runs after the end
SET ROLE traveller;
SELECT saga_publish('HotelCancelled', '{}', :cancelled);
SELECT run_pending();
RESET ROLE;
SELECT d.status FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
 WHERE e.saga_id = :cancelled AND e.event_type = 'HotelCancelled';
-- the example's services hear only of orders: no trip's SagaAborted
SELECT count(*) AS trip_deliveries_to_the_shop
  FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
  JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE e.saga_id IN (:cancelled, :happy, :lonely) AND s.consumer IN ('payment', 'inventory', 'order');

--
-- 4. A dead letter whose on_failure event compensated its saga is settled:
--    not stuck, and retrying it is refused.  The trace shows each failed
--    attempt, and the dead letter.
--
SET saga.max_attempts = 2;
SET ROLE traveller;
SELECT start_trip('{"car": "broken"}') AS broken \gset
SELECT run_pending();
SELECT run_pending();
RESET ROLE;
RESET saga.max_attempts;
SET ROLE traveller;
SELECT saga_status(:broken), booked(:broken);
SELECT status, reason FROM saga_my_sagas WHERE id = :broken;
SELECT seq, sender, receiver, message FROM saga_trace(:broken);
RESET ROLE;
SELECT count(*) AS stuck FROM saga_stuck WHERE saga_id = :broken;
SELECT delivery_id AS dead FROM saga_dead_letters WHERE saga_id = :broken \gset
SELECT saga_retry_delivery(:dead);
SELECT run_pending();
SELECT booked(:broken);
SET ROLE traveller;

--
-- 5. Orchestration: a deadline that passes while a step runs.  The slow
--    hotel step ends after it: the hotel and the flight are compensated,
--    last first, the car never starts, and the trip fails.
--
CREATE FUNCTION travel.step(data jsonb, what text, kind text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bookings (saga_id, what, kind) VALUES ((data->>'saga_id')::bigint, what, kind);
    RETURN NULL;
END $$;
CREATE FUNCTION travel.book_flight(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT step(data, 'flight', 'book') $$;
CREATE FUNCTION travel.cancel_flight(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT step(data, 'flight', 'cancel') $$;
CREATE FUNCTION travel.book_hotel(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF data ? 'slow' THEN
        PERFORM pg_sleep((data->>'slow')::float8);
    END IF;
    RETURN step(data, 'hotel', 'book');
END $$;
CREATE FUNCTION travel.cancel_hotel(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF data ? 'stuck' THEN
        RAISE EXCEPTION 'hotel refund desk closed';
    END IF;
    RETURN step(data, 'hotel', 'cancel');
END $$;
CREATE FUNCTION travel.book_car(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT step(data, 'car', 'book') $$;
SELECT saga_define('trip',
    saga_step('flight', 'book_flight(jsonb)', 'cancel_flight(jsonb)'),
    saga_step('hotel', 'book_hotel(jsonb)', 'cancel_hotel(jsonb)'),
    saga_step('car', 'book_car(jsonb)'));
SELECT saga_start('trip', '{"slow": 0.3}', '100 ms') AS slow \gset
SELECT run_pending();
SELECT status, reason FROM saga_my_sagas WHERE id = :slow;
SELECT booked(:slow);
SELECT seq, sender, receiver, message FROM saga_trace(:slow);

--
-- 6. What the owner sees of its sagas: a compensation that keeps failing
--    leaves the trip stuck, with the step named.
--
RESET ROLE;
SET saga.max_attempts = 1;
SET ROLE traveller;
SELECT saga_start('trip', '{"stuck": true, "slow": 0.2}', '100 ms') AS stuck \gset
SELECT run_pending();
RESET ROLE;
RESET saga.max_attempts;
SET ROLE traveller;
SELECT saga_type, pattern, status, phase, current_step, reason, attempts, last_error
  FROM saga_info(:stuck);
SELECT problem, work, remedy = 'saga_retry(' || :stuck || ')' AS remedy_retry
  FROM saga_my_stuck WHERE saga_id = :stuck ORDER BY problem;
SELECT substring(saga_trace_mermaid(:stuck) FROM 'Note over p\d+: ([^(]*)') AS mermaid_note;
\set VERBOSITY terse
SELECT count(*) FROM saga_stuck;
\set VERBOSITY default
-- nobody else sees them
SET ROLE stranger;
SELECT count(*) AS strangers_sees FROM saga_my_sagas;
\set VERBOSITY terse
SELECT * FROM saga_info(:stuck);
SELECT * FROM saga_info(-1);
\set VERBOSITY default
SET ROLE traveller;

--
-- 7. A step or handler cannot run the queue from inside itself.
--
CREATE FUNCTION travel.nested(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM run_pending();
    RETURN NULL;
END $$;
SELECT saga_define('nested', saga_step('nested', 'nested(jsonb)'));
RESET ROLE;
SET saga.max_attempts = 1;
SET ROLE traveller;
SELECT saga_start('nested') AS nested \gset
SELECT run_pending();
RESET ROLE;
RESET saga.max_attempts;
SET ROLE traveller;
SELECT status, reason FROM saga_my_sagas WHERE id = :nested;

--
-- 8. A handler runs with its role's settings: names without a schema are
--    found through the role's search_path, and when one is not found, the
--    error says where it was looked for.
--
CREATE FUNCTION travel.count_bookings(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bookings (saga_id, what, kind)
    SELECT NULL, 'lookup ' || count(*), 'book' FROM bookings WHERE what = 'flight';
END $$;
CREATE FUNCTION travel.find_flights(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(*) FROM flights;
END $$;
SELECT saga_subscribe('lookup', 'Lookup', 'count_bookings(saga.event)') > 0 AS subscribed;
SELECT saga_subscribe('flights', 'Lookup', 'find_flights(saga.event)') > 0 AS subscribed;
RESET ROLE;
RESET search_path;
SET saga.max_attempts = 1;
SELECT saga_publish('Lookup') AS lookup \gset
SELECT run_pending();
RESET saga.max_attempts;
SELECT what FROM travel.bookings WHERE what LIKE 'lookup%';
SELECT consumer, last_error FROM saga_dead_letters WHERE event_id = :lookup;

RESET ROLE;
DROP EXTENSION saga CASCADE;
DROP SCHEMA travel CASCADE;
DROP FUNCTION run_pending();
DROP ROLE traveller;
DROP ROLE stranger;
