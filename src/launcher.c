/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: keeps saga.workers workers running in every database
 *	  where the extension is installed.
 *
 * The launcher is a static background worker connected to no database (it
 * reads only the shared catalog pg_database, as the logical replication
 * launcher reads pg_subscription).  It cannot see pg_extension, so for a
 * database it has not seen before it starts one worker, which connects,
 * looks for the extension and reports ACTIVE (and stays) or ABSENT (and
 * exits).  CREATE EXTENSION wakes it at commit (saga_wake_launcher()), and
 * the utility hook wakes it after CREATE/DROP DATABASE, so new databases
 * are served without a restart and dropped ones are forgotten.
 *
 * A database into which a session is restoring gets no workers until that
 * session stops restoring (see lifecycle.c); the launcher is the one that
 * notices a restoring session gone idle (launcher_check_restores()).
 *
 * Workers are dynamic background workers that report to the launcher
 * (bgw_notify_pid), so the launcher's latch is set whenever one starts or
 * stops.  A worker that exits without having been asked to is restarted
 * after a delay that doubles with each consecutive failure, so that a
 * database whose worker keeps failing does not flood the log.
 *
 * Their slots come out of max_worker_processes, shared with the rest of
 * the server, and may run short: every database then gets its first
 * worker before any gets a second (launcher_reconcile()), and one left
 * without any is named in a WARNING and shown by saga_databases
 * (saga_database_status()).  A database that does not allow connections
 * gets no new worker: it could not connect.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "saga.h"
#include "launcher.h"
#include "shmem.h"
#include "worker.h"


/* How often the launcher re-reads pg_database even if nobody asked. */
#define SAGA_RESCAN_INTERVAL_MS		(60 * 1000)

/*
 * A restoring session idle this long no longer holds its database's
 * workers back (see lifecycle.c); the launcher looks at it every
 * SAGA_RESTORE_CHECK_MS.
 */
#define SAGA_RESTORE_IDLE_MS		(10 * 1000)
#define SAGA_RESTORE_CHECK_MS		1000

/* Handles of the workers this launcher started, by slot. */
static BackgroundWorkerHandle **worker_handles = NULL;

/*
 * Register the launcher with the postmaster, from _PG_init() when the
 * library is preloaded.  The postmaster restarts it 5 s after it dies.
 */
void
saga_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "saga");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "saga_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "saga launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "saga launcher");
	RegisterBackgroundWorker(&bgw);
}

/*
 * At exit: say in shared memory that no launcher runs, so nobody sets
 * the latch of a process that is gone.
 */
static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	SagaShmem->launcher_pid = 0;
	SagaShmem->launcher_latch = NULL;
	LWLockRelease(SagaShmem->lock);
}

/*
 * Re-read pg_database: add an UNKNOWN entry for every database that accepts
 * connections and is not a template, forget entries of databases that are
 * gone (or became templates, or stopped accepting connections) and have no
 * worker left.  One that still has workers is marked no_connections: they
 * go on (ALTER DATABASE ... ALLOW_CONNECTIONS false does not end sessions),
 * but a worker started now could not connect, and would only fail again
 * and again, each failure delaying the next start.  When the database
 * accepts connections again (ALTER DATABASE makes us rescan at its end),
 * its workers are started at once: the failures are forgotten.
 */
static void
launcher_rescan(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *dboids = NIL;
	MemoryContext scancxt = CurrentMemoryContext;
	ListCell   *lc;
	int			i;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database pgdb = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!pgdb->datallowconn || pgdb->datistemplate)
			continue;
		old = MemoryContextSwitchTo(scancxt);
		dboids = lappend_oid(dboids, pgdb->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	SagaShmem->rescan = false;
	for (i = 0; i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];
		int			j;
		bool		has_worker = false;

		if (db->state == SAGA_DB_UNUSED || db->state == SAGA_DB_PAUSED)
			continue;
		if (list_member_oid(dboids, db->dboid))
		{
			if (db->no_connections)
			{
				db->no_connections = false;
				db->failures = 0;
				db->restart_after = 0;
			}
			continue;
		}
		for (j = 0; j < SagaShmem->max_workers; j++)
			if (SagaShmem->workers[j].in_use && SagaShmem->workers[j].dboid == db->dboid)
				has_worker = true;
		if (!has_worker)
			db->state = SAGA_DB_UNUSED;
		else
			db->no_connections = true;
	}
	foreach(lc, dboids)
	{
		if (saga_find_database(lfirst_oid(lc), true) == NULL)
		{
			ereport(LOG,
					(errmsg("saga launcher: more than %d databases, database %u is not served",
							SagaShmem->max_databases, lfirst_oid(lc))));
			break;
		}
	}
	LWLockRelease(SagaShmem->lock);
	list_free(dboids);
}

/*
 * Free the slots of workers that have exited.  A worker clears its own slot
 * on a clean exit; this catches those that died before attaching or
 * without running their exit callbacks.  An exit nobody asked for counts
 * as a failure of that database and delays the next start.
 */
static void
launcher_reap(void)
{
	int			i;

	for (i = 0; i < SagaShmem->max_workers; i++)
	{
		SagaWorkerSlot *w = &SagaShmem->workers[i];
		pid_t		pid;

		if (worker_handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(worker_handles[i], &pid) != BGWH_STOPPED)
			continue;

		pfree(worker_handles[i]);
		worker_handles[i] = NULL;

		/* still in use: it died without cleaning up after itself */
		LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
		if (w->in_use)
			saga_release_slot(w, true);
		LWLockRelease(SagaShmem->lock);
		ConditionVariableBroadcast(&SagaShmem->slots_cv);
	}
}

/*
 * Start a worker for a database; returns false if no slot was free, or
 * the postmaster has no room for another background worker.  Called with
 * the lock held exclusively, and returns with it so; but it lets the lock
 * go while it registers the worker, which takes the postmaster's
 * BackgroundWorkerLock and signals it: nobody waits for our lock meanwhile
 * (a committing publisher, a worker going idle).  The slot is ours from
 * the moment it is marked in use, and its generation, which the worker is
 * given, tells the worker that it is the one the slot was reserved for.
 * The caller rechecks whatever it looks at after the call.
 */
static bool
launcher_start_worker(SagaDatabase *db)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	SagaWorkerSlot *w = NULL;
	Oid			dboid = db->dboid;
	uint64		generation;
	bool		registered;
	int			slot;

	for (slot = 0; slot < SagaShmem->max_workers; slot++)
	{
		if (!SagaShmem->workers[slot].in_use && worker_handles[slot] == NULL)
		{
			w = &SagaShmem->workers[slot];
			break;
		}
	}
	if (w == NULL)
		return false;

	generation = w->generation + 1;
	memset(w, 0, sizeof(*w));
	w->generation = generation;
	w->in_use = true;
	w->dboid = dboid;
	LWLockRelease(SagaShmem->lock);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "saga");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "saga_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "saga worker for database %u", dboid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "saga worker");
	bgw.bgw_main_arg = Int32GetDatum(slot);
	memcpy(bgw.bgw_extra, &generation, sizeof(generation));
	bgw.bgw_notify_pid = MyProcPid;
	registered = RegisterDynamicBackgroundWorker(&bgw, &handle);

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (!registered)
	{
		/* only the launcher reserves slots: it is still ours */
		if (w->in_use && w->generation == generation)
			w->in_use = false;
		return false;
	}
	worker_handles[slot] = handle;
	return true;
}

/*
 * The restores that hold databases' workers back (lifecycle.c): end the hold
 * of a session that is gone, or that has been idle for SAGA_RESTORE_IDLE_MS.
 * Idle means running no statement (pg_stat_activity's state is idle, or
 * idle in transaction; a COPY counts as running until the client has sent
 * all of its data) and ending no transaction: the session counts those it
 * ends, and the launcher compares the count with what it saw last time.  A
 * session whose track_activities is off shows no state; it is judged by
 * the transactions it ends alone.  Returns how long the launcher may sleep
 * before it must look again.
 */
static long
launcher_check_restores(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		any = false;
	int			nbackends;
	int			i;

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	for (i = 0; i < SagaShmem->max_databases && !any; i++)
		any = SagaShmem->databases[i].state != SAGA_DB_UNUSED &&
			SagaShmem->databases[i].restore_pid != 0;
	LWLockRelease(SagaShmem->lock);
	if (!any)
		return SAGA_RESCAN_INTERVAL_MS;

	/* a fresh copy of every backend's status, as pg_stat_activity reads it */
	pgstat_clear_backend_activity_snapshot();
	nbackends = pgstat_fetch_stat_numbackends();

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	for (i = 0; i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];
		PgBackendStatus *session = NULL;
		bool		busy;
		int			b;

		if (db->state == SAGA_DB_UNUSED || db->restore_pid == 0)
			continue;
		for (b = 1; b <= nbackends && session == NULL; b++)
		{
			LocalPgBackendStatus *entry = pgstat_fetch_stat_local_beentry(b);

			if (entry != NULL && entry->backendStatus.st_procpid == db->restore_pid)
				session = &entry->backendStatus;
		}

		busy = db->restore_xacts != db->restore_seen_xacts;
		if (session != NULL)
			busy = busy ||
				session->st_state == STATE_RUNNING ||
				session->st_state == STATE_FASTPATH ||
				session->st_state == STATE_UNDEFINED;
		db->restore_seen_xacts = db->restore_xacts;
		if (busy)
			db->restore_busy_at = now;

		if (session == NULL)
			db->restore_pid = 0;	/* gone without saying so */
		else if (TimestampDifferenceExceeds(db->restore_busy_at, now, SAGA_RESTORE_IDLE_MS))
		{
			ereport(LOG,
					(errmsg("saga launcher: the workers of database %u start: the session that restored into it has been idle for %d s",
							db->dboid, SAGA_RESTORE_IDLE_MS / 1000),
					 errdetail("Session %d created the extension with check_function_bodies off, as a restore does.",
							   db->restore_pid)));
			db->restore_pid = 0;
		}
	}
	LWLockRelease(SagaShmem->lock);
	pgstat_clear_backend_activity_snapshot();
	return SAGA_RESTORE_CHECK_MS;
}

/*
 * How many workers a database wants: saga.workers where the extension is
 * installed, one to look where it may be, -1 where none is to run.
 */
static int
database_wants(SagaDatabase *db)
{
	switch (db->state)
	{
		case SAGA_DB_UNKNOWN:
			return saga_workers > 0 ? 1 : 0;
		case SAGA_DB_ACTIVE:
			return saga_workers;
		default:
			return -1;
	}
}

/* May the launcher start a worker for this database now? */
static bool
database_may_start(SagaDatabase *db)
{
	return database_wants(db) > 0 && db->restore_pid == 0 && !db->no_connections;
}

/*
 * The workers of a database that have not been asked to stop (the caller
 * holds the lock).
 */
static int
database_workers(Oid dboid)
{
	int			n = 0;
	int			j;

	for (j = 0; j < SagaShmem->max_workers; j++)
	{
		SagaWorkerSlot *w = &SagaShmem->workers[j];

		if (w->in_use && w->dboid == dboid && !w->stop_requested)
			n++;
	}
	return n;
}

/*
 * Make room for databases that have no worker, when every slot is taken:
 * ask the last worker of the database that has the most (two at least) to
 * stop, one for each database waiting that is not already getting the slot
 * of a worker on its way out.  Its slot goes to one of them when it has
 * exited, since launcher_reconcile() gives first workers before second
 * ones.  The listener is the last one asked.  The caller holds the lock.
 */
static void
launcher_make_room(int starved)
{
	int			stopping = 0;
	int			j;

	for (j = 0; j < SagaShmem->max_workers; j++)
		if (SagaShmem->workers[j].in_use && SagaShmem->workers[j].stop_requested)
			stopping++;

	while (stopping < starved)
	{
		SagaDatabase *donor = NULL;
		int			donor_have = 1;
		SagaWorkerSlot *victim = NULL;
		int			i;

		for (i = 0; i < SagaShmem->max_databases; i++)
		{
			SagaDatabase *db = &SagaShmem->databases[i];
			int			have;

			if (db->state != SAGA_DB_ACTIVE)
				continue;
			have = database_workers(db->dboid);
			if (have > donor_have)
			{
				donor = db;
				donor_have = have;
			}
		}
		if (donor == NULL)
			return;

		for (j = 0; j < SagaShmem->max_workers; j++)
		{
			SagaWorkerSlot *w = &SagaShmem->workers[j];

			if (!w->in_use || w->dboid != donor->dboid || w->stop_requested)
				continue;
			if (victim == NULL || j != donor->listener)
				victim = w;
		}
		Assert(victim != NULL);
		ereport(LOG,
				(errmsg("saga launcher: stopping one of the %d workers of database %u, for a database that has none",
						donor_have, donor->dboid)));
		victim->stop_requested = true;
		if (victim->latch)
			SetLatch(victim->latch);
		stopping++;
	}
}

/*
 * The names of the databases in a list of oids, for a message: "a, b, c".
 * Called outside a transaction; the launcher reads the shared catalog.
 */
static char *
database_names(List *dboids)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	StartTransactionCommand();
	foreach(lc, dboids)
	{
		char	   *name = get_database_name(lfirst_oid(lc));

		if (buf.len > 0)
			appendStringInfoString(&buf, ", ");
		if (name != NULL)
			appendStringInfoString(&buf, quote_identifier(name));
		else
			appendStringInfo(&buf, "%u", lfirst_oid(lc));
	}
	CommitTransactionCommand();
	return buf.data;
}

/*
 * Bring each database's workers to the number wanted; returns how long the
 * launcher may sleep before a delayed restart is due.  A database that a
 * restore holds back gets none, nor one that does not accept connections.
 *
 * When there are not slots enough (max_worker_processes is shared with
 * every other background worker and parallel query), every database gets
 * its first worker before any gets a second, and so on: the workers are
 * started level by level.  A database left with none even so (all slots
 * taken, by our second workers among others) gets one of theirs (see
 * launcher_make_room()), shows in saga_databases, and is named in a
 * WARNING repeated every SAGA_STARVED_WARN_MS while it lasts.
 */
#define SAGA_STARVED_WARN_MS	(60 * 1000)

static long
launcher_reconcile(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = SAGA_RESCAN_INTERVAL_MS;
	bool		out_of_slots = false;
	static bool warned_slots = false;
	static TimestampTz warned_starved_at = 0;
	static List *warned_starved = NIL;	/* named then, in TopMemoryContext */
	List	   *starved = NIL;
	int			missing = 0;
	int			level;
	int			i;

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);

	/* saga.workers was lowered: ask the surplus to go */
	for (i = 0; i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];
		int			want = database_wants(db);
		int			have = 0;
		int			j;

		if (want < 0 || db->restore_pid != 0)
			continue;
		for (j = 0; j < SagaShmem->max_workers; j++)
		{
			SagaWorkerSlot *w = &SagaShmem->workers[j];

			if (!w->in_use || w->dboid != db->dboid || w->stop_requested)
				continue;
			if (have >= want)
			{
				w->stop_requested = true;
				if (w->latch)
					SetLatch(w->latch);
				continue;
			}
			have++;
		}
	}

	/* the first worker of each database, then the second, ... */
	for (level = 1; level <= saga_workers && !out_of_slots; level++)
	{
		for (i = 0; i < SagaShmem->max_databases && !out_of_slots; i++)
		{
			SagaDatabase *db = &SagaShmem->databases[i];

			if (!database_may_start(db) || database_wants(db) < level ||
				database_workers(db->dboid) >= level)
				continue;
			if (db->restart_after > now)
			{
				sleep_ms = Min(sleep_ms,
							   TimestampDifferenceMilliseconds(now, db->restart_after) + 1);
				continue;
			}
			if (!launcher_start_worker(db))
				out_of_slots = true;
		}
	}

	/* who is short of workers for want of a slot */
	for (i = 0; i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];
		int			have;

		if (db->state == SAGA_DB_UNUSED)
			continue;
		have = database_workers(db->dboid);
		if (!out_of_slots || !database_may_start(db) ||
			have >= database_wants(db) || db->restart_after > now)
		{
			db->starved_since = 0;
			continue;
		}
		if (db->starved_since == 0)
			db->starved_since = now;
		missing += database_wants(db) - have;
		if (have == 0)
			starved = lappend_oid(starved, db->dboid);
	}
	if (starved != NIL)
		launcher_make_room(list_length(starved));
	LWLockRelease(SagaShmem->lock);

	if (starved != NIL)
	{
		ListCell   *lc;
		bool		news = false;

		foreach(lc, starved)
			news = news || !list_member_oid(warned_starved, lfirst_oid(lc));
		if (news ||
			TimestampDifferenceExceeds(warned_starved_at, now, SAGA_STARVED_WARN_MS))
		{
			MemoryContext old;

			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("saga launcher: no worker for %d database(s): %s",
							list_length(starved), database_names(starved)),
					 errdetail("Every background worker slot (max_worker_processes = %d) is taken; their sagas wait. A database gets up to saga.workers (%d) workers, and one at least before any gets more.",
							   max_worker_processes, saga_workers),
					 errhint("Raise max_worker_processes (this needs a restart) by %d at least, by %d to give every database saga.workers; or lower saga.workers. The view saga_databases shows what each database has.",
							 list_length(starved), missing)));
			warned_starved_at = now;
			old = MemoryContextSwitchTo(TopMemoryContext);
			list_free(warned_starved);
			warned_starved = list_copy(starved);
			MemoryContextSwitchTo(old);
		}
		sleep_ms = Min(sleep_ms, 1000);
	}
	else if (warned_starved != NIL)
	{
		ereport(LOG,
				(errmsg("saga launcher: every database with the extension has a worker again")));
		list_free(warned_starved);
		warned_starved = NIL;
	}

	if (out_of_slots)
	{
		if (!warned_slots && starved == NIL)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("saga launcher: out of background worker slots, %d saga worker(s) short", missing),
					 errhint("Raise max_worker_processes (this needs a restart), or lower saga.workers.")));
		warned_slots = true;
		sleep_ms = Min(sleep_ms, 1000);
	}
	else
		warned_slots = false;
	list_free(starved);
	return sleep_ms;
}

/*
 * The launcher's entry point.  It connects to no database's data (only
 * the shared catalogs), then loops: rescan pg_database when asked or once
 * in a while (launcher_rescan), reap exited workers (launcher_reap),
 * release restores gone quiet (launcher_check_restores) and start or stop
 * workers until each database has what it should (launcher_reconcile);
 * then sleep on its latch until one of those has something to do.
 */
void
saga_launcher_main(Datum main_arg)
{
	TimestampTz last_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("saga launcher");

	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											sizeof(BackgroundWorkerHandle *) *
											SagaShmem->max_workers);

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	SagaShmem->launcher_pid = MyProcPid;
	SagaShmem->launcher_latch = MyLatch;
	SagaShmem->rescan = true;
	LWLockRelease(SagaShmem->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	ereport(LOG, (errmsg("saga launcher started")));

	for (;;)
	{
		bool		rescan;
		long		restore_ms;
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		launcher_reap();

		LWLockAcquire(SagaShmem->lock, LW_SHARED);
		rescan = SagaShmem->rescan;
		LWLockRelease(SagaShmem->lock);
		if (rescan ||
			TimestampDifferenceExceeds(last_scan, GetCurrentTimestamp(),
									   SAGA_RESCAN_INTERVAL_MS))
		{
			launcher_rescan();
			last_scan = GetCurrentTimestamp();
		}

		restore_ms = launcher_check_restores();
		sleep_ms = launcher_reconcile();
		sleep_ms = Min(sleep_ms, restore_ms);

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

PG_FUNCTION_INFO_V1(saga_database_status);

/*
 * saga_database_status(): one row for each database where the extension is
 * installed or may be (the launcher has not been able to look yet), from
 * any database: its oid, what the launcher knows (installed, unknown,
 * paused), its workers and how many it wants, and in words whether it is
 * served and if not why, with what to do; since: when it has been short of
 * workers for want of a background worker slot.
 */
Datum
saga_database_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (SagaShmem == NULL)
		return (Datum) 0;

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	for (i = 0; i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];
		Datum		values[6];
		bool		nulls[6] = {0};
		const char *state;
		char		status[256];
		int			have;
		int			want;

		switch (db->state)
		{
			case SAGA_DB_ACTIVE:
				state = "installed";
				break;
			case SAGA_DB_UNKNOWN:
				state = "unknown";
				break;
			case SAGA_DB_PAUSED:
				state = "paused";
				break;
			default:
				continue;
		}
		have = database_workers(db->dboid);
		want = Max(database_wants(db), 0);

		if (db->state == SAGA_DB_PAUSED)
			snprintf(status, sizeof(status),
					 "paused: a command needs the database without sessions");
		else if (db->restore_pid != 0)
			snprintf(status, sizeof(status),
					 "held back: session %d is restoring into it", db->restore_pid);
		else if (db->no_connections && have < want)
			snprintf(status, sizeof(status),
					 "no new worker: the database does not allow connections (ALTER DATABASE ... ALLOW_CONNECTIONS true)");
		else if (have >= want)
			snprintf(status, sizeof(status), "served");
		else if (db->starved_since != 0)
			snprintf(status, sizeof(status),
					 "%s: no free background worker slot (raise max_worker_processes, or lower saga.workers)",
					 have == 0 ? "no worker" : "short of workers");
		else if (db->restart_after > now)
			snprintf(status, sizeof(status),
					 "restarting: its last worker failed (see saga_workers), the next starts in %ld ms",
					 TimestampDifferenceMilliseconds(now, db->restart_after));
		else
			snprintf(status, sizeof(status), "starting");

		values[0] = ObjectIdGetDatum(db->dboid);
		values[1] = CStringGetTextDatum(state);
		values[2] = Int32GetDatum(have);
		values[3] = Int32GetDatum(want);
		values[4] = CStringGetTextDatum(status);
		values[5] = TimestampTzGetDatum(db->starved_since);
		nulls[5] = db->starved_since == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(SagaShmem->lock);
	return (Datum) 0;
}
