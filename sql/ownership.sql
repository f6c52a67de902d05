--
-- Who may see and subscribe to what (1.2).  An event type belongs to the
-- role that first published or subscribed it (or granted on it): another
-- role subscribes to it, or publishes it, only with its owner's grant.  A
-- saga's status and trace are shown to its owner and to the roles its
-- owner granted the saga type to; the example's 'order' is granted to
-- PUBLIC (its customer views).
--
-- own_clinic is a service with the README's grants; own_spy another
-- application role with the same grants.
--
CREATE EXTENSION saga;
SET saga.max_attempts = 1;

CREATE FUNCTION own_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN concat(SQLSTATE, ': ', SQLERRM);
END $$;
-- the same, with the error's hint
CREATE FUNCTION own_try_hint(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN concat(SQLSTATE, ': ', SQLERRM, ' HINT: ', hint);
END $$;
GRANT EXECUTE ON FUNCTION own_try(text), own_try_hint(text) TO PUBLIC;

CREATE ROLE own_clinic;
CREATE ROLE own_spy;
GRANT EXECUTE ON FUNCTION
    saga_publish(text, jsonb, bigint, text),
    saga_subscribe(text, text, regprocedure, text, boolean, text),
    saga_unsubscribe(text, text),
    saga_begin(text, interval), saga_complete(bigint), saga_fail(bigint, text),
    saga_define(text, saga.step[]), saga_start(text, jsonb, interval), saga_retry(bigint),
    saga_cancel(bigint, text)
TO own_clinic, own_spy;
-- 1.2's functions for rights, granted as the README says
GRANT EXECUTE ON FUNCTION
    saga_grant_events(text, text, text), saga_revoke_events(text, text, text),
    saga_grant_sagas(text, text), saga_revoke_sagas(text, text)
TO own_clinic, own_spy;
CREATE SCHEMA clinic AUTHORIZATION own_clinic;
CREATE SCHEMA spy AUTHORIZATION own_spy;

SET ROLE own_clinic;
CREATE TABLE clinic.ward (patient text);
CREATE FUNCTION clinic.on_admitted(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO clinic.ward VALUES (e.payload->>'name');
    IF e.saga_id IS NOT NULL THEN
        PERFORM saga_complete(e.saga_id);
    END IF;
END $$;
SET ROLE own_spy;
CREATE TABLE spy.loot (payload jsonb);
CREATE FUNCTION spy.steal(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spy.loot VALUES (e.payload);
END $$;
RESET ROLE;

--
-- 1. The first role that subscribes to a type owns it; another role may
-- neither subscribe to it nor publish it.
--
SET ROLE own_clinic;
SELECT saga_subscribe('ward', 'PatientAdmitted', 'clinic.on_admitted(saga.event)') > 0 AS subscribed;
RESET ROLE;
SELECT name, owner FROM saga_event_types WHERE name = 'PatientAdmitted';
SET ROLE own_spy;
SELECT own_try_hint('SELECT saga_subscribe(''spy'', ''PatientAdmitted'', ''spy.steal(saga.event)'')') AS spy_subscribes;
SELECT own_try_hint('SELECT saga_publish(''PatientAdmitted'', ''{"name": "forged"}'')') AS spy_publishes;
SET ROLE own_clinic;
SELECT saga_begin('admission') AS a1 \gset
SELECT saga_publish('PatientAdmitted', '{"name": "ann", "ssn": "123-45-6789"}', :a1) > 0 AS published;
RESET ROLE;
SELECT saga_run_pending() > 0 AS ran;
SELECT count(*) AS spy_loot FROM spy.loot;
SELECT * FROM clinic.ward;
SELECT consumer FROM saga_subscriptions WHERE event_type = 'PatientAdmitted' ORDER BY consumer;

--
-- 2. A saga's status and trace: its owner's, not another role's.
--
SET ROLE own_clinic;
SELECT saga_status(:a1) AS owner_status, saga_await(:a1, '0 s') AS owner_await,
       (SELECT count(*) FROM saga_trace(:a1)) > 0 AS owner_trace,
       saga_trace_mermaid(:a1) LIKE 'sequenceDiagram%' AS owner_mermaid;
SET ROLE own_spy;
SELECT stmt, own_try(stmt) AS result FROM (VALUES
    (format('SELECT saga_status(%s)', :a1)),
    (format('SELECT saga_await(%s, ''0 s'')', :a1)),
    (format('SELECT count(*) FROM saga_trace(%s)', :a1)),
    (format('SELECT saga_trace_mermaid(%s)', :a1)),
    (format('SELECT * FROM saga_info(%s)', :a1)),
    ('SELECT saga_status(-1)')
  ) AS t(stmt);
-- nor publish into it, even an event type of its own
SELECT own_try_hint(format('SELECT saga_publish(''SpyNote'', ''{}'', %s)', :a1)) AS spy_publishes_into;
-- nor may it grant what is not its own
SELECT own_try('SELECT saga_grant_events(''PatientAdmitted'', ''own_spy'')') AS grant_itself_events;
-- (its own admissions, granted to itself, are not the clinic's)
SELECT saga_grant_sagas('admission', 'own_spy');
SELECT own_try(format('SELECT saga_status(%s)', :a1)) AS spy_after_own_grant;
RESET ROLE;

--
-- 3. The owner's grants: subscribing, publishing, seeing; and revoking them.
--
SET ROLE own_clinic;
SELECT saga_grant_events('PatientAdmitted', 'own_spy');
SELECT saga_grant_sagas('admission', 'own_spy');
RESET ROLE;
SELECT name, owner, subscribers, publishers FROM saga_event_types WHERE name = 'PatientAdmitted';
SET ROLE own_spy;
SELECT saga_status(:a1) AS granted_status, (SELECT count(*) FROM saga_trace(:a1)) > 0 AS granted_trace;
SELECT saga_subscribe('spy', 'PatientAdmitted', 'spy.steal(saga.event)') > 0 AS granted_subscribe;
-- subscribing is not publishing
SELECT own_try('SELECT saga_publish(''PatientAdmitted'', ''{"name": "forged"}'')') AS spy_publishes;
SET ROLE own_clinic;
SELECT saga_begin('admission') AS a2 \gset
SELECT saga_publish('PatientAdmitted', '{"name": "bea"}', :a2) > 0 AS published;
RESET ROLE;
SELECT saga_run_pending() > 0 AS ran;
SELECT payload->>'name' AS spy_got FROM spy.loot;
-- revoked: the subscription goes (with its pending deliveries), the sagas hide
SET ROLE own_clinic;
SELECT saga_begin('admission') AS a3 \gset
SELECT saga_publish('PatientAdmitted', '{"name": "cy"}', :a3) > 0 AS published_before_revoke;
SELECT saga_revoke_events('PatientAdmitted', 'own_spy') AS revoked;
SELECT saga_revoke_sagas('admission', 'own_spy') AS revoked;
RESET ROLE;
SELECT consumer FROM saga_subscriptions WHERE event_type = 'PatientAdmitted' ORDER BY consumer;
SELECT saga_run_pending() > 0 AS ran;
SELECT payload->>'name' AS spy_got FROM spy.loot;
SET ROLE own_spy;
SELECT own_try(format('SELECT saga_status(%s)', :a1)) AS after_revoke;
SELECT own_try('SELECT saga_subscribe(''spy'', ''PatientAdmitted'', ''spy.steal(saga.event)'')') AS after_revoke;
RESET ROLE;

-- publishing granted: the spy may publish the type, not subscribe to it
SET ROLE own_clinic;
SELECT saga_grant_events('PatientAdmitted', 'own_spy', 'publish');
SELECT own_try('SELECT saga_grant_events(''PatientAdmitted'', ''own_spy'', ''read'')') AS bad_privilege;
SELECT own_try('SELECT saga_grant_events(''PatientAdmitted'', ''no_such_role'')') AS bad_role;
SET ROLE own_spy;
SELECT saga_publish('PatientAdmitted', '{"name": "dee"}') > 0 AS spy_publishes;
SELECT own_try('SELECT saga_subscribe(''spy'', ''PatientAdmitted'', ''spy.steal(saga.event)'')') AS spy_subscribes;
RESET ROLE;

-- PUBLIC: anyone may subscribe
SET ROLE own_clinic;
SELECT saga_subscribe('ward', 'VisitingHours', 'clinic.on_admitted(saga.event)') > 0 AS subscribed;
SELECT saga_grant_events('VisitingHours', 'public');
SET ROLE own_spy;
SELECT saga_subscribe('spy', 'VisitingHours', 'spy.steal(saga.event)') > 0 AS public_subscribe;
SELECT own_try('SELECT saga_publish(''VisitingHours'', ''{}'')') AS public_is_not_publish;
RESET ROLE;
SELECT name, owner, subscribers, publishers FROM saga_event_types
 WHERE name IN ('PatientAdmitted', 'VisitingHours') ORDER BY name;

--
-- 4. The example's event types are the extension owner's: no role may
-- subscribe to them (a thousand subscriptions to OrderCreated slowed every
-- order down) or publish them; SagaAborted, the engine's, is public for
-- subscribing (to compensate one's own sagas), not for publishing.
--
SET ROLE own_spy;
SELECT own_try_hint('SELECT saga_subscribe(''spy'', ''OrderCreated'', ''spy.steal(saga.event)'')') AS spy_on_orders;
SELECT own_try('SELECT saga_publish(''OrderCreated'', ''{}'')') AS forge_order;
SELECT own_try('SELECT saga_publish(''SagaAborted'', ''{}'')') AS forge_abort;
-- an on_failure event is published for the subscriber: it needs that right too
SELECT own_try('SELECT saga_subscribe(''spy'', ''MyOwnType'', ''spy.steal(saga.event)'', on_failure => ''PaymentFailed'')') AS on_failure_forges;
SELECT saga_subscribe('spy', 'SagaAborted', 'spy.steal(saga.event)', forward => false,
                      saga_type => 'spying') > 0 AS compensates_own;
-- SagaAborted reaches only the roles that may see the saga
SELECT saga_subscribe('spy_all', 'SagaAborted', 'spy.steal(saga.event)', forward => false) > 0 AS listens_to_all;
SET ROLE own_clinic;
SELECT saga_subscribe('ward', 'SagaAborted', 'clinic.on_admitted(saga.event)', forward => false) > 0 AS compensates;
SELECT saga_begin('admission') AS a4 \gset
SELECT saga_cancel(:a4, 'patient went home');
SET ROLE own_spy;
SELECT saga_begin('spying') AS s1 \gset
SELECT saga_cancel(:s1, 'spy caught');
RESET ROLE;
TRUNCATE spy.loot;
TRUNCATE clinic.ward;
SELECT saga_run_pending() > 0 AS ran;
SELECT payload->>'saga_type' AS spy_heard_of, payload->>'reason' AS reason FROM spy.loot ORDER BY 1;
SELECT count(*) FILTER (WHERE patient IS NULL) AS ward_heard_of_aborts FROM clinic.ward;
RESET ROLE;
SELECT name, owner = (SELECT relowner::regrole FROM pg_class WHERE oid = 'saga.event'::regclass) AS extension_owners,
       subscribers, publishers
  FROM saga_event_types WHERE builtin ORDER BY name;
-- ... while the example still works for a role without any grant
SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_stock('widget', 10);
SET ROLE own_spy;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS o1 \gset
RESET ROLE;
SELECT saga_run_pending() > 0 AS ran;
SET ROLE own_spy;
SELECT saga_order_status(:o1) AS order_status, saga_status(:o1) AS saga_status,
       (SELECT count(*) FROM saga_trace(:o1)) AS trace_rows;
RESET ROLE;

DROP EXTENSION saga CASCADE;

--
-- 5. Updating from 1.1: nothing is checked before the update; after it,
-- each type users subscribed to belongs to the role of its oldest
-- subscription, and the other roles subscribed to it keep the right.
--
CREATE EXTENSION saga VERSION '1.1';
GRANT EXECUTE ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean),
                          saga_publish(text, jsonb, bigint, text)
   TO own_clinic, own_spy;
SET ROLE own_clinic;
CREATE FUNCTION clinic.on_any(e saga.event) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT saga_subscribe('ward', 'Shared', 'clinic.on_any(saga.event)') > 0 AS subscribed;
SET ROLE own_spy;
CREATE FUNCTION spy.on_any(e saga.event) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT saga_subscribe('spy', 'Shared', 'spy.on_any(saga.event)') > 0 AS subscribed_before_1_2;
RESET ROLE;
ALTER EXTENSION saga UPDATE TO '1.2';
SELECT name, owner, subscribers, publishers FROM saga_event_types WHERE NOT builtin ORDER BY name;
SET ROLE own_spy;
SELECT own_try('SELECT saga_publish(''Shared'', ''{}'')') AS spy_publishes_after_update;
RESET ROLE;
DROP EXTENSION saga CASCADE;

--
-- 6. The owner's views are security barriers: a cheap function of the
-- reader's in the WHERE clause sees only the rows the reader may see,
-- not every role's before the check.
--
CREATE EXTENSION saga;
GRANT EXECUTE ON FUNCTION saga_begin(text, interval), saga_fail(bigint, text),
                          saga_publish(text, jsonb, bigint, text),
                          saga_subscribe(text, text, regprocedure, text, boolean, text)
   TO own_clinic, own_spy;
SET ROLE own_clinic;
CREATE FUNCTION clinic.on_secret(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'secret diagnosis'; END $$;
SELECT saga_subscribe('ward', 'Diagnosis', 'clinic.on_secret(saga.event)', saga_type => 'secret') > 0;
SELECT saga_begin('secret') AS secret \gset
SELECT saga_publish('Diagnosis', '{}', :secret) > 0;
RESET ROLE;
SELECT saga_run_pending() >= 0 AS ran;
SET ROLE own_spy;
CREATE FUNCTION spy.peek(a text, b text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'spy saw % %', a, b; RETURN true; END $$;
SELECT saga_begin('mine') AS mine \gset
SELECT count(*) AS my_sagas FROM saga_my_sagas WHERE spy.peek(saga_type, coalesce(last_error, '-'));
SELECT count(*) AS my_stuck FROM saga_my_stuck WHERE spy.peek(problem, coalesce(remedy, '-'));
SELECT count(*) AS my_dead_letters FROM saga_my_dead_letters WHERE spy.peek(consumer, coalesce(last_error, '-'));
RESET ROLE;
SELECT reloptions FROM pg_class
 WHERE oid IN ('saga_my_sagas'::regclass, 'saga_my_stuck'::regclass, 'saga_my_dead_letters'::regclass)
 ORDER BY relname;
DROP EXTENSION saga CASCADE;

-- Clean up.
DROP SCHEMA clinic, spy CASCADE;
DROP FUNCTION own_try(text), own_try_hint(text);
DROP ROLE own_clinic, own_spy;
RESET saga.max_attempts;
