# Why a worker exited: an error outside the subtransaction of a handler or
# step (here the batch's last update, which marks its deliveries done, made
# to fail by a CHECK constraint on saga.delivery) ends the worker, and the
# launcher starts another after a delay.  Before exiting, the worker records
# the error in shared memory; saga_workers shows it (message, SQLSTATE,
# when, which worker), also while the database has no worker running.  Once
# the cause is gone, the next worker does the work and the error stays on
# show as the database's last one.
#
# Also: saga_await() on a saga that stays pending returns 'pending' when its
# timeout passes (sleeping on its condition variable in shared memory).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;
use Time::HiRes qw(time);

my $node = saga_node('worker_errors', q{
saga.workers = 1
saga.poll_interval = 200
});

sub su  { my ($sql) = @_; return $node->safe_psql('postgres', $sql); }
sub app { my ($sql) = @_; return $node->safe_psql('postgres', $sql, extra_params => [ '-U', 'app' ]); }

su(q{
	CREATE EXTENSION saga;
	CREATE ROLE app LOGIN;
	GRANT EXECUTE ON FUNCTION
	    saga_publish(text, jsonb, bigint, text),
	    saga_subscribe(text, text, regprocedure, text, boolean, text),
	    saga_begin(text, interval), saga_await(bigint, interval)
	TO app;
	CREATE SCHEMA notes AUTHORIZATION app;
});
app(q{
	CREATE TABLE notes.log (n int NOT NULL);
	CREATE FUNCTION notes.take(e saga.event) RETURNS void LANGUAGE sql
	    AS $$ INSERT INTO notes.log VALUES ((e.payload->>'n')::int) $$;
	SELECT saga_subscribe('notes', 'Note', 'notes.take(saga.event)');
});
ok(wait_saga_workers($node, 'postgres', 1), 'one worker serves the database');

my $here = "FROM saga_workers WHERE database = current_database()";
is(su("SELECT count(*) $here AND last_error IS NULL AND last_error_sqlstate IS NULL"
	  . " AND last_error_at IS NULL AND last_error_pid IS NULL"),
	'1', 'saga_workers: no error recorded yet');

app(q{SELECT saga_publish('Note', '{"n": 1}')});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM notes.log'),
	'a handler runs through the worker');

# --- An error in the batch, outside the handler's subtransaction -------------

my ($first_pid) = saga_worker_pids($node, 'postgres');
my $before = su('SELECT now()');
my $log_offset = -s $node->logfile;
su(q{ALTER TABLE saga.delivery ADD CONSTRAINT test_no_done CHECK (status <> 'done') NOT VALID});
app(q{SELECT saga_publish('Note', '{"n": 2}')});

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) > 0 $here AND last_error LIKE "
		  . q{'%violates check constraint "test_no_done"%'}),
	'saga_workers shows the error that made the worker exit');
is( su(   "SELECT DISTINCT last_error_sqlstate || ' ' || (last_error_at >= '$before') "
		. "|| ' ' || (last_error_pid IS NOT NULL AND last_error_pid IS DISTINCT FROM pid) $here"),
	'23514 true true',
	'... with its SQLSTATE, its time, and the pid of the worker that exited');
ok( $node->poll_query_until(
		'postgres', "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $first_pid)"),
	"the worker ($first_pid) has exited");
like(
	slurp_file($node->logfile, $log_offset),
	qr/ERROR:  new row for relation "delivery" violates check constraint "test_no_done"/,
	'the server log has the error too');
is(su('SELECT count(*) FROM notes.log'), '1', "the failed batch's handler rolled back");
# between a worker's exit and the next start (a second, then longer), the
# database has a row of its own, and saga_stats counts no worker for it
ok( $node->poll_query_until(
		'postgres',
		"SELECT (SELECT count(*) $here AND state = 'exited' AND pid IS NULL"
		  . " AND last_error_sqlstate = '23514') = 1"
		  . " AND (SELECT workers FROM saga_stats) = 0"),
	"while no worker runs: a row in state 'exited', and saga_stats counts no worker");

# --- The cause gone, the next worker does the work ---------------------------

su('ALTER TABLE saga.delivery DROP CONSTRAINT test_no_done');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 2 FROM notes.log'),
	'the next worker delivers the event');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 $here AND pid IS NOT NULL AND state IN ('idle', 'busy')"),
	'saga_workers shows the running worker');
is( su(   "SELECT last_error_sqlstate || ' ' || (last_error_pid IS DISTINCT FROM pid) $here"),
	'23514 true',
	"... and the database's last error, that of an earlier worker");

# --- saga_await() times out on a pending saga --------------------------------

my $pending = app(q{SELECT saga_begin('never_finished')});
my $t0 = time;
is(app("SELECT saga_await($pending, '300 ms')"), 'pending',
	'saga_await returns pending when its timeout passes');
cmp_ok(time - $t0, '>=', 0.3, '... after waiting for the timeout');
is(app("SELECT saga_await($pending, '0 s')"), 'pending', '... and at once with a zero timeout');

$node->stop;
done_testing();
