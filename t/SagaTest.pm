# SagaTest: what the saga extension's TAP tests share.
package SagaTest;

use strict;
use warnings;

use Exporter 'import';
our @EXPORT = qw(saga_worker_pids wait_saga_workers);

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
