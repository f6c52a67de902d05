--
-- Through the background workers (shared_preload_libraries = 'saga'):
-- orders placed and awaited, workers reloading saga.workers, restarting
-- after being terminated, serving a database created after start-up, and
-- getting out of the way of DROP EXTENSION and DROP DATABASE.
--

-- Waits until a condition holds (at most 30 s); returns whether it did.
CREATE FUNCTION wait_for(cond text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    ok boolean;
BEGIN
    FOR i IN 1..300 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXECUTE 'SELECT ' || cond INTO ok;
        IF ok THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE WARNING 'timed out waiting for: %', cond;
    RETURN false;
END $$;

CREATE VIEW saga_workers_here AS
    SELECT pid FROM pg_stat_activity
     WHERE backend_type = 'saga worker' AND datname = current_database();

SELECT count(*) AS launchers FROM pg_stat_activity WHERE backend_type = 'saga launcher';
SELECT count(*) AS workers_before_create_extension FROM saga_workers_here;

CREATE EXTENSION saga;
SELECT wait_for('(SELECT count(*) FROM saga_workers_here) = 2') AS two_workers;

SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_balance('bob', 5.00);
SELECT saga_set_stock('widget', 10);
SELECT saga_set_stock('gadget', 0);

-- The three outcomes, awaited (saga_await sleeps until a worker finishes them).
SELECT saga_place_order('alice', 'widget', 2, 30.00) AS happy \gset
SELECT saga_place_order('bob', 'widget', 1, 50.00) AS nofunds \gset
SELECT saga_place_order('alice', 'gadget', 1, 20.00) AS nostock \gset
SELECT saga_await(:happy) AS happy, saga_await(:nofunds) AS nofunds, saga_await(:nostock) AS nostock;
SELECT order_id = :happy AS happy, status, reason FROM saga_orders ORDER BY order_id;
SELECT saga_balance('alice'), saga_balance('bob'), saga_stock('widget'), saga_stock('gadget');
SELECT order_id = :nostock AS nostock, status FROM saga.payment ORDER BY order_id;
SELECT seq, sender, receiver, message FROM saga_trace(:happy);
SELECT seq, sender, receiver, message FROM saga_trace(:nofunds);
-- Two services consume InventoryReservationFailed; with two workers the
-- order in which they do may vary, so check the arrows and their causality.
SELECT sender, receiver, message FROM saga_trace(:nostock) ORDER BY 1, 2, 3;
SELECT (SELECT seq FROM saga_trace(:nostock) WHERE message = 'PaymentRefunded' AND receiver = 'broker')
     > (SELECT seq FROM saga_trace(:nostock) WHERE message = 'InventoryReservationFailed' AND receiver = 'payment')
       AS refund_after_failure,
       (SELECT max(seq) FROM saga_trace(:nostock)) =
       (SELECT seq FROM saga_trace(:nostock) WHERE message = '500 Internal Server Error')
       AS answer_last;

-- The same three outcomes, orchestrated.
SELECT saga_place_order('alice', 'widget', 2, 30.00, 'orchestration') AS ohappy \gset
SELECT saga_place_order('bob', 'widget', 1, 50.00, 'orchestration') AS onofunds \gset
SELECT saga_place_order('alice', 'gadget', 1, 20.00, 'orchestration') AS onostock \gset
SELECT saga_await(:ohappy) AS happy, saga_await(:onofunds) AS nofunds, saga_await(:onostock) AS nostock;
SELECT saga_balance('alice'), saga_balance('bob'), saga_stock('widget'), saga_stock('gadget');
SELECT seq, sender, receiver, message FROM saga_trace(:ohappy);
SELECT seq, sender, receiver, message FROM saga_trace(:onofunds);
SELECT seq, sender, receiver, regexp_replace(message, '/payments/\d+$', '/payments/<id>') AS message
  FROM saga_trace(:onostock);

-- A batch goes on with what its own handlers publish, in the same
-- transaction: a choreographed saga runs from event to event and commits
-- once.  (Without saga.batch_time here: a new worker's first batches plan
-- statements and compile handlers, which can take longer than that.)
ALTER SYSTEM SET saga.batch_time = 0;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS chained \gset
SELECT saga_await(:chained) AS chained;
SELECT count(*) AS deliveries, count(DISTINCT d.xmin::text) AS transactions
  FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id
 WHERE e.saga_id = :chained;

-- saga.batch_time: a batch commits once it has run that long, so that a
-- slow handler does not keep the batch's row locks for long.  Ten
-- deliveries whose handler takes 30 ms, with batches of at most 10 ms:
-- each one commits in a transaction of its own.
ALTER SYSTEM SET saga.batch_time = '10ms';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CREATE FUNCTION slow_handler(e saga.event) RETURNS void LANGUAGE sql
    AS $$ SELECT pg_sleep(0.03) $$;
SELECT saga_subscribe('slowpoke', 'Slow', 'slow_handler(saga.event)') IS NOT NULL AS subscribed;
SELECT count(saga_publish('Slow', jsonb_build_object('n', i))) AS published
  FROM generate_series(1, 10) i;
SELECT wait_for($$(SELECT count(*) FROM saga.delivery d
                     JOIN saga.subscription s ON s.id = d.subscription_id
                    WHERE s.consumer = 'slowpoke' AND d.status = 'done') = 10$$) AS slow_done;
SELECT count(DISTINCT d.xmin::text) AS transactions
  FROM saga.delivery d JOIN saga.subscription s ON s.id = d.subscription_id
 WHERE s.consumer = 'slowpoke';
SELECT saga_unsubscribe('slowpoke', 'Slow');
ALTER SYSTEM RESET saga.batch_time;
SELECT pg_reload_conf();

-- A long orchestrated saga keeps to saga.batch_size like any other work:
-- 50 steps with batches of at most 10 take at least five transactions
-- (each step notes the transaction it ran in).
ALTER SYSTEM SET saga.batch_size = 10;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CREATE TABLE step_xact (saga_id bigint, xact xid8);
CREATE FUNCTION note_xact(data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ INSERT INTO step_xact VALUES ((data->>'saga_id')::bigint, pg_current_xact_id()) RETURNING NULL::jsonb $$;
SELECT saga_define('fifty', VARIADIC (SELECT array_agg(saga_step('s' || i, 'note_xact(jsonb)'))
                                       FROM generate_series(1, 50) i)) AS version;
SELECT saga_start('fifty') AS fifty \gset
SELECT saga_await(:fifty) AS fifty;
SELECT count(*) AS steps, count(DISTINCT xact) >= 5 AS five_or_more_transactions
  FROM step_xact WHERE saga_id = :fifty;
ALTER SYSTEM RESET saga.batch_size;
SELECT pg_reload_conf();

-- A user-defined orchestrated saga whose compensation fails twice: the
-- workers retry it with backoff until it succeeds.
CREATE SEQUENCE undo_tries;
CREATE TABLE undo_log (what text);
CREATE FUNCTION do_it(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"done": true}'::jsonb $$;
CREATE FUNCTION undo_it(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('undo_tries') <= 2 THEN
        RAISE EXCEPTION 'undo failed, try again';
    END IF;
    INSERT INTO undo_log VALUES ('undone');
    RETURN NULL;
END $$;
CREATE FUNCTION refuse(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_reject('refused');
    RETURN NULL;
END $$;
SELECT saga_define('undoable', saga_step('do', 'do_it(jsonb)', 'undo_it(jsonb)'),
                               saga_step('refuse', 'refuse(jsonb)'));
SELECT saga_start('undoable') AS undoable \gset
SELECT saga_await(:undoable, '30 seconds');
SELECT reason, attempts FROM saga_instances WHERE id = :undoable;
SELECT * FROM undo_log;

-- A paused service: the deadline compensates, through the workers' sweep.
SELECT saga_pause_consumer('inventory');
SELECT saga_place_order('alice', 'widget', 1, 1.00, deadline => '300 ms') AS late \gset
SELECT saga_place_order('alice', 'widget', 1, 1.00, 'orchestration', deadline => '300 ms') AS olate \gset
SELECT saga_await(:late) AS choreographed, saga_await(:olate) AS orchestrated;
SELECT reason FROM saga_orders WHERE order_id IN (:late, :olate);
SELECT count(*) AS refunded FROM saga.payment WHERE order_id IN (:late, :olate) AND status = 'refunded';
SELECT saga_resume_consumer('inventory');
-- once back, inventory handles SagaAborted (nothing to release)
SELECT wait_for($$(SELECT count(*) FROM saga.delivery WHERE status = 'pending') = 0$$) AS caught_up;

-- saga_await times out with 'pending' when nothing runs the saga.
SELECT saga_subscribe('nobody', 'NeverHandled', 'saga.order_on_payment_failed(saga.event)') IS NOT NULL AS subscribed;
SELECT saga_begin('limbo') AS limbo \gset
SELECT saga_await(:limbo, '200 milliseconds');
SELECT saga_unsubscribe('nobody', 'NeverHandled');
-- Cancelled with nobody listening, it has failed at once; cancelled with
-- only a compensation listening, a saga fails once the workers ran it,
-- although no handler calls saga_fail(), and saga_await sees it.
SELECT saga_cancel(:limbo, 'nobody listens');
SELECT saga_await(:limbo, '5 s'), reason FROM saga_instances WHERE id = :limbo;
CREATE TABLE errand_undone (saga_id bigint);
CREATE FUNCTION undo_errand(e saga.event) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO errand_undone VALUES (e.saga_id) $$;
SELECT saga_subscribe('errands', 'SagaAborted', 'undo_errand(saga.event)',
                      forward => false, saga_type => 'errand') > 0 AS subscribed;
SELECT saga_begin('errand') AS errand \gset
SELECT saga_cancel(:errand, 'changed my mind');
SELECT saga_await(:errand, '10 s') AS errand, reason FROM saga_instances WHERE id = :errand;
SELECT count(*) AS undone FROM errand_undone WHERE saga_id = :errand;
SELECT saga_unsubscribe('errands', 'SagaAborted');

-- A burst: 200 orders, half of them orchestrated, all awaited.
SELECT count(*) FROM (SELECT saga_set_balance('c' || i, 1000) FROM generate_series(1, 20) i) t;
SELECT saga_set_stock('bulk', 150);
CREATE TABLE burst AS
    SELECT saga_place_order('c' || (i % 20 + 1), 'bulk', 1, 1.00,
                            CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END) AS id
      FROM generate_series(1, 200) i;
SELECT saga_await(id, '30 seconds') AS status, count(*) FROM burst GROUP BY 1 ORDER BY 1;
SELECT saga_stock('bulk');
SELECT sum(saga_balance('c' || i)) FROM generate_series(1, 20) i;
SELECT count(*) FILTER (WHERE status = 'refunded') AS refunds FROM saga.payment p JOIN burst b ON b.id = p.order_id;
-- No delivery ran twice, none is left pending.
SELECT status, count(*) FROM saga.delivery WHERE status <> 'done' GROUP BY 1;
SELECT status, count(*) FROM saga.instance GROUP BY 1 ORDER BY 1;

-- The workers and the counters, from shared memory.
SELECT count(*) AS workers, bool_and(state IN ('idle', 'busy')) AS running,
       sum(deliveries) > 0 AS worked, bool_and(pid IS NOT NULL) AS have_pids
  FROM saga_workers WHERE database = current_database();
SELECT count(*) AS launchers FROM saga_workers WHERE state = 'launcher';
-- (a transaction's counts reach shared memory just after its commit is
-- visible: on a loaded machine, wait for the last ones)
SELECT wait_for($$(SELECT sagas_completed + sagas_failed FROM saga_stats) =
                  (SELECT count(*) FROM saga.instance WHERE status <> 'pending')$$) AS counted;
SELECT sagas_started = (SELECT count(*) FROM saga.instance) AS started_counted,
       sagas_completed = (SELECT count(*) FROM saga.instance WHERE status = 'completed') AS completed_counted,
       sagas_failed = (SELECT count(*) FROM saga.instance WHERE status = 'failed') AS failed_counted,
       deliveries = (SELECT count(*) FROM saga.delivery WHERE status = 'done') AS deliveries_counted,
       events_published = (SELECT count(*) FROM saga.event) AS events_counted,
       sagas_aborted, workers
  FROM saga_stats;

-- A lock on the extension's tables (a TRUNCATE, an index build) delays the
-- workers but does not kill them: only handlers give up on locks.
SELECT string_agg(pid::text, ',' ORDER BY pid) AS pids_before FROM saga_workers_here \gset
BEGIN;
LOCK TABLE saga.delivery, saga.instance IN ACCESS EXCLUSIVE MODE;
SELECT pg_sleep(1.5);
COMMIT;
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS after_lock \gset
SELECT saga_await(:after_lock);
SELECT string_agg(pid::text, ',' ORDER BY pid) = :'pids_before' AS same_workers FROM saga_workers_here;

-- saga.workers is reloaded on SIGHUP.
ALTER SYSTEM SET saga.workers = 3;
SELECT pg_reload_conf();
SELECT wait_for('(SELECT count(*) FROM saga_workers_here) = 3') AS three_workers;
ALTER SYSTEM RESET saga.workers;
SELECT pg_reload_conf();
SELECT wait_for('(SELECT count(*) FROM saga_workers_here) = 2') AS two_workers_again;

-- A terminated worker is restarted and goes on working.
SELECT pid AS victim FROM saga_workers_here LIMIT 1 \gset
SELECT pg_terminate_backend(:victim);
SELECT wait_for(format('(SELECT count(*) FROM saga_workers_here WHERE pid <> %s) = 2', :victim)) AS replaced;
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS after_restart \gset
SELECT saga_await(:after_restart);

-- A database created after start-up is served once the extension is created.
CREATE DATABASE saga_regress_late;
\c saga_regress_late
CREATE FUNCTION wait_for(cond text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    ok boolean;
BEGIN
    FOR i IN 1..300 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXECUTE 'SELECT ' || cond INTO ok;
        IF ok THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;
-- (a worker may look in, right after CREATE DATABASE, and leave: none stays)
SELECT wait_for($$(SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'saga worker' AND datname = current_database()) = 0$$)
       AS no_worker_stays;
CREATE EXTENSION saga;
SELECT saga_set_balance('late', 10);
SELECT saga_set_stock('thing', 1);
SELECT saga_place_order('late', 'thing', 1, 10.00) AS late \gset
SELECT saga_await(:late);
SELECT saga_balance('late'), saga_stock('thing');

-- After DROP EXTENSION its workers leave, without errors.
DROP EXTENSION saga;
SELECT wait_for($$(SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'saga worker' AND datname = current_database()) = 0$$)
       AS workers_gone;
CREATE EXTENSION saga;
SELECT wait_for($$(SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'saga worker' AND datname = current_database()) = 2$$)
       AS workers_back;

-- DROP DATABASE goes through although the database has workers.
\c saga_workers_regression
SELECT wait_for($$(SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'saga worker' AND datname = 'saga_regress_late') = 2$$)
       AS late_served;
DROP DATABASE saga_regress_late;
SELECT count(*) AS workers_of_dropped_db FROM pg_stat_activity WHERE datname = 'saga_regress_late';
-- and the other database's workers are still there
SELECT wait_for('(SELECT count(*) FROM saga_workers_here) = 2') AS still_two;
