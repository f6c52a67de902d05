/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  The outbox and its subscriptions: saga_publish(), saga_subscribe(),
 *	  saga_unsubscribe().
 *
 * Publishing an event inserts it and one pending delivery per subscription
 * to its type, in the publishing transaction: the event exists exactly
 * when the writes that produced it commit.  Inside a handler, the event
 * being handled is the default saga id and cause, and the handler's
 * consumer the default publisher, so a choreographed saga's events chain
 * up without the handlers passing ids around.
 *
 * A subscription may be for one saga type only (1.2): it then receives the
 * events of that type's sagas and no others, so that a shop's services do
 * not hear of a trip's SagaAborted.
 *
 * An event type belongs to a role (1.2, grants.c): another role subscribes
 * to it or publishes it only with its owner's grant.  Any role may
 * subscribe to the engine's SagaAborted, but it reaches a subscription only
 * if its role may see the saga (grants.c): it tells the saga's type and
 * the reason it was aborted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "saga.h"
#include "batch.h"
#include "dispatch.h"
#include "grants.h"
#include "instance.h"
#include "publish.h"
#include "shmem.h"
#include "spi_util.h"
#include "stats.h"
#include "wakeup.h"


#define SAGA_MAX_NAME	200

PG_FUNCTION_INFO_V1(saga_publish);
PG_FUNCTION_INFO_V1(saga_subscribe);
PG_FUNCTION_INFO_V1(saga_unsubscribe);

/*
 * Publish: the event, and a delivery for each subscription to it.  The
 * head and tail are shared with the plan for a database still at 1.1.
 */
#define PUBLISH_HEAD \
	"WITH e AS (" \
	"  INSERT INTO saga.event (event_type, saga_id, payload, publisher, caused_by)" \
	"  VALUES ($1, $2, $3, $4, $5)" \
	"  RETURNING id)," \
	" d AS (" \
	"  INSERT INTO saga.delivery (event_id, subscription_id)" \
	"  SELECT e.id, s.id FROM e, saga.subscription s" \
	"   WHERE s.event_type = $1"
/*
 * Which subscriptions of event type $1 an event of saga $2 reaches: those
 * for every saga type or for its, and for SagaAborted only those whose
 * role may see the saga.  The SagaAborted part is a plan of its own: its
 * subplans would be set up at every other event's publication too.
 */
#define SUBSCRIBERS_FILTER \
	"     AND (s.saga_type IS NULL OR" \
	"          s.saga_type = (SELECT i.saga_type FROM saga.instance i WHERE i.id = $2))"
#define SUBSCRIBERS_ABORTED_FILTER \
	SUBSCRIBERS_FILTER \
	"     AND EXISTS (SELECT FROM saga.instance i" \
	"                  WHERE i.id = $2" \
	"                    AND (pg_has_role(s.owner::oid, i.owner::oid, 'USAGE') OR" \
	"                         EXISTS (SELECT FROM saga.saga_grant g" \
	"                                  WHERE g.saga_type = i.saga_type AND g.owner = i.owner" \
	"                                    AND (g.grantee = 0 OR" \
	"                                         pg_has_role(s.owner::oid, g.grantee::oid, 'USAGE')))))"
#define PUBLISH_TAIL \
	"   ORDER BY s.id)" \
	"SELECT id FROM e"

static SagaPlan publish_plan = {
	PUBLISH_HEAD
	SUBSCRIBERS_FILTER
	PUBLISH_TAIL,
	5, {TEXTOID, INT8OID, JSONBOID, TEXTOID, INT8OID}
};

static SagaPlan publish_aborted_plan = {
	PUBLISH_HEAD
	SUBSCRIBERS_ABORTED_FILTER
	PUBLISH_TAIL,
	5, {TEXTOID, INT8OID, JSONBOID, TEXTOID, INT8OID}
};

/*
 * In a batch's handler (batch.c): the event, and the subscriptions
 * publish_plan would make deliveries for, which wait in memory; one row
 * per subscription, or one with a null subscription when there is none.
 */
#define PUBLISH_DEFER_HEAD \
	"WITH e AS (" \
	"  INSERT INTO saga.event (event_type, saga_id, payload, publisher, caused_by)" \
	"  VALUES ($1, $2, $3, $4, $5)" \
	"  RETURNING id) " \
	"SELECT e.id, s.id FROM e LEFT JOIN saga.subscription s" \
	"    ON s.event_type = $1"

static SagaPlan publish_defer_plan = {
	PUBLISH_DEFER_HEAD
	SUBSCRIBERS_FILTER
	" ORDER BY s.id",
	5, {TEXTOID, INT8OID, JSONBOID, TEXTOID, INT8OID}
};

static SagaPlan publish_defer_aborted_plan = {
	PUBLISH_DEFER_HEAD
	SUBSCRIBERS_ABORTED_FILTER
	" ORDER BY s.id",
	5, {TEXTOID, INT8OID, JSONBOID, TEXTOID, INT8OID}
};

/* The same before 1.2, whose subscriptions are for every saga type. */
static SagaPlan publish_plan_1_1 = {
	PUBLISH_HEAD
	PUBLISH_TAIL,
	5, {TEXTOID, INT8OID, JSONBOID, TEXTOID, INT8OID}
};

static SagaPlan find_subscription_plan = {
	"SELECT id, owner::oid FROM saga.subscription"
	" WHERE consumer = $1 AND event_type = $2"
	"   FOR UPDATE",
	2, {TEXTOID, TEXTOID}
};

static SagaPlan subscribe_plan = {
	"INSERT INTO saga.subscription (consumer, event_type, handler, owner,"
	"                               on_failure, forward, saga_type)"
	" VALUES ($1, $2, $3::oid::regprocedure, $4::oid::regrole, $5, $6, $7)"
	" RETURNING id",
	7, {TEXTOID, TEXTOID, OIDOID, OIDOID, TEXTOID, BOOLOID, TEXTOID}
};

static SagaPlan subscribe_plan_1_1 = {
	"INSERT INTO saga.subscription (consumer, event_type, handler, owner,"
	"                               on_failure, forward)"
	" VALUES ($1, $2, $3::oid::regprocedure, $4::oid::regrole, $5, $6)"
	" RETURNING id",
	6, {TEXTOID, TEXTOID, OIDOID, OIDOID, TEXTOID, BOOLOID}
};

static SagaPlan unsubscribe_plan = {
	"WITH s AS (DELETE FROM saga.subscription WHERE id = $1 RETURNING id)"
	" DELETE FROM saga.delivery d USING s"
	"  WHERE d.subscription_id = s.id AND d.status = 'pending'",
	1, {INT4OID}
};

/*
 * Check a name argument (event type, consumer, saga type) and return it as
 * a C string.
 */
char *
saga_check_name(FunctionCallInfo fcinfo, int argno, const char *what)
{
	char	   *name;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (name[strspn(name, " \t\r\n")] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (pg_mbstrlen(name) > SAGA_MAX_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long (%d characters)", what, pg_mbstrlen(name)),
				 errhint("Names are limited to %d characters.", SAGA_MAX_NAME)));
	return name;
}

/*
 * A JSON object of npairs string keys and values, given as key, value,
 * key, value, ...
 */
Jsonb *
saga_jsonb_strings(int npairs,...)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	va_list		args;
	int			i;

	va_start(args, npairs);
	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < npairs * 2; i++)
	{
		JsonbValue	v;

		v.type = jbvString;
		v.val.string.val = va_arg(args, char *);
		v.val.string.len = strlen(v.val.string.val);
		(void) pushJsonbValue(&state, i % 2 == 0 ? WJB_KEY : WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	va_end(args);
	return JsonbValueToJsonb(res);
}

/*
 * Publish an event (and its deliveries) as the tables' owner; saga_id and
 * caused_by are optional (has_...).  Returns the event's id.
 */
int64
saga_publish_event(const char *event_type, Jsonb *payload,
				   bool has_saga_id, int64 saga_id, const char *publisher,
				   bool has_cause, int64 caused_by)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Oid			save_userid;
	int			save_sec_context;
	int64		event_id;
	bool		isnull;
	bool		aborted = strcmp(event_type, SAGA_ABORTED_EVENT) == 0;

	values[0] = CStringGetTextDatum(event_type);
	values[1] = Int64GetDatum(saga_id);
	nulls[1] = has_saga_id ? ' ' : 'n';
	values[2] = JsonbPGetDatum(payload);
	values[3] = CStringGetTextDatum(publisher);
	values[4] = Int64GetDatum(caused_by);
	nulls[4] = has_cause ? ' ' : 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	if (saga_batch_deferring())
	{
		uint64		i;

		/* a later round of this batch runs its deliveries (batch.c) */
		saga_execute(aborted ? &publish_defer_aborted_plan : &publish_defer_plan,
					 values, nulls, false, 0);
		event_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		for (i = 0; i < SPI_processed; i++)
		{
			Datum		subscription_id = SPI_getbinval(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 2, &isnull);

			if (!isnull)
				saga_batch_defer(event_id, DatumGetInt32(subscription_id),
								 has_saga_id ? saga_id : 0);
		}
		saga_end_as_owner(save_userid, save_sec_context);
		SPI_finish();
		saga_count(SAGA_COUNT_EVENTS, 1);
		return event_id;
	}
	saga_execute(!saga_schema_is_1_2() ? &publish_plan_1_1 :
				 aborted ? &publish_aborted_plan : &publish_plan,
				 values, nulls, false, 0);
	saga_end_as_owner(save_userid, save_sec_context);
	event_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	saga_note_published();
	saga_count(SAGA_COUNT_EVENTS, 1);
	return event_id;
}

/*
 * saga_publish(event_type text, payload jsonb, saga_id bigint, publisher text)
 */
Datum
saga_publish(PG_FUNCTION_ARGS)
{
	char	   *event_type = saga_check_name(fcinfo, 0, "event_type");
	Jsonb	   *payload;
	bool		has_saga_id = true;
	int64		saga_id = 0;
	const char *publisher;
	SagaCurrentDelivery *cur = saga_current_delivery;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Publish '{}' for an event without data.")));
	payload = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object")));

	/*
	 * saga id: given, else the one of the event being handled, else none.
	 * Only a role that acts for a saga's owner may publish into it: else
	 * anyone allowed to publish could steer anyone's saga.  An inherited id
	 * that the handler's role may not use is dropped: its event is then
	 * published outside the saga.
	 */
	if (!PG_ARGISNULL(2))
	{
		bool		exists;

		saga_id = PG_GETARG_INT64(2);
		if (!saga_may_act_for(GetUserId(), saga_id, &exists))
			ereport(ERROR,
					(errcode(exists ? ERRCODE_INSUFFICIENT_PRIVILEGE : ERRCODE_UNDEFINED_OBJECT),
					 exists ?
					 errmsg("permission denied to publish into saga %lld", (long long) saga_id) :
					 errmsg("saga %lld does not exist", (long long) saga_id),
					 exists ? errdetail("Only a role acting for a saga's owner may publish its events.") : 0,
					 exists ? errhint("Publish it as a member of the saga's owner role, or pass NULL as the saga id to publish it outside the saga.") : 0));
	}
	else if (cur != NULL && cur->has_saga_id)
	{
		bool		exists;

		saga_id = cur->saga_id;
		has_saga_id = saga_may_act_for(GetUserId(), saga_id, &exists);
	}
	else
		has_saga_id = false;

	/* only the type's owner, and the roles it allows, publish it (1.2) */
	saga_check_event_right(event_type, true, GetUserId());

	/* publisher: given, else the handler's consumer, else the current role */
	if (!PG_ARGISNULL(3))
		publisher = saga_check_name(fcinfo, 3, "publisher");
	else if (cur != NULL)
		publisher = cur->consumer;
	else
		publisher = GetUserNameFromId(GetUserId(), false);

	PG_RETURN_INT64(saga_publish_event(event_type, payload, has_saga_id, saga_id,
									   publisher, cur != NULL,
									   cur != NULL ? cur->event_id : 0));
}

/* The row type of saga.event, which every handler takes. */
static Oid
event_row_type(void)
{
	Oid			nsp = get_namespace_oid(SAGA_SCHEMA, false);

	return get_rel_type_id(get_relname_relid("event", nsp));
}

/*
 * saga_subscribe(consumer text, event_type text, handler regprocedure,
 *				  on_failure text, forward boolean, saga_type text)
 *
 * saga_type (1.2; NULL: every saga type, and events outside sagas)
 * restricts the subscription to the events of one type's sagas.
 */
Datum
saga_subscribe(PG_FUNCTION_ARGS)
{
	char	   *consumer = saga_check_name(fcinfo, 0, "consumer");
	char	   *event_type = saga_check_name(fcinfo, 1, "event_type");
	Oid			handler;
	char	   *on_failure = NULL;
	char	   *saga_type = NULL;
	bool		forward = PG_ARGISNULL(4) ? true : PG_GETARG_BOOL(4);
	Oid			caller = GetUserId();
	HeapTuple	proctup;
	Form_pg_proc proc;
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SagaAsOwner as_owner;
	bool		isnull;
	int32		id;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("handler must not be null")));
	handler = PG_GETARG_OID(2);
	if (!PG_ARGISNULL(3))
		on_failure = saga_check_name(fcinfo, 3, "on_failure");
	if (PG_NARGS() > 5 && !PG_ARGISNULL(5))
		saga_type = saga_check_name(fcinfo, 5, "saga_type");

	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(proctup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(proctup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset ||
		proc->pronargs != 1 || proc->proargtypes.values[0] != event_row_type())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s cannot be a saga handler", format_procedure(handler)),
				 errdetail("A handler is a function (not a procedure or set-returning function) "
						   "that takes exactly one argument of type saga.event."),
				 errhint("CREATE FUNCTION my_handler(e saga.event) RETURNS void ...")));
	ReleaseSysCache(proctup);

	if (pg_proc_aclcheck(handler, caller, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(handler)),
				 errdetail("Handlers run as the role that subscribes them, which must be allowed to execute them.")));

	/*
	 * Another role's event type needs its grant (1.2); so does the
	 * on_failure event, published for the subscriber.  A type nobody owns
	 * yet becomes the caller's.
	 */
	saga_check_event_right(event_type, false, caller);
	if (on_failure != NULL)
		saga_check_event_right(on_failure, true, caller);

	saga_spi_connect_as_owner(&as_owner);

	values[0] = CStringGetTextDatum(consumer);
	values[1] = CStringGetTextDatum(event_type);
	saga_execute(&find_subscription_plan, values, NULL, false, 0);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("consumer \"%s\" already subscribes to \"%s\"", consumer, event_type),
				 errhint("Call saga_unsubscribe('%s', '%s') first to replace its handler.",
						 consumer, event_type)));

	values[2] = ObjectIdGetDatum(handler);
	values[3] = ObjectIdGetDatum(caller);
	values[4] = on_failure ? CStringGetTextDatum(on_failure) : (Datum) 0;
	nulls[4] = on_failure ? ' ' : 'n';
	values[5] = BoolGetDatum(forward);
	values[6] = saga_type ? CStringGetTextDatum(saga_type) : (Datum) 0;
	nulls[6] = saga_type ? ' ' : 'n';
	saga_execute(saga_schema_is_1_2() ? &subscribe_plan : &subscribe_plan_1_1,
				 values, nulls, false, 0);
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));

	saga_spi_finish_as_owner(&as_owner);
	PG_RETURN_INT32(id);
}

/*
 * saga_unsubscribe(consumer text, event_type text) returns boolean
 *
 * Only the subscription's owner (or a member of it, or a superuser) may
 * remove it.  Its pending deliveries go with it; done ones stay for the
 * record.
 */
Datum
saga_unsubscribe(PG_FUNCTION_ARGS)
{
	char	   *consumer = saga_check_name(fcinfo, 0, "consumer");
	char	   *event_type = saga_check_name(fcinfo, 1, "event_type");
	Oid			caller = GetUserId();
	Datum		values[2];
	SagaAsOwner as_owner;
	bool		found = false;

	saga_spi_connect_as_owner(&as_owner);

	values[0] = CStringGetTextDatum(consumer);
	values[1] = CStringGetTextDatum(event_type);
	saga_execute(&find_subscription_plan, values, NULL, false, 0);
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 2, &isnull));

		if (!has_privs_of_role(caller, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to unsubscribe consumer \"%s\" from \"%s\"",
							consumer, event_type),
					 errdetail("Only the role that subscribed it may remove a subscription.")));
		saga_execute(&unsubscribe_plan, &id, NULL, false, 0);
		found = true;
	}

	saga_spi_finish_as_owner(&as_owner);
	PG_RETURN_BOOL(found);
}
