# Two ways of waiting that no commit used to end.
#
# On a hot standby no transaction commits: the standby replays the commits
# of the primary, and nothing broadcasts the condition variable saga_await()
# sleeps on.  saga_await() there must look at the saga again every so often
# and return soon after the saga's end is replayed, not at its timeout.
#
# A worker inside a slow handler is busy: saga_workers must say so, and
# committing publishers must wake the other, idle worker rather than send
# their NOTIFY to, or set the latch of, the busy one.  With the poll
# interval at an hour only those wake-ups get sagas done, so an order placed
# while the listening worker sleeps in a handler ends in milliseconds or
# waits for that handler to end.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;
use Time::HiRes qw(time);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'saga'
max_worker_processes = 16
saga.workers = 2
saga.poll_interval = '1h'
});
$primary->start;

sub su  { my ($sql) = @_; return $primary->safe_psql('postgres', $sql); }
sub app { my ($sql) = @_; return $primary->safe_psql('postgres', $sql, extra_params => [ '-U', 'app' ]); }

su(q{
	CREATE EXTENSION saga;
	CREATE ROLE app LOGIN;
	GRANT EXECUTE ON FUNCTION
	    saga_publish(text, jsonb, bigint, text),
	    saga_subscribe(text, text, regprocedure, text, boolean, text),
	    saga_begin(text, interval), saga_complete(bigint), saga_await(bigint, interval),
	    saga_define(text, saga.step[]), saga_start(text, jsonb, interval)
	TO app;
	CREATE SCHEMA shop AUTHORIZATION app;
});
app(q{
	CREATE FUNCTION shop.slow(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM pg_sleep((e.payload->>'secs')::float8);
	    PERFORM saga_complete(e.saga_id);
	END $$;
	CREATE FUNCTION shop.quick(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM saga_complete(e.saga_id);
	END $$;
	SELECT saga_subscribe('packer', 'Slow',  'shop.slow(saga.event)');
	SELECT saga_subscribe('clerk',  'Quick', 'shop.quick(saga.event)');
	CREATE FUNCTION shop.pack(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM pg_sleep((data->>'secs')::float8);
	    RETURN '{"packed": true}';
	END $$;
	SELECT saga_define('parcel', saga_step('pack', 'shop.pack(jsonb)'));
});
ok(wait_saga_workers($primary, 'postgres', 2), 'two workers serve the database');

# Begin a saga of the given type and publish its first event; returns its id.
sub place
{
	my ($type, $event, $payload) = @_;
	my $row = app(
		"WITH s AS (SELECT saga_begin('$type') AS id) "
		  . "SELECT id, saga_publish('$event', '$payload', id, 'test') FROM s");
	my ($id) = split /\|/, $row;
	return $id;
}

# --- saga_await on a hot standby ------------------------------------------

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

my $id = place('slow', 'Slow', '{"secs": 1.5}');
$primary->wait_for_catchup($standby, 'replay');
my $t0 = time;
my ($before, $status, $late_ms) = split /\n/, $standby->safe_psql('postgres', qq{
	SELECT saga_status($id);
	SELECT saga_await($id, '8s');
	SELECT round(extract(epoch FROM clock_timestamp() - finished_at) * 1000)
	  FROM saga.instance WHERE id = $id;
});
my $elapsed = time - $t0;
is($before, 'pending', 'the saga is still pending on the standby when saga_await starts');
is($status, 'completed', 'saga_await on the standby sees the saga completed');
cmp_ok($late_ms // 1e9, '<', 1000,
	'saga_await on the standby returns soon after the saga ended on the primary');
cmp_ok($elapsed, '<', 3,
	'saga_await on the standby of a saga ending in ~1.5 s returns well before its 8 s timeout');
note sprintf('standby: saga_await took %.2f s, returned %s ms after the end', $elapsed, $late_ms // '?');

# A saga that stays pending (nothing handles it) still times out there.
$id = app("SELECT saga_begin('idle')");
$primary->wait_for_catchup($standby, 'replay');
$t0 = time;
is($standby->safe_psql('postgres', "SELECT saga_await($id, '300ms')"), 'pending',
	'saga_await on the standby times out on a saga still pending');
cmp_ok(time - $t0, '>=', 0.3, '... after its timeout');
$standby->stop;

# --- A worker in a slow handler is busy ------------------------------------

my $here = "FROM saga_workers WHERE database = current_database()";
ok($primary->poll_query_until('postgres', "SELECT count(*) = 2 $here AND state = 'idle'"),
	'both workers idle');

# Only the listening worker is woken (by NOTIFY) for the first event after
# both went idle; it sleeps in the handler for 6 s.
my $slow = place('slow', 'Slow', '{"secs": 6}');
my $in_handler = "FROM pg_stat_activity WHERE backend_type = 'saga worker' "
  . "AND datname = 'postgres' AND wait_event = 'PgSleep'";
ok($primary->poll_query_until('postgres', "SELECT count(*) = 1 $in_handler"),
	'a worker sleeps in the slow handler');
my $busy_pid = su("SELECT pid $in_handler");
is(su("SELECT state $here AND pid = $busy_pid"), 'busy',
	'saga_workers shows the worker in the slow handler busy');
is(su("SELECT count(*) $here AND pid <> $busy_pid AND state = 'idle'"), '1',
	'... and the other worker idle');

# Orders placed meanwhile go to the idle worker and end at once.
sub quick_orders
{
	my ($label) = @_;
	for my $n (1 .. 3)
	{
		my $quick = place('quick', 'Quick', '{}');
		is(app("SELECT saga_await($quick, '10s')"), 'completed', "$label: order $n completed");
		my $ms = su("SELECT round(extract(epoch FROM finished_at - started_at) * 1000) "
			  . "FROM saga.instance WHERE id = $quick");
		cmp_ok($ms // 1e9, '<', 300, "$label: order $n, placed meanwhile, ended within 300 ms");
		note "$label: order $n took $ms ms";
	}
}
quick_orders('slow handler');
is(su("SELECT count(*) $in_handler AND pid = $busy_pid"), '1',
	'the orders were placed while the slow handler was still running');

is(app("SELECT saga_await($slow, '20s')"), 'completed', 'the slow saga completed');
ok($primary->poll_query_until('postgres', "SELECT count(*) = 2 $here AND state = 'idle'"),
	'both workers idle again');

# The same with an orchestrated saga whose step is slow.
$slow = app(q{SELECT saga_start('parcel', '{"secs": 6}')});
ok($primary->poll_query_until('postgres', "SELECT count(*) = 1 $in_handler"),
	'a worker sleeps in the slow step');
$busy_pid = su("SELECT pid $in_handler");
is(su("SELECT state $here AND pid = $busy_pid"), 'busy',
	'saga_workers shows the worker in the slow step busy');
quick_orders('slow step');
is(su("SELECT count(*) $in_handler AND pid = $busy_pid"), '1',
	'the orders were placed while the slow step was still running');
is(app("SELECT saga_await($slow, '20s')"), 'completed', 'the orchestrated saga completed');

$primary->stop;
done_testing();
