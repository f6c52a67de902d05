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
 * A delivery published by a handler of the batch and run by a later round
 * of it is not written as pending and then marked done: while a round's
 * handler runs, saga_publish writes the event and keeps its deliveries in
 * memory (saga_batch_defer()); the next round runs them first and writes
 * each once, done (or, when it failed or was not reached, pending, as any
 * other).  They are this transaction's alone either way, and an abort
 * takes them with the event.  What is left when the rounds end is written
 * pending before the batch commits (saga_batch_run_rounds()).
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

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "saga.h"
#include "abort.h"
#include "batch.h"
#include "dispatch.h"
#include "invoke.h"
#include "replica.h"
#include "spi_util.h"
#include "steps.h"
#include "wakeup.h"


/* When the batch running now must end (0: no limit). */
static TimestampTz batch_deadline = 0;

/*
 * The deferred deliveries (event, subscription), oldest first, in
 * deferred_cxt; deferring: a handler of a round runs now, and what it
 * publishes may wait for the next round.
 */
static MemoryContext deferred_cxt = NULL;
static Datum *deferred_events = NULL;
static Datum *deferred_subs = NULL;
static int64 *deferred_sagas = NULL;	/* their sagas (0: none) */
static int	ndeferred = 0;
static int	deferred_room = 0;
static bool in_rounds = false;
static bool deferring = false;

/* Write deliveries as pending, as publishing does outside a batch. */
static SagaPlan write_pending_plan = {
	"INSERT INTO saga.delivery (event_id, subscription_id)"
	" SELECT * FROM unnest($1::bigint[], $2::integer[])",
	2, {INT8ARRAYOID, INT4ARRAYOID}
};

/* May what is published now wait in memory for the next round? */
bool
saga_batch_deferring(void)
{
	return in_rounds && deferring && saga_schema_is_1_2();
}

/* The dispatcher runs a handler of a round (on), or is done with it. */
void
saga_batch_set_deferring(bool on)
{
	deferring = on;
}

/* Keep a delivery of an event just published (of saga_id, or 0) for the next round. */
void
saga_batch_defer(int64 event_id, int32 subscription_id, int64 saga_id)
{
	if (ndeferred == deferred_room)
	{
		int			room = Max(deferred_room * 2, 64);
		MemoryContext old = MemoryContextSwitchTo(deferred_cxt);

		deferred_events = deferred_events ?
			repalloc(deferred_events, sizeof(Datum) * room) : palloc(sizeof(Datum) * room);
		deferred_subs = deferred_subs ?
			repalloc(deferred_subs, sizeof(Datum) * room) : palloc(sizeof(Datum) * room);
		deferred_sagas = deferred_sagas ?
			repalloc(deferred_sagas, sizeof(int64) * room) : palloc(sizeof(int64) * room);
		deferred_room = room;
		MemoryContextSwitchTo(old);
	}
	deferred_events[ndeferred] = Int64GetDatum(event_id);
	deferred_subs[ndeferred] = Int32GetDatum(subscription_id);
	deferred_sagas[ndeferred] = saga_id;
	ndeferred++;
}

/*
 * Does a delivery of saga_id wait in memory?  Then an aborted saga must not
 * be ended yet (abort.c): its compensations have not run.
 */
bool
saga_batch_has_deferred(int64 saga_id)
{
	int			i;

	for (i = 0; i < ndeferred; i++)
		if (deferred_sagas[i] == saga_id)
			return true;
	return false;
}

/* How many deliveries wait in memory. */
int
saga_batch_deferred(void)
{
	return ndeferred;
}

/*
 * Forget the deliveries deferred after the first keep: the handler that
 * published them failed, and its subtransaction took their events.
 */
void
saga_batch_forget_deferred(int keep)
{
	Assert(keep <= ndeferred);
	ndeferred = keep;
}

/*
 * Take the oldest max deferred deliveries (fewer if there are fewer):
 * arrays allocated in the current memory context; returns how many.
 */
int
saga_batch_take_deferred(int max, Datum **event_ids, Datum **subscription_ids)
{
	int			n = Min(max, ndeferred);

	*event_ids = palloc(sizeof(Datum) * Max(n, 1));
	*subscription_ids = palloc(sizeof(Datum) * Max(n, 1));
	memcpy(*event_ids, deferred_events, sizeof(Datum) * n);
	memcpy(*subscription_ids, deferred_subs, sizeof(Datum) * n);
	memmove(deferred_events, deferred_events + n, sizeof(Datum) * (ndeferred - n));
	memmove(deferred_subs, deferred_subs + n, sizeof(Datum) * (ndeferred - n));
	memmove(deferred_sagas, deferred_sagas + n, sizeof(int64) * (ndeferred - n));
	ndeferred -= n;
	return n;
}

/*
 * Write deliveries as pending rows; the caller is connected to SPI and
 * acts as the tables' owner.  They are work for the workers at commit.
 */
void
saga_batch_write_pending(Datum *event_ids, Datum *subscription_ids, int n)
{
	Datum		values[2];

	if (n == 0)
		return;
	values[0] = PointerGetDatum(construct_array(event_ids, n, INT8OID,
												sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(subscription_ids, n, INT4OID,
												sizeof(int32), true, TYPALIGN_INT));
	saga_execute(&write_pending_plan, values, NULL, false, 0);
	saga_note_published();
}

/* Write what is left in memory as pending: the rounds are over. */
static void
write_deferred(void)
{
	SagaAsOwner as_owner;

	if (ndeferred == 0)
		return;
	saga_spi_connect_as_owner(&as_owner);
	saga_batch_write_pending(deferred_events, deferred_subs, ndeferred);
	saga_spi_finish_as_owner(&as_owner);
	ndeferred = 0;
}

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
	/* what an earlier batch left, if it failed, went with its transaction */
	if (deferred_cxt == NULL)
		deferred_cxt = AllocSetContextCreate(TopMemoryContext, "saga deferred deliveries",
											 ALLOCSET_SMALL_SIZES);
	ndeferred = 0;
	deferring = false;
	in_rounds = true;
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
		if ((d.published + s.published == 0 && !d.full && ndeferred == 0) ||
			r.transient > 0 || r.claimed >= limit || saga_batch_out_of_time())
			break;
		CHECK_FOR_INTERRUPTS();
	}
	in_rounds = false;
	if (ndeferred > 0 && saga_batch_out_of_time())
		saga_dispatch_claim_less();
	write_deferred();
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
