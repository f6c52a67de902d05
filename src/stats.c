/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Cumulative counters per database, and the workers' state (and the
 *	  last error that made one exit), read from shared memory:
 *	  saga_counters() and saga_worker_status().
 *
 * A backend counts what it does in local counters and adds them to its
 * database's shared counters when its transaction commits; what a rolled
 * back (sub)transaction counted is forgotten with it, so a handler that
 * raises after finishing a saga does not count a finished saga.  The
 * counters live as long as the server's shared memory: a restart (or a
 * crash) resets them, like the statistics in pg_stat_database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "saga.h"
#include "shmem.h"
#include "stats.h"


PG_FUNCTION_INFO_V1(saga_counters);
PG_FUNCTION_INFO_V1(saga_worker_status);

/* What this backend counted in its current transaction. */
static int64 pending_counts[SAGA_NCOUNTERS];

/* Snapshots of pending_counts at the start of each open subtransaction. */
typedef struct CountsSnapshot
{
	SubTransactionId subid;
	int64		counts[SAGA_NCOUNTERS];
	struct CountsSnapshot *next;
} CountsSnapshot;

static CountsSnapshot *snapshots = NULL;
static bool any_pending = false;

/*
 * Count n of counter in this transaction: added to the database's
 * counters when the transaction commits (saga_flush_counts), forgotten
 * if it, or the subtransaction it was counted in, aborts.
 */
void
saga_count(SagaCounter counter, int64 n)
{
	pending_counts[counter] += n;
	any_pending = true;
}

/* Forget the counts of this transaction and its subtransactions. */
static void
forget_pending(void)
{
	memset(pending_counts, 0, sizeof(pending_counts));
	snapshots = NULL;			/* allocated in TopTransactionContext */
	any_pending = false;
}

/* Add this transaction's counts to its database's; called at commit. */
void
saga_flush_counts(bool commit)
{
	SagaDatabase *db;
	int			i;

	if (!any_pending)
	{
		snapshots = NULL;
		return;
	}
	if (commit && SagaShmem != NULL)
	{
		LWLockAcquire(SagaShmem->lock, LW_SHARED);
		db = saga_find_database(MyDatabaseId, false);
		LWLockRelease(SagaShmem->lock);
		if (db == NULL)
		{
			LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
			db = saga_find_database(MyDatabaseId, true);
			LWLockRelease(SagaShmem->lock);
		}
		if (db != NULL)
			for (i = 0; i < SAGA_NCOUNTERS; i++)
				if (pending_counts[i] != 0)
					pg_atomic_fetch_add_u64(&db->counters[i], pending_counts[i]);
	}
	forget_pending();
}

/*
 * A handler runs in a subtransaction: remember the counts when one
 * starts, and put them back if it aborts, so that what a failed handler
 * counted is forgotten with the rest of its work.
 */
static void
saga_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	CountsSnapshot *snap;

	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			snap = MemoryContextAlloc(TopTransactionContext, sizeof(CountsSnapshot));
			snap->subid = mySubid;
			memcpy(snap->counts, pending_counts, sizeof(pending_counts));
			snap->next = snapshots;
			snapshots = snap;
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
		case SUBXACT_EVENT_ABORT_SUB:
			if (snapshots != NULL && snapshots->subid == mySubid)
			{
				snap = snapshots;
				snapshots = snap->next;
				if (event == SUBXACT_EVENT_ABORT_SUB)
					memcpy(pending_counts, snap->counts, sizeof(pending_counts));
				pfree(snap);
			}
			break;
		default:
			break;
	}
}

/* Install saga_subxact_callback() in this backend (from _PG_init()). */
void
saga_register_subxact_callback(void)
{
	RegisterSubXactCallback(saga_subxact_callback, NULL);
}

/*
 * saga_counters() returns one row: this database's counters.
 */
Datum
saga_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[SAGA_NCOUNTERS];
	bool		nulls[SAGA_NCOUNTERS];
	SagaDatabase *db = NULL;
	int			i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (tupdesc->natts != SAGA_NCOUNTERS)
		elog(ERROR, "saga_counters() must return %d columns", SAGA_NCOUNTERS);

	if (SagaShmem != NULL)
	{
		LWLockAcquire(SagaShmem->lock, LW_SHARED);
		db = saga_find_database(MyDatabaseId, false);
		LWLockRelease(SagaShmem->lock);
	}
	for (i = 0; i < SAGA_NCOUNTERS; i++)
	{
		/* without shared memory (not preloaded), there is nothing to count in */
		nulls[i] = SagaShmem == NULL;
		values[i] = Int64GetDatum(db ? (int64) pg_atomic_read_u64(&db->counters[i]) : 0);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * The last error that made a worker of a database exit, as text: copied
 * from shared memory (the caller holds the lock).  It is in that database's
 * encoding, which need not be ours: then its non-ASCII bytes show as '?'.
 */
static Datum
last_error_text(SagaDatabase *db)
{
	char		buf[SAGA_ERROR_LEN];
	int			len;

	strlcpy(buf, db->last_error, sizeof(buf));
	len = strlen(buf);
	if (!pg_verifymbstr(buf, len, true))
	{
		int			i;

		for (i = 0; i < len; i++)
			if (IS_HIGHBIT_SET(buf[i]))
				buf[i] = '?';
	}
	return CStringGetTextDatum(buf);
}

/* Columns of saga_worker_status(): 1.1 has the first 8, 1.2 all of them. */
#define WORKER_STATUS_COLS_1_1	8
#define WORKER_STATUS_COLS		12

/*
 * Fill the last four columns (1.2) of a row: db's last error that ended a
 * worker, if any (all null for the launcher's row, db NULL).
 */
static void
fill_last_error(SagaDatabase *db, Datum *values, bool *nulls)
{
	bool		none = db == NULL || db->last_error_at == 0;
	int			i;

	for (i = WORKER_STATUS_COLS_1_1; i < WORKER_STATUS_COLS; i++)
		nulls[i] = none;
	if (none)
		return;
	values[8] = last_error_text(db);
	values[9] = CStringGetTextDatum(unpack_sql_state(db->last_error_code));
	values[10] = TimestampTzGetDatum(db->last_error_at);
	values[11] = Int32GetDatum(db->last_error_pid);
}

/*
 * saga_worker_status() returns one row per running launcher or worker,
 * and one for each database whose workers all exited after an error (state
 * 'exited') while the launcher waits to start another.  Each row of a
 * database shows the last error that made one of its workers exit.
 *
 * Version 1.1 of the SQL function has only the first 8 columns (and no
 * 'exited' rows): this library serves it too until ALTER EXTENSION UPDATE.
 */
Datum
saga_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		with_errors;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (SagaShmem == NULL)
		return (Datum) 0;
	with_errors = rsinfo->setDesc->natts >= WORKER_STATUS_COLS;
	if (!with_errors && rsinfo->setDesc->natts != WORKER_STATUS_COLS_1_1)
		elog(ERROR, "saga_worker_status() must return %d or %d columns",
			 WORKER_STATUS_COLS_1_1, WORKER_STATUS_COLS);

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	if (SagaShmem->launcher_pid != 0)
	{
		Datum		values[WORKER_STATUS_COLS];
		bool		nulls[WORKER_STATUS_COLS] = {false, true, false, true, true, true, true, true};

		values[0] = Int32GetDatum(SagaShmem->launcher_pid);
		values[2] = CStringGetTextDatum("launcher");
		fill_last_error(NULL, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	for (i = 0; i < SagaShmem->max_workers; i++)
	{
		SagaWorkerSlot *w = &SagaShmem->workers[i];
		Datum		values[WORKER_STATUS_COLS];
		bool		nulls[WORKER_STATUS_COLS] = {0};
		const char *state;

		if (!w->in_use)
			continue;
		if (w->pid == 0)
			state = "starting";
		else if (w->stop_requested)
			state = "stopping";
		else if (w->copy)
			state = "copy";
		else if (w->idle)
			state = "idle";
		else
			state = "busy";
		values[0] = Int32GetDatum(w->pid);
		nulls[0] = w->pid == 0;
		values[1] = ObjectIdGetDatum(w->dboid);
		values[2] = CStringGetTextDatum(state);
		values[3] = Int64GetDatum((int64) w->deliveries);
		values[4] = Int64GetDatum((int64) w->failures);
		values[5] = Int64GetDatum((int64) w->batches);
		values[6] = TimestampTzGetDatum(w->started_at);
		nulls[6] = w->started_at == 0;
		values[7] = TimestampTzGetDatum(w->last_active);
		nulls[7] = w->last_active == 0;
		fill_last_error(saga_find_database(w->dboid, false), values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	/*
	 * Databases served by no worker now, their last one having exited on an
	 * error: otherwise a worker that fails at once each time it is started
	 * would hardly ever show.
	 */
	for (i = 0; with_errors && i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];
		Datum		values[WORKER_STATUS_COLS];
		bool		nulls[WORKER_STATUS_COLS] = {true, false, false, true, true, true, true, true};
		int			w;

		if ((db->state != SAGA_DB_ACTIVE && db->state != SAGA_DB_UNKNOWN) ||
			db->failures == 0 || db->last_error_at == 0)
			continue;
		for (w = 0; w < SagaShmem->max_workers; w++)
			if (SagaShmem->workers[w].in_use && SagaShmem->workers[w].dboid == db->dboid)
				break;
		if (w < SagaShmem->max_workers)
			continue;
		values[1] = ObjectIdGetDatum(db->dboid);
		values[2] = CStringGetTextDatum("exited");
		fill_last_error(db, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(SagaShmem->lock);
	return (Datum) 0;
}
