--
-- Bad input to the order API: each case is a clear error with a SQLSTATE,
-- and nothing is written.  Business failures (unknown customer, no stock)
-- are not errors: see choreography.
--
CREATE EXTENSION saga;
SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_stock('widget', 10);

CREATE VIEW row_counts AS
    SELECT (SELECT count(*) FROM saga.instance) AS sagas,
           (SELECT count(*) FROM saga.orders) AS orders,
           (SELECT count(*) FROM saga.event) AS events,
           (SELECT count(*) FROM saga.delivery) AS deliveries,
           (SELECT count(*) FROM saga.subscription) AS subscriptions,
           (SELECT count(*) FROM saga.account) AS accounts,
           (SELECT count(*) FROM saga.product) AS products;
SELECT * FROM row_counts;
CREATE TEMP TABLE counts_before AS SELECT * FROM row_counts;

-- Runs a statement, returns 'ok' or its SQLSTATE and message.
CREATE FUNCTION try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT stmt, try(stmt) AS result
  FROM (VALUES
    ($$SELECT saga_place_order(NULL, 'widget', 1, 1.00)$$),
    ($$SELECT saga_place_order('', 'widget', 1, 1.00)$$),
    ($$SELECT saga_place_order('   ', 'widget', 1, 1.00)$$),
    ($$SELECT saga_place_order('alice', NULL, 1, 1.00)$$),
    ($$SELECT saga_place_order('alice', '', 1, 1.00)$$),
    ($$SELECT saga_place_order('alice', 'widget', NULL, 1.00)$$),
    ($$SELECT saga_place_order('alice', 'widget', 0, 1.00)$$),
    ($$SELECT saga_place_order('alice', 'widget', -3, 1.00)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, NULL)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 0)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, -5.00)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 1.005)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 'NaN')$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 'Infinity')$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, '-Infinity')$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 1e20)$$),
    ($$SELECT saga_place_order(repeat('x', 10000), 'widget', 1, 1.00)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 1.00, 'telepathy')$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 1.00, NULL)$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 1.00, 'ORCHESTRATION')$$),
    ($$SELECT saga_place_order('alice', 'widget', 1, 1.00, $x$'; DROP TABLE saga.orders; --$x$)$$),
    ($$SELECT saga_set_balance(NULL, 1)$$),
    ($$SELECT saga_set_balance('dave', -1)$$),
    ($$SELECT saga_set_balance('dave', 'NaN')$$),
    ($$SELECT saga_set_balance('dave', 0.001)$$),
    ($$SELECT saga_set_stock('', 1)$$),
    ($$SELECT saga_set_stock('thing', -1)$$),
    ($$SELECT saga_set_stock('thing', NULL)$$),
    ($$SELECT saga_order_status(-1)$$),
    ($$SELECT saga_await(-1)$$),
    ($$SELECT saga_await(1, '-1 second')$$),
    ($$SELECT saga_publish(NULL)$$),
    ($$SELECT saga_publish('')$$),
    ($$SELECT saga_publish('Thing', NULL)$$),
    ($$SELECT saga_publish('Thing', '[1, 2]')$$),
    ($$SELECT saga_publish('Thing', '"text"')$$),
    ($$SELECT saga_subscribe('x', 'Thing', 'no_such_function(saga.event)')$$),
    ($$SELECT saga_subscribe('x', 'Thing', 'lower(text)')$$),
    ($$SELECT saga_begin('')$$),
    ($$SELECT saga_start('order', '{"customer": 1}'::jsonb - 'customer' || '[]')$$),
    ($$SELECT saga_start(NULL)$$),
    ($$SELECT saga_retry(-1)$$),
    ($$SELECT saga_define('x', NULL::saga.step)$$),
    ($$SELECT saga_complete(-1)$$),
    ($$SELECT saga_fail(-1, 'why')$$)
  ) AS t(stmt);

-- Nothing was written.
SELECT r = b AS nothing_written FROM row_counts r, counts_before b;

-- Names are stored as given, quotes, SQL and non-ASCII included.
SELECT saga_set_balance($$o'brien; DROP TABLE saga.orders; --$$, 10);
SELECT saga_set_stock('Äpfel 🍎', 3);
SELECT saga_place_order($$o'brien; DROP TABLE saga.orders; --$$, 'Äpfel 🍎', 1, 2.50) AS odd \gset
SELECT saga_run_pending();
SELECT saga_order_status(:odd), saga_balance($$o'brien; DROP TABLE saga.orders; --$$), saga_stock('Äpfel 🍎');

-- A finished saga cannot be finished again.
SELECT try(format('SELECT saga_complete(%s)', :odd));
SELECT try(format('SELECT saga_fail(%s, %L)', :odd, 'late'));

-- saga_await needs to see other transactions' commits ...
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT try(format('SELECT saga_await(%s)', :odd));
ROLLBACK;
-- ... and cannot wait for a saga its own transaction started.
BEGIN;
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS mine \gset
SELECT try(format('SELECT saga_await(%s, %L)', :mine, '1 second'));
ROLLBACK;

DROP EXTENSION saga CASCADE;
DROP FUNCTION try(text);
