# Background workers across the events pg_regress cannot show: a crash
# (kill -9 of a worker), an immediate shutdown with work pending, and the
# server log after DROP EXTENSION / DROP DATABASE.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $node = saga_node('workers', q{
saga.workers = 2
saga.poll_interval = 200
restart_after_crash = on
});



# Every saga has ended, and balances and stock add up.
sub check_invariants
{
	my ($label, $initial_balance, $initial_stock) = @_;
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM saga_orders WHERE status = 'pending'"),
		'0', "$label: no saga left pending");
	is( $node->safe_psql('postgres',
			"SELECT $initial_balance - coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0) "
			  . "= saga_balance('alice') FROM saga_orders"),
		't', "$label: balance = initial - completed amounts");
	is( $node->safe_psql('postgres',
			"SELECT $initial_stock - coalesce(sum(quantity) FILTER (WHERE status = 'completed'), 0) "
			  . "= saga_stock('widget') FROM saga_orders"),
		't', "$label: stock = initial - completed quantities");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM saga_orders o JOIN saga.payment p ON p.order_id = o.order_id "
			  . "WHERE (o.status = 'failed') <> (p.status = 'refunded')"),
		'0', "$label: a charge is refunded exactly when its order failed");
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION saga;
	SELECT saga_set_balance('alice', 10000);
	SELECT saga_set_stock('widget', 300);
});
ok(wait_saga_workers($node, 'postgres', 2), 'two workers serve the database');

# kill -9 one worker while a burst is in flight: the postmaster restarts
# everything, and every saga still ends exactly once.
$node->safe_psql('postgres',
	"SELECT saga_place_order('alice', 'widget', 1, 1.00) FROM generate_series(1, 500)");
my ($victim) = saga_worker_pids($node, 'postgres');
ok(kill('KILL', $victim), "killed worker $victim with SIGKILL");
$node->poll_query_until('postgres', 'SELECT true')
  or die 'server did not come back after the crash';
ok(wait_saga_workers($node, 'postgres', 2), 'workers are back after the crash restart');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga_orders WHERE status = 'pending'"),
	'every saga of the burst ended after the crash');
check_invariants('after kill -9', 10000, 300);
is($node->safe_psql('postgres', "SELECT count(*) FROM saga_orders WHERE status = 'completed'"),
	'300', 'exactly the stock was sold');

# Work pending at an immediate shutdown is done after the restart, before
# any NOTIFY could announce it.
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET saga.workers = 0;
	SELECT pg_reload_conf();
});
ok(wait_saga_workers($node, 'postgres', 0), 'saga.workers = 0 stops the workers');
$node->safe_psql('postgres', q{
	SELECT saga_set_stock('widget', 50);
	SELECT saga_place_order('alice', 'widget', 1, 2.00) FROM generate_series(1, 40);
});
is($node->safe_psql('postgres', "SELECT count(*) FROM saga_orders WHERE status = 'pending'"),
	'40', 'orders wait while no worker runs');
# back to two workers at the next start, not before
$node->safe_psql('postgres', 'ALTER SYSTEM RESET saga.workers');
$node->stop('immediate');
$node->start;
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga_orders WHERE status = 'pending'"),
	'pending orders end after an immediate shutdown and restart');
is($node->safe_psql('postgres', "SELECT saga_stock('widget')"), '10',
	'40 of 50 units sold after the restart');

# A second database: served, then its extension and the database dropped,
# with nothing but clean exits in the log.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', q{
	CREATE EXTENSION saga;
	SELECT saga_set_balance('bob', 10);
	SELECT saga_set_stock('thing', 1);
});
my $late = $node->safe_psql('other', "SELECT saga_place_order('bob', 'thing', 1, 1.00)");
is($node->safe_psql('other', "SELECT saga_await($late)"),
	'completed', 'the new database is served');
$node->safe_psql('other', 'DROP EXTENSION saga');
ok(wait_saga_workers($node, 'other', 0), 'DROP EXTENSION: its workers exit');
sleep(1);
is(scalar(saga_worker_pids($node, 'other')), 0, 'and are not restarted');
$node->safe_psql('other', 'CREATE EXTENSION saga');
ok(wait_saga_workers($node, 'other', 2), 'CREATE EXTENSION again: workers are back');
$node->safe_psql('postgres', 'DROP DATABASE other');
ok(wait_saga_workers($node, 'other', 0), 'DROP DATABASE succeeds and leaves no worker');
sleep(1);
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/ERROR|FATAL|PANIC/, 'no error in the log after the drops')
  or diag($log);
is(scalar(saga_worker_pids($node, 'postgres')), 2, 'the first database keeps its workers');

$node->stop;
done_testing();
