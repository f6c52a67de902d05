# Capacity and connections.
#
# 1. More databases with the extension than background worker slots: with
#    max_worker_processes = 8 (six slots left once the saga launcher and
#    the logical replication launcher have theirs) and eight databases,
#    every database gets one worker before any gets a second, the two left
#    without one show in saga_databases and saga_stuck and in a WARNING
#    that names the settings, and a slot that frees goes to one of them.
# 2. ALTER DATABASE ... ALLOW_CONNECTIONS false: no worker is started that
#    cannot connect (no FATAL in the log), and the workers are back at once
#    when connections are allowed again.
# 3. A flood of plain NOTIFY saga from a role with nothing but CONNECT
#    costs the listening worker next to no CPU time (read from
#    /proc/<pid>/stat, compared with a quiet period of the same length),
#    and sagas are still woken at once during it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

# Poll a query on a node until it returns the wanted value or the deadline
# (seconds) passes; returns the last value seen.
sub poll_for
{
	my ($node, $db, $sql, $want, $deadline) = @_;
	my $until = time + $deadline;
	my $got;
	for (;;)
	{
		$got = $node->safe_psql($db, $sql);
		return $got if $got eq $want || time > $until;
		usleep(200_000);
	}
}

# "databases workers" of the saga workers running now.
my $spread = q{SELECT count(DISTINCT datname) || ' ' || count(*) FROM pg_stat_activity
                WHERE backend_type = 'saga worker'};

# ---------------------------------------------------------------------------
# 1. More databases than worker slots
# ---------------------------------------------------------------------------

my $node = saga_node('capacity', q{
max_worker_processes = 8
saga.workers = 2
});

# the slots the saga workers have: the launchers take theirs
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN "
		  . "('saga launcher', 'logical replication launcher')"),
	'the saga launcher and the logical replication launcher run');
my $slots = 8 - 2;

for my $i (1 .. 8)
{
	$node->safe_psql('postgres', "CREATE DATABASE cap$i");
	$node->safe_psql("cap$i", q{
		CREATE EXTENSION saga;
		SELECT saga_set_balance('alice', 1000);
		SELECT saga_set_stock('widget', 100);
	});
}

is(poll_for($node, 'postgres', $spread, "$slots $slots", 60),
	"$slots $slots",
	"$slots databases have one worker each: none has a second while others have none");
# and it stays so (no worker taken from one database for another and back)
sleep 2;
is($node->safe_psql('postgres', $spread), "$slots $slots", 'the spread holds');

my @unserved = split /\n/, $node->safe_psql('postgres', q{
	SELECT datname FROM pg_database
	 WHERE datname LIKE 'cap%' AND datname NOT IN
	       (SELECT datname FROM pg_stat_activity WHERE backend_type = 'saga worker')
	 ORDER BY datname});
is(scalar(@unserved), 8 - $slots, 'two databases have no worker');
my @served = split /\n/, $node->safe_psql('postgres', q{
	SELECT DISTINCT datname FROM pg_stat_activity
	 WHERE backend_type = 'saga worker' ORDER BY datname});

# visible from any database with the extension
is( $node->safe_psql(
		$served[0],
		"SELECT string_agg(database || ': ' || workers || '/' || wanted, ', ' ORDER BY database) "
		  . "FROM saga_databases WHERE workers = 0"),
	join(', ', map { "$_: 0/1" } @unserved),
	'saga_databases shows the databases without a worker');
like( $node->safe_psql($served[0],
		"SELECT status FROM saga_databases WHERE database = '$unserved[0]'"),
	qr/max_worker_processes/,
	'... and says which setting to raise');
is($node->safe_psql($served[0],
		"SELECT count(*) FROM saga_databases WHERE workers = 1 AND status LIKE 'short of workers%'"),
	$slots, 'the others are served, one worker short each');

note("saga_databases:\n",
	$node->safe_psql($served[0], 'SELECT * FROM saga_databases ORDER BY database',
		extra_params => [ '-P', 'format=aligned', '-P', 'tuples_only=off' ]));

# sagas placed there wait, and saga_stuck says why
my %order;
for my $db (@unserved)
{
	$order{$db} = $node->safe_psql($db,
		"SELECT saga_place_order('alice', 'widget', 1, 1.00, 'choreography')");
}
like( $node->safe_psql($unserved[0],
		"SELECT problem || ': ' || remedy FROM saga_stuck WHERE problem = 'no worker'"),
	qr/^no worker: .*max_worker_processes/,
	'saga_stuck in a database without a worker says so');
is($node->safe_psql($served[0], "SELECT count(*) FROM saga_stuck WHERE problem = 'no worker'"),
	'0', '... and not in one that has a worker');

my $log = slurp_file($node->logfile);
like($log, qr/WARNING:  saga launcher: no worker for \d+ database.*\n.*DETAIL:.*\n.*HINT:  Raise max_worker_processes.*saga\.workers/,
	'a WARNING names the settings to raise');
like($log, qr/WARNING:  saga launcher: no worker for \d+ database.*\b\Q$unserved[0]\E\b/,
	'... and the databases left without a worker');
like($log, qr/WARNING:  saga launcher: no worker for \d+ database.*\b\Q$unserved[1]\E\b/,
	'... each of them');

# a slot that frees goes to a database that has none
$node->safe_psql($served[0], 'DROP EXTENSION saga CASCADE');
is(poll_for($node, 'postgres', $spread, "$slots $slots", 30),
	"$slots $slots", 'the freed slot went to a database without a worker');
my $done = poll_for($node, 'postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' "
	  . "AND datname IN ('$unserved[0]', '$unserved[1]')",
	'1', 10);
is($done, '1', 'one of the two is served now');
$node->safe_psql($served[1], 'DROP EXTENSION saga CASCADE');
is(poll_for($node, 'postgres', $spread, "$slots $slots", 30),
	"$slots $slots", 'the next freed slot went to the other one');
for my $db (@unserved)
{
	is($node->safe_psql($db, "SELECT saga_await($order{$db}, '30 seconds')"),
		'completed', "the saga waiting in $db completed once it had a worker");
}
is($node->safe_psql($unserved[0], "SELECT count(*) FROM saga_stuck WHERE problem = 'no worker'"),
	'0', 'saga_stuck no longer says no worker');
$node->stop;

# ---------------------------------------------------------------------------
# 2. ALTER DATABASE ... ALLOW_CONNECTIONS false, then true
# ---------------------------------------------------------------------------

$node = saga_node('connections', q{
saga.workers = 2
});
$node->safe_psql('postgres', 'CREATE EXTENSION saga');
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', q{
	CREATE EXTENSION saga;
	SELECT saga_set_balance('alice', 100000);
	SELECT saga_set_stock('widget', 10000);
});
ok(wait_saga_workers($node, 'shop', 2), 'two workers serve shop');

my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER DATABASE shop ALLOW_CONNECTIONS false');
my ($victim) = saga_worker_pids($node, 'shop');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($victim)");
ok( $node->poll_query_until(
		'postgres', "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $victim)"),
	'one worker of shop was terminated');
# long enough for the launcher's restarts after 1, 2 and 4 s
sleep 8;
my $fatals = () = slurp_file($node->logfile, $offset) =~
  /FATAL:.*database "shop" is not currently accepting connections/g;
is($fatals, 0, 'no worker was started that could not connect');
is(scalar(saga_worker_pids($node, 'shop')), 1, 'the other worker goes on');
like($node->safe_psql('postgres', "SELECT status FROM saga_databases WHERE database = 'shop'"),
	qr/ALLOW_CONNECTIONS/, 'saga_databases says why shop is short of a worker');

my $t0 = time;
$node->safe_psql('postgres', 'ALTER DATABASE shop ALLOW_CONNECTIONS true');
is(poll_for($node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' AND datname = 'shop'",
		'2', 30),
	'2', 'the second worker is back once connections are allowed');
cmp_ok(time - $t0, '<', 5, '... within seconds');

# ---------------------------------------------------------------------------
# 3. A NOTIFY flood from a stranger
# ---------------------------------------------------------------------------

$node->safe_psql('postgres', 'CREATE ROLE stranger LOGIN');
$node->safe_psql('shop', q{
	CREATE PROCEDURE public.notify_flood(seconds float8, INOUT sent bigint DEFAULT 0)
	LANGUAGE plpgsql AS $$
	DECLARE
	    stop_at timestamptz := clock_timestamp() + seconds * interval '1 second';
	BEGIN
	    WHILE clock_timestamp() < stop_at LOOP
	        NOTIFY saga;
	        COMMIT;
	        sent := sent + 1;
	        -- about the rate of the report (22,000 a second), at most 25,000
	        IF sent % 100 = 0 THEN
	            PERFORM pg_sleep(0.004);
	        END IF;
	    END LOOP;
	END
	$$;
});
is($node->safe_psql('shop', "SELECT rolsuper OR pg_has_role('stranger', 'pg_signal_backend', 'USAGE') FROM pg_roles WHERE rolname = 'stranger'"),
	'f', 'the stranger is an ordinary role');

my @workers = saga_worker_pids($node, 'shop');
is(scalar(@workers), 2, 'two workers to measure');

# CPU seconds (user + system) the workers of shop have used so far
sub worker_cpu
{
	my $ticks = 0;
	for my $pid (@workers)
	{
		my $stat = slurp_file("/proc/$pid/stat");
		$stat =~ s/^.*\) //s;    # the name may hold spaces
		my @f = split / /, $stat;
		$ticks += $f[11] + $f[12];    # utime, stime (fields 14 and 15)
	}
	return $ticks / 100.0;
}

my $seconds = 5;
my $cpu0 = worker_cpu();
sleep $seconds;
my $quiet = worker_cpu() - $cpu0;

$cpu0 = worker_cpu();
my ($stdout, $stderr) = ('', '');
my $sent = $node->safe_psql('shop', "CALL notify_flood($seconds)",
	extra_params => [ '-U', 'stranger' ]);
my $flood = worker_cpu() - $cpu0;
note("workers' CPU: ${quiet}s quiet, ${flood}s during $sent NOTIFYs in $seconds s");
note("workers' CPU split: ", join(' ', map { my $st = slurp_file("/proc/$_/stat"); $st =~ s/^.*\) //s; my @f = split / /, $st; "utime=$f[11] stime=$f[12]" } @workers));
cmp_ok($sent, '>', 2000 * $seconds, 'the stranger sent a flood of NOTIFYs');
cmp_ok($flood - $quiet, '<', 0.1 * $seconds,
	'the flood cost the workers less than a tenth of its length in CPU time');
is_deeply([ saga_worker_pids($node, 'shop') ], \@workers, 'the same workers ran throughout');

# during a flood, sagas are still woken at once (the poll is an hour)
$node->append_conf('postgresql.conf', "saga.poll_interval = '1h'");
$node->reload;
my $h = IPC::Run::start(
	[
		'psql', '-X', '-q', '-d', $node->connstr('shop'), '-U', 'stranger',
		'-c', "CALL notify_flood(20)"
	],
	'>', \$stdout, '2>', \$stderr);
sleep 1;
my $ok = 0;
for (1 .. 5)
{
	my $id = $node->safe_psql('shop',
		"SELECT saga_place_order('alice', 'widget', 1, 1.00, 'choreography')");
	$ok++
	  if $node->safe_psql('shop', "SELECT saga_await($id, '10 seconds')") eq 'completed';
}
is($ok, 5, 'during a flood, sagas complete, each within 10 s');
$h->finish;

$node->stop;
done_testing();
