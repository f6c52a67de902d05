# The Python example (examples/python/place_order.py, psycopg 3) against a
# real server: it places four orders in both patterns, is told of their
# end by saga_notify_on_end()'s NOTIFY (not by saga_await), prints their
# traces, and exits 0 only when every order ended as expected.  Then who
# may ask to be told: an ordinary role, for the example's orders and its
# own sagas, not for another role's.  Debian's python3-psycopg (installed
# by scripts/setup.sh) is required: without it this test fails.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $script = abs_path(dirname(__FILE__) . '/../examples/python/place_order.py');
my $python = '/usr/bin/python3';
ok(-x $python, 'Debian\'s python3 is installed');
ok(-f $script, "the example exists: $script");
my $has_psycopg = system($python, '-c', 'import psycopg') == 0;
ok($has_psycopg, 'psycopg 3 is installed (python3-psycopg)')
  or diag('apt-get install python3-psycopg -- scripts/setup.sh does it');
if (!$has_psycopg || !-f $script)
{
	done_testing();
	exit 1;
}

my $node = saga_node('python_example', q{
saga.workers = 2
saga.poll_interval = 200
});
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', 'CREATE EXTENSION saga');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = 'shop'"),
	'two workers serve database shop');

sub run_example
{
	my ($dbname, @args) = @_;
	my $user = $dbname =~ s/^(\w+)@// ? $1 : scalar getpwuid($<);
	my ($out, $err) = ('', '');
	local %ENV = %ENV;
	delete @ENV{qw(PGSERVICE PGOPTIONS PGPASSWORD PGHOSTADDR PGSSLMODE)};
	$ENV{PGHOST} = $node->host;
	$ENV{PGPORT} = $node->port;
	$ENV{PGDATABASE} = $dbname;
	$ENV{PGUSER} = $user;
	IPC::Run::run([ $python, $script, @args ], '<', \'', '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	my $status = $? >> 8;
	note("place_order.py @args -> exit $status\n$out$err");
	return ($status, $out, $err);
}

my ($status, $out, $err) = run_example('shop');
is($status, 0, 'place_order.py exits 0') or diag("stdout:\n$out\nstderr:\n$err");
is($err, '', 'and prints nothing on stderr');
my @got;
push @got, "$1 $2 $3" while $out =~ /^order \d+ \((\w+), ([\w-]+)\): (\w+)$/mg;
is_deeply(
	\@got,
	[
		'choreography python-widget completed',
		'choreography python-sold-out failed',
		'orchestration python-widget completed',
		'orchestration python-sold-out failed'
	],
	'four orders: in stock completed, sold out failed, in both patterns');
is(scalar(() = $out =~ /^told: order \d+ (completed|failed)$/mg), 4,
	'it was told of all four by NOTIFY');
unlike($out, qr/^not told/m, 'none had to be asked for');
like($out, qr/^\s+\d+\. order -> customer: 201 Created$/m, 'a trace ends with 201 Created');
like($out, qr/^\s+\d+\. payment -> broker: PaymentRefunded$/m, 'the choreographed failure\'s trace shows the refund');
is( $node->safe_psql('shop',
		"SELECT count(*) FROM saga.instance WHERE notify_channel LIKE 'orders_done_%'"),
	'4', 'the four sagas asked for it');

# --- who may ask ----------------------------------------------------------------

$node->safe_psql('shop', q{
	CREATE ROLE shopper LOGIN;
	CREATE ROLE other LOGIN;
	SELECT saga_grant_app('other');
});
my $mine = $node->safe_psql('shop', q{SELECT saga_begin('private')},
	extra_params => [ '-U', 'other' ]);
is( $node->safe_psql('shop',
		q{SELECT saga_notify_on_end(saga_place_order('python-customer', 'python-widget', 1, 10.00), 'mine')},
		extra_params => [ '-U', 'shopper' ]),
	't', 'an ordinary role asks for the example\'s order it placed');
is( $node->safe_psql('shop', "SELECT saga_notify_on_end($mine, 'mine')", extra_params => [ '-U', 'other' ]),
	't', 'a role asks for its own saga');
my ($rc, undef, $stderr) = $node->psql('shop', "SELECT saga_notify_on_end($mine, 'spy')",
	extra_params => [ '-U', 'shopper', '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, 'another role may not ask for it');
like($stderr, qr/42501.*permission denied to see saga $mine/s, '... 42501, permission denied to see it');
is($node->safe_psql('shop', "SELECT notify_channel FROM saga.instance WHERE id = $mine"), 'mine',
	'... and its channel is unchanged');
($rc, undef, $stderr) = $node->psql('shop', "SELECT saga_notify_on_end(-1, 'x')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/42704.*saga -1 does not exist/s, 'a saga that does not exist: 42704');
($rc, undef, $stderr) = $node->psql('shop', "SELECT saga_notify_on_end($mine, repeat('c', 64))");
like($stderr, qr/channel name is too long/, 'a channel name too long for LISTEN: refused');
($rc, undef, $stderr) = $node->psql('shop', "SELECT saga_notify_on_end($mine, '')");
like($stderr, qr/channel must not be empty/, 'an empty channel name: refused');

# Run by an application role, as a user would try first: the setup is the
# DBA's, and the script says so instead of a traceback (it printed one).
($status, $out, $err) = run_example('shopper@shop');
is($status, 2, 'run by a role that may not set balances: exit 2');
like($err, qr/permission denied for function saga_set_balance.*the DBA's: run this as the extension's owner, or have it grant them to shopper/s,
	'... saying whose functions they are');
unlike($err, qr/Traceback/, '... without a traceback');
($status, $out, $err) = run_example('postgres');
is($status, 2, 'in a database without the extension: exit 2');
like($err, qr/CREATE EXTENSION saga/, '... saying what is missing');

$node->stop;
done_testing();
