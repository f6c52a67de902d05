/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  A database worker: sleeps until there is work, then delivers events
 *	  and runs steps in batches, one transaction per batch.
 *
 * Waking up is wakeup.c's, both sides (how a worker says it is idle,
 * listens and sleeps, and whom a committing publisher wakes): this file
 * calls it (saga_worker_set_idle(), saga_worker_take_listening(),
 * saga_worker_sleep()).  The poll interval is the backstop for
 * notifications lost in a crash, and the worker processes whatever is
 * pending as soon as it starts.
 *
 * Between batches the worker holds no transaction and no snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "saga.h"
#include "abort.h"
#include "batch.h"
#include "dispatch.h"
#include "lifecycle.h"
#include "replica.h"
#include "retention.h"
#include "shmem.h"
#include "steps.h"
#include "wakeup.h"
#include "worker.h"


SagaWorkerSlot *MySagaWorker = NULL;
SagaDatabase *MySagaDatabase = NULL;

/*
 * At exit: give the slot back (saga_release_slot), saying whether the
 * exit was a failure, which delays the database's next worker and makes
 * its workers careful for a while.
 */
static void
worker_detach(int code, Datum arg)
{
	if (MySagaWorker == NULL)
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (MySagaWorker->idle && MySagaDatabase != NULL)
		pg_atomic_fetch_sub_u32(&MySagaDatabase->idle_workers, 1);
	if (MySagaDatabase != NULL &&
		MySagaDatabase->listener == MySagaWorker - SagaShmem->workers)
		MySagaDatabase->listener = -1;
	saga_release_slot(MySagaWorker, code != 0);
	LWLockRelease(SagaShmem->lock);
	ConditionVariableBroadcast(&SagaShmem->slots_cv);
	saga_wake_launcher_now(false);
	MySagaWorker = NULL;
}

/* Work that failed on a lock in the last batch is due again at once. */
static bool retry_soon = false;

/*
 * Backing off after lock conflicts.  Two workers whose batches keep
 * meeting on the same rows (a hot account, a best-selling product) only
 * wait for each other: the one that met a conflict steps aside for a
 * while, longer each time it meets one again, and the other gets on
 * with the work.  A batch without conflicts ends the backing off, so
 * workers whose sagas touch different rows keep working side by side.
 */
#define SAGA_BACKOFF_MIN_MS		2
#define SAGA_BACKOFF_MAX_MS		64
static int	conflict_backoff_ms = 0;

/*
 * After a batch: double the step-aside after lock conflicts (from
 * SAGA_BACKOFF_MIN_MS up to SAGA_BACKOFF_MAX_MS), or forget it.
 */
static void
worker_note_conflicts(bool conflict)
{
	if (!conflict)
		conflict_backoff_ms = 0;
	else if (conflict_backoff_ms == 0)
		conflict_backoff_ms = SAGA_BACKOFF_MIN_MS;
	else
		conflict_backoff_ms = Min(conflict_backoff_ms * 2, SAGA_BACKOFF_MAX_MS);
}

/* When this worker last looked for sagas past their deadline. */
static TimestampTz last_sweep = 0;
#define SAGA_SWEEP_MS	100

/*
 * Count a batch in saga_workers.  Work done also forgets the database's
 * failures (saga_release_slot()), so that its next worker, if this one
 * exits, starts at once: the delay is for a database whose workers fail
 * without getting anything done, not for one whose workers are terminated
 * now and then while they keep working.
 */
static void
worker_note_progress(SagaBatchResult r)
{
	MySagaWorker->deliveries += r.done;
	MySagaWorker->batches++;
	MySagaWorker->failures += r.failed - r.transient;	/* lock waits are not failures */
	MySagaWorker->last_active = GetCurrentTimestamp();
	if (MySagaDatabase->failures > 0 && r.done > 0)
	{
		LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
		MySagaDatabase->failures = 0;
		LWLockRelease(SagaShmem->lock);
	}
}

/*
 * Careful mode.  A worker that dies in the middle of a batch (killed,
 * terminated while a handler hangs, out of memory) takes the whole batch
 * with it: nothing of it is recorded, not even the attempt, so its
 * replacement would claim the same deliveries, the deadly one first,
 * again and again, and every delivery claimed with it would wait.  So for
 * a while after a worker of the database exited abnormally, and after a
 * crash, its workers take one delivery at a time and count the attempt in
 * a transaction of their own before running it (saga_count_next_attempt()
 * leases it, so no other worker takes it meanwhile): a delivery whose
 * handler keeps killing its worker is dead-lettered after
 * saga.max_attempts, and the others go on around it.  Orchestrated sagas
 * are taken the same way, one step at a time (saga_count_next_step()),
 * once no delivery is due.
 *
 * This runs the delivery or step counted (counted > 0) in a transaction,
 * or reports the one that was given up instead (counted < 0).  Returns 1:
 * work was done.
 */
static int
worker_run_counted(int64 counted, bool step)
{
	SagaBatchResult r = {1, 0, 0, 0};

	if (counted > 0)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		r = step ? saga_run_counted_step(counted) : saga_dispatch_counted(counted);
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_stat(false);
	}
	worker_note_progress(r);
	return 1;
}

/*
 * The rounds of one batch (batch.c), in the transaction worker_run_batch()
 * started (with an active snapshot), which this commits.
 */
static SagaBatchResult
worker_run_rounds(void)
{
	SagaBatchResult r;

	r = saga_batch_run_rounds(saga_batch_size, saga_batch_time);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	retry_soon = r.transient > 0;
	if (r.claimed > 0)
		worker_note_conflicts(r.transient > 0);

	return r;
}

/*
 * Run one batch in its own transaction.  Returns the number of deliveries
 * claimed, or -1 if the extension is no longer installed here.
 */
static int
worker_run_batch(void)
{
	SagaBatchResult r;
	bool		careful;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* see a DROP EXTENSION committed since the last batch */
	AcceptInvalidationMessages();
	if (!OidIsValid(get_extension_oid(SAGA_EXTENSION, true)))
	{
		CommitTransactionCommand();
		return -1;
	}
	PushActiveSnapshot(GetTransactionSnapshot());
	/* a logical-replication copy: its publisher runs the sagas (replica.c) */
	if (saga_worker_in_copy())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return 0;
	}
	pgstat_report_activity(STATE_RUNNING, "saga: delivering events");

	/* after a worker died in a batch: one item at a time, counted first */
	careful = saga_database_careful(MySagaDatabase);
	if (careful)
	{
		int64		counted = saga_count_next_attempt();
		bool		step = false;

		if (counted == 0)
		{
			counted = saga_count_next_step();
			step = true;
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (counted != 0)
			return worker_run_counted(counted, step);
		/* nothing due: the deadline sweep, as usual */
	}

	if (!careful)
		r = worker_run_rounds();
	else
		r = (SagaBatchResult) {0, 0, 0, 0};

	/*
	 * Sagas past their deadline are aborted in a transaction of their own:
	 * aborting one waits for its deliveries being handled elsewhere, which
	 * must not happen while this worker holds deliveries of its own.  Done
	 * when the queue runs dry (at most every SAGA_SWEEP_MS: a deadline is
	 * not kept to the millisecond), and at least every poll interval under
	 * a load that never lets it.
	 */
	if ((r.claimed < saga_batch_size &&
		 TimestampDifferenceExceeds(last_sweep, GetCurrentTimestamp(), SAGA_SWEEP_MS)) ||
		TimestampDifferenceExceeds(last_sweep, GetCurrentTimestamp(), saga_poll_interval))
	{
		int			aborted;

		last_sweep = GetCurrentTimestamp();
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		aborted = saga_abort_expired(saga_batch_size);
		PopActiveSnapshot();
		CommitTransactionCommand();
		r.claimed += aborted;
	}

	if (r.claimed > 0)
		worker_note_progress(r);
	return r.claimed;
}

/*
 * With nothing else to do, purge what saga.retention allows: at most every
 * SAGA_PURGE_INTERVAL_MS, a few batches, each its own transaction.
 */
#define SAGA_PURGE_INTERVAL_MS	(10 * 1000)
#define SAGA_PURGE_BATCHES		10

static void
worker_purge(void)
{
	static TimestampTz last_purge = 0;
	int			i;

	/* in a copy, the publisher's purges arrive as deletes */
	if (saga_retention == 0 || MySagaWorker->copy ||
		!TimestampDifferenceExceeds(last_purge, GetCurrentTimestamp(),
									SAGA_PURGE_INTERVAL_MS))
		return;
	last_purge = GetCurrentTimestamp();

	pgstat_report_activity(STATE_RUNNING, "saga: purging finished sagas");
	for (i = 0; i < SAGA_PURGE_BATCHES; i++)
	{
		int64		n;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		n = saga_purge_batch((double) saga_retention * 1000.0, saga_retention_batch);
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (n == 0 || MySagaWorker->stop_requested)
			break;
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The settings the engine's own statements are written for, whatever the
 * database's defaults say.  ALTER DATABASE ... SET default_transaction_read_only
 * = on kept every saga from running (the claim locks rows), REPEATABLE READ
 * as the default made claims fail with serialization errors, and a short
 * lock_timeout made the workers exit while a DBA held a table lock.  They are
 * set for the worker's session, as SET would; a handler or step still runs
 * with its own role's settings on top of them (invoke.c).
 */
static void
worker_pin_settings(void)
{
	static const char *const pinned[][2] = {
		{"default_transaction_isolation", "read committed"},
		{"default_transaction_read_only", "off"},
		{"default_transaction_deferrable", "off"},
		{"lock_timeout", "0"},
		{"statement_timeout", "0"},
		{"idle_in_transaction_session_timeout", "0"},
	};
	int			i;

	for (i = 0; i < lengthof(pinned); i++)
		SetConfigOption(pinned[i][0], pinned[i][1], PGC_SUSET, PGC_S_SESSION);
}

/*
 * saga.test_probe_delay: for tests only, wait between the look for the
 * extension and the report of what was seen, showing "saga: probe delayed"
 * in pg_stat_activity meanwhile, so that a test can commit CREATE EXTENSION
 * in that window.
 */
static void
worker_test_probe_delay(void)
{
	TimestampTz until;

	if (saga_test_probe_delay <= 0)
		return;
	pgstat_report_activity(STATE_RUNNING, "saga: probe delayed (saga.test_probe_delay)");
	until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), saga_test_probe_delay);
	for (;;)
	{
		long		remaining;

		CHECK_FOR_INTERRUPTS();
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		if (remaining <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 remaining, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * The worker's life once it serves its database: batches while there is
 * work, sleeps while there is none.  Returns when asked to stop or when the
 * extension has been dropped.
 *
 * What is allocated between transactions (a commit leaves
 * CurrentMemoryContext at TopMemoryContext) goes into a context of the loop's
 * own, reset at the top of every pass, as pg_cron's launcher does: nothing a
 * pass leaves behind can pile up over a worker's life.
 */
static void
worker_loop(Oid dboid)
{
	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext,
												   "saga worker loop",
												   ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		int			claimed;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (MySagaWorker->stop_requested)
			break;

		/*
		 * Read (and drop) the notifications that woke us; the next
		 * publisher that finds us idle may send another.
		 */
		if (notifyInterruptPending)
		{
			ProcessNotifyInterrupt(false);
			pg_atomic_write_u32(&MySagaDatabase->notify_sent, 0);
		}

		claimed = worker_run_batch();
		MemoryContextSwitchTo(loop_cxt);
		if (claimed < 0)
		{
			ereport(LOG,
					(errmsg("saga worker: extension \"%s\" was dropped from this database, exiting",
							SAGA_EXTENSION)));
			saga_mark_database(dboid, SAGA_DB_ABSENT);
			break;
		}
		if (claimed > 0)
		{
			saga_worker_set_idle(false);
			if (retry_soon && conflict_backoff_ms > 0)
			{
				/* step aside; wake-ups from publishers do not cut it short */
				pgstat_report_activity(STATE_IDLE, NULL);
				(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 conflict_backoff_ms, PG_WAIT_EXTENSION);
			}
			continue;
		}

		/*
		 * Nothing to do.  Announce that we are idle first, then look once
		 * more: a transaction that published after our last look either sees
		 * us idle (and wakes us) or committed before this second look.
		 */
		if (!MySagaWorker->idle)
		{
			saga_worker_set_idle(true);
			continue;
		}

		worker_purge();
		MemoryContextSwitchTo(loop_cxt);

		/* the listener has gone: listen in its place */
		if (!saga_worker_is_listening() && MySagaDatabase->listener < 0)
		{
			StartTransactionCommand();
			saga_worker_take_listening();
			CommitTransactionCommand();
			MemoryContextSwitchTo(loop_cxt);
		}

		pgstat_report_activity(STATE_IDLE, NULL);
		saga_worker_sleep(retry_soon ? Min(saga_poll_interval, 20) : saga_poll_interval);
	}
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(loop_cxt);
}

/*
 * Record the error being thrown, which will end this worker, in its
 * database's entry in shared memory: message, SQLSTATE, time and pid.
 * Called in PG_CATCH(), with the error still to be re-thrown.
 */
static void
worker_record_error(void)
{
	MemoryContext oldcxt;
	ErrorData  *edata;
	const char *message;

	HOLD_INTERRUPTS();
	/* CopyErrorData() must not run in ErrorContext; the process is ending */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	MemoryContextSwitchTo(oldcxt);
	message = edata->message ? edata->message : "(no message)";

	/* no error is thrown with this lock held, but an exit must not hang */
	if (LWLockHeldByMe(SagaShmem->lock))
		LWLockRelease(SagaShmem->lock);
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (MySagaDatabase != NULL)
	{
		/* cut on a character boundary */
		int			len = pg_mbcliplen(message, strlen(message), SAGA_ERROR_LEN - 1);

		memcpy(MySagaDatabase->last_error, message, len);
		MySagaDatabase->last_error[len] = '\0';
		MySagaDatabase->last_error_code = edata->sqlerrcode;
		MySagaDatabase->last_error_at = GetCurrentTimestamp();
		MySagaDatabase->last_error_pid = MyProcPid;
	}
	LWLockRelease(SagaShmem->lock);
	FreeErrorData(edata);
	RESUME_INTERRUPTS();
}

/*
 * A database worker's entry point (registered by the launcher, with its
 * slot as the argument).  It connects to the slot's database as the
 * bootstrap superuser, pins the settings its statements need, checks that
 * the extension is there (reporting to the launcher either way), then
 * runs worker_loop() until asked to stop, the extension is dropped or an
 * error ends it: the error is recorded in saga_workers before it exits.
 */
void
saga_worker_main(Datum main_arg)
{
	int			slot = DatumGetInt32(main_arg);
	uint64		slot_generation;	/* the launcher's reservation of it */
	Oid			dboid;
	bool		installed;
	uint64		generation;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	memcpy(&slot_generation, MyBgworkerEntry->bgw_extra, sizeof(slot_generation));
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (!SagaShmem->workers[slot].in_use ||
		SagaShmem->workers[slot].generation != slot_generation)
	{
		/* the slot was given up, or given to another worker, meanwhile */
		LWLockRelease(SagaShmem->lock);
		proc_exit(0);
	}
	MySagaWorker = &SagaShmem->workers[slot];
	dboid = MySagaWorker->dboid;
	MySagaWorker->pid = MyProcPid;
	MySagaWorker->latch = MyLatch;
	MySagaWorker->idle = false;
	MySagaWorker->started_at = GetCurrentTimestamp();
	MySagaDatabase = saga_find_database(dboid, true);
	LWLockRelease(SagaShmem->lock);
	before_shmem_exit(worker_detach, (Datum) 0);

	if (MySagaDatabase == NULL)
		proc_exit(0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("saga worker");
	worker_pin_settings();

	/*
	 * Is the extension here?  Then listen before looking for work.  The
	 * generation is read before the look (before its catalog snapshot): if
	 * CREATE EXTENSION commits after the snapshot, it has bumped the
	 * generation by the time we report, and "absent" is not recorded.
	 */
	generation = saga_database_generation(dboid);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid(SAGA_EXTENSION, true));
	if (installed)
		saga_worker_take_listening();
	CommitTransactionCommand();
	worker_test_probe_delay();
	saga_report_probe(dboid, installed, generation);
	if (!installed)
		proc_exit(0);

	/*
	 * An error here, outside the subtransactions of the handlers and steps
	 * (a batch's own bookkeeping, a sweep), ends the worker: there is no
	 * telling what state the batch left behind.  Say why in shared memory
	 * first, where saga_workers shows it, then exit: re-thrown, the error
	 * reaches the background worker's own handler, which logs it and exits
	 * with code 1 (the launcher then waits before starting another).
	 */
	PG_TRY();
	{
		worker_loop(dboid);
	}
	PG_CATCH();
	{
		worker_record_error();
		PG_RE_THROW();
	}
	PG_END_TRY();

	proc_exit(0);
}
