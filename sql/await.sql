--
-- saga_await() returns a pending saga's status, 'pending', once its timeout
-- has passed: at once with a zero timeout, after sleeping with a short one.
-- The library is not preloaded here: saga_await looks every 10 ms (with
-- shared memory, it sleeps on a condition variable: t/010_worker_errors.pl).
--
CREATE EXTENSION saga;

SELECT saga_begin('never_finished') AS pending \gset
SELECT saga_await(:pending, '0 s') AS zero_timeout,
       saga_await(:pending, '20 ms') AS short_timeout;
SELECT clock_timestamp() AS t0 \gset
SELECT saga_await(:pending, '100 ms') AS after_100ms,
       clock_timestamp() - :'t0' >= interval '100 ms' AS waited;

-- finished, it returns the outcome at once
SELECT saga_complete(:pending);
SELECT clock_timestamp() AS t0 \gset
SELECT saga_await(:pending, '1 hour') AS finished,
       clock_timestamp() - :'t0' < interval '1 minute' AS at_once;

DROP EXTENSION saga;
