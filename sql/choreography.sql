--
-- The choreographed order saga, driven by saga_run_pending() in a cluster
-- without the library preloaded: the seed's three outcomes, each with the
-- final status, balances, stock, payments and the exact trace.
--
CREATE EXTENSION saga;

SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_balance('bob', 5.00);
SELECT saga_set_stock('widget', 10);
SELECT saga_set_stock('gadget', 0);

-- 1. Happy path: order -> payment -> inventory -> completed (201 Created)
SELECT saga_place_order('alice', 'widget', 2, 30.00) AS happy \gset
SELECT saga_order_status(:happy);
-- OrderCreated->payment, PaymentProcessed->inventory, InventoryReserved->order
SELECT saga_run_pending();
SELECT saga_order_status(:happy), saga_balance('alice'), saga_stock('widget');
SELECT status, reason FROM saga_orders WHERE order_id = :happy;
SELECT customer, amount, status FROM saga.payment WHERE order_id = :happy;
SELECT product, quantity FROM saga.reservation WHERE order_id = :happy;
SELECT seq, sender, receiver, message FROM saga_trace(:happy);

-- 2. Payment fails (insufficient balance): nothing charged, nothing reserved
SELECT saga_place_order('bob', 'widget', 1, 50.00) AS nofunds \gset
SELECT saga_run_pending();
SELECT saga_order_status(:nofunds), saga_balance('bob'), saga_stock('widget');
SELECT status, reason FROM saga_orders WHERE order_id = :nofunds;
SELECT count(*) AS payments FROM saga.payment WHERE order_id = :nofunds;
SELECT count(*) AS reservations FROM saga.reservation WHERE order_id = :nofunds;
SELECT seq, sender, receiver, message FROM saga_trace(:nofunds);

-- ... and an unknown customer fails the same way
SELECT saga_place_order('carol', 'widget', 1, 1.00) AS nobody \gset
SELECT saga_run_pending();
SELECT status, reason FROM saga_orders WHERE order_id = :nobody;

-- 3. Inventory fails (no stock): the payment is refunded, then the order fails
SELECT saga_place_order('alice', 'gadget', 1, 20.00) AS nostock \gset
SELECT saga_run_pending();
SELECT saga_order_status(:nostock), saga_balance('alice'), saga_stock('gadget');
SELECT status, reason FROM saga_orders WHERE order_id = :nostock;
SELECT amount, status, refunded_at IS NOT NULL AS refunded FROM saga.payment WHERE order_id = :nostock;
SELECT count(*) AS reservations FROM saga.reservation WHERE order_id = :nostock;
SELECT seq, sender, receiver, message FROM saga_trace(:nostock);

-- ... and an unknown product fails the same way
SELECT saga_place_order('alice', 'doohickey', 1, 10.00) AS noproduct \gset
SELECT saga_run_pending();
SELECT status, reason FROM saga_orders WHERE order_id = :noproduct;
SELECT saga_balance('alice');

-- An order is reported failed only once its payment is refunded: while the
-- refund cannot be made, the order stays pending; the refund is retried.
CREATE FUNCTION refunds_down() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'refunds are down';
END $$;
CREATE TRIGGER refunds_down BEFORE UPDATE ON saga.payment
    FOR EACH ROW WHEN (NEW.status = 'refunded') EXECUTE FUNCTION refunds_down();
SET saga.retry_backoff = 0;
SELECT saga_place_order('alice', 'gadget', 1, 10.00) AS stuck \gset
SELECT saga_run_pending();
SELECT saga_order_status(:stuck), saga_balance('alice');
SELECT s.consumer, e.event_type, d.status, d.attempts, d.last_error
  FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
  JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE e.saga_id = :stuck AND d.status <> 'done';
DROP TRIGGER refunds_down ON saga.payment;
SELECT saga_run_pending();
SELECT saga_order_status(:stuck), saga_balance('alice');
SELECT status, attempts, last_error FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
  JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE e.saga_id = :stuck AND e.event_type = 'InventoryReservationFailed'
 ORDER BY s.consumer;
RESET saga.retry_backoff;

-- Nothing is left to deliver.
SELECT saga_run_pending();
SELECT status, count(*) FROM saga.delivery GROUP BY status ORDER BY status;

-- Totals: balance = initial - completed amounts; stock = initial - completed quantities
SELECT sum(amount) FILTER (WHERE status = 'completed') AS charged,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed
  FROM saga_orders;
SELECT count(*) FILTER (WHERE status = 'charged') AS charged,
       count(*) FILTER (WHERE status = 'refunded') AS refunded
  FROM saga.payment;

-- saga_await() returns at once for a finished saga
SELECT saga_await(:happy), saga_await(:nostock, '0 seconds');

-- The extension drops cleanly, data and all.
DROP EXTENSION saga;
SELECT count(*) AS saga_schemas_left FROM pg_namespace WHERE nspname = 'saga';
