# pg_dump / pg_restore of a database that uses saga (1.2): a user's own
# sagas (both patterns, functions in the user's schema), finished sagas and
# sagas in flight (held by paused consumers).  The restored database has
# every row exactly once -- the built-in subscriptions and definition, made
# by CREATE EXTENSION, are not in the dump -- gets its workers, finishes the
# sagas in flight once resumed, and runs new sagas.
#
# The restore is done with --single-transaction, then again with a plain
# pg_restore, which commits CREATE EXTENSION before it loads the tables: the
# workers must stay away until the restore has ended.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SagaTest;

my $node = saga_node('dump', q{
saga.workers = 2
saga.poll_interval = 200
});


# as the superuser, or as the application role
sub su { my ($dbname, $sql) = @_; return $node->safe_psql($dbname, $sql); }
sub app
{
	my ($dbname, $sql) = @_;
	return $node->safe_psql($dbname, $sql, extra_params => [ '-U', 'app' ]);
}

# --- A database using saga, with a user's own sagas ---------------------------

su('postgres', 'CREATE DATABASE shop');
su('postgres', 'CREATE ROLE app LOGIN');
su('shop', q{
	CREATE EXTENSION saga;
	SELECT saga_grant_app('app');
	CREATE SCHEMA travel AUTHORIZATION app;
	SELECT saga_set_balance('alice', 1000);
	SELECT saga_set_balance('bob', 0);
	SELECT saga_set_stock('widget', 100);
	SELECT saga_set_stock('gadget', 0);
});
is(su('shop', "SELECT extversion FROM pg_extension WHERE extname = 'saga'"), '1.2',
	'the extension is 1.2');
ok(wait_saga_workers($node, 'shop', 2), 'two workers serve database shop');

# the application's sagas, in its own schema, as its own role
app('shop', q{
	CREATE TABLE travel.mailbox (saga_id bigint, body text);
	CREATE TABLE travel.booking (saga_id bigint, what text, PRIMARY KEY (saga_id, what));

	-- choreography: signup
	CREATE FUNCTION travel.send_welcome(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO travel.mailbox VALUES (e.saga_id, 'welcome ' || (e.payload->>'user'));
	    PERFORM public.saga_publish('WelcomeSent', e.payload);
	END $$;
	CREATE FUNCTION travel.finish_signup(e saga.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM public.saga_complete(e.saga_id);
	END $$;
	SELECT saga_subscribe('mailer', 'UserSignedUp', 'travel.send_welcome(saga.event)');
	SELECT saga_subscribe('signup', 'WelcomeSent', 'travel.finish_signup(saga.event)');

	-- orchestration: trip
	CREATE FUNCTION travel.book(data jsonb, what text) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO travel.booking VALUES ((data->>'saga_id')::bigint, what);
	    RETURN jsonb_build_object(what, what || '-' || (data->>'saga_id'));
	END $$;
	CREATE FUNCTION travel.unbook(data jsonb, what text) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	    DELETE FROM travel.booking b WHERE b.saga_id = (data->>'saga_id')::bigint AND b.what = unbook.what;
	    RETURN jsonb_build_object(what || '_cancelled', true);
	END $$;
	CREATE FUNCTION travel.book_flight(data jsonb) RETURNS jsonb LANGUAGE sql
	    AS $$ SELECT travel.book(data, 'flight') $$;
	CREATE FUNCTION travel.cancel_flight(data jsonb) RETURNS jsonb LANGUAGE sql
	    AS $$ SELECT travel.unbook(data, 'flight') $$;
	CREATE FUNCTION travel.book_hotel(data jsonb) RETURNS jsonb LANGUAGE sql
	    AS $$ SELECT travel.book(data, 'hotel') $$;
	CREATE FUNCTION travel.cancel_hotel(data jsonb) RETURNS jsonb LANGUAGE sql
	    AS $$ SELECT travel.unbook(data, 'hotel') $$;
	CREATE FUNCTION travel.book_car(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	    IF data->>'city' = 'Porto' THEN
	        PERFORM public.saga_reject('no car available in Porto');
	    END IF;
	    RETURN travel.book(data, 'car');
	END $$;
	SELECT saga_define('trip',
	    saga_step('flight', 'travel.book_flight(jsonb)', 'travel.cancel_flight(jsonb)'),
	    saga_step('hotel',  'travel.book_hotel(jsonb)',  'travel.cancel_hotel(jsonb)'),
	    saga_step('car',    'travel.book_car(jsonb)'));
});

# the user's trips are booked by a traveller: its trace label is dumped
app('shop', q{SELECT saga_label_trace('trip', 'traveller', 'POST /trips', '201 Booked', '409 Sorry')});

sub start_signup
{
	my ($dbname, $user) = @_;
	return app($dbname, qq{
		SELECT saga_begin('signup') AS id \\gset
		SELECT saga_publish('UserSignedUp', '{"user": "$user"}', :id, 'signup');
		SELECT :id});
}
sub start_trip
{
	my ($dbname, $city) = @_;
	return app($dbname, qq{SELECT saga_start('trip', '{"city": "$city"}')});
}
sub await_saga
{
	my ($dbname, $id) = @_;
	return su($dbname, "SELECT saga_await($id, '60 s')");
}

# --- Some finished sagas ---------------------------------------------------------

my @done;
for my $user (qw(ann ben cid))
{
	my ($id) = (split /\n/, start_signup('shop', $user))[-1];
	push @done, $id;
}
push @done, start_trip('shop', $_) for qw(Lisbon Rome Porto);
push @done, split /\n/, su('shop', q{
	SELECT saga_place_order(CASE WHEN i % 4 = 0 THEN 'bob' ELSE 'alice' END,
	                        CASE WHEN i % 5 = 0 THEN 'gadget' ELSE 'widget' END, 1, 10.00,
	                        CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END)
	  FROM generate_series(1, 20) i});
is(scalar(@done), 26, 'started 26 sagas');
my %outcome;
$outcome{ await_saga('shop', $_) }++ for @done;
is($outcome{pending} // 0, 0, 'every one of them ended');
is(su('shop', "SELECT count(*) FROM saga_instances WHERE saga_type = 'trip' AND status = 'failed'"),
	'1', 'the trip to Porto failed');

# --- Some sagas in flight ----------------------------------------------------------

su('shop', q{
	SELECT saga_pause_consumer('inventory');
	SELECT saga_pause_consumer('mailer');
	SELECT saga_pause_consumer('hotel');
});
my @in_flight;
push @in_flight, (split /\n/, start_signup('shop', $_))[-1] for qw(dan eve);
push @in_flight, start_trip('shop', $_) for qw(Lisbon Porto);
push @in_flight, split /\n/, su('shop', q{
	SELECT saga_place_order('alice', 'widget', 1, 20.00,
	                        CASE WHEN i % 2 = 0 THEN 'orchestration' ELSE 'choreography' END)
	  FROM generate_series(1, 10) i});
is(scalar(@in_flight), 14, 'started 14 more sagas, held by paused consumers');

# wait until each one waits on its paused consumer
ok( $node->poll_query_until('shop', q{
		SELECT string_agg(kind || ' ' || consumer || ' ' || pending, ', ' ORDER BY kind, consumer)
		       = 'deliveries inventory 5, deliveries mailer 2, steps hotel 2, steps inventory 5'
		  FROM saga_backlog WHERE pending > 0}),
	'the sagas in flight wait on inventory, mailer and hotel');
is(su('shop', "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	'14', '14 sagas pending in shop');

# What must come along: every row of the engine's and the example's tables
# and of the user's tables, and the sequences.
my @tables = qw(saga.instance saga.event saga.delivery saga.step_run saga.subscription
  saga.definition saga.definition_step saga.paused_consumer saga.account saga.product
  saga.orders saga.payment saga.reservation saga.trace_client travel.mailbox travel.booking);
sub table_digests
{
	my ($dbname) = @_;
	my %d;
	for my $t (@tables)
	{
		# CREATE EXTENSION makes the built-in rows anew: all but their
		# creation time must be the same
		my $row = ($t =~ /^saga\.(subscription|definition)$/)
		  ? "CASE WHEN builtin THEN to_jsonb(t) - 'created_at' ELSE to_jsonb(t) END::text"
		  : 't::text';
		$d{$t} = su($dbname,
			"SELECT count(*) || ' rows, md5 ' || coalesce(md5(string_agg($row, E'\\n' ORDER BY $row)), '-') "
			  . "FROM $t t");
	}
	$d{sequences} = su($dbname,
		"SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ' ' "
		  . "ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'saga'");
	return \%d;
}
my $before = table_digests('shop');
for my $t (qw(saga.instance saga.event saga.delivery saga.step_run saga.orders saga.payment))
{
	unlike($before->{$t}, qr/^0 rows/, "shop: $t has rows ($before->{$t})");
}
my %user_subs = (
	'mailer UserSignedUp' => 'travel.send_welcome(saga.event) app',
	'signup WelcomeSent'  => 'travel.finish_signup(saga.event) app');
my $subs_query = q{
	SELECT string_agg(consumer || ' ' || event_type || ' ' || handler || ' ' || owner || ' ' || builtin,
	                  E'\n' ORDER BY consumer, event_type)
	  FROM saga.subscription};
my $defs_query = q{
	SELECT string_agg(d.name || ' v' || d.version || ' ' || d.owner || ' ' || d.builtin || ': '
	                  || (SELECT string_agg(s.name || '/' || s.service || '/' || s.action, ' '
	                                        ORDER BY s.step_no)
	                        FROM saga.definition_step s
	                       WHERE s.definition = d.name AND s.version = d.version),
	                  E'\n' ORDER BY d.name, d.version)
	  FROM saga.definition d};
# Who may do what: the extension's functions' and views' privileges (the
# application role's grants, made by saga_grant_app(), are in the dump;
# pg_monitor's, made by the install script, come with CREATE EXTENSION).
my $acl_query = q{
	SELECT string_agg(o || ' ' || coalesce(acl, 'default'), E'\n' ORDER BY o)
	  FROM (SELECT p.oid::regprocedure::text AS o, p.proacl::text AS acl
	          FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
	         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	        UNION ALL
	        SELECT c.oid::regclass::text, c.relacl::text
	          FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
	         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e') x};
my $acl_before = su('shop', $acl_query);
like($acl_before, qr/^saga_publish\(text,jsonb,bigint,text\) \{\w+=X\/\w+,app=X\/\w+\}$/m,
	'shop: app may call saga_publish (saga_grant_app)');
like($acl_before, qr/^saga_stuck \{\w+=arwdDxt\/\w+,pg_monitor=r\/\w+\}$/m,
	'shop: pg_monitor may read saga_stuck');
my $subs_before = su('shop', $subs_query);
my $defs_before = su('shop', $defs_query);
like($subs_before, qr/^mailer UserSignedUp travel\.send_welcome\(saga\.event\) app false$/m,
	'shop: the user subscription mailer, not builtin');
is(su('shop', 'SELECT count(*) FILTER (WHERE builtin) || \' \' || count(*) FROM saga.subscription'),
	'9 11', 'shop: 9 built-in subscriptions and 2 of the user');
is($defs_before,
	"order v1 " . su('shop', 'SELECT owner FROM saga.definition WHERE name = \'order\'')
	  . " true: payment/payment/saga.payment_step_charge(jsonb) inventory/inventory/saga.inventory_step_reserve(jsonb)\n"
	  . "trip v1 app false: flight/flight/travel.book_flight(jsonb) hotel/hotel/travel.book_hotel(jsonb) car/car/travel.book_car(jsonb)",
	'shop: the definitions: order (built in) and trip (the user\'s)');

# --- pg_dump, pg_restore ------------------------------------------------------------

my $dumpfile = PostgreSQL::Test::Utils::tempdir() . '/shop.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dumpfile, '-d', 'shop' ], 'pg_dump -Fc of shop');

my $log_offset = -s $node->logfile;
su('postgres', 'CREATE DATABASE restored');
my ($restore_out, $restore_err) = ('', '');
{
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	my $ok = IPC::Run::run([ 'pg_restore', '--single-transaction', '-d', 'restored', $dumpfile ],
		'>', \$restore_out, '2>', \$restore_err);
	ok($ok, 'pg_restore --single-transaction into a new database exits 0')
	  or diag("pg_restore: $restore_err");
	note("pg_restore printed: $restore_err") if $restore_err ne '';
}
is(su('restored', "SELECT extversion FROM pg_extension WHERE extname = 'saga'"), '1.2',
	'restored: the extension is 1.2');

# Right after the restore, before anything is resumed: exactly the same rows.
my $after = table_digests('restored');
for my $t (@tables, 'sequences')
{
	is($after->{$t}, $before->{$t}, "restored: $t is the same as in shop");
}
is(su('restored', $subs_query), $subs_before, 'restored: the same subscriptions');
is(su('restored', $acl_query), $acl_before,
	'restored: the same privileges on the extension\'s functions and views (app\'s, pg_monitor\'s)');
is(su('restored', $defs_query), $defs_before, 'restored: the same definitions');
is( su('restored',
		'SELECT count(*) FROM (SELECT consumer, event_type FROM saga.subscription GROUP BY 1, 2 HAVING count(*) > 1) x'),
	'0', 'restored: no subscription twice');
is( su('restored',
		'SELECT count(*) FILTER (WHERE builtin) || \' \' || count(*) FROM saga.subscription'),
	'9 11', 'restored: 9 built-in subscriptions and 2 of the user, each once');
is( su('restored',
		"SELECT count(*) FROM saga.definition WHERE name = 'order'")
	  . ' '
	  . su('restored', "SELECT count(*) FROM saga.definition_step WHERE definition = 'order'"),
	'1 2', 'restored: the built-in order definition once, with its two steps');
is( su('restored',
		"SELECT string_agg(consumer || ':' || owner, ' ' ORDER BY consumer) FROM saga_subscriptions "
		  . "WHERE consumer IN ('mailer', 'signup')"),
	'mailer:app signup:app', 'restored: the user\'s handlers run as the user');

# the restored database is served
ok(wait_saga_workers($node, 'restored', 2), 'restored: two workers (pg_stat_activity)');
ok( $node->poll_query_until('restored',
		"SELECT count(*) = 2 FROM saga_workers WHERE database = 'restored'"),
	'restored: saga_workers shows them');
is(su('restored', "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	'14', 'restored: the 14 sagas in flight wait for their paused consumers');

# --- the sagas in flight end, there ------------------------------------------------

su('restored', q{
	SELECT saga_resume_consumer('inventory');
	SELECT saga_resume_consumer('mailer');
	SELECT saga_resume_consumer('hotel');
});
$outcome{$_} = await_saga('restored', $_) for @in_flight;
is(join(' ', map { $outcome{$_} } @in_flight),
	'completed completed completed failed ' . join(' ', ('completed') x 10),
	'restored: the sagas in flight ended (the trip to Porto failed)');
is(su('restored', "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	'0', 'restored: nothing pending');
is( su('restored',
		"SELECT count(*) FROM saga.delivery WHERE status NOT IN ('done', 'cancelled')"),
	'0', 'restored: no delivery pending or dead');
is(su('restored', 'SELECT count(*) FROM travel.mailbox'), '5',
	'restored: one welcome mail per signup (3 before the dump, 2 after)');
is(su('restored', 'SELECT string_agg(what, \' \' ORDER BY saga_id, what) FROM travel.booking'),
	'car flight hotel car flight hotel car flight hotel',
	'restored: bookings of the completed trips only, the failed ones undone');
is( su('restored',
		"SELECT 1000 - coalesce(sum(amount) FILTER (WHERE status = 'completed' AND customer = 'alice'), 0) "
		  . "= saga_balance('alice') FROM saga_orders"),
	't', 'restored: alice\'s balance = initial - completed amounts');
is( su('restored',
		"SELECT 100 - coalesce(sum(quantity) FILTER (WHERE status = 'completed' AND product = 'widget'), 0) "
		  . "= saga_stock('widget') FROM saga_orders"),
	't', 'restored: widget stock = initial - completed quantities');
is( su('restored',
		"SELECT count(*) FROM saga_orders o JOIN saga.payment p ON p.order_id = o.order_id "
		  . "WHERE (o.status = 'failed') <> (p.status = 'refunded')"),
	'0', 'restored: a charge is refunded exactly when its order failed');

# --- and new sagas run there --------------------------------------------------------

my $chor = su('restored', "SELECT saga_place_order('alice', 'widget', 2, 5.00)");
my $orch = su('restored', "SELECT saga_place_order('alice', 'widget', 2, 5.00, 'orchestration')");
is(await_saga('restored', $chor), 'completed', 'restored: a new choreographed order completes');
is(await_saga('restored', $orch), 'completed', 'restored: a new orchestrated order completes');
cmp_ok($chor, '>', $in_flight[-1], 'restored: new saga ids continue after the restored ones');
my ($signup) = (split /\n/, start_signup('restored', 'fay'))[-1];
is(await_saga('restored', $signup), 'completed', 'restored: a new signup (user saga, choreography) completes');
my $trip = start_trip('restored', 'Oslo');
is(await_saga('restored', $trip), 'completed', 'restored: a new trip (user saga, orchestration) completes');
is( su('restored', "SELECT string_agg(message, ', ' ORDER BY seq) FROM saga_trace($trip)"),
	'POST /trips, flight, 200 OK, hotel, 200 OK, car, 200 OK, 201 Booked',
	'restored: the new trip\'s trace, with its labels');

# the source database was not touched by any of this
is(su('shop', "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	'14', 'shop: its 14 sagas still wait for their paused consumers');

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/\b(ERROR|FATAL|PANIC):/, 'no ERROR, FATAL or PANIC in the log since the restore')
  or diag($log);

# --- a plain pg_restore ---------------------------------------------------------
#
# Without --single-transaction, CREATE EXTENSION commits before the tables
# are loaded.  The dump turns check_function_bodies off before it, which
# tells the extension a restore is under way: the database's workers stay
# away until the restoring session ends, and then run the restored sagas on
# complete tables (saga.paused_consumer, saga.product and the sequences
# loaded), so nothing fails for a table not loaded yet.

su('postgres', 'CREATE DATABASE restored_plain');
{
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'pg_restore', '-d', 'restored_plain', $dumpfile ],
		'>', \$out, '2>', \$err);
	ok($ok, 'plain pg_restore into another database exits 0') or diag("pg_restore: $err");
}
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity "
		  . "WHERE backend_type = 'saga worker' AND datname = 'restored_plain'"),
	'plain restore: the workers start once the restore has ended');
my $plain = table_digests('restored_plain');
for my $t (qw(saga.instance saga.step_run saga.payment saga.reservation travel.booking))
{
	is($plain->{$t}, $before->{$t}, "plain restore: $t is the same as in shop");
}
is( su('restored_plain',
		"SELECT count(*) FROM saga_orders WHERE reason LIKE 'unknown %'"),
	'0', 'plain restore: no order failed because a table was not loaded yet');
is(su('restored_plain', $acl_query), $acl_before,
	'plain restore: the same privileges on the extension\'s functions and views');
is(su('restored_plain', "SELECT count(*) FROM saga.instance WHERE status = 'pending'"),
	'14', 'plain restore: the 14 sagas in flight wait for their paused consumers');

$node->stop;
done_testing();
