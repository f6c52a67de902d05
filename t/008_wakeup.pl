# Waking the workers without the poll: with saga.poll_interval at an hour,
# only a NOTIFY (to the one worker that listens) or a latch set after a
# publisher's commit can get a saga done.  Each worker in turn is killed,
# the listener among them, and sagas placed while only the other one runs,
# and again once the launcher has replaced it, still end within seconds.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $node = saga_node('wakeup', q{
saga.workers = 2
saga.poll_interval = '1h'
});

$node->safe_psql('postgres', q{
	CREATE EXTENSION saga;
	SELECT saga_set_balance('alice', 10000);
	SELECT saga_set_stock('widget', 1000);
});
ok(wait_saga_workers($node, 'postgres', 2), 'two workers serve the database');

# saga_await waits for a commit it cannot see from inside its own
# transaction: each order is placed and awaited in separate statements.
sub orders_complete
{
	my ($n, $mode, $label) = @_;
	my $ok = 0;
	for (1 .. $n)
	{
		my $id = $node->safe_psql('postgres',
			"SELECT saga_place_order('alice', 'widget', 1, 1.00, '$mode')");
		$ok++
		  if $node->safe_psql('postgres', "SELECT saga_await($id, '10 seconds')") eq
		  'completed';
	}
	is($ok, $n, "$label: $n $mode sagas completed, each within 10 s");
}

orders_complete(10, 'choreography',  'both workers');
orders_complete(10, 'orchestration', 'both workers');

my @first_workers = saga_worker_pids($node, 'postgres');
for my $round (1 .. 2)
{
	my $victim = $first_workers[ $round - 1 ];
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($victim)");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $victim)"),
		"round $round: worker $victim has exited");
	orders_complete(5, 'choreography',  "round $round, one worker left");
	orders_complete(5, 'orchestration', "round $round, one worker left");
	ok(wait_saga_workers($node, 'postgres', 2), "round $round: the launcher replaced it");
	orders_complete(5, 'choreography',  "round $round, replaced");
}

is( $node->safe_psql('postgres',
		"SELECT count(*) FROM saga.instance WHERE status <> 'completed'"),
	'0', 'every saga completed');

$node->stop;
done_testing();
