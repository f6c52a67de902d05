# Hostile neighbours (1.2): work that waits does not hold up other work.
#	- a handler that hangs is cancelled after saga.handler_timeout (or its
#	  role's statement_timeout) and retried like any failure; the orders
#	  placed meanwhile end;
#	- a worker terminated again and again while a handler hangs (no time
#	  limit): each attempt counts, the delivery is dead-lettered after
#	  saga.max_attempts, and the order claimed with it is not held hostage;
#	  the same for an orchestrated step that hangs: its saga is compensated;
#	- a row held FOR UPDATE by another session: one customer's deliveries
#	  wait for it, another customer's order goes through, and saga_stuck
#	  shows the waiting ones with the pid of the session holding it;
#	- database defaults that used to keep workers from running
#	  (default_transaction_read_only, REPEATABLE READ, a 1 ms lock_timeout).
# Handlers run as an application role with the README's grants.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;
use Time::HiRes qw(usleep time);

my $node = saga_node('neighbours', q{
saga.workers = 2
saga.poll_interval = 200
saga.max_attempts = 3
saga.retry_backoff = 100
saga.handler_timeout = 2s
});

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION saga;
	SELECT saga_set_balance('alice', 1000), saga_set_balance('bob', 1000);
	SELECT saga_set_stock('widget', 1000);
	CREATE ROLE app;
	GRANT EXECUTE ON FUNCTION
	    saga_publish(text, jsonb, bigint, text),
	    saga_subscribe(text, text, regprocedure, text, boolean, text),
	    saga_unsubscribe(text, text),
	    saga_define(text, saga.step[]), saga_start(text, jsonb, interval)
	TO app;
	CREATE SCHEMA app AUTHORIZATION app;
	SET ROLE app;
	CREATE FUNCTION app.hang(e saga.event) RETURNS void LANGUAGE sql
	    AS $$ SELECT pg_sleep(3600) $$;
	CREATE FUNCTION app.nap(e saga.event) RETURNS void LANGUAGE sql
	    AS $$ SELECT pg_sleep(0.5) $$;
	SELECT saga_subscribe('hanger', 'Hang', 'app.hang(saga.event)');
	SELECT saga_subscribe('napper', 'Nap', 'app.nap(saga.event)');
	CREATE TABLE app.ledger (saga_id bigint, what text);
	CREATE FUNCTION app.book(d jsonb) RETURNS void LANGUAGE sql
	    AS $$ INSERT INTO app.ledger VALUES ((d->>'n')::bigint, 'book') $$;
	CREATE FUNCTION app.unbook(d jsonb) RETURNS void LANGUAGE sql
	    AS $$ INSERT INTO app.ledger VALUES ((d->>'n')::bigint, 'unbook') $$;
	CREATE FUNCTION app.stall(d jsonb) RETURNS void LANGUAGE sql
	    AS $$ SELECT pg_sleep(3600) $$;
	SELECT saga_define('stall',
	    saga_step('book', 'app.book(jsonb)', 'app.unbook(jsonb)'),
	    saga_step('stall', 'app.stall(jsonb)'));});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Orders placed now end (within the poll timeout); returns their ids.
sub orders_end
{
	my ($n, $customer) = @_;
	my $ids = sql("SELECT string_agg(saga_place_order('$customer', 'widget', 1, 1.00, "
		  . "CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END)::text, ',') "
		  . "FROM generate_series(1, $n) i");
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga_orders WHERE order_id IN ($ids) AND status = 'pending'",
		't')
	  ? $ids : undef;
}

# --- 1. a hanging handler is cancelled after saga.handler_timeout -----------

sql("SET ROLE app; SELECT saga_publish('Hang'), saga_publish('Hang')");
usleep(300_000);    # both workers are in it now
my $t0 = time;
ok(orders_end(10, 'bob'), 'orders placed while both workers hang end');
my $took = time - $t0;
note("10 orders took $took s with two hanging handlers and saga.handler_timeout = 2s");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM saga_dead_letters WHERE consumer = 'hanger'"),
	'the hanging deliveries are dead-lettered after saga.max_attempts');
like(sql("SELECT min(last_error) FROM saga_dead_letters WHERE consumer = 'hanger'"),
	qr/^app\.hang\(saga\.event\) ran longer than its time limit of 2000 ms \(SQLSTATE 57014\)/,
	'their last error names the time limit');
is(sql("SELECT min(attempts) || '-' || max(attempts) FROM saga_dead_letters WHERE consumer = 'hanger'"),
	'3-3', 'each after three attempts');

# a role's own statement_timeout is its handlers' limit when shorter
sql("ALTER ROLE app SET statement_timeout = '100ms'");
my $nap = sql("SET ROLE app; SELECT saga_publish('Nap')");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM saga_dead_letters WHERE event_id = $nap "
		  . "AND last_error LIKE 'app.nap(saga.event) ran longer than its time limit of 100 ms%'"),
	"a 0.5 s handler of a role with statement_timeout = 100ms is cancelled after 100 ms");
sql("ALTER ROLE app RESET statement_timeout");

# --- 2. terminated while it hangs, with no time limit -----------------------

sql("ALTER SYSTEM SET saga.handler_timeout = 0; SELECT pg_reload_conf()");
usleep(500_000);
my $killer = sql("SET ROLE app; SELECT saga_publish('Hang')");
my $hostage = sql("SELECT saga_place_order('alice', 'widget', 1, 1.00)");
my $kills = 0;
my $deadline = time + 120;
while (time < $deadline)
{
	last if sql("SELECT status FROM saga.delivery WHERE event_id = $killer") eq 'dead';
	my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'saga worker' "
		  . "AND wait_event = 'PgSleep' LIMIT 1");
	if ($pid ne '')
	{
		sql("SELECT pg_terminate_backend($pid)");
		$kills++;
	}
	usleep(200_000);
}
is(sql("SELECT status FROM saga.delivery WHERE event_id = $killer"), 'dead',
	"the delivery whose handler hangs is dead-lettered after $kills terminations");
cmp_ok($kills, '<=', 5, 'after about saga.max_attempts of them (its attempts counted before it ran)');
like(sql("SELECT last_error FROM saga.delivery WHERE event_id = $killer"),
	qr/did not finish 3 times/, 'its last error says the worker running it exited');
is(sql("SELECT saga_await($hostage, '30 s')"), 'completed',
	'the order placed with it completed');

# the same with an orchestrated step that hangs: its attempts count too
my $stall = sql("SET ROLE app; SELECT saga_start('stall', '{\"n\": 1}')");
my $hostage2 = sql("SELECT saga_place_order('alice', 'widget', 1, 1.00, 'orchestration')");
$kills = 0;
my $replaced = 0;
$deadline = time + 120;
while (time < $deadline)
{
	last if sql("SELECT status FROM saga.instance WHERE id = $stall") ne 'pending';
	my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'saga worker' "
		  . "AND wait_event = 'PgSleep' LIMIT 1");
	if ($pid ne '')
	{
		sql("SELECT pg_terminate_backend($pid)");
		$kills++;
		# how long until its replacement runs
		my $t = time;
		usleep(50_000)
		  while time < $t + 90
		  && sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' "
			  . "AND pid <> $pid") < 2;
		$replaced = time - $t if time - $t > $replaced;
	}
	usleep(200_000);
}
note(sprintf("the slowest replacement of a terminated worker took %.1f s", $replaced));
cmp_ok($replaced, '<', 10,
	'a terminated worker is replaced within seconds: work done in careful mode resets the restart delay');
is(sql("SELECT status FROM saga.instance WHERE id = $stall"), 'failed',
	"the saga whose step hangs failed after $kills terminations");
cmp_ok($kills, '<=', 5, 'after about saga.max_attempts of them (its attempts counted before it ran)');
like(sql("SELECT reason FROM saga.instance WHERE id = $stall"),
	qr/^step "stall" did not finish 3 times: the worker running it exited/,
	'its reason says the worker running the step exited');
is(sql("SELECT string_agg(what, ',' ORDER BY what) FROM app.ledger WHERE saga_id = 1"),
	'book,unbook', 'the step before it was compensated, once');
is(sql("SELECT saga_await($hostage2, '30 s')"), 'completed',
	'the orchestrated order started with it completed');

sql("ALTER SYSTEM SET saga.handler_timeout = '2s'; SELECT pg_reload_conf()");

# --- 3. a row held FOR UPDATE by another session ----------------------------

my $holder = $node->background_psql('postgres');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
$holder_pid =~ s/\s+//g;
$holder->query_safe("BEGIN; SELECT * FROM saga.account WHERE customer = 'alice' FOR UPDATE");
my $alice = sql("SELECT string_agg(saga_place_order('alice', 'widget', 1, 1.00)::text, ',') "
	  . "FROM generate_series(1, 20)");
# orchestrated too: a step waits for the lock as a handler does
my $alice_steps = sql("SELECT string_agg(saga_place_order('alice', 'widget', 1, 1.00, "
	  . "'orchestration')::text, ',') FROM generate_series(1, 5)");
my $bob = sql("SELECT saga_place_order('bob', 'widget', 1, 1.00)");
# lock waits are neither retries nor failures in the counters
my $counted = "SELECT (SELECT retries FROM saga_stats) || '/' || "
  . "(SELECT sum(failures) FROM saga_workers WHERE database = 'postgres')";
my $counted_before = sql($counted);
$t0 = time;
is(sql("SELECT saga_await($bob, '10 s')"), 'completed',
	"bob's order completes while alice's account is locked by another session");
note(sprintf("bob's order took %.2f s behind 20 blocked orders", time - $t0));
is(sql("SELECT count(*) FROM saga_orders WHERE order_id IN ($alice, $alice_steps) "
	  . "AND status = 'pending'"),
	'25', "alice's 25 orders wait");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM saga_stuck WHERE problem = 'waiting for a lock' "
		  . "AND saga_id IN ($alice)"),
	"saga_stuck shows alice's deliveries waiting for a lock");
# each names the session holding the row, though two workers queue for it
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 AND bool_and(blocking_pid IS NOT DISTINCT FROM $holder_pid) "
		  . "FROM saga_stuck WHERE problem = 'waiting for a lock' AND saga_id IN ($alice)"),
	"saga_stuck names the holder's pid as alice's deliveries' blocking_pid");
like( sql("SELECT remedy FROM saga_stuck WHERE problem = 'waiting for a lock' "
		  . "AND saga_id IN ($alice) LIMIT 1"),
	qr/^pid $holder_pid \(see pg_stat_activity\) holds a lock its handler needs \(waiting since /,
	'and its remedy names it');
is( sql("SELECT count(*) > 0 FROM saga_my_stuck WHERE blocking_pid = $holder_pid "
		  . "AND saga_id IN ($alice)"),
	't', 'so does saga_my_stuck, for their owner');
# the orchestrated ones: their steps, named, with the holder's pid
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 AND bool_and(blocking_pid IS NOT DISTINCT FROM $holder_pid) "
		  . "AND bool_and(delivery_id IS NULL AND work LIKE 'order step %') "
		  . "FROM saga_stuck WHERE problem = 'waiting for a lock' AND saga_id IN ($alice_steps)"),
	"saga_stuck shows alice's orchestrated steps waiting for the holder's lock");
like( sql("SELECT remedy FROM saga_stuck WHERE problem = 'waiting for a lock' "
		  . "AND saga_id IN ($alice_steps) LIMIT 1"),
	qr/^pid $holder_pid \(see pg_stat_activity\) holds a lock its step needs \(waiting since /,
	'and its remedy names the pid');
# (while careful mode lasts, after section 2's terminations, an attempt is
# counted before it runs and given back when it meets the lock: poll)
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga.instance WHERE id IN ($alice_steps) AND attempts > 0"),
	'waiting for a lock is not an attempt of a step')
  or diag(sql("SELECT id, phase, step, attempts, last_error, next_attempt_at, now() "
		  . "FROM saga.instance WHERE id IN ($alice_steps)"));
is(sql($counted), $counted_before,
	'saga_stats.retries and saga_workers.failures did not count the lock waits');
$holder->query_safe('COMMIT');
$holder->quit;
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga_orders WHERE order_id IN ($alice, $alice_steps) "
		  . "AND status = 'pending'"),
	"once the lock is released, alice's orders end");
is(sql("SELECT count(*) FROM saga_orders WHERE order_id IN ($alice, $alice_steps) "
		  . "AND status = 'completed'"),
	'25', 'all of them completed');
is( sql("SELECT (SELECT count(*) FROM saga.delivery d JOIN saga.event e ON e.id = d.event_id "
		  . "       WHERE e.saga_id IN ($alice) AND (d.blocked_since IS NOT NULL OR d.blocked_by IS NOT NULL)) "
		  . "   + (SELECT count(*) FROM saga.instance WHERE id IN ($alice_steps) "
		  . "       AND (blocked_since IS NOT NULL OR blocked_by IS NOT NULL))"),
	'0', 'work that got past the lock is no longer marked blocked');

# --- 4. database defaults the engine's statements do not follow ----------------

my @before = saga_worker_pids($node, 'postgres');
sql("ALTER DATABASE postgres SET default_transaction_read_only = on; "
	  . "ALTER DATABASE postgres SET default_transaction_isolation = 'repeatable read'; "
	  . "ALTER DATABASE postgres SET lock_timeout = '1ms'");
# new workers connect with the new defaults
sql("SET default_transaction_read_only = off; "
	  . "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'saga worker'");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'saga worker' "
		  . "AND pid NOT IN (" . join(',', @before, 0) . ")"),
	'new workers started under the database defaults');
my @under = saga_worker_pids($node, 'postgres');
my $ids = $node->safe_psql('postgres',
	"SET default_transaction_read_only = off; SET default_transaction_isolation = 'read committed'; "
	  . "SELECT string_agg(saga_place_order('bob', 'widget', 1, 1.00, "
	  . "CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END)::text, ',') "
	  . "FROM generate_series(1, 20) i");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga_orders WHERE order_id IN ($ids) AND status = 'pending'"),
	'orders end under default_transaction_read_only, REPEATABLE READ and lock_timeout = 1ms');
is(join(' ', saga_worker_pids($node, 'postgres')), join(' ', @under),
	'and the workers did not exit');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM saga_workers WHERE database = 'postgres' AND last_error IS NOT NULL "
		  . "AND last_error_at > now() - interval '1 minute'"),
	'0', 'saga_workers shows no recent error');

$node->stop;
done_testing();
