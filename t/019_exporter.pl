# Prometheus' postgres_exporter (the Debian package prometheus-postgres-exporter,
# 0.11, that scripts/setup.sh installs) with examples/prometheus/saga_queries.yaml,
# as a real process against a real server over 127.0.0.1, connected as a role
# that is only a member of pg_monitor.
#
# Known sagas run first: four example orders (two complete, two fail), two
# choreographed signups of an application role (one completes, one's handler
# fails: a dead letter), two orchestrated trips (one completes, one's
# compensation fails: stuck), and a paused consumer that holds two
# deliveries.  The pg_monitor role reads every DBA view and sees what the
# superuser sees; then the exporter's /metrics must show exactly those
# numbers.  The exporter is stopped at the end, also when the test fails.
use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use File::Spec;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $queries = abs_path(dirname(__FILE__) . '/../examples/prometheus/saga_queries.yaml');
my ($exporter_bin) = grep { -x $_ } ('/usr/bin/prometheus-postgres-exporter',
	map { File::Spec->catfile($_, 'prometheus-postgres-exporter') } File::Spec->path());
ok(defined $exporter_bin, 'prometheus-postgres-exporter is installed')
  or diag('install the Debian package prometheus-postgres-exporter (scripts/setup.sh does)');
ok(-f $queries, "the query file exists: $queries");
if (!defined $exporter_bin || !-f $queries)
{
	done_testing();
	exit 1;
}
my $version = `$exporter_bin --version 2>&1`;
note("exporter: $exporter_bin: " . (split /\n/, $version)[0]);

my $node = saga_node('exporter', q{
listen_addresses = '127.0.0.1'
saga.workers = 2
saga.poll_interval = 200
saga.max_attempts = 1
saga.retry_backoff = 100
});
my $pgport = $node->port;

sub su { my ($sql) = @_; return $node->safe_psql('shop', $sql); }
sub as_app { my ($sql) = @_; return su("SET ROLE app; SET search_path = app, public; $sql"); }
# as the monitoring login, over TCP, as the exporter connects
my $watcher_dsn = "host=127.0.0.1 port=$pgport dbname=shop user=watcher sslmode=disable";
sub as_watcher { my ($sql) = @_; return $node->safe_psql('shop', $sql, connstr => $watcher_dsn); }

$node->safe_psql('postgres', 'CREATE DATABASE shop');
su(q{
	CREATE EXTENSION saga;
	CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
	CREATE ROLE app NOLOGIN;
	SELECT saga_grant_app('app');
	CREATE SCHEMA app AUTHORIZATION app;
	ALTER ROLE app SET search_path = app, public;
});
ok(wait_saga_workers($node, 'shop', 2), 'two workers serve database shop');

# --- known sagas ---------------------------------------------------------------

# The example's orders: completed, completed, failed (unknown customer),
# failed (unknown product: the payment is refunded).
su(q{
	SELECT saga_set_balance('alice', 100.00);
	SELECT saga_set_stock('widget', 10);
});
my @orders = map { su("SELECT saga_place_order($_)") } (
	q{'alice', 'widget', 2, 30.00},
	q{'alice', 'widget', 1, 15.00, 'orchestration'},
	q{'nobody', 'widget', 1, 10.00},
	q{'alice', 'gizmo', 1, 10.00, 'orchestration'});
is( join(' ', map { su("SELECT saga_await($_, '60 s')") } @orders),
	'completed completed failed failed',
	'four orders: two completed, two failed');

# An application role's choreographed signup: a handler that fails for
# user 'bad' (a dead letter: the saga stays pending, stuck); and a paused
# consumer 'audit' that holds a delivery of each signup.
as_app(q{
	CREATE TABLE mailbox (saga_id bigint, body text);
	CREATE FUNCTION send_welcome(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    IF e.payload->>'user' = 'bad' THEN
	        RAISE EXCEPTION 'mail server refuses %', e.payload->>'user';
	    END IF;
	    INSERT INTO mailbox VALUES (e.saga_id, 'welcome ' || (e.payload->>'user'));
	    PERFORM saga_publish('WelcomeSent', e.payload);
	END $$;
	CREATE FUNCTION finish_signup(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM saga_complete(e.saga_id);
	END $$;
	CREATE FUNCTION audit(e saga.event) RETURNS void LANGUAGE sql AS 'SELECT';
	SELECT saga_subscribe('mailer', 'UserSignedUp', 'send_welcome(saga.event)');
	SELECT saga_subscribe('signup', 'WelcomeSent',  'finish_signup(saga.event)');
	SELECT saga_subscribe('audit', 'UserSignedUp',  'audit(saga.event)');
});
su(q{SELECT saga_pause_consumer('audit')});
my $published_at = time;
my @signups = map {
	my $id = as_app(q{SELECT saga_begin('signup')});
	as_app(qq{SELECT saga_publish('UserSignedUp', '{"user": "$_"}', $id, 'signup')});
	$id
} ('zoe', 'bad');

# Orchestrated trips: Porto's car is refused and the flight's compensation
# fails (stuck); Lisbon completes.
as_app(q{
	CREATE FUNCTION book_flight(data jsonb) RETURNS jsonb LANGUAGE sql
	    AS $$ SELECT jsonb_build_object('flight', 'LH-' || (data->>'saga_id')) $$;
	CREATE FUNCTION cancel_flight(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	    RAISE EXCEPTION 'airline unreachable';
	END $$;
	CREATE FUNCTION book_car(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	    IF data->>'city' = 'Porto' THEN
	        PERFORM saga_reject('no car available in Porto');
	    END IF;
	    RETURN '{"car": "C-1"}';
	END $$;
	SELECT saga_define('trip',
	    saga_step('flight', 'book_flight(jsonb)', 'cancel_flight(jsonb)'),
	    saga_step('car',    'book_car(jsonb)'));
});
my @trips = map { as_app(qq{SELECT saga_start('trip', '{"city": "$_"}')}) } ('Porto', 'Lisbon');

is(as_app("SELECT saga_await($signups[0], '60 s')"), 'completed', 'zoe\'s signup completed');
is(as_app("SELECT saga_await($trips[1], '60 s')"), 'completed', 'the Lisbon trip completed');
ok( $node->poll_query_until('shop',
		"SELECT count(*) = 2 FROM saga_instances WHERE id IN ($signups[1], $trips[0]) AND status = 'pending' "
		  . "AND EXISTS (SELECT FROM saga_stuck s WHERE s.saga_id = id "
		  . "             AND s.problem IN ('dead letter', 'compensation failing'))"),
	'bad\'s signup (a dead letter) and the Porto trip (a failing compensation) are stuck');
is( su(q{SELECT string_agg(problem || ': ' || work, ', ' ORDER BY problem, work) FROM saga_stuck}),
	'compensation failing: trip step flight, consumer paused: audit <- UserSignedUp, '
	  . 'consumer paused: audit <- UserSignedUp, dead letter: mailer <- UserSignedUp',
	'saga_stuck lists the failing compensation, the paused deliveries and the dead letter');

# --- pg_monitor reads every DBA view --------------------------------------------

my @views = qw(saga_instances saga_stuck saga_dead_letters saga_backlog
  saga_subscriptions saga_workers saga_stats saga_databases);
is(as_watcher('SELECT current_user || pg_has_role(current_user, \'pg_monitor\', \'USAGE\')::text || '
		  . '(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)::text'),
	'watchertruefalse', 'watcher is a pg_monitor member, not a superuser, connected over TCP');
foreach my $v (@views)
{
	# what the superuser sees, less the columns that change from one look to the next
	my $cols = {
		saga_backlog => 'kind, consumer, pending, oldest, paused',
		saga_workers => 'pid, database',
		saga_stats   => 'database, sagas_started, sagas_completed, sagas_failed, workers',
		saga_instances => 'id, saga_type, status, phase, step, reason, attempts',
	}->{$v} // '*';
	my $sql = "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
	  . "FROM (SELECT $cols FROM $v) t";
	my ($got, $err) = ('', '');
	my $ret = $node->psql('shop', $sql, connstr => $watcher_dsn, stdout => \$got, stderr => \$err);
	is($ret, 0, "watcher may SELECT from $v") or diag($err);
	is($got, su($sql), "and sees the rows the superuser sees");
	isnt($got =~ /^(\d+)/ ? $1 : 0, 0, "which are some") if $v ne 'saga_dead_letters';
}
is(as_watcher('SELECT count(*) FROM saga_dead_letters'), '1', 'watcher sees the dead letter');
is(as_watcher(q{SELECT count(*) FROM saga_workers WHERE database = 'shop' AND pid > 0}),
	'2', 'and shop\'s two workers, with their pids');

# --- the exporter ------------------------------------------------------------------

my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($exp_out, $exp_err) = ('', '');
my $exporter;
{
	local %ENV = %ENV;
	delete @ENV{qw(PGSERVICE PGOPTIONS PGPASSWORD PGHOSTADDR PGSSLMODE PGHOST PGPORT PGUSER PGDATABASE)};
	$ENV{DATA_SOURCE_NAME} = $watcher_dsn;
	$exporter = IPC::Run::start(
		[
			$exporter_bin, "--web.listen-address=127.0.0.1:$port",
			"--extend.query-path=$queries", '--disable-default-metrics',
			'--disable-settings-metrics', '--no-collector.database',
			'--no-collector.bgwriter', '--log.level=info'
		],
		'<', \'', '>', \$exp_out, '2>', \$exp_err);
}
note("exporter started on 127.0.0.1:$port");
END
{
	# stop it however the test ends
	if ($exporter)
	{
		$exporter->signal('TERM') if $exporter->pumpable;
		eval { $exporter->finish; };
	}
}

my $http = HTTP::Tiny->new(timeout => 10);
my ($metrics, $res) = ('');
foreach my $try (1 .. 300)
{
	$res = $http->get("http://127.0.0.1:$port/metrics");
	last if $res->{success} && $res->{content} =~ /^saga_sagas_started_total/m;
	$exporter->pump_nb;
	last unless $exporter->pumpable;
	usleep(100_000);
}
ok($res->{success}, "GET http://127.0.0.1:$port/metrics")
  or diag("status $res->{status}: $res->{content}\nexporter's log:\n$exp_err");
$metrics = $res->{content} // '';
my $scraped_at = time;

# name{labels but server} -> value, for the exporter's and the saga metrics
my %m;
foreach my $line (split /\n/, $metrics)
{
	next unless $line =~ /^((?:saga|pg)_\w+)(?:\{(.*)\})? (\S+)$/;
	my ($name, $labels, $value) = ($1, $2 // '', $3);
	my @l = grep { !/^server=/ } ($labels =~ /(\w+="[^"]*")/g);
	$m{ $name . (@l ? '{' . join(',', @l) . '}' : '') } = $value;
}
note("the saga metrics:\n" . join("\n", grep { /^saga_/ } split /\n/, $metrics));

is($m{pg_up}, 1, 'pg_up 1: the exporter connected as watcher');
is($m{pg_exporter_last_scrape_error}, 0, 'pg_exporter_last_scrape_error 0');
ok( (grep { /^pg_exporter_user_queries_load_error\{/ && $m{$_} == 0 } keys %m) == 1,
	'the query file loaded');
$exporter->pump_nb;
unlike($exp_err, qr/level=(?:error|warn)/, 'the exporter logged no error or warning')
  or diag($exp_err);

# per saga type: started, completed, failed, pending, stuck
my %per_type = (
	order  => [ 4, 2, 2, 0, 0 ],
	signup => [ 2, 1, 0, 1, 1 ],
	trip   => [ 2, 1, 0, 1, 1 ]);
foreach my $type (sort keys %per_type)
{
	my @got = map { $m{"saga_sagas_$_\{database=\"shop\",saga_type=\"$type\"}"} // 'absent' }
	  qw(started_total completed_total failed_total pending stuck);
	is("@got", "@{$per_type{$type}}", "$type sagas: started, completed, failed, pending, stuck");
}
is(scalar(grep { /^saga_sagas_started_total\{/ } keys %m), 3, 'three saga types');

# the backlog: audit holds two deliveries since the first signup; the Porto
# trip waits on the flight service's compensation
is($m{'saga_backlog_pending{consumer="audit",database="shop",kind="deliveries"}'}, 2,
	'backlog: audit has 2 deliveries pending');
is($m{'saga_backlog_paused{consumer="audit",database="shop",kind="deliveries"}'}, 1, 'audit is paused');
my $age = $m{'saga_backlog_oldest_age_seconds{consumer="audit",database="shop",kind="deliveries"}'} // -1;
ok($age > 0 && $age <= $scraped_at - $published_at + 1,
	"the oldest of them is as old as the first signup's event (${age}s, at most "
	  . sprintf('%.1f', $scraped_at - $published_at) . 's)');
is($m{'saga_backlog_pending{consumer="flight",database="shop",kind="steps"}'}, 1,
	'backlog: the flight service has the Porto trip\'s step');
is( join(' ', map { $m{"saga_backlog_pending{consumer=\"$_\",database=\"shop\",kind=\"deliveries\"}"} // 'absent' }
	  qw(mailer signup order payment inventory)),
	'0 0 0 0 0', 'nothing else is pending');

# dead letters per consumer, every consumer listed
is( join(' ', map { "$_=" . ($m{"saga_dead_letters_count{consumer=\"$_\",database=\"shop\"}"} // 'absent') }
	  qw(mailer audit signup order payment inventory)),
	'mailer=1 audit=0 signup=0 order=0 payment=0 inventory=0', 'dead letters: mailer has one');

# saga_stuck per problem: every problem, 0 when none has it (an alert on
# "> 0" needs the series before the first occurrence)
is( join(', ', map { /problem="([^"]*)"/; "$1=$m{$_}" } sort grep { /^saga_stuck_count\{/ } keys %m),
	'compensation failing=1, consumer paused=2, dead letter=1, delivery retrying=0, '
	  . 'no worker=0, nothing pending=0, past its deadline=0, service paused=0, '
	  . 'step retrying=0, waiting for a lock=0',
	'stuck, per problem, the others at 0');

# the workers
is( join(' ', map { $m{"saga_database_$_\{database=\"shop\"}"} // 'absent' } qw(workers workers_wanted served)),
	'2 2 1', 'shop has 2 workers of 2 wanted, served');

# the engine's counters: what saga_stats says now (nothing runs any more)
my @stats = qw(sagas_aborted compensations events_published deliveries steps retries dead_letters);
is( join(' ', map { $m{"saga_stats_${_}_total\{database=\"shop\"}"} // 'absent' } @stats),
	su('SELECT ' . join(" || ' ' || ", @stats) . ' FROM saga_stats'),
	'saga_stats counters, as saga_stats shows them');
is($m{'saga_stats_dead_letters_total{database="shop"}'}, 2,
	'dead_letters_total: the dead letter and the compensation given up');

# --- stop it ---------------------------------------------------------------------

$exporter->signal('TERM');
ok(eval { $exporter->finish; 1 } || !$exporter->pumpable, 'the exporter stops on SIGTERM');
undef $exporter;
is($http->get("http://127.0.0.1:$port/metrics")->{status}, 599, 'and no longer answers');

done_testing();
