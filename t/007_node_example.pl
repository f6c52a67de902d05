# The Node.js example (examples/node/place_order.js, node-postgres) against a
# real server: it sets up its customer and products, places orders in both
# patterns, awaits them and prints their traces, and exits 0 only when every
# order ended as expected.  node and the example's node_modules (npm ci,
# done by scripts/setup.sh) are required: without them this test fails.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $example = abs_path(dirname(__FILE__) . '/../examples/node');
my $script = "$example/place_order.js";

# node: /usr/bin/node, or the first one on PATH
my ($nodejs) = grep { -x $_ } ('/usr/bin/node',
	map { File::Spec->catfile($_, 'node') } File::Spec->path());
ok(defined $nodejs, 'node is installed')
  or diag('node was found neither at /usr/bin/node nor on PATH (' . ($ENV{PATH} // '') . ')');
ok(-f $script, "the example exists: $script");
ok(-f "$example/node_modules/pg/package.json",
	'the example\'s dependencies are installed (examples/node/node_modules/pg)')
  or diag("run: (cd $example && npm ci) -- scripts/setup.sh does it");
if (!defined $nodejs || !-f "$example/node_modules/pg/package.json")
{
	done_testing();
	exit 1;
}
my $version = `$nodejs --version`;
chomp $version;
note("node $version at $nodejs");

my $node = saga_node('node_example', q{
saga.workers = 2
saga.poll_interval = 200
});
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', 'CREATE EXTENSION saga');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = 'shop'"),
	'two workers serve database shop');

# run_example(database, args...) -> (exit status, stdout, stderr)
sub run_example
{
	my ($dbname, @args) = @_;
	my ($out, $err) = ('', '');
	local %ENV = %ENV;
	delete @ENV{qw(PGSERVICE PGOPTIONS PGPASSWORD PGHOSTADDR PGSSLMODE)};
	$ENV{PGHOST} = $node->host;
	$ENV{PGPORT} = $node->port;
	$ENV{PGDATABASE} = $dbname;
	$ENV{PGUSER} = scalar getpwuid($<);
	IPC::Run::run([ $nodejs, $script, @args ], '<', \'', '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	my $status = $? >> 8;
	note("node place_order.js @args -> exit $status\n$out$err");
	return ($status, $out, $err);
}

# --- the default run: four orders, both patterns, both outcomes -------------

my ($status, $out, $err) = run_example('shop');
is($status, 0, 'place_order.js exits 0') or diag("stdout:\n$out\nstderr:\n$err");
is($err, '', 'and prints nothing on stderr');
like($out, qr/^connected to shop as \S+; saga 1\.2$/m, 'it connected through PGHOST/PGPORT/PGDATABASE/PGUSER');
my @got;
push @got, "$1 $2 $3" while $out =~ /^order \d+ \((\w+), 1 x ([\w-]+) for 10\.00\): (\w+)/mg;
is_deeply(
	\@got,
	[
		'choreography node-widget completed',
		'choreography node-sold-out failed',
		'orchestration node-widget completed',
		'orchestration node-sold-out failed'
	],
	'four orders: in stock completed, sold out failed, in both patterns');
like($out, qr/^\s+\d+\s+order\s+-> customer\s+201 Created$/m, 'a trace ends with 201 Created');
like($out, qr/^\s+\d+\s+payment\s+-> broker\s+PaymentRefunded$/m,
	'the choreographed failure\'s trace shows the refund');
like($out, qr{^\s+\d+\s+order\s+-> payment\s+DELETE /payments/\d+$}m,
	'the orchestrated failure\'s trace shows the refund');
like($out, qr/^all orders ended as expected$/m, 'it says all orders ended as expected');

# what the database says
is( $node->safe_psql('shop',
		"SELECT string_agg(pattern || ' ' || product || ' ' || status, ', ' ORDER BY order_id) "
		  . "FROM saga_orders WHERE customer = 'node-customer'"),
	'choreography node-widget completed, choreography node-sold-out failed, '
	  . 'orchestration node-widget completed, orchestration node-sold-out failed',
	'the orders are in the database with those outcomes');
is( $node->safe_psql('shop',
		"SELECT saga_balance('node-customer') || ' ' || saga_stock('node-widget') || ' ' || saga_stock('node-sold-out')"),
	'980.00 98 0', 'two orders of 10.00 charged (the failed ones refunded), two units sold');

# --- again: the setup is idempotent -------------------------------------------

($status, $out, $err) = run_example('shop', '--mode', 'orchestration');
is($status, 0, 'a second run (orchestration only) exits 0') or diag("stdout:\n$out\nstderr:\n$err");
is(scalar(() = $out =~ /^order \d+ \(orchestration,/mg), 2, 'it placed two orchestrated orders');

# --- it fails when an outcome is not the expected one -----------------------------

($status, $out, $err) = run_example('shop', '--mode', 'choreography',
	'--product', 'node-sold-out', '--expect', 'completed');
is($status, 1, 'expecting a sold-out order to complete: exit 1');
like($out, qr/^  !! order \d+: expected completed, got failed$/m, 'and it says why');
like($out, qr/^SOME ORDERS DID NOT END AS EXPECTED$/m, 'and sums it up');

# ... and when the sagas do not run (no extension: an error, exit 1)
$node->safe_psql('postgres', 'CREATE DATABASE empty');
($status, $out, $err) = run_example('empty');
is($status, 1, 'a database without the extension: exit 1');
like($err, qr/the saga extension is not installed/, 'and it says why');

# ... and when it cannot connect (exit 2)
$node->stop;
($status, $out, $err) = run_example('shop');
is($status, 2, 'no server: exit 2');
like($err, qr/cannot connect/, 'and it says why');

done_testing();
