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
 *	  (see utility.c), and when a restore stops holding them back: that
 *	  is lifecycle.c's, which this file's transaction callback calls
 *	  (saga_lifecycle_at_xact_end()).
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
#include "lifecycle.h"

static bool published_in_xact = false;
static bool notified_in_xact = false;
static uint64 finished_cvs_in_xact = 0;	/* bit i: broadcast await_cv[i] */

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

/* At the end of a transaction: forget what it noted for the wake-up. */
static void
reset_xact_state(void)
{
	published_in_xact = false;
	notified_in_xact = false;
	finished_cvs_in_xact = 0;
}

/*
 * The transaction side of the wake-up protocol.  Before commit, a
 * transaction that made work due NOTIFYs, unless a NOTIFY is on its way
 * already (claim_notify), so that commits under load do not all queue on
 * the NOTIFY lock; after commit, it sets the latch of an idle worker when
 * the NOTIFY alone would not wake one, wakes saga_await()ers of the sagas
 * it ended, and adds its counters.  Either way it has lifecycle.c settle
 * what the transaction asked of the databases' lifecycle and of a
 * restore.
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
			}
			reset_xact_state();
			saga_lifecycle_at_xact_end(true, true);
			break;

		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			saga_flush_counts(false);
			reset_xact_state();
			saga_lifecycle_at_xact_end(false, false);
			break;

		case XACT_EVENT_PREPARE:
			saga_flush_counts(false);
			reset_xact_state();
			saga_lifecycle_at_xact_end(false, true);
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

