/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Who is woken when a transaction that touched sagas commits.
 *
 * Three kinds of sleeper wait on a commit:
 *	- database workers, for events that were published: a NOTIFY on the
 *	  channel "saga" if the worker of this database that listens is idle
 *	  when the transaction commits and no other transaction has sent one
 *	  since it went idle, else nothing (busy workers will find the events
 *	  themselves).  Sending NOTIFY that rarely matters: a transaction that
 *	  has NOTIFYed takes a database-wide lock in PreCommit_Notify, which
 *	  would serialise committing publishers under load.  A worker that is
 *	  idle when we commit but was not sent our NOTIFY (another transaction
 *	  claimed the sending, or the worker went idle after our pre-commit
 *	  look) is woken through its latch just after the commit, so no
 *	  wake-up is lost.  A worker counts as busy from its batch's claim
 *	  of work on (worker.c): wake-ups go to the idle ones, and a NOTIFY
 *	  sent to the listener just before it found other work is passed on
 *	  to an idle worker's latch, by the sender or the listener;
 *	- sessions in saga_await(), for sagas that finished: the condition
 *	  variable the saga's id hashes to is broadcast after the commit;
 *	- the launcher, after CREATE EXTENSION saga, after CREATE or DROP
 *	  DATABASE, after a transaction that paused a database's workers
 *	  (see utility.c), and when a restore stops holding them back (see
 *	  saga_wake_launcher() below).
 * Workers publish too, but never wake anybody for their own events: they
 * loop until there is nothing left to deliver.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "saga.h"

static bool published_in_xact = false;
static bool notified_in_xact = false;
static bool extension_created_in_xact = false;
static bool rescan_at_xact_end = false;
static List *paused_in_xact = NIL;	/* database oids, in TopMemoryContext */
static List *dropped_in_xact = NIL; /* likewise */
static uint64 finished_cvs_in_xact = 0;	/* bit i: broadcast await_cv[i] */

static void restore_at_xact_end(bool commit);

/*
 * Which of the SAGA_AWAIT_CVS condition variables a saga's waiters sleep
 * on: sagas share them, so waiters recheck their saga when woken.
 */
static int
await_cv_index(int64 saga_id)
{
	return (int) ((uint64) saga_id % SAGA_AWAIT_CVS);
}

/*
 * The condition variable saga_await() sleeps on for a saga, or NULL when
 * the library was not preloaded (then it polls).
 */
ConditionVariable *
saga_await_cv(int64 saga_id)
{
	if (SagaShmem == NULL)
		return NULL;
	return &SagaShmem->await_cv[await_cv_index(saga_id)];
}

/* Work became due (an event, a saga to start or resume): count it. */
static uint64 work_noted = 0;

/*
 * Work became due in this transaction (an event published, a saga started
 * or resumed): at commit, wake a worker (saga_xact_callback); in a
 * batch, the dispatcher and the step runner report how much their work
 * published (saga_work_noted_count()), and the batch driver runs another
 * round.
 */
void
saga_note_published(void)
{
	published_in_xact = true;
	work_noted++;
}

/*
 * How much work this backend has made due so far (saga_note_published()
 * calls): the difference before and after some work is what it published.
 */
uint64
saga_work_noted_count(void)
{
	return work_noted;
}

/* A saga ended in this transaction: at commit, wake who awaits it. */
void
saga_note_finished(int64 saga_id)
{
	finished_cvs_in_xact |= UINT64CONST(1) << await_cv_index(saga_id);
}

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
 * Should this committed transaction set the latch of an idle worker?  If
 * it sent no NOTIFY, whenever a worker is idle.  If it sent one, only if
 * the listening worker it went to is no longer idle: it found other work
 * since our look (saga_worker_found_work() in worker.c), and reads the
 * NOTIFY only once that batch is done, which may take as long as a slow
 * handler takes; or if it has exited since.
 */
static bool
should_wake_idle_worker(bool notified)
{
	SagaDatabase *db;
	bool		wake = false;

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	db = saga_find_database(MyDatabaseId, false);
	if (db != NULL && pg_atomic_read_u32(&db->idle_workers) > 0)
		wake = !notified ||
			db->listener < 0 || !SagaShmem->workers[db->listener].idle;
	LWLockRelease(SagaShmem->lock);
	return wake;
}

/*
 * Should this committing transaction send the NOTIFY?  Only if the
 * database's listening worker is idle, and only the first of the
 * transactions that find it so: the worker then finds all of their events,
 * so one NOTIFY is enough until a worker goes idle again (it clears the
 * flag then).  Those that do not send it still wake an idle worker through
 * its latch after their commit, which also covers a NOTIFY that never came
 * (its sender failed to commit).
 */
static bool
claim_notify(void)
{
	SagaDatabase *db;
	bool		mine = false;

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	db = saga_find_database(MyDatabaseId, false);
	if (db != NULL && db->listener >= 0 && SagaShmem->workers[db->listener].idle &&
		pg_atomic_read_u32(&db->notify_sent) == 0)
		mine = pg_atomic_exchange_u32(&db->notify_sent, 1) == 0;
	LWLockRelease(SagaShmem->lock);
	return mine;
}

/*
 * At the end of a transaction: carry out, or drop, what it asked of the
 * databases' lifecycle (forget dropped ones, resume paused ones, rescan),
 * and forget what it noted for the wake-up.
 */
static void
reset_xact_state(bool commit)
{
	ListCell   *lc;

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
	published_in_xact = false;
	notified_in_xact = false;
	extension_created_in_xact = false;
	finished_cvs_in_xact = 0;
}

/*
 * The transaction side of the wake-up protocol.  Before commit, a
 * transaction that made work due NOTIFYs, unless a NOTIFY is on its way
 * already (claim_notify), so that commits under load do not all queue on
 * the NOTIFY lock; after commit, it sets the latch of an idle worker when
 * the NOTIFY alone would not wake one, wakes saga_await()ers of the sagas
 * it ended, and adds its counters.  Either way it settles what it asked
 * of the databases' lifecycle and of a restore.
 */
static void
saga_xact_callback(XactEvent event, void *arg)
{
	int			i;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (published_in_xact && SagaShmem != NULL && MySagaWorker == NULL &&
				claim_notify())
			{
				Async_Notify(SAGA_NOTIFY_CHANNEL, NULL);
				notified_in_xact = true;
			}
			break;

		case XACT_EVENT_COMMIT:
			if (SagaShmem != NULL)
			{
				if (notified_in_xact)
					saga_note_notify_committed(MyDatabaseId);
				if (published_in_xact && MySagaWorker == NULL &&
					should_wake_idle_worker(notified_in_xact))
					saga_wake_idle_worker(MyDatabaseId);
				for (i = 0; i < SAGA_AWAIT_CVS; i++)
					if (finished_cvs_in_xact & (UINT64CONST(1) << i))
						ConditionVariableBroadcast(&SagaShmem->await_cv[i]);
				saga_flush_counts(true);
				if (extension_created_in_xact)
					saga_mark_database(MyDatabaseId, SAGA_DB_UNKNOWN);
			}
			reset_xact_state(true);
			restore_at_xact_end(true);
			break;

		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			saga_flush_counts(false);
			reset_xact_state(false);
			restore_at_xact_end(false);
			break;

		case XACT_EVENT_PREPARE:
			saga_flush_counts(false);
			reset_xact_state(false);
			restore_at_xact_end(true);
			break;

		default:
			break;
	}
}

/* Install saga_xact_callback() in this backend (from _PG_init()). */
void
saga_register_xact_callbacks(void)
{
	RegisterXactCallback(saga_xact_callback, NULL);
}

PG_FUNCTION_INFO_V1(saga_wake_launcher);

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
