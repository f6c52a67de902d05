# Logical replication of a whole database that has the extension.
#
# On the publisher, CREATE PUBLICATION ... FOR ALL TABLES used to break the
# engine: saga.step_run and saga.delivery_failure had no replica identity,
# so every purge failed ("cannot delete from table ... because it does not
# have a replica identity and publishes deletes") and the workers exited in
# a loop.  On a subscriber that also has the extension, the workers ran the
# replicated sagas a second time (a second payment for each order), and the
# apply then stopped on a duplicate key.
#
# Now every table of the extension has a replica identity; the publisher
# purges and runs its orders as before; the subscriber is a copy: its
# workers run nothing (saga_workers shows them as 'copy', saga_copy_of()
# names the subscription, saga_run_pending() refuses), its apply never
# fails, and it holds exactly the publisher's sagas and payments.  Once the
# subscription is dropped, the copy runs sagas of its own, with the
# extension's sequences moved past the copied rows.  And the upgrade from
# 1.1 of a step_run that holds a request_seq twice gives it REPLICA
# IDENTITY FULL, with a warning, rather than failing.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;
use Time::HiRes qw(time usleep);

my $ORDERS = 40;	# of each pattern

# The publisher's workers are stopped (saga.workers = 0) while the orders
# are placed, so that the subscriber receives them pending.
my $pub = saga_node('publisher', q{
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
saga.workers = 0
saga.poll_interval = 200
saga.retention = 1
});
my $sub = saga_node('subscriber', q{
saga.workers = 2
saga.poll_interval = 200
saga.retention = 1
});

# Poll a query until it returns 't', for at most $secs seconds.
sub poll_for
{
	my ($node, $sql, $secs) = @_;
	my $until = time() + $secs;
	while (time() < $until)
	{
		return 1 if $node->safe_psql('postgres', $sql) eq 't';
		usleep(100_000);
	}
	return 0;
}

# Every table of schema saga has a replica identity: a primary key (the
# default identity), an index named as identity, or FULL.
my $no_identity = q{
	SELECT coalesce(string_agg(c.relname, ', ' ORDER BY c.relname), '')
	  FROM pg_class c
	 WHERE c.relnamespace = 'saga'::regnamespace AND c.relkind IN ('r', 'p')
	   AND NOT (c.relreplident IN ('f', 'i')
	            OR (c.relreplident = 'd'
	                AND EXISTS (SELECT FROM pg_index x
	                             WHERE x.indrelid = c.oid AND x.indisprimary)))};

$pub->safe_psql('postgres', q{
	CREATE EXTENSION saga;
	CREATE ROLE shop LOGIN;
	GRANT EXECUTE ON FUNCTION saga_place_order(text, text, integer, numeric, text, text, interval),
	                          saga_await(bigint, interval) TO shop;
	SELECT saga_set_balance('alice', 1000000);
	SELECT saga_set_stock('widget', 100000);
	CREATE PUBLICATION everything FOR ALL TABLES;
});
is($pub->safe_psql('postgres', $no_identity), '',
	'publisher: every table of schema saga has a replica identity');

# The subscriber, as the README says: the publisher's roles (the tables
# name them: regrole columns), then in one transaction the extension and
# the removal of the rows its CREATE EXTENSION put in (the built-in
# subscriptions and definitions, which the publisher has too), then the
# subscription.
$sub->safe_psql('postgres', q{
	CREATE ROLE shop LOGIN;
	BEGIN;
	CREATE EXTENSION saga;
	GRANT EXECUTE ON FUNCTION saga_place_order(text, text, integer, numeric, text, text, interval),
	                          saga_await(bigint, interval) TO shop;
	TRUNCATE saga.definition_step, saga.definition, saga.subscription, saga.event_grant, saga.event_type, saga.saga_grant, saga.trace_client;
	COMMIT;
});
is($sub->safe_psql('postgres', $no_identity), '',
	'subscriber: every table of schema saga has a replica identity');
ok(wait_saga_workers($sub, 'postgres', 2), 'the subscriber has its two workers');

my $pub_conn = $pub->connstr() . ' dbname=postgres';
$sub->safe_psql('postgres',
	"CREATE SUBSCRIPTION copy CONNECTION '$pub_conn' PUBLICATION everything");
$sub->wait_for_subscription_sync($pub, 'copy');

# --- Orders placed while the publisher's workers are stopped -----------------

$pub->safe_psql('postgres', qq{
	SELECT count(saga_place_order('alice', 'widget', 1, 1.00, mode))
	  FROM generate_series(1, $ORDERS), unnest(ARRAY['choreography', 'orchestration']) mode;
}, extra_params => [ '-U', 'shop' ]);
$pub->wait_for_catchup('copy');
is($sub->safe_psql('postgres', "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	2 * $ORDERS, "the subscriber has the publisher's " . (2 * $ORDERS) . ' pending orders');

ok( poll_for($sub,
		"SELECT count(*) = 2 FROM saga_workers WHERE database = current_database() AND state = 'copy'", 30),
	"subscriber: saga_workers shows both workers in state 'copy'");
# give the workers a few poll intervals in which they might run something
usleep(1_500_000);
is($sub->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM saga.payment) || ' payments, '"
		  . " || (SELECT count(*) FROM saga.instance WHERE status = 'pending') || ' pending'"),
	'0 payments, ' . (2 * $ORDERS) . ' pending',
	"the subscriber's workers run none of the replicated sagas");
is($sub->safe_psql('postgres', 'SELECT saga_copy_of()'), 'copy',
	'saga_copy_of() names the subscription that makes the database a copy');
my ($ret, $stdout, $stderr) = $sub->psql('postgres', 'SELECT saga_run_pending()');
like($stderr, qr/ERROR:  saga_run_pending\(\) cannot run sagas in a copy.*subscription "copy"/s,
	'saga_run_pending() refuses to run sagas in the copy, naming the subscription');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM saga.payment'), '0', '... and ran none');

# --- The publisher runs its orders and purges them ---------------------------

$pub->safe_psql('postgres', 'ALTER SYSTEM SET saga.workers = 2; SELECT pg_reload_conf()');
ok( $pub->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM saga.instance WHERE status = 'pending'"),
	'publisher: every order ends');
is($pub->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'completed') || '/' || count(*) FROM saga.instance"),
	(2 * $ORDERS) . '/' . (2 * $ORDERS), '... completed');

my $t0 = time();
my $id = $pub->safe_psql('postgres', "SELECT saga_place_order('alice', 'widget', 1, 1.00)",
	extra_params => [ '-U', 'shop' ]);
is($pub->safe_psql('postgres', "SELECT saga_await($id, '30 seconds')", extra_params => [ '-U', 'shop' ]),
	'completed', 'publisher: an order placed now completes');
my $took = time() - $t0;
cmp_ok($took, '<', 10, sprintf('... in %.1f s', $took));

# with saga.retention = 1 s, the workers purge every 10 s when idle
ok( $pub->poll_query_until('postgres',
		'SELECT (SELECT count(*) FROM saga.event) = 0 AND (SELECT count(*) FROM saga.step_run) = 0'
		  . ' AND (SELECT count(*) FROM saga.instance WHERE purged_at IS NULL) = 0'),
	"publisher: the workers purge the finished sagas' events, deliveries and steps");
is($pub->safe_psql('postgres',
		"SELECT count(*) FROM saga_workers WHERE database = current_database()"
		  . " AND last_error IS NULL AND state IN ('idle', 'busy')"),
	'2', 'publisher: both workers still run, none exited on an error');
ok(!$pub->log_contains('does not have a replica identity'),
	'publisher: no statement failed for want of a replica identity');

# --- The copy holds what the publisher holds ---------------------------------

$pub->wait_for_catchup('copy');
my $summary = q{
	SELECT (SELECT count(*) FROM saga.instance) || ' sagas, '
	    || (SELECT count(*) FROM saga.instance WHERE status = 'completed' AND purged_at IS NOT NULL) || ' completed and purged, '
	    || (SELECT count(*) || ' payments of ' || count(DISTINCT order_id) || ' orders' FROM saga.payment) || ', '
	    || (SELECT count(*) FROM saga.event) || ' events, '
	    || (SELECT count(*) FROM saga.step_run) || ' steps'};
my $expect = (2 * $ORDERS + 1) . ' sagas, ' . (2 * $ORDERS + 1) . ' completed and purged, '
  . (2 * $ORDERS + 1) . ' payments of ' . (2 * $ORDERS + 1) . ' orders, 0 events, 0 steps';
is($pub->safe_psql('postgres', $summary), $expect, 'publisher: one payment per order');
is($sub->safe_psql('postgres', $summary), $expect,
	"the copy holds the publisher's sagas and payments, purges included, and no more");
is($sub->safe_psql('postgres',
		'SELECT apply_error_count || ' . "'/'" . ' || sync_error_count FROM pg_stat_subscription_stats'
		  . " WHERE subname = 'copy'"),
	'0/0', "the subscriber's apply and table sync never failed");
ok(!$sub->log_contains('duplicate key'), 'no duplicate key in the subscriber\'s log');

# --- The subscription dropped: the copy runs its own sagas -------------------

$sub->safe_psql('postgres', 'DROP SUBSCRIPTION copy');
ok( poll_for($sub,
		"SELECT count(*) = 0 FROM saga_workers WHERE database = current_database() AND state = 'copy'", 30),
	'without the subscription, the workers leave the state copy');
is($sub->safe_psql('postgres', 'SELECT saga_copy_of() IS NULL'), 't', 'saga_copy_of() is NULL');
for my $mode ('choreography', 'orchestration')
{
	my $new = $sub->safe_psql('postgres', "SELECT saga_place_order('alice', 'widget', 1, 1.00, '$mode')",
		extra_params => [ '-U', 'shop' ]);
	cmp_ok($new, '>', 2 * $ORDERS + 1, "the former copy's new $mode order has a new id ($new)");
	is($sub->safe_psql('postgres', "SELECT saga_await($new, '30 seconds')",
			extra_params => [ '-U', 'shop' ]),
		'completed', "... and completes");
}
is($sub->safe_psql('postgres', 'SELECT count(*) FROM saga.payment'), 2 * $ORDERS + 3,
	'the former copy charged its two new orders once each');

# --- The upgrade: a table that holds a value twice gets REPLICA IDENTITY FULL --

$sub->safe_psql('postgres', 'CREATE DATABASE old');
$sub->safe_psql('old', q{
	CREATE EXTENSION saga VERSION '1.1';
	INSERT INTO saga.step_run (saga_id, step_no, step, service, kind, outcome, request,
	                           request_seq, response_seq, started_at, finished_at)
	SELECT 1, 0, 'charge', 'payment', 'action', 'ok', 'POST /charge', 7, 8 + g, now(), now()
	  FROM generate_series(1, 2) g;});
($ret, $stdout, $stderr) = $sub->psql('old', "ALTER EXTENSION saga UPDATE TO '1.2'");
is($ret, 0, 'ALTER EXTENSION UPDATE with a request_seq held twice succeeds');
like($stderr, qr/WARNING:  saga\.step_run\.request_seq holds a value twice/,
	'... with a warning');
is($sub->safe_psql('old',
		"SELECT string_agg(relname || ':' || relreplident::text, ' ' ORDER BY relname) FROM pg_class"
		  . " WHERE oid IN ('saga.step_run'::regclass, 'saga.delivery_failure'::regclass)"),
	'delivery_failure:d step_run:f',
	'... step_run gets REPLICA IDENTITY FULL, delivery_failure its primary key');
is($sub->safe_psql('old', $no_identity), '', '... and every table has a replica identity');

$sub->stop;
$pub->stop;
done_testing();
