# SagaTest: what the saga extension's TAP tests share.
package SagaTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
our @EXPORT = qw(saga_node saga_worker_pids wait_saga_workers);

# A started cluster with the extension's library preloaded, room for its
# workers, and the test's own settings (postgresql.conf lines) after that.
sub saga_node
{
	my ($name, $settings) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'saga'\nmax_worker_processes = 16\n" . ($settings // ''));
	$node->start;
	return $node;
}

# The pids of the saga workers serving a database, in ascending order.
sub saga_worker_pids
{
	my ($node, $dbname) = @_;
	my $pids = $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = '$dbname'");
	return grep { $_ ne '' } split / /, $pids;
}

# Wait until n saga workers serve a database; returns whether they did.
sub wait_saga_workers
{
	my ($node, $dbname, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = '$dbname'");
}

1;
