/*-------------------------------------------------------------------------
 *
 * instance.c
 *	  Saga instances: saga_begin(), saga_complete(), saga_fail(),
 *	  saga_status() and saga_await().
 *
 * An instance is one run of a saga: the order saga's order id is its
 * instance's id.  It is 'pending' until a handler (or the orchestrator)
 * finishes it 'completed' or 'failed', once; finishing it wakes the
 * sessions waiting in saga_await() when the transaction commits.
 *
 * saga_await() sleeps on a condition variable in shared memory and looks
 * at the instance again each time one of the sagas hashing to that
 * variable finishes, so it returns within milliseconds of the commit
 * that finished the saga without polling the table.  Without the library
 * preloaded there is no shared memory: it then looks every 10 ms.  On a
 * hot standby no transaction commits (the standby replays the primary's
 * commits, and replay broadcasts nothing), so there it also looks every
 * SAGA_STANDBY_AWAIT_MS, or every saga.poll_interval if that is shorter:
 * it returns within that long of the replay of the saga's end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "saga.h"
#include "grants.h"
#include "instance.h"
#include "publish.h"
#include "shmem.h"
#include "spi_util.h"
#include "stats.h"
#include "wakeup.h"


PG_FUNCTION_INFO_V1(saga_begin);
PG_FUNCTION_INFO_V1(saga_complete);
PG_FUNCTION_INFO_V1(saga_fail);
PG_FUNCTION_INFO_V1(saga_status);
PG_FUNCTION_INFO_V1(saga_await);

static SagaPlan begin_plan = {
	"INSERT INTO saga.instance (saga_type, pattern, owner, deadline)"
	" VALUES ($1, 'choreography', $2::oid::regrole,"
	"         clock_timestamp() + $3 * interval '1 millisecond')"
	" RETURNING id",
	3, {TEXTOID, OIDOID, FLOAT8OID}
};

/*
 * A saga's deadline, in milliseconds from now, from its deadline argument
 * or saga.deadline; *none if it has none.
 */
double
saga_deadline_ms(FunctionCallInfo fcinfo, int argno, bool *none)
{
	Interval   *iv;
	double		ms;

	if (PG_ARGISNULL(argno))
	{
		*none = saga_deadline == 0;
		return (double) saga_deadline;
	}
	iv = PG_GETARG_INTERVAL_P(argno);
	ms = saga_interval_ms(iv);
	if (ms <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deadline must be a positive interval")));
	*none = false;
	return ms;
}

/*
 * End a pending saga whose owner's privileges the caller ($4) has, in one
 * write: no row lock taken before (a WAL record of its own).  When it
 * ends nothing, look_plan says why.
 */
static SagaPlan finish_plan = {
	"UPDATE saga.instance"
	"   SET status = $2, reason = $3, finished_at = clock_timestamp(),"
	"       finish_seq = nextval('saga.trace_seq')"
	" WHERE id = $1 AND status = 'pending' AND pg_has_role($4, owner::oid, 'USAGE')",
	4, {INT8OID, TEXTOID, TEXTOID, OIDOID}
};

static SagaPlan look_plan = {
	"SELECT owner::oid, status FROM saga.instance WHERE id = $1",
	1, {INT8OID}
};

static SagaPlan owner_plan = {
	"SELECT owner::oid FROM saga.instance WHERE id = $1",
	1, {INT8OID}
};

/*
 * May role act for the owner of a saga (publish into it, finish it)?
 * A superuser may, without a look at the table.  *exists tells whether the
 * saga exists (it is only looked up for other roles).
 */
bool
saga_may_act_for(Oid role, int64 saga_id, bool *exists)
{
	Datum		arg = Int64GetDatum(saga_id);
	Oid			save_userid;
	int			save_sec_context;
	bool		isnull;
	Oid			owner;

	*exists = true;
	if (superuser_arg(role))
		return true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	saga_execute(&owner_plan, &arg, NULL, false, 0);
	saga_end_as_owner(save_userid, save_sec_context);
	*exists = SPI_processed > 0;
	owner = *exists ? DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull))
		: InvalidOid;
	SPI_finish();
	return *exists && has_privs_of_role(role, owner);
}

static SagaPlan status_plan = {
	"SELECT status, xmin FROM saga.instance WHERE id = $1",
	1, {INT8OID}
};

/*
 * saga_begin(saga_type text) returns bigint
 */
Datum
saga_begin(PG_FUNCTION_ARGS)
{
	char	   *saga_type = saga_check_name(fcinfo, 0, "saga_type");
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		no_deadline;
	Oid			save_userid;
	int			save_sec_context;
	bool		isnull;
	int64		id;

	values[0] = CStringGetTextDatum(saga_type);
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = Float8GetDatum(saga_deadline_ms(fcinfo, 1, &no_deadline));
	if (no_deadline)
		nulls[2] = 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	saga_execute(&begin_plan, values, nulls, false, 0);
	saga_end_as_owner(save_userid, save_sec_context);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	saga_count(SAGA_COUNT_STARTED, 1);
	PG_RETURN_INT64(id);
}

/* Finish a pending saga; the caller must act for the saga's owner. */
static void
finish_saga(int64 saga_id, const char *status, text *reason)
{
	Oid			caller = GetUserId();
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	SagaAsOwner as_owner;

	saga_spi_connect_as_owner(&as_owner);

	values[0] = Int64GetDatum(saga_id);
	values[1] = CStringGetTextDatum(status);
	if (reason != NULL)
		values[2] = PointerGetDatum(reason);
	else
		nulls[2] = 'n';
	values[3] = ObjectIdGetDatum(caller);
	saga_execute(&finish_plan, values, nulls, false, 0);
	if (SPI_processed == 0)
	{
		bool		isnull;
		Oid			owner;
		char	   *current;

		/* why not: in the order the checks have always been made */
		saga_execute(&look_plan, values, NULL, false, 0);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("saga %lld does not exist", (long long) saga_id)));
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		current = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2, &isnull));
		if (!has_privs_of_role(caller, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to finish saga %lld", (long long) saga_id),
					 errdetail("Only the role that began a saga may finish it.")));
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("saga %lld is already %s", (long long) saga_id, current)));
	}

	saga_spi_finish_as_owner(&as_owner);
	saga_note_finished(saga_id);
	saga_count(strcmp(status, "completed") == 0 ? SAGA_COUNT_COMPLETED : SAGA_COUNT_FAILED, 1);
}

/*
 * saga_complete(saga_id): a choreographed saga's participant says it ended well.
 */
Datum
saga_complete(PG_FUNCTION_ARGS)
{
	finish_saga(PG_GETARG_INT64(0), "completed", NULL);
	PG_RETURN_VOID();
}

/*
 * saga_fail(saga_id, reason): a choreographed saga's participant says it failed.
 */
Datum
saga_fail(PG_FUNCTION_ARGS)
{
	finish_saga(PG_GETARG_INT64(0), "failed", PG_GETARG_TEXT_PP(1));
	PG_RETURN_VOID();
}

/*
 * Look a saga's status up with a fresh snapshot; the caller is connected
 * to SPI.  Errors out if it does not exist.  *mine tells whether the
 * current transaction created it.
 */
static char *
lookup_status(int64 saga_id, bool *mine)
{
	Datum		arg = Int64GetDatum(saga_id);
	Oid			save_userid;
	int			save_sec_context;
	bool		isnull;
	char	   *status;

	saga_begin_as_owner(&save_userid, &save_sec_context);
	saga_execute(&status_plan, &arg, NULL, false, 0);
	saga_end_as_owner(save_userid, save_sec_context);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga %lld does not exist", (long long) saga_id)));
	status = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	if (mine)
		*mine = TransactionIdIsCurrentTransactionId(
			DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 2, &isnull)));
	SPI_freetuptable(SPI_tuptable);
	return status;
}

/* A text datum that survives SPI_finish(). */
static text *
text_in_caller_context(const char *s)
{
	Size		len = strlen(s);
	text	   *t = (text *) SPI_palloc(VARHDRSZ + len);

	SET_VARSIZE(t, VARHDRSZ + len);
	memcpy(VARDATA(t), s, len);
	return t;
}

/*
 * saga_status(saga_id): 'pending', 'completed' or 'failed', for the roles
 * that may see the saga (grants.c); an error for others, and for a saga
 * that does not exist.
 */
Datum
saga_status(PG_FUNCTION_ARGS)
{
	char	   *status;
	text	   *result;

	saga_check_visible(PG_GETARG_INT64(0));	/* its owner's, and grantees' */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	status = lookup_status(PG_GETARG_INT64(0), NULL);
	result = text_in_caller_context(status);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

/* Milliseconds in an interval (a month counts 30 days). */
double
saga_interval_ms(Interval *iv)
{
	return (double) iv->time / 1000.0 +
		(double) iv->day * (double) (SECS_PER_DAY * 1000) +
		(double) iv->month * DAYS_PER_MONTH * (double) (SECS_PER_DAY * 1000);
}

/* Milliseconds in an interval, for a timeout; errors if negative. */
static long
interval_to_timeout_ms(Interval *iv)
{
	double		ms = saga_interval_ms(iv);

	if (ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	/* a timeout longer than about 24 days is as good as forever */
	return (long) Min(ms, (double) PG_INT32_MAX);
}

/* How often saga_await() looks at the saga on a hot standby. */
#define SAGA_STANDBY_AWAIT_MS	50

/*
 * saga_await(saga_id bigint, timeout interval) returns text
 *
 * Returns the saga's status once it is no longer pending, or 'pending' when
 * the timeout has passed.  Each look at the instance allocates its status
 * anew; the one that ends the loop, finished or still pending, is the one
 * returned (copied out of SPI's memory), the others are freed.
 *
 * RecoveryInProgress() is asked before each sleep: a standby promoted
 * while we wait commits transactions of its own from then on, which
 * broadcast the condition variable as on any primary.
 */
Datum
saga_await(PG_FUNCTION_ARGS)
{
	int64		saga_id = PG_GETARG_INT64(0);
	long		timeout_ms = interval_to_timeout_ms(PG_GETARG_INTERVAL_P(1));
	TimestampTz deadline;
	ConditionVariable *cv = saga_await_cv(saga_id);
	char	   *status;
	bool		first = true;
	text	   *result;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("saga_await() cannot see a saga finish in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Call it in a READ COMMITTED transaction.")));

	saga_check_visible(saga_id);	/* its owner's, and grantees' */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	for (;;)
	{
		bool		mine;
		long		remaining;

		if (cv != NULL)
			ConditionVariablePrepareToSleep(cv);

		status = lookup_status(saga_id, &mine);
		if (strcmp(status, "pending") != 0)
			break;
		if (first && mine)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("saga %lld was started in this transaction", (long long) saga_id),
					 errhint("Commit first: nothing can run the saga before it is committed.")));
		first = false;

		/* timed out: the answer is the 'pending' just read */
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		/* not before: status is returned when the loop ends */
		pfree(status);

		if (cv != NULL)
		{
			/* on a standby, nothing broadcasts it: look again soon */
			if (RecoveryInProgress())
				remaining = Min(remaining, Min(SAGA_STANDBY_AWAIT_MS, saga_poll_interval));
			(void) ConditionVariableTimedSleep(cv, remaining, PG_WAIT_EXTENSION);
		}
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 10), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}
	if (cv != NULL)
		ConditionVariableCancelSleep();

	result = text_in_caller_context(status);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}
