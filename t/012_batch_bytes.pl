# A batch is bounded in bytes as well as in count: a worker with ten pending
# events of 20 MB each does not load them all at once (it used to claim
# them in one query, each event twice, some 400 MB, and ran out of memory
# under a limit with larger ones).  The worker's peak memory stays far below
# the payloads' total, and every delivery is handled once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $EVENTS = 10;
my $MB = 20;

# small shared buffers: the worker's peak RSS is then mostly its own memory
my $node = saga_node('batch_bytes', q{
saga.workers = 1
saga.poll_interval = 200
shared_buffers = 16MB
log_statement = none
});

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION saga;
	CREATE ROLE bulk_app;
	GRANT EXECUTE ON FUNCTION saga_subscribe(text, text, regprocedure, text, boolean, text),
	                          saga_publish(text, jsonb, bigint, text) TO bulk_app;
	CREATE SCHEMA bulk AUTHORIZATION bulk_app;
	SET ROLE bulk_app;
	CREATE TABLE bulk.seen (event_id bigint, bytes integer);
	CREATE FUNCTION bulk.take(e saga.event) RETURNS void LANGUAGE sql
	    AS $$ INSERT INTO bulk.seen VALUES (e.id, octet_length(e.payload->>'blob')) $$;
	SELECT saga_subscribe('bulk', 'Big', 'bulk.take(saga.event)');
	RESET ROLE;
	SELECT saga_pause_consumer('bulk');});

# ten events of about 20 MB of hexadecimal text each (it barely compresses)
for my $i (1 .. $EVENTS)
{
	$node->safe_psql('postgres',
		"SET ROLE bulk_app; SELECT saga_publish('Big', jsonb_build_object('blob', "
		  . "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, $MB * 1024 * 1024 / 32))))");
}
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM saga.delivery WHERE status = 'pending'"),
	$EVENTS, "$EVENTS deliveries of $MB MB events wait for the paused consumer");

my ($pid) = saga_worker_pids($node, 'postgres');
ok($pid, "the worker is running (pid $pid)");
my ($hwm_before) = slurp_file("/proc/$pid/status") =~ /^VmHWM:\s+(\d+) kB/m;

$node->safe_psql('postgres', "SELECT saga_resume_consumer('bulk')");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = $EVENTS FROM saga.delivery WHERE status = 'done'"),
	'every delivery is done');
is( $node->safe_psql('postgres',
		"SELECT count(*), count(DISTINCT event_id), min(bytes) >= $MB * 1024 * 1024 FROM bulk.seen"),
	"$EVENTS|$EVENTS|t", 'each event handled once, with its whole payload');

my ($hwm_after) = slurp_file("/proc/$pid/status") =~ /^VmHWM:\s+(\d+) kB/m;
my $growth_mb = int(($hwm_after - $hwm_before) / 1024);
note("worker $pid: peak RSS $hwm_before kB before, $hwm_after kB after (+$growth_mb MB)");
cmp_ok($growth_mb, '<', 4 * $MB + 40,
	"the worker's peak memory grew by $growth_mb MB, not by the "
	  . ($EVENTS * $MB) . " MB of all the payloads");
my @pids = saga_worker_pids($node, 'postgres');
is("@pids", $pid, 'the same worker is still running');

$node->stop;
done_testing();
