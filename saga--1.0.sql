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
    CHECK ((status = 'pending') = (finished_at IS NULL))
);
COMMENT ON TABLE saga.instance IS 'one row per saga: its type, pattern and outcome';

CREATE TABLE saga.subscription (
    id          serial PRIMARY KEY,
    consumer    text NOT NULL,
    event_type  text NOT NULL,
    handler     regprocedure NOT NULL,
    owner       regrole NOT NULL,
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
                    CHECK (status IN ('pending', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    seq             bigint,
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX delivery_pending_idx ON saga.delivery (id) WHERE status = 'pending';
COMMENT ON TABLE saga.delivery IS 'one row per (event, subscriber): the consumer''s progress on that event';

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

CREATE FUNCTION saga_subscribe(consumer text, event_type text, handler regprocedure)
RETURNS integer
AS 'MODULE_PATHNAME', 'saga_subscribe'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_subscribe(text, text, regprocedure) IS
'make consumer handle every future event of event_type with handler(saga.event), run as the calling role';

CREATE FUNCTION saga_unsubscribe(consumer text, event_type text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'saga_unsubscribe'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_unsubscribe(text, text) IS
'remove a subscription and its pending deliveries';

CREATE FUNCTION saga_begin(saga_type text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'saga_begin'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION saga_begin(text) IS
'start a choreographed saga instance owned by the calling role; returns its id';

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
REVOKE ALL ON FUNCTION saga_publish(text, jsonb, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_subscribe(text, text, regprocedure) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_unsubscribe(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_begin(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_complete(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_fail(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_run_pending() FROM PUBLIC;
REVOKE ALL ON FUNCTION saga_wake_launcher() FROM PUBLIC;

CREATE VIEW saga_subscriptions AS
    SELECT s.id, s.consumer, s.event_type, s.handler, s.owner, s.created_at
      FROM saga.subscription s;
COMMENT ON VIEW saga_subscriptions IS 'every subscription: consumer, event type, handler and the role it runs as';

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
    placed_at timestamptz NOT NULL DEFAULT clock_timestamp()
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

CREATE FUNCTION saga_place_order(customer text, product text, quantity integer, amount numeric)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    order_id bigint;
BEGIN
    PERFORM saga.check_name(customer, 'customer');
    PERFORM saga.check_name(product, 'product');
    PERFORM saga.check_quantity(quantity, 'quantity', false);
    PERFORM saga.check_amount(amount, 'amount', false);

    order_id := @extschema@.saga_begin('order');
    INSERT INTO saga.orders (id, customer, product, quantity, amount, placed_by)
    VALUES (order_id, saga_place_order.customer, saga_place_order.product,
            saga_place_order.quantity, saga_place_order.amount, session_user::regrole);
    PERFORM @extschema@.saga_publish('OrderCreated',
                                     jsonb_build_object('order_id', order_id,
                                                        'customer', saga_place_order.customer,
                                                        'product', saga_place_order.product,
                                                        'quantity', saga_place_order.quantity,
                                                        'amount', saga_place_order.amount),
                                     order_id, 'order');
    RETURN order_id;
END
$$;
COMMENT ON FUNCTION saga_place_order(text, text, integer, numeric) IS
'place an order; returns its id at once while the saga runs in the background';

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
           i.status, i.reason, o.placed_at, i.finished_at
      FROM saga.orders o
      JOIN saga.instance i ON i.id = o.id;
COMMENT ON VIEW saga_orders IS 'every order with its status and, for a failed one, the reason';
GRANT SELECT ON saga_orders TO PUBLIC;

/*
 * The services' handlers.  Each consumes one event and may publish others;
 * the engine runs it, the delivery's bookkeeping and what it publishes in
 * one transaction.  Events carry what the next service needs, so services
 * never read each other's tables.
 */

-- payment service: OrderCreated -> charge -> PaymentProcessed | PaymentFailed
CREATE FUNCTION saga.payment_on_order_created(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p          jsonb := e.payload;
    amount     numeric := (p->>'amount')::numeric;
    balance    numeric;
    payment_id bigint;
BEGIN
    SELECT a.balance INTO balance
      FROM saga.account a WHERE a.customer = p->>'customer'
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM @extschema@.saga_publish('PaymentFailed',
            p || jsonb_build_object('reason', format('unknown customer %s', p->>'customer')));
        RETURN;
    END IF;
    IF balance < amount THEN
        PERFORM @extschema@.saga_publish('PaymentFailed',
            p || jsonb_build_object('reason', format('insufficient balance: %s < %s', balance, amount)));
        RETURN;
    END IF;
    UPDATE saga.account a SET balance = a.balance - amount WHERE a.customer = p->>'customer';
    INSERT INTO saga.payment (order_id, customer, amount)
    VALUES ((p->>'order_id')::bigint, p->>'customer', amount)
    RETURNING id INTO payment_id;
    PERFORM @extschema@.saga_publish('PaymentProcessed',
        p || jsonb_build_object('payment_id', payment_id));
END
$$;

-- inventory service: PaymentProcessed -> reserve -> InventoryReserved | InventoryReservationFailed
CREATE FUNCTION saga.inventory_on_payment_processed(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p        jsonb := e.payload;
    quantity integer := (p->>'quantity')::integer;
    stock    integer;
BEGIN
    SELECT pr.stock INTO stock
      FROM saga.product pr WHERE pr.product = p->>'product'
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM @extschema@.saga_publish('InventoryReservationFailed',
            p || jsonb_build_object('reason', format('unknown product %s', p->>'product')));
        RETURN;
    END IF;
    IF stock < quantity THEN
        PERFORM @extschema@.saga_publish('InventoryReservationFailed',
            p || jsonb_build_object('reason', format('insufficient stock: %s < %s', stock, quantity)));
        RETURN;
    END IF;
    UPDATE saga.product pr SET stock = pr.stock - quantity WHERE pr.product = p->>'product';
    INSERT INTO saga.reservation (order_id, product, quantity)
    VALUES ((p->>'order_id')::bigint, p->>'product', quantity);
    PERFORM @extschema@.saga_publish('InventoryReserved', p);
END
$$;

-- payment service's compensation: InventoryReservationFailed -> refund -> PaymentRefunded
CREATE FUNCTION saga.payment_on_inventory_reservation_failed(e saga.event)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p   jsonb := e.payload;
    pay saga.payment;
BEGIN
    UPDATE saga.payment AS x SET status = 'refunded', refunded_at = clock_timestamp()
     WHERE x.order_id = (p->>'order_id')::bigint AND x.status = 'charged'
    RETURNING * INTO pay;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no charged payment for order %', p->>'order_id'
            USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE saga.account a SET balance = a.balance + pay.amount WHERE a.customer = pay.customer;
    PERFORM @extschema@.saga_publish('PaymentRefunded',
        p || jsonb_build_object('refund_amount', pay.amount));
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
    PERFORM @extschema@.saga_fail(e.saga_id, e.payload->>'reason');
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
    PERFORM @extschema@.saga_fail(e.saga_id, e.payload->>'reason');
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA saga FROM PUBLIC;

-- Wire the services together through the public API.  Order matters for
-- InventoryReservationFailed: the order service hears it first.
SELECT saga_subscribe('payment',   'OrderCreated',               'saga.payment_on_order_created(saga.event)');
SELECT saga_subscribe('inventory', 'PaymentProcessed',           'saga.inventory_on_payment_processed(saga.event)');
SELECT saga_subscribe('order',     'PaymentFailed',              'saga.order_on_payment_failed(saga.event)');
SELECT saga_subscribe('order',     'InventoryReserved',          'saga.order_on_inventory_reserved(saga.event)');
SELECT saga_subscribe('order',     'InventoryReservationFailed', 'saga.order_on_inventory_reservation_failed(saga.event)');
SELECT saga_subscribe('payment',   'InventoryReservationFailed', 'saga.payment_on_inventory_reservation_failed(saga.event)');
SELECT saga_subscribe('order',     'PaymentRefunded',            'saga.order_on_payment_refunded(saga.event)');

-- Tell the launcher (at commit) that this database now has sagas to run.
SELECT saga_wake_launcher();
