--
-- Operating it (1.1): the Mermaid trace, the backlog, retention, and the
-- shared-memory views when the library is not preloaded.
--
CREATE EXTENSION saga;
SELECT extversion FROM pg_extension WHERE extname = 'saga';
SELECT saga_set_balance('alice', 100.00);
SELECT saga_set_stock('widget', 10);
SELECT saga_set_stock('gadget', 0);

SELECT saga_place_order('alice', 'widget', 1, 10.00) AS chor_ok \gset
SELECT saga_place_order('alice', 'gadget', 1, 10.00) AS chor_nostock \gset
SELECT saga_place_order('alice', 'gadget', 1, 10.00, 'orchestration') AS orch_nostock \gset

-- The backlog, before anything ran: one OrderCreated waits for payment,
-- one orchestrated saga waits for the payment service.
SELECT kind, consumer, pending, lag >= '0' AS has_lag, paused FROM saga_backlog
 WHERE pending > 0 ORDER BY kind, consumer;
SELECT saga_run_pending();
SELECT kind, consumer, pending FROM saga_backlog WHERE pending > 0;
-- with nothing waiting, every consumer and every orchestrated service is
-- still listed, at zero (1.2: services used to vanish)
SELECT kind, consumer, pending, lag, paused FROM saga_backlog ORDER BY kind, consumer;

-- The traces as Mermaid sequence diagrams, shaped like the seed's.
SELECT saga_trace_mermaid(:chor_ok);
SELECT saga_trace_mermaid(:chor_nostock);
SELECT regexp_replace(saga_trace_mermaid(:orch_nostock), '/payments/\d+', '/payments/<id>');
-- names that Mermaid would misread are escaped
SELECT saga_subscribe('a; b #1', 'OrderCreated', 'saga.order_on_inventory_reservation_failed(saga.event)');
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS odd \gset
SELECT saga_run_pending();
SELECT line FROM regexp_split_to_table(saga_trace_mermaid(:odd), E'\n') line WHERE line LIKE '%#%';
SELECT saga_unsubscribe('a; b #1', 'OrderCreated');
\set VERBOSITY terse
SELECT saga_trace_mermaid(-1);
\set VERBOSITY default

-- Without shared_preload_libraries, the counters are unknown and no worker runs.
SELECT database = current_database() AS here, sagas_started, deliveries, workers FROM saga_stats;
SELECT count(*) AS workers FROM saga_workers;

-- Retention: a finished saga's events, deliveries and step records go;
-- its instance (status, outcome) stays, and its trace keeps start and end.
SELECT count(*) AS events, (SELECT count(*) FROM saga.delivery) AS deliveries,
       (SELECT count(*) FROM saga.step_run) AS step_runs FROM saga.event;
-- a saga with a delivery still pending is left alone
SELECT saga_pause_consumer('audit');
CREATE FUNCTION audit(e saga.event) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT saga_subscribe('audit', 'OrderCreated', 'audit(saga.event)', forward => false);
SELECT saga_place_order('alice', 'gadget', 1, 1.00) AS waiting_audit \gset
SELECT saga_run_pending();
SELECT saga_order_status(:waiting_audit);
-- an event outside any saga, delivered
SELECT saga_publish('Loose', '{}');
SELECT saga_purge('0 s');
SELECT id = :waiting_audit AS waiting_audit, status, purged_at IS NOT NULL AS purged
  FROM saga_instances ORDER BY id;
SELECT e.saga_id = :waiting_audit AS waiting_audit, count(*) AS events
  FROM saga.event e GROUP BY 1;
SELECT count(*) AS step_runs FROM saga.step_run;
SELECT seq, sender, receiver, message FROM saga_trace(:chor_ok);
SELECT saga_order_status(:chor_ok), saga_order_status(:orch_nostock);
SELECT saga_purge('0 s');          -- nothing more
-- once the audit consumer is back and done, that saga goes too
SELECT saga_resume_consumer('audit');
SELECT saga_run_pending();
SELECT saga_purge('0 s');
SELECT count(*) AS events_left FROM saga.event;
-- nothing is younger than a day
SELECT saga_place_order('alice', 'widget', 1, 1.00) AS young \gset
SELECT saga_run_pending();
SELECT saga_purge('1 day'), saga_purge();
SHOW saga.retention;
\set VERBOSITY terse
SELECT saga_purge('-1 s');
\set VERBOSITY default

DROP EXTENSION saga CASCADE;
