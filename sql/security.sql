--
-- Security: an ordinary role with the grants the README tells users to give
-- can place orders and read their status, cannot write the extension's
-- internal tables, cannot gain rights through any SECURITY DEFINER function
-- (search_path pinned: function, operator and pg_temp shadowing), and its
-- handlers and saga steps run with its own rights only.
--
-- saga_attacker is an application role with exactly the README's grant
-- (saga_grant_app); saga_customer has no grant at all.  The superuser running this file
-- stands in for the workers (saga_run_pending()) and owns the extension.
-- Every check is a result that would differ if the engine were insecure.
--
CREATE EXTENSION saga;
SELECT saga_set_balance('alice', 1000.00);
SELECT saga_set_balance('bob', 50.00);
SELECT saga_set_stock('widget', 1000);

-- Runs a statement, returns 'ok' or its SQLSTATE and message.  (concat, not
-- ||, so that a shadowed operator on the caller's path is never needed.)
CREATE FUNCTION sec_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN concat(SQLSTATE, ': ', SQLERRM);
END $$;

-- What the workers do, without the dead-letter WARNINGs (they carry ids).
CREATE FUNCTION sec_run_sagas() RETURNS boolean LANGUAGE plpgsql
SET client_min_messages = error AS $$
BEGIN
    PERFORM saga_run_pending();
    RETURN true;
END $$;
REVOKE ALL ON FUNCTION sec_run_sagas() FROM PUBLIC;
-- a failing handler or step is dead at once: no retry comes due later
SET saga.max_attempts = 1;

-- Only the superuser may write this; a shadow running with the extension
-- owner's rights would.
CREATE TABLE sec_canary (note text, who name DEFAULT current_user);

CREATE ROLE saga_attacker NOLOGIN;
CREATE ROLE saga_customer NOLOGIN;
-- the README's grant: saga_grant_app
SELECT saga_grant_app('saga_attacker');
-- a schema of its own (as if it had CREATE on the database)
CREATE SCHEMA evil AUTHORIZATION saga_attacker;

--
-- 1. The catalog: what the extension lets others do.
--
CREATE VIEW sec_ext_objects AS
    SELECT d.classid, d.objid
      FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND x.extname = 'saga' AND d.deptype = 'e';
CREATE VIEW sec_ext_functions AS
    SELECT p.oid, p.oid::regprocedure::text AS fn, p.prosecdef, p.proconfig, l.lanname
      FROM sec_ext_objects o
      JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
      JOIN pg_language l ON l.oid = p.prolang;

-- Every SECURITY DEFINER function pins search_path, with pg_temp last.
SELECT fn, proconfig FROM sec_ext_functions WHERE prosecdef ORDER BY fn COLLATE "C";
-- No SQL or PL/pgSQL function of the extension runs on its caller's path.
SELECT fn AS unpinned FROM sec_ext_functions
 WHERE lanname IN ('sql', 'plpgsql')
   AND (proconfig IS NULL OR NOT 'search_path=pg_catalog, pg_temp' = ANY (proconfig))
 ORDER BY fn COLLATE "C";
-- The C functions are not SECURITY DEFINER (they switch to the owner
-- themselves, for their own statements only).
SELECT count(*) AS c_security_definer FROM sec_ext_functions WHERE lanname = 'c' AND prosecdef;
-- What a role without grants may execute.
SELECT fn AS executable_by_anyone FROM sec_ext_functions
 WHERE has_function_privilege('saga_customer', oid, 'EXECUTE') ORDER BY fn COLLATE "C";
-- What the README's grant adds.
SELECT fn AS granted_to_app FROM sec_ext_functions
 WHERE has_function_privilege('saga_attacker', oid, 'EXECUTE')
   AND NOT has_function_privilege('saga_customer', oid, 'EXECUTE') ORDER BY fn COLLATE "C";
-- Nobody but the owner holds any right on the internal tables and sequences.
SELECT count(*) AS internal_relations,
       count(*) FILTER (WHERE has_table_privilege('saga_attacker', c.oid,
                                'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                           OR has_table_privilege('saga_customer', c.oid,
                                'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))
           AS accessible_to_others
  FROM pg_class c
 WHERE c.relnamespace = 'saga'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S');
SELECT count(*) AS acl_entries_for_others
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'saga'::regnamespace AND a.grantee <> c.relowner;
-- The extension's views: readable by whom, writable by nobody.
SELECT c.oid::regclass AS view,
       has_table_privilege('saga_customer', c.oid, 'SELECT') AS customer_reads,
       has_table_privilege('saga_attacker', c.oid, 'SELECT') AS app_reads,
       has_table_privilege('saga_attacker', c.oid,
                           'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS app_writes
  FROM sec_ext_objects o JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid
 WHERE c.relkind = 'v'
 ORDER BY c.relname;

--
-- 2. A customer without any grant places orders and reads them.
--
SET ROLE saga_customer;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS c1 \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration') AS c2 \gset
SELECT saga_order_status(:c1) AS c1_status, saga_order_status(:c2) AS c2_status,
       saga_status(:c1) AS c1_saga, saga_await(:c1, '0 s') AS c1_await,
       saga_await(:c2, '0 s') AS c2_await;
SELECT sender, receiver, message FROM saga_trace(:c1);
SELECT customer, product, quantity, amount, pattern, status
  FROM saga_orders WHERE order_id IN (:c1, :c2) ORDER BY order_id;
SELECT saga_balance('alice') AS alice, saga_stock('widget') AS widgets;
-- It may not read the internal tables nor run the engine.
SELECT stmt, sec_try(stmt) AS result FROM (VALUES
    ('SELECT count(*) FROM saga.instance'),
    ('SELECT count(*) FROM saga.account'),
    ('SELECT count(*) FROM saga_instances'),
    ('SELECT count(*) FROM saga_subscriptions'),
    ('SELECT count(*) FROM saga_dead_letters'),
    ('SELECT count(*) FROM saga_stuck'),
    ('SELECT saga_publish(''OrderCreated'', ''{}'')'),
    ('SELECT saga_subscribe(''me'', ''OrderCreated'', ''saga.payment_on_order_created(saga.event)'')'),
    ('SELECT saga_unsubscribe(''payment'', ''OrderCreated'')'),
    ('SELECT saga_begin(''order'')'),
    (format('SELECT saga_complete(%s)', :c1)),
    (format('SELECT saga_fail(%s, ''no'')', :c1)),
    (format('SELECT saga_cancel(%s)', :c1)),
    (format('SELECT saga_retry(%s)', :c2)),
    ('SELECT saga_define(''order'', saga_step(''x'', ''saga.payment_step_charge(jsonb)''))'),
    ('SELECT saga_start(''order'', ''{"customer": "alice"}'')'),
    ('SELECT saga_set_balance(''alice'', 1000000)'),
    ('SELECT saga_set_stock(''widget'', 0)'),
    ('SELECT saga_run_pending()'),
    ('SELECT saga_pause_consumer(''payment'')'),
    ('SELECT saga_resume_consumer(''payment'')'),
    ('SELECT saga_retry_delivery(1)'),
    ('SELECT saga_wake_launcher()'),
    ('SELECT saga_purge()'),
    ('SELECT saga.charge_payment(1, ''bob'', 1.00)'),
    ('SELECT saga.refund_payment(1)')
  ) AS t(stmt);
RESET ROLE;
SELECT sec_run_sagas();
SET ROLE saga_customer;
SELECT saga_order_status(:c1) AS c1_status, saga_order_status(:c2) AS c2_status,
       saga_await(:c1, '0 s') AS c1_await, saga_await(:c2, '0 s') AS c2_await;
SELECT sender, receiver, message FROM saga_trace(:c2);
SELECT customer, status, reason FROM saga_orders WHERE order_id IN (:c1, :c2) ORDER BY order_id;
RESET ROLE;

--
-- 3. The application role, with the README's grant: its tools, then what
-- it may not do to the extension's tables and to others' sagas.
--
SET ROLE saga_attacker;
-- whether the role the code runs as is a superuser (not the GUC
-- is_superuser, which follows SET ROLE only, not a change of user id)
CREATE FUNCTION evil.is_super() RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog AS 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user';
-- what every shadow does: leave a trace, try to escalate (silently)
CREATE TABLE evil.shadow_log (id serial, via text, who name DEFAULT current_user,
                              super boolean DEFAULT evil.is_super());
CREATE FUNCTION evil.pwn(via text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.shadow_log (via) VALUES (via);
    BEGIN
        EXECUTE 'ALTER ROLE saga_attacker SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        INSERT INTO public.sec_canary (note) VALUES (via);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END $$;
CREATE FUNCTION evil.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM evil.pwn('trigger on ' || TG_TABLE_NAME);
    RETURN NEW;
END $$;
-- what the handlers and steps write: allowed, and it records who wrote it
CREATE TABLE evil.notes (id serial, note text, who name DEFAULT current_user,
                         super boolean DEFAULT evil.is_super());
CREATE TABLE evil.probe_log (id serial, ctx text, attempt text, outcome text);
CREATE TABLE evil.deferred (x int);
CREATE CONSTRAINT TRIGGER pwn_later AFTER INSERT ON evil.deferred
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil.trg();
CREATE TABLE evil.deferrable (x int);
CREATE CONSTRAINT TRIGGER pwn_when_deferred AFTER INSERT ON evil.deferrable
    DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION evil.trg();
-- Everything a handler or step might try to gain rights: each attempt's
-- outcome is logged (the log commits, as the function itself succeeds).
CREATE FUNCTION evil.probe(ctx text, victim bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    owner name := (SELECT x.extowner::regrole::name FROM pg_extension x WHERE x.extname = 'saga');
    a record;
BEGIN
    INSERT INTO evil.probe_log (ctx, attempt, outcome) VALUES
        (ctx, 'current_user', current_user),
        (ctx, 'session_user is current_user', (session_user = current_user)::text),
        (ctx, 'current_user is a superuser', evil.is_super()::text);
    FOR a IN SELECT * FROM (VALUES
        (1, 'SET ROLE <owner>', format('SET ROLE %I', owner)),
        (2, 'RESET ROLE', 'RESET ROLE'),
        (3, 'SET SESSION AUTHORIZATION <owner>', format('SET SESSION AUTHORIZATION %I', owner)),
        (4, 'ALTER ROLE SUPERUSER', 'ALTER ROLE saga_attacker SUPERUSER'),
        (5, 'GRANT <owner> TO itself', format('GRANT %I TO saga_attacker', owner)),
        (6, 'CREATE ROLE SUPERUSER', 'CREATE ROLE saga_minion SUPERUSER'),
        (7, 'INSERT INTO sec_canary', 'INSERT INTO public.sec_canary (note) VALUES (''probe'')'),
        (8, 'UPDATE saga.account', 'UPDATE saga.account SET balance = 1000000'),
        (9, 'INSERT INTO saga.event', 'INSERT INTO saga.event (event_type, payload, publisher) VALUES (''Forged'', ''{}'', ''order'')'),
        (10, 'UPDATE saga.instance', format('UPDATE saga.instance SET status = ''completed'', finished_at = now() WHERE id = %s', victim)),
        (11, 'saga_complete(another''s saga)', format('SELECT saga_complete(%s)', victim)),
        (12, 'saga_cancel(another''s saga)', format('SELECT saga_cancel(%s)', victim)),
        (13, 'saga_run_pending()', 'SELECT saga_run_pending()'),
        (14, 'saga_set_balance()', 'SELECT saga_set_balance(''mallory'', 1000000)'),
        (15, 'CREATE TEMP TABLE', 'CREATE TEMP TABLE account (customer text, balance numeric)'),
        (16, 'CREATE TEMP VIEW', 'CREATE TEMP VIEW saga_orders AS SELECT 1 AS x'),
        (17, 'CREATE DOMAIN pg_temp.text', 'CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (evil.pwn(''domain''))'),
        (18, 'deferred trigger', 'INSERT INTO evil.deferred VALUES (1)'),
        (19, 'SET CONSTRAINTS ALL DEFERRED', 'SET CONSTRAINTS ALL DEFERRED; INSERT INTO evil.deferrable VALUES (1)'),
        (20, 'PREPARE', 'PREPARE pwn AS SELECT evil.pwn(''prepared'')'),
        (21, 'LISTEN', 'LISTEN pwn'),
        (22, 'DECLARE CURSOR WITH HOLD', 'DECLARE pwn CURSOR WITH HOLD FOR SELECT evil.pwn(''cursor'')'),
        (23, 'pg_read_file()', 'SELECT pg_read_file(''postgresql.conf'')'),
        (24, 'COPY TO PROGRAM', 'COPY (SELECT 1) TO PROGRAM ''true'''),
        (25, 'LOAD', 'LOAD ''plpgsql'''),
        (26, 'set_config(search_path) for the session',
             'SELECT set_config(''search_path'', ''evil, pg_catalog'', false)'),
        -- functions are never looked up in pg_temp: see the check after it
        (27, 'CREATE FUNCTION pg_temp.*()',
             format('CREATE FUNCTION pg_temp.%I() RETURNS boolean LANGUAGE sql AS $f$SELECT evil.pwn(%L)$f$',
                    'evil_' || ctx || '_fn', ctx))
      ) AS t(n, attempt, stmt) ORDER BY n
    LOOP
        INSERT INTO evil.probe_log (ctx, attempt, outcome)
        VALUES (ctx, a.attempt, public.sec_try(a.stmt));
    END LOOP;
    INSERT INTO evil.probe_log (ctx, attempt, outcome) VALUES
        (ctx, 'current_user afterwards', current_user);
END $$;
-- a handler: its event says what to try
CREATE FUNCTION evil.on_probe(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    owner name := (SELECT x.extowner::regrole::name FROM pg_extension x WHERE x.extname = 'saga');
BEGIN
    INSERT INTO evil.notes (note) VALUES ('handler: ' || (e.payload->>'do'));
    CASE e.payload->>'do'
        WHEN 'probe' THEN PERFORM evil.probe('handler', (e.payload->>'victim')::bigint);
        WHEN 'set role' THEN EXECUTE format('SET ROLE %I', owner);
        WHEN 'alter role' THEN ALTER ROLE saga_attacker SUPERUSER;
        WHEN 'write sec_canary' THEN INSERT INTO public.sec_canary (note) VALUES ('handler');
        WHEN 'write saga.account' THEN UPDATE saga.account SET balance = 1000000;
        WHEN 'finish another''s saga' THEN PERFORM saga_complete((e.payload->>'victim')::bigint);
        WHEN 'allowed write' THEN NULL;
    END CASE;
END $$;
CREATE FUNCTION evil.spy_fails(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'spy saw an order of %', e.payload->>'customer';
END $$;
CREATE FUNCTION evil.spy_fails_order(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_publish('PaymentFailed', e.payload || '{"reason": "forged by a subscriber"}');
END $$;
-- saga steps
CREATE FUNCTION evil.step_probe(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.notes (note) VALUES ('step: probe');
    PERFORM evil.probe('step', (data->>'victim')::bigint);
    RETURN '{"probed": true}';
END $$;
CREATE FUNCTION evil.step_note(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.notes (note) VALUES ('step: note');
    RETURN NULL;
END $$;
CREATE FUNCTION evil.step_undo(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.notes (note) VALUES ('step: compensation');
    RETURN NULL;
END $$;
CREATE FUNCTION evil.step_alter_role(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.notes (note) VALUES ('step: alter role');
    ALTER ROLE saga_attacker SUPERUSER;
    RETURN NULL;
END $$;
CREATE FUNCTION evil.step_finish_victim(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.notes (note) VALUES ('step: write saga.instance');
    UPDATE saga.instance SET status = 'completed', finished_at = now()
     WHERE id = (step_finish_victim.data->>'victim')::bigint;
    RETURN NULL;
END $$;
RESET ROLE;

-- a pending order of the customer's, to be left alone
SET ROLE saga_customer;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS v0 \gset
SET ROLE saga_attacker;

-- Every table in schema saga: no write, no trigger, no lock, no drop.
SELECT s.stmt, sec_try(s.stmt) AS result
  FROM pg_tables t
  CROSS JOIN LATERAL (SELECT a.attname FROM pg_attribute a
                       WHERE a.attrelid = format('saga.%I', t.tablename)::regclass
                         AND a.attnum = 1) c
  CROSS JOIN LATERAL (VALUES
      (1, format('INSERT INTO saga.%I DEFAULT VALUES', t.tablename)),
      (2, format('UPDATE saga.%I SET %I = %I', t.tablename, c.attname, c.attname)),
      (3, format('DELETE FROM saga.%I', t.tablename)),
      (4, format('TRUNCATE saga.%I CASCADE', t.tablename)),
      (5, format('LOCK TABLE saga.%I IN ACCESS EXCLUSIVE MODE', t.tablename)),
      (6, format('CREATE TRIGGER pwn BEFORE INSERT ON saga.%I FOR EACH ROW EXECUTE FUNCTION evil.trg()', t.tablename)),
      (7, format('DROP TABLE saga.%I CASCADE', t.tablename))
  ) AS s(n, stmt)
 WHERE t.schemaname = 'saga'
 ORDER BY t.tablename, s.n;
-- ... and its sequences
SELECT s.stmt, sec_try(s.stmt) AS result
  FROM pg_class q
  CROSS JOIN LATERAL (VALUES
      (1, format('SELECT nextval(''saga.%I'')', q.relname)),
      (2, format('SELECT setval(''saga.%I'', 1)', q.relname)),
      (3, format('ALTER SEQUENCE saga.%I RESTART', q.relname))
  ) AS s(n, stmt)
 WHERE q.relnamespace = 'saga'::regnamespace AND q.relkind = 'S'
 ORDER BY q.relname, s.n;
-- Others' sagas, subscriptions and definitions; the extension's own
-- functions as handlers or steps; the DBA's functions.
SELECT stmt, sec_try(stmt) AS result FROM (VALUES
    (format('SELECT saga_complete(%s)', :v0)),
    (format('SELECT saga_fail(%s, ''no'')', :v0)),
    (format('SELECT saga_cancel(%s)', :v0)),
    (format('SELECT saga_retry(%s)', :c2)),
    ('SELECT saga_unsubscribe(''payment'', ''OrderCreated'')'),
    ('SELECT saga_subscribe(''payment'', ''OrderCreated'', ''evil.on_probe(saga.event)'')'),
    ('SELECT saga_subscribe(''evil'', ''Anything'', ''saga.payment_on_order_created(saga.event)'')'),
    ('SELECT saga_subscribe(''evil'', ''Anything'', ''saga.order_on_inventory_reserved(saga.event)'')'),
    ('SELECT saga_define(''order'', saga_step(''x'', ''evil.step_probe(jsonb)''))'),
    ('SELECT saga_start(''order'', ''{"customer": "alice", "product": "widget", "quantity": 1, "amount": 1}'')'),
    ('SELECT saga_define(''mine'', saga_step(''charge'', ''saga.payment_step_charge(jsonb)''))'),
    ('SELECT saga_define(''mine'', saga_step(''ok'', ''evil.step_undo(jsonb)'', ''saga.payment_step_refund(jsonb)''))'),
    ('SELECT saga_set_balance(''mallory'', 1000000)'),
    ('SELECT saga_set_stock(''widget'', 0)'),
    ('SELECT saga_run_pending()'),
    ('SELECT saga_pause_consumer(''payment'')'),
    ('SELECT saga_retry_delivery(1)'),
    ('SELECT saga_wake_launcher()'),
    ('SELECT saga_purge()'),
    ('SELECT saga.charge_payment(1, ''bob'', 1.00)'),
    ('SELECT saga.reserve_stock(1, ''widget'', 1)')
  ) AS t(stmt);
RESET ROLE;
SELECT sec_run_sagas();
-- the customer's order went its way untouched
SELECT status, reason FROM saga_orders WHERE order_id = :v0;
SELECT count(*) AS triggers_on_saga_tables FROM pg_trigger
 WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'saga'::regnamespace)
   AND NOT tgisinternal;

--
-- 4(a). Shadowing on the caller's search_path: functions and operators
-- named like those the SECURITY DEFINER functions (and the handlers) call,
-- in a schema of the attacker's, ahead of pg_catalog.
--
SET ROLE saga_attacker;
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM (VALUES
        ('format',        'a text, b text',                 'text',        'pg_catalog.format(a, b)'),
        ('format',        'a text, b numeric, c numeric',   'text',        'pg_catalog.format(a, b, c)'),
        ('format',        'a text, b integer, c integer',   'text',        'pg_catalog.format(a, b, c)'),
        ('format',        'a text, b bigint, c integer, d text, e numeric, f text, g text', 'text',
                          'pg_catalog.format(a, b, c, d, e, f, g)'),
        ('jsonb_build_object', 'a text, b text, c text, d text, e text, f integer, g text, h numeric', 'jsonb',
                          'pg_catalog.jsonb_build_object(a, b, c, d, e, f, g, h)'),
        ('jsonb_build_object', 'a text, b bigint',          'jsonb',       'pg_catalog.jsonb_build_object(a, b)'),
        ('jsonb_build_object', 'a text, b text',            'jsonb',       'pg_catalog.jsonb_build_object(a, b)'),
        ('jsonb_build_object', 'a text, b numeric',         'jsonb',       'pg_catalog.jsonb_build_object(a, b)'),
        ('length',        'a text',                         'integer',     'pg_catalog.length(a)'),
        ('btrim',         'a text',                         'text',        'pg_catalog.btrim(a)'),
        ('quote_literal', 'a text',                         'text',        'pg_catalog.quote_literal(a)'),
        ('scale',         'a numeric',                      'integer',     'pg_catalog.scale(a)'),
        ('nextval',       'a regclass',                     'bigint',      'pg_catalog.nextval(a)'),
        ('now',           '',                               'timestamptz', 'pg_catalog.now()'),
        ('clock_timestamp', '',                             'timestamptz', 'pg_catalog.clock_timestamp()'),
        ('hashtext',      'a text',                         'integer',     'pg_catalog.hashtext(a)'),
        ('jsonb_typeof',  'a jsonb',                        'text',        'pg_catalog.jsonb_typeof(a)'),
        ('replace',       'a text, b text, c text',         'text',        'pg_catalog.replace(a, b, c)'),
        ('translate',     'a text, b text, c text',         'text',        'pg_catalog.translate(a, b, c)'),
        ('row_number',    '',                               'bigint',      '1'),
        ('saga_publish',  'a text, b jsonb',                'bigint',      'public.saga_publish(a, b)'),
        ('saga_status',   'a bigint',                       'text',        'public.saga_status(a)'),
        ('saga_reject',   'a text',                         'void',        'public.saga_reject(a)'),
        ('check_name',    'a text, b text',                 'void',        'NULL')
      ) AS t(name, args, result, call)
    LOOP
        EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                       f.name, f.args, f.result,
                       format('BEGIN PERFORM evil.pwn(%L); %s END',
                              format('evil.%s(%s)', f.name, f.args),
                              CASE WHEN f.result = 'void' THEN format('PERFORM %s; RETURN;', f.call)
                                   ELSE format('RETURN %s;', f.call) END));
    END LOOP;
    FOR f IN SELECT * FROM (VALUES
        ('=',   'text',     'text',     'boolean', 'texteq'),
        ('<>',  'text',     'text',     'boolean', 'textne'),
        ('||',  'text',     'text',     'text',    'textcat'),
        ('=',   'bigint',   'bigint',   'boolean', 'int8eq'),
        ('=',   'integer',  'integer',  'boolean', 'int4eq'),
        ('<',   'integer',  'integer',  'boolean', 'int4lt'),
        ('>',   'integer',  'integer',  'boolean', 'int4gt'),
        ('=',   'numeric',  'numeric',  'boolean', 'numeric_eq'),
        ('<',   'numeric',  'numeric',  'boolean', 'numeric_lt'),
        ('>=',  'numeric',  'numeric',  'boolean', 'numeric_ge'),
        ('+',   'numeric',  'numeric',  'numeric', 'numeric_add'),
        ('-',   'numeric',  'numeric',  'numeric', 'numeric_sub'),
        ('<=',  'interval', 'interval', 'boolean', 'interval_le'),
        ('||',  'jsonb',    'jsonb',    'jsonb',   'jsonb_concat'),
        ('->>', 'jsonb',    'text',     'text',    'jsonb_object_field_text'),
        ('->',  'jsonb',    'text',     'jsonb',   'jsonb_object_field'),
        ('?',   'jsonb',    'text',     'boolean', 'jsonb_exists')
      ) AS t(op, l, r, result, impl)
    LOOP
        EXECUTE format('CREATE FUNCTION evil.%I(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS %L',
                       'op_' || f.impl, f.l, f.r, f.result,
                       format('BEGIN PERFORM evil.pwn(%L); RETURN pg_catalog.%I(a, b); END',
                              format('evil.%s(%s, %s)', f.op, f.l, f.r), f.impl));
        EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.%I)',
                       f.op, f.l, f.r, 'op_' || f.impl);
    END LOOP;
END $$;
SELECT count(*) AS shadow_functions FROM pg_proc WHERE pronamespace = 'evil'::regnamespace;
SELECT count(*) AS shadow_operators FROM pg_operator WHERE oprnamespace = 'evil'::regnamespace;
SET search_path = evil, pg_catalog, public;
-- the order API, both modes, with idempotency keys and its error paths
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS a1 \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration') AS a2 \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration', idempotency_key => 'evil-1') AS a3 \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration', idempotency_key => 'evil-1') = :a3 AS same_order;
SELECT stmt, sec_try(stmt) AS result FROM (VALUES
    ('SELECT saga_place_order(''alice'', ''widget'', 2, 10.00, ''orchestration'', idempotency_key => ''evil-1'')'),
    ('SELECT saga_place_order(''alice'', ''widget'', 1, 10.00, ''telepathy'')'),
    ('SELECT saga_place_order(''   '', ''widget'', 1, 10.00)'),
    ('SELECT saga_place_order(repeat(''x'', 201), ''widget'', 1, 10.00)'),
    ('SELECT saga_place_order(''alice'', ''widget'', 1, ''NaN'')'),
    ('SELECT saga_place_order(''alice'', ''widget'', 1, 1e15)'),
    ('SELECT saga_place_order(''alice'', ''widget'', 1, 10.00, deadline => ''-1 s'')'),
    ('SELECT saga_order_status(-1)')
  ) AS t(stmt);
SELECT saga_order_status(:a1) AS a1_status, saga_order_status(:a2) AS a2_status,
       public.saga_status(:a1) AS a1_saga, saga_await(:a2, '0 s') AS a2_await;
SELECT sender, receiver, message FROM saga_trace(:a1);
SELECT saga_trace_mermaid(:a2) LIKE 'sequenceDiagram%' AS mermaid;
SELECT saga_balance('alice') IS NOT NULL AS has_balance, saga_stock('widget') IS NOT NULL AS has_stock,
       saga_balance('nobody') AS nobody, saga_stock('nothing') AS nothing;
-- the C functions: their statements are planned with pg_catalog alone
SELECT public.saga_begin('evil_a') AS ea \gset
SELECT public.saga_publish('EvilA', '{"k": "v"}', :ea, 'evil') > 0 AS published;
SELECT public.saga_status(:ea) AS ea_status;
SELECT public.saga_complete(:ea);
SELECT public.saga_define('evil_plan', public.saga_step('note', 'evil.step_note(jsonb)')) AS version;
SELECT public.saga_start('evil_plan', '{}') AS ep \gset
RESET search_path;
RESET ROLE;
-- The workers' part, even with the attacker's schema first on the path.
SET search_path = evil, pg_catalog, public;
SELECT sec_run_sagas();
RESET search_path;
SELECT status FROM saga_orders WHERE order_id IN (:a1, :a2, :a3) ORDER BY order_id;
SELECT status FROM saga_instances WHERE id IN (:ea, :ep) ORDER BY id;
-- Nothing ran with the owner's rights: the shadows never ran at all.
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'saga_attacker';
SELECT count(*) AS canary_rows FROM sec_canary;
SELECT count(*) AS shadow_calls FROM evil.shadow_log;
-- ... though they work: the attacker's own query on that path calls them.
SET ROLE saga_attacker;
SET search_path = evil, pg_catalog, public;
SELECT 'x'::text = 'x'::text AS eq, length('abc') AS len;
RESET search_path;
RESET ROLE;
SELECT via, who = 'saga_attacker' AS by_attacker, super FROM evil.shadow_log ORDER BY id;

--
-- 4(b). Objects in pg_temp named like the extension's tables and views
-- and like the types and functions it uses, pg_temp first on the path.
-- The pinned path searches pg_temp after pg_catalog (for relations and
-- types; never for functions and operators), and the extension's own
-- objects are schema-qualified.
--
SET ROLE saga_attacker;
DO $$
DECLARE
    r record;
BEGIN
    -- functions and operators (named with pg_catalog's types: the domains
    -- below will shadow them on this session's own path)
    FOR r IN SELECT * FROM (VALUES
        ('format',        'a pg_catalog.text, b pg_catalog.text',   'pg_catalog.text',    'pg_catalog.format(a, b)'),
        ('format',        'a pg_catalog.text, b numeric, c numeric', 'pg_catalog.text', 'pg_catalog.format(a, b, c)'),
        ('jsonb_build_object', 'a pg_catalog.text, b bigint', 'pg_catalog.jsonb', 'pg_catalog.jsonb_build_object(a, b)'),
        ('length',        'a pg_catalog.text',           'integer', 'pg_catalog.length(a)'),
        ('btrim',         'a pg_catalog.text',           'pg_catalog.text',    'pg_catalog.btrim(a)'),
        ('quote_literal', 'a pg_catalog.text',           'pg_catalog.text',    'pg_catalog.quote_literal(a)'),
        ('nextval',       'a regclass',       'bigint',  'pg_catalog.nextval(a)'),
        ('saga_publish',  'a pg_catalog.text, b pg_catalog.jsonb',  'bigint',  'public.saga_publish(a, b)'),
        ('saga_status',   'a bigint',         'pg_catalog.text',    'public.saga_status(a)')
      ) AS t(name, args, result, call)
    LOOP
        EXECUTE format('CREATE FUNCTION pg_temp.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                       r.name, r.args, r.result,
                       format('BEGIN PERFORM evil.pwn(%L); RETURN %s; END',
                              format('pg_temp.%s(%s)', r.name, r.args), r.call));
    END LOOP;
    EXECUTE 'CREATE OPERATOR pg_temp.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = evil.op_texteq)';
    EXECUTE 'CREATE OPERATOR pg_temp.< (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.op_numeric_lt)';
    -- domains named like the types the functions declare, checked by a shadow
    FOR r IN SELECT * FROM (VALUES ('text'), ('jsonb'), ('timestamptz'), ('regrole'),
                                   ('regprocedure'), ('name')) AS t(typname)
    LOOP
        EXECUTE format('CREATE DOMAIN pg_temp.%I AS pg_catalog.%I CHECK (evil.pwn(%L))',
                       r.typname, r.typname, 'pg_temp.' || r.typname);
    END LOOP;
    -- views named like every relation of schema saga and every view of the extension
    FOR r IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = 'saga'::regnamespace AND c.relkind IN ('r', 'v', 'S')
             UNION
             SELECT c.relname FROM pg_class c
              JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
              JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'saga'
              WHERE c.relkind = 'v'
    LOOP
        EXECUTE format('CREATE TEMP VIEW %I AS SELECT evil.pwn(%L) AS pwned',
                       r.relname, 'pg_temp.' || r.relname);
    END LOOP;
END $$;
SELECT NOT EXISTS (SELECT FROM pg_class c
                    WHERE c.relnamespace = 'saga'::regnamespace AND c.relkind IN ('r', 'v', 'S')
                      AND NOT EXISTS (SELECT FROM pg_class t
                                       WHERE t.relnamespace = pg_my_temp_schema()
                                         AND t.relname = c.relname)) AS every_table_shadowed,
       (SELECT count(*) FROM pg_type WHERE typnamespace = pg_my_temp_schema() AND typtype = 'd') AS temp_domains,
       (SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema()) AS temp_functions,
       (SELECT count(*) FROM pg_operator WHERE oprnamespace = pg_my_temp_schema()) AS temp_operators;
SET search_path = pg_temp, evil, pg_catalog, public;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS b1 \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration', idempotency_key => 'evil-2') AS b2 \gset
SELECT stmt, sec_try(stmt) AS result FROM (VALUES
    ('SELECT saga_place_order(''alice'', ''widget'', 3, 10.00, ''orchestration'', idempotency_key => ''evil-2'')'),
    ('SELECT saga_place_order(''alice'', ''widget'', 1, 10.00, ''telepathy'')'),
    ('SELECT saga_place_order('''', ''widget'', 1, 10.00)'),
    ('SELECT saga_order_status(-1)')
  ) AS t(stmt);
SELECT saga_order_status(:b1) AS b1_status, saga_order_status(:b2) AS b2_status,
       saga_await(:b1, '0 s') AS b1_await;
SELECT sender, receiver, message FROM saga_trace(:b2);
SELECT saga_trace_mermaid(:b2) LIKE 'sequenceDiagram%' AS mermaid;
SELECT saga_balance('nobody') AS nobody, saga_stock('nothing') AS nothing;
SELECT public.saga_begin('evil_b') AS eb \gset
SELECT public.saga_publish('EvilB', '{}', :eb, 'evil') > 0 AS published;
RESET search_path;
RESET ROLE;
-- The workers' part while those objects sit in this session's pg_temp:
-- the handlers' pinned path and the C code's catalog-only path ignore them.
SELECT sec_run_sagas();
-- (drop them before this session, the superuser's, uses a view or a type)
SET ROLE saga_attacker;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'v'
    LOOP
        EXECUTE format('DROP VIEW pg_temp.%I', r.relname);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t
              WHERE t.typnamespace = pg_my_temp_schema() AND t.typtype = 'd'
    LOOP
        EXECUTE format('DROP DOMAIN pg_temp.%I', r.typname);
    END LOOP;
END $$;
RESET ROLE;
SELECT (SELECT count(*) FROM pg_class c
         WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'v') AS temp_views_left,
       (SELECT count(*) FROM pg_type t
         WHERE t.typnamespace = pg_my_temp_schema() AND t.typtype = 'd') AS temp_domains_left;
SELECT status FROM saga_orders WHERE order_id IN (:b1, :b2) ORDER BY order_id;
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'saga_attacker';
SELECT count(*) AS canary_rows FROM sec_canary;
SELECT count(*) FILTER (WHERE who <> 'saga_attacker' OR super) AS shadow_calls_by_others,
       count(*) FILTER (WHERE via LIKE 'pg_temp.%') AS temp_shadow_calls
  FROM evil.shadow_log;

--
-- 4(c). A handler of the attacker's runs as the attacker, in a
-- security-restricted operation: every escalation fails and is recorded
-- as its delivery's error, an allowed write succeeds.
--
SET ROLE saga_attacker;
SELECT saga_subscribe('evil', 'EvilProbe', 'evil.on_probe(saga.event)') > 0 AS subscribed;
-- the example's events are its owner's: no subscribing to them (1.2) ...
SELECT sec_try('SELECT saga_subscribe(''evil_spy'', ''OrderCreated'', ''evil.spy_fails(saga.event)'')')
       AS spy_on_orders;
-- ... unless the owner allows it; from here on the attacker may (so that
-- what follows tests the defences behind that one)
RESET ROLE;
SELECT saga_grant_events('OrderCreated', 'saga_attacker');
SET ROLE saga_attacker;
-- a subscriber to others' events that always fails hurts nobody but itself
SELECT saga_subscribe('evil_spy', 'OrderCreated', 'evil.spy_fails(saga.event)') > 0 AS subscribed;
SET ROLE saga_customer;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS v1 \gset
SET ROLE saga_attacker;
SELECT saga_begin('evil_probe') AS pb \gset
SELECT count(saga_publish('EvilProbe', jsonb_build_object('do', d, 'victim', :v1), :pb)) AS published
  FROM unnest(ARRAY['probe', 'set role', 'alter role', 'write sec_canary', 'write saga.account',
                    'finish another''s saga', 'allowed write']) WITH ORDINALITY AS u(d, n);
RESET ROLE;
SELECT current_setting('search_path') AS path_before \gset
SELECT sec_run_sagas();
SELECT current_setting('search_path') = :'path_before' AS path_unchanged,
       current_user = session_user AS still_myself,
       current_setting('is_superuser') AS is_superuser;
SELECT e.payload->>'do' AS event, d.status,
       regexp_replace(d.last_error, 'saga \d+', 'saga N') AS last_error
  FROM saga.delivery d
  JOIN saga.event e ON e.id = d.event_id
  JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE s.consumer = 'evil'
 ORDER BY e.id;
SELECT attempt, regexp_replace(outcome, 'saga \d+', 'saga N') AS outcome
  FROM evil.probe_log WHERE ctx = 'handler' ORDER BY id;
SELECT note, who, super FROM evil.notes ORDER BY id;
-- the function it left in this session's pg_temp is never found
SELECT sec_try('SELECT evil_handler_fn()') AS call_unqualified;
-- the order went its way, the spy's failure notwithstanding
SELECT status, reason FROM saga_orders WHERE order_id = :v1;
SELECT s.consumer, d.status, d.last_error
  FROM saga.delivery d
  JOIN saga.event e ON e.id = d.event_id
  JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE e.saga_id = :v1 AND s.consumer = 'evil_spy';
SET ROLE saga_attacker;
SELECT saga_unsubscribe('evil_spy', 'OrderCreated');
RESET ROLE;

--
-- 4(d). A saga step of the attacker's likewise.
--
SET ROLE saga_customer;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS v2 \gset
SET ROLE saga_attacker;
TRUNCATE evil.notes;
SELECT saga_define('evil_steps',
    saga_step('probe', 'evil.step_probe(jsonb)', 'evil.step_undo(jsonb)'),
    saga_step('escalate', 'evil.step_alter_role(jsonb)')) AS version;
SELECT saga_define('evil_writes', saga_step('finish', 'evil.step_finish_victim(jsonb)')) AS version;
SELECT saga_start('evil_steps', jsonb_build_object('victim', :v2)) AS s1 \gset
SELECT saga_start('evil_writes', jsonb_build_object('victim', :v2)) AS s2 \gset
RESET ROLE;
SELECT sec_run_sagas();
SELECT saga_type, status, reason FROM saga_instances WHERE id IN (:s1, :s2) ORDER BY id;
SELECT saga_id = :s1 AS first_saga, step, kind, outcome, detail
  FROM saga.step_run WHERE saga_id IN (:s1, :s2) ORDER BY request_seq;
SELECT attempt, regexp_replace(outcome, 'saga \d+', 'saga N') AS outcome
  FROM evil.probe_log WHERE ctx = 'step' ORDER BY id;
SELECT note, who, super FROM evil.notes ORDER BY id;
SELECT sec_try('SELECT evil_step_fn()') AS call_unqualified;
SELECT status, reason FROM saga_orders WHERE order_id = :v2;

--
-- 5. Forged events.  The order saga's services run as the extension's
-- owner and act on the events they receive; an application role must not
-- be able to steer them into another's saga, or make them charge anyone.
-- These were open holes when this test was first written (saga_publish()
-- accepted any saga id, a subscription's on_failure event and a handler's
-- inherited saga id reached sagas its owner did not own, and the example's
-- services trusted the ids in payloads); they must stay closed.
--
-- 5.1 publishing into another role's saga: bob cannot pay for this order,
-- so it must fail, whatever the application role publishes into it
SET ROLE saga_customer;
SELECT saga_place_order('bob', 'widget', 1, 80.00) AS f1 \gset
SET ROLE saga_attacker;
SELECT sec_try(format('SELECT saga_publish(%L, %L, %s, %L)',
                  'InventoryReserved', '{}', :f1, 'inventory')) IS NOT NULL AS tried;
RESET ROLE;
SELECT sec_run_sagas();
SELECT status, reason FROM saga_orders WHERE order_id = :f1;

-- 5.2 an event of the example's with no saga: the payment service must not
-- charge alice for an order nobody placed
SELECT saga_balance('alice') AS alice_before, saga_stock('widget') AS widgets_before \gset
SET ROLE saga_attacker;
SELECT sec_try(format('SELECT saga_publish(%L, %L)', 'OrderCreated',
                  '{"order_id": 424242, "customer": "alice", "product": "widget", "quantity": 1, "amount": 500.00}'))
       IS NOT NULL AS tried;
RESET ROLE;
SELECT sec_run_sagas();
SELECT saga_balance('alice') = :alice_before AS alice_not_charged,
       saga_stock('widget') = :widgets_before AS stock_untouched;
SELECT count(*) AS payments_for_unplaced_order FROM saga.payment WHERE order_id = 424242;

-- 5.3 a subscriber to another's events, through its dead letters'
-- on_failure event: alice's order must complete.  Publishing the
-- example's events is its owner's (1.2), and so is an on_failure event ...
SET ROLE saga_attacker;
SELECT sec_try(format('SELECT saga_subscribe(%L, %L, %L, on_failure => %L)', 'evil_spy',
                      'OrderCreated', 'evil.spy_fails(saga.event)', 'PaymentFailed')) AS on_failure_forges;
SELECT sec_try(format('SELECT saga_publish(%L, %L)', 'OrderCreated', '{}')) AS publish_order;
-- ... unless the owner allows it: from here on the attacker may publish
-- PaymentFailed, and the saga ids must still hold
RESET ROLE;
SELECT saga_grant_events('PaymentFailed', 'saga_attacker', 'publish');
SET ROLE saga_attacker;
SELECT saga_subscribe('evil_spy', 'OrderCreated', 'evil.spy_fails(saga.event)',
                      on_failure => 'PaymentFailed') > 0 AS subscribed;
SET ROLE saga_customer;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS f3 \gset
RESET ROLE;
SELECT sec_run_sagas();
SET ROLE saga_attacker;
SELECT saga_unsubscribe('evil_spy', 'OrderCreated');
RESET ROLE;
SELECT status, reason FROM saga_orders WHERE order_id = :f3;

-- 5.4 ... or through what its handler publishes into the saga it handles
SET ROLE saga_attacker;
SELECT saga_subscribe('evil_spy', 'OrderCreated', 'evil.spy_fails_order(saga.event)') > 0 AS subscribed;
SET ROLE saga_customer;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS f4 \gset
RESET ROLE;
SELECT sec_run_sagas();
SET ROLE saga_attacker;
SELECT saga_unsubscribe('evil_spy', 'OrderCreated');
RESET ROLE;
SELECT status, reason FROM saga_orders WHERE order_id = :f4;

--
-- 6. In the end: nothing gained.
--
SELECT rolsuper AS attacker_is_superuser, rolcreaterole, rolcreatedb, rolbypassrls
  FROM pg_roles WHERE rolname = 'saga_attacker';
SELECT count(*) AS attacker_memberships FROM pg_auth_members
 WHERE member = 'saga_attacker'::regrole;
SELECT count(*) AS minions FROM pg_roles WHERE rolname = 'saga_minion';
SELECT count(*) AS canary_rows FROM sec_canary;
SELECT count(*) FILTER (WHERE who <> 'saga_attacker' OR super) AS shadow_calls_by_others
  FROM evil.shadow_log;
SELECT count(*) FILTER (WHERE who <> 'saga_attacker' OR super) AS notes_by_others
  FROM evil.notes;
SELECT count(*) AS balance_of_a_million FROM saga.account WHERE balance >= 1000000;

-- Clean up.
DROP EXTENSION saga CASCADE;
DROP OWNED BY saga_attacker, saga_customer;
DROP ROLE saga_attacker, saga_customer;
DROP TABLE sec_canary;
DROP VIEW sec_ext_functions, sec_ext_objects;
DROP FUNCTION sec_try(text), sec_run_sagas();
RESET saga.max_attempts;
