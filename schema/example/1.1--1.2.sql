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
