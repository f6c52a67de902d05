/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  Saved SPI plans run with a pinned search_path, and running as the
 *	  owner of the extension's tables.
 *
 * Every statement the C code runs names its tables with the schema, and is
 * planned and executed with only pg_catalog on the search path, so that a
 * caller's search_path cannot shadow an operator or function the statement
 * uses.  Plans are prepared once per backend and kept, except those whose
 * best plan depends on how big the queues are, which are prepared again
 * now and then (see saga_prepare).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "saga.h"
#include "spi_util.h"


static OverrideSearchPath catalog_only_path = {NIL, true, false, 0};

/*
 * A saved plan must not be kept for good: one made while the tables were
 * empty (a new installation, or after a TRUNCATE) and their statistics not
 * yet gathered keeps reading them as if they were, also once they are
 * large and until autovacuum's next ANALYZE invalidates it.  A queue's
 * claim would sort the whole queue at every batch; the batch's update of
 * the deliveries it handled kept a hash join over a sequential scan (in a
 * profile, 1.3 ms per batch and growing with the table); publishing kept a
 * sequential scan of saga.instance to find the saga's type (3 per order,
 * 30 million rows read in a burst of 4,000 orders).  Planning them at
 * every call instead costs as much as running them.  So every plan is a
 * generic plan kept for a second of work (a few executions), or for a
 * hundred executions if they come faster (a burst of orders into a new
 * installation grows the tables within that second), then made again for
 * the tables as they are now.  An idle worker, looking once per poll
 * interval, plans again once a minute.
 */
#define SAGA_REPLAN_MS			1000
#define SAGA_REPLAN_USES		10
#define SAGA_REPLAN_IDLE_MS		(60 * 1000)
#define SAGA_REPLAN_MAX_USES	100

SPIPlanPtr
saga_prepare(SagaPlan *p)
{
	if (p->plan != NULL &&
		(p->uses >= SAGA_REPLAN_MAX_USES ||
		 TimestampDifferenceExceeds(p->planned_at, GetCurrentTimestamp(),
									p->uses >= SAGA_REPLAN_USES ?
									SAGA_REPLAN_MS : SAGA_REPLAN_IDLE_MS)))
	{
		SPI_freeplan(p->plan);
		p->plan = NULL;
	}
	if (p->plan == NULL)
	{
		SPIPlanPtr	plan;

		PushOverrideSearchPath(&catalog_only_path);
		plan = SPI_prepare_cursor(p->sql, p->nargs, p->argtypes,
								  CURSOR_OPT_GENERIC_PLAN);
		PopOverrideSearchPath();
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 p->sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		p->plan = plan;
		p->planned_at = GetCurrentTimestamp();
		p->uses = 0;
	}
	p->uses++;
	return p->plan;
}

/*
 * Execute a saved plan; the caller is connected to SPI.  Returns the
 * SPI result code, after checking it is not an error.
 */
int
saga_execute(SagaPlan *p, Datum *values, const char *nulls, bool read_only,
			 long count)
{
	SPIPlanPtr	plan = saga_prepare(p);
	int			rc;

	PushOverrideSearchPath(&catalog_only_path);
	rc = SPI_execute_plan(plan, values, nulls, read_only, count);
	PopOverrideSearchPath();
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s",
			 p->sql, SPI_result_code_string(rc));
	return rc;
}

/*
 * The role that owns the extension's tables: the C functions write them
 * as that role, after checking what their caller may do.
 */
Oid
saga_internal_owner(void)
{
	Oid			nsp = get_namespace_oid(SAGA_SCHEMA, true);
	Oid			relid;
	Oid			owner;
	HeapTuple	tup;

	if (!OidIsValid(nsp) ||
		!OidIsValid(relid = get_relname_relid("event", nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"%s\" is not installed in this database",
						SAGA_EXTENSION),
				 errhint("Run CREATE EXTENSION %s.", SAGA_EXTENSION)));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Switch to the owner of the internal tables, as RI triggers switch to a
 * table's owner; saga_end_as_owner() switches back.  An error in between
 * is cleaned up by transaction abort, which restores the user id.
 */
void
saga_begin_as_owner(Oid *save_userid, int *save_sec_context)
{
	Oid			owner = saga_internal_owner();

	GetUserIdAndSecContext(save_userid, save_sec_context);
	SetUserIdAndSecContext(owner, *save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/* Switch back to the user saga_begin_as_owner() saved. */
void
saga_end_as_owner(Oid save_userid, int save_sec_context)
{
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * Connect to SPI and act as the tables' owner, the way most SQL-callable
 * functions start their work once they have checked their caller;
 * saga_spi_finish_as_owner() ends it.  save->caller is the calling user,
 * for what is written in its name.
 */
void
saga_spi_connect_as_owner(SagaAsOwner *save)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save->caller, &save->sec_context);
}

/* Switch back to the caller saga_spi_connect_as_owner() saved, and finish SPI. */
void
saga_spi_finish_as_owner(SagaAsOwner *save)
{
	saga_end_as_owner(save->caller, save->sec_context);
	SPI_finish();
}

/*
 * Has this database's extension been updated to 1.2 (or created at 1.2)?
 * The library is one for every database of the server, while each
 * database's schema is at the version ALTER EXTENSION left it at: until
 * it is updated, the statements that write 1.2's columns and tables are
 * run in their older form.  Looked up once per transaction.
 */
bool
saga_schema_is_1_2(void)
{
	static LocalTransactionId checked_lxid = InvalidLocalTransactionId;
	static bool is_1_2 = false;

	if (checked_lxid != MyProc->lxid)
	{
		Oid			nsp = get_namespace_oid(SAGA_SCHEMA, true);

		is_1_2 = OidIsValid(nsp) &&
			OidIsValid(get_relname_relid("delivery_failure", nsp));
		checked_lxid = MyProc->lxid;
	}
	return is_1_2;
}
