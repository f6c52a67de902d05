--
-- Application roles in one step (1.2): saga_grant_app(role) lets a role
-- define and run sagas of its own, saga_revoke_app(role) takes it back;
-- only the extension's owner (or a superuser) may call them.  And the
-- DBA's views are readable by pg_monitor, as PostgreSQL's statistics
-- views are.
--
-- The superuser running this file owns the extension and stands in for
-- the workers (saga_run_pending()).  app_user is made an application role
-- and does what README's "Defining your own saga" shows; app_dba may call
-- saga_grant_app but does not own the extension; app_watch is a member of
-- pg_monitor only.
--
CREATE EXTENSION saga;
SET saga.max_attempts = 1;

-- Runs a statement, returns 'ok' or its SQLSTATE, message and hint (the
-- extension owner's name, which depends on who runs the tests, as <owner>).
CREATE FUNCTION app_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN concat(SQLSTATE, ': ', SQLERRM,
                  CASE WHEN hint <> '' THEN ' HINT: ' || replace(hint,
                      (SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'saga'), '<owner>') END);
END $$;
GRANT EXECUTE ON FUNCTION app_try(text) TO PUBLIC;
-- The same, with the error's detail (the owner as <owner>).
CREATE FUNCTION app_try_detail(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN concat(SQLSTATE, ': ', replace(detail,
                      (SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'saga'), '<owner>'));
END $$;
GRANT EXECUTE ON FUNCTION app_try_detail(text) TO PUBLIC;
-- What the workers do, without the dead-letter WARNINGs (they carry ids).
CREATE FUNCTION app_run_sagas() RETURNS boolean LANGUAGE plpgsql
SET client_min_messages = error AS $$
BEGIN
    PERFORM saga_run_pending();
    RETURN true;
END $$;
-- How many of the application functions a role may call.
CREATE FUNCTION app_functions_of(r name) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM unnest(saga.app_functions()) f
     WHERE has_function_privilege(r, f, 'EXECUTE')
$$;

CREATE ROLE app_user NOLOGIN;
CREATE ROLE app_dba NOLOGIN;
CREATE ROLE app_group NOLOGIN;
CREATE ROLE app_member NOLOGIN IN ROLE app_group;
CREATE ROLE app_watch NOLOGIN IN ROLE pg_monitor;
-- the README's schema step
CREATE SCHEMA app AUTHORIZATION app_user;
ALTER ROLE app_user SET search_path = app, public;

--
-- 1. Who may call them: not PUBLIC; not a role that does not own the
--    extension, even with EXECUTE (an error, not GRANT's warning).
--
SELECT p::regprocedure AS function, has_function_privilege('app_dba', p, 'EXECUTE') AS app_dba_may
  FROM unnest('{saga_grant_app(regrole), saga_revoke_app(regrole)}'::regprocedure[]) p;
SELECT proname, prosecdef, proconfig FROM pg_proc
 WHERE proname IN ('saga_grant_app', 'saga_revoke_app') ORDER BY proname;
SET ROLE app_dba;
SELECT app_try('SELECT saga_grant_app(''app_user'')') AS dba_without_execute;
RESET ROLE;
GRANT EXECUTE ON FUNCTION saga_grant_app(regrole), saga_revoke_app(regrole) TO app_dba;
SET ROLE app_dba;
SELECT app_try('SELECT saga_grant_app(''app_user'')') AS dba_with_execute;
SELECT app_try('SELECT saga_revoke_app(''app_user'')') AS dba_revokes;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION saga_grant_app(regrole), saga_revoke_app(regrole) FROM app_dba;
SELECT app_functions_of('app_user') AS app_user_functions_so_far;

-- Bad arguments.
SELECT app_try('SELECT saga_grant_app(NULL)') AS null_role;
SELECT app_try('SELECT saga_revoke_app(NULL)') AS null_role;
SELECT app_try('SELECT saga_grant_app(''-'')') AS public_role;
SELECT app_try('SELECT saga_grant_app(''app_nobody'')') AS unknown_role;
SELECT app_try(format('SELECT saga_revoke_app(%L)', current_user)) = '22023: role '
       || current_user || ' owns the extension: it keeps its functions HINT: The example''s functions (saga_place_order) call them with its rights.'
       AS owner_refused;

--
-- 2. Before: app_user may not define or run sagas.
--
SET ROLE app_user;
SELECT app_try('SELECT saga_begin(''signup'')') AS begin_before;
RESET ROLE;

--
-- 3. One step makes it an application role; again changes nothing.
--
SELECT saga_grant_app('app_user');
SELECT saga_grant_app('app_user');
SELECT app_functions_of('app_user') AS app_user_functions,
       cardinality(saga.app_functions()) AS of;
SELECT p.oid::regprocedure AS granted_to_app_user, a.privilege_type, a.grantor::regrole = x.extowner AS by_owner
  FROM pg_proc p, aclexplode(p.proacl) a, pg_extension x
 WHERE a.grantee = 'app_user'::regrole AND x.extname = 'saga'
 ORDER BY p.proname COLLATE "C";

--
-- 4. app_user does README's "Defining your own saga": choreography ...
--
SET ROLE app_user;
SET search_path = app, public;
CREATE TABLE mailbox (saga_id bigint, body text);
CREATE FUNCTION send_welcome(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailbox VALUES (e.saga_id, 'welcome ' || (e.payload->>'user'));
    PERFORM saga_publish('WelcomeSent', e.payload);
END $$;
CREATE FUNCTION finish_signup(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_complete(e.saga_id);
END $$;
SELECT saga_subscribe('mailer', 'UserSignedUp', 'send_welcome(saga.event)') > 0 AS subscribed;
SELECT saga_subscribe('signup', 'WelcomeSent',  'finish_signup(saga.event)') > 0 AS subscribed;
SELECT saga_begin('signup') AS signup_id \gset
SELECT saga_publish('UserSignedUp', '{"user": "zoe"}', :signup_id, 'signup') > 0 AS published;
RESET ROLE;
SELECT app_run_sagas();
SET ROLE app_user;
SET search_path = app, public;
SELECT saga_status(:signup_id) AS signup_status;
SELECT body FROM mailbox WHERE saga_id = :signup_id;
SELECT sender, receiver, message FROM saga_trace(:signup_id);

-- ... orchestration, its grants, and cancelling its own saga.
CREATE FUNCTION book_flight(data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('flight', 'LH-' || (data->>'saga_id')) $$;
CREATE FUNCTION cancel_flight(data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '{"flight_cancelled": true}'::jsonb $$;
CREATE FUNCTION book_car(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF data->>'city' = 'Porto' THEN
        PERFORM saga_reject('no car available in Porto');
    END IF;
    RETURN '{"car": "C-1"}';
END $$;
SELECT saga_define('trip',
    saga_step('flight', 'book_flight(jsonb)', 'cancel_flight(jsonb)'),
    saga_step('car',    'book_car(jsonb)')) AS trip_version;
SELECT saga_start('trip', '{"city": "Porto"}') AS porto_id \gset
SELECT saga_start('trip', '{"city": "Lisbon"}') AS lisbon_id \gset
SELECT saga_grant_sagas('trip', 'app_member');
SELECT saga_grant_events('UserSignedUp', 'app_member');
SELECT saga_begin('signup') AS cancelled_id \gset
SELECT saga_cancel(:cancelled_id, 'changed my mind') AS cancelled;
RESET ROLE;
SELECT app_run_sagas();
SET ROLE app_user;
SELECT id = :porto_id AS porto, status, reason, data->>'flight_cancelled' AS flight_cancelled
  FROM saga_my_sagas WHERE saga_type = 'trip' ORDER BY id;
SELECT saga_status(:cancelled_id) AS cancelled_status;
-- An example order it placed is not its own: saga_place_order started it
-- with the extension owner's rights.  The error says whose it is.
BEGIN;
SELECT saga_place_order('zoe', 'widget', 1, 1.00) AS zoe_order \gset
SELECT app_try_detail(format('SELECT saga_cancel(%s)', :zoe_order)) AS cancel_example_order;
ROLLBACK;
RESET ROLE;
RESET search_path;

--
-- 5. One step undoes it: app_user may call none of the functions again.
--    Its subscriptions stay, but a handler that calls them fails.
--
SELECT saga_revoke_app('app_user') AS had_them;
SELECT saga_revoke_app('app_user') AS had_them_again;
SELECT app_functions_of('app_user') AS app_user_functions;
SET ROLE app_user;
SELECT app_try('SELECT saga_begin(''signup'')') AS begin_after;
SELECT app_try('SELECT saga_publish(''UserSignedUp'', ''{}'')') AS publish_after;
SELECT app_try('SELECT saga_subscribe(''mailer2'', ''UserSignedUp'', ''app.send_welcome(saga.event)'')') AS subscribe_after;
SELECT app_try('SELECT saga_unsubscribe(''mailer'', ''UserSignedUp'')') AS unsubscribe_after;
SELECT app_try('SELECT saga_define(''trip'', saga_step(''car'', ''app.book_car(jsonb)''))') AS define_after;
SELECT app_try('SELECT saga_start(''trip'')') AS start_after;
SELECT app_try('SELECT saga_cancel(1)') AS cancel_after;
SELECT app_try('SELECT saga_grant_events(''UserSignedUp'', ''app_dba'')') AS grant_events_after;
RESET ROLE;
SELECT saga_publish('UserSignedUp', '{"user": "yan"}') > 0 AS published_by_the_dba;
SELECT app_run_sagas();
SELECT consumer, event_type, last_error FROM saga_dead_letters;

--
-- 6. Through a group role: its members inherit it; revoking from a member
--    warns that it still has them, revoking from the group takes them.
--
SELECT saga_grant_app('app_group');
SELECT app_functions_of('app_member') AS member_functions;
SELECT saga_revoke_app('app_member') AS member_had_them;
SELECT app_functions_of('app_member') AS member_functions;
SELECT saga_revoke_app('app_group') AS group_had_them;
SELECT app_functions_of('app_member') AS member_functions;

--
-- 7. pg_monitor reads the DBA's views and runs saga_check(), nothing
--    else; a role without it reads none.
--
SET ROLE app_watch;
SELECT (SELECT count(*) FROM saga_instances) AS instances,
       (SELECT count(*) FROM saga_dead_letters) AS dead_letters,
       (SELECT count(*) FROM saga_stuck WHERE problem = 'dead letter') AS stuck_dead_letters,
       (SELECT count(*) FROM saga_subscriptions WHERE owner = 'app_user'::regrole) AS app_user_subscriptions,
       (SELECT count(*) FROM saga_backlog WHERE consumer = 'mailer') AS mailer_backlog,
       (SELECT count(*) FROM saga_stats) AS stats_rows,
       (SELECT sagas_started FROM saga_stats) AS stats_without_preload,
       (SELECT count(*) FROM saga_workers) AS workers_without_preload,
       (SELECT count(*) FROM saga_databases) AS databases_without_preload;
SELECT app_try('SELECT count(*) FROM saga.instance') AS watch_reads_table;
SELECT app_try('SELECT saga_run_pending()') AS watch_runs_sagas;
SELECT app_try('SELECT saga_retry_delivery(1)') AS watch_retries;
-- the checker too: it only reads what the views show
SELECT app_try('SELECT count(*) FROM saga_check()') AS watch_checks,
       (SELECT count(*) FROM saga_check()) AS violations;
RESET ROLE;
SET ROLE app_user;
SELECT v, app_try('SELECT count(*) FROM ' || v) AS app_user_reads
  FROM unnest('{saga_instances, saga_stuck, saga_dead_letters, saga_backlog, saga_subscriptions,
                saga_workers, saga_stats, saga_databases}'::text[]) v;
RESET ROLE;
SELECT c.relname, a.privilege_type
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE a.grantee = 'pg_monitor'::regrole ORDER BY c.relname;
SELECT p.oid::regprocedure AS function, a.privilege_type
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE a.grantee = 'pg_monitor'::regrole ORDER BY 1;

--
-- 8. The grants are the database's: DROP EXTENSION takes them, a new
--    CREATE EXTENSION does not bring app_user's back (pg_monitor's, made
--    by the install script, come back with it), and the roles, which
--    the extension neither made nor left anything to, drop cleanly.
--
SELECT saga_grant_app('app_user');
DROP EXTENSION saga CASCADE;
CREATE EXTENSION saga;
SELECT app_functions_of('app_user') AS app_user_after_reinstall,
       has_function_privilege('pg_monitor', 'saga_worker_status()', 'EXECUTE') AS pg_monitor_after_reinstall;
DROP EXTENSION saga CASCADE;
DROP SCHEMA app CASCADE;
DROP FUNCTION app_try(text), app_try_detail(text), app_run_sagas(), app_functions_of(name);
DROP ROLE app_user, app_dba, app_member, app_group, app_watch;
RESET saga.max_attempts;
