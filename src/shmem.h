/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared memory (shmem.c): every database's entry for the launcher,
 *	  the worker slots, and the condition variables saga_await() sleeps on.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_SHMEM_H
#define SAGA_SHMEM_H

#include "saga.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* Cumulative counters kept per database (stats.c). */
typedef enum SagaCounter
{
	SAGA_COUNT_STARTED,			/* sagas begun or started */
	SAGA_COUNT_COMPLETED,
	SAGA_COUNT_FAILED,
	SAGA_COUNT_ABORTED,			/* by deadline or saga_cancel */
	SAGA_COUNT_COMPENSATIONS,	/* compensation steps and deliveries done */
	SAGA_COUNT_EVENTS,			/* events published */
	SAGA_COUNT_DELIVERIES,		/* deliveries handled */
	SAGA_COUNT_STEPS,			/* orchestrated steps run */
	SAGA_COUNT_RETRIES,			/* failures that will be retried */
	SAGA_COUNT_DEAD,			/* dead letters, and stuck compensations */
	SAGA_NCOUNTERS
} SagaCounter;

/* Room for the message of a worker's last error, in shared memory. */
#define SAGA_ERROR_LEN		256

/* What the launcher knows of one database. */
typedef enum SagaDbState
{
	SAGA_DB_UNUSED = 0,			/* free entry */
	SAGA_DB_UNKNOWN,			/* not probed yet: start one worker to look */
	SAGA_DB_ACTIVE,				/* extension installed: keep workers running */
	SAGA_DB_ABSENT,				/* extension not installed: leave it alone */
	SAGA_DB_PAUSED				/* a DROP/RENAME/template copy needs it empty */
} SagaDbState;

typedef struct SagaDatabase
{
	Oid			dboid;
	SagaDbState state;
	TimestampTz restart_after;	/* don't start workers before this */
	int			failures;		/* consecutive abnormal worker exits */
	pg_atomic_uint32 idle_workers;	/* workers asleep (or about to be) */
	pg_atomic_uint32 notify_sent;	/* a NOTIFY is on its way to them */
	pg_atomic_uint32 notify_committed;	/* ... and its sender has committed */
	int			listener;		/* slot of the worker that LISTENs, or -1 */
	uint64		generation;		/* bumped whenever the extension may have come */
	bool		no_connections; /* launcher: ALLOW_CONNECTIONS false, start none */
	TimestampTz starved_since;	/* launcher: short of workers for want of a slot */

	/*
	 * A session restoring into the database holds its workers back while it
	 * keeps working (lifecycle.c; the launcher ends an idle one's hold).
	 */
	int			restore_pid;	/* that session, or 0 */
	uint32		restore_xacts;	/* transactions it has ended since */
	uint32		restore_seen_xacts; /* launcher: restore_xacts when it last looked */
	TimestampTz restore_busy_at;	/* launcher: when it last saw the session busy */
	pg_atomic_uint64 counters[SAGA_NCOUNTERS];
	/* the last error that made one of its workers exit (worker.c) */
	char		last_error[SAGA_ERROR_LEN];
	int			last_error_code;	/* its SQLSTATE */
	TimestampTz last_error_at;	/* 0: none since the server started */
	pid_t		last_error_pid;
	/* until then, workers take one delivery at a time, counted first (worker.c) */
	TimestampTz careful_until;
} SagaDatabase;

/* One database worker, in the style of PGPROC for pg_stat_activity. */
typedef struct SagaWorkerSlot
{
	uint64		generation;		/* bumped each time the launcher reserves it */
	bool		in_use;
	Oid			dboid;
	pid_t		pid;
	Latch	   *latch;
	bool		idle;
	bool		stop_requested;
	bool		wake_requested; /* set with the latch: there is work */
	bool		copy;			/* its database is a logical copy: runs nothing */
	uint64		deliveries;		/* handled successfully */
	uint64		failures;		/* handler errors */
	uint64		batches;		/* transactions that did some work */
	TimestampTz started_at;
	TimestampTz last_active;
} SagaWorkerSlot;

typedef struct SagaShared
{
	LWLock	   *lock;			/* protects everything but the atomics */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		rescan;			/* launcher must re-read pg_database */
	bool		crashed;		/* shared memory was made again after a crash */
	int			max_databases;
	int			max_workers;
	ConditionVariable await_cv[SAGA_AWAIT_CVS];
	ConditionVariable slots_cv; /* broadcast when a worker slot is freed */
	SagaDatabase *databases;	/* max_databases entries */
	SagaWorkerSlot *workers;	/* max_workers entries */
} SagaShared;

extern SagaShared *SagaShmem;

extern void saga_shmem_request(void);
extern void saga_shmem_startup(void);
extern SagaDatabase *saga_find_database(Oid dboid, bool create);
extern void saga_wake_launcher_now(bool rescan);
extern void saga_wake_idle_worker(Oid dboid);
extern void saga_note_notify_committed(Oid dboid);
extern bool saga_database_careful(SagaDatabase *db);
extern void saga_release_slot(SagaWorkerSlot *w, bool failed);

#endif							/* SAGA_SHMEM_H */
