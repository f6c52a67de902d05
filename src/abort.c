/*-------------------------------------------------------------------------
 *
 * abort.c
 *	  Ending sagas early: deadlines, and saga_cancel().
 *
 * An aborted saga fails once it has been compensated, in either pattern:
 *	- orchestrated: if it was still going forward, the steps done so far
 *	  are compensated, last first, as after a rejection;
 *	- choreographed: the engine cannot know what the services did, so it
 *	  cancels the saga's forward deliveries that have not run yet (those of
 *	  subscriptions with forward = true) and publishes SagaAborted; each
 *	  service undoes its own part on that event.  The saga's handlers may
 *	  fail it when that is done; if none does, the engine fails it, with
 *	  the abort's reason, as soon as none of its deliveries is pending any
 *	  more and no compensation of it is dead (saga_settle_aborted(), called
 *	  at the abort and after each batch that handled one of its
 *	  deliveries).  A saga nobody listens to fails at once.
 *
 * Cancelling the waiting deliveries must not race with a handler of the
 * same saga that is running right now, or its effects (and what it
 * publishes) would escape the abort.  So the deliveries are locked first,
 * waiting for those being handled, again and again until no new one
 * appears; only then is the instance locked and marked aborted.  Locking
 * in that order (deliveries, then instance) is also the order a handler
 * takes them in (its delivery, then saga_complete()/saga_fail() on the
 * instance), so the two cannot deadlock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "saga.h"
#include "abort.h"
#include "batch.h"
#include "publish.h"
#include "shmem.h"
#include "spi_util.h"
#include "stats.h"
#include "steps.h"
#include "wakeup.h"


PG_FUNCTION_INFO_V1(saga_cancel);

static SagaPlan expired_plan = {
	"SELECT id FROM saga.instance"
	" WHERE status = 'pending' AND aborted_at IS NULL AND deadline <= now()"
	" ORDER BY deadline, id"
	" LIMIT $1",
	1, {INT4OID}
};

static SagaPlan cancel_forward_plan = {
	"UPDATE saga.delivery d"
	"   SET status = 'cancelled', last_error = $2"
	"  FROM saga.event e, saga.subscription s"
	" WHERE e.id = d.event_id AND s.id = d.subscription_id"
	"   AND e.saga_id = $1 AND d.status = 'pending' AND s.forward",
	2, {INT8OID, TEXTOID}
};

static SagaPlan lock_pending_plan = {
	"SELECT d.id FROM saga.delivery d"
	"  JOIN saga.event e ON e.id = d.event_id"
	" WHERE e.saga_id = $1 AND d.status = 'pending'"
	" ORDER BY d.id"
	"   FOR UPDATE OF d",
	1, {INT8OID}
};

static SagaPlan look_instance_plan = {
	"SELECT saga_type, pattern, owner::oid, status = 'pending' AND aborted_at IS NULL"
	"  FROM saga.instance WHERE id = $1",
	1, {INT8OID}
};

static SagaPlan lock_instance_plan = {
	"SELECT saga_type, pattern, owner::oid, status = 'pending' AND aborted_at IS NULL"
	"  FROM saga.instance WHERE id = $1"
	"   FOR UPDATE",
	1, {INT8OID}
};

static SagaPlan lock_instance_nowait_plan = {
	"SELECT saga_type, pattern, owner::oid, status = 'pending' AND aborted_at IS NULL"
	"  FROM saga.instance WHERE id = $1"
	"   FOR UPDATE SKIP LOCKED",
	1, {INT8OID}
};

static SagaPlan mark_aborted_plan = {
	"UPDATE saga.instance SET aborted_at = clock_timestamp(), reason = $2 WHERE id = $1",
	2, {INT8OID, TEXTOID}
};

/*
 * Settling aborted choreographed sagas: lock them (in id order, as every
 * transaction that settles several does), then, with a snapshot taken once
 * the locks are held, fail those with no pending delivery and no dead
 * compensation.  Two transactions that each handled the last-but-one
 * delivery of the same saga cannot both miss the end: the second to take
 * the lock sees what the first committed.
 */
static SagaPlan settle_lock_plan = {
	"SELECT id FROM saga.instance"
	" WHERE id = ANY($1) AND status = 'pending' AND aborted_at IS NOT NULL"
	"   AND pattern = 'choreography'"
	" ORDER BY id"
	"   FOR UPDATE",
	1, {INT8ARRAYOID}
};

static SagaPlan settle_plan = {
	"UPDATE saga.instance i"
	"   SET status = 'failed', reason = coalesce(i.reason, 'aborted'),"
	"       finished_at = clock_timestamp(), finish_seq = nextval('saga.trace_seq')"
	" WHERE i.id = ANY($1) AND i.status = 'pending' AND i.aborted_at IS NOT NULL"
	"   AND NOT EXISTS (SELECT FROM saga.event e"
	"                     JOIN saga.delivery d ON d.event_id = e.id"
	"                     LEFT JOIN saga.subscription s ON s.id = d.subscription_id"
	"                    WHERE e.saga_id = i.id"
	"                      AND (d.status = 'pending' OR"
	"                           (d.status = 'dead' AND s.forward IS FALSE)))"
	" RETURNING i.id",
	1, {INT8ARRAYOID}
};

/* qsort comparator for saga ids. */
static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Fail the aborted choreographed sagas among ids (duplicates allowed)
 * whose compensation is over: no delivery of theirs is pending and no
 * compensation delivery is dead.  Returns how many ended.  The caller is
 * in a transaction; ids is sorted in place.
 */
int
saga_settle_aborted(int64 *ids, int n)
{
	Datum	   *elems;
	Datum		arg;
	SagaAsOwner as_owner;
	int			nunique = 0;
	int			ended;
	int			i;

	if (n == 0)
		return 0;
	qsort(ids, n, sizeof(int64), compare_int64);
	elems = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		if ((i == 0 || ids[i] != ids[i - 1]) &&
			/* deliveries of it wait in this batch's memory (batch.c) */
			!saga_batch_has_deferred(ids[i]))
			elems[nunique++] = Int64GetDatum(ids[i]);
	if (nunique == 0)
		return 0;
	arg = PointerGetDatum(construct_array(elems, nunique, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&settle_lock_plan, &arg, NULL, false, 0);
	ended = 0;
	if (SPI_processed > 0)
	{
		saga_execute(&settle_plan, &arg, NULL, false, 0);
		ended = (int) SPI_processed;
		for (i = 0; i < ended; i++)
		{
			bool		isnull;

			saga_note_finished(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1,
														   &isnull)));
		}
	}
	saga_spi_finish_as_owner(&as_owner);
	if (ended > 0)
		saga_count(SAGA_COUNT_FAILED, ended);
	return ended;
}

/*
 * Mark a saga aborted, with the reason it fails for.  The caller holds the
 * instance's lock, is connected to SPI and acts as the tables' owner.
 */
void
saga_mark_aborted(int64 saga_id, const char *reason)
{
	Datum		values[2];

	values[0] = Int64GetDatum(saga_id);
	values[1] = CStringGetTextDatum(reason);
	saga_execute(&mark_aborted_plan, values, NULL, false, 0);
}

/*
 * Cancel the forward deliveries of a choreographed saga that have not run,
 * after waiting for those running now.  The caller is connected to SPI
 * and acts as the tables' owner.
 *
 * A handler waited for may have published more work into the saga before
 * it committed, which the statement that waited cannot see (its snapshot
 * is older than that commit).  So the loop ends only when a round cancels
 * nothing and locks the same deliveries as the round before, each round
 * with fresh snapshots; the first round never ends it.  (Found by the
 * model-based checker: a forward handler ran after saga_cancel().)
 */
static void
cancel_waiting_deliveries(int64 saga_id, const char *reason)
{
	Datum		values[2];
	int64		locked_count = -1;	/* what the last round locked: count ... */
	int64		locked_sum = -1;	/* ... and the sum of the ids */

	values[0] = Int64GetDatum(saga_id);
	values[1] = CStringGetTextDatum(psprintf("cancelled: %s", reason));
	for (;;)
	{
		uint64		cancelled;
		int64		sum = 0;
		uint64		i;

		CHECK_FOR_INTERRUPTS();
		saga_execute(&cancel_forward_plan, values, NULL, false, 0);
		cancelled = SPI_processed;
		/* waits for the deliveries being handled right now */
		saga_execute(&lock_pending_plan, values, NULL, false, 0);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			sum += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc, 1, &isnull));
		}
		if (cancelled == 0 && (int64) SPI_processed == locked_count && sum == locked_sum)
			break;
		locked_count = (int64) SPI_processed;
		locked_sum = sum;
	}
}

/*
 * Abort a saga.  With wait, wait for its lock (saga_cancel); without, give
 * up if another transaction holds it (a worker's deadline sweep).  Returns
 * false if the saga had already ended or been aborted.  The caller is
 * connected to SPI and acts as the tables' owner; check_owner is the role
 * that must act for the saga's owner, or InvalidOid.
 */
static bool
abort_saga(int64 saga_id, const char *reason, bool wait, Oid check_owner)
{
	Datum		arg = Int64GetDatum(saga_id);
	bool		isnull;
	char	   *saga_type;
	bool		choreography;
	bool		abortable;
	HeapTuple	tup;
	TupleDesc	desc;
	Oid			owner;

	/* a first look, to know the pattern and check rights before waiting */
	saga_execute(&look_instance_plan, &arg, NULL, false, 0);
	if (SPI_processed == 0)
	{
		if (wait)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("saga %lld does not exist", (long long) saga_id)));
		return false;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	saga_type = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	choreography = strcmp(TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)),
						  "choreography") == 0;
	owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	if (OidIsValid(check_owner) && !has_privs_of_role(check_owner, owner))
	{
		char	   *owner_name = GetUserNameFromId(owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to cancel saga %lld", (long long) saga_id),
				 owner_name ?
				 errdetail("Saga %lld belongs to role \"%s\": only that role and its members may cancel it.",
						   (long long) saga_id, owner_name) :
				 errdetail("Only the role that started a saga, and its members, may cancel it."),
				 errhint("A saga started by a SECURITY DEFINER function (as the example's saga_place_order) belongs to that function's owner.")));
	}
	abortable = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	if (!abortable)
		return false;

	if (!choreography)
	{
		/* the step runner holds this lock while it runs a step */
		saga_execute(wait ? &lock_instance_plan : &lock_instance_nowait_plan,
					 &arg, NULL, false, 0);
		if (SPI_processed == 0 ||
			!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)))
			return false;
		saga_mark_aborted(saga_id, reason);
		saga_abort_orchestrated(saga_id, reason);
		saga_count(SAGA_COUNT_ABORTED, 1);
		return true;
	}

	/*
	 * Choreography: cancel the waiting deliveries, wait for the running
	 * ones, then lock the instance and look again.
	 */
	cancel_waiting_deliveries(saga_id, reason);
	saga_execute(wait ? &lock_instance_plan : &lock_instance_nowait_plan,
				 &arg, NULL, false, 0);
	if (SPI_processed == 0 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)))
		return false;			/* a last handler finished it meanwhile */
	saga_mark_aborted(saga_id, reason);

	saga_publish_event(SAGA_ABORTED_EVENT,
					   saga_jsonb_strings(2, "saga_type", saga_type, "reason", reason),
					   true, saga_id, saga_type, false, 0);
	saga_count(SAGA_COUNT_ABORTED, 1);

	/* with nothing left to compensate, it fails now */
	(void) saga_settle_aborted(&saga_id, 1);
	return true;
}

/*
 * Sweeps that never wait for each other.  A deadline sweep aborts many
 * sagas in one transaction and so holds the deliveries of those it has
 * aborted while it waits for the next one's.  Two sweeps (two workers, or
 * saga_run_pending() sessions), or a sweep and a transaction calling
 * saga_cancel(), that took two sagas in opposite orders would wait for each
 * other, a deadlock.  So whoever aborts a saga first takes this lock on it
 * for the rest of its transaction: a sweep only tries it, and skips a saga
 * being aborted elsewhere (if that transaction rolls back, the next sweep
 * finds the saga again), while saga_cancel() waits for it.  A sweep thus
 * waits only for handlers running now.  Sweeps also take sagas in a
 * definite order, (deadline, id) in expired_plan: ties on deadline happen
 * (sagas started together with the same deadline), and their order would
 * otherwise be whatever each worker's plan gives.
 *
 * The lock is an advisory lock of the transaction in a space of its own:
 * the fourth field of its tag, SAGA_ABORT_LOCK_SPACE, is neither 1 nor 2,
 * the values of SQL's pg_advisory_xact_lock(bigint) and
 * pg_advisory_xact_lock(int, int), so no application's advisory lock can
 * take it.  pg_locks shows it as an advisory lock with objsubid 21319,
 * classid and objid the high and low halves of the saga's id.  With wait,
 * waits for it; without, returns false at once if another transaction
 * holds it.
 */
#define SAGA_ABORT_LOCK_SPACE	0x5347	/* "SG" */

static bool
lock_for_abort(int64 saga_id, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId,
						 (uint32) (((uint64) saga_id) >> 32),
						 (uint32) (((uint64) saga_id) & 0xFFFFFFFF),
						 SAGA_ABORT_LOCK_SPACE);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Abort up to limit sagas whose deadline has passed; returns how many.
 * Sagas that another transaction is aborting right now are left to it.
 * The caller is in a transaction with an active snapshot.
 */
int
saga_abort_expired(int limit)
{
	Datum		arg = Int32GetDatum(limit);
	SagaAsOwner as_owner;
	int64	   *ids;
	int			n;
	int			i;
	int			aborted = 0;

	saga_spi_connect_as_owner(&as_owner);

	saga_execute(&expired_plan, &arg, NULL, false, 0);
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (i = 0; i < n; i++)
	{
		/* another sweep, or saga_cancel(), is aborting it: never wait */
		if (!lock_for_abort(ids[i], false))
			continue;
		if (abort_saga(ids[i], "deadline exceeded", false, InvalidOid))
			aborted++;
	}

	saga_spi_finish_as_owner(&as_owner);
	return aborted;
}

/*
 * Abort sagas now, each with its reason, as a deadline sweep would: a saga
 * that another transaction is aborting is left to it.  For the sagas whose
 * work can never run (its role no longer exists: dispatch.c).  The caller
 * is in a transaction.
 */
void
saga_abort_now(int64 *ids, const char **reasons, int n)
{
	Oid			save_userid;
	int			save_sec_context;
	int			i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	for (i = 0; i < n; i++)
		if (lock_for_abort(ids[i], false))
			(void) abort_saga(ids[i], reasons[i], false, InvalidOid);
	saga_end_as_owner(save_userid, save_sec_context);
	SPI_finish();
}

/*
 * saga_cancel(saga_id bigint, reason text) returns boolean
 */
Datum
saga_cancel(PG_FUNCTION_ARGS)
{
	int64		saga_id;
	char	   *reason;
	Oid			caller = GetUserId();
	SagaAsOwner as_owner;
	bool		aborted;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("saga_id must not be null")));
	saga_id = PG_GETARG_INT64(0);
	reason = PG_ARGISNULL(1) ? "cancelled" : saga_check_name(fcinfo, 1, "reason");

	/* wait for a sweep (or another saga_cancel) aborting it right now */
	(void) lock_for_abort(saga_id, true);

	saga_spi_connect_as_owner(&as_owner);
	aborted = abort_saga(saga_id, reason, true, caller);
	saga_spi_finish_as_owner(&as_owner);

	if (aborted)
		saga_note_published();
	PG_RETURN_BOOL(aborted);
}
