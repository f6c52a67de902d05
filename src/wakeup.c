/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  The wake-up protocol, both sides: who is woken when a transaction
 *	  that touched sagas commits, and how a worker says it is idle,
 *	  listens and sleeps (the end of this file).
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
 *	- clients that asked to be told of a saga's end (end_notify.c): the
 *	  sagas it finished are NOTIFYed before the commit, once per channel;
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

#include <signal.h>

#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "saga.h"
#include "end_notify.h"
#include "lifecycle.h"
#include "shmem.h"
#include "stats.h"
#include "wakeup.h"
#include "worker.h"


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
	saga_end_notify_note(saga_id);
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
	saga_end_notify_reset();
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
			/* clients that asked to be told of the sagas it ended */
			saga_end_notify_send();
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

/* ------------------------------------------------------------------------
 * The worker's side: idle or busy, who listens, how it sleeps
 *
 * One worker of each database LISTENs on the channel "saga" in-process
 * (Async_Listen; SQL LISTEN is refused in background workers) and drains
 * the notification queue with ProcessNotifyInterrupt() whenever a
 * notification arrives, so it never holds the queue's tail back.  Before
 * sleeping a worker marks itself idle and then looks for work once more,
 * and it is busy again from the moment a look claims work, however long
 * its handlers then take (saga_worker_found_work()).  Anybody may NOTIFY
 * on the channel: a notification that no publisher of ours marked does
 * not make the worker look for work (saga_worker_sleep()).
 * ------------------------------------------------------------------------
 */

/*
 * One worker of the database listens.  A NOTIFY wakes every listener, and
 * a second worker woken for the same event would only find it taken: the
 * others are woken through their latches (above), and all of them poll.
 * When the listener exits, the next worker to look listens in its place.
 * Called in a transaction.
 */
static bool listening = false;

void
saga_worker_take_listening(void)
{
	int			me = MySagaWorker - SagaShmem->workers;

	if (listening)
		return;
	LWLockAcquire(SagaShmem->lock, LW_EXCLUSIVE);
	if (MySagaDatabase->listener < 0)
		MySagaDatabase->listener = me;
	listening = MySagaDatabase->listener == me;
	LWLockRelease(SagaShmem->lock);
	if (listening)
		Async_Listen(SAGA_NOTIFY_CHANNEL);
}

/* Does this worker listen for its database? */
bool
saga_worker_is_listening(void)
{
	return listening;
}

/*
 * Mark this worker idle (it is about to sleep, or to look once more before
 * sleeping) or busy.  Committing publishers read the flag to decide whom
 * to wake (above), and saga_workers shows it.
 */
void
saga_worker_set_idle(bool idle)
{
	if (idle == MySagaWorker->idle)
		return;
	MySagaWorker->idle = idle;
	if (idle)
	{
		/* the next publisher to commit sends a NOTIFY again (above) */
		pg_atomic_write_u32(&MySagaDatabase->notify_sent, 0);
		pg_atomic_fetch_add_u32(&MySagaDatabase->idle_workers, 1);
	}
	else
		pg_atomic_fetch_sub_u32(&MySagaDatabase->idle_workers, 1);
}

/*
 * The batch being run has claimed work (deliveries or saga steps; called
 * by the dispatcher and the step runner right after their claim, in any
 * session): a worker is busy from here until it has looked again and found
 * nothing.  It may have been idle until now, since a batch that is a
 * worker's look for work after a wake-up, or its last look before sleeping,
 * starts idle, and a worker shown idle while it runs a slow handler would
 * be sent the wake-ups of work it cannot take up before that handler ends.
 *
 * Going busy only after the claim keeps the wake-up promise made by the
 * idle flag: a publisher that commits after the claim's snapshot and sees
 * this worker busy is no lost wake-up, since a worker that found work
 * looks again before it sleeps.  But a NOTIFY already on its way to the
 * listening worker (a publisher saw it idle) would be read only after the
 * batch: the worker hands it on to an idle worker's latch.
 */
void
saga_worker_found_work(void)
{
	if (MySagaWorker == NULL || !MySagaWorker->idle)
		return;
	saga_worker_set_idle(false);		/* a full barrier before the read below */
	if (listening && pg_atomic_read_u32(&MySagaDatabase->notify_sent) != 0)
		saga_wake_idle_worker(MySagaWorker->dboid);
}

/*
 * Notifications nobody of ours sent.  Any role that may connect can send
 * NOTIFY saga, as often as it likes, and each one sets the listener's
 * latch.  The listener does not look for work on such a wake-up: a
 * publisher that sent a NOTIFY marks it committed before it is signalled
 * (saga_note_notify_committed()), and one that set the latch instead marks
 * the slot (saga_wake_idle_worker()); anything else is a stranger's, read
 * and dropped, at most every SAGA_STRANGER_DRAIN_MS, so that a flood of
 * them costs the listener a few wake-ups a second and keeps the queue's
 * tail moving.  Our own wake-ups may wait as long behind such a flood.
 */
#define SAGA_STRANGER_DRAIN_MS	10

/*
 * Was the latch set for a reason of ours?  Takes the marks that publishers
 * leave, so that the next wake-up is judged afresh.
 */
static bool
woken_for_work(void)
{
	bool		work = false;

	if (MySagaWorker->wake_requested)
	{
		MySagaWorker->wake_requested = false;
		work = true;
	}
	if (pg_atomic_read_u32(&MySagaDatabase->notify_committed) != 0 &&
		pg_atomic_exchange_u32(&MySagaDatabase->notify_committed, 0) != 0)
		work = true;
	return work || !notifyInterruptPending || InterruptPending ||
		ConfigReloadPending || MySagaWorker->stop_requested;
}

/*
 * Sleep until there may be work, or until timeout_ms has passed (the poll,
 * which a flood of strangers' notifications does not put off).
 */
void
saga_worker_sleep(long timeout_ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	TimestampTz last_drain = 0;

	for (;;)
	{
		long		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		int			rc;

		if (remaining <= 0)
			return;
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   remaining, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (!(rc & WL_LATCH_SET) || woken_for_work())
			return;

		/*
		 * Only a stranger's notifications: read them, now and then.  Every
		 * NOTIFY that commits signals the listener (SIGUSR1, which carries
		 * every procsignal); meanwhile the signal is held, so that a flood
		 * does not wake us once for each NOTIFY.  What it brings is handled
		 * when it is let through.
		 */
		remaining = SAGA_STRANGER_DRAIN_MS -
			TimestampDifferenceMilliseconds(last_drain, GetCurrentTimestamp());
		if (remaining > 0)
		{
			sigset_t	procsignal;
			sigset_t	saved;

			sigemptyset(&procsignal);
			sigaddset(&procsignal, SIGUSR1);
			sigprocmask(SIG_BLOCK, &procsignal, &saved);
			(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 remaining, PG_WAIT_EXTENSION);
			sigprocmask(SIG_SETMASK, &saved, NULL);
		}
		CHECK_FOR_INTERRUPTS();
		if (notifyInterruptPending)
			ProcessNotifyInterrupt(false);
		last_drain = GetCurrentTimestamp();
	}
}
