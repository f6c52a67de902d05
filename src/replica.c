/*-------------------------------------------------------------------------
 *
 * replica.c
 *	  Is this database a logical-replication copy of one that runs the
 *	  sagas?  Then the engine runs nothing here.
 *
 * A database that subscribes (CREATE SUBSCRIPTION) to the run state of
 * another database's engine, its tables saga.instance, saga.event or
 * saga.delivery, holds a copy of that database's sagas, pending ones
 * included.  The publisher runs them.  Running them here as well would run
 * every step a second time (a second payment for each order), and the rows
 * the handlers wrote here would then collide with the same rows arriving
 * from the publisher, which stops the apply on a duplicate key.  So in a
 * copy the workers deliver nothing, run no step, abort no saga at its
 * deadline and purge nothing (the publisher's purges arrive as deletes),
 * saga_run_pending() refuses, saga_workers shows the workers in state
 * 'copy' and saga_copy_of() names the subscription.
 *
 * pg_subscription_rel (a catalog of each database, small: one row per
 * table a subscription of this database brings in) says which tables are
 * subscribed to.  The workers ask before every batch, so the answer is kept
 * for SAGA_COPY_RECHECK_MS, and forgotten at once when pg_subscription_rel
 * changes (its syscache's invalidations: CREATE, DROP, ALTER SUBSCRIPTION
 * ... REFRESH PUBLICATION, a table's sync state moving on).  A disabled
 * subscription still makes a copy: it may be enabled again.
 *
 * Once no subscription brings those tables in (the subscription dropped),
 * the database runs its sagas again: that is how a logical copy takes
 * over from its publisher.  Logical replication does not carry sequences,
 * so a copy's are where CREATE EXTENSION left them, behind the copied ids:
 * a worker that finds the database is not a copy (when it starts, and when
 * the subscription has gone) first moves the extension's sequences past
 * the rows (saga.advance_sequences(), which costs a few index probes when
 * they are not behind).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_subscription.h"
#include "catalog/pg_subscription_rel.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "saga.h"
#include "replica.h"
#include "spi_util.h"
#include "worker.h"


PG_FUNCTION_INFO_V1(saga_copy_of);

/* How long an answer is kept at most (invalidations end it sooner). */
#define SAGA_COPY_RECHECK_MS	5000

static bool copy_valid = false;
static TimestampTz copy_checked_at = 0;
static char copy_subname[NAMEDATALEN];	/* "" when not a copy */
static bool copy_looking = false;	/* a look failed half-way if still set */
static bool copy_callback_registered = false;

/* pg_subscription_rel changed: look again next time. */
static void
copy_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	copy_valid = false;
}

/*
 * Is relid one of the tables that hold the engine's run state?  Those
 * coming from elsewhere make this database a copy; the example's tables
 * or the definitions alone do not (no work is taken from them).
 */
static bool
is_run_state_table(Oid relid, Oid nsp)
{
	char	   *name;
	bool		result;

	if (get_rel_namespace(relid) != nsp)
		return false;
	name = get_rel_name(relid);
	result = name != NULL &&
		(strcmp(name, "instance") == 0 ||
		 strcmp(name, "event") == 0 ||
		 strcmp(name, "delivery") == 0);
	if (name)
		pfree(name);
	return result;
}

/*
 * Read pg_subscription_rel: which subscription, if any, makes a copy?  Its
 * name goes to subname ("" if none).
 */
static void
copy_look(char *subname)
{
	Oid			nsp = get_namespace_oid(SAGA_SCHEMA, true);
	Oid			subid = InvalidOid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;

	subname[0] = '\0';
	if (!OidIsValid(nsp))
		return;

	rel = table_open(SubscriptionRelRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_subscription_rel sr = (Form_pg_subscription_rel) GETSTRUCT(tup);

		if (is_run_state_table(sr->srrelid, nsp))
		{
			subid = sr->srsubid;
			break;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (!OidIsValid(subid))
		return;
	tup = SearchSysCache1(SUBSCRIPTIONOID, ObjectIdGetDatum(subid));
	if (HeapTupleIsValid(tup))
	{
		strlcpy(subname,
				NameStr(((Form_pg_subscription) GETSTRUCT(tup))->subname),
				NAMEDATALEN);
		ReleaseSysCache(tup);
	}
	else
		snprintf(subname, NAMEDATALEN, "%u", subid);
}

/*
 * The name of the subscription that makes this database a copy of
 * another's engine, or NULL if the engine runs here.  Called in a
 * transaction; the answer may be SAGA_COPY_RECHECK_MS old at most, unless
 * a change of pg_subscription_rel has been seen since.
 */
const char *
saga_copy_subscription(void)
{
	if (!copy_callback_registered)
	{
		CacheRegisterSyscacheCallback(SUBSCRIPTIONRELMAP, copy_invalidate, (Datum) 0);
		copy_callback_registered = true;
	}
	if (copy_looking || !copy_valid ||
		TimestampDifferenceExceeds(copy_checked_at, GetCurrentTimestamp(),
								   SAGA_COPY_RECHECK_MS))
	{
		char		subname[NAMEDATALEN];

		/* valid first: an invalidation read during the look clears it */
		copy_looking = true;
		copy_valid = true;
		copy_checked_at = GetCurrentTimestamp();
		copy_look(subname);
		strlcpy(copy_subname, subname, NAMEDATALEN);
		copy_looking = false;
	}
	return copy_subname[0] != '\0' ? copy_subname : NULL;
}

/*
 * Raise an error if this database is a copy: what (a function's name)
 * would run sagas, which happens on the publisher.
 */
void
saga_refuse_in_copy(const char *what)
{
	const char *sub = saga_copy_subscription();

	if (sub != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s cannot run sagas in a copy", what),
				 errdetail("This database receives the engine's tables from another database through subscription \"%s\"; that database runs the sagas.",
						   sub),
				 errhint("Run it on the publisher; DROP SUBSCRIPTION makes this database run its sagas.")));
}

/* Move the extension's sequences past the rows; see the file's header. */
static void
advance_sequences(void)
{
	static SagaPlan plan = {"SELECT saga.advance_sequences()", 0};
	int			moved;
	bool		isnull;

	if (!saga_schema_is_1_2())
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_execute(&plan, NULL, NULL, false, 1);
	moved = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (!isnull && moved > 0)
		ereport(LOG,
				(errmsg("saga worker: moved %d of the extension's sequences past the rows this database holds",
						moved),
				 errdetail("Logical replication does not carry sequences: a former copy's are behind its rows.")));
}

/*
 * A worker's look before a batch: is the database a copy (then the batch
 * runs nothing)?  Called in the batch's transaction, with a snapshot.  The
 * worker's slot shows the answer (saga_workers' state 'copy'); a change
 * is logged, and a worker that finds the database runs its sagas, when it
 * starts or when the database has just stopped being a copy, moves the
 * sequences past the rows first.
 */
bool
saga_worker_in_copy(void)
{
	static bool looked = false;
	const char *sub = saga_copy_subscription();
	bool		copy = sub != NULL;

	if (looked && copy == MySagaWorker->copy)
		return copy;

	if (copy)
		ereport(LOG,
				(errmsg("saga worker: this database is a copy, its sagas are run by the publisher of subscription \"%s\"",
						sub),
				 errhint("DROP SUBSCRIPTION makes this database run its sagas.")));
	else
	{
		if (looked)
			ereport(LOG,
					(errmsg("saga worker: this database is no longer a copy, it runs its sagas")));
		advance_sequences();
	}
	MySagaWorker->copy = copy;
	looked = true;
	return copy;
}

/*
 * saga_copy_of() returns name
 *
 * The subscription that makes this database a copy of another's engine
 * (which runs the sagas), or NULL when the engine runs here.
 */
Datum
saga_copy_of(PG_FUNCTION_ARGS)
{
	const char *sub = saga_copy_subscription();
	Name		result;

	if (sub == NULL)
		PG_RETURN_NULL();
	result = (Name) palloc0(NAMEDATALEN);
	namestrcpy(result, sub);
	PG_RETURN_NAME(result);
}
