/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: databases, worker slots, wake-ups.
 *
 * One SagaShared struct holds what the launcher knows of each database, one
 * slot per database worker, and the condition variables that saga_await()
 * sleeps on.  The lock protects the database entries and the slots' in_use,
 * dboid and stop_requested fields; counters and the idle flags are written
 * by their own worker only and read without the lock, as pg_stat_activity
 * reads PGPROC.
 *
 * Who may change a database's state: the launcher (new and vanished
 * databases), its workers (what they found: the extension is there or
 * not), and sessions (CREATE EXTENSION at commit; commands that pause the
 * workers, see utility.c; a restore's hold, see wakeup.c).  A worker's
 * findings can be older than a session's news, so each entry has a
 * generation that sessions bump and that a worker's report must match.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/wait_event.h"

#include "saga.h"

/* Entries for databases: those without the extension need one too. */
#define SAGA_MAX_DATABASES	1024

/* How long DROP DATABASE and friends wait for a database's workers. */
#define SAGA_PAUSE_TIMEOUT_MS	10000
/*
 * How long a database's workers take their work one delivery at a time,
 * each attempt counted in a transaction of its own first, after one of
 * them exited in the middle of a batch (worker.c).
 */
#define SAGA_CAREFUL_MS		5000

/* Delay before restarting a failed worker: doubles up to the maximum. */
#define SAGA_RESTART_DELAY_MS		1000
#define SAGA_RESTART_DELAY_MAX_MS	(60 * 1000)

SagaShared *SagaShmem = NULL;

/*
 * Bytes of shared memory: the header, the database entries and one worker
 * slot per max_worker_processes.
 */
static Size
saga_shmem_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(SagaShared));
	size = add_size(size, mul_size(SAGA_MAX_DATABASES, sizeof(SagaDatabase)));
	size = add_size(size, mul_size(max_worker_processes, sizeof(SagaWorkerSlot)));
	return size;
}

/* Ask the postmaster for our shared memory and our LWLock. */
void
saga_shmem_request(void)
{
	RequestAddinShmemSpace(saga_shmem_size());
	RequestNamedLWLockTranche("saga", 1);
}

/*
 * Create the shared state (or, after a crash, create it again: the
 * postmaster resets shared memory, and crashed tells the workers to work
 * carefully for a while).
 */
void
saga_shmem_startup(void)
{
	/* counted in the postmaster: a second time is after a crash */
	static int	times_made = 0;
	bool		found;
	int			i;

	times_made++;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	SagaShmem = ShmemInitStruct("saga", saga_shmem_size(), &found);
	if (!found)
	{
		char	   *p = (char *) SagaShmem;

		memset(SagaShmem, 0, saga_shmem_size());
		SagaShmem->lock = &(GetNamedLWLockTranche("saga"))->lock;
		SagaShmem->crashed = times_made > 1;
		SagaShmem->max_databases = SAGA_MAX_DATABASES;
		SagaShmem->max_workers = max_worker_processes;
		p += MAXALIGN(sizeof(SagaShared));
		SagaShmem->databases = (SagaDatabase *) p;
		p += SAGA_MAX_DATABASES * sizeof(SagaDatabase);
		SagaShmem->workers = (SagaWorkerSlot *) p;

		for (i = 0; i < SAGA_MAX_DATABASES; i++)
		{
			int			c;

			pg_atomic_init_u32(&SagaShmem->databases[i].idle_workers, 0);
			pg_atomic_init_u32(&SagaShmem->databases[i].notify_sent, 0);
			pg_atomic_init_u32(&SagaShmem->databases[i].notify_committed, 0);
			for (c = 0; c < SAGA_NCOUNTERS; c++)
				pg_atomic_init_u64(&SagaShmem->databases[i].counters[c], 0);
		}
		for (i = 0; i < SAGA_AWAIT_CVS; i++)
			ConditionVariableInit(&SagaShmem->await_cv[i]);
		ConditionVariableInit(&SagaShmem->slots_cv);
		SagaShmem->rescan = true;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Find the entry of a database; with create, make one (state UNKNOWN) if
 * there is none.  The caller holds the lock, exclusively to create.
 * Returns NULL if there is no entry (or no room for one).
 */
SagaDatabase *
saga_find_database(Oid dboid, bool create)
{
	SagaDatabase *free_entry = NULL;
	int			i;

	for (i = 0; i < SagaShmem->max_databases; i++)
	{
		SagaDatabase *db = &SagaShmem->databases[i];

		if (db->state == SAGA_DB_UNUSED)
		{
			if (free_entry == NULL)
				free_entry = db;
		}
		else if (db->dboid == dboid)
			return db;
	}
	if (!create || free_entry == NULL)
		return NULL;

	free_entry->dboid = dboid;
	free_entry->state = SAGA_DB_UNKNOWN;
	/* after a crash, the work that was running when it struck is suspect */
	free_entry->careful_until = SagaShmem->crashed ?
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SAGA_CAREFUL_MS) : 0;
	free_entry->restart_after = 0;
	free_entry->failures = 0;
	pg_atomic_write_u32(&free_entry->idle_workers, 0);
	pg_atomic_write_u32(&free_entry->notify_sent, 0);
	pg_atomic_write_u32(&free_entry->notify_committed, 0);
	free_entry->listener = -1;
	free_entry->no_connections = false;
	free_entry->starved_since = 0;
	/* not reset: a report on the entry's former database must not match */
	free_entry->generation++;
	free_entry->restore_pid = 0;
	free_entry->restore_xacts = 0;
	free_entry->restore_seen_xacts = 0;
	free_entry->restore_busy_at = 0;
	for (i = 0; i < SAGA_NCOUNTERS; i++)
		pg_atomic_write_u64(&free_entry->counters[i], 0);
	free_entry->last_error[0] = '\0';
	free_entry->last_error_code = 0;
	free_entry->last_error_at = 0;
	free_entry->last_error_pid = 0;
	return free_entry;
}

/*
 * Set the launcher's latch; with rescan, make it re-read pg_database first.
 */
void
saga_wake_launcher_now(bool rescan)
{
	Latch	   *latch;

	if (SagaShmem == NULL)
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (rescan)
		SagaShmem->rescan = true;
	latch = SagaShmem->launcher_latch;
	LWLockRelease(SagaShmem->lock);
	if (latch)
		SetLatch(latch);
}

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
 * Wake one idle worker of a database.  Read without the lock: at worst we
 * set the latch of a process that has just stopped being idle, or that
 * belongs to a slot reused a moment ago, which costs one spurious wake-up.
 * wake_requested tells the worker that the latch was set for work, not by
 * a notification that some other session sent (see worker.c).
 */
void
saga_wake_idle_worker(Oid dboid)
{
	int			i;

	for (i = 0; i < SagaShmem->max_workers; i++)
	{
		SagaWorkerSlot *w = &SagaShmem->workers[i];
		Latch	   *latch = w->latch;

		if (w->in_use && w->dboid == dboid && w->idle && latch != NULL)
		{
			w->wake_requested = true;
			pg_memory_barrier();
			SetLatch(latch);
			return;
		}
	}
}

/*
 * A transaction that sent the database's listener a NOTIFY (wakeup.c) has
 * committed: say so before the notification is signalled (the commit
 * callbacks run before AtCommit_Notify()), so that the listener can tell
 * it from the notifications that anybody may send on the channel.
 */
void
saga_note_notify_committed(Oid dboid)
{
	SagaDatabase *db;

	if (SagaShmem == NULL)
		return;
	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	db = saga_find_database(dboid, false);
	if (db != NULL)
		pg_atomic_write_u32(&db->notify_committed, 1);
	LWLockRelease(SagaShmem->lock);
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
 * This session creates the extension as a restore does (see wakeup.c): hold
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

/*
 * Free a worker's slot (the caller holds the lock exclusively).  An exit
 * that nobody asked for counts as a failure of the database and delays its
 * next worker, doubling the delay each time, so that a failing database
 * does not fill the log.
 */
void
saga_release_slot(SagaWorkerSlot *w, bool failed)
{
	SagaDatabase *db = saga_find_database(w->dboid, false);

	/* its database may be gone: have the launcher check pg_database */
	if (failed)
		SagaShmem->rescan = true;
	/* it may have died in a batch: count attempts before running them */
	if (failed && db != NULL)
		db->careful_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														SAGA_CAREFUL_MS);
	if (failed && !w->stop_requested && db != NULL &&
		(db->state == SAGA_DB_ACTIVE || db->state == SAGA_DB_UNKNOWN))
	{
		db->failures++;
		db->restart_after =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										Min(SAGA_RESTART_DELAY_MS << Min(db->failures - 1, 6),
											SAGA_RESTART_DELAY_MAX_MS));
	}
	w->in_use = false;
	w->idle = false;
	w->pid = 0;
	w->latch = NULL;
}

/*
 * Should the database's workers take their work one delivery at a time,
 * counting each attempt before running it?  So for a while after one of
 * them exited abnormally, and after a crash (see worker.c).
 */
bool
saga_database_careful(SagaDatabase *db)
{
	TimestampTz until;

	LWLockAcquire(SagaShmem->lock, LW_SHARED);
	until = db->careful_until;
	LWLockRelease(SagaShmem->lock);
	return until != 0 && GetCurrentTimestamp() < until;
}
