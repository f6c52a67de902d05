/*-------------------------------------------------------------------------
 *
 * grants.c
 *	  Who may see and subscribe to what (1.2): owners of event types and
 *	  their grants, and who may see a saga's status and trace.
 *
 * Subscriptions run as the role that made them and receive every event of
 * their type; publishing inserts events that others' handlers act upon.
 * Without owners, any role allowed to subscribe read every other role's
 * events, and any role allowed to publish forged them.  So an event type
 * belongs to a role (saga.event_type): the first that publishes it,
 * subscribes to it or grants on it.  Another role subscribes to it or
 * publishes it only with a grant of its owner's (saga.event_grant,
 * saga_grant_events()), to itself, to a role it has the privileges of, or
 * to PUBLIC (grantee 0).
 *
 * A saga's status and trace belong to its owner likewise: they are shown to
 * the roles that have the owner's privileges, and to those the owner
 * granted its sagas of that type to (saga.saga_grant, saga_grant_sagas()).
 * saga_trace() and saga_trace_mermaid() are C functions for that reason: a
 * SECURITY DEFINER function cannot tell who called it.  They check the
 * caller, then run the SQL functions of the same names in schema saga as
 * the tables' owner.
 *
 * saga_publish() is on the hot path: the right to publish a type is looked
 * up once per transaction, role and type (the last few are remembered),
 * with one index scan.  A database whose schema is older than 1.2 has none of these
 * tables: there, as before 1.2, nothing is checked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "saga.h"
#include "grants.h"
#include "publish.h"
#include "spi_util.h"


PG_FUNCTION_INFO_V1(saga_grant_events);
PG_FUNCTION_INFO_V1(saga_revoke_events);
PG_FUNCTION_INFO_V1(saga_grant_sagas);
PG_FUNCTION_INFO_V1(saga_revoke_sagas);
PG_FUNCTION_INFO_V1(saga_trace);
PG_FUNCTION_INFO_V1(saga_trace_mermaid);

static SagaPlan event_type_plan = {
	"SELECT t.owner::oid,"
	"       ARRAY(SELECT g.grantee::oid FROM saga.event_grant g"
	"              WHERE g.event_type = t.name AND g.privilege = $2)"
	"  FROM saga.event_type t WHERE t.name = $1",
	2, {TEXTOID, TEXTOID}
};

static SagaPlan register_type_plan = {
	"INSERT INTO saga.event_type (name, owner) VALUES ($1, $2::oid::regrole)"
	" ON CONFLICT (name) DO NOTHING",
	2, {TEXTOID, OIDOID}
};

static SagaPlan grant_event_plan = {
	"INSERT INTO saga.event_grant (event_type, grantee, privilege)"
	" VALUES ($1, $2::oid::regrole, $3) ON CONFLICT DO NOTHING",
	3, {TEXTOID, OIDOID, TEXTOID}
};

static SagaPlan revoke_event_plan = {
	"DELETE FROM saga.event_grant"
	" WHERE event_type = $1 AND grantee = $2::oid::regrole AND privilege = $3",
	3, {TEXTOID, OIDOID, TEXTOID}
};

static SagaPlan type_subscriptions_plan = {
	"SELECT id, owner::oid FROM saga.subscription WHERE event_type = $1 ORDER BY id",
	1, {TEXTOID}
};

static SagaPlan drop_subscription_plan = {
	"WITH s AS (DELETE FROM saga.subscription WHERE id = $1 RETURNING id)"
	" DELETE FROM saga.delivery d USING s"
	"  WHERE d.subscription_id = s.id AND d.status = 'pending'",
	1, {INT4OID}
};

static SagaPlan grant_saga_plan = {
	"INSERT INTO saga.saga_grant (saga_type, owner, grantee)"
	" VALUES ($1, $2::oid::regrole, $3::oid::regrole) ON CONFLICT DO NOTHING",
	3, {TEXTOID, OIDOID, OIDOID}
};

static SagaPlan revoke_saga_plan = {
	"DELETE FROM saga.saga_grant"
	" WHERE saga_type = $1 AND owner = $2::oid::regrole AND grantee = $3::oid::regrole",
	3, {TEXTOID, OIDOID, OIDOID}
};

static SagaPlan visible_plan = {
	"SELECT i.owner::oid, i.saga_type,"
	"       ARRAY(SELECT g.grantee::oid FROM saga.saga_grant g"
	"              WHERE g.saga_type = i.saga_type AND g.owner = i.owner)"
	"  FROM saga.instance i WHERE i.id = $1",
	1, {INT8OID}
};

static SagaPlan trace_plan = {
	"SELECT * FROM saga.saga_trace($1)",
	1, {INT8OID}
};

static SagaPlan mermaid_plan = {
	"SELECT saga.saga_trace_mermaid($1)",
	1, {INT8OID}
};

/*
 * The event types that roles were found allowed to publish in this
 * transaction (a worker's batch publishes a few types over and over):
 * remembered until it ends, or until this session changes a grant.
 */
#define SAGA_KNOWN_TYPES	8

typedef struct KnownType
{
	Oid			role;
	char		name[4 * 200 + 1];	/* saga_check_name's limit, in bytes */
} KnownType;

static KnownType known_types[SAGA_KNOWN_TYPES];
static int	n_known_types = 0;
static int	next_known_type = 0;	/* the one to replace when full */
static LocalTransactionId known_lxid = InvalidLocalTransactionId;

/*
 * Forget the event types known to be allowed (the rights may have changed).
 */
static void
forget_known_type(void)
{
	known_lxid = InvalidLocalTransactionId;
}

/* Was role found allowed to publish event_type in this transaction? */
static bool
is_known_type(const char *event_type, Oid role)
{
	int			i;

	if (known_lxid != MyProc->lxid)
	{
		n_known_types = 0;
		next_known_type = 0;
		known_lxid = MyProc->lxid;
		return false;
	}
	for (i = 0; i < n_known_types; i++)
		if (known_types[i].role == role && strcmp(known_types[i].name, event_type) == 0)
			return true;
	return false;
}

/*
 * Remember, for the rest of this transaction, that role may publish
 * event_type, so that a transaction publishing many events of one type
 * checks the right once.  A name too long for the cache is not kept.
 */
static void
remember_known_type(const char *event_type, Oid role)
{
	KnownType  *k;

	if (strlen(event_type) >= sizeof(known_types[0].name))
		return;
	if (n_known_types < SAGA_KNOWN_TYPES)
		k = &known_types[n_known_types++];
	else
	{
		k = &known_types[next_known_type];
		next_known_type = (next_known_type + 1) % SAGA_KNOWN_TYPES;
	}
	k->role = role;
	strcpy(k->name, event_type);
}

/* Does role have the privileges of owner or of one of the grantees? */
static bool
role_is_allowed(Oid role, Oid owner, Datum grantees)
{
	ArrayType  *arr = DatumGetArrayTypeP(grantees);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	bool		allowed = false;

	if (has_privs_of_role(role, owner))
		return true;
	deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n && !allowed; i++)
	{
		Oid			g = DatumGetObjectId(elems[i]);

		allowed = !nulls[i] && (g == InvalidOid || has_privs_of_role(role, g));
	}
	return allowed;
}

/*
 * May role subscribe to (or publish) event_type?  An event type nobody owns
 * becomes role's when register is true.  *owner is set to the type's
 * owner (InvalidOid if it has none).  The caller is connected to SPI and
 * acts as the tables' owner.
 */
static bool
event_right(const char *event_type, bool publish, Oid role, bool register_it, Oid *owner)
{
	Datum		values[2];
	bool		isnull;
	Datum		grantees;

	values[0] = CStringGetTextDatum(event_type);
	values[1] = CStringGetTextDatum(publish ? "publish" : "subscribe");
	saga_execute(&event_type_plan, values, NULL, false, 0);
	if (SPI_processed == 0)
	{
		*owner = InvalidOid;
		if (!register_it)
			return false;
		values[1] = ObjectIdGetDatum(role);
		saga_execute(&register_type_plan, values, NULL, false, 0);
		/* another transaction may have been first: look again */
		values[1] = CStringGetTextDatum(publish ? "publish" : "subscribe");
		saga_execute(&event_type_plan, values, NULL, false, 0);
		if (SPI_processed == 0)
			elog(ERROR, "event type \"%s\" could not be registered", event_type);
	}
	*owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	grantees = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return role_is_allowed(role, *owner, grantees);
}

/* A role's name for a message, also when it was dropped. */
static const char *
role_name(Oid role)
{
	char	   *name = GetUserNameFromId(role, true);

	return name ? name : psprintf("%u", role);
}

/*
 * Error out unless role may subscribe to (or publish) event_type; a type
 * that nobody owns becomes role's.  Before 1.2, nothing is checked.
 */
void
saga_check_event_right(const char *event_type, bool publish, Oid role)
{
	SagaAsOwner as_owner;
	Oid			owner;
	bool		allowed;

	if (!saga_schema_is_1_2())
		return;
	if (publish && is_known_type(event_type, role))
		return;

	saga_spi_connect_as_owner(&as_owner);
	allowed = event_right(event_type, publish, role, true, &owner);
	saga_spi_finish_as_owner(&as_owner);

	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s event type \"%s\"",
						publish ? "publish" : "subscribe to", event_type),
				 errdetail("Event type \"%s\" belongs to role \"%s\".",
						   event_type, role_name(owner)),
				 errhint("Its owner can allow it with saga_grant_events('%s', '%s'%s).",
						 event_type, role_name(role), publish ? ", 'publish'" : "")));

	if (publish)
		remember_known_type(event_type, role);
}

/* 'subscribe' or 'publish', else an error; true for 'publish'. */
static bool
privilege_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *privilege = PG_ARGISNULL(argno) ? "subscribe" :
		text_to_cstring(PG_GETARG_TEXT_PP(argno));

	if (strcmp(privilege, "subscribe") == 0)
		return false;
	if (strcmp(privilege, "publish") == 0)
		return true;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown privilege \"%s\"", privilege),
			 errhint("The privilege is 'subscribe' or 'publish'.")));
	return false;				/* keep the compiler quiet */
}

/* A grantee argument: a role's name, or PUBLIC (InvalidOid). */
static Oid
grantee_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *name = saga_check_name(fcinfo, argno, "grantee");

	if (pg_strcasecmp(name, "public") == 0)
		return InvalidOid;
	return get_role_oid(name, false);
}

/*
 * The owner of an event type, which the caller must act for; an unowned
 * type becomes the caller's.  The caller is connected to SPI and acts as
 * the tables' owner.
 */
static void
check_type_owner(const char *event_type, Oid caller)
{
	Oid			owner;

	(void) event_right(event_type, false, caller, true, &owner);
	if (!has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to grant on event type \"%s\"", event_type),
				 errdetail("Event type \"%s\" belongs to role \"%s\": only its owner may grant on it.",
						   event_type, role_name(owner))));
}

/*
 * The arguments of saga_grant_events() and saga_revoke_events() (event
 * type, grantee, privilege), checked, as values[0..2] of their plans; the
 * caller of either must own the event type (or it is unowned).  Returns
 * the event type, with SPI connected and acting as the tables' owner.
 */
static char *
event_grant_args(FunctionCallInfo fcinfo, Datum *values, bool *publish,
				 SagaAsOwner *as_owner)
{
	char	   *event_type = saga_check_name(fcinfo, 0, "event_type");
	Oid			grantee = grantee_arg(fcinfo, 1);

	*publish = privilege_arg(fcinfo, 2);
	saga_spi_connect_as_owner(as_owner);
	check_type_owner(event_type, as_owner->caller);
	values[0] = CStringGetTextDatum(event_type);
	values[1] = ObjectIdGetDatum(grantee);
	values[2] = CStringGetTextDatum(*publish ? "publish" : "subscribe");
	return event_type;
}

/*
 * saga_grant_events(event_type text, grantee text, privilege text)
 */
Datum
saga_grant_events(PG_FUNCTION_ARGS)
{
	Datum		values[3];
	bool		publish;
	SagaAsOwner as_owner;

	(void) event_grant_args(fcinfo, values, &publish, &as_owner);
	saga_execute(&grant_event_plan, values, NULL, false, 0);
	saga_spi_finish_as_owner(&as_owner);
	forget_known_type();
	PG_RETURN_VOID();
}

/*
 * saga_revoke_events(event_type text, grantee text, privilege text)
 *	returns boolean
 *
 * Without the right to subscribe any more, a subscription goes, with its
 * pending deliveries (as saga_unsubscribe() removes it).
 */
Datum
saga_revoke_events(PG_FUNCTION_ARGS)
{
	Datum		values[3];
	bool		publish;
	SagaAsOwner as_owner;
	char	   *event_type = event_grant_args(fcinfo, values, &publish, &as_owner);
	bool		found;

	saga_execute(&revoke_event_plan, values, NULL, false, 0);
	found = SPI_processed > 0;

	if (found && !publish)
	{
		SPITupleTable *subs;
		uint64		nsubs;
		uint64		i;

		saga_execute(&type_subscriptions_plan, values, NULL, false, 0);
		subs = SPI_tuptable;
		nsubs = SPI_processed;
		for (i = 0; i < nsubs; i++)
		{
			bool		isnull;
			Datum		id = SPI_getbinval(subs->vals[i], subs->tupdesc, 1, &isnull);
			Oid			owner = DatumGetObjectId(SPI_getbinval(subs->vals[i],
															   subs->tupdesc, 2, &isnull));
			Oid			type_owner;

			if (!event_right(event_type, false, owner, false, &type_owner))
				saga_execute(&drop_subscription_plan, &id, NULL, false, 0);
		}
	}
	saga_spi_finish_as_owner(&as_owner);
	forget_known_type();
	PG_RETURN_BOOL(found);
}

/*
 * Run plan, saga_grant_sagas()'s or saga_revoke_sagas(), on the caller's
 * sagas of the type in argument 0 for the grantee in argument 1; returns
 * the rows it wrote.
 */
static uint64
grant_change(FunctionCallInfo fcinfo, SagaPlan *plan)
{
	char	   *saga_type = saga_check_name(fcinfo, 0, "saga_type");
	Oid			grantee = grantee_arg(fcinfo, 1);
	Datum		values[3];
	SagaAsOwner as_owner;
	uint64		n;

	saga_spi_connect_as_owner(&as_owner);
	values[0] = CStringGetTextDatum(saga_type);
	values[1] = ObjectIdGetDatum(as_owner.caller);
	values[2] = ObjectIdGetDatum(grantee);
	saga_execute(plan, values, NULL, false, 0);
	n = SPI_processed;
	saga_spi_finish_as_owner(&as_owner);
	return n;
}

/* saga_grant_sagas(saga_type text, grantee text) */
Datum
saga_grant_sagas(PG_FUNCTION_ARGS)
{
	(void) grant_change(fcinfo, &grant_saga_plan);
	PG_RETURN_VOID();
}

/* saga_revoke_sagas(saga_type text, grantee text) returns boolean */
Datum
saga_revoke_sagas(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(grant_change(fcinfo, &revoke_saga_plan) > 0);
}

/*
 * Error out unless the current role may see saga_id's status and trace:
 * it has the privileges of the saga's owner, or the owner granted the
 * saga's type to it (or to a role whose privileges it has, or to PUBLIC).
 * A saga that does not exist is left to the caller.  Before 1.2, nothing
 * is checked.
 */
void
saga_check_visible(int64 saga_id)
{
	Oid			role = GetUserId();
	Datum		arg = Int64GetDatum(saga_id);
	SagaAsOwner as_owner;
	bool		allowed = true;

	/* the tables' owner reads every trace (saga_trace_mermaid does) */
	if (!saga_schema_is_1_2() || superuser_arg(role) || role == saga_internal_owner())
		return;
	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&visible_plan, &arg, NULL, false, 0);
	if (SPI_processed > 0)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		allowed = role_is_allowed(role,
								  DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull)),
								  SPI_getbinval(tup, desc, 3, &isnull));
	}
	saga_spi_finish_as_owner(&as_owner);

	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to see saga %lld", (long long) saga_id),
				 errdetail("A saga is shown to its owner, to roles that have the owner's privileges "
						   "and to those the owner granted its saga type to."),
				 errhint("Its owner can allow it with saga_grant_sagas(<its saga type>, '%s').",
						 role_name(role))));
}

/*
 * saga_trace(saga_id bigint) returns table (seq, sender, receiver, message, at)
 */
Datum
saga_trace(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		arg = PG_GETARG_DATUM(0);
	SagaAsOwner as_owner;
	uint64		i;

	saga_check_visible(DatumGetInt64(arg));
	InitMaterializedSRF(fcinfo, 0);

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&trace_plan, &arg, NULL, true, 0);
	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	saga_spi_finish_as_owner(&as_owner);
	return (Datum) 0;
}

/*
 * saga_trace_mermaid(saga_id bigint) returns text
 */
Datum
saga_trace_mermaid(PG_FUNCTION_ARGS)
{
	Datum		arg = PG_GETARG_DATUM(0);
	Oid			save_userid;
	int			save_sec_context;
	bool		isnull;
	Datum		d;
	text	   *result = NULL;

	saga_check_visible(DatumGetInt64(arg));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	saga_execute(&mermaid_plan, &arg, NULL, false, 0);
	saga_end_as_owner(save_userid, save_sec_context);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		text	   *t = DatumGetTextPP(d);
		Size		len = VARSIZE_ANY_EXHDR(t);

		result = (text *) SPI_palloc(VARHDRSZ + len);
		SET_VARSIZE(result, VARHDRSZ + len);
		memcpy(VARDATA(result), VARDATA_ANY(t), len);
	}
	SPI_finish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}
