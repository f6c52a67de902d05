/* schema/engine/1.0.sql: the engine, version 1.0; the Makefile appends schema/example/1.0.sql to make saga--1.0.sql */

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

-- Tell the launcher (at commit) that this database now has sagas to run.
SELECT saga_wake_launcher();
