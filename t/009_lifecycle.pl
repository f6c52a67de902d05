# The database lifecycle, where workers and sessions meet:
#  - rights: a role that may not DROP, RENAME, copy or move a database, or
#    drop or alter the extension, gets PostgreSQL's own permission error and
#    does not stop (nor wait for) the database's workers; roles that may
#    still get the workers out of their way;
#  - the first look at a database: a worker that found no extension just
#    before CREATE EXTENSION committed must not leave the database unserved
#    (saga.test_probe_delay holds the worker inside that window);
#  - restores: CREATE EXTENSION with check_function_bodies off holds the
#    database's workers back while its session keeps restoring, and no
#    longer: not while that session sits idle (a pooled connection), not
#    after it turned check_function_bodies back on, not after the creating
#    transaction rolled back.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $node = saga_node('lifecycle', q{
saga.workers = 2
saga.poll_interval = 200
});

# Poll a query in database postgres until it returns 't', for at most
# $seconds (shorter than poll_query_until's default, so that a test of a
# defect fails in reasonable time).
sub wait_until
{
	my ($sql, $seconds) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		return 1 if $node->safe_psql('postgres', $sql) eq 't';
		usleep(100_000);
	}
	return 0;
}

sub workers_in
{
	my ($dbname) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = '$dbname'");
}

# No saga worker in the database during the next $seconds.
sub stays_unserved
{
	my ($dbname, $seconds) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		return 0 if workers_in($dbname) ne '0';
		usleep(100_000);
	}
	return 1;
}

sub served_within
{
	my ($dbname, $n, $seconds) = @_;
	return wait_until(
		"SELECT count(*) = $n FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = '$dbname'",
		$seconds);
}

# Databases for the restore tests, made now so that the launcher's first
# look at each (one worker that finds no extension and leaves) is long over
# when they are used.
$node->safe_psql('postgres', "CREATE DATABASE $_") for qw(r_idle r_on r_busy r_abort);

# --- Rights ----------------------------------------------------------------

my $tsdir = PostgreSQL::Test::Utils::tempdir();
$node->safe_psql('postgres', qq{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE creator LOGIN CREATEDB;
	CREATE ROLE dbowner LOGIN;
	CREATE ROLE app LOGIN;
	CREATE TABLESPACE ts LOCATION '$tsdir';
	CREATE DATABASE shop;
	CREATE DATABASE owned OWNER dbowner;
});
for my $db (qw(shop owned))
{
	$node->safe_psql($db, 'CREATE EXTENSION saga');
}
# (by name: the functions' arguments may grow)
$node->safe_psql('shop', q{
	DO $$
	DECLARE
	    f regprocedure;
	BEGIN
	    FOR f IN SELECT oid FROM pg_proc
	              WHERE proname IN ('saga_publish', 'saga_subscribe') AND pg_function_is_visible(oid) LOOP
	        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO app', f);
	    END LOOP;
	END $$;
	GRANT CREATE ON SCHEMA public TO app;
});
ok(served_within('shop', 2, 60),  'shop is served by two workers');
ok(served_within('owned', 2, 60), 'owned is served by two workers');

# A handler that keeps one of shop's workers busy until the gate opens: a
# pause of the workers would have to wait for it.
$node->safe_psql('shop', q{
	CREATE TABLE public.gate (open boolean);
	CREATE FUNCTION public.wait_for_gate(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    WHILE NOT EXISTS (SELECT FROM public.gate) AND clock_timestamp() < now() + interval '120 s' LOOP
	        PERFORM pg_sleep(0.05);
	    END LOOP;
	END $$;
	SELECT saga_subscribe('gatekeeper', 'Gate', 'public.wait_for_gate(saga.event)');
	SELECT saga_publish('Gate', '{}');
}, extra_params => [ '-U', 'app' ]);
ok( wait_until(q{SELECT count(*) = 1 FROM pg_stat_activity
	                WHERE backend_type = 'saga worker' AND datname = 'shop' AND wait_event = 'PgSleep'},
		60),
	'a worker of shop is busy in a handler');

my $log_offset = -s $node->logfile;
my %pids = (shop => join(' ', saga_worker_pids($node, 'shop')),
	owned => join(' ', saga_worker_pids($node, 'owned')));

# Each command fails with PostgreSQL's own error, at once, and every worker
# of both databases is still the same process.
sub denied
{
	my ($role, $dbname, $sql, $error) = @_;
	my $t0 = time;
	my ($ret, $stdout, $stderr) =
	  $node->psql($dbname, $sql, extra_params => [ '-U', $role ]);
	my $elapsed = time - $t0;
	isnt($ret, 0, "$role: $sql fails");
	like($stderr, $error, "$role: $sql: PostgreSQL's permission error");
	cmp_ok($elapsed, '<', 5, "$role: $sql: did not wait for the busy worker")
	  or diag(sprintf('took %.1f s', $elapsed));
	is( join(' ', saga_worker_pids($node, 'shop')) . ' / '
		  . join(' ', saga_worker_pids($node, 'owned')),
		"$pids{shop} / $pids{owned}",
		"$role: $sql: the workers were not stopped");
}

denied('mallory', 'shop', 'DROP EXTENSION saga', qr/must be owner of extension saga/);
denied('mallory', 'shop', 'DROP EXTENSION IF EXISTS saga CASCADE',
	qr/must be owner of extension saga/);
denied('mallory', 'shop', 'ALTER EXTENSION saga UPDATE', qr/must be owner of extension saga/);
denied('mallory', 'shop', 'ALTER EXTENSION saga ADD SCHEMA public',
	qr/must be owner of extension saga/);
denied('mallory', 'postgres', 'DROP DATABASE shop', qr/must be owner of database shop/);
denied('mallory', 'postgres', 'DROP DATABASE shop WITH (FORCE)',
	qr/must be owner of database shop/);
denied('mallory', 'postgres', 'ALTER DATABASE shop RENAME TO shop2',
	qr/must be owner of database shop/);
denied('mallory', 'postgres', 'ALTER DATABASE shop SET TABLESPACE ts',
	qr/must be owner of database shop/);
denied('mallory', 'postgres', 'CREATE DATABASE shop_copy TEMPLATE shop',
	qr/permission denied to create database/);
denied('creator', 'postgres', 'CREATE DATABASE shop_copy TEMPLATE shop',
	qr/permission denied to copy database "shop"/);
denied('creator', 'postgres', 'ALTER DATABASE shop RENAME TO shop2',
	qr/must be owner of database shop/);
# the owner of a database, without CREATEDB and without rights on ts
denied('dbowner', 'owned', 'DROP EXTENSION saga', qr/must be owner of extension saga/);
denied('dbowner', 'postgres', 'ALTER DATABASE owned RENAME TO owned2',
	qr/permission denied to rename database/);
denied('dbowner', 'postgres', 'CREATE DATABASE owned_copy TEMPLATE owned',
	qr/permission denied to create database/);
denied('dbowner', 'postgres', 'ALTER DATABASE owned SET TABLESPACE ts',
	qr/permission denied for tablespace ts/);

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/did not stop in time/, 'no pause waited for the busy worker');

$node->safe_psql('shop', 'INSERT INTO public.gate VALUES (true)', extra_params => [ '-U', 'app' ]);
ok( wait_until(q{SELECT count(*) = 0 FROM pg_stat_activity
	                WHERE backend_type = 'saga worker' AND datname = 'shop' AND wait_event = 'PgSleep'},
		60),
	'the gate is open: the handler ends');

# With the rights, the commands get the workers out of their way.
$node->safe_psql('postgres', q{
	ALTER ROLE dbowner CREATEDB;
	GRANT CREATE ON TABLESPACE ts TO dbowner;
});
sub as_dbowner
{
	my ($sql) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', $sql, extra_params => [ '-U', 'dbowner' ]);
	is($ret, 0, "dbowner: $sql succeeds") or diag($stderr);
}
as_dbowner('ALTER DATABASE owned RENAME TO owned2');
ok(served_within('owned2', 2, 60), 'the renamed database is served again');
as_dbowner('ALTER DATABASE owned2 SET TABLESPACE ts');
ok(served_within('owned2', 2, 60), 'the moved database is served again');
as_dbowner('CREATE DATABASE owned_copy TEMPLATE owned2');
ok(served_within('owned_copy', 2, 60), 'the copy is served');
ok(served_within('owned2',     2, 60), 'and so is its template');
as_dbowner('DROP DATABASE owned_copy');
as_dbowner('DROP DATABASE owned2');
ok(served_within('owned2', 0, 60), 'no worker is left of the dropped database');
is(join(' ', saga_worker_pids($node, 'shop')), $pids{shop},
	'shop kept its workers through all of it');

# --- The first look at a database ------------------------------------------
#
# The launcher's worker for a database it has not seen looks for the
# extension, then reports.  CREATE EXTENSION commits between the two: the
# report that the extension is absent must not stick.

$node->safe_psql('postgres', q{
	CREATE DATABASE raced ALLOW_CONNECTIONS false;
	ALTER DATABASE raced SET saga.test_probe_delay = '10s';
	ALTER DATABASE raced ALLOW_CONNECTIONS true;
});
ok( wait_until(q{SELECT count(*) = 1 FROM pg_stat_activity
	                WHERE backend_type = 'saga worker' AND datname = 'raced'
	                  AND query LIKE 'saga: probe delayed%'},
		60),
	'raced: the first worker looked, found no extension, and waits to report it');
$node->safe_psql('raced', 'CREATE EXTENSION saga');
$node->safe_psql('postgres', 'ALTER DATABASE raced RESET saga.test_probe_delay');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type = 'saga worker' AND datname = 'raced'
		   AND query LIKE 'saga: probe delayed%'}),
	'1', 'raced: CREATE EXTENSION committed before that worker reported');
ok(served_within('raced', 2, 60), 'raced: the database is served nonetheless');
my $order = $node->safe_psql('raced', q{
	SELECT saga_set_balance('ann', 10);
	SELECT saga_set_stock('pen', 1);
	SELECT saga_place_order('ann', 'pen', 1, 1.00)});
is($node->safe_psql('raced', "SELECT saga_await($order, '30 s')"), 'completed',
	'raced: a saga runs there');

# --- Restores ---------------------------------------------------------------

# A pooled connection: CREATE EXTENSION with check_function_bodies off,
# then the session sits idle.  The workers stay away a while, then start.
{
	my $s = $node->background_psql('r_idle');
	$s->query_safe('SET check_function_bodies = off');
	$s->query_safe('CREATE EXTENSION saga');
	my $t0 = time;
	ok(stays_unserved('r_idle', 2), 'r_idle: CREATE EXTENSION in restore mode holds the workers back');
	ok(served_within('r_idle', 2, 40),
		'r_idle: the session sits idle: the workers start without it ending');
	note(sprintf('r_idle: workers after %.1f s', time - $t0));
	is($s->query_safe('SELECT 1'), '1', 'r_idle: the session is still there');
	$s->quit;
}

# check_function_bodies back on: that session is not restoring any more,
# while it goes on working (here, one long statement).
{
	my $s = $node->background_psql('r_on', on_error_stop => 0);
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_safe('SET check_function_bodies = off');
	$s->query_safe('CREATE EXTENSION saga');
	ok(stays_unserved('r_on', 1), 'r_on: CREATE EXTENSION in restore mode holds the workers back');
	$s->query_safe('SET check_function_bodies = on');
	$s->query_until(qr/sleeping/, "\\echo sleeping\nSELECT pg_sleep(60);\n");
	ok(served_within('r_on', 2, 40),
		'r_on: check_function_bodies on again: the workers start while the session works');
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
	$s->quit;
}

# A restore: transactions one after the other, and a long one, for longer
# than the idle grace period; the workers keep away until the session ends.
{
	my $s = $node->background_psql('r_busy');
	$s->query_safe('SET check_function_bodies = off');
	$s->query_safe('CREATE EXTENSION saga');
	$s->query_safe('CREATE TABLE loaded (n int)');
	my $held = 1;
	my $until = time + 3;
	while (time < $until)
	{
		$s->query_safe('INSERT INTO loaded VALUES (1)');
		$held = 0 if workers_in('r_busy') ne '0';
		usleep(200_000);
	}
	$s->query_safe('SELECT pg_sleep(12)');
	$held = 0 if workers_in('r_busy') ne '0';
	ok($held, 'r_busy: no worker while the restoring session works, past the idle grace');
	$s->quit;
	ok(served_within('r_busy', 2, 40), 'r_busy: the session ended: the workers start');
}

# A CREATE EXTENSION in restore mode that rolled back holds nothing: another
# session's CREATE EXTENSION is served while the first goes on working.
{
	my $s = $node->background_psql('r_abort', on_error_stop => 0);
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_safe('SET check_function_bodies = off');
	$s->query_safe('BEGIN');
	$s->query_safe('CREATE EXTENSION saga');
	$s->query_safe('ROLLBACK');
	$s->query_until(qr/sleeping/, "\\echo sleeping\nSELECT pg_sleep(60);\n");
	$node->safe_psql('r_abort', 'CREATE EXTENSION saga');
	ok(served_within('r_abort', 2, 40),
		'r_abort: the rolled back restore holds nothing: CREATE EXTENSION elsewhere is served');
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
	$s->quit;
}

$log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/\b(FATAL|PANIC):|did not stop in time|TRAP/, 'no FATAL, PANIC or stuck pause in the log')
  or diag($log);

$node->stop;
done_testing();
