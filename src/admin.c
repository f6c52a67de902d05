/*-------------------------------------------------------------------------
 *
 * admin.c
 *	  An operator's controls: pausing and resuming a consumer, retrying a
 *	  dead letter.
 *
 * Pausing a consumer holds its deliveries, and the orchestrated steps of
 * the service of that name, until it is resumed: a planned outage of a
 * service.  Its work waits (or its sagas' deadlines abort them).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "saga.h"

PG_FUNCTION_INFO_V1(saga_pause_consumer);
PG_FUNCTION_INFO_V1(saga_resume_consumer);
PG_FUNCTION_INFO_V1(saga_retry_delivery);

static SagaPlan pause_plan = {
	"INSERT INTO saga.paused_consumer (consumer) VALUES ($1)"
	" ON CONFLICT (consumer) DO NOTHING",
	1, {TEXTOID}
};

static SagaPlan resume_plan = {
	"DELETE FROM saga.paused_consumer WHERE consumer = $1",
	1, {TEXTOID}
};

static SagaPlan retry_delivery_plan = {
	"UPDATE saga.delivery"
	"   SET status = 'pending', attempts = 0, next_attempt_at = now()"
	" WHERE id = $1 AND status = 'dead'",
	1, {INT8OID}
};

static SagaPlan delivery_exists_plan = {
	"SELECT 1 FROM saga.delivery WHERE id = $1",
	1, {INT8OID}
};

/* Run one statement as the tables' owner; returns the rows it touched. */
static uint64
run_as_owner(SagaPlan *plan, Datum arg)
{
	Oid			save_userid;
	int			save_sec_context;
	uint64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	saga_execute(plan, &arg, NULL, false, 0);
	n = SPI_processed;
	saga_end_as_owner(save_userid, save_sec_context);
	SPI_finish();
	return n;
}

/*
 * saga_pause_consumer(consumer text) returns boolean
 */
Datum
saga_pause_consumer(PG_FUNCTION_ARGS)
{
	char	   *consumer = saga_check_name(fcinfo, 0, "consumer");

	PG_RETURN_BOOL(run_as_owner(&pause_plan, CStringGetTextDatum(consumer)) > 0);
}

/*
 * saga_resume_consumer(consumer text) returns boolean
 */
Datum
saga_resume_consumer(PG_FUNCTION_ARGS)
{
	char	   *consumer = saga_check_name(fcinfo, 0, "consumer");
	bool		resumed;

	resumed = run_as_owner(&resume_plan, CStringGetTextDatum(consumer)) > 0;
	if (resumed)
		saga_note_published();	/* its waiting work is due: wake a worker */
	PG_RETURN_BOOL(resumed);
}

/*
 * saga_retry_delivery(delivery_id bigint) returns boolean
 */
Datum
saga_retry_delivery(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);

	if (run_as_owner(&retry_delivery_plan, Int64GetDatum(id)) > 0)
	{
		saga_note_published();
		PG_RETURN_BOOL(true);
	}
	if (run_as_owner(&delivery_exists_plan, Int64GetDatum(id)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("delivery %lld does not exist", (long long) id)));
	PG_RETURN_BOOL(false);
}
