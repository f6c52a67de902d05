# Crash safety under load: a few thousand sagas of both patterns in flight
# when a worker is killed with SIGKILL in the middle of a batch, and again
# when the server is stopped with -m immediate.  Afterwards every saga has
# ended, the money and the stock add up customer by customer and product by
# product, and no delivery or step ran twice.
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

my $ORDERS_PER_ROUND = 3000;
my $CLIENTS = 3;
my $CUSTOMERS = 50;    # per round
my $PRODUCTS = 20;     # per round

my $node = saga_node('crash_safety', q{
max_connections = 40
saga.workers = 2
saga.poll_interval = 200
restart_after_crash = on
log_statement = none
log_lock_waits = on
});

my $started = time;



# A query that lists violations: passes when it returns no row.
sub no_rows
{
	my ($sql, $name) = @_;
	my $out = $node->safe_psql('postgres', $sql);
	is($out, '', $name) or diag("violations:\n$out");
}

# Start $CLIENTS psql sessions that place round $round's orders, 25 per
# transaction.  Half the orders are orchestrated, half choreographed.
# Customers, products, quantities and amounts are spread so that some
# orders complete, some fail on payment, some fail on stock (refunded).
sub start_clients
{
	my ($round) = @_;
	my @handles;
	my $per_client = $ORDERS_PER_ROUND / $CLIENTS;
	my $c0 = $round * $CUSTOMERS;
	my $p0 = $round * $PRODUCTS;
	for my $k (0 .. $CLIENTS - 1)
	{
		my $sql = '';
		for (my $lo = $k * $per_client + 1;
			$lo <= ($k + 1) * $per_client;
			$lo += 25)
		{
			my $hi = $lo + 24;
			$sql .=
			    "SELECT count(saga_place_order("
			  . "'c' || ($c0 + 1 + (i * 7) % $CUSTOMERS), "
			  . "'p' || ($p0 + 1 + (i * 11) % $PRODUCTS), "
			  . "1 + i % 3, (1 + (i * 13) % 20) + 0.50, "
			  . "CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END)) "
			  . "FROM generate_series($lo, $hi) i;\n";
		}
		# from a file: IPC::Run feeds a scalar only while we pump
		my $file = $node->basedir . "/orders_${round}_$k.sql";
		open my $fh, '>', $file or die "cannot write $file: $!";
		print $fh $sql;
		close $fh;
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(
			[
				'psql', '-XAtq', '-d',
				$node->connstr('postgres') . ' application_name=order_client',
				'-f', $file
			],
			'>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		push @handles, [ $h, \$out, \$err ];
	}
	return @handles;
}

# The clients are cut off by the crash; what they had committed stays.
sub reap_clients
{
	for my $c (@_)
	{
		eval { $c->[0]->finish; };
	}
}

# Wait until a worker is in the middle of a batch with at least $min sagas
# pending (or, once the clients have placed all their orders, $min_done);
# returns (pid, pending sagas, pending deliveries, pending orchestrated).
sub wait_busy_worker
{
	my ($min, $min_done) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my $row = $node->safe_psql(
			'postgres', qq{
			SELECT a.pid,
			       (SELECT count(*) FROM saga.instance WHERE status = 'pending'),
			       (SELECT count(*) FROM saga.delivery WHERE status = 'pending'),
			       (SELECT count(*) FROM saga.instance
			         WHERE status = 'pending' AND pattern = 'orchestration'),
			       (SELECT count(*) FROM pg_stat_activity
			         WHERE application_name = 'order_client')
			  FROM pg_stat_activity a
			 WHERE a.backend_type = 'saga worker' AND a.datname = 'postgres'
			   AND a.state = 'active' AND a.query = 'saga: delivering events'
			 LIMIT 1});
		if ($row ne '')
		{
			my @f = split /\|/, $row;
			return @f[0..3] if $f[1] >= ($f[4] > 0 ? $min : $min_done);
		}
		usleep(20_000);
	}
	return;
}

# Every saga ended, and every invariant holds: customer by customer, product
# by product, order by order, event by event and step by step.
sub check_all
{
	my ($label) = @_;

	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM saga.instance WHERE status = 'pending'"),
		"$label: every saga ended (none pending)")
	  or diag(
		$node->safe_psql('postgres',
			"SELECT id, pattern, phase, step, attempts, last_error FROM saga.instance "
			  . "WHERE status = 'pending' ORDER BY id LIMIT 20"));

	# Deliveries to consumers outside the sagas (the audit handler) may
	# still be on their way when the last saga ends: a delivery a batch
	# published and had no time for is written pending as it commits, after
	# others.  They must all be done soon after.
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM saga.delivery WHERE status = 'pending'"),
		"$label: no delivery is left pending");

	my $stats = $node->safe_psql('postgres', q{
		SELECT pattern, status,
		       CASE WHEN reason LIKE 'insufficient balance%' THEN 'payment'
		            WHEN reason LIKE 'insufficient stock%' THEN 'stock'
		            ELSE coalesce(reason, '') END, count(*)
		  FROM saga_orders GROUP BY 1, 2, 3 ORDER BY 1, 2, 3});
	diag("$label: outcomes (pattern|status|failure|count):\n$stats");
	diag("$label: deadlocks since the restart: "
		  . $node->safe_psql('postgres',
			"SELECT deadlocks FROM pg_stat_database WHERE datname = 'postgres'"));

	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM saga_orders WHERE status NOT IN ('completed', 'failed')"),
		'0', "$label: every order is completed or failed");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM saga.orders o LEFT JOIN saga.instance i ON i.id = o.id "
			  . "WHERE i.id IS NULL"),
		'0', "$label: every order has its saga");

	# money and stock
	no_rows(
		q{
		SELECT ib.customer, ib.balance AS initial, a.balance AS now, coalesce(c.spent, 0) AS spent
		  FROM initial_balance ib
		  JOIN saga.account a USING (customer)
		  LEFT JOIN (SELECT customer, sum(amount) AS spent FROM saga_orders
		              WHERE status = 'completed' GROUP BY customer) c USING (customer)
		 WHERE a.balance <> ib.balance - coalesce(c.spent, 0)},
		"$label: each balance = initial - completed orders' amounts");
	no_rows(
		q{
		SELECT ist.product, ist.stock AS initial, p.stock AS now, coalesce(c.sold, 0) AS sold
		  FROM initial_stock ist
		  JOIN saga.product p USING (product)
		  LEFT JOIN (SELECT product, sum(quantity) AS sold FROM saga_orders
		              WHERE status = 'completed' GROUP BY product) c USING (product)
		 WHERE p.stock <> ist.stock - coalesce(c.sold, 0)},
		"$label: each stock = initial - completed orders' quantities");
	is($node->safe_psql('postgres',
			"SELECT (SELECT count(*) FROM saga.account) = (SELECT count(*) FROM initial_balance) "
			  . "AND (SELECT count(*) FROM saga.product) = (SELECT count(*) FROM initial_stock)"),
		't', "$label: no account or product appeared");

	# charges and refunds, order by order
	no_rows(
		q{
		SELECT order_id, count(*) FROM saga.payment GROUP BY order_id HAVING count(*) > 1
		UNION ALL
		SELECT saga_id, count(*) FROM saga.event WHERE event_type = 'PaymentProcessed'
		 GROUP BY saga_id HAVING count(*) > 1
		UNION ALL
		SELECT saga_id, count(*) FROM saga.step_run WHERE step = 'payment' AND kind = 'action'
		 GROUP BY saga_id HAVING count(*) > 1},
		"$label: at most one charge per order");
	no_rows(
		q{
		SELECT saga_id, count(*) FROM saga.event WHERE event_type = 'PaymentRefunded'
		 GROUP BY saga_id HAVING count(*) > 1
		UNION ALL
		SELECT saga_id, count(*) FROM saga.step_run WHERE step = 'payment' AND kind = 'compensation'
		 GROUP BY saga_id HAVING count(*) > 1},
		"$label: at most one refund per order");
	no_rows(
		q{
		SELECT o.order_id, o.pattern, o.status, o.reason, p.status AS payment,
		       r.quantity AS reserved,
		       (SELECT count(*) FROM saga.event e
		         WHERE e.saga_id = o.order_id AND e.event_type = 'PaymentRefunded') AS refund_events,
		       (SELECT count(*) FROM saga.step_run s
		         WHERE s.saga_id = o.order_id AND s.kind = 'compensation') AS compensations
		  FROM saga_orders o
		  LEFT JOIN saga.payment p ON p.order_id = o.order_id
		  LEFT JOIN saga.reservation r ON r.order_id = o.order_id
		 WHERE NOT coalesce(CASE o.status
		       WHEN 'completed' THEN
		            p.status = 'charged' AND p.amount = o.amount
		            AND r.quantity = o.quantity
		       WHEN 'failed' THEN
		            r.id IS NULL
		            -- refunded exactly when charged before failing
		            AND (p.id IS NULL OR p.status = 'refunded')
		            AND (p.id IS NULL) = (o.reason LIKE 'insufficient balance%')
		            AND (p.id IS NOT NULL) = (o.reason LIKE 'insufficient stock%')
		       END, false)
		    -- a refund is recorded once, by the order's own pattern
		    OR (SELECT count(*) FROM saga.event e
		         WHERE e.saga_id = o.order_id AND e.event_type = 'PaymentRefunded')
		       <> CASE WHEN o.pattern = 'choreography' AND p.status = 'refunded' THEN 1 ELSE 0 END
		    OR (SELECT count(*) FROM saga.step_run s
		         WHERE s.saga_id = o.order_id AND s.kind = 'compensation')
		       <> CASE WHEN o.pattern = 'orchestration' AND p.status = 'refunded' THEN 1 ELSE 0 END
		 ORDER BY o.order_id LIMIT 20},
		"$label: a refund exists exactly when an order failed after being charged");

	# deliveries: each ran once
	no_rows(
		q{
		SELECT status, count(*) FROM saga.delivery WHERE status <> 'done' GROUP BY status},
		"$label: every delivery is done (none pending, dead or cancelled)");
	no_rows(
		q{
		SELECT 'twice', event_id, count(*) FROM audit GROUP BY event_id HAVING count(*) > 1
		UNION ALL
		SELECT 'never', e.id, 0 FROM saga.event e
		 WHERE e.event_type IN ('OrderCreated', 'PaymentProcessed', 'PaymentFailed',
		                        'InventoryReserved', 'InventoryReservationFailed',
		                        'PaymentRefunded')
		   AND NOT EXISTS (SELECT FROM audit a WHERE a.event_id = e.id)
		UNION ALL
		SELECT 'phantom', a.event_id, 1 FROM audit a
		 WHERE NOT EXISTS (SELECT FROM saga.event e WHERE e.id = a.event_id)
		 ORDER BY 1, 2 LIMIT 20},
		"$label: the audit handler saw every event exactly once");

	# every choreographed saga's events have one of the three valid shapes
	no_rows(
		q{
		SELECT o.order_id, o.status, h.events
		  FROM saga_orders o
		  LEFT JOIN LATERAL (SELECT string_agg(e.event_type, ',' ORDER BY e.id) AS events
		                       FROM saga.event e WHERE e.saga_id = o.order_id) h ON true
		 WHERE o.pattern = 'choreography'
		   AND h.events IS DISTINCT FROM CASE
		       WHEN o.status = 'completed' THEN 'OrderCreated,PaymentProcessed,InventoryReserved'
		       WHEN o.reason LIKE 'insufficient balance%' THEN 'OrderCreated,PaymentFailed'
		       ELSE 'OrderCreated,PaymentProcessed,InventoryReservationFailed,PaymentRefunded' END
		 ORDER BY o.order_id LIMIT 20},
		"$label: every choreographed order published each of its events once");

	# orchestration: each step ran once, and the runs have a valid shape
	no_rows(
		q{
		SELECT saga_id, step_no, kind, count(*) FROM saga.step_run
		 GROUP BY saga_id, step_no, kind HAVING count(*) > 1 ORDER BY 1 LIMIT 20},
		"$label: no orchestrated step ran twice");
	no_rows(
		q{
		SELECT o.order_id, o.status, h.runs
		  FROM saga_orders o
		  LEFT JOIN LATERAL (SELECT string_agg(s.step_no || ':' || s.kind || ':' || s.outcome, ','
		                                       ORDER BY s.request_seq) AS runs
		                       FROM saga.step_run s WHERE s.saga_id = o.order_id) h ON true
		 WHERE o.pattern = 'orchestration'
		   AND h.runs IS DISTINCT FROM CASE
		       WHEN o.status = 'completed' THEN '0:action:ok,1:action:ok'
		       WHEN o.reason LIKE 'insufficient balance%' THEN '0:action:rejected'
		       ELSE '0:action:ok,1:action:rejected,0:compensation:ok' END
		 ORDER BY o.order_id LIMIT 20},
		"$label: every orchestrated order ran each of its steps once");
	return;
}

$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION saga;
	-- the starting point the invariants are measured from
	CREATE TABLE initial_balance (customer text PRIMARY KEY, balance numeric NOT NULL);
	CREATE TABLE initial_stock (product text PRIMARY KEY, stock integer NOT NULL);
	INSERT INTO initial_balance
	    SELECT 'c' || i, 150 + (i * 37) % 700 FROM generate_series(1, 2 * $CUSTOMERS) i;
	INSERT INTO initial_stock
	    SELECT 'p' || i, 40 + (i * 53) % 300 FROM generate_series(1, 2 * $PRODUCTS) i;
	SELECT count(saga_set_balance(customer, balance)) FROM initial_balance;
	SELECT count(saga_set_stock(product, stock)) FROM initial_stock;
	-- sees every event of the order saga; no UNIQUE on purpose, so that a
	-- delivery run twice shows up as two rows
	CREATE TABLE audit (event_id bigint);
	CREATE FUNCTION audit(e saga.event) RETURNS void LANGUAGE sql
	    AS \$\$ INSERT INTO audit VALUES (e.id) \$\$;
	SELECT count(saga_subscribe('audit', t, 'audit(saga.event)'))
	  FROM unnest(ARRAY['OrderCreated', 'PaymentProcessed', 'PaymentFailed',
	                    'InventoryReserved', 'InventoryReservationFailed',
	                    'PaymentRefunded']) t;
});
ok(wait_saga_workers($node, 'postgres', 2), 'two workers serve the database');

##############################################################################
# Round 1: kill -9 of a worker in the middle of a batch.
##############################################################################

my $log_offset = -s $node->logfile;
my @clients = start_clients(0);
my ($victim, $pending, $pending_deliveries, $pending_orch) = wait_busy_worker(2000, 500);
ok(defined $victim, 'a worker is in the middle of a batch with sagas pending')
  or BAIL_OUT('workers never got busy');
ok(kill('KILL', $victim), "killed worker $victim with SIGKILL");
diag(   "kill -9: $pending sagas in flight ($pending_orch orchestrated), "
	  . "$pending_deliveries deliveries pending at the kill");
reap_clients(@clients);

$node->poll_query_until('postgres', 'SELECT true')
  or die 'server did not come back after the crash';
ok(wait_saga_workers($node, 'postgres', 2), 'two workers are back after the crash restart');
ok(!grep({ $_ == $victim } saga_worker_pids($node, 'postgres')), 'the killed worker was replaced');
my $log = slurp_file($node->logfile, $log_offset);
like(
	$log,
	qr/\(PID $victim\) was terminated by signal 9/,
	'the postmaster saw the worker die of SIGKILL');
like($log, qr/all server processes terminated; reinitializing/,
	'and reinitialized shared memory (crash restart)');

my $placed1 = $node->safe_psql('postgres', 'SELECT count(*) FROM saga.orders');
diag("kill -9 round: $placed1 orders committed by the clients before they were cut off");
cmp_ok($placed1, '>=', $pending, 'the orders in flight at the kill are all there');
check_all('after kill -9');

##############################################################################
# Round 2: immediate shutdown with a fresh batch in flight.
##############################################################################

@clients = start_clients(1);
($victim, $pending, $pending_deliveries, $pending_orch) = wait_busy_worker(2000, 500);
ok(defined $victim, 'round 2: a worker is in the middle of a batch with sagas pending')
  or BAIL_OUT('workers never got busy');
$node->stop('immediate');
diag(   "immediate shutdown: $pending sagas in flight ($pending_orch orchestrated), "
	  . "$pending_deliveries deliveries pending at the stop");
reap_clients(@clients);
$node->start;
ok(wait_saga_workers($node, 'postgres', 2), 'two workers are back after the immediate shutdown');
my $placed2 = $node->safe_psql('postgres', 'SELECT count(*) FROM saga.orders') - $placed1;
diag("immediate round: $placed2 orders committed by the clients before the stop");
check_all('after immediate shutdown');

my $totals = $node->safe_psql('postgres', q{
	SELECT format('%s orders (%s completed, %s failed: %s on payment, %s on stock, refunded); '
	              '%s customers, %s products; %s events audited; %s orchestrated step runs',
	              count(*), count(*) FILTER (WHERE status = 'completed'),
	              count(*) FILTER (WHERE status = 'failed'),
	              count(*) FILTER (WHERE reason LIKE 'insufficient balance%'),
	              count(*) FILTER (WHERE reason LIKE 'insufficient stock%'),
	              (SELECT count(*) FROM initial_balance), (SELECT count(*) FROM initial_stock),
	              (SELECT count(*) FROM audit), (SELECT count(*) FROM saga.step_run))
	  FROM saga_orders});
diag("totals: $totals");

# The data was laid out for a mix of outcomes in both patterns; without
# it the invariants above would prove less.
is( $node->safe_psql('postgres', q{
		SELECT count(DISTINCT (pattern, CASE WHEN status = 'completed' THEN 'ok'
		                                     WHEN reason LIKE 'insufficient balance%' THEN 'pay'
		                                     ELSE 'stock' END))
		  FROM saga_orders}),
	'6', 'both patterns saw all three outcomes');

diag(sprintf('runtime: %.1f s', time - $started));
$node->stop;
done_testing();
