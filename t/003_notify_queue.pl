# The notification queue under a sustained burst of orders from concurrent
# clients: pg_notification_queue_usage() stays near zero, also while a
# worker is terminated and restarted in the middle of the burst, and the
# log shows no error loop.
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

my $BURST_SECONDS = 20;
my $CLIENTS = 8;
# Orders per second, all clients together: a sustained load the two workers
# keep up with, so that they keep falling idle and being woken by NOTIFY
# (busy workers are not notified at all, and the queue would prove nothing).
my $RATE = 250;

# pg_notification_queue_usage() is (head page - tail page) / 2^20 pages of
# 8 kB; a NOTIFY on channel "saga" takes 24 bytes, ~340 to a page.
# PostgreSQL advances the tail only every 4 pages, so a queue whose
# listeners keep up stays within 4 pages: that is the bound.  Had a
# listener stopped reading, every ~340 wake-ups of the burst would add a
# page; the calibration at the end shows that the same load, with one
# listener that does not read, makes the usage grow.
my $PAGES = 1024 * 1024;
my $BOUND_PAGES = 4;

my $node = saga_node('notify_queue', q{
max_connections = 40
saga.workers = 2
saga.poll_interval = 200
log_statement = none
});
my $started = time;



# A psql session of our own, fed through a pipe: send() queues SQL,
# query() waits for the result of one statement.
sub session
{
	my %s = (in => '', out => '', err => '', n => 0);
	$s{timer} = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$s{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err}, $s{timer});
	return \%s;
}

sub send_sql
{
	my ($s, $sql) = @_;
	$s->{in} .= "$sql\n";
	$s->{h}->pump_nb;
}

sub query
{
	my ($s, $sql) = @_;
	my $mark = '__done_' . ++$s->{n} . '__';
	$s->{in} .= "$sql;\n\\echo $mark\n";
	$s->{timer}->start($PostgreSQL::Test::Utils::timeout_default);
	$s->{h}->pump until $s->{out} =~ /\Q$mark\E\n/;
	die "psql: $s->{err}" if $s->{err} ne '';
	my $result = $s->{out};
	$s->{out} = '';
	$result =~ s/\Q$mark\E\n//;
	chomp $result;
	return $result;
}

sub close_session
{
	my ($s) = @_;
	$s->{in} .= "\\q\n";
	$s->{h}->finish;
	return $s->{out};
}

# Place orders at $RATE for $seconds from $CLIENTS pgbench clients; call
# $each every 50 ms meanwhile.  Returns the number of orders placed.
sub burst
{
	my ($seconds, $each) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $CLIENTS, '-j', 2, '-T', $seconds,
			'-R', $RATE, '-f', $node->basedir . '/place_order.sql',
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($seconds + $PostgreSQL::Test::Utils::timeout_default));
	my $t0 = time;
	while ($h->pumpable)
	{
		$h->pump_nb;
		$each->(time - $t0);
		usleep(50_000);
	}
	ok($h->finish, "pgbench ran its $seconds s") or diag($err);
	my ($tx) = $out =~ /number of transactions actually processed: (\d+)/;
	return $tx // 0;
}

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION saga;
	SELECT count(saga_set_balance('c' || i, 1000000)) FROM generate_series(0, 49) i;
	SELECT count(saga_set_stock('p' || i, 1000000)) FROM generate_series(0, 19) i;
});
ok(wait_saga_workers($node, 'postgres', 2), 'two workers serve the database');

# Random customers and products; half the customers' orders are
# orchestrated, the other half choreographed.
PostgreSQL::Test::Utils::append_to_file(
	$node->basedir . '/place_order.sql', q{
\set c random(0, 49)
\set p random(0, 19)
\set q random(1, 3)
\set a random(1, 20)
SELECT saga_place_order('c' || :c, 'p' || :p, :q, :a, CASE WHEN :c % 2 = 0 THEN 'orchestration' ELSE 'choreography' END);
});

# One session samples the queue; another listens on "saga" as well, to
# count the wake-ups sent, and reads them at every sample so that it does
# not hold the queue's tail back itself.
my $sampler = session();
my $listener = session();
query($listener, 'LISTEN saga');

my $log_offset = -s $node->logfile;
my ($max_usage, $samples, $max_during_restart) = (0, 0, 0);
my ($victim, $killed_at, $back_at);
my $orders = burst(
	$BURST_SECONDS,
	sub {
		my ($elapsed) = @_;
		my ($usage, $workers) = split /\|/, query($sampler, q{
			SELECT pg_notification_queue_usage(),
			       (SELECT count(*) FROM pg_stat_activity
			         WHERE backend_type = 'saga worker' AND datname = 'postgres')});
		send_sql($listener, 'SELECT 1;');
		$samples++;
		$max_usage = $usage if $usage > $max_usage;
		if (defined $killed_at && !defined $back_at)
		{
			$max_during_restart = $usage if $usage > $max_during_restart;
			$back_at = time if $workers == 2;
		}
		# halfway, terminate a worker the way an operator would
		if (!defined $killed_at && $elapsed > $BURST_SECONDS / 2)
		{
			($victim) = saga_worker_pids($node, 'postgres');
			is(query($sampler, "SELECT pg_terminate_backend($victim)"),
				't', "terminated worker $victim in the middle of the burst");
			$killed_at = time;
		}
	});
my $notifications = () =
  close_session($listener) =~ /Asynchronous notification "saga"/g;
my $pending_at_end = $node->safe_psql('postgres',
	"SELECT count(*) FROM saga.instance WHERE status = 'pending'");

diag(
	sprintf(
		"burst: %d orders in %d s from %d clients, %d pending at its end; "
		  . "%d NOTIFY saga sent; %d queue samples: max usage %.3g (%d pages), "
		  . "%.3g (%d pages) while the worker restarted (%.1f s)",
		$orders, $BURST_SECONDS, $CLIENTS, $pending_at_end, $notifications,
		$samples, $max_usage, $max_usage * $PAGES, $max_during_restart,
		$max_during_restart * $PAGES, ($back_at // time) - ($killed_at // time)));

ok($orders > 0, 'orders were placed during the burst');
ok(defined $killed_at && defined $back_at,
	'a worker was terminated and replaced during the burst');
cmp_ok($samples, '>=', 50, 'the queue was sampled throughout the burst');
cmp_ok($notifications, '>', 0,
	'the burst woke idle workers with NOTIFY');
cmp_ok($max_usage * $PAGES, '<=', $BOUND_PAGES,
	"the notification queue stayed within $BOUND_PAGES pages");

ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga.instance WHERE status = 'pending'"),
	'every saga of the burst ended');
is($node->safe_psql('postgres', 'SELECT count(*) FROM saga_orders'),
	$orders, 'one order per pgbench transaction');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM saga.delivery WHERE status <> 'done'"),
	'0', 'every delivery is done');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM saga.account a
		  LEFT JOIN (SELECT customer, sum(amount) AS spent FROM saga_orders
		              WHERE status = 'completed' GROUP BY customer) c USING (customer)
		 WHERE a.balance <> 1000000 - coalesce(c.spent, 0)}),
	'0', 'each balance = initial - completed amounts');

# The log: the terminated worker's exit, and no error loop.
my $log = slurp_file($node->logfile, $log_offset);
my $exits = () = $log =~ /exited with exit code 1/g;
ok($exits >= 1 && $exits <= 2,
	"the terminated worker's exit is in the log, and at most one other ($exits)")
  or diag($log);
my @errors = $log =~ /^.*\b(?:ERROR|PANIC):.*$/mg;
is(scalar(@errors), 0, 'no ERROR in the log during the burst')
  or diag(join("\n", @errors[ 0 .. ($#errors < 9 ? $#errors : 9) ]));

# Calibration: the same load, with one listener that does not read (a
# session that listens and stays inside a transaction), makes the usage
# grow past what it was with only the workers listening.  So the samples
# above would see a worker that stopped draining its notifications.  (How
# far it grows depends on how often the workers were idle enough to be
# sent a NOTIFY, so it is not compared with the page bound.)
my $holder = session();
query($holder, 'LISTEN saga');
query($holder, 'BEGIN');
query($holder, 'SELECT 1');
my $cal_orders = burst($BURST_SECONDS, sub { });
my $held = query($sampler, 'SELECT pg_notification_queue_usage()');
diag(sprintf('calibration: %d orders in %d s with a listener not reading: usage %.3g (%d pages)',
		$cal_orders, $BURST_SECONDS, $held, $held * $PAGES));
cmp_ok($held * $PAGES, '>', $max_usage * $PAGES,
	'calibration: with a listener not reading, the same load makes the usage grow');
query($holder, 'COMMIT');
close_session($holder);
close_session($sampler);

diag(sprintf('runtime: %.1f s', time - $started));
$node->stop;
done_testing();
