/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The batch driver: one transaction's work, as rounds of deliveries
 *	  (dispatch.c) and orchestrated steps (steps.c).  The workers run a
 *	  batch in a transaction of their own (worker.c); saga_run_pending()
 *	  runs batches in its caller's transaction, with the same rules.
 *
 * What a round's handlers publish is pending (to this transaction only)
 * when the next round looks, so a choreographed saga goes from event to
 * event in one transaction and one commit, as an orchestrated one goes from
 * step to step within the step runner.  The first round looks for
 * deliveries and steps; another round follows only if the last one
 * published something (the dispatcher and the step runner say how much:
 * SagaBatchResult.published), and claims due deliveries again, those of
 * its events among them.  The rounds end when the last one published
 * nothing, or the batch is full (saga.batch_size) or out of time
 * (saga.batch_time), or after a lock conflict: then commit soon rather
 * than take more locks.
 *
 * Sagas past their deadline are never aborted inside a batch: aborting one
 * waits for its deliveries being handled elsewhere, which must not happen
 * while this transaction holds deliveries of its own.  The workers sweep
 * in a transaction of their own after a batch (worker.c);
 * saga_run_pending() sweeps before its first batch, while it holds
 * nothing of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/timestamp.h"

#include "saga.h"
#include "abort.h"
#include "batch.h"
#include "dispatch.h"
#include "invoke.h"
#include "replica.h"
#include "spi_util.h"
#include "steps.h"


/* When the batch running now must end (0: no limit). */
static TimestampTz batch_deadline = 0;

/* Has the batch running now used up its time (saga.batch_time)? */
bool
saga_batch_out_of_time(void)
{
	return batch_deadline != 0 && GetCurrentTimestamp() >= batch_deadline;
}

/* Add one part's result to a batch's. */
static void
add_result(SagaBatchResult *r, SagaBatchResult part)
{
	r->claimed += part.claimed;
	r->done += part.done;
	r->failed += part.failed;
	r->transient += part.transient;
	r->published += part.published;
}

/*
 * Run rounds of deliveries and steps in the current transaction, as the
 * file header says; returns what they did.  (After an error the deadline
 * may be left behind: every batch sets its own, and nothing looks at it
 * outside a batch but after the first item.)
 */
SagaBatchResult
saga_batch_run_rounds(int limit, int time_ms)
{
	SagaBatchResult r = {0, 0, 0, 0, 0};
	int			round;

	batch_deadline = time_ms > 0 ?
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), time_ms) : 0;
	for (round = 0;; round++)
	{
		int			room = limit - r.claimed;
		SagaBatchResult d;
		SagaBatchResult s = {0, 0, 0, 0, 0};

		d = saga_dispatch_batch(room);
		if (round == 0 && d.transient == 0 && room > d.claimed)
			s = saga_run_steps(room - d.claimed);
		add_result(&r, d);
		add_result(&r, s);
		if ((d.published + s.published == 0 && !d.full) || r.transient > 0 ||
			r.claimed >= limit || saga_batch_out_of_time())
			break;
		CHECK_FOR_INTERRUPTS();
	}
	batch_deadline = 0;
	return r;
}

/*
 * Careful mode's first look (worker.c; saga_count_next_attempt() in
 * dispatch.c, saga_count_next_step() in steps.c): run next_due, a
 * statement that locks the next item due and returns its id and its
 * attempts so far.  The caller is connected to SPI.  Returns false if
 * nothing is due.
 */
bool
saga_careful_next(SagaPlan *next_due, int64 *id, int32 *attempts)
{
	bool		isnull;

	saga_execute(next_due, NULL, NULL, false, 0);
	if (SPI_processed == 0)
		return false;
	*id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

/*
 * Careful mode: count the attempt at the item saga_careful_next() found,
 * and lease it for SAGA_LEASE_MS, with count_attempt (taking the id and the
 * lease in milliseconds).  The caller is connected to SPI.
 */
void
saga_careful_lease(SagaPlan *count_attempt, int64 id)
{
	Datum		args[2];

	args[0] = Int64GetDatum(id);
	args[1] = Float8GetDatum(SAGA_LEASE_MS);
	saga_execute(count_attempt, args, NULL, false, 0);
}

PG_FUNCTION_INFO_V1(saga_run_pending);

/*
 * saga_run_pending() returns bigint
 *
 * Deliver events and run orchestrated steps in this session, batch after
 * batch, until nothing is due: what the handlers publish is delivered too,
 * so whole sagas run to their end.  Everything happens in the caller's
 * transaction.  Sagas past their deadline are aborted first (see the file
 * header: not once this call holds deliveries of its own); a deadline
 * that passes during the call is seen by the next one, or by a worker.
 * Returns the number of deliveries and steps that succeeded.  Work that
 * fails is not retried within the same call.
 */
Datum
saga_run_pending(PG_FUNCTION_ARGS)
{
	int64		total = 0;

	/* a step's own saga is locked by this transaction, not skipped */
	if (saga_current_delivery != NULL || saga_in_user_function())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("saga_run_pending() cannot be called from inside a handler or step"),
				 errhint("Handlers and steps run inside a batch already; the events they publish are delivered after them.")));
	saga_refuse_in_copy("saga_run_pending()");

	while (saga_abort_expired(saga_batch_size) == saga_batch_size)
		CHECK_FOR_INTERRUPTS();
	for (;;)
	{
		SagaBatchResult r;

		CHECK_FOR_INTERRUPTS();
		r = saga_batch_run_rounds(saga_batch_size, 0);
		total += r.done;
		if (r.claimed == 0)
			break;
	}
	PG_RETURN_INT64(total);
}
