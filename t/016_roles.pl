# Roles that go away while the engine still names them.
#
# In the database where they have engine rows, DROP ROLE is refused (2BP01)
# with what the role still owns there, and REASSIGN OWNED moves those rows
# (subscriptions, definitions, sagas, event types) to the new owner as it
# moves the role's objects: their pending work then runs as that role.
# DROP OWNED takes back what was granted to the role.
#
# From another database's session, the engine's rows cannot be seen: the
# drop succeeds, and the dropped role's pending delivery is dead-lettered
# at its first attempt with a clear error (not retried on "invalid role
# OID"), its saga aborted and failed; its orchestrated saga's step fails
# for good at once, and the saga fails.
#
# The roles get the engine's functions through a group role, and their
# handlers are owned by the superuser: they own no object of PostgreSQL's
# own, so that nothing but the engine's rows could keep them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $node = saga_node('roles', q{
saga.workers = 1
saga.poll_interval = 200
saga.retry_backoff = 100
});

sub su { my ($sql) = @_; return $node->safe_psql('shop', $sql); }
sub as { my ($role, $sql) = @_; return su("SET ROLE $role; $sql"); }

$node->safe_psql('postgres', 'CREATE DATABASE shop');
su(q{
	CREATE EXTENSION saga;
	CREATE ROLE apps NOLOGIN;
	GRANT EXECUTE ON FUNCTION
	    saga_publish(text, jsonb, bigint, text),
	    saga_subscribe(text, text, regprocedure, text, boolean, text),
	    saga_unsubscribe(text, text),
	    saga_begin(text, interval), saga_complete(bigint), saga_fail(bigint, text),
	    saga_define(text, saga.step[]), saga_start(text, jsonb, interval),
	    saga_grant_events(text, text, text), saga_grant_sagas(text, text),
	    saga_label_trace(text, text, text, text, text)
	TO apps;
	CREATE ROLE app3 LOGIN IN ROLE apps;
	CREATE ROLE app4 LOGIN IN ROLE apps;
	CREATE ROLE heir LOGIN IN ROLE apps;
	CREATE TABLE inbox (who name, n int);
	GRANT INSERT ON inbox TO PUBLIC;
	CREATE FUNCTION take(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO public.inbox VALUES (current_user, (e.payload->>'n')::int);
	END $$;
	CREATE FUNCTION step_ok(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
});
ok(wait_saga_workers($node, 'shop', 1), 'a worker serves the database');

# --- In the database: refused, then REASSIGN OWNED / DROP OWNED ----------------

as('app4', q{
	SELECT saga_subscribe('c4', 'Thing4', 'take(saga.event)');
	SELECT saga_define('plan4', saga_step('one', 'step_ok(jsonb)'));
	SELECT saga_grant_events('Thing4', 'app3');
});
as('app3', q{SELECT saga_grant_sagas('s3', 'app4')});
# trace labels: two of app4's, one for a saga type heir has labelled too
as('heir', q{SELECT saga_label_trace('x4', 'heir client', 'go', 'done', 'oops')});
as('app4', q{SELECT saga_label_trace('s4', 'app4 client', 'go', 'done', 'oops');
SELECT saga_label_trace('x4', 'app4 client', 'go', 'done', 'oops')});
su(q{SELECT saga_pause_consumer('c4')});
as('app4', q{SELECT saga_begin('s4') AS id \gset
SELECT saga_publish('Thing4', '{"n": 4}', :id)});

my ($rc, $out, $err) = $node->psql('shop', 'DROP ROLE app4');
isnt($rc, 0, 'DROP ROLE of a role with engine rows in the database is refused');
like($err, qr/ERROR:  role "app4" cannot be dropped because the saga engine still names it/,
	'... with a clear error');
like($err, qr/DETAIL:  .*1 subscription.*1 saga definition.*1 saga\b.*1 event type.*3 grants or trace labels/s,
	'... whose detail counts what it owns, what it was granted and its trace labels');
like($err, qr/HINT:  .*REASSIGN OWNED BY app4/, '... and whose hint names the remedy');
($rc, undef, $err) = $node->psql('shop', '\set VERBOSITY verbose
DROP ROLE app4');
like($err, qr/2BP01/, '... SQLSTATE 2BP01 (dependent_objects_still_exist)');
is(su("SELECT count(*) FROM pg_roles WHERE rolname = 'app4'"), '1', 'the role is still there');

su('REASSIGN OWNED BY app4 TO heir');
is(su(q{SELECT (SELECT string_agg(owner::text, ',') FROM saga.subscription WHERE consumer = 'c4')
	|| ' ' || (SELECT string_agg(DISTINCT owner::text, ',') FROM saga.definition WHERE name = 'plan4')
	|| ' ' || (SELECT string_agg(owner::text, ',') FROM saga.instance WHERE saga_type = 's4')
	|| ' ' || (SELECT owner::text FROM saga.event_type WHERE name = 'Thing4')}),
	'heir heir heir heir',
	'REASSIGN OWNED moves its subscriptions, definitions, sagas and event types');
is(su(q{SELECT string_agg(saga_type || ':' || owner::text || ':' || client, ' ' ORDER BY saga_type)
	FROM saga.trace_client WHERE NOT builtin}),
	's4:heir:app4 client x4:heir:heir client',
	'... and its trace labels, where the new owner has none of its own');
($rc, undef, $err) = $node->psql('shop', 'DROP ROLE app4');
like($err, qr/1 grant or trace label of/, 'what was granted to it still names it');
su('DROP OWNED BY app4');
is(su(q{SELECT count(*) FROM saga.saga_grant WHERE grantee = 'app4'::regrole}), '0',
	'DROP OWNED takes back what was granted to it');
su('DROP ROLE app4');
is(su("SELECT count(*) FROM pg_roles WHERE rolname = 'app4'"), '0', 'then DROP ROLE succeeds');
su(q{SELECT saga_resume_consumer('c4')});
ok($node->poll_query_until('shop', q{SELECT count(*) = 1 FROM inbox WHERE n = 4}),
	'the pending delivery runs');
is(su('SELECT who FROM inbox WHERE n = 4'), 'heir', '... as the new owner');

# --- From another database: the pending work fails its saga cleanly ----------

as('app3', q{SELECT saga_subscribe('c3', 'Thing3', 'take(saga.event)');
SELECT saga_define('plan3', saga_step('one', 'step_ok(jsonb)', service => 'svc3'))});
su(q{SELECT saga_pause_consumer('c3'); SELECT saga_pause_consumer('svc3'); DELETE FROM saga.saga_grant});
as('app3', q{SELECT saga_begin('s3') AS id \gset
SELECT saga_publish('Thing3', '{"n": 3}', :id);
SELECT saga_start('plan3')});
my $saga = su(q{SELECT max(id) FROM saga.instance WHERE saga_type = 's3'});
my $orch = su(q{SELECT max(id) FROM saga.instance WHERE saga_type = 'plan3'});
$node->safe_psql('postgres', 'DROP ROLE app3');
su(q{SELECT saga_resume_consumer('c3'); SELECT saga_resume_consumer('svc3')});
ok($node->poll_query_until('shop',
		q{SELECT count(*) = 1 FROM saga.delivery d JOIN saga.subscription s ON s.id = d.subscription_id
		   WHERE s.consumer = 'c3' AND d.status = 'dead'}),
	'the dropped role\'s delivery is dead-lettered');
my $dead = su(q{SELECT d.attempts || ' ' || d.last_error FROM saga.delivery d
	JOIN saga.subscription s ON s.id = d.subscription_id WHERE s.consumer = 'c3'});
like($dead, qr/^1 /, '... at its first attempt');
like($dead, qr/role \d+ of consumer "c3" no longer exists.*SG410/, '... saying why');
unlike($dead, qr/invalid role OID/, '... not "invalid role OID"');
ok($node->poll_query_until('shop', "SELECT status = 'failed' FROM saga.instance WHERE id = $saga"),
	'its saga fails');
like(su("SELECT reason FROM saga.instance WHERE id = $saga"), qr/no longer exists/,
	'... with the reason');
is(su('SELECT count(*) FROM inbox WHERE n = 3'), '0', 'nothing ran as anyone else');
ok($node->poll_query_until('shop', "SELECT status = 'failed' FROM saga.instance WHERE id = $orch"),
	'an orchestrated saga of the dropped role fails');
like(su("SELECT string_agg(outcome || ' ' || attempt || ' ' || detail, '; ') FROM saga.step_run WHERE saga_id = $orch"),
	qr/^error 1 role \d+ that the saga's steps run as no longer exists$/,
	'... its step failed for good at its first attempt');

$node->stop;
done_testing();
