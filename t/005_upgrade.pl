# ALTER EXTENSION saga UPDATE (1.0 -> 1.1, then 1.1 -> 1.2) while sagas are in flight and the
# workers are running: the update goes through, the sagas in flight end
# exactly once with balances and stock adding up, the workers come back and
# log no error, and the upgraded extension has exactly the objects (and
# table columns, and pg_dump configuration) of a fresh CREATE EXTENSION.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $node = saga_node('upgrade', q{
saga.workers = 2
saga.poll_interval = 200
});

my $db = 'postgres';

sub q_db
{
	my ($dbname, $sql) = @_;
	return $node->safe_psql($dbname, $sql);
}


# --- 1.0, with sagas in flight ------------------------------------------------

q_db($db, "CREATE EXTENSION saga VERSION '1.0'");
is(q_db($db, "SELECT extversion FROM pg_extension WHERE extname = 'saga'"),
	'1.0', 'CREATE EXTENSION saga VERSION 1.0');
is(q_db($db, "SELECT to_regclass('saga_stats') IS NULL AND to_regclass('saga_workers') IS NULL"),
	't', '1.0 has no saga_stats, no saga_workers');
ok(wait_saga_workers($node, $db, 2), 'two workers serve the 1.0 database');

# alice can pay for everything, bob for a few orders, carol for nothing;
# widget has enough for every order, gadget has none: all three outcomes in
# both patterns, whichever order the workers take the orders in.
my %initial_balance = (alice => 100000, bob => 30, carol => 0);
my %initial_stock = (widget => 1000, gadget => 0);
q_db($db, join ";\n",
	(map { "SELECT saga_set_balance('$_', $initial_balance{$_})" } sort keys %initial_balance),
	(map { "SELECT saga_set_stock('$_', $initial_stock{$_})" } sort keys %initial_stock));

# The inventory service is down: orders get charged (or fail payment) and
# then wait for it, both patterns.
is(q_db($db, "SELECT saga_pause_consumer('inventory')"), 't', 'inventory paused');

my $n_orders = 300;
q_db($db, qq{
	SELECT saga_place_order(CASE WHEN i % 5 = 0 THEN 'bob' ELSE 'alice' END,
	                        CASE WHEN i % 7 = 0 THEN 'gadget' ELSE 'widget' END,
	                        1 + i % 2, (i % 9 + 1)::numeric,
	                        CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END)
	  FROM generate_series(1, $n_orders) i});

# every order is charged (and waits for inventory) or has failed payment
ok( $node->poll_query_until($db,
		"SELECT count(*) = 0 FROM saga_orders o WHERE o.status = 'pending' "
		  . "AND NOT EXISTS (SELECT FROM saga.payment p WHERE p.order_id = o.order_id)"),
	'every order is charged or has failed payment');
my $in_flight = q_db($db, "SELECT count(*) FROM saga_orders WHERE status = 'pending'");
my $in_flight_chor = q_db($db,
	"SELECT count(*) FROM saga_orders WHERE status = 'pending' AND pattern = 'choreography'");
my $in_flight_orch = q_db($db,
	"SELECT count(*) FROM saga_orders WHERE status = 'pending' AND pattern = 'orchestration'");
cmp_ok($in_flight_chor, '>=', 50, "choreographed sagas in flight: $in_flight_chor");
cmp_ok($in_flight_orch, '>=', 50, "orchestrated sagas in flight: $in_flight_orch");
my $pending_inventory = q_db($db,
	"SELECT count(*) FROM saga.delivery d JOIN saga.subscription s ON s.id = d.subscription_id "
	  . "WHERE d.status = 'pending' AND s.consumer = 'inventory'");
is($pending_inventory, $in_flight_chor,
	'each choreographed saga in flight waits on one inventory delivery');

# --- the update, with the workers busy ----------------------------------------

my $log_offset = -s $node->logfile;
my $workers_before = q_db($db,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' AND datname = '$db'");
is($workers_before, '2', 'two workers right before the update');

# A burst of orders the (running) payment service refuses, committed just
# before the update so that the workers are busy with it while it runs.
my $burst = 200;
my $update_out = q_db($db, qq{
	SELECT count(saga_place_order('carol', 'widget', 1, 1.00,
	                              CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END))
	  FROM generate_series(1, $burst) i;
	SELECT count(*) FROM saga_orders WHERE status = 'pending';
	ALTER EXTENSION saga UPDATE TO '1.1';
	SELECT extversion FROM pg_extension WHERE extname = 'saga';});
my @update_out = split /\n/, $update_out;
is($update_out[0], $burst, "placed a burst of $burst orders right before the update");
cmp_ok($update_out[1], '>', $in_flight,
	"the update ran with $update_out[1] sagas pending ($in_flight waiting on inventory)");
is($update_out[2], '1.1', 'ALTER EXTENSION saga UPDATE went to 1.1');
is(q_db($db, "SELECT extversion FROM pg_extension WHERE extname = 'saga'"), '1.1',
	'extversion is 1.1');

# the 1.1 objects
is( q_db($db,
		"SELECT to_regclass('saga_stats') IS NOT NULL AND to_regclass('saga_workers') IS NOT NULL "
		  . "AND to_regclass('saga_backlog') IS NOT NULL "
		  . "AND to_regprocedure('saga_trace_mermaid(bigint)') IS NOT NULL "
		  . "AND to_regprocedure('saga_purge(interval)') IS NOT NULL"),
	't', '1.1 objects exist: saga_stats, saga_workers, saga_backlog, saga_trace_mermaid, saga_purge');

# the workers are back (the update pauses them for its transaction only)
ok(wait_saga_workers($node, $db, 2), 'two workers serve the database after the update');
ok( $node->poll_query_until($db,
		"SELECT count(*) = 2 FROM saga_workers WHERE database = current_database()"),
	'saga_workers shows the two workers');
ok( $node->poll_query_until($db, "SELECT workers = 2 FROM saga_stats"),
	'saga_stats counts two workers');
is(q_db($db, "SELECT count(*) FROM saga_workers WHERE state = 'launcher'"), '1',
	'saga_workers shows the launcher');

# the burst is served by the new workers (payment is not paused)
ok( $node->poll_query_until($db,
		"SELECT count(*) = $burst FROM saga_orders WHERE customer = 'carol' AND status = 'failed'"),
	'the burst placed before the update failed payment, every order of it');

# while inventory is still paused, the 1.1 views see the backlog
is( q_db($db,
		"SELECT pending, paused FROM saga_backlog WHERE kind = 'deliveries' AND consumer = 'inventory'"),
	"$in_flight_chor|t", 'saga_backlog: the paused inventory consumer and its deliveries');
is( q_db($db,
		"SELECT pending, paused FROM saga_backlog WHERE kind = 'steps' AND consumer = 'inventory'"),
	"$in_flight_orch|t", 'saga_backlog: the paused inventory service and its steps');

# --- 1.1 -> 1.2, with the same sagas still in flight -----------------------------

# an application role's grant on saga_subscribe survives the new signature
q_db($db, "CREATE ROLE shop_app; GRANT EXECUTE ON FUNCTION "
	  . "saga_subscribe(text, text, regprocedure, text, boolean) TO shop_app");
is( q_db($db, "ALTER EXTENSION saga UPDATE; SELECT extversion FROM pg_extension WHERE extname = 'saga'"),
	'1.2', 'ALTER EXTENSION saga UPDATE went on to 1.2');
is( q_db($db,
		"SELECT has_function_privilege('shop_app', "
		  . "'saga_subscribe(text, text, regprocedure, text, boolean, text)', 'EXECUTE') "
		  . "AND NOT has_function_privilege('public', "
		  . "'saga_subscribe(text, text, regprocedure, text, boolean, text)', 'EXECUTE')"),
	't', 'the role granted saga_subscribe under 1.1 may call the 1.2 one, PUBLIC may not');
q_db($db, "REVOKE EXECUTE ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean, text) "
	  . "FROM shop_app; DROP ROLE shop_app");
ok(wait_saga_workers($node, $db, 2), 'two workers serve the database after the update to 1.2');
is( q_db($db, "SELECT count(*) FROM saga_orders WHERE status = 'pending'"),
	$in_flight, 'the sagas in flight are still waiting on inventory');

# --- the sagas in flight end ---------------------------------------------------

is(q_db($db, "SELECT saga_resume_consumer('inventory')"), 't', 'inventory resumed');
ok( $node->poll_query_until($db,
		"SELECT count(*) = 0 FROM saga_orders WHERE status = 'pending'"),
	'every saga ended');

is(q_db($db, 'SELECT count(*) FROM saga_orders'), $n_orders + $burst, 'every order is there');
is(q_db($db, "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	'0', 'no saga instance pending');
is( q_db($db,
		"SELECT count(*) FROM saga.delivery WHERE status NOT IN ('done', 'cancelled')"),
	'0', 'no delivery pending or dead');
for my $c (sort keys %initial_balance)
{
	is( q_db($db,
			"SELECT $initial_balance{$c} - coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0) "
			  . "= saga_balance('$c') FROM saga_orders WHERE customer = '$c'"),
		't', "balance of $c = initial - completed amounts");
}
for my $p (sort keys %initial_stock)
{
	is( q_db($db,
			"SELECT $initial_stock{$p} - coalesce(sum(quantity) FILTER (WHERE status = 'completed'), 0) "
			  . "= saga_stock('$p') FROM saga_orders WHERE product = '$p'"),
		't', "stock of $p = initial - completed quantities");
}
is(q_db($db, 'SELECT count(*) FROM (SELECT order_id FROM saga.payment GROUP BY 1 HAVING count(*) > 1) x'),
	'0', 'at most one charge per order');
is( q_db($db,
		"SELECT count(*) FROM saga_orders o JOIN saga.payment p ON p.order_id = o.order_id "
		  . "WHERE (o.status = 'failed') <> (p.status = 'refunded')"),
	'0', 'a charge is refunded exactly when its order failed');
is( q_db($db,
		"SELECT count(*) FROM saga_orders o WHERE o.status = 'completed' AND NOT EXISTS "
		  . "(SELECT FROM saga.reservation r WHERE r.order_id = o.order_id)"),
	'0', 'every completed order has its reservation');
is( q_db($db,
		"SELECT count(*) FROM saga_orders o JOIN saga.reservation r ON r.order_id = o.order_id "
		  . "WHERE o.status <> 'completed'"),
	'0', 'no failed order keeps a reservation');
# every outcome happened, both patterns
is( q_db($db,
		"SELECT string_agg(DISTINCT pattern || ':' || status || ':' || "
		  . "CASE WHEN reason LIKE 'insufficient balance%' THEN 'balance' "
		  . "WHEN reason LIKE 'insufficient stock%' THEN 'stock' ELSE coalesce(reason, '-') END, ' ' "
		  . "ORDER BY pattern || ':' || status || ':' || "
		  . "CASE WHEN reason LIKE 'insufficient balance%' THEN 'balance' "
		  . "WHEN reason LIKE 'insufficient stock%' THEN 'stock' ELSE coalesce(reason, '-') END) "
		  . "FROM saga_orders"),
	'choreography:completed:- choreography:failed:balance choreography:failed:stock '
	  . 'orchestration:completed:- orchestration:failed:balance orchestration:failed:stock',
	'both patterns saw every outcome');
is( q_db($db,
		"SELECT sagas_completed + sagas_failed >= $in_flight + $burst FROM saga_stats"),
	't', 'saga_stats counted the sagas that ended after the update');

# 1.1 functions work on sagas started under 1.0
my $old_refunded = q_db($db,
	"SELECT min(o.order_id) FROM saga_orders o JOIN saga.payment p ON p.order_id = o.order_id "
	  . "WHERE p.status = 'refunded' AND o.pattern = 'orchestration'");
like(q_db($db, "SELECT saga_trace_mermaid($old_refunded)"),
	qr/^sequenceDiagram\n.*DELETE \/payments\/\d+.*Note over p2: failed: insufficient stock/s,
	'saga_trace_mermaid of an order placed under 1.0');

# nothing went wrong in the workers (or anywhere) from the update on
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/\b(ERROR|FATAL|PANIC):/, 'no ERROR, FATAL or PANIC in the log since the update')
  or diag($log);

# --- same objects as a fresh CREATE EXTENSION -----------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
q_db('fresh', 'CREATE EXTENSION saga');
is(q_db('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'saga'"),
	'1.2', 'a fresh CREATE EXTENSION saga is 1.2');

my %compare = (
	'extension members' => q{
		SELECT pg_describe_object(classid, objid, objsubid)
		  FROM pg_depend
		 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
		   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga')
		 ORDER BY 1},
	'columns of the saga.* tables' => q{
		SELECT table_name || '.' || column_name || ' #' || ordinal_position || ' '
		       || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '-')
		  FROM information_schema.columns
		 WHERE table_schema = 'saga'
		 ORDER BY table_name, ordinal_position},
	'columns of the public views' => q{
		SELECT table_name || '.' || column_name || ' #' || ordinal_position || ' ' || data_type
		  FROM information_schema.columns
		 WHERE table_schema = 'public' AND table_name LIKE 'saga%'
		 ORDER BY table_name, ordinal_position},
	'indexes and constraints' => q{
		SELECT c.relname || ': ' || pg_get_indexdef(i.indexrelid)
		  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
		  JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = 'saga'
		UNION ALL
		SELECT conrelid::regclass || ': ' || conname || ' ' || pg_get_constraintdef(oid)
		  FROM pg_constraint WHERE connamespace = 'saga'::regnamespace
		 ORDER BY 1},
	'function definitions' => q{
		SELECT p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid))
		  FROM pg_proc p
		 WHERE p.prokind IN ('f', 'p')
		   AND p.oid IN (SELECT objid FROM pg_depend
		                  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
		                    AND classid = 'pg_proc'::regclass
		                    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga'))
		 ORDER BY 1},
	'view definitions' => q{
		SELECT c.oid::regclass || ' ' || md5(pg_get_viewdef(c.oid))
		  FROM pg_class c
		 WHERE c.relkind = 'v'
		   AND c.oid IN (SELECT objid FROM pg_depend
		                  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
		                    AND classid = 'pg_class'::regclass
		                    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga'))
		 ORDER BY 1},
	'pg_dump configuration' => q{
		SELECT c.t::regclass || ' ' || coalesce(c.cond, '-')
		  FROM pg_extension x,
		       unnest(x.extconfig, x.extcondition) AS c(t, cond)
		 WHERE x.extname = 'saga'
		 ORDER BY 1},
	'built-in subscriptions and definitions' => q{
		SELECT 'subscription ' || id || ' ' || consumer || ' ' || event_type || ' '
		       || handler || ' ' || coalesce(on_failure, '-') || ' ' || forward || ' ' || builtin
		  FROM saga.subscription
		UNION ALL
		SELECT 'definition ' || name || ' ' || version || ' ' || steps || ' ' || builtin
		  FROM saga.definition
		UNION ALL
		SELECT 'step ' || definition || ' ' || version || ' ' || step_no || ' ' || name || ' '
		       || service || ' ' || action || ' ' || coalesce(compensation::text, '-') || ' ' || builtin
		  FROM saga.definition_step
		 ORDER BY 1},
	# what pg_dump takes for the extension's own privileges, pg_monitor's:
	# the same after the updates as after CREATE EXTENSION
	'pg_monitor\'s initial privileges' => q{
		SELECT pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' ' || a.privilege_type
		  FROM pg_init_privs i, aclexplode(i.initprivs) a
		 WHERE i.privtype = 'e' AND a.grantee = 'pg_monitor'::regrole
		   AND (i.classoid, i.objoid) IN (SELECT classid, objid FROM pg_depend
		                  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
		                    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga'))
		 ORDER BY 1},
	'grants' => q{
		SELECT p.oid::regprocedure || ' ' || coalesce(p.proacl::text, '-')
		  FROM pg_proc p
		 WHERE p.oid IN (SELECT objid FROM pg_depend
		                  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
		                    AND classid = 'pg_proc'::regclass
		                    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga'))
		UNION ALL
		SELECT c.oid::regclass || ' ' || coalesce(c.relacl::text, '-')
		  FROM pg_class c
		 WHERE c.oid IN (SELECT objid FROM pg_depend
		                  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
		                    AND classid = 'pg_class'::regclass
		                    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'saga'))
		 ORDER BY 1});

for my $what (sort keys %compare)
{
	my $upgraded = q_db($db, $compare{$what});
	my $fresh = q_db('fresh', $compare{$what});
	isnt($fresh, '', "fresh: $what: not empty");
	is($upgraded, $fresh, "upgraded and fresh: same $what");
}
# the 1.1 members are among them (a sanity check of the query itself)
my $members = q_db($db, $compare{'extension members'});
like($members, qr/^view saga_stats\n/m, 'the members include view saga_stats');
like(q_db($db, $compare{'pg_monitor\'s initial privileges'}), qr/^view saga_stats SELECT$/m,
	'pg_monitor\'s initial privileges include SELECT on saga_stats');
like($members, qr/^function saga_trace_mermaid\(bigint\)\n/m,
	'the members include function saga_trace_mermaid(bigint)');

# the fresh database is served too
ok(wait_saga_workers($node, 'fresh', 2), 'two workers serve the fresh database');
q_db('fresh', "SELECT saga_set_balance('dora', 10); SELECT saga_set_stock('thing', 2)");
my $fresh_order = q_db('fresh', "SELECT saga_place_order('dora', 'thing', 1, 1.00, 'orchestration')");
is(q_db('fresh', "SELECT saga_await($fresh_order)"), 'completed', 'an order completes in the fresh database');

$log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/\b(ERROR|FATAL|PANIC):/, 'still no ERROR, FATAL or PANIC in the log')
  or diag($log);

$node->stop;
done_testing();
