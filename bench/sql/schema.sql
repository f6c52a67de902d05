-- bench/sql/schema.sql: the benchmark's own objects, in schema "bench" of the
-- throwaway database (created after CREATE EXTENSION saga).
--
--  * bench.single                 baseline (a): one single-row INSERT per transaction
--  * bench.account ... reservation baselines (b) and (c): copies of the order
--                                 saga's tables (same columns, keys and CHECKs)
--  * bench.order_once()           baseline (b): all of an order's writes in one
--                                 transaction, a plain SQL function
--  * bench.initial_balance/stock  the starting data of every saga run, and what
--                                 the invariants are checked against
--  * bench.reset_baseline(), bench.reset_saga(), bench.violations(n)

CREATE SCHEMA bench;

------------------------------------------------------------------------------
-- (a) the machine's commit rate
------------------------------------------------------------------------------

CREATE TABLE bench.single (
    id bigserial PRIMARY KEY,
    v  integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);

------------------------------------------------------------------------------
-- (b), (c): the order saga's writes, without the saga.  Same shapes as
-- saga.account, saga.product, saga.orders (+ a status, since the saga keeps
-- it in saga.instance), saga.payment and saga.reservation.
------------------------------------------------------------------------------

CREATE TABLE bench.account (
    customer text PRIMARY KEY,
    balance  numeric NOT NULL CHECK (balance >= 0 AND balance < 'Infinity')
);

CREATE TABLE bench.product (
    product text PRIMARY KEY,
    stock   integer NOT NULL CHECK (stock >= 0)
);

CREATE SEQUENCE bench.order_id_seq;

CREATE TABLE bench.orders (
    id          bigint PRIMARY KEY,
    customer    text NOT NULL,
    product     text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    amount      numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    placed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
    finished_at timestamptz
);

CREATE TABLE bench.payment (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL UNIQUE,
    customer    text NOT NULL,
    amount      numeric NOT NULL CHECK (amount > 0),
    status      text NOT NULL DEFAULT 'charged' CHECK (status IN ('charged', 'refunded')),
    charged_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    refunded_at timestamptz,
    CHECK ((status = 'refunded') = (refunded_at IS NOT NULL))
);

CREATE TABLE bench.reservation (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL UNIQUE,
    product     text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    reserved_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- (b): the lower bound of the work: insert the order, charge (update the
-- account, insert the payment), reserve (update the product, insert the
-- reservation), mark it complete -- in the caller's one transaction.
-- The order's id is the sequence's currval(); the final UPDATE compares
-- with it through a sub-select, which is evaluated once and lets the
-- primary key be used (currval() is volatile: compared directly, it would
-- make the UPDATE scan the whole table for each order).
CREATE FUNCTION bench.order_once(customer text, product text, quantity integer, amount numeric)
RETURNS bigint
LANGUAGE sql
AS $$
    INSERT INTO bench.orders (id, customer, product, quantity, amount)
    VALUES (nextval('bench.order_id_seq'), $1, $2, $3, $4);
    UPDATE bench.account SET balance = balance - $4 WHERE account.customer = $1;
    INSERT INTO bench.payment (order_id, customer, amount)
    VALUES (currval('bench.order_id_seq'), $1, $4);
    UPDATE bench.product SET stock = stock - $3 WHERE product.product = $2;
    INSERT INTO bench.reservation (order_id, product, quantity)
    VALUES (currval('bench.order_id_seq'), $2, $3);
    UPDATE bench.orders SET status = 'completed', finished_at = clock_timestamp()
     WHERE id = (SELECT currval('bench.order_id_seq'));
    SELECT currval('bench.order_id_seq');
$$;

-- The baselines' starting point: empty tables, 1000 customers and 100
-- products with ample balance and stock (every baseline order succeeds).
CREATE FUNCTION bench.reset_baseline()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    TRUNCATE bench.single, bench.orders, bench.payment, bench.reservation,
             bench.account, bench.product;
    INSERT INTO bench.account SELECT 'c' || i, 1000000.00 FROM generate_series(1, 1000) i;
    INSERT INTO bench.product SELECT 'p' || i, 1000000 FROM generate_series(1, 100) i;
END
$$;

-- Sanity of a baseline run of the order's writes: every order complete,
-- with one payment and one reservation.
CREATE FUNCTION bench.baseline_violations()
RETURNS SETOF text
LANGUAGE sql
AS $$
    SELECT format('%s orders not completed', count(*))
      FROM bench.orders WHERE status <> 'completed' HAVING count(*) > 0
    UNION ALL
    SELECT format('%s orders, %s payments, %s reservations',
                  (SELECT count(*) FROM bench.orders), (SELECT count(*) FROM bench.payment),
                  (SELECT count(*) FROM bench.reservation))
     WHERE (SELECT count(*) FROM bench.orders) <> (SELECT count(*) FROM bench.payment)
        OR (SELECT count(*) FROM bench.orders) <> (SELECT count(*) FROM bench.reservation)
    UNION ALL
    SELECT format('balances: %s, expected %s', sum(balance), 1000 * 1000000.00 - (SELECT coalesce(sum(amount), 0) FROM bench.orders))
      FROM bench.account
    HAVING sum(balance) <> 1000 * 1000000.00 - (SELECT coalesce(sum(amount), 0) FROM bench.orders);
$$;

------------------------------------------------------------------------------
-- The extension's runs
------------------------------------------------------------------------------

-- Customers c1..c100 have nothing (their orders fail in payment), the other
-- 900 have ample balance; products p1..p10 are out of stock (orders of them
-- fail in inventory, after the charge, which is refunded), the other 90 have
-- ample stock.  The pgbench script picks the customer and the product so
-- that 10% of the orders fail payment, 10% fail inventory, 80% complete.
CREATE TABLE bench.initial_balance (customer text PRIMARY KEY, balance numeric NOT NULL);
CREATE TABLE bench.initial_stock (product text PRIMARY KEY, stock integer NOT NULL);
INSERT INTO bench.initial_balance
    SELECT 'c' || i, CASE WHEN i <= 100 THEN 0 ELSE 1000000.00 END FROM generate_series(1, 1000) i;
INSERT INTO bench.initial_stock
    SELECT 'p' || i, CASE WHEN i <= 10 THEN 0 ELSE 1000000 END FROM generate_series(1, 100) i;

-- Empty the tables of the extension that a saga run fills, and set the
-- starting balances and stock again (through the extension's API).
CREATE FUNCTION bench.reset_saga()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    TRUNCATE saga.instance, saga.event, saga.delivery, saga.step_run,
             saga.orders, saga.payment, saga.reservation, saga.account, saga.product;
    PERFORM saga_set_balance(customer, balance) FROM bench.initial_balance;
    PERFORM saga_set_stock(product, stock) FROM bench.initial_stock;
END
$$;

-- The invariants after a saga run of `expected` orders; one row per
-- violation (none: all hold).
CREATE FUNCTION bench.violations(expected bigint)
RETURNS SETOF text
LANGUAGE sql
AS $$
    WITH o AS (
        SELECT o.id, o.customer, o.product, o.quantity, o.amount, i.status,
               (SELECT count(*) FROM saga.payment p WHERE p.order_id = o.id) AS charges,
               (SELECT count(*) FROM saga.payment p WHERE p.order_id = o.id AND p.status = 'refunded') AS refunds,
               (SELECT count(*) FROM saga.reservation r WHERE r.order_id = o.id) AS reservations,
               ib.balance = 0 AS broke,
               ist.stock = 0 AS out_of_stock
          FROM saga.orders o
          JOIN saga.instance i ON i.id = o.id
          JOIN bench.initial_balance ib ON ib.customer = o.customer
          JOIN bench.initial_stock ist ON ist.product = o.product
    )
    -- every saga terminal
    SELECT format('%s sagas not terminal (status %s)', count(*), string_agg(DISTINCT status, ', '))
      FROM saga.instance WHERE status NOT IN ('completed', 'failed') HAVING count(*) > 0
    UNION ALL
    -- every placed order is there, and only those
    SELECT format('%s orders and %s sagas, expected %s',
                  (SELECT count(*) FROM saga.orders), (SELECT count(*) FROM saga.instance), expected)
     WHERE (SELECT count(*) FROM saga.orders) <> expected
        OR (SELECT count(*) FROM saga.instance) <> expected
    UNION ALL
    -- per customer: balance = initial - sum of the completed orders' amounts
    SELECT format('customer %s: balance %s, expected %s', a.customer, a.balance,
                  ib.balance - coalesce(c.amount, 0))
      FROM saga.account a
      JOIN bench.initial_balance ib USING (customer)
      LEFT JOIN (SELECT customer, sum(amount) AS amount FROM o WHERE status = 'completed'
                  GROUP BY customer) c USING (customer)
     WHERE a.balance <> ib.balance - coalesce(c.amount, 0)
    UNION ALL
    SELECT format('%s customers missing', 1000 - count(*)) FROM saga.account HAVING count(*) <> 1000
    UNION ALL
    -- per product: stock = initial - the completed orders' quantities
    SELECT format('product %s: stock %s, expected %s', p.product, p.stock,
                  ist.stock - coalesce(c.quantity, 0))
      FROM saga.product p
      JOIN bench.initial_stock ist USING (product)
      LEFT JOIN (SELECT product, sum(quantity) AS quantity FROM o WHERE status = 'completed'
                  GROUP BY product) c USING (product)
     WHERE p.stock <> ist.stock - coalesce(c.quantity, 0)
    UNION ALL
    SELECT format('%s products missing', 100 - count(*)) FROM saga.product HAVING count(*) <> 100
    UNION ALL
    -- at most one charge and at most one refund per order
    SELECT format('order %s: %s charges, %s refunds', id, charges, refunds)
      FROM o WHERE charges > 1 OR refunds > 1
    UNION ALL
    SELECT format('%s payments or reservations of unknown orders',
                  (SELECT count(*) FROM saga.payment p WHERE NOT EXISTS (SELECT FROM saga.orders o WHERE o.id = p.order_id))
                + (SELECT count(*) FROM saga.reservation r WHERE NOT EXISTS (SELECT FROM saga.orders o WHERE o.id = r.order_id)))
     WHERE EXISTS (SELECT FROM saga.payment p WHERE NOT EXISTS (SELECT FROM saga.orders o WHERE o.id = p.order_id))
        OR EXISTS (SELECT FROM saga.reservation r WHERE NOT EXISTS (SELECT FROM saga.orders o WHERE o.id = r.order_id))
    UNION ALL
    -- refunded exactly when failed after the charge; a completed order is
    -- charged (not refunded) and has its reservation; a failed one has none
    SELECT format('order %s: %s with %s charge(s), %s refund(s), %s reservation(s)',
                  id, status, charges, refunds, reservations)
      FROM o
     WHERE (refunds = 1) <> (status = 'failed' AND charges = 1)
        OR (status = 'completed' AND (charges <> 1 OR refunds <> 0 OR reservations <> 1))
        OR (status = 'failed' AND reservations <> 0)
    UNION ALL
    -- the outcome the data dictates: a broke customer's order fails without
    -- a charge, an out-of-stock product's order fails refunded, others complete
    SELECT format('order %s (customer %s, product %s): %s, expected %s', id, customer, product, status,
                  CASE WHEN broke OR out_of_stock THEN 'failed' ELSE 'completed' END)
      FROM o
     WHERE status IN ('completed', 'failed')
       AND (status = 'failed') <> (broke OR out_of_stock)
    UNION ALL
    SELECT format('order %s of broke customer %s was charged', id, customer)
      FROM o WHERE broke AND charges > 0;
$$;
