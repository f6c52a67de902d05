/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  A database worker: sleeps until there is work, then delivers events
 *	  in batches, one transaction per batch.
 *
 * Waking up.  The worker LISTENs on the channel "saga" in-process
 * (Async_Listen; SQL LISTEN is refused in background workers) and drains
 * the notification queue with ProcessNotifyInterrupt() whenever a
 * notification arrives, so it never holds the queue's tail back.  Before
 * sleeping it marks itself idle and then looks for work once more; a
 * publishing transaction sends NOTIFY only if a worker of its database is
 * idle, so busy workers cost committing sessions nothing.  The poll
 * interval is the backstop for notifications lost in a crash, and the
 * worker processes whatever is pending as soon as it starts.
 *
 * Between batches the worker holds no transaction and no snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "saga.h"

SagaWorkerSlot *MySagaWorker = NULL;
static SagaDatabase *MySagaDatabase = NULL;

static void
worker_detach(int code, Datum arg)
{
	if (MySagaWorker == NULL)
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (MySagaWorker->idle && MySagaDatabase != NULL)
		pg_atomic_fetch_sub_u32(&MySagaDatabase->idle_workers, 1);
	saga_release_slot(MySagaWorker, code != 0);
	LWLockRelease(SagaShmem->lock);
	ConditionVariableBroadcast(&SagaShmem->slots_cv);
	saga_wake_launcher_now(false);
	MySagaWorker = NULL;
}

/* Work that failed on a lock in the last batch is due again at once. */
static bool retry_soon = false;

/* When this worker last looked for sagas past their deadline. */
static TimestampTz last_sweep = 0;

/*
 * Run one batch in its own transaction.  Returns the number of deliveries
 * claimed, or -1 if the extension is no longer installed here.
 */
static int
worker_run_batch(void)
{
	SagaBatchResult r;
	SagaBatchResult s;

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
	pgstat_report_activity(STATE_RUNNING, "saga: delivering events");

	r = saga_dispatch_batch(saga_batch_size);
	/* after a lock conflict, commit soon rather than take more locks */
	s = r.transient > 0 ? (SagaBatchResult) {0, 0, 0, 0} : saga_run_steps(saga_batch_size);
	r.claimed += s.claimed;
	r.done += s.done;
	r.failed += s.failed;
	r.transient += s.transient;

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	retry_soon = r.transient > 0;

	/*
	 * Sagas past their deadline are aborted in a transaction of their own:
	 * aborting one waits for its deliveries being handled elsewhere, which
	 * must not happen while this worker holds deliveries of its own.  Done
	 * when the queue runs dry, and at least every poll interval under a
	 * load that never lets it.
	 */
	if (r.claimed < saga_batch_size ||
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
	{
		MySagaWorker->deliveries += r.done;
		MySagaWorker->batches++;
		MySagaWorker->failures += r.failed;
		MySagaWorker->last_active = GetCurrentTimestamp();
		if (MySagaDatabase->failures > 0 && r.done > 0)
		{
			LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
			MySagaDatabase->failures = 0;
			LWLockRelease(SagaShmem->lock);
		}
	}
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

	if (saga_retention == 0 ||
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

static void
worker_set_idle(bool idle)
{
	if (idle == MySagaWorker->idle)
		return;
	MySagaWorker->idle = idle;
	if (idle)
		pg_atomic_fetch_add_u32(&MySagaDatabase->idle_workers, 1);
	else
		pg_atomic_fetch_sub_u32(&MySagaDatabase->idle_workers, 1);
}

void
saga_worker_main(Datum main_arg)
{
	int			slot = DatumGetInt32(main_arg);
	Oid			dboid;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
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

	/* Is the extension here?  Then listen before looking for work. */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!OidIsValid(get_extension_oid(SAGA_EXTENSION, true)))
	{
		CommitTransactionCommand();
		saga_mark_database(dboid, SAGA_DB_ABSENT);
		proc_exit(0);
	}
	Async_Listen(SAGA_NOTIFY_CHANNEL);
	CommitTransactionCommand();
	saga_mark_database(dboid, SAGA_DB_ACTIVE);

	for (;;)
	{
		int			claimed;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (MySagaWorker->stop_requested)
			break;

		/* Read (and drop) the notifications that woke us. */
		if (notifyInterruptPending)
			ProcessNotifyInterrupt(false);

		claimed = worker_run_batch();
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
			worker_set_idle(false);
			continue;
		}

		/*
		 * Nothing to do.  Announce that we are idle first, then look once
		 * more: a transaction that published after our last look either sees
		 * us idle (and wakes us) or committed before this second look.
		 */
		if (!MySagaWorker->idle)
		{
			worker_set_idle(true);
			continue;
		}

		worker_purge();

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 retry_soon ? Min(saga_poll_interval, 20) : saga_poll_interval,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	proc_exit(0);
}
