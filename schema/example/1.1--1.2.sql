/* schema/example/1.1--1.2.sql: the example order shop, from 1.1 to 1.2 (after schema/engine/1.1--1.2.sql) */

-- The example's services are the order saga's: they hear of no other.
UPDATE saga.subscription SET saga_type = 'order' WHERE builtin;

-- The example's event types are the extension owner's, built in.
INSERT INTO saga.event_type (name, owner, builtin)
SELECT t, (SELECT c.relowner::regrole FROM pg_class c WHERE c.oid = 'saga.event'::regclass), true
  FROM unnest(ARRAY['OrderCreated', 'PaymentProcessed', 'PaymentFailed', 'InventoryReserved',
                    'InventoryReservationFailed', 'PaymentRefunded']) AS t;

-- The example's orders come from a customer, over HTTP: their traces say so
-- (saga.trace_client).
INSERT INTO saga.trace_client (saga_type, owner, client, start_message, completed_message,
                               failed_message, builtin)
SELECT 'order', c.relowner::regrole, 'customer', 'POST /orders', '201 Created',
       '500 Internal Server Error', true
  FROM pg_class c WHERE c.oid = 'saga.event'::regclass;

-- saga_place_order's customers see their orders: every role sees the
-- status and trace of the example's 'order' sagas.
INSERT INTO saga.saga_grant (saga_type, owner, grantee, builtin)
SELECT 'order', c.relowner::regrole, 0, true FROM pg_class c WHERE c.oid = 'saga.event'::regclass;

/*
 * "Does not exist" errors use 42704 (undefined_object), as core's do for
 * a missing object, not PL/pgSQL's P0002 (no_data_found): the C
 * functions (saga_status, saga_await, saga_retry, saga_complete,
 * saga_fail, saga_retry_delivery, saga_publish with a saga id) changed
 * with the library, saga_trace_mermaid in schema/engine/1.1--1.2.sql;
 * the example's saga_order_status changes here.
 */
CREATE OR REPLACE FUNCTION saga_order_status(order_id bigint)
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
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN result;
END
$$;

/*
 * Charging and reserving write their row once: the UPDATE checks the
 * balance (the stock) itself, instead of a SELECT ... FOR UPDATE before it,
 * whose row lock is a WAL record of its own (bench/cost.sh: two of the ten
 * row locks per choreographed order).  When the UPDATE finds nothing, a
 * plain read says why; if that read sees enough again (a refund committed
 * in between), the UPDATE is tried again, so that the reason given is
 * always the one that held.
 */
CREATE OR REPLACE FUNCTION saga.charge_payment(order_id bigint, customer text, amount numeric)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    balance    numeric;
    payment_id bigint;
BEGIN
    LOOP
        UPDATE saga.account a SET balance = a.balance - charge_payment.amount
         WHERE a.customer = charge_payment.customer AND a.balance >= charge_payment.amount;
        EXIT WHEN FOUND;
        SELECT a.balance INTO balance
          FROM saga.account a WHERE a.customer = charge_payment.customer;
        IF NOT FOUND THEN
            PERFORM @extschema@.saga_reject(format('unknown customer %s', customer));
        END IF;
        IF balance < amount THEN
            PERFORM @extschema@.saga_reject(format('insufficient balance: %s < %s', balance, amount));
        END IF;
    END LOOP;
    INSERT INTO saga.payment (order_id, customer, amount)
    VALUES (charge_payment.order_id, charge_payment.customer, charge_payment.amount)
    RETURNING id INTO payment_id;
    RETURN payment_id;
END
$$;

CREATE OR REPLACE FUNCTION saga.reserve_stock(order_id bigint, product text, quantity integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stock          integer;
    reservation_id bigint;
BEGIN
    LOOP
        UPDATE saga.product p SET stock = p.stock - reserve_stock.quantity
         WHERE p.product = reserve_stock.product AND p.stock >= reserve_stock.quantity;
        EXIT WHEN FOUND;
        SELECT p.stock INTO stock
          FROM saga.product p WHERE p.product = reserve_stock.product;
        IF NOT FOUND THEN
            PERFORM @extschema@.saga_reject(format('unknown product %s', product));
        END IF;
        IF stock < quantity THEN
            PERFORM @extschema@.saga_reject(format('insufficient stock: %s < %s', stock, quantity));
        END IF;
    END LOOP;
    INSERT INTO saga.reservation (order_id, product, quantity)
    VALUES (reserve_stock.order_id, reserve_stock.product, reserve_stock.quantity)
    RETURNING id INTO reservation_id;
    RETURN reservation_id;
END
$$;
