/* schema/example/1.0.sql: the example order shop, version 1.0 (after schema/engine/1.0.sql) */

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
