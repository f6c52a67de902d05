/* saga--1.1--1.2.sql: upgrade the saga extension from 1.1 to 1.2 */

\echo Use "ALTER EXTENSION saga UPDATE TO '1.2'" to load this file. \quit

/*
 * 1.2 keeps the engine's promise off the beaten path: every saga ends,
 * completed or compensated; nothing forward runs after an abort; nothing
 * is applied twice.  Each section below belongs to one concern.
 */

------------------------------------------------------------------------------
-- Sagas end by the engine's own rules (aborts, deadlines, late events)
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Workers: why they exit
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- What a saga's owner sees
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- The history checker: saga_check()
------------------------------------------------------------------------------

/*
 * saga_check() reads the engine's record of every saga and returns one row
 * per broken promise: a saga that has not ended within its bound, a
 * completed saga that was compensated or aborted, a step run twice, a
 * failed saga whose steps were not each undone once in reverse order,
 * forward work after an abort, saga_status() or saga_await() disagreeing
 * with the record.  It is what the randomized test (t/011_checker.pl) asks
 * after every run, shipped so that users can ask it of their own database.
 *
 * It judges only what the record can tell.  In orchestration the engine
 * knows each step and its compensation (saga.definition_step, one
 * saga.step_run row per run), so it checks the whole shape of a saga's
 * history.  In choreography it cannot know which handler undoes which: it
 * checks what is generic (no compensation in a completed saga, no forward
 * delivery handled after the abort or the end, no compensation given up as
 * a dead letter).  Sagas purged by retention have lost their history and
 * are judged by their instance row alone.
 *
 * A step_run row counts as a step done (or compensated) only if its
 * outcome is 'ok'; 'rejected' and 'error' end a forward step that failed;
 * any other outcome is an attempt that will be tried again.
 *
 * It reads every role's sagas, so it is for the DBA (see the README).
 */
CREATE FUNCTION saga_check(ended_within interval DEFAULT '1 hour',
                           deadline_slack interval DEFAULT '1 second')
RETURNS TABLE (saga_id bigint, violation text, detail text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    read_committed boolean :=
        current_setting('transaction_isolation') = 'read committed';
BEGIN
    IF ended_within IS NULL OR ended_within < interval '0' THEN
        RAISE EXCEPTION 'ended_within must be an interval of zero or more, not %',
                        coalesce(ended_within::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF deadline_slack IS NULL OR deadline_slack < interval '0' THEN
        RAISE EXCEPTION 'deadline_slack must be an interval of zero or more, not %',
                        coalesce(deadline_slack::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- not_ended: pending for longer than the bound
    RETURN QUERY
    SELECT i.id, 'not_ended'::text,
           format('pending for %s (bound %s)', date_trunc('second', now() - i.started_at),
                  ended_within)
           || CASE WHEN i.aborted_at IS NOT NULL
                   THEN format('; aborted %s ago', date_trunc('second', now() - i.aborted_at))
                   WHEN i.deadline < now()
                   THEN format('; deadline passed %s ago', date_trunc('second', now() - i.deadline))
                   ELSE '' END
           || CASE WHEN i.pattern = 'orchestration'
                   THEN format('; phase %s, step %s, attempts %s', i.phase, i.step, i.attempts)
                   ELSE format('; %s deliveries pending, %s dead',
                               (SELECT count(*) FROM saga.event e JOIN saga.delivery d ON d.event_id = e.id
                                 WHERE e.saga_id = i.id AND d.status = 'pending'),
                               (SELECT count(*) FROM saga.event e JOIN saga.delivery d ON d.event_id = e.id
                                 WHERE e.saga_id = i.id AND d.status = 'dead')) END
      FROM saga.instance i
     WHERE i.status = 'pending' AND i.started_at <= now() - ended_within;

    -- failed_without_reason: a failed saga must say why
    RETURN QUERY
    SELECT i.id, 'failed_without_reason'::text,
           format('failed at %s with no reason', i.finished_at)
      FROM saga.instance i
     WHERE i.status = 'failed' AND coalesce(btrim(i.reason), '') = '';

    -- completed_after_abort: an aborted saga must fail
    RETURN QUERY
    SELECT i.id, 'completed_after_abort'::text,
           format('aborted at %s, completed at %s', i.aborted_at, i.finished_at)
      FROM saga.instance i
     WHERE i.status = 'completed' AND i.aborted_at IS NOT NULL;

    -- completed_after_deadline: an orchestrated saga looks at its deadline
    -- before each step and when a step ends, so it cannot complete after it
    -- (but for the moment between that look and writing the end)
    RETURN QUERY
    SELECT i.id, 'completed_after_deadline'::text,
           format('deadline %s, completed at %s (%s late)', i.deadline, i.finished_at,
                  i.finished_at - i.deadline)
      FROM saga.instance i
     WHERE i.status = 'completed' AND i.pattern = 'orchestration'
       AND i.finished_at > i.deadline + deadline_slack;

    -- completed_with_compensation: nothing of a completed saga is undone
    RETURN QUERY
    SELECT i.id, 'completed_with_compensation'::text,
           format('step %s (%s) compensated at %s', r.step_no, r.step, r.started_at)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.status = 'completed' AND i.purged_at IS NULL
       AND r.kind = 'compensation' AND r.outcome = 'ok';
    RETURN QUERY
    SELECT i.id, 'completed_with_compensation'::text,
           format('compensating delivery %s (%s <- %s) handled at %s',
                  d.id, s.consumer, e.event_type, d.delivered_at)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.status = 'completed' AND i.purged_at IS NULL
       AND d.status = 'done' AND NOT s.forward;

    -- completed_incomplete: a completed orchestrated saga did every step,
    -- and none failed
    RETURN QUERY
    SELECT i.id, 'completed_incomplete'::text,
           format('%s of %s steps done; runs: %s', h.done, def.steps, h.runs)
      FROM saga.instance i
      JOIN saga.definition def ON def.name = i.saga_type AND def.version = i.definition_version
      CROSS JOIN LATERAL (
          SELECT count(DISTINCT r.step_no) FILTER (WHERE r.outcome = 'ok') AS done,
                 count(*) FILTER (WHERE r.outcome IN ('rejected', 'error')) AS failed,
                 string_agg(r.step_no || ':' || r.outcome, ',' ORDER BY r.request_seq) AS runs
            FROM saga.step_run r
           WHERE r.saga_id = i.id AND r.kind = 'action') h
     WHERE i.status = 'completed' AND i.pattern = 'orchestration' AND i.purged_at IS NULL
       AND (h.done <> def.steps OR h.failed > 0);

    -- step_twice: a step's action, or its compensation, ran to its end
    -- more than once
    RETURN QUERY
    SELECT r.saga_id, 'step_twice'::text,
           format('%s of step %s (%s) ran %s times: %s', r.kind, r.step_no, min(r.step),
                  count(*), string_agg(r.outcome || ' at ' || r.started_at, ', ' ORDER BY r.request_seq))
      FROM saga.step_run r
     WHERE r.outcome IN ('ok', 'rejected', 'error')
       AND (r.kind = 'action' OR r.outcome = 'ok')
     GROUP BY r.saga_id, r.step_no, r.kind
    HAVING count(*) > 1;

    -- forward_order: forward steps run one after the other from the first,
    -- and only the last may fail
    RETURN QUERY
    SELECT f.saga_id, 'forward_order'::text,
           format('run %s of the forward steps was step %s (%s)', f.rn, f.step_no, f.outcome)
      FROM (SELECT r.saga_id, r.step_no, r.outcome,
                   row_number() OVER w - 1 AS rn,
                   count(*) OVER (PARTITION BY r.saga_id) - 1 AS last
              FROM saga.step_run r
             WHERE r.kind = 'action' AND r.outcome IN ('ok', 'rejected', 'error')
            WINDOW w AS (PARTITION BY r.saga_id ORDER BY r.request_seq)) f
     WHERE f.step_no <> f.rn OR (f.outcome <> 'ok' AND f.rn <> f.last);

    -- forward_after_abort: once a saga is aborted, nothing forward begins
    RETURN QUERY
    SELECT i.id, 'forward_after_abort'::text,
           format('step %s (%s) began at %s, aborted at %s', r.step_no, r.step,
                  r.started_at, i.aborted_at)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.aborted_at IS NOT NULL AND i.purged_at IS NULL
       AND r.kind = 'action' AND r.started_at > i.aborted_at;
    RETURN QUERY
    SELECT i.id, 'forward_after_abort'::text,
           format('delivery %s (%s <- %s) handled at %s, aborted at %s',
                  d.id, s.consumer, e.event_type, d.delivered_at, i.aborted_at)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.aborted_at IS NOT NULL AND i.purged_at IS NULL
       AND d.status = 'done' AND s.forward AND d.delivered_at > i.aborted_at;

    -- forward_after_end: nor once it has ended (aborted or not)
    RETURN QUERY
    SELECT i.id, 'forward_after_end'::text,
           format('step %s (%s) began at %s, saga %s at %s', r.step_no, r.step,
                  r.started_at, i.status, i.finished_at)
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id
     WHERE i.status <> 'pending' AND i.purged_at IS NULL
       AND r.kind = 'action' AND r.started_at > i.finished_at;
    RETURN QUERY
    SELECT i.id, 'forward_after_end'::text,
           format('delivery %s (%s <- %s) handled at %s, saga %s at %s',
                  d.id, s.consumer, e.event_type, d.delivered_at, i.status, i.finished_at)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.status <> 'pending' AND i.purged_at IS NULL
       AND d.status = 'done' AND s.forward AND d.delivered_at > i.finished_at;

    -- compensation_missing: a failed orchestrated saga undid every step it
    -- had done that has a compensation
    RETURN QUERY
    SELECT i.id, 'compensation_missing'::text,
           format('step %s (%s) was done at %s but never compensated', ds.step_no, ds.name,
                  min(r.finished_at))
      FROM saga.instance i
      JOIN saga.step_run r ON r.saga_id = i.id AND r.kind = 'action' AND r.outcome = 'ok'
      JOIN saga.definition_step ds
        ON ds.definition = i.saga_type AND ds.version = i.definition_version
       AND ds.step_no = r.step_no
     WHERE i.status = 'failed' AND i.pattern = 'orchestration' AND i.purged_at IS NULL
       AND ds.compensation IS NOT NULL
       AND NOT EXISTS (SELECT FROM saga.step_run c
                        WHERE c.saga_id = i.id AND c.step_no = r.step_no
                          AND c.kind = 'compensation' AND c.outcome = 'ok')
     GROUP BY i.id, ds.step_no, ds.name;

    -- compensation_extra: nothing is undone that was not done
    RETURN QUERY
    SELECT c.saga_id, 'compensation_extra'::text,
           format('step %s (%s) was compensated at %s but never done', c.step_no, c.step,
                  c.started_at)
      FROM saga.step_run c
     WHERE c.kind = 'compensation' AND c.outcome = 'ok'
       AND NOT EXISTS (SELECT FROM saga.step_run r
                        WHERE r.saga_id = c.saga_id AND r.step_no = c.step_no
                          AND r.kind = 'action' AND r.outcome = 'ok');

    -- compensation_order: compensations run last step first, each after
    -- the forward steps have ended
    RETURN QUERY
    SELECT c.saga_id, 'compensation_order'::text,
           CASE WHEN c.request_seq < c.last_forward
                THEN format('step %s was compensated before the forward steps ended', c.step_no)
                ELSE format('step %s was compensated after step %s', c.step_no, c.prev_step) END
      FROM (SELECT r.saga_id, r.step_no, r.request_seq,
                   lag(r.step_no) OVER (PARTITION BY r.saga_id ORDER BY r.request_seq) AS prev_step,
                   (SELECT max(a.response_seq) FROM saga.step_run a
                     WHERE a.saga_id = r.saga_id AND a.kind = 'action'
                       AND a.outcome IN ('ok', 'rejected', 'error')) AS last_forward
              FROM saga.step_run r
             WHERE r.kind = 'compensation' AND r.outcome = 'ok') c
     WHERE c.step_no >= c.prev_step OR c.request_seq < c.last_forward;

    -- compensation_dead: a compensating delivery given up after
    -- saga.max_attempts: that part of the saga stays done
    RETURN QUERY
    SELECT i.id, 'compensation_dead'::text,
           format('delivery %s (%s <- %s) dead after %s attempts: %s',
                  d.id, s.consumer, e.event_type, d.attempts, d.last_error)
      FROM saga.instance i
      JOIN saga.event e ON e.saga_id = i.id
      JOIN saga.delivery d ON d.event_id = e.id
      JOIN saga.subscription s ON s.id = d.subscription_id
     WHERE i.purged_at IS NULL AND d.status = 'dead' AND NOT s.forward;

    -- status_mismatch, await_mismatch: an ended saga's status, as the
    -- functions report it, is its record's (saga_await needs READ
    -- COMMITTED, and returns at once for an ended saga)
    RETURN QUERY
    SELECT i.id, 'status_mismatch'::text,
           format('saga_status() says %s, the record %s', st.s, i.status)
      FROM saga.instance i
      CROSS JOIN LATERAL (SELECT @extschema@.saga_status(i.id) AS s) st
     WHERE i.status <> 'pending' AND st.s IS DISTINCT FROM i.status;
    IF read_committed THEN
        RETURN QUERY
        SELECT i.id, 'await_mismatch'::text,
               format('saga_await() says %s, the record %s', aw.s, i.status)
          FROM saga.instance i
          CROSS JOIN LATERAL (SELECT @extschema@.saga_await(i.id, interval '0') AS s) aw
         WHERE i.status <> 'pending' AND aw.s IS DISTINCT FROM i.status;
    END IF;
END
$$;
COMMENT ON FUNCTION saga_check(interval, interval) IS
'one row per violation of the engine''s promises in the record of every saga: not_ended, failed_without_reason, completed_after_abort, completed_after_deadline, completed_with_compensation, completed_incomplete, step_twice, forward_order, forward_after_abort, forward_after_end, compensation_missing, compensation_extra, compensation_order, compensation_dead, status_mismatch, await_mismatch';
REVOKE ALL ON FUNCTION saga_check(interval, interval) FROM PUBLIC;
