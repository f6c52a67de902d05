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
 * Retrying a dead letter is refused when it would run forward work of a
 * saga that has ended or been aborted (nothing but compensation runs
 * after that), and when its subscription is gone (nothing would run it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "saga.h"
#include "publish.h"
#include "spi_util.h"
#include "wakeup.h"


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

static SagaPlan retry_look_plan = {
	"SELECT d.status, s.id IS NOT NULL, coalesce(s.forward, true), e.saga_id,"
	"       CASE WHEN i.aborted_at IS NOT NULL THEN 'was aborted'"
	"            WHEN i.status <> 'pending' THEN 'has ' || i.status END,"
	"       i.id IS NOT NULL AND s.on_failure IS NOT NULL"
	"  FROM saga.delivery d"
	"  JOIN saga.event e ON e.id = d.event_id"
	"  LEFT JOIN saga.subscription s ON s.id = d.subscription_id"
	"  LEFT JOIN saga.instance i ON i.id = e.saga_id"
	" WHERE d.id = $1"
	"   FOR UPDATE OF d",
	1, {INT8OID}
};

/* Run one statement as the tables' owner; returns the rows it touched. */
static uint64
run_as_owner(SagaPlan *plan, Datum arg)
{
	SagaAsOwner as_owner;
	uint64		n;

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(plan, &arg, NULL, false, 0);
	n = SPI_processed;
	saga_spi_finish_as_owner(&as_owner);
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
 *
 * Returns false if the delivery is not dead.
 */
Datum
saga_retry_delivery(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Datum		arg = Int64GetDatum(id);
	SagaAsOwner as_owner;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *status;
	char	   *saga_over;
	bool		retried;

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&retry_look_plan, &arg, NULL, false, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("delivery %lld does not exist", (long long) id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	status = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	saga_over = SPI_getvalue(tup, desc, 5);
	if (strcmp(status, "dead") != 0)
		retried = false;
	else if (!DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("delivery %lld cannot be retried: its subscription was removed",
						(long long) id),
				 errhint("Subscribe the consumer again and publish the event anew.")));
	else if (DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)) && saga_over != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("delivery %lld cannot be retried: saga %s %s",
						(long long) id, SPI_getvalue(tup, desc, 4), saga_over),
				 errdetail("It is forward work of that saga, and nothing but compensation runs "
						   "after a saga has ended or been aborted."),
				 errhint("Its compensations have run or will run; nothing is left to do for it.")));
	else if (DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("delivery %lld cannot be retried: its on_failure event was published into saga %s",
						(long long) id, SPI_getvalue(tup, desc, 4)),
				 errdetail("When it died, the saga's other participants were told, and took over "
						   "(compensating); running it again would publish the failure twice."),
				 errhint("If the saga is still pending with nothing left to do, end it with saga_fail() or saga_cancel().")));
	else
	{
		saga_execute(&retry_delivery_plan, &arg, NULL, false, 0);
		retried = SPI_processed > 0;
	}
	saga_spi_finish_as_owner(&as_owner);

	if (retried)
		saga_note_published();
	PG_RETURN_BOOL(retried);
}
