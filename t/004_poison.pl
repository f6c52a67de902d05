# Poison work: a handler that always raises is dead-lettered after its
# retries while the sagas around it keep flowing; and a worker's memory does
# not grow across 100k deliveries.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;
use Time::HiRes qw(usleep time);

my $POISON = 50;
my $ORDERS = 200;
my $WARMUP = 5_000;
my $TICKS = 100_000;
my $MAX_GROWTH_KB = 20 * 1024;

my $node = saga_node('poison', q{
saga.workers = 1
saga.poll_interval = 200
saga.max_attempts = 3
saga.retry_backoff = 10
log_statement = none
});
my $started = time;


# The worker's memory: /proc/<pid>/status (kB), and the total of its memory
# contexts as pg_log_backend_memory_contexts() writes it to the log.
sub memory_of
{
	my ($pid) = @_;
	my %m;
	my $status = slurp_file("/proc/$pid/status");
	for my $k (qw(VmRSS RssAnon RssFile RssShmem))
	{
		($m{$k}) = $status =~ /^$k:\s+(\d+) kB/m;
	}
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	my $grand;
	for (1 .. 100)
	{
		($grand) = slurp_file($node->logfile, $offset)
		  =~ /\[$pid\].*Grand total: (\d+) bytes/;
		last if defined $grand;
		usleep(100_000);
	}
	$m{contexts} = defined $grand ? int($grand / 1024) : undef;
	return \%m;
}


$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION saga;
	SELECT count(saga_set_balance('c' || i, 100000)) FROM generate_series(0, 9) i;
	SELECT count(saga_set_stock('p' || i, 100000)) FROM generate_series(0, 4) i;

	-- always raises
	CREATE FUNCTION poison(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    RAISE EXCEPTION 'poison pill %', e.id;
	END $$;
	SELECT saga_subscribe('poison', 'Poison', 'poison(saga.event)');

	-- trivial, and counts how often it ran
	CREATE TABLE ticks (n bigint NOT NULL);
	INSERT INTO ticks VALUES (0);
	CREATE FUNCTION tick(e saga.event) RETURNS void LANGUAGE sql
	    AS $$ UPDATE ticks SET n = n + 1 $$;
	SELECT saga_subscribe('ticker', 'Tick', 'tick(saga.event)');
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'saga worker'")
  or die 'no worker';

##############################################################################
# Poison events mixed with orders, in the same batches.
##############################################################################

my $log_offset = -s $node->logfile;
$node->safe_psql(
	'postgres', qq{
	SELECT count(CASE WHEN i % 5 = 0
	                  THEN saga_publish('Poison', jsonb_build_object('i', i))
	                  ELSE saga_place_order('c' || i % 10, 'p' || i % 5, 1, 1.00,
	                           CASE WHEN i % 2 = 0 THEN 'orchestration'
	                                ELSE 'choreography' END) END)
	  FROM generate_series(1, $POISON * 5) i;
});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga.delivery WHERE status = 'pending'"),
	'no delivery is left pending');
is( $node->safe_psql('postgres',
		"SELECT status, count(*) FROM saga_orders GROUP BY status"),
	"completed|" . ($POISON * 4),
	'every order placed among the poison events completed');
is( $node->safe_psql(
		'postgres', q{
		SELECT d.status, d.attempts, d.last_error LIKE 'poison pill ' || e.id || '%', count(*)
		  FROM saga.delivery d
		  JOIN saga.subscription s ON s.id = d.subscription_id
		  JOIN saga.event e ON e.id = d.event_id
		 WHERE s.consumer = 'poison'
		 GROUP BY 1, 2, 3}),
	"dead|3|t|$POISON",
	"each poison delivery is dead after 3 attempts, with its last error");
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM saga.delivery WHERE status <> 'done' AND subscription_id <> "
		  . "(SELECT id FROM saga.subscription WHERE consumer = 'poison')"),
	'0', 'and no other delivery failed');
is($node->safe_psql('postgres', "SELECT count(*) FROM saga_dead_letters"),
	$POISON, 'saga_dead_letters lists them');
my $log = slurp_file($node->logfile, $log_offset);
my $warnings = () = $log =~ /WARNING:  saga: delivery \d+ of event \d+ to consumer "poison" dead-lettered after 3 attempts/g;
is($warnings, $POISON, 'one WARNING per dead letter in the log');
my $restarts = () = $log =~ /exited with exit code/g;
is($restarts, 0, 'the worker never exited');

##############################################################################
# Memory across 100k deliveries, all by one worker.
##############################################################################

my ($pid) = saga_worker_pids($node, 'postgres');
$node->safe_psql('postgres',
	"SELECT count(saga_publish('Tick', jsonb_build_object('i', i))) FROM generate_series(1, $WARMUP) i");
$node->poll_query_until('postgres', "SELECT n = $WARMUP FROM ticks")
  or die 'warm-up did not finish';
my $before = memory_of($pid);

my $t0 = time;
for (my $i = 0; $i < $TICKS; $i += 20_000)
{
	$node->safe_psql('postgres',
		"SELECT count(saga_publish('Tick', jsonb_build_object('i', i))) FROM generate_series(1, 20000) i");
}
ok($node->poll_query_until('postgres', 'SELECT n = ' . ($WARMUP + $TICKS) . ' FROM ticks'),
	"the worker handled $TICKS more deliveries");
my $elapsed = time - $t0;
is($node->safe_psql('postgres', "SELECT count(*) FROM saga.delivery WHERE status = 'pending'"),
	'0', 'none is left pending');
is(join(' ', saga_worker_pids($node, 'postgres')), $pid, 'by the same worker, never restarted');
my $after = memory_of($pid);

my $fmt = sub {
	my ($m) = @_;
	return sprintf('VmRSS %s kB (RssAnon %s, RssFile %s, RssShmem %s), memory contexts %s kB',
		map { $m->{$_} // '?' } qw(VmRSS RssAnon RssFile RssShmem contexts));
};
diag("worker $pid after $WARMUP deliveries: " . $fmt->($before));
diag("worker $pid after " . ($WARMUP + $TICKS) . ' deliveries: ' . $fmt->($after));
diag(sprintf('%d deliveries in %.1f s (%.0f/s)', $TICKS, $elapsed, $TICKS / $elapsed));

# Private memory is what a leak grows; VmRSS also counts the shared buffers
# the worker has touched since, up to shared_buffers, which is no leak.
cmp_ok($after->{RssAnon} - $before->{RssAnon},
	'<', $MAX_GROWTH_KB, 'private memory (RssAnon) grew by less than 20 MB');
cmp_ok(($after->{VmRSS} - $after->{RssShmem}) - ($before->{VmRSS} - $before->{RssShmem}),
	'<', $MAX_GROWTH_KB, 'VmRSS less shared memory grew by less than 20 MB');
ok(defined $before->{contexts} && defined $after->{contexts},
	'the worker logged its memory contexts');
cmp_ok($after->{contexts} - $before->{contexts},
	'<', 5 * 1024, 'its memory contexts grew by less than 5 MB');

diag(sprintf('runtime: %.1f s', time - $started));
$node->stop;
done_testing();
