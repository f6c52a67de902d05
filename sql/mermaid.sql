--
-- Pictures as Mermaid text (1.2): saga_definition_mermaid() draws an
-- orchestrated saga's steps and compensations, saga_topology_mermaid() the
-- choreography.  The example's, a user's (an ordinary role), a missing
-- link, names that Mermaid would misread, errors, and who sees what.
--
-- mm_app and mm_other are application roles with the README's grants;
-- mm_dba has the privileges of the tables' owner.
--
CREATE EXTENSION saga;
SET saga.max_attempts = 1;

-- the error's SQLSTATE, message and hint
CREATE FUNCTION mm_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN concat(SQLSTATE, ': ', SQLERRM, E'\nHINT: ', hint);
END $$;
GRANT EXECUTE ON FUNCTION mm_try(text) TO PUBLIC;

CREATE ROLE mm_app;
CREATE ROLE mm_other;
CREATE ROLE mm_dba;
GRANT EXECUTE ON FUNCTION
    saga_publish(text, jsonb, bigint, text),
    saga_subscribe(text, text, regprocedure, text, boolean, text),
    saga_begin(text, interval), saga_complete(bigint), saga_fail(bigint, text),
    saga_define(text, saga.step[]), saga_start(text, jsonb, interval),
    saga_grant_events(text, text, text), saga_grant_sagas(text, text)
TO mm_app, mm_other;
CREATE SCHEMA mm_app AUTHORIZATION mm_app;
CREATE SCHEMA mm_other AUTHORIZATION mm_other;
SELECT current_user AS dba \gset
GRANT :"dba" TO mm_dba;

\pset tuples_only on
\pset format unaligned

-- The example's definition: the latest version, and version 1 by number.
SELECT saga_definition_mermaid('order');
SELECT saga_definition_mermaid('order', 1) = saga_definition_mermaid('order') AS same;

-- The example's choreography before any order: the subscriptions are known,
-- who publishes is learnt from the events; only the on_failure events and
-- SagaAborted have a publisher yet.
SELECT saga_topology_mermaid();

-- The seed's three outcomes, then the chain is complete.
SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_stock('widget', 3);
SELECT saga_place_order('alice', 'widget', 1, 30.00);   -- completed
SELECT saga_place_order('alice', 'widget', 5, 10.00);   -- no stock: refunded
SELECT saga_place_order('alice', 'widget', 1, 500.00);  -- no money
SELECT saga_run_pending();
SELECT order_id, status, reason FROM saga_orders ORDER BY order_id;
SELECT saga_topology_mermaid();
SELECT saga_topology_mermaid('order') = saga_topology_mermaid() AS only_order_sagas;
SELECT saga_topology_mermaid('no such type');

-- Errors: a null name, a name nobody defined, a version that does not exist.
SELECT mm_try($$SELECT saga_definition_mermaid(NULL)$$);
SELECT mm_try($$SELECT saga_definition_mermaid('nope')$$);
SELECT mm_try($$SELECT saga_definition_mermaid('order', 2)$$);
SELECT mm_try($$SELECT saga_definition_mermaid('order', NULL)$$) AS null_version_is_latest;

------------------------------------------------------------------------------
-- An ordinary role's orchestrated saga: two versions; in version 2 a step
-- without compensation sits between two that have one, and the last has
-- none, so failures skip what has nothing to undo.
------------------------------------------------------------------------------
SET ROLE mm_app;
CREATE FUNCTION mm_app.ok(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
CREATE FUNCTION mm_app.undo(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
SELECT saga_define('trip',
    saga_step('flight', 'mm_app.ok(jsonb)', 'mm_app.undo(jsonb)'));
SELECT saga_define('trip',
    saga_step('flight', 'mm_app.ok(jsonb)', 'mm_app.undo(jsonb)',
              service => 'airline', request => 'POST /flights',
              compensation_request => 'DELETE /flights/{flight_id}'),
    saga_step('hotel', 'mm_app.ok(jsonb)'),
    saga_step('car', 'mm_app.ok(jsonb)', 'mm_app.undo(jsonb)'),
    saga_step('pay', 'mm_app.ok(jsonb)'));
SELECT saga_definition_mermaid('trip');
SELECT saga_definition_mermaid('trip', 1);
SELECT name, version, CASE WHEN owner::text = :'dba' THEN 'the DBA' ELSE owner::text END AS owner, steps
  FROM saga_definitions ORDER BY name, version;
SELECT mm_try($$SELECT saga_definition_mermaid('trip', 3)$$);

-- Names that Mermaid would misread: quotes, entities, HTML, pipes,
-- semicolons, backticks, a newline.
CREATE FUNCTION mm_app."go ""now"" <b>;|"(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
SELECT saga_define('odd "saga" #1',
    saga_step(E'a "step";\nnext', 'mm_app."go ""now"" <b>;|"(jsonb)', 'mm_app.undo(jsonb)',
              service => 'svc <&> `x`', request => 'GET /a|b#c',
              compensation_request => 'DELETE "a"; #35;'),
    saga_step('b', 'mm_app.ok(jsonb)'));
SELECT saga_definition_mermaid('odd "saga" #1');

------------------------------------------------------------------------------
-- An ordinary role's choreography, with links missing: WelcomeSent is
-- consumed but nobody is known to publish it until the mailer has; Audited
-- is published and nobody hears it; InvoiceSent is consumed and never
-- published.  Odd names for a consumer, a publisher and an event type.
------------------------------------------------------------------------------
CREATE TABLE mm_app.mailbox (saga_id bigint, body text);
CREATE FUNCTION mm_app.send_welcome(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mm_app.mailbox VALUES (e.saga_id, 'welcome ' || (e.payload->>'user'));
    PERFORM saga_publish('WelcomeSent', e.payload);
    PERFORM saga_publish('Audited', e.payload);
END $$;
CREATE FUNCTION mm_app.finish_signup(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_complete(e.saga_id);
END $$;
CREATE FUNCTION mm_app.bill(e saga.event) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION mm_app."odd ""handler"""(e saga.event) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT saga_subscribe('mailer', 'UserSignedUp', 'mm_app.send_welcome(saga.event)',
                      on_failure => 'Weird "type"; #1 <x>|y', saga_type => 'signup') > 0 AS subscribed;
SELECT saga_subscribe('signup', 'WelcomeSent', 'mm_app.finish_signup(saga.event)',
                      saga_type => 'signup') > 0 AS subscribed;
SELECT saga_subscribe('billing', 'InvoiceSent', 'mm_app.bill(saga.event)',
                      forward => false, saga_type => 'signup') > 0 AS subscribed;
SELECT saga_subscribe('odd "one" <b>&|;#', 'Weird "type"; #1 <x>|y', 'mm_app."odd ""handler"""(saga.event)',
                      saga_type => 'signup') > 0 AS subscribed;
SELECT saga_topology_mermaid('signup');

SELECT saga_begin('signup') AS id \gset
SELECT saga_publish('UserSignedUp', '{"user": "zoe"}', :id, 'web "front" end') > 0 AS published;
RESET ROLE;
SELECT saga_run_pending();
SET ROLE mm_app;
SELECT saga_status(:id);
SELECT saga_topology_mermaid('signup');
-- mm_app sees its own and the example's (shared with PUBLIC), no more
SELECT saga_topology_mermaid() LIKE '%mailer%' AND saga_topology_mermaid() LIKE '%OrderCreated%' AS own_and_example;
SELECT saga_topology_mermaid('signup') AS signup \gset
RESET ROLE;

------------------------------------------------------------------------------
-- Who sees what: mm_other sees none of mm_app's, not even through a
-- function that would print the rows before the check; after mm_app's
-- grants it sees what mm_app sees.  mm_dba, with the privileges of the
-- tables' owner, sees everything, as the superuser does.
------------------------------------------------------------------------------
SET ROLE mm_other;
SELECT mm_try($$SELECT saga_definition_mermaid('trip')$$);
SELECT name, version FROM saga_definitions ORDER BY name, version;
SELECT saga_topology_mermaid('signup');
SELECT saga_topology_mermaid() = saga_topology_mermaid('order') AS example_only;
SELECT mm_try($$SELECT * FROM saga.subscription$$);
SELECT mm_try($$SELECT * FROM saga.definition_step$$);
-- A cheap function of the reader's in the query is called on the rows
-- after the check (the views are security barriers): it sees the example's
-- rows, never mm_app's.
CREATE TEMPORARY TABLE peeked (t text);
CREATE FUNCTION mm_other.peek(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    INSERT INTO peeked VALUES (t);
    RETURN true;
END $$;
SELECT count(*) FROM saga_visible_subscriptions WHERE mm_other.peek(consumer);
SELECT count(*) FROM saga_publications WHERE mm_other.peek(publisher);
SELECT count(*) FROM saga_definition_steps WHERE mm_other.peek(definition);
SELECT count(*) FROM saga_definitions WHERE mm_other.peek(name);
SELECT DISTINCT t FROM peeked ORDER BY t;
RESET ROLE;
-- (without the barrier, the same query would have shown mm_app's)
ALTER VIEW saga_visible_subscriptions SET (security_barrier = false);
SET ROLE mm_other;
TRUNCATE peeked;
SELECT count(*) FROM saga_visible_subscriptions WHERE mm_other.peek(consumer);
SELECT count(*) > 0 AS leaked_without_barrier FROM peeked WHERE t = 'mailer';
RESET ROLE;
ALTER VIEW saga_visible_subscriptions SET (security_barrier = true);
RESET ROLE;

SET ROLE mm_app;
SELECT saga_grant_sagas('signup', 'mm_other');
SELECT saga_grant_sagas('trip', 'mm_other');
RESET ROLE;
SET ROLE mm_other;
SELECT saga_topology_mermaid('signup') = :'signup' AS sees_signup;
SELECT saga_definition_mermaid('trip') LIKE '%POST /flights%' AS sees_trip;
SELECT mm_try($$SELECT saga_definition_mermaid('odd "saga" #1')$$);
RESET ROLE;

SELECT saga_topology_mermaid() AS everything \gset
SET ROLE mm_dba;
SELECT saga_topology_mermaid() = :'everything' AS dba_sees_everything;
SELECT saga_definition_mermaid('odd "saga" #1') LIKE '%#34;saga#34;%' AS dba_sees_odd;
RESET ROLE;
SELECT :'everything' LIKE '%mailer%' AND :'everything' LIKE '%OrderCreated%' AS superuser_sees_both;

\pset tuples_only off
\pset format aligned

-- Clean up.
DROP EXTENSION saga CASCADE;
DROP SCHEMA mm_app, mm_other CASCADE;
DROP TABLE peeked;
DROP FUNCTION mm_try(text);
DROP ROLE mm_app, mm_other, mm_dba;
RESET saga.max_attempts;
