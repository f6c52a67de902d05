--
-- Failure handling, driven by saga_run_pending(): dead letters turned
-- into failure events, deadlines in both patterns, consumers paused and
-- resumed, cancelling a saga, the operator's lists, and idempotency keys.
--
CREATE EXTENSION saga;
SET saga.retry_backoff = 0;
SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_stock('widget', 10);

-- The traces below name payments; keep them stable.
CREATE FUNCTION trace(id bigint) RETURNS TABLE (seq int, sender text, receiver text, message text)
LANGUAGE sql AS $$
    SELECT seq, sender, receiver, regexp_replace(message, '/payments/\d+$', '/payments/<id>')
      FROM saga_trace(id)
$$;

--
-- 1. A delivery that keeps failing is dead-lettered, and its subscription's
--    on_failure event lets the saga compensate: the inventory service is
--    broken, so after saga.max_attempts its PaymentProcessed delivery dies,
--    InventoryReservationFailed is published, the payment is refunded.
--
CREATE FUNCTION inventory_broken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'inventory database unreachable';
END $$;
CREATE TRIGGER inventory_broken BEFORE UPDATE ON saga.product
    FOR EACH ROW EXECUTE FUNCTION inventory_broken();
SET saga.max_attempts = 2;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS broken \gset
SELECT saga_run_pending();
SELECT saga_run_pending();
SELECT saga_order_status(:broken), saga_balance('alice'), saga_stock('widget');
SELECT status, reason FROM saga_orders WHERE order_id = :broken;
SELECT consumer, event_type, attempts, last_error FROM saga_dead_letters WHERE saga_id = :broken;
SELECT * FROM trace(:broken);
RESET saga.max_attempts;
DROP TRIGGER inventory_broken ON saga.product;

--
-- 2. Pausing a consumer: its events wait for it.
--
SELECT saga_pause_consumer('inventory');
SELECT saga_pause_consumer('inventory');   -- already paused
SELECT consumer, event_type, paused FROM saga_subscriptions WHERE consumer = 'inventory' ORDER BY event_type;
SELECT saga_place_order('alice', 'widget', 1, 10.00) AS waits \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration') AS owaits \gset
SELECT saga_run_pending();
SELECT saga_order_status(:waits), saga_order_status(:owaits), saga_balance('alice'), saga_stock('widget');
SELECT problem, saga_id = :waits AS choreographed, work, remedy FROM saga_stuck ORDER BY 1, 3;
SELECT saga_resume_consumer('inventory');
SELECT saga_resume_consumer('inventory');  -- not paused
SELECT saga_run_pending();
SELECT saga_order_status(:waits), saga_order_status(:owaits), saga_balance('alice'), saga_stock('widget');

--
-- 3. ... or the deadline compensates: the inventory service is down for
--    longer than the order may take.
--
SELECT saga_pause_consumer('inventory');
SELECT saga_place_order('alice', 'widget', 1, 10.00, deadline => '200 ms') AS late \gset
SELECT saga_place_order('alice', 'widget', 1, 10.00, 'orchestration', deadline => '200 ms') AS olate \gset
SELECT saga_run_pending();        -- both are charged, then wait for inventory
SELECT saga_order_status(:late), saga_order_status(:olate), saga_balance('alice');
SELECT pg_sleep(0.3);
SELECT saga_run_pending();        -- the deadlines have passed: abort, refund
SELECT order_id = :late AS choreographed, status, reason FROM saga_orders
 WHERE order_id IN (:late, :olate) ORDER BY order_id;
SELECT saga_balance('alice'), saga_stock('widget');
SELECT * FROM trace(:late);
SELECT * FROM trace(:olate);
-- when inventory comes back, the cancelled reservation does not happen
SELECT saga_resume_consumer('inventory');
SELECT saga_run_pending();
SELECT saga_stock('widget');
SELECT d.status, d.last_error FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
 WHERE e.saga_id = :late AND e.event_type = 'PaymentProcessed';

-- saga.deadline is the default deadline
SET saga.deadline = '1h';
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS defaulted \gset
SELECT deadline - started_at BETWEEN '59 min' AND '61 min' AS one_hour FROM saga_instances WHERE id = :defaulted;
RESET saga.deadline;
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS nodeadline \gset
SELECT deadline IS NULL AS no_deadline FROM saga_instances WHERE id = :nodeadline;
SELECT saga_run_pending();

--
-- 4. Cancelling a running saga: it compensates, then fails.
--
SELECT saga_pause_consumer('inventory');
SELECT saga_place_order('alice', 'widget', 1, 7.00) AS c1 \gset
SELECT saga_place_order('alice', 'widget', 1, 7.00, 'orchestration') AS c2 \gset
SELECT saga_run_pending();
SELECT saga_balance('alice');
SELECT saga_cancel(:c1, 'customer changed their mind'), saga_cancel(:c2);
SELECT saga_cancel(:c1);          -- already aborted
SELECT saga_run_pending();
SELECT order_id = :c1 AS choreographed, status, reason FROM saga_orders
 WHERE order_id IN (:c1, :c2) ORDER BY order_id;
SELECT saga_balance('alice'), saga_stock('widget');
SELECT saga_resume_consumer('inventory');
SELECT saga_run_pending();
SELECT saga_stock('widget');
SELECT saga_cancel(:c1);          -- already failed
\set VERBOSITY terse
SELECT saga_cancel(-1);
SELECT saga_cancel(NULL);
\set VERBOSITY default

--
-- 5. The operator's lists, and retrying a dead letter by hand.
--
CREATE FUNCTION always_fails(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_tables WHERE tablename = 'fixed') THEN
        RAISE EXCEPTION 'bug in the audit service';
    END IF;
END $$;
SELECT saga_subscribe('audit', 'Audit', 'always_fails(saga.event)');
SET saga.max_attempts = 1;
SELECT saga_publish('Audit', '{"n": 1}') AS audit_event \gset
SELECT saga_run_pending();
RESET saga.max_attempts;
SELECT consumer, event_type, attempts, last_error FROM saga_dead_letters;
SELECT problem, work, last_error FROM saga_stuck;
SELECT delivery_id AS dead FROM saga_dead_letters WHERE consumer = 'audit' \gset
CREATE TABLE fixed ();
SELECT saga_retry_delivery(:dead);
SELECT saga_retry_delivery(:dead);   -- not dead any more
SELECT saga_run_pending();
SELECT count(*) AS dead_letters FROM saga_dead_letters;
\set VERBOSITY terse
SELECT saga_retry_delivery(-1);
\set VERBOSITY default

--
-- 6. Idempotency keys: the same key placed twice gives the same order, once.
--
SELECT saga_place_order('alice', 'widget', 1, 3.00, idempotency_key => 'cart-42') AS k1 \gset
SELECT saga_place_order('alice', 'widget', 1, 3.00, idempotency_key => 'cart-42') AS k2 \gset
SELECT :k1 = :k2 AS same_order, count(*) AS orders FROM saga.orders WHERE idempotency_key = 'cart-42';
SELECT saga_run_pending();
SELECT saga_place_order('alice', 'widget', 1, 3.00, idempotency_key => 'cart-42') = :k1 AS same_after_completion;
SELECT count(*) AS charges FROM saga.payment WHERE order_id = :k1;
\set VERBOSITY terse
SELECT saga_place_order('alice', 'widget', 2, 3.00, idempotency_key => 'cart-42');
SELECT saga_place_order('alice', 'widget', 1, 3.00, 'orchestration', idempotency_key => 'cart-42');
SELECT saga_place_order('alice', 'widget', 1, 3.00, idempotency_key => '');
SELECT saga_place_order('alice', 'widget', 1, 3.00, deadline => '-1 s');
\set VERBOSITY default
SELECT saga_place_order('alice', 'widget', 1, 3.00, 'orchestration', 'cart-43') AS k3 \gset
SELECT saga_place_order('alice', 'widget', 1, 3.00, 'orchestration', 'cart-43') = :k3 AS same_orchestrated;

DROP EXTENSION saga CASCADE;
DROP TABLE fixed;
DROP FUNCTION inventory_broken();
