/*-------------------------------------------------------------------------
 *
 * saga.h
 *	  Declarations shared by the saga extension's source files.
 *
 * The parts, a file each (docs/architecture.md tells how they work
 * together):
 *	- the launcher (launcher.c), a background worker that keeps saga.workers
 *	  database workers running in every database with the extension;
 *	- database workers (worker.c) that sleep until woken by NOTIFY, their
 *	  latch or the poll interval, then run batches;
 *	- the batch driver (batch.c, batch.h): rounds of deliveries and steps
 *	  in one transaction, for the workers and saga_run_pending();
 *	- the dispatcher (dispatch.c), which claims deliveries and runs their
 *	  handlers, and the step runner (steps.c, steps.h) for orchestrated
 *	  sagas; both run user code through invoke.c;
 *	- the SQL API: the outbox and subscriptions (publish.c), instances
 *	  (instance.c), definitions (definition.c), aborts and deadlines
 *	  (abort.c), the operator's calls (admin.c), rights (grants.c),
 *	  counters (stats.c), purges (retention.c), logical copies (replica.c);
 *	- a database's lifecycle: probed, active, paused for DDL, forgotten,
 *	  held back by a restore (lifecycle.c, lifecycle.h); the utility hook
 *	  that pauses it (utility.c); the commit-time wake-up (wakeup.c);
 *	- shared memory (shmem.c) and the SPI helpers (spi_util.c); the GUCs
 *	  and _PG_init() (saga.c).
 * This header holds what several of them share; batch.h, lifecycle.h and
 * steps.h what only their callers need.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_H
#define SAGA_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#define SAGA_SCHEMA			"saga"
#define SAGA_EXTENSION		"saga"
#define SAGA_NOTIFY_CHANNEL "saga"

/* Number of condition variables that saga_await() sleeps on. */
#define SAGA_AWAIT_CVS		64

/* GUCs (saga.c) */
extern int	saga_workers;
extern int	saga_batch_size;
extern int	saga_poll_interval;
extern int	saga_max_attempts;
extern int	saga_retry_backoff;
extern int	saga_deadline;
extern int	saga_retention;
extern int	saga_lock_timeout;
extern int	saga_batch_time;
extern int	saga_batch_bytes;
extern int	saga_handler_timeout;
extern int	saga_retention_batch;
extern int	saga_test_probe_delay;	/* for tests only */

/* ------------------------------------------------------------------------
 * Shared memory (shmem.c)
 * ------------------------------------------------------------------------
 */

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

/* ------------------------------------------------------------------------
 * Background workers (launcher.c, worker.c)
 * ------------------------------------------------------------------------
 */
extern void saga_register_launcher(void);
extern void saga_install_utility_hook(void);
extern PGDLLEXPORT void saga_launcher_main(Datum main_arg);
extern PGDLLEXPORT void saga_worker_main(Datum main_arg);

/* Slot of the current process if it is a database worker, else NULL. */
extern SagaWorkerSlot *MySagaWorker;
extern SagaDatabase *MySagaDatabase;	/* its database's entry */
extern void saga_worker_found_work(void);

/* ------------------------------------------------------------------------
 * Dispatcher (dispatch.c)
 * ------------------------------------------------------------------------
 */
typedef struct SagaBatchResult
{
	int			claimed;		/* deliveries taken */
	int			done;			/* handled successfully */
	int			failed;			/* handler raised; retried later or dead */
	int			transient;		/* of which a lock timeout or deadlock: due again at once */
	int			published;		/* work its handlers and steps made due (saga_note_published) */
} SagaBatchResult;

extern SagaBatchResult saga_dispatch_batch(int limit);
extern int64 saga_count_next_attempt(void);
extern SagaBatchResult saga_dispatch_counted(int64 delivery_id);
/* the step runner: steps.h */

/* The delivery being handled right now, for saga_publish's defaults. */
typedef struct SagaCurrentDelivery
{
	int64		event_id;
	int64		saga_id;		/* 0 when the event has none */
	bool		has_saga_id;
	const char *consumer;
} SagaCurrentDelivery;

extern SagaCurrentDelivery *saga_current_delivery;

/* ------------------------------------------------------------------------
 * Running users' functions as their owners (invoke.c)
 * ------------------------------------------------------------------------
 */
extern void saga_lookup_function(Oid fn, FmgrInfo *flinfo, MemoryContext cxt);
extern Datum saga_invoke_as(Oid role, FmgrInfo *flinfo, Datum arg, bool *isnull,
							 bool watch_locks);
extern bool saga_error_is_transient(int sqlerrcode);
extern char *saga_error_text(ErrorData *edata);
extern bool saga_in_user_function(void);
extern double saga_retry_delay_ms(int attempts, int sqlerrcode);
extern int	saga_lock_blocker(void);

/* SQLSTATE SG400: a saga step's business "no" (see saga_reject()). */
#define ERRCODE_SAGA_REJECTED	MAKE_SQLSTATE('S','G','4','0','0')

/*
 * SQLSTATE SG410: the role a handler or step runs as no longer exists (it
 * was dropped from another database's session): its work can never run.
 */
#define ERRCODE_SAGA_ROLE_GONE	MAKE_SQLSTATE('S','G','4','1','0')

/* ------------------------------------------------------------------------
 * SPI helpers (spi_util.c)
 * ------------------------------------------------------------------------
 */
typedef struct SagaPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[12];
	SPIPlanPtr	plan;
	bool		replan;			/* plan again now and then: a queue's claim */
	TimestampTz planned_at;
	int			uses;			/* executions since planned_at */
} SagaPlan;

extern SPIPlanPtr saga_prepare(SagaPlan *p);
extern int	saga_execute(SagaPlan *p, Datum *values, const char *nulls,
						 bool read_only, long count);
extern Oid	saga_internal_owner(void);
extern bool saga_schema_is_1_2(void);
extern char *saga_check_name(FunctionCallInfo fcinfo, int argno, const char *what);
extern double saga_deadline_ms(FunctionCallInfo fcinfo, int argno, bool *none);	/* instance.c */
extern double saga_interval_ms(Interval *iv);	/* instance.c */
extern bool saga_may_act_for(Oid role, int64 saga_id, bool *exists);	/* instance.c */
extern int64 saga_purge_batch(double older_than_ms, int batch);	/* retention.c */

/* publish.c */
extern Jsonb *saga_jsonb_strings(int npairs,...);
extern int64 saga_publish_event(const char *event_type, Jsonb *payload,
								bool has_saga_id, int64 saga_id,
								const char *publisher, bool has_cause,
								int64 caused_by);

/* grants.c: who may see and subscribe to what */
extern void saga_check_event_right(const char *event_type, bool publish, Oid role);
extern void saga_check_visible(int64 saga_id);

/* abort.c: ending sagas early (deadlines, saga_cancel) */
extern int	saga_abort_expired(int limit);
extern int	saga_settle_aborted(int64 *ids, int n);
extern void saga_mark_aborted(int64 saga_id, const char *reason);
extern void saga_abort_now(int64 *ids, const char **reasons, int n);
extern void saga_begin_as_owner(Oid *save_userid, int *save_sec_context);
extern void saga_end_as_owner(Oid save_userid, int save_sec_context);

/* The caller saga_spi_connect_as_owner() switched away from. */
typedef struct SagaAsOwner
{
	Oid			caller;
	int			sec_context;
} SagaAsOwner;

extern void saga_spi_connect_as_owner(SagaAsOwner *save);
extern void saga_spi_finish_as_owner(SagaAsOwner *save);

/* ------------------------------------------------------------------------
 * Wake-ups at transaction end (wakeup.c)
 * ------------------------------------------------------------------------
 */
extern void saga_register_xact_callbacks(void);
extern void saga_note_published(void);
extern uint64 saga_work_noted_count(void);
extern void saga_note_finished(int64 saga_id);
extern ConditionVariable *saga_await_cv(int64 saga_id);
/* the worker's side (worker.c calls these) */
extern void saga_worker_take_listening(void);
extern bool saga_worker_is_listening(void);
extern void saga_worker_set_idle(bool idle);
extern void saga_worker_sleep(long timeout_ms);

/* replica.c: a logical-replication copy runs no sagas */
extern const char *saga_copy_subscription(void);
extern void saga_refuse_in_copy(const char *what);
extern bool saga_worker_in_copy(void);

/* stats.c */
extern void saga_count(SagaCounter counter, int64 n);
extern void saga_flush_counts(bool commit);
extern void saga_register_subxact_callback(void);

#endif							/* SAGA_H */
