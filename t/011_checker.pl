# A model-based, randomized test of the engine's promises: every saga ends,
# completed or compensated; nothing forward runs after an abort; nothing is
# applied twice.
#
# From a seed it generates saga definitions of 1 to 6 steps, some without
# compensation, and for each saga of either pattern the fate of each step:
# success, a business rejection, a technical error some times then success
# (or until it is given up), a compensation that fails some times (or until
# an operator fixes it), a step that outlives the saga's deadline (within
# the time limit of a step: slow, not hanging).  Clients
# start the sagas, some with deadlines, and cancel some at random moments;
# a worker is killed with SIGKILL and the server stopped in immediate mode
# in the middle.  An operator fixes what is stuck, as a person would.
#
# Two hostile neighbours share the database with them:
#	- hanging participants: a few percent of the sagas have a step, or a
#	  compensation, that hangs (pg_sleep far beyond saga.handler_timeout)
#	  some times then succeeds, or every time until it is given up.  The
#	  time limit cancels it, which is a technical error like any other (the
#	  attempt counts towards saga.max_attempts), so these fates are the
#	  "technical error" ones above, and the model predicts them alike.  A
#	  few sagas have a step that hangs until a terminator session ends its
#	  worker with pg_terminate_backend, once or twice; the step then
#	  succeeds.  Whether such an attempt counts depends on the worker's
#	  careful mode, so for them the model asserts the outcome only (and
#	  that each was terminated as often as its plan says);
#	- a held lock: a locker session takes the account rows of the sagas
#	  that have a "customer" (a few percent; their steps and compensations
#	  charge and refund that row) FOR UPDATE at random moments, for a
#	  random 0.5 to 3 s, and holds each until a saga that does not need
#	  the row has ended meanwhile (or none is left).  A lock wait is not a failure and never counts as an
#	  attempt: those sagas must end exactly as their plan says, the
#	  accounts must match the ledger, and no hold may wait in vain for the
#	  other sagas to end (they must not be held up by it).
#
# Then three judges look at the result:
#	- saga_check(), the extension's own history checker, on the engine's
#	  record (it must find nothing);
#	- the test's business ledger, where every step and handler writes its
#	  effect and its compensation: every effect of a failed saga undone
#	  once, last first; none of a completed saga undone; no effect after
#	  the abort; nothing applied twice;
#	- the model: a saga that was neither cancelled nor given a deadline
#	  ends exactly as its plan says (completed, or failed at the first step
#	  that says no, with the steps before it undone).
# And saga_await() and saga_status() must agree with the record.  A check
# of the mix makes sure that the run had each fate in it: a judge that saw
# no hang cancelled, no worker terminated, no lock wait proves nothing.
#
# Environment:
#	SAGA_CHECK_SEED     the seed (default: random; printed at the start and
#	                    on failure, so that a failing run can be repeated
#	                    with the same sagas; the timing is not repeatable)
#	SAGA_CHECK_SAGAS    how many sagas (default 3000)
#	SAGA_CHECK_CRASHES  how many crashes, alternately kill -9 of a worker and
#	                    an immediate shutdown (default 2)
# The soak mode of the README is the same test with more of both.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $SEED = $ENV{SAGA_CHECK_SEED} // int(rand(2**31));
my $SAGAS = $ENV{SAGA_CHECK_SAGAS} // 3000;
my $CRASHES = $ENV{SAGA_CHECK_CRASHES} // 2;
my $CLIENTS = 3;
my $PER_TX = 10;           # sagas started per client transaction
my $SHAPES = 12;           # saga definitions
my $MAX_ATTEMPTS = 4;      # saga.max_attempts
my $GIVE_UP = 99;          # a failure count that outlasts saga.max_attempts
my $HANDLER_TIMEOUT = 1000; # saga.handler_timeout, ms: a hang is cancelled
my $CUSTOMERS = 3;         # accounts the locker takes at random moments
# sagas whose step hangs until its worker is terminated (both patterns)
my $KILLS = $SAGAS >= 20 ? int($SAGAS / 1500) + 2 : 0;

diag("SAGA_CHECK_SEED=$SEED SAGA_CHECK_SAGAS=$SAGAS SAGA_CHECK_CRASHES=$CRASHES");
srand($SEED);
my $started = time;

my $node = saga_node('checker', qq{
max_connections = 40
saga.workers = 2
saga.poll_interval = 100
saga.max_attempts = $MAX_ATTEMPTS
saga.retry_backoff = 10
saga.handler_timeout = $HANDLER_TIMEOUT
restart_after_crash = on
log_lock_waits = on
deadlock_timeout = 100ms
});

##############################################################################
# The services: steps and handlers of an ordinary role that do what their
# saga's plan says and write what they did in a ledger.
##############################################################################

$node->safe_psql('postgres', q{
CREATE EXTENSION saga;
CREATE ROLE chk_app LOGIN;
GRANT EXECUTE ON FUNCTION
    saga_publish(text, jsonb, bigint, text),
    saga_subscribe(text, text, regprocedure, text, boolean, text),
    saga_begin(text, interval), saga_complete(bigint), saga_fail(bigint, text),
    saga_define(text, saga.step[]), saga_start(text, jsonb, interval),
    saga_cancel(bigint, text)
TO chk_app;
-- A step that fails a given number of times counts its attempts in the
-- engine's record (what it writes itself is rolled back with the failure);
-- one that outlives its deadline reads the deadline.
-- The locker polls for sagas that ended while it holds a lock.
GRANT SELECT (id, status, attempts, deadline, finished_at) ON saga.instance TO chk_app;
GRANT SELECT (event_id, subscription_id, attempts) ON saga.delivery TO chk_app;
-- for the locker, which looks for the work its holds block
GRANT SELECT (blocked_since) ON saga.instance, saga.delivery TO chk_app;
GRANT SELECT (id, saga_id) ON saga.event TO chk_app;
CREATE SCHEMA chk AUTHORIZATION chk_app;
});

my $services = q{
SET ROLE chk_app;

-- One row per saga: its pattern, definition, customer (whose account its
-- steps charge, if any), and per step
-- {"o": ok | reject | error | hang | kill | slow,
--  "n": failures (error: raises, hang: hangs) before success, or for kill
--       how many times its worker is terminated,
--  "c": has a compensation, "cf": failures of the compensation,
--  "ch": the compensation's failures are hangs}.
CREATE TABLE chk.plan (
    n          integer PRIMARY KEY,
    saga_id    bigint NOT NULL UNIQUE,
    pattern    text NOT NULL,
    def        integer NOT NULL,
    nsteps     integer NOT NULL,
    steps      jsonb NOT NULL,
    deadline_ms integer,
    cancel_planned boolean NOT NULL,
    batch      integer NOT NULL,
    customer   integer
);
-- The customers' accounts: a step done charges one, a compensation refunds
-- it.  The locker holds these rows at random moments.
CREATE TABLE chk.account (customer integer PRIMARY KEY, balance integer NOT NULL DEFAULT 0);
-- The locker's holds: which account, from when, until when (NULL: a crash
-- ended it), how many sagas of no customer ended meanwhile and how many
-- were still pending at its end, whether the end of the run cut it short,
-- and whether it saw its customer's deliveries and steps blocked (noted
-- only while blocked: a delivery or step that gets past the lock forgets).
CREATE TABLE chk.hold (id bigserial, customer integer, held_from timestamptz, held_until timestamptz,
                       others_ended bigint, others_pending bigint, stopped boolean,
                       blocked_deliveries boolean, blocked_steps boolean);
-- The terminator's victims: the worker it terminated while step k of a
-- saga hung (written by the terminator before it terminates).
CREATE TABLE chk.killed (saga_id bigint, k integer, pid integer,
                         at timestamptz DEFAULT clock_timestamp());
-- Which neighbours are to stop.
CREATE TABLE chk.stop (who text PRIMARY KEY);
-- What the steps did and undid.  No unique key on purpose: an effect
-- applied twice shows up as two rows.
CREATE TABLE chk.ledger (
    seq     bigserial PRIMARY KEY,
    saga_id bigint NOT NULL,
    k       integer NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('do', 'undo')),
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The operator's fixes of compensations that fail until fixed.
CREATE TABLE chk.fixed (saga_id bigint NOT NULL, k integer NOT NULL);
CREATE TABLE chk.cancel (n integer, saga_id bigint, cancelled boolean,
                         at timestamptz DEFAULT clock_timestamp());
CREATE TABLE chk.awaited (saga_id bigint, status text, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE chk.sub (consumer text PRIMARY KEY, id integer NOT NULL);

-- Sleep until a moment after the saga's deadline (a step that outlives it),
-- but not into saga.handler_timeout: this is a slow step, not a hanging one.
CREATE FUNCTION chk.outlive_deadline(sid bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    dl timestamptz;
BEGIN
    SELECT deadline INTO dl FROM saga.instance WHERE id = sid;
    IF dl IS NOT NULL THEN
        PERFORM pg_sleep(least(0.8, greatest(0, extract(epoch FROM dl - clock_timestamp())) + 0.3));
    END IF;
END $$;

-- Hang: only saga.handler_timeout (or a terminated worker) ends this.
CREATE FUNCTION chk.hang() RETURNS void LANGUAGE sql AS 'SELECT pg_sleep(600)';

-- Hang until the terminator has ended the worker running step k of a saga
-- the given number of times.  The terminator finds the hang by its
-- advisory lock (the saga and the step) and when it began by the
-- application_name.
CREATE FUNCTION chk.hang_until_killed(sid bigint, k integer, times integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM chk.killed c WHERE c.saga_id = sid AND c.k = hang_until_killed.k) >= times THEN
        RETURN;
    END IF;
    PERFORM set_config('application_name',
                       'chk_hang ' || extract(epoch FROM clock_timestamp()), true);
    PERFORM pg_advisory_xact_lock(sid::integer, 1000 + k);
    PERFORM chk.hang();
END $$;

-- Charge (or refund) a customer's account for a step.
CREATE FUNCTION chk.charge(customer integer, amount integer) RETURNS void LANGUAGE sql AS $$
    UPDATE chk.account a SET balance = a.balance + amount WHERE a.customer = charge.customer
$$;

-- Does the compensation of step k fail this time?
CREATE FUNCTION chk.undo_fails(sid bigint, st jsonb, k integer, tries integer)
RETURNS boolean LANGUAGE sql AS $$
    SELECT CASE WHEN (st->>'cf')::integer >= 99
                THEN NOT EXISTS (SELECT FROM chk.fixed f WHERE f.saga_id = sid AND f.k = undo_fails.k)
                ELSE tries < (st->>'cf')::integer END
$$;

-- Undo step k of a saga if it was done and not undone yet.
CREATE FUNCTION chk.undo(p chk.plan, k integer, tries integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    st jsonb := p.steps->k;
BEGIN
    IF NOT (st->>'c')::boolean
       OR NOT EXISTS (SELECT FROM chk.ledger l WHERE l.saga_id = p.saga_id AND l.k = undo.k AND l.kind = 'do')
       OR EXISTS (SELECT FROM chk.ledger l WHERE l.saga_id = p.saga_id AND l.k = undo.k AND l.kind = 'undo') THEN
        RETURN;
    END IF;
    IF chk.undo_fails(p.saga_id, st, k, tries) THEN
        IF (st->>'ch')::boolean THEN
            PERFORM chk.hang();
        END IF;
        RAISE EXCEPTION 'compensation of step % of saga % is broken (attempt %)', k, p.saga_id, tries + 1;
    END IF;
    PERFORM chk.charge(p.customer, -1);
    INSERT INTO chk.ledger (saga_id, k, kind) VALUES (p.saga_id, k, 'undo');
END $$;

-- Orchestration: step k's action and compensation.
CREATE FUNCTION chk.o_act(data jsonb, k integer) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    sid bigint := (data->>'saga_id')::bigint;
    st jsonb;
    cust integer;
    tries integer;
BEGIN
    SELECT p.steps->k, p.customer INTO st, cust FROM chk.plan p WHERE p.saga_id = sid;
    SELECT attempts INTO tries FROM saga.instance WHERE id = sid;
    IF st->>'o' IN ('error', 'hang') AND tries < (st->>'n')::integer THEN
        IF st->>'o' = 'hang' THEN
            PERFORM chk.hang();
        END IF;
        RAISE EXCEPTION 'step % of saga % is broken (attempt %)', k, sid, tries + 1;
    ELSIF st->>'o' = 'reject' THEN
        PERFORM saga_reject(format('step %s said no', k));
    ELSIF st->>'o' = 'slow' THEN
        PERFORM chk.outlive_deadline(sid);
    ELSIF st->>'o' = 'kill' THEN
        PERFORM chk.hang_until_killed(sid, k, (st->>'n')::integer);
    END IF;
    PERFORM chk.charge(cust, 1);
    INSERT INTO chk.ledger (saga_id, k, kind) VALUES (sid, k, 'do');
    RETURN jsonb_build_object('s' || k, true);
END $$;

CREATE FUNCTION chk.o_undo(data jsonb, k integer) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    sid bigint := (data->>'saga_id')::bigint;
    p chk.plan;
    tries integer;
BEGIN
    SELECT * INTO p FROM chk.plan WHERE saga_id = sid;
    SELECT attempts INTO tries FROM saga.instance WHERE id = sid;
    IF NOT EXISTS (SELECT FROM chk.ledger l WHERE l.saga_id = sid AND l.k = o_undo.k AND l.kind = 'do') THEN
        RAISE EXCEPTION 'saga % compensates step %, which it never did', sid, k;
    END IF;
    IF chk.undo_fails(sid, p.steps->k, k, tries) THEN
        IF (p.steps->k->>'ch')::boolean THEN
            PERFORM chk.hang();
        END IF;
        RAISE EXCEPTION 'compensation of step % of saga % is broken (attempt %)', k, sid, tries + 1;
    END IF;
    PERFORM chk.charge(p.customer, -1);
    INSERT INTO chk.ledger (saga_id, k, kind) VALUES (sid, k, 'undo');
    RETURN jsonb_build_object('u' || k, true);
END $$;

-- Choreography: Step<k> is handled by step k, which publishes Step<k+1>
-- (or Done) or, saying no, Failed<k>; Failed<k> is handled by the
-- compensation of step k-1, which publishes Failed<k-1>; Failed0 fails the
-- saga.  SagaAborted undoes whatever is done, last first.  The handlers of
-- one saga take its plan's row lock, one at a time.
-- (A delivery published in the worker's batch that runs it has no row
-- until it is handled: its first attempt, 0 before.)
CREATE FUNCTION chk.attempts(e saga.event, consumer text) RETURNS integer LANGUAGE sql AS $$
    SELECT coalesce((SELECT d.attempts FROM saga.delivery d
                      WHERE d.event_id = e.id
                        AND d.subscription_id = (SELECT s.id FROM chk.sub s
                                                  WHERE s.consumer = attempts.consumer)), 0)
$$;

CREATE FUNCTION chk.c_step(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    k integer := (e.payload->>'k')::integer;
    p chk.plan;
    st jsonb;
    tries integer := chk.attempts(e, 'step' || (e.payload->>'k'));
BEGIN
    SELECT * INTO p FROM chk.plan WHERE saga_id = e.saga_id FOR UPDATE;
    st := p.steps->k;
    IF st->>'o' IN ('error', 'hang') AND tries < (st->>'n')::integer THEN
        IF st->>'o' = 'hang' THEN
            PERFORM chk.hang();
        END IF;
        RAISE EXCEPTION 'step % of saga % is broken (attempt %)', k, e.saga_id, tries + 1;
    ELSIF st->>'o' = 'reject' THEN
        PERFORM saga_publish('Failed' || k, jsonb_build_object('k', k, 'reason', format('step %s said no', k)));
        RETURN;
    ELSIF st->>'o' = 'slow' THEN
        PERFORM chk.outlive_deadline(e.saga_id);
    ELSIF st->>'o' = 'kill' THEN
        PERFORM chk.hang_until_killed(e.saga_id, k, (st->>'n')::integer);
    END IF;
    PERFORM chk.charge(p.customer, 1);
    INSERT INTO chk.ledger (saga_id, k, kind) VALUES (e.saga_id, k, 'do');
    IF k + 1 < p.nsteps THEN
        PERFORM saga_publish('Step' || (k + 1), jsonb_build_object('k', k + 1));
    ELSE
        PERFORM saga_publish('Done', '{}');
    END IF;
END $$;

CREATE FUNCTION chk.c_done(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM saga_complete(e.saga_id);
END $$;

CREATE FUNCTION chk.c_failed(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    k integer := (e.payload->>'k')::integer;
    p chk.plan;
    reason text := coalesce(e.payload->>'reason', format('step %s failed', k));
BEGIN
    SELECT * INTO p FROM chk.plan WHERE saga_id = e.saga_id FOR UPDATE;
    IF k > 0 THEN
        PERFORM chk.undo(p, k - 1, chk.attempts(e, 'comp' || k));
        PERFORM saga_publish('Failed' || (k - 1), jsonb_build_object('k', k - 1, 'reason', reason));
    ELSIF saga_status(e.saga_id) = 'pending' THEN
        PERFORM saga_fail(e.saga_id, reason);
    END IF;
END $$;

CREATE FUNCTION chk.c_aborted(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p chk.plan;
    tries integer := chk.attempts(e, 'abort');
BEGIN
    SELECT * INTO p FROM chk.plan WHERE saga_id = e.saga_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR k IN REVERSE p.nsteps - 1 .. 0 LOOP
        PERFORM chk.undo(p, k, tries);
    END LOOP;
END $$;

-- What the clients call.
CREATE FUNCTION chk.start(n integer, batch integer, pattern text, def integer, steps jsonb,
                          deadline_ms integer, cancel_planned boolean, customer integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    dl interval := deadline_ms * interval '1 millisecond';
    id bigint;
BEGIN
    IF pattern = 'orchestration' THEN
        id := saga_start('chk_o_' || def, jsonb_build_object('n', n), dl);
    ELSE
        id := saga_begin('chk_c', dl);
    END IF;
    INSERT INTO chk.plan VALUES (n, id, pattern, def, jsonb_array_length(steps), steps,
                                 deadline_ms, cancel_planned, batch, customer);
    IF pattern = 'choreography' THEN
        PERFORM saga_publish('Step0', '{"k": 0}', id, 'client');
    END IF;
    RETURN id;
END $$;

CREATE FUNCTION chk.cancel(n integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO chk.cancel (n, saga_id, cancelled)
    SELECT p.n, p.saga_id, saga_cancel(p.saga_id, 'cancelled by the test')
      FROM chk.plan p WHERE p.n = cancel.n
$$;

CREATE FUNCTION chk.await(n integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO chk.awaited (saga_id, status)
    SELECT p.saga_id, saga_await(p.saga_id, '20 milliseconds') FROM chk.plan p WHERE p.n = await.n
$$;

-- The locker: at random moments, hold a random customer's account row for
-- a random 0.5 to 3 s, and on until a saga of no customer has ended
-- meanwhile, or none is pending (at most 30 s: a hold that saw none end
-- has held the others up).  Until told to stop.
CREATE PROCEDURE chk.hold_locks(seed float8) LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_customer integer;
    v_hold float8;
    v_from timestamptz;
    v_others bigint;
    v_pending bigint;
    v_stopped boolean;
    v_deliveries boolean;
    v_steps boolean;
BEGIN
    PERFORM setseed(seed);
    LOOP
        PERFORM pg_sleep(0.1 + random() * 1.4);
        EXIT WHEN EXISTS (SELECT FROM chk.stop WHERE who = 'locker');
        v_customer := 1 + floor(random() * (SELECT count(*) FROM chk.account))::integer;
        v_hold := 0.5 + random() * 2.5;
        INSERT INTO chk.hold (customer, held_from) VALUES (v_customer, clock_timestamp())
        RETURNING id INTO v_id;
        COMMIT;
        PERFORM FROM chk.account a WHERE a.customer = v_customer FOR UPDATE;
        v_from := clock_timestamp();
        v_deliveries := false;
        v_steps := false;
        LOOP
            PERFORM pg_sleep(0.05);
            v_deliveries := v_deliveries OR EXISTS (
                SELECT FROM saga.delivery d
                  JOIN saga.event e ON e.id = d.event_id
                  JOIN chk.plan p ON p.saga_id = e.saga_id
                 WHERE p.customer = v_customer AND d.blocked_since IS NOT NULL);
            v_steps := v_steps OR EXISTS (
                SELECT FROM saga.instance i JOIN chk.plan p ON p.saga_id = i.id
                 WHERE p.customer = v_customer AND i.blocked_since IS NOT NULL);
            SELECT count(*) INTO v_others
              FROM saga.instance i JOIN chk.plan p ON p.saga_id = i.id
             WHERE p.customer IS NULL AND i.finished_at > v_from;
            SELECT count(*) INTO v_pending
              FROM saga.instance i JOIN chk.plan p ON p.saga_id = i.id
             WHERE p.customer IS NULL AND i.status = 'pending';
            v_stopped := EXISTS (SELECT FROM chk.stop WHERE who = 'locker');
            EXIT WHEN v_stopped
                   OR ((v_others > 0 OR v_pending = 0)
                       AND clock_timestamp() >= v_from + v_hold * interval '1 second')
                   OR clock_timestamp() >= v_from + interval '30 seconds';
        END LOOP;
        UPDATE chk.hold h
           SET held_from = v_from, held_until = clock_timestamp(), others_ended = v_others,
               others_pending = v_pending, stopped = v_stopped,
               blocked_deliveries = v_deliveries, blocked_steps = v_steps
         WHERE h.id = v_id;
        COMMIT;
    END LOOP;
END $$;
};

# step k's action and compensation as functions of one argument
for my $k (0 .. 5)
{
	$services .= qq{
CREATE FUNCTION chk.o_act$k(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT chk.o_act(data, $k)';
CREATE FUNCTION chk.o_undo$k(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT chk.o_undo(data, $k)';
INSERT INTO chk.sub SELECT 'step$k',
    saga_subscribe('step$k', 'Step$k', 'chk.c_step(saga.event)', on_failure => 'Failed$k');
INSERT INTO chk.sub SELECT 'comp$k',
    saga_subscribe('comp$k', 'Failed$k', 'chk.c_failed(saga.event)', forward => false);
};
}
$services .= q{
INSERT INTO chk.sub SELECT 'finish', saga_subscribe('finish', 'Done', 'chk.c_done(saga.event)');
INSERT INTO chk.sub SELECT 'abort',
    saga_subscribe('abort', 'SagaAborted', 'chk.c_aborted(saga.event)', forward => false);
};

# The definitions: 1 to 6 steps, each with a compensation or not.  Both
# patterns use them (a choreographed saga follows its shape's compensations).
my @shapes;
for my $d (0 .. $SHAPES - 1)
{
	my @comp = map { rand() < 0.75 ? 1 : 0 } 1 .. 1 + int(rand(6));
	push @shapes, \@comp;
	$services .= "SELECT saga_define('chk_o_$d', "
	  . join(', ',
		map {
			"saga_step('s$_', 'chk.o_act$_(jsonb)'"
			  . ($comp[$_] ? ", 'chk.o_undo$_(jsonb)'" : '') . ')'
		} 0 .. $#comp)
	  . ");\n";
}
$services .= "INSERT INTO chk.account (customer) SELECT generate_series(1, $CUSTOMERS);\n";
$node->safe_psql('postgres', $services);

# The terminator (a superuser, who may end workers): a worker that hangs in
# chk.hang_until_killed() is terminated, if its hang began less than 600 ms
# ago (well within saga.handler_timeout: the time limit cannot end it between
# the look and the termination).  The victim is written down first, so that
# the next attempt at the step sees it; pg_terminate_backend waits for the
# worker to be gone, so that no hang is counted twice.
$node->safe_psql('postgres', q{
CREATE PROCEDURE chk.terminate_hangs() LANGUAGE plpgsql AS $$
DECLARE
    v_pids integer[];
BEGIN
    LOOP
        EXIT WHEN EXISTS (SELECT FROM chk.stop WHERE who = 'terminator');
        WITH h AS (
            SELECT DISTINCT l.pid, l.classid::bigint AS saga_id, l.objid::bigint - 1000 AS k
              FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
               AND l.objid::bigint BETWEEN 1000 AND 1099
               AND a.backend_type = 'saga worker'
               AND a.application_name LIKE 'chk_hang %'
               AND to_timestamp(split_part(a.application_name, ' ', 2)::float8)
                   > clock_timestamp() - interval '600 milliseconds'),
        ins AS (
            INSERT INTO chk.killed (saga_id, k, pid) SELECT saga_id, k, pid FROM h
            RETURNING pid)
        SELECT array_agg(pid) INTO v_pids FROM ins;
        COMMIT;
        PERFORM pg_terminate_backend(p, 5000) FROM unnest(v_pids) p;
        PERFORM pg_sleep(0.02);
    END LOOP;
END $$;
});
ok(wait_saga_workers($node, 'postgres', 2), 'two workers serve the database');

##############################################################################
# The sagas and the clients' streams
##############################################################################

# Per client, a list of units: one transaction starting $PER_TX sagas, then
# the cancels due at that moment, a saga_await() of an earlier saga, and a
# short pause.
my @units = map { [] } 1 .. $CLIENTS;
my $nunits = int(($SAGAS + $PER_TX - 1) / $PER_TX);
for my $u (0 .. $nunits - 1)
{
	my $c = $u % $CLIENTS;
	my $unit = { batch => $u, start => [], cancel => [], await => [] };
	push @{ $units[$c] }, $unit;
}
# The sagas whose step hangs until its worker is terminated: spread over
# the first half of the run (each termination slows the workers down for
# a while: a restart, then careful mode), alternately of each pattern.
my %kill_saga = map { 1 + int(($_ + 0.5) * $SAGAS / $KILLS / 2) => $_ } 0 .. $KILLS - 1;
for my $n (1 .. $SAGAS)
{
	my $u = int(($n - 1) / $PER_TX);
	my $c = $u % $CLIENTS;
	my $i = int($u / $CLIENTS);    # its unit in the client's stream
	my $pattern = rand() < 0.5 ? 'orchestration' : 'choreography';
	my $def = int(rand($SHAPES));
	my $deadline = rand() < 0.25 ? 150 + int(rand(1350)) : undef;
	my $customer = rand() < 0.06 ? 1 + int(rand($CUSTOMERS)) : undef;
	my $cancel = rand() < 0.15;
	my $nsteps = @{ $shapes[$def] };
	my @steps;
	for my $k (0 .. $nsteps - 1)
	{
		my $r = rand();
		my ($o, $fails) =
		    $r < 0.70 ? ('ok', 0)
		  : $r < 0.78 ? ('reject', 0)
		  : $r < 0.88 ? ('error', 1 + int(rand($MAX_ATTEMPTS - 1)))
		  : $r < 0.90 ? ('error', $GIVE_UP)
		  : $r < 0.93 && defined $deadline ? ('slow', 0)
		  :             ('ok', 0);
		my $r2 = rand();
		my $cf =
		    $r2 < 0.80 ? 0
		  : $r2 < 0.95 ? 1 + int(rand($MAX_ATTEMPTS - 1))
		  :              $GIVE_UP;
		push @steps, { o => $o, n => $fails, c => $shapes[$def][$k], cf => $cf, ch => 0 };
	}
	# a hanging participant: a step, or a compensation, that hangs instead
	# of raising its technical errors
	if (rand() < 0.015)
	{
		my $st = $steps[ int(rand($nsteps)) ];
		my $fails = rand() < 0.25 ? $GIVE_UP : 1 + int(rand($MAX_ATTEMPTS - 1));
		if ($st->{c} && rand() < 0.3)
		{
			@$st{qw(cf ch)} = ($fails, 1);
		}
		else
		{
			@$st{qw(o n)} = ('hang', $fails);
		}
	}
	# a step that hangs until its worker is terminated, once or twice, in a
	# saga left alone that gets to it
	if (exists $kill_saga{$n})
	{
		$pattern = $kill_saga{$n} % 2 ? 'choreography' : 'orchestration';
		($deadline, $cancel, $customer) = (undef, 0, undef);
		my $k = int(rand($nsteps));
		@{ $steps[$_] }{qw(o n)} = ('ok', 0) for 0 .. $k - 1;
		@{ $steps[$k] }{qw(o n)} = ('kill', 1 + int(rand(2)));
	}
	my $steps = join(', ',
		map {
			sprintf('{"o": "%s", "n": %d, "c": %s, "cf": %d, "ch": %s}',
				$_->{o}, $_->{n}, $_->{c} ? 'true' : 'false',
				$_->{cf}, $_->{ch} ? 'true' : 'false')
		} @steps);
	push @{ $units[$c][$i]{start} },
	  sprintf("SELECT chk.start(%d, %d, '%s', %d, '[%s]', %s, %s, %s);",
		$n, $u, $pattern, $def, $steps,
		$deadline // 'NULL', $cancel ? 'true' : 'false', $customer // 'NULL');
	if ($cancel)
	{
		# at a random moment: right after its start, or a few units later
		my $at = $i + int(rand(4));
		$at = $#{ $units[$c] } if $at > $#{ $units[$c] };
		push @{ $units[$c][$at]{cancel} }, "SELECT chk.cancel($n);";
	}
	if (rand() < 1.0 / $PER_TX)
	{
		my $at = $i + int(rand(3));
		$at = $#{ $units[$c] } if $at > $#{ $units[$c] };
		push @{ $units[$c][$at]{await} }, "SELECT chk.await($n);";
	}
}

# Start the clients on the units whose transaction has not committed yet.
sub start_clients
{
	my ($round) = @_;
	my %done = map { $_ => 1 } split /\n/,
	  $node->safe_psql('postgres', 'SELECT DISTINCT batch FROM chk.plan');
	my @handles;
	for my $c (0 .. $CLIENTS - 1)
	{
		my $sql = '';
		for my $unit (@{ $units[$c] })
		{
			next if $done{ $unit->{batch} };
			$sql .= "BEGIN;\n" . join("\n", @{ $unit->{start} }) . "\nCOMMIT;\n";
			$sql .= join("\n", @{ $unit->{cancel} }, @{ $unit->{await} }, '');
			$sql .= sprintf("SELECT pg_sleep(%.3f);\n", rand(0.02));
		}
		next if $sql eq '';
		my $file = $node->basedir . "/client_${round}_$c.sql";
		open my $fh, '>', $file or die "cannot write $file: $!";
		print $fh $sql;
		close $fh;
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(
			[
				'psql', '-XAtq', '-d',
				$node->connstr('postgres') . ' user=chk_app application_name=chk_client',
				'-f', $file
			],
			'>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		push @handles, [ $h, \$out, \$err ];
	}
	return @handles;
}

# The neighbours: the locker (as the services' role) and the terminator (a
# superuser), each a psql that runs its procedure until told to stop.  A
# crash ends them; they start again with the clients of the next round.
sub start_neighbours
{
	my @handles;
	for my $nb (
		[ 'locker', ' user=chk_app', sprintf('CALL chk.hold_locks(%.6f)', 2 * rand() - 1) ],
		[ 'terminator', '', 'CALL chk.terminate_hangs()' ])
	{
		my ($name, $user, $sql) = @$nb;
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(
			[
				'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d',
				$node->connstr('postgres') . "$user application_name=chk_$name",
				'-c', $sql
			],
			'>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		push @handles, { name => $name, h => $h, err => \$err };
	}
	return @handles;
}

# Tell a neighbour to stop (unless it is gone with a crash) and wait for it.
sub stop_neighbour
{
	my ($name, $crashed, @neighbours) = @_;
	$node->safe_psql('postgres',
		"INSERT INTO chk.stop VALUES ('$name') ON CONFLICT DO NOTHING")
	  unless $crashed;
	for my $nb (grep { $_->{name} eq $name } @neighbours)
	{
		eval { $nb->{h}->finish; };
		diag("$name error: ${ $nb->{err} }")
		  if !$crashed && ${ $nb->{err} } =~ /ERROR|FATAL/;
	}
}

# Wait for the clients; after a crash they are gone, and what they had
# committed stays.
sub reap_clients
{
	my ($crashed, @clients) = @_;
	for my $c (@clients)
	{
		eval { $c->[0]->finish; };
		diag("client error: ${ $c->[2] }")
		  if !$crashed && ${ $c->[2] } =~ /ERROR/;
	}
}

sub sagas_started
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM chk.plan');
}

# Wait until at least $n sagas have started (or the clients are done).
sub wait_started
{
	my ($n) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my ($count, $clients) = split /\|/, $node->safe_psql('postgres',
			"SELECT (SELECT count(*) FROM chk.plan), "
			  . "(SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chk_client')");
		return $count if $count >= $n || $clients == 0;
		usleep(20_000);
	}
	return sagas_started();
}

##############################################################################
# The run: clients, crashes in the middle, and an operator at the end
##############################################################################

for my $crash (1 .. $CRASHES)
{
	my @clients = start_clients($crash);
	my @neighbours = start_neighbours();
	my $at = wait_started(int($SAGAS * $crash / ($CRASHES + 1)));
	if ($crash % 2 == 1)
	{
		# kill -9 a worker, busy if one is
		my $victim = $node->safe_psql('postgres', q{
			SELECT pid FROM pg_stat_activity
			 WHERE backend_type = 'saga worker' AND datname = 'postgres'
			 ORDER BY state = 'active' DESC, pid LIMIT 1});
		ok($victim && kill('KILL', $victim), "crash $crash: killed worker $victim with SIGKILL at $at sagas");
		reap_clients(1, @clients);
		$node->poll_query_until('postgres', 'SELECT true')
		  or die 'server did not come back after the crash';
		stop_neighbour($_, 1, @neighbours) for qw(locker terminator);
	}
	else
	{
		$node->stop('immediate');
		reap_clients(1, @clients);
		$node->start;
		stop_neighbour($_, 1, @neighbours) for qw(locker terminator);
		pass("crash $crash: immediate shutdown at $at sagas");
	}
	ok(wait_saga_workers($node, 'postgres', 2), "crash $crash: two workers are back");
}
my @neighbours = start_neighbours();
reap_clients(0, start_clients('last'));
is(sagas_started(), $SAGAS, "the clients started all $SAGAS sagas");
diag(sprintf('clients done after %.1f s', time - $started));

# The operator: what fails until fixed is fixed, and retried.
my $operator_actions = 0;
sub operate
{
	my $n = $node->safe_psql('postgres', q{
		WITH stuck AS (
		    SELECT i.id FROM saga.instance i
		     WHERE i.status = 'pending' AND i.phase = 'stuck'),
		dead AS (
		    SELECT d.id, e.saga_id FROM saga.delivery d
		      JOIN saga.event e ON e.id = d.event_id
		      JOIN saga.subscription s ON s.id = d.subscription_id
		     WHERE d.status = 'dead' AND NOT s.forward),
		fix AS (
		    INSERT INTO chk.fixed (saga_id, k)
		    SELECT p.saga_id, k FROM chk.plan p, generate_series(0, p.nsteps - 1) k
		     WHERE p.saga_id IN (SELECT id FROM stuck UNION SELECT saga_id FROM dead)
		    RETURNING 1)
		SELECT (SELECT count(*) FROM fix), (SELECT count(*) FROM stuck), (SELECT count(*) FROM dead)});
	my (undef, $stuck, $dead) = split /\|/, $n;
	return 0 if $stuck + $dead == 0;
	$node->safe_psql('postgres', q{
		SELECT count(saga_retry(i.id)) FROM saga.instance i
		 WHERE i.status = 'pending' AND i.phase = 'stuck';
		SELECT count(saga_retry_delivery(d.id)) FROM saga.delivery d
		  JOIN saga.subscription s ON s.id = d.subscription_id
		 WHERE d.status = 'dead' AND NOT s.forward;
	});
	$operator_actions += $stuck + $dead;
	return $stuck + $dead;
}

# Wait until every saga has ended, or nothing has moved for a while.
my ($last_sig, $still_since) = ('', time);
my $quiet_deadline = time + $PostgreSQL::Test::Utils::timeout_default;
while (time < $quiet_deadline)
{
	my $acted = operate();
	my $sig = $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM saga.instance WHERE status = 'pending')
		       || '/' || (SELECT last_value FROM saga.trace_seq)
		       || '/' || (SELECT count(*) FROM chk.ledger)});
	last if $sig =~ m{^0/};
	if ($sig ne $last_sig || $acted)
	{
		($last_sig, $still_since) = ($sig, time);
	}
	last if time - $still_since > 6;
	usleep(200_000);
}
diag(sprintf('sagas settled after %.1f s (%d operator fixes)', time - $started, $operator_actions));
stop_neighbour($_, 0, @neighbours) for qw(locker terminator);
diag('neighbours: '
	  . $node->safe_psql('postgres', q{
		SELECT format('%s holds of a lock (%s s in all; %s blocked deliveries, %s blocked steps), '
		              || '%s workers terminated in a hang, %s hangs cancelled by the time limit',
		              (SELECT count(*) FROM chk.hold WHERE held_until IS NOT NULL),
		              (SELECT round(extract(epoch FROM sum(held_until - held_from))::numeric, 1)
		                 FROM chk.hold),
		              (SELECT count(*) FROM chk.hold WHERE blocked_deliveries),
		              (SELECT count(*) FROM chk.hold WHERE blocked_steps),
		              (SELECT count(*) FROM chk.killed),
		              (SELECT count(*) FROM saga.delivery_failure WHERE error LIKE '%time limit%')
		              + (SELECT count(*) FROM saga.step_run WHERE detail LIKE '%time limit%'))}));

##############################################################################
# The judges
##############################################################################

# A query that lists violations: passes when it returns no row.
sub no_rows
{
	my ($sql, $name) = @_;
	my $out = $node->safe_psql('postgres', $sql);
	is($out, '', $name) or diag("violations:\n$out");
	return $out eq '';
}

my $outcomes = $node->safe_psql('postgres', q{
	SELECT i.pattern, i.status,
	       CASE WHEN i.aborted_at IS NOT NULL THEN 'aborted' ELSE '' END,
	       count(*)
	  FROM chk.plan p JOIN saga.instance i ON i.id = p.saga_id
	 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3});
diag("outcomes (pattern|status|aborted|count):\n$outcomes");

# 1. The extension's history checker
no_rows(q{
	SELECT c.saga_id, c.violation, c.detail, p.n, p.pattern, p.deadline_ms, p.cancel_planned, p.steps
	  FROM saga_check(ended_within => '0', deadline_slack => '250 milliseconds') c
	  LEFT JOIN chk.plan p ON p.saga_id = c.saga_id
	 ORDER BY c.saga_id, c.violation LIMIT 40},
	'saga_check() finds no violation')
  or diag("the trace of the first sagas it names:\n"
	  . $node->safe_psql('postgres', q{
		SELECT t.saga_id, x.seq, x.sender, x.receiver, x.message, x.at
		  FROM (SELECT DISTINCT saga_id
		          FROM saga_check(ended_within => '0', deadline_slack => '250 milliseconds')
		         ORDER BY 1 LIMIT 3) t,
		       saga_trace(t.saga_id) x
		 ORDER BY 1, 2}));
my $summary = $node->safe_psql('postgres', q{
	SELECT violation, count(*), count(DISTINCT saga_id)
	  FROM saga_check(ended_within => '0', deadline_slack => '250 milliseconds')
	 GROUP BY 1 ORDER BY 1});
diag("saga_check() violations (violation|rows|sagas):\n$summary") if $summary ne '';

# 2. The business ledger
no_rows(q{
	SELECT l.saga_id, l.k, l.kind, count(*) FROM chk.ledger l
	 GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 20},
	'ledger: no effect applied twice, no compensation run twice');
no_rows(q{
	SELECT l.saga_id, l.k, 'undone in a completed saga'
	  FROM chk.ledger l JOIN saga.instance i ON i.id = l.saga_id
	 WHERE i.status = 'completed' AND l.kind = 'undo'
	UNION ALL
	SELECT p.saga_id, p.nsteps, 'completed with ' || count(l.*) || ' steps done'
	  FROM chk.plan p JOIN saga.instance i ON i.id = p.saga_id
	  LEFT JOIN chk.ledger l ON l.saga_id = p.saga_id AND l.kind = 'do'
	 WHERE i.status = 'completed'
	 GROUP BY p.saga_id, p.nsteps HAVING count(l.*) <> p.nsteps
	 ORDER BY 1 LIMIT 20},
	'ledger: a completed saga did every step and undid none');
no_rows(q{
	SELECT d.saga_id, d.k, 'done, never undone'
	  FROM chk.ledger d JOIN saga.instance i ON i.id = d.saga_id
	  JOIN chk.plan p ON p.saga_id = d.saga_id
	 WHERE i.status = 'failed' AND d.kind = 'do' AND (p.steps->d.k->>'c')::boolean
	   AND NOT EXISTS (SELECT FROM chk.ledger u WHERE u.saga_id = d.saga_id AND u.k = d.k AND u.kind = 'undo')
	UNION ALL
	SELECT u.saga_id, u.k, 'undone, never done'
	  FROM chk.ledger u
	 WHERE u.kind = 'undo'
	   AND NOT EXISTS (SELECT FROM chk.ledger d WHERE d.saga_id = u.saga_id AND d.k = u.k AND d.kind = 'do')
	 ORDER BY 1, 2 LIMIT 20},
	'ledger: every effect of a failed saga undone, and only those');
no_rows(q{
	SELECT saga_id, k, what FROM (
	    SELECT u.saga_id, u.k,
	           CASE WHEN u.k >= lag(u.k) OVER w THEN 'undone after step ' || lag(u.k) OVER w
	                WHEN u.seq < (SELECT max(d.seq) FROM chk.ledger d
	                               WHERE d.saga_id = u.saga_id AND d.kind = 'do')
	                THEN 'undone before the last step was done' END AS what
	      FROM chk.ledger u
	     WHERE u.kind = 'undo'
	    WINDOW w AS (PARTITION BY u.saga_id ORDER BY u.seq)) x
	 WHERE what IS NOT NULL
	UNION ALL
	SELECT saga_id, k, 'step done as the #' || rn || ' one' FROM (
	    SELECT d.saga_id, d.k, row_number() OVER (PARTITION BY d.saga_id ORDER BY d.seq) - 1 AS rn
	      FROM chk.ledger d WHERE d.kind = 'do') y
	 WHERE k <> rn
	 ORDER BY 1, 2 LIMIT 20},
	'ledger: steps done in order, undone in reverse order after them');
no_rows(q{
	SELECT l.saga_id, l.k, l.at, i.aborted_at
	  FROM chk.ledger l JOIN saga.instance i ON i.id = l.saga_id
	 WHERE l.kind = 'do' AND l.at > i.aborted_at
	 ORDER BY 1, 2 LIMIT 20},
	'ledger: no effect after the abort');
no_rows(q{
	SELECT * FROM (
	    SELECT a.customer, a.balance,
	           count(*) FILTER (WHERE l.kind = 'do') - count(*) FILTER (WHERE l.kind = 'undo') AS ledger
	      FROM chk.account a
	      LEFT JOIN chk.plan p ON p.customer = a.customer
	      LEFT JOIN chk.ledger l ON l.saga_id = p.saga_id
	     GROUP BY a.customer, a.balance) x
	 WHERE balance <> ledger
	 ORDER BY 1},
	'ledger: each account charged for the steps done and refunded for those undone');

# 3. The model: a saga left alone ends as its plan says.
no_rows(qq{
	WITH p AS (
	    SELECT p.*, i.status, i.reason,
	           (SELECT min(s.ord - 1) FROM jsonb_array_elements(p.steps) WITH ORDINALITY s(st, ord)
	             WHERE s.st->>'o' = 'reject'
	                OR (s.st->>'o' IN ('error', 'hang') AND (s.st->>'n')::integer >= $MAX_ATTEMPTS)) AS first_no
	      FROM chk.plan p JOIN saga.instance i ON i.id = p.saga_id
	     WHERE p.deadline_ms IS NULL AND NOT p.cancel_planned),
	expected AS (
	    SELECT p.*,
	           CASE WHEN first_no IS NULL THEN 'completed' ELSE 'failed' END AS want_status,
	           (SELECT string_agg(k::text, ',' ORDER BY k)
	              FROM generate_series(0, coalesce(first_no, nsteps) - 1) k) AS want_done,
	           (SELECT string_agg(k::text, ',' ORDER BY k DESC)
	              FROM generate_series(0, coalesce(first_no, 0) - 1) k
	             WHERE (steps->(k::integer)->>'c')::boolean) AS want_undone
	      FROM p)
	SELECT e.n, e.saga_id, e.pattern, e.customer, e.steps, e.status, e.want_status, h.done, e.want_done,
	       h.undone, e.want_undone
	  FROM expected e
	  CROSS JOIN LATERAL (
	      SELECT string_agg(l.k::text, ',' ORDER BY l.seq) FILTER (WHERE l.kind = 'do') AS done,
	             string_agg(l.k::text, ',' ORDER BY l.seq) FILTER (WHERE l.kind = 'undo') AS undone
	        FROM chk.ledger l WHERE l.saga_id = e.saga_id) h
	 WHERE e.status IS DISTINCT FROM e.want_status
	    OR h.done IS DISTINCT FROM e.want_done
	    OR h.undone IS DISTINCT FROM e.want_undone
	 ORDER BY e.n LIMIT 20},
	'model: every saga neither cancelled nor given a deadline ended as planned');

# The neighbours.  A step that hangs until its worker is terminated got to
# its hang (nothing before it says no), and was terminated as often as its
# plan says, no more: the model above has judged how the saga ended.
no_rows(q{
	SELECT * FROM (
	    SELECT p.n, p.saga_id, p.pattern, s.ord - 1 AS k, s.st, i.status,
	           (SELECT count(*) FROM chk.killed c
	             WHERE c.saga_id = p.saga_id AND c.k = s.ord - 1) AS killed
	      FROM chk.plan p JOIN saga.instance i ON i.id = p.saga_id,
	           jsonb_array_elements(p.steps) WITH ORDINALITY s(st, ord)
	     WHERE s.st->>'o' = 'kill') x
	 WHERE killed <> (st->>'n')::integer
	 ORDER BY 1},
	'terminator: each hang that only a terminated worker ends was terminated as planned');
# A hold of the locker ended only once a saga that does not touch the
# locked rows had ended while it held them, or none was left pending (else
# after 30 s).
no_rows(q{
	SELECT id, customer, held_from, held_until, others_ended, others_pending FROM chk.hold
	 WHERE held_until IS NOT NULL AND NOT stopped AND others_ended = 0 AND others_pending > 0
	 ORDER BY id},
	'locker: while it held a lock, the sagas that do not need it went on and ended');

# 4. saga_await() and saga_status() agree with the record: the answers
# the clients got while the sagas ran, and a sample now.
no_rows(q{
	SELECT a.saga_id, a.status AS awaited, i.status AS record
	  FROM chk.awaited a JOIN saga.instance i ON i.id = a.saga_id
	 WHERE a.status <> 'pending' AND a.status <> i.status
	 ORDER BY 1 LIMIT 20},
	'saga_await() in the clients never gave a status the saga did not end with');
no_rows(q{
	SELECT i.id, i.status, saga_status(i.id), saga_await(i.id, '10 milliseconds')
	  FROM saga.instance i
	 WHERE i.id IN (SELECT saga_id FROM chk.plan ORDER BY hashint8(saga_id) LIMIT 300)
	   AND (saga_status(i.id) IS DISTINCT FROM i.status
	        OR saga_await(i.id, '10 milliseconds') IS DISTINCT FROM i.status)
	 ORDER BY 1},
	'saga_status() and saga_await() agree with the record');

# The plans were drawn for a mix of fates; without it the judges above
# would prove less.
my $mix = $node->safe_psql('postgres', q{
	SELECT count(DISTINCT i.pattern || i.status) FILTER (WHERE i.status <> 'pending') = 4
	       AND count(*) FILTER (WHERE i.aborted_at IS NOT NULL AND i.pattern = 'orchestration') > 0
	       AND count(*) FILTER (WHERE i.aborted_at IS NOT NULL AND i.pattern = 'choreography') > 0
	       AND (SELECT count(*) FROM chk.cancel WHERE cancelled) > 0
	       AND (SELECT count(*) FROM chk.ledger WHERE kind = 'undo') > 0
	       AND (SELECT count(*) FROM chk.awaited) > 0
	  FROM chk.plan p JOIN saga.instance i ON i.id = p.saga_id});
is($mix, 't', 'both patterns completed, failed and were aborted; compensations ran');
# So were the neighbours': hangs of both patterns cancelled by the time
# limit, workers terminated, sagas of both patterns with a hang or a
# customer left alone (judged by the model), lock waits of their handlers
# on the locker's holds.
my $neighbours_mix = $node->safe_psql('postgres', q{
	WITH judged AS (
	    SELECT p.*, EXISTS (SELECT FROM jsonb_array_elements(p.steps) s(st)
	                         WHERE s.st->>'o' = 'hang' OR (s.st->>'ch')::boolean) AS hangs
	      FROM chk.plan p WHERE p.deadline_ms IS NULL AND NOT p.cancel_planned)
	SELECT (SELECT count(*) FROM saga.delivery_failure WHERE error LIKE '%time limit%') > 0,
	       (SELECT count(*) FROM saga.step_run WHERE detail LIKE '%time limit%') > 0,
	       (SELECT count(DISTINCT pattern) FROM chk.plan p JOIN chk.killed c ON c.saga_id = p.saga_id) = 2,
	       (SELECT count(DISTINCT pattern) FROM judged WHERE hangs) = 2,
	       (SELECT count(DISTINCT pattern) FROM judged WHERE customer IS NOT NULL) = 2,
	       (SELECT count(*) FROM chk.hold WHERE held_until IS NOT NULL) > 0,
	       EXISTS (SELECT FROM chk.hold WHERE blocked_deliveries),
	       EXISTS (SELECT FROM chk.hold WHERE blocked_steps)});
is($neighbours_mix, 't|t|t|t|t|t|t|t',
	'hangs were cancelled and terminated, locks held and waited for, in both patterns');

diag(sprintf('runtime: %.1f s', time - $started));
diag("to repeat this run: SAGA_CHECK_SEED=$SEED SAGA_CHECK_SAGAS=$SAGAS SAGA_CHECK_CRASHES=$CRASHES")
  unless Test::More->builder->is_passing;
$node->stop('immediate');
done_testing();
