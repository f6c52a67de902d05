/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  A database's life as the launcher sees it: probed, active, absent,
 *	  paused for DDL, forgotten when dropped, held back by a restore.
 *
 * The launcher keeps one entry per database (shmem.c) in a state
 * (SagaDbState): UNKNOWN until a worker has looked whether the extension
 * is there, then ACTIVE (keep its workers running) or ABSENT (leave it
 * alone); PAUSED while a command needs the database without sessions
 * (DROP DATABASE, ALTER DATABASE RENAME, CREATE DATABASE ... TEMPLATE,
 * DROP or ALTER EXTENSION: utility.c), until that command's transaction
 * ends.  Who may change a state: the launcher (new and vanished
 * databases), its workers (what they found: saga_report_probe()), and
 * sessions (CREATE EXTENSION at commit; the commands that pause the
 * workers; a restore's hold).  A worker's findings can be older than a
 * session's news, so each entry has a generation that sessions bump and
 * that a worker's report must match.
 *
 * What a transaction asks (pause, forget, rescan, "the extension was
 * created here") is carried out when it ends: saga_lifecycle_at_xact_end(),
 * called by the transaction callback in wakeup.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "saga.h"
#include "lifecycle.h"
#include "shmem.h"


/* How long DROP DATABASE and friends wait for a database's workers. */
#define SAGA_PAUSE_TIMEOUT_MS	10000

/* What this transaction asked, carried out when it ends. */
static bool extension_created_in_xact = false;
static bool rescan_at_xact_end = false;
static List *paused_in_xact = NIL;	/* database oids, in TopMemoryContext */
static List *dropped_in_xact = NIL; /* likewise */

static void restore_at_xact_end(bool commit);

/* ------------------------------------------------------------------------
 * A database's state in shared memory
 * ------------------------------------------------------------------------
 */

/*
 * Record what a worker found out about its database, or what a session
 * learned (CREATE EXTENSION at commit), and let the launcher act on it.
 * Marking a database UNKNOWN also makes any look at it that began before
 * stale (see saga_report_probe()).
 */
void
saga_mark_database(Oid dboid, SagaDbState state)
{
	SagaDatabase *db;

	if (SagaShmem == NULL)
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, true);
	if (db != NULL && state == SAGA_DB_UNKNOWN)
		db->generation++;
	if (db != NULL && db->state != SAGA_DB_PAUSED)
	{
		if (state == SAGA_DB_UNKNOWN && db->state == SAGA_DB_ACTIVE)
			;					/* already served: nothing to learn */
		else
			db->state = state;
	}
	LWLockRelease(SagaShmem->lock);
	saga_wake_launcher_now(false);
}

/*
 * The generation of a database's entry, read by a worker before it looks
 * for the extension.  CREATE EXTENSION marks the database UNKNOWN after its
 * commit has become visible, and that bumps the generation: so a worker
 * whose catalog snapshot was taken too early to see the extension finds
 * the generation changed when it reports, and its report is dropped.
 */
uint64
saga_database_generation(Oid dboid)
{
	SagaDatabase *db;
	uint64		generation = 0;

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	db = saga_find_database(dboid, false);
	if (db != NULL)
		generation = db->generation;
	LWLockRelease(SagaShmem->lock);
	return generation;
}

/*
 * A worker's report on its first look at the database: the extension is
 * installed (ACTIVE: the launcher starts the other workers) or not (ABSENT:
 * none is started until CREATE EXTENSION).  ABSENT is recorded only if
 * nothing marked the database since the worker read the generation before
 * its look, or CREATE EXTENSION committing meanwhile would be overwritten
 * and the database left unserved until a restart; the state then stays
 * UNKNOWN and the launcher starts another worker to look again.  Reporting
 * ACTIVE needs no such check: a worker that wrongly believes the extension
 * is there finds out at its next batch and leaves.
 */
void
saga_report_probe(Oid dboid, bool installed, uint64 generation)
{
	SagaDatabase *db;

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, true);
	if (db != NULL && db->state != SAGA_DB_PAUSED)
	{
		if (installed)
			db->state = SAGA_DB_ACTIVE;
		else if (db->generation == generation)
			db->state = SAGA_DB_ABSENT;
	}
	LWLockRelease(SagaShmem->lock);
	saga_wake_launcher_now(false);
}

/*
 * How many worker slots a database's workers hold (the caller holds the
 * lock).
 */
static int
count_workers(Oid dboid)
{
	int			i;
	int			n = 0;

	for (i = 0; i < SagaShmem->max_workers; i++)
		if (SagaShmem->workers[i].in_use && SagaShmem->workers[i].dboid == dboid)
			n++;
	return n;
}

/* Ask every worker of a database to exit (the caller holds the lock). */
static void
stop_workers(Oid dboid)
{
	int			i;

	for (i = 0; i < SagaShmem->max_workers; i++)
	{
		SagaWorkerSlot *w = &SagaShmem->workers[i];

		if (w->in_use && w->dboid == dboid)
		{
			w->stop_requested = true;
			if (w->latch)
				SetLatch(w->latch);
		}
	}
}

/*
 * Stop every worker of a database and keep the launcher from starting new
 * ones, so that a command needing the database to itself (DROP DATABASE,
 * ALTER DATABASE RENAME, CREATE DATABASE ... TEMPLATE) can go ahead.
 * Waits up to SAGA_PAUSE_TIMEOUT_MS; the command itself then reports any
 * session still connected.
 */
void
saga_pause_database(Oid dboid)
{
	SagaDatabase *db;
	TimestampTz deadline;

	if (SagaShmem == NULL || !OidIsValid(dboid))
		return;

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, true);
	if (db != NULL)
	{
		db->state = SAGA_DB_PAUSED;
		db->generation++;
	}
	stop_workers(dboid);
	LWLockRelease(SagaShmem->lock);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   SAGA_PAUSE_TIMEOUT_MS);
	ConditionVariablePrepareToSleep(&SagaShmem->slots_cv);
	for (;;)
	{
		int			n;
		long		remaining;

		LWLockAcquire(SagaShmem->lock, LW_SHARED);
		n = count_workers(dboid);
		LWLockRelease(SagaShmem->lock);
		if (n == 0)
			break;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
		{
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("%d saga worker(s) of database %u did not stop in time", n, dboid)));
			break;
		}
		ConditionVariableTimedSleep(&SagaShmem->slots_cv, Min(remaining, 100),
									PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/*
 * Forget a database that was dropped (called once the drop committed).
 */
void
saga_forget_database(Oid dboid)
{
	SagaDatabase *db;

	if (SagaShmem == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, false);
	if (db != NULL)
		db->state = SAGA_DB_UNUSED;
	LWLockRelease(SagaShmem->lock);
}

/*
 * Undo saga_pause_database(): the launcher looks at the database afresh
 * (it may be gone, renamed, or still have the extension).
 */
void
saga_resume_database(Oid dboid)
{
	SagaDatabase *db;

	if (SagaShmem == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, false);
	if (db != NULL && db->state == SAGA_DB_PAUSED)
	{
		db->state = SAGA_DB_UNKNOWN;
		db->generation++;
	}
	LWLockRelease(SagaShmem->lock);
	saga_wake_launcher_now(true);
}

/*
 * This session creates the extension as a restore does (see below): hold
 * the database's workers back, asking any that run (one looking for the
 * extension, say) to leave; the launcher starts none while the hold lasts.
 * Unlike saga_pause_database() this does not wait for them: none of them
 * can see the extension before this transaction commits, and each looks
 * at stop_requested before its first batch.
 */
void
saga_hold_for_restore(Oid dboid)
{
	SagaDatabase *db;

	if (SagaShmem == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, true);
	if (db != NULL)
	{
		db->restore_pid = MyProcPid;
		db->restore_xacts = 0;
		db->restore_seen_xacts = 0;
		db->restore_busy_at = GetCurrentTimestamp();
	}
	stop_workers(dboid);
	LWLockRelease(SagaShmem->lock);
}

/*
 * The restoring session ended a transaction, and goes on restoring: count
 * it, for the launcher.  Returns false if the session no longer holds the
 * database (the launcher found it idle and ended the hold).
 */
bool
saga_restore_xact_ended(Oid dboid)
{
	SagaDatabase *db;
	bool		held = false;

	if (SagaShmem == NULL)
		return false;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, false);
	if (db != NULL && db->restore_pid == MyProcPid)
	{
		db->restore_xacts++;
		held = true;
	}
	LWLockRelease(SagaShmem->lock);
	return held;
}

/*
 * End the hold that session pid has on a database, if it still has it, and
 * let the launcher start the database's workers.
 */
void
saga_release_restore(Oid dboid, int pid)
{
	SagaDatabase *db;
	bool		released = false;

	if (SagaShmem == NULL)
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	db = saga_find_database(dboid, false);
	if (db != NULL && db->restore_pid == pid)
	{
		db->restore_pid = 0;
		released = true;
	}
	LWLockRelease(SagaShmem->lock);
	if (released)
		saga_wake_launcher_now(false);
}

/* ------------------------------------------------------------------------
 * What a transaction asks, carried out when it ends
 * ------------------------------------------------------------------------
 */

/*
 * CREATE EXTENSION saga ran in this transaction: at commit, have the
 * launcher look at this database again.
 */
void
saga_note_extension_created(void)
{
	extension_created_in_xact = true;
}

/* This transaction paused a database's workers (DROP DATABASE ...). */
void
saga_resume_at_xact_end(Oid dboid)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	paused_in_xact = lappend_oid(paused_in_xact, dboid);
	MemoryContextSwitchTo(old);
}

/* This transaction dropped a database: forget it if it commits. */
void
saga_forget_at_commit(Oid dboid)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	dropped_in_xact = lappend_oid(dropped_in_xact, dboid);
	MemoryContextSwitchTo(old);
}

/* This transaction created or changed databases: rescan at its end. */
void
saga_wake_launcher_at_xact_end(void)
{
	rescan_at_xact_end = true;
}

/*
 * A transaction ends (the transaction callback in wakeup.c): on commit,
 * have the launcher probe a database where the extension was created,
 * forget the databases it dropped; either way, resume those it paused and
 * wake the launcher if it asked for a rescan.  restore_commit says whether
 * a restore's hold is to be judged as after a commit (also at PREPARE).
 */
void
saga_lifecycle_at_xact_end(bool commit, bool restore_commit)
{
	ListCell   *lc;

	if (commit && extension_created_in_xact && SagaShmem != NULL)
		saga_mark_database(MyDatabaseId, SAGA_DB_UNKNOWN);
	extension_created_in_xact = false;
	/* forget dropped databases first, so that resuming them is a no-op */
	if (commit)
		foreach(lc, dropped_in_xact)
			saga_forget_database(lfirst_oid(lc));
	list_free(dropped_in_xact);
	dropped_in_xact = NIL;
	foreach(lc, paused_in_xact)
		saga_resume_database(lfirst_oid(lc));
	list_free(paused_in_xact);
	paused_in_xact = NIL;
	if (rescan_at_xact_end)
		saga_wake_launcher_now(true);
	rescan_at_xact_end = false;
	restore_at_xact_end(restore_commit);
}

/* ------------------------------------------------------------------------
 * Restores
 * ------------------------------------------------------------------------
 */

/*
 * Restores.  pg_dump's output turns check_function_bodies off before it
 * creates extensions (an ordinary CREATE EXTENSION does not; the utility
 * hook looks, since PostgreSQL turns it off itself while it runs the
 * install script), then loads the extension's tables with COPY, each in
 * its own transaction unless it is restored with --single-transaction, and
 * the users' tables, indexes and triggers after them.  Workers started at
 * CREATE EXTENSION's commit would run the restored sagas against
 * half-loaded tables (no paused consumers yet, no products, sequences not
 * yet set).
 *
 * So a session that creates the extension with check_function_bodies off
 * holds the database's workers back (saga_hold_for_restore()) for as long
 * as it goes on restoring, which is judged thus.  The hold ends
 *	- when the session ends;
 *	- when a transaction of the session ends with check_function_bodies on
 *	  (it is not restoring any more);
 *	- when the transaction that created the extension rolls back (there is
 *	  nothing to protect);
 *	- when the launcher finds the session idle for SAGA_RESTORE_IDLE_MS:
 *	  running no statement (idle, or idle in a transaction) and having ended
 *	  no transaction all that time (launcher.c).  A restore sends its
 *	  statements one after the other, so it is never idle that long; a
 *	  pooled connection that created the extension and went back to the
 *	  pool is, and its database is served soon after.
 * A session that keeps running statements with check_function_bodies off
 * without pause is taken for a restore for as long as it does so.
 */
static bool creating_in_restore = false;	/* in CREATE EXTENSION, restore mode */
static Oid	restore_hold_db = InvalidOid;	/* the database this session holds */
static bool restore_hold_in_xact = false;	/* ... taken by this transaction */

/* The utility hook: a CREATE EXTENSION starts or ends (restoring or not). */
void
saga_note_create_extension(bool restoring)
{
	creating_in_restore = restoring;
}

/* The session ends: so does its hold. */
static void
end_of_restore(int code, Datum arg)
{
	if (OidIsValid(restore_hold_db))
		saga_release_restore(restore_hold_db, MyProcPid);
	restore_hold_db = InvalidOid;
}

/* A transaction ends: does this session still hold its database? */
static void
restore_at_xact_end(bool commit)
{
	bool		created = restore_hold_in_xact;

	creating_in_restore = false;
	restore_hold_in_xact = false;
	if (!OidIsValid(restore_hold_db))
		return;
	if (check_function_bodies || (!commit && created))
	{
		saga_release_restore(restore_hold_db, MyProcPid);
		restore_hold_db = InvalidOid;
	}
	else if (!saga_restore_xact_ended(restore_hold_db))
		restore_hold_db = InvalidOid;	/* the launcher ended it */
}

PG_FUNCTION_INFO_V1(saga_wake_launcher);

/*
 * saga_wake_launcher(): called by the extension's install script, so that
 * the launcher starts this database's workers once CREATE EXTENSION has
 * committed (not before: a worker would not see the extension yet); in a
 * restore, once the restore has ended (see above).
 */
Datum
saga_wake_launcher(PG_FUNCTION_ARGS)
{
	static bool exit_hook_set = false;

	saga_note_extension_created();
	if (creating_in_restore && SagaShmem != NULL)
	{
		if (!exit_hook_set)
		{
			before_shmem_exit(end_of_restore, (Datum) 0);
			exit_hook_set = true;
		}
		saga_hold_for_restore(MyDatabaseId);
		restore_hold_db = MyDatabaseId;
		restore_hold_in_xact = true;
	}
	PG_RETURN_VOID();
}
