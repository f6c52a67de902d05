/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: databases, worker slots, wake-ups.
 *	  (A database's lifecycle, which changes its entry, is in lifecycle.c.)
 *
 * One SagaShared struct holds what the launcher knows of each database, one
 * slot per database worker, and the condition variables that saga_await()
 * sleeps on.  The lock protects the database entries and the slots' in_use,
 * dboid and stop_requested fields; counters and the idle flags are written
 * by their own worker only and read without the lock, as pg_stat_activity
 * reads PGPROC.
 *
 * Who may change a database's state, and how, is lifecycle.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/wait_event.h"

#include "saga.h"
#include "shmem.h"


/* Entries for databases: those without the extension need one too. */
#define SAGA_MAX_DATABASES	1024

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
