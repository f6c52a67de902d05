/* saga--1.0.sql: objects of the saga extension, version 1.0 */

\echo Use "CREATE EXTENSION saga" to load this file. \quit

/*
 * Layout
 * ------
 * The functions users call (saga_*) live in the extension's schema, normally
 * public, so they are on the default search_path.  Everything internal lives
 * in the schema "saga": the engine's tables (instance, subscription, event,
 * delivery) and the example order saga's services (account, product,
 * orders, payment, reservation) with their handlers.
 *
 * Nobody but the extension's owner may write the internal tables.  The C
 * functions that write them (saga_publish, saga_subscribe, saga_begin, ...)
 * switch to the tables' owner for those writes only, after checking what the
 * caller may do; the SQL functions that do so are SECURITY DEFINER with a
 * pinned search_path.
 */

CREATE SCHEMA saga;
COMMENT ON SCHEMA saga IS 'internal tables and handlers of the saga extension';
-- Handlers name the row type saga.event, so the schema must be usable.
GRANT USAGE ON SCHEMA saga TO PUBLIC;

/* Orders every row that saga_trace() shows, across tables and sessions. */
CREATE SEQUENCE saga.trace_seq;

------------------------------------------------------------------------------
-- The engine
------------------------------------------------------------------------------

CREATE TABLE saga.instance (
    id          bigserial PRIMARY KEY,
    saga_type   text NOT NULL,
    pattern     text NOT NULL DEFAULT 'choreography'
                CHECK (pattern IN ('choreography', 'orchestration')),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'completed', 'failed')),
    reason      text,
    owner       regrole NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    start_seq   bigint NOT NULL DEFAULT nextval('saga.trace_seq'),
    finish_seq  bigint,
    -- orchestration only: where the orchestrator is
    definition_version integer,
    data        jsonb,
    step        integer,
    phase       text CHECK (phase IN ('forward', 'compensating', 'stuck', 'done')),
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    -- ending early: by its deadline, or saga_cancel()
    deadline    timestamptz,
    aborted_at  timestamptz,
    CHECK ((status = 'pending') = (finished_at IS NULL)),
    CHECK ((pattern = 'orchestration') = (phase IS NOT NULL))
);
CREATE INDEX instance_runnable_idx ON saga.instance (id)
    WHERE status = 'pending' AND phase IN ('forward', 'compensating');
CREATE INDEX instance_deadline_idx ON saga.instance (deadline)
    WHERE status = 'pending' AND aborted_at IS NULL AND deadline IS NOT NULL;
COMMENT ON TABLE saga.instance IS 'one row per saga: its type, pattern, outcome and, orchestrated, its progress';

CREATE TABLE saga.definition (
    name       text NOT NULL,
    version    integer NOT NULL,
    steps      integer NOT NULL CHECK (steps > 0),
    owner      regrole NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
COMMENT ON TABLE saga.definition IS 'orchestrated sagas: one row per version of a definition';

CREATE TABLE saga.definition_step (
    definition   text NOT NULL,
    version      integer NOT NULL,
    step_no      integer NOT NULL,
    name         text NOT NULL,
    service      text NOT NULL,
    action       regprocedure NOT NULL,
    compensation regprocedure,
    request      text NOT NULL,
    compensation_request text,
    PRIMARY KEY (definition, version, step_no),
    UNIQUE (definition, version, name),
    FOREIGN KEY (definition, version) REFERENCES saga.definition
);
COMMENT ON TABLE saga.definition_step IS 'the ordered steps of each version of a definition';

CREATE TABLE saga.step_run (
    saga_id      bigint NOT NULL,
    step_no      integer NOT NULL,
    step         text NOT NULL,
    service      text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('action', 'compensation')),
    outcome      text NOT NULL CHECK (outcome IN ('ok', 'rejected', 'error')),
    request      text NOT NULL,
    detail       text,
    request_seq  bigint NOT NULL,
    response_seq bigint NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL
);
CREATE INDEX step_run_saga_id_idx ON saga.step_run (saga_id);
COMMENT ON TABLE saga.step_run IS 'every step an orchestrator ran to its end, with its outcome';

CREATE TABLE saga.subscription (
    id          serial PRIMARY KEY,
    consumer    text NOT NULL,
    event_type  text NOT NULL,
    handler     regprocedure NOT NULL,
    owner       regrole NOT NULL,
    -- event to publish when a delivery is dead-lettered
    on_failure  text,
    -- a forward step is cancelled when its saga is aborted; a compensation is not
    forward     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, event_type)
);
CREATE INDEX subscription_event_type_idx ON saga.subscription (event_type);
COMMENT ON TABLE saga.subscription IS 'which consumer handles which event type, with which function, as which role';

CREATE TABLE saga.event (
    id           bigserial PRIMARY KEY,
    event_type   text NOT NULL,
    saga_id      bigint,
    payload      jsonb NOT NULL,
    publisher    text NOT NULL,
    caused_by    bigint,
    published_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq          bigint NOT NULL DEFAULT nextval('saga.trace_seq')
);
CREATE INDEX event_saga_id_idx ON saga.event (saga_id);
COMMENT ON TABLE saga.event IS 'the transactional outbox: every event ever published';

CREATE TABLE saga.delivery (
    id              bigserial PRIMARY KEY,
    event_id        bigint NOT NULL,
    subscription_id integer NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'dead', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    seq             bigint,
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX delivery_pending_idx ON saga.delivery (id) WHERE status = 'pending';
COMMENT ON TABLE saga.delivery IS 'one row per (event, subscriber): the consumer''s progress on that event';

CREATE TABLE saga.paused_consumer (
    consumer   text PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE saga.paused_consumer IS 'consumers (and orchestrated services) whose work waits';

REVOKE ALL ON ALL TABLES IN SCHEMA saga FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA saga FROM PUBLIC;

------------------------------------------------------------------------------
-- Engine functions (C)
------------------------------------------------------------------------------

CREATE FUNCTION saga_publish(event_type text,
                             payload jsonb DEFAULT '{}',
                             saga_id bigint DEFAULT NULL,
                             publisher text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'saga_publish'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_publish(text, jsonb, bigint, text) IS
'publish an event to the outbox; inside a handler, saga_id and publisher default to the event being handled';

CREATE FUNCTION saga_subscribe(consumer text, event_type text, handler regprocedure,
                               on_failure text DEFAULT NULL, forward boolean DEFAULT true)
RETURNS integer
AS 'MODULE_PATHNAME', 'saga_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean) IS
'make consumer handle every later event of event_type with handler(saga.event), run as the calling role; on_failure: event published when a delivery is dead-lettered; forward = false for a compensation, which still runs after its saga is aborted';

CREATE FUNCTION saga_pause_consumer(consumer text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_pause_consumer'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_pause_consumer(text) IS
'hold a consumer''s deliveries (and an orchestrated service''s steps) until saga_resume_consumer(); false if already paused';

CREATE FUNCTION saga_resume_consumer(consumer text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_resume_consumer'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_resume_consumer(text) IS
'let a paused consumer''s work go on; false if it was not paused';

CREATE FUNCTION saga_retry_delivery(delivery_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_retry_delivery'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_retry_delivery(bigint) IS
'try a dead-lettered delivery again, from its first attempt; false if it is not dead';

CREATE FUNCTION saga_cancel(saga_id bigint, reason text DEFAULT 'cancelled')
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_cancel'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_cancel(bigint, text) IS
'abort a pending saga: it fails once compensated; false if it had already ended or was aborted';

CREATE FUNCTION saga_unsubscribe(consumer text, event_type text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_unsubscribe'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_unsubscribe(text, text) IS
'remove a subscription and its pending deliveries';

CREATE FUNCTION saga_begin(saga_type text, deadline interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'saga_begin'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_begin(text, interval) IS
'start a choreographed saga instance owned by the calling role; returns its id; deadline defaults to saga.deadline';

CREATE FUNCTION saga_complete(saga_id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'saga_complete'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_complete(bigint) IS
'mark a pending saga completed and wake its waiters at commit';

CREATE FUNCTION saga_fail(saga_id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'saga_fail'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_fail(bigint, text) IS
'mark a pending saga failed with a reason (after its compensation) and wake its waiters at commit';

CREATE FUNCTION saga_status(saga_id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'saga_status'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_status(bigint) IS
'''pending'', ''completed'' or ''failed''';

CREATE FUNCTION saga_await(saga_id bigint, timeout interval DEFAULT '10 seconds')
RETURNS text
AS 'MODULE_PATHNAME', 'saga_await'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_await(bigint, interval) IS
'sleep until the saga is completed or failed, or the timeout passes; returns its status';

CREATE FUNCTION saga_run_pending()
RETURNS bigint
AS 'MODULE_PATHNAME', 'saga_run_pending'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_run_pending() IS
'deliver every pending event in this session until none is left; returns how many deliveries were handled';

CREATE FUNCTION saga_wake_launcher()
RETURNS void
AS 'MODULE_PATHNAME', 'saga_wake_launcher'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_wake_launcher() IS
'ask the launcher, at commit, to (re)start the workers of this database';

-- Publishing, subscribing and running deliveries by hand are privileges the
-- DBA grants; reading a saga's status is not.
/* Orchestration */

CREATE TYPE saga.step AS (
    name                 text,
    action               regprocedure,
    compensation         regprocedure,
    service              text,
    request              text,
    compensation_request text
);
COMMENT ON TYPE saga.step IS 'one step of an orchestrated saga; make one with saga_step()';

CREATE FUNCTION saga_step(name text,
                          action regprocedure,
                          compensation regprocedure DEFAULT NULL,
                          service text DEFAULT NULL,
                          request text DEFAULT NULL,
                          compensation_request text DEFAULT NULL)
RETURNS saga.step
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ROW(name, action, compensation, service, request, compensation_request)::saga.step
$$;
COMMENT ON FUNCTION saga_step(text, regprocedure, regprocedure, text, text, text) IS
'a step: its action and optional compensation (functions jsonb -> jsonb), and how the trace names it';

CREATE FUNCTION saga_define(name text, VARIADIC steps saga.step[])
RETURNS integer
AS 'MODULE_PATHNAME', 'saga_define'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_define(text, saga.step[]) IS
'define (a new version of) an orchestrated saga; returns the version number';

CREATE FUNCTION saga_start(name text, data jsonb DEFAULT '{}', deadline interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'saga_start'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_start(text, jsonb, interval) IS
'start an instance of the latest version of an orchestrated saga; returns its id; deadline defaults to saga.deadline';

CREATE FUNCTION saga_retry(saga_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_retry'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_retry(bigint) IS
'resume the compensation of a saga marked stuck; false if it is not stuck';

CREATE FUNCTION saga_reject(reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SG400',
                          MESSAGE = coalesce(reason, 'rejected');
END
$$;
COMMENT ON FUNCTION saga_reject(text) IS
'called by a step to say no (a business failure, SQLSTATE SG400): the saga compensates at once';

REVOKE ALL ON FUNCTION saga_define(text, saga.step[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_start(text, jsonb, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_retry(bigint) FROM PUBLIC;

REVOKE ALL ON FUNCTION saga_publish(text, jsonb, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_pause_consumer(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_resume_consumer(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_retry_delivery(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_cancel(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_unsubscribe(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_begin(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_complete(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_fail(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_run_pending() FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_wake_launcher() FROM PUBLIC;

CREATE VIEW saga_subscriptions AS
    SELECT s.id, s.consumer, s.event_type, s.handler, s.owner, s.on_failure, s.forward,
           p.consumer IS NOT NULL AS paused, s.created_at
      FROM saga.subscription s
      LEFT JOIN saga.paused_consumer p ON p.consumer = s.consumer;
COMMENT ON VIEW saga_subscriptions IS 'every subscription: consumer, event type, handler, the role it runs as, whether paused';

CREATE INDEX delivery_dead_idx ON saga.delivery (id) WHERE status = 'dead';

CREATE VIEW saga_dead_letters AS
    SELECT d.id AS delivery_id, e.saga_id, s.consumer, e.event_type, d.attempts,
           d.last_error, e.id AS event_id, e.payload, e.published_at
      FROM saga.delivery d
      JOIN saga.event e ON e.id = d.event_id
      LEFT JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE d.status = 'dead';
COMMENT ON VIEW saga_dead_letters IS
'deliveries that failed saga.max_attempts times, with their last error; retry one with saga_retry_delivery()';

CREATE VIEW saga_stuck AS
    SELECT 'compensation failing'::text AS problem, i.id AS saga_id, NULL::bigint AS delivery_id,
           i.saga_type || ' step ' || i.step AS work, i.attempts, i.last_error,
           'saga_retry(' || i.id || ')' AS remedy
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.phase = 'stuck'
    UNION ALL
    SELECT 'step retrying', i.id, NULL, i.saga_type || ' step ' || i.step, i.attempts, i.last_error,
           'wait (next attempt at ' || i.next_attempt_at || '), or saga_cancel(' || i.id || ')'
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating') AND i.attempts > 0
    UNION ALL
    SELECT CASE WHEN p.consumer IS NOT NULL THEN 'consumer paused' ELSE 'delivery retrying' END,
           e.saga_id, d.id, s.consumer || ' <- ' || e.event_type, d.attempts, d.last_error,
           CASE WHEN p.consumer IS NOT NULL THEN 'saga_resume_consumer(' || quote_literal(s.consumer) || ')'
                ELSE 'wait (next attempt at ' || d.next_attempt_at || ')' END
      FROM saga.delivery d
      JOIN saga.event e ON e.id = d.event_id
      JOIN saga.subscription s ON s.id = d.subscription_id
      LEFT JOIN saga.paused_consumer p ON p.consumer = s.consumer
     WHERE d.status = 'pending' AND (d.attempts > 0 OR p.consumer IS NOT NULL)
    UNION ALL
    SELECT 'service paused', i.id, NULL, i.saga_type || ' step ' || i.step || ' (' || ds.service || ')',
           i.attempts, i.last_error, 'saga_resume_consumer(' || quote_literal(ds.service) || ')'
      FROM saga.instance i
      JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version AND ds.step_no = i.step
      JOIN saga.paused_consumer p ON p.consumer = ds.service
     WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating')
    UNION ALL
    SELECT 'past its deadline', i.id, NULL, i.saga_type, i.attempts, i.last_error,
           CASE WHEN i.aborted_at IS NULL THEN 'wait for a worker'
                ELSE 'wait for its compensation' END
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.deadline < now()
    UNION ALL
    SELECT 'dead letter', e.saga_id, d.id, s.consumer || ' <- ' || e.event_type, d.attempts, d.last_error,
           'saga_retry_delivery(' || d.id || ')'
      FROM saga.delivery d
      JOIN saga.event e ON e.id = d.event_id
      LEFT JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE d.status = 'dead';
COMMENT ON VIEW saga_stuck IS
'work that is not moving on by itself, why, and what to do about it';

CREATE VIEW saga_instances AS
    SELECT i.id, i.saga_type, i.pattern, i.status, i.phase, i.step,
           i.reason, i.attempts, i.last_error, i.data, i.deadline, i.aborted_at,
           i.started_at, i.finished_at, i.finished_at - i.started_at AS duration
      FROM saga.instance i;
COMMENT ON VIEW saga_instances IS
'every saga; an orchestrated one whose phase is ''stuck'' needs a person (see last_error, then saga_retry)';

CREATE FUNCTION saga_trace(saga_id bigint)
RETURNS TABLE (seq integer, sender text, receiver text, message text, at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (row_number() OVER (ORDER BY t.s))::integer, t.sender, t.receiver, t.message, t.at
      FROM (SELECT i.start_seq AS s,
                   CASE WHEN i.saga_type = 'order' THEN 'customer' ELSE 'client' END AS sender,
                   i.saga_type AS receiver,
                   CASE WHEN i.saga_type = 'order' THEN 'POST /orders' ELSE 'start' END AS message,
                   i.started_at AS at
              FROM saga.instance i
             WHERE i.id = saga_trace.saga_id
            UNION ALL
            SELECT e.seq, e.publisher, 'broker', e.event_type, e.published_at
              FROM saga.event e
             WHERE e.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT d.seq, 'broker', coalesce(s.consumer, '(unsubscribed)'), e.event_type, d.delivered_at
              FROM saga.event e
              JOIN saga.delivery d ON d.event_id = e.id
              LEFT JOIN saga.subscription s ON s.id = d.subscription_id
             WHERE e.saga_id = saga_trace.saga_id AND d.status = 'done'
            UNION ALL
            SELECT r.request_seq, i.saga_type, r.service, r.request, r.started_at
              FROM saga.step_run r
              JOIN saga.instance i ON i.id = r.saga_id
             WHERE r.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT r.response_seq, r.service, i.saga_type,
                   CASE r.outcome WHEN 'ok' THEN '200 OK'
                                  WHEN 'rejected' THEN '400 Bad Request'
                                  ELSE '500 Internal Server Error' END,
                   r.finished_at
              FROM saga.step_run r
              JOIN saga.instance i ON i.id = r.saga_id
             WHERE r.saga_id = saga_trace.saga_id
            UNION ALL
            SELECT i.finish_seq, i.saga_type,
                   CASE WHEN i.saga_type = 'order' THEN 'customer' ELSE 'client' END,
                   CASE WHEN i.saga_type <> 'order' THEN i.status
                        WHEN i.status = 'completed' THEN '201 Created'
                        ELSE '500 Internal Server Error' END,
                   i.finished_at
              FROM saga.instance i
             WHERE i.id = saga_trace.saga_id AND i.finish_seq IS NOT NULL) t
     ORDER BY t.s
$$;
COMMENT ON FUNCTION saga_trace(bigint) IS
'the messages of one saga in the order they happened, as arrows of a sequence diagram';

------------------------------------------------------------------------------
-- The example: an e-commerce order saga (order -> payment -> inventory)
------------------------------------------------------------------------------

CREATE TABLE saga.account (
    customer text PRIMARY KEY,
    balance  numeric NOT NULL CHECK (balance >= 0 AND balance < 'Infinity')
);
COMMENT ON TABLE saga.account IS 'payment service: customer balances';

CREATE TABLE saga.product (
    product text PRIMARY KEY,
    stock   integer NOT NULL CHECK (stock >= 0)
);
COMMENT ON TABLE saga.product IS 'inventory service: stock on hand';

CREATE TABLE saga.orders (
    id        bigint PRIMARY KEY,
    customer  text NOT NULL,
    product   text NOT NULL,
    quantity  integer NOT NULL CHECK (quantity > 0),
    amount    numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    placed_by regrole NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    mode      text NOT NULL,
    idempotency_key text UNIQUE
);
COMMENT ON TABLE saga.orders IS 'order service: orders; the order id is its saga''s id';

CREATE TABLE saga.payment (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL UNIQUE,
    customer    text NOT NULL,
    amount      numeric NOT NULL CHECK (amount > 0),
    status      text NOT NULL DEFAULT 'charged' CHECK (status IN ('charged', 'refunded')),
    charged_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    refunded_at timestamptz,
    CHECK ((status = 'refunded') = (refunded_at IS NOT NULL))
);
COMMENT ON TABLE saga.payment IS 'payment service: at most one charge per order, refunded at most once';

CREATE TABLE saga.reservation (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL UNIQUE,
    product     text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    reserved_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE saga.reservation IS 'inventory service: stock reserved for an order';

REVOKE ALL ON ALL TABLES IN SCHEMA saga FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA saga FROM PUBLIC;

/* Input checks shared by the order API.  They raise; they never write. */

CREATE FUNCTION saga.check_name(value text, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF btrim(value) = '' THEN
        RAISE EXCEPTION '% must not be empty', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(value) > 200 THEN
        RAISE EXCEPTION '% is too long (% characters)', what, length(value)
            USING ERRCODE = 'string_data_right_truncation',
                  HINT = 'Names are limited to 200 characters.';
    END IF;
END
$$;

CREATE FUNCTION saga.check_amount(value numeric, what text, zero_ok boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF value = 'NaN'::numeric OR value IN ('Infinity'::numeric, '-Infinity'::numeric) THEN
        RAISE EXCEPTION '% must be a finite number, not %', what, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF value < 0 OR (value = 0 AND NOT zero_ok) THEN
        RAISE EXCEPTION '% must be %, not %', what,
                        CASE WHEN zero_ok THEN 'zero or more' ELSE 'greater than zero' END, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scale(value) > 2 THEN
        RAISE EXCEPTION '% must have at most 2 decimal places, not %', what, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF value >= 1e15 THEN
        RAISE EXCEPTION '% is out of range: %', what, value
            USING ERRCODE = 'numeric_value_out_of_range',
                  HINT = 'Amounts must be less than 10^15.';
    END IF;
END
$$;

CREATE FUNCTION saga.check_quantity(value integer, what text, zero_ok boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF value < 0 OR (value = 0 AND NOT zero_ok) THEN
        RAISE EXCEPTION '% must be %, not %', what,
                        CASE WHEN zero_ok THEN 'zero or more' ELSE 'greater than zero' END, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

/* The services' data, set up by the DBA (or a test). */

CREATE FUNCTION saga_set_balance(customer text, balance numeric)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM saga.check_name(customer, 'customer');
    PERFORM saga.check_amount(balance, 'balance', true);
    INSERT INTO saga.account AS a (customer, balance)
    VALUES (saga_set_balance.customer, saga_set_balance.balance)
    ON CONFLICT ON CONSTRAINT account_pkey DO UPDATE SET balance = excluded.balance;
END
$$;
COMMENT ON FUNCTION saga_set_balance(text, numeric) IS 'create or update a customer''s account';

CREATE FUNCTION saga_set_stock(product text, quantity integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM saga.check_name(product, 'product');
    PERFORM saga.check_quantity(quantity, 'quantity', true);
    INSERT INTO saga.product AS p (product, stock)
    VALUES (saga_set_stock.product, saga_set_stock.quantity)
    ON CONFLICT ON CONSTRAINT product_pkey DO UPDATE SET stock = excluded.stock;
END
$$;
COMMENT ON FUNCTION saga_set_stock(text, integer) IS 'create or update a product''s stock';

CREATE FUNCTION saga_balance(customer text)
RETURNS numeric
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.balance FROM saga.account a WHERE a.customer = saga_balance.customer
$$;
COMMENT ON FUNCTION saga_balance(text) IS 'a customer''s balance, or NULL for an unknown customer';

CREATE FUNCTION saga_stock(product text)
RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.stock FROM saga.product p WHERE p.product = saga_stock.product
$$;
COMMENT ON FUNCTION saga_stock(text) IS 'a product''s stock, or NULL for an unknown product';

REVOKE ALL ON FUNCTION saga_set_balance(text, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_set_stock(text, integer) FROM PUBLIC;

/* The order service: starts the saga and answers the customer. */

CREATE FUNCTION saga_place_order(customer text, product text, quantity integer,
                                 amount numeric, mode text DEFAULT 'choreography',
                                 idempotency_key text DEFAULT NULL,
                                 deadline interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    order_id bigint;
    request  jsonb;
    existing saga.orders;
BEGIN
    PERFORM saga.check_name(customer, 'customer');
    PERFORM saga.check_name(product, 'product');
    PERFORM saga.check_quantity(quantity, 'quantity', false);
    PERFORM saga.check_amount(amount, 'amount', false);
    IF mode IS NULL OR mode NOT IN ('choreography', 'orchestration') THEN
        RAISE EXCEPTION 'unknown mode %', coalesce(quote_literal(mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The mode is ''choreography'' or ''orchestration''.';
    END IF;
    IF deadline IS NOT NULL AND deadline <= interval '0' THEN
        RAISE EXCEPTION 'deadline must be a positive interval, not %', deadline
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The same key placed twice gives the same order, once: concurrent
    -- calls with one key queue on a lock, then find the first one's order.
    IF idempotency_key IS NOT NULL THEN
        PERFORM saga.check_name(idempotency_key, 'idempotency_key');
        PERFORM pg_advisory_xact_lock(hashtext('saga.idempotency_key'),
                                      hashtext(idempotency_key));
        SELECT * INTO existing FROM saga.orders o
         WHERE o.idempotency_key = saga_place_order.idempotency_key;
        IF FOUND THEN
            IF (existing.customer, existing.product, existing.quantity, existing.amount, existing.mode)
               IS DISTINCT FROM (customer, product, quantity, amount, mode) THEN
                RAISE EXCEPTION 'idempotency key % was used for another order', quote_literal(idempotency_key)
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('Order %s: %s x %s for %s by %s (%s).', existing.id,
                                          existing.quantity, existing.product, existing.amount,
                                          existing.customer, existing.mode);
            END IF;
            RETURN existing.id;
        END IF;
    END IF;

    request := jsonb_build_object('customer', saga_place_order.customer,
                                  'product', saga_place_order.product,
                                  'quantity', saga_place_order.quantity,
                                  'amount', saga_place_order.amount);
    IF mode = 'orchestration' THEN
        order_id := @extschema@.saga_start('order', request, deadline);
    ELSE
        order_id := @extschema@.saga_begin('order', deadline);
    END IF;
    INSERT INTO saga.orders (id, customer, product, quantity, amount, placed_by, mode, idempotency_key)
    VALUES (order_id, saga_place_order.customer, saga_place_order.product,
            saga_place_order.quantity, saga_place_order.amount, session_user::regrole,
            saga_place_order.mode, saga_place_order.idempotency_key);
    IF mode = 'choreography' THEN
        PERFORM @extschema@.saga_publish('OrderCreated',
                                         request || jsonb_build_object('order_id', order_id),
                                         order_id, 'order');
    END IF;
    RETURN order_id;
END
$$;
COMMENT ON FUNCTION saga_place_order(text, text, integer, numeric, text, text, interval) IS
'place an order, choreographed or orchestrated; returns its id at once while the saga runs in the background; the same idempotency key gives the same order';

CREATE FUNCTION saga_order_status(order_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result text;
BEGIN
    SELECT i.status INTO result
      FROM saga.instance i
     WHERE i.id = saga_order_status.order_id AND i.saga_type = 'order';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order % does not exist', coalesce(order_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION saga_order_status(bigint) IS '''pending'', ''completed'' or ''failed''';

CREATE VIEW saga_orders AS
    SELECT o.id AS order_id, o.customer, o.product, o.quantity, o.amount,
           i.pattern, i.status, i.reason, o.placed_at, i.finished_at
      FROM saga.orders o
      JOIN saga.instance i ON i.id = o.id;
COMMENT ON VIEW saga_orders IS 'every order with its status and, for a failed one, the reason';
GRANT SELECT ON saga_orders TO PUBLIC;

/*
 * The services' business rules.  Each says no with saga_reject() (SQLSTATE
 * SG400), which undoes whatever it had written; both patterns use them.
 */

-- payment service: charge an order; returns the payment's id
CREATE FUNCTION saga.charge_payment(order_id bigint, customer text, amount numeric)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    balance    numeric;
    payment_id bigint;
BEGIN
    SELECT a.balance INTO balance
      FROM saga.account a WHERE a.customer = charge_payment.customer
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM @extschema@.saga_reject(format('unknown customer %s', customer));
    END IF;
    IF balance < amount THEN
        PERFORM @extschema@.saga_reject(format('insufficient balance: %s < %s', balance, amount));
    END IF;
    UPDATE saga.account a SET balance = a.balance - amount
     WHERE a.customer = charge_payment.customer;
    INSERT INTO saga.payment (order_id, customer, amount)
    VALUES (charge_payment.order_id, charge_payment.customer, charge_payment.amount)
    RETURNING id INTO payment_id;
    RETURN payment_id;
END
$$;

-- payment service's compensation: refund an order's charge; returns the
-- amount, or NULL if there is no charge to refund (never charged, or
-- refunded already: a refund happens at most once)
CREATE FUNCTION saga.refund_payment(order_id bigint)
RETURNS numeric
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pay saga.payment;
BEGIN
    UPDATE saga.payment AS x SET status = 'refunded', refunded_at = clock_timestamp()
     WHERE x.order_id = refund_payment.order_id AND x.status = 'charged'
    RETURNING * INTO pay;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE saga.account a SET balance = a.balance + pay.amount WHERE a.customer = pay.customer;
    RETURN pay.amount;
END
$$;

-- inventory service's compensation: give back an order's reserved stock;
-- returns the quantity, or NULL if nothing is reserved
CREATE FUNCTION saga.release_stock(order_id bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r saga.reservation;
BEGIN
    DELETE FROM saga.reservation x WHERE x.order_id = release_stock.order_id
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE saga.product p SET stock = p.stock + r.quantity WHERE p.product = r.product;
    RETURN r.quantity;
END
$$;

-- inventory service: reserve stock for an order; returns the reservation's id
CREATE FUNCTION saga.reserve_stock(order_id bigint, product text, quantity integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stock          integer;
    reservation_id bigint;
BEGIN
    SELECT p.stock INTO stock
      FROM saga.product p WHERE p.product = reserve_stock.product
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM @extschema@.saga_reject(format('unknown product %s', product));
    END IF;
    IF stock < quantity THEN
        PERFORM @extschema@.saga_reject(format('insufficient stock: %s < %s', stock, quantity));
    END IF;
    UPDATE saga.product p SET stock = p.stock - quantity WHERE p.product = reserve_stock.product;
    INSERT INTO saga.reservation (order_id, product, quantity)
    VALUES (reserve_stock.order_id, reserve_stock.product, reserve_stock.quantity)
    RETURNING id INTO reservation_id;
    RETURN reservation_id;
END
$$;

/*
 * An order's events are trusted only as far as their saga id: publishing
 * into a saga needs its owner's rights (saga_publish checks), but anyone
 * allowed to publish can publish an event without one.  So the services
 * act on e.saga_id, the order's id, and refuse an event that has none or
 * names no order.
 */
CREATE FUNCTION saga.check_order_event(e saga.event)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF e.saga_id IS NULL OR NOT EXISTS (SELECT FROM saga.orders o WHERE o.id = e.saga_id) THEN
        RAISE EXCEPTION '% event % is not part of any order', e.event_type, e.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Order events are published by saga_place_order() and the order services.';
    END IF;
END
$$;

/*
 * Choreography: each service reacts to an event and publishes the next.
 * The engine runs a handler, the delivery's bookkeeping and what it
 * publishes in one transaction.  Events carry what the next service needs,
 * so services never read each other's tables.
 */

-- payment service: OrderCreated -> PaymentProcessed | PaymentFailed
CREATE FUNCTION saga.payment_on_order_created(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p          jsonb := e.payload;
    payment_id bigint;
BEGIN
    PERFORM saga.check_order_event(e);
    BEGIN
        payment_id := saga.charge_payment(e.saga_id, p->>'customer', (p->>'amount')::numeric);
    EXCEPTION WHEN SQLSTATE 'SG400' THEN
        PERFORM @extschema@.saga_publish('PaymentFailed',
                                         p || jsonb_build_object('reason', SQLERRM), NULL, NULL);
        RETURN;
    END;
    PERFORM @extschema@.saga_publish('PaymentProcessed',
                                     p || jsonb_build_object('payment_id', payment_id), NULL, NULL);
END
$$;

-- inventory service: PaymentProcessed -> InventoryReserved | InventoryReservationFailed
CREATE FUNCTION saga.inventory_on_payment_processed(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jsonb := e.payload;
BEGIN
    PERFORM saga.check_order_event(e);
    BEGIN
        PERFORM saga.reserve_stock(e.saga_id, p->>'product', (p->>'quantity')::integer);
    EXCEPTION WHEN SQLSTATE 'SG400' THEN
        PERFORM @extschema@.saga_publish('InventoryReservationFailed',
                                         p || jsonb_build_object('reason', SQLERRM), NULL, NULL);
        RETURN;
    END;
    PERFORM @extschema@.saga_publish('InventoryReserved', p, NULL, NULL);
END
$$;

-- payment service's compensation: InventoryReservationFailed -> PaymentRefunded
CREATE FUNCTION saga.payment_on_inventory_reservation_failed(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refunded numeric;
BEGIN
    PERFORM saga.check_order_event(e);
    refunded := saga.refund_payment(e.saga_id);
    IF refunded IS NULL THEN
        RAISE EXCEPTION 'no charged payment for order %', e.saga_id
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM @extschema@.saga_publish('PaymentRefunded',
                                     e.payload || jsonb_build_object('refund_amount', refunded),
                                     NULL, NULL);
END
$$;

-- When an order saga is aborted (its deadline passed, or saga_cancel), each
-- service undoes what it did; the forward deliveries still waiting are
-- cancelled by the engine.  The payment service answers for the order:
-- PaymentRefunded if it had charged, PaymentFailed if it had not.
CREATE FUNCTION saga.payment_on_saga_aborted(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    order_id bigint := e.saga_id;
    refunded numeric;
BEGIN
    IF e.payload->>'saga_type' <> 'order' THEN
        RETURN;
    END IF;
    PERFORM saga.check_order_event(e);
    refunded := saga.refund_payment(order_id);
    IF refunded IS NOT NULL THEN
        PERFORM @extschema@.saga_publish('PaymentRefunded',
            e.payload || jsonb_build_object('order_id', order_id, 'refund_amount', refunded),
            NULL, NULL);
    ELSIF NOT EXISTS (SELECT FROM saga.payment p WHERE p.order_id = payment_on_saga_aborted.order_id) THEN
        PERFORM @extschema@.saga_publish('PaymentFailed',
            e.payload || jsonb_build_object('order_id', order_id), NULL, NULL);
    END IF;
END
$$;

CREATE FUNCTION saga.inventory_on_saga_aborted(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF e.payload->>'saga_type' = 'order' THEN
        PERFORM saga.check_order_event(e);
        PERFORM saga.release_stock(e.saga_id);
    END IF;
END
$$;

-- order service: the outcome
CREATE FUNCTION saga.order_on_inventory_reserved(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM @extschema@.saga_complete(e.saga_id);
END
$$;

CREATE FUNCTION saga.order_on_payment_failed(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Nothing was charged: nothing to compensate.
    IF @extschema@.saga_status(e.saga_id) = 'pending' THEN
        PERFORM @extschema@.saga_fail(e.saga_id, e.payload->>'reason');
    END IF;
END
$$;

CREATE FUNCTION saga.order_on_inventory_reservation_failed(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The customer was charged: the order fails only once the payment
    -- service has refunded it (PaymentRefunded), so there is nothing to do
    -- here but take note.
    NULL;
END
$$;

CREATE FUNCTION saga.order_on_payment_refunded(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF @extschema@.saga_status(e.saga_id) = 'pending' THEN
        PERFORM @extschema@.saga_fail(e.saga_id, e.payload->>'reason');
    END IF;
END
$$;

/*
 * Orchestration: the order service tells each service what to do, through
 * steps that take the saga's data and return what to add to it.
 */

CREATE FUNCTION saga.payment_step_charge(data jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jsonb_build_object('payment_id',
        saga.charge_payment((data->>'saga_id')::bigint, data->>'customer',
                            (data->>'amount')::numeric));
END
$$;

CREATE FUNCTION saga.payment_step_refund(data jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- NULL if there is nothing (left) to refund: a refund happens once
    RETURN jsonb_build_object('refund_amount',
        saga.refund_payment((data->>'saga_id')::bigint));
END
$$;

CREATE FUNCTION saga.inventory_step_reserve(data jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jsonb_build_object('reservation_id',
        saga.reserve_stock((data->>'saga_id')::bigint, data->>'product',
                           (data->>'quantity')::integer));
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA saga FROM PUBLIC;

-- Wire the services together through the public API.  Order matters for
-- InventoryReservationFailed: the order service hears it first.
-- A payment or reservation that keeps failing for a technical reason is
-- turned into the business failure the other services already handle.
SELECT saga_subscribe('payment',   'OrderCreated',               'saga.payment_on_order_created(saga.event)',
                      on_failure => 'PaymentFailed');
SELECT saga_subscribe('inventory', 'PaymentProcessed',           'saga.inventory_on_payment_processed(saga.event)',
                      on_failure => 'InventoryReservationFailed');
SELECT saga_subscribe('order',     'PaymentFailed',              'saga.order_on_payment_failed(saga.event)');
SELECT saga_subscribe('order',     'InventoryReserved',          'saga.order_on_inventory_reserved(saga.event)');
SELECT saga_subscribe('order',     'InventoryReservationFailed', 'saga.order_on_inventory_reservation_failed(saga.event)');
SELECT saga_subscribe('payment',   'InventoryReservationFailed', 'saga.payment_on_inventory_reservation_failed(saga.event)',
                      forward => false);
SELECT saga_subscribe('order',     'PaymentRefunded',            'saga.order_on_payment_refunded(saga.event)',
                      forward => false);
SELECT saga_subscribe('payment',   'SagaAborted',                'saga.payment_on_saga_aborted(saga.event)',
                      forward => false);
SELECT saga_subscribe('inventory', 'SagaAborted',                'saga.inventory_on_saga_aborted(saga.event)',
                      forward => false);

SELECT saga_define('order',
    saga_step('payment', 'saga.payment_step_charge(jsonb)', 'saga.payment_step_refund(jsonb)',
              service => 'payment', request => 'POST /payments',
              compensation_request => 'DELETE /payments/{payment_id}'),
    saga_step('inventory', 'saga.inventory_step_reserve(jsonb)',
              service => 'inventory', request => 'POST /inventory/reserve'));

-- Tell the launcher (at commit) that this database now has sagas to run.
SELECT saga_wake_launcher();
