/*-------------------------------------------------------------------------
 *
 * definition.c
 *	  Orchestrated sagas, the SQL side: saga_define(), which adds a version
 *	  of a definition, saga_start(), which starts a saga on the newest one,
 *	  and saga_retry(), which resumes a saga stuck on a compensation.
 *
 * A definition is an ordered list of steps, each an action and an optional
 * compensation: functions taking the saga's data (jsonb) and returning
 * jsonb to merge into it.  Every saga_define() call adds a version; an
 * instance runs on the version it started with to its end.  A definition
 * is checked whole before anything is written (the functions exist, take
 * jsonb and return jsonb or void, and the caller may run them), and
 * written in one statement from arrays, so that defining 10,000 steps
 * takes time linear in their number and can be cancelled.
 *
 * The steps themselves are run by the workers, in steps.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "saga.h"
#include "instance.h"
#include "publish.h"
#include "shmem.h"
#include "spi_util.h"
#include "stats.h"
#include "steps.h"
#include "wakeup.h"


PG_FUNCTION_INFO_V1(saga_define);
PG_FUNCTION_INFO_V1(saga_start);
PG_FUNCTION_INFO_V1(saga_retry);

/* ------------------------------------------------------------------------
 * Definitions
 * ------------------------------------------------------------------------
 */

static SagaPlan definition_owner_plan = {
	"SELECT owner::oid, max(version) FROM saga.definition"
	" WHERE name = $1 GROUP BY owner ORDER BY max(version) DESC LIMIT 1",
	1, {TEXTOID}
};

static SagaPlan define_plan = {
	"INSERT INTO saga.definition (name, version, steps, owner)"
	" VALUES ($1, $2, $3, $4::oid::regrole)",
	4, {TEXTOID, INT4OID, INT4OID, OIDOID}
};

/* All of a version's steps in one statement, from arrays. */
static SagaPlan define_steps_plan = {
	"INSERT INTO saga.definition_step"
	"  (definition, version, step_no, name, service, action, compensation,"
	"   request, compensation_request)"
	" SELECT $1, $2, s.ord - 1, s.name, s.service, s.action::regprocedure,"
	"        s.compensation::regprocedure, s.request, s.compensation_request"
	"   FROM unnest($3::text[], $4::text[], $5::oid[], $6::oid[], $7::text[], $8::text[])"
	"        WITH ORDINALITY AS s(name, service, action, compensation, request,"
	"                             compensation_request, ord)",
	8, {TEXTOID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, OIDARRAYOID, OIDARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID}
};

/*
 * The most steps a definition may have.  A saga runs its steps one after
 * the other, each committed with the saga's progress; far longer chains
 * belong in several sagas.
 */
#define SAGA_MAX_STEPS		10000

/* A step function takes jsonb and returns jsonb or void. */
static void
check_step_function(Oid fn, const char *step, const char *what)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset ||
		proc->pronargs != 1 || proc->proargtypes.values[0] != JSONBOID ||
		(proc->prorettype != JSONBOID && proc->prorettype != VOIDOID))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s cannot be the %s of step \"%s\"",
						format_procedure(fn), what, step),
				 errdetail("A step's action or compensation is a function that takes the saga's data "
						   "as one jsonb argument and returns jsonb (merged into the data) or void.")));
	ReleaseSysCache(tup);

	if (pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(fn)),
				 errdetail("Steps run as the role that defines the saga, which must be allowed to execute them.")));
}

/* Text field of a composite, or NULL. */
static char *
step_text(HeapTupleHeader step, const char *field)
{
	bool		isnull;
	Datum		d = GetAttributeByName(step, field, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Oid field of a composite, or InvalidOid. */
static Oid
step_oid(HeapTupleHeader step, const char *field)
{
	bool		isnull;
	Datum		d = GetAttributeByName(step, field, &isnull);

	return isnull ? InvalidOid : DatumGetObjectId(d);
}

/*
 * saga_define(name text, VARIADIC steps saga.step[]) returns integer
 *
 * Adds a version of a definition and returns its number.  Only the role
 * that created a definition (or a member of it) may add versions.  Every
 * step is checked before anything is written; the work is linear in the
 * number of steps (names are checked for duplicates through a hash table)
 * and can be cancelled.
 */
Datum
saga_define(PG_FUNCTION_ARGS)
{
	char	   *name = saga_check_name(fcinfo, 0, "saga name");
	ArrayType  *steps;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nsteps;
	SagaStepDef *args;
	HTAB	   *names;
	HASHCTL		hctl;
	Size		maxlen;
	Oid			caller = GetUserId();
	SagaAsOwner as_owner;
	int32		version = 1;
	Datum		values[8];
	char		nulls[8];
	Datum	   *col[6];
	bool	   *colnull[6];
	int			i;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("steps must not be null")));
	steps = PG_GETARG_ARRAYTYPE_P(1);
	if (ArrayGetNItems(ARR_NDIM(steps), ARR_DIMS(steps)) > SAGA_MAX_STEPS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a saga may have at most %d steps, not %d", SAGA_MAX_STEPS,
						ArrayGetNItems(ARR_NDIM(steps), ARR_DIMS(steps))),
				 errhint("Split it into sagas that start one another.")));
	deconstruct_array(steps, ARR_ELEMTYPE(steps), -1, false, TYPALIGN_DOUBLE,
					  &elems, &elem_nulls, &nsteps);
	if (nsteps == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a saga needs at least one step")));

	/* check every step before writing anything */
	args = palloc0(sizeof(SagaStepDef) * nsteps);
	maxlen = 0;
	for (i = 0; i < nsteps; i++)
	{
		HeapTupleHeader step;
		SagaStepDef *a = &args[i];

		CHECK_FOR_INTERRUPTS();
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("step %d is null", i + 1)));
		step = DatumGetHeapTupleHeader(elems[i]);
		a->name = step_text(step, "name");
		if (a->name == NULL || a->name[strspn(a->name, " \t\r\n")] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("step %d has no name", i + 1)));
		maxlen = Max(maxlen, strlen(a->name));
		a->action = step_oid(step, "action");
		a->compensation = step_oid(step, "compensation");
		if (!OidIsValid(a->action))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("step \"%s\" has no action", a->name)));
		check_step_function(a->action, a->name, "action");
		if (OidIsValid(a->compensation))
			check_step_function(a->compensation, a->name, "compensation");
		a->service = step_text(step, "service");
		if (a->service == NULL)
			a->service = a->name;
		a->request = step_text(step, "request");
		if (a->request == NULL)
			a->request = a->name;
		a->compensation_request = step_text(step, "compensation_request");
	}

	/* names are unique: look each up in a hash table of those before it */
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = maxlen + 1;
	hctl.entrysize = hctl.keysize;
	hctl.hcxt = CurrentMemoryContext;
	names = hash_create("saga step names", nsteps, &hctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (i = 0; i < nsteps; i++)
	{
		bool		found;

		CHECK_FOR_INTERRUPTS();
		(void) hash_search(names, args[i].name, HASH_ENTER, &found);
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("step \"%s\" appears twice", args[i].name)));
	}
	hash_destroy(names);

	/* the steps as columns, for one INSERT */
	for (i = 0; i < 6; i++)
	{
		col[i] = palloc(sizeof(Datum) * nsteps);
		colnull[i] = palloc0(sizeof(bool) * nsteps);
	}
	for (i = 0; i < nsteps; i++)
	{
		SagaStepDef *a = &args[i];

		col[0][i] = CStringGetTextDatum(a->name);
		col[1][i] = CStringGetTextDatum(a->service);
		col[2][i] = ObjectIdGetDatum(a->action);
		col[3][i] = ObjectIdGetDatum(a->compensation);
		colnull[3][i] = !OidIsValid(a->compensation);
		col[4][i] = CStringGetTextDatum(a->request);
		col[5][i] = a->compensation_request ?
			CStringGetTextDatum(a->compensation_request) : (Datum) 0;
		colnull[5][i] = a->compensation_request == NULL;
	}

	saga_spi_connect_as_owner(&as_owner);

	values[0] = CStringGetTextDatum(name);
	saga_execute(&definition_owner_plan, values, NULL, false, 0);
	if (SPI_processed > 0)
	{
		bool		isnull;
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull));

		if (!has_privs_of_role(caller, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("saga \"%s\" belongs to another role", name),
					 errdetail("Only the role that defined a saga may add versions of it.")));
		version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 2, &isnull)) + 1;
	}

	values[1] = Int32GetDatum(version);
	values[2] = Int32GetDatum(nsteps);
	values[3] = ObjectIdGetDatum(caller);
	saga_execute(&define_plan, values, NULL, false, 0);

	memset(nulls, ' ', sizeof(nulls));
	for (i = 0; i < 6; i++)
	{
		int			dims[1] = {nsteps};
		int			lbs[1] = {1};
		Oid			elemtype = (i == 2 || i == 3) ? OIDOID : TEXTOID;

		values[2 + i] = PointerGetDatum(construct_md_array(col[i], colnull[i], 1, dims, lbs,
														   elemtype,
														   elemtype == OIDOID ? sizeof(Oid) : -1,
														   elemtype == OIDOID,
														   TYPALIGN_INT));
	}
	saga_execute(&define_steps_plan, values, nulls, false, 0);

	saga_spi_finish_as_owner(&as_owner);
	PG_RETURN_INT32(version);
}

/* ------------------------------------------------------------------------
 * Starting a saga, and resuming a stuck one
 * ------------------------------------------------------------------------
 */

static SagaPlan start_plan = {
	"WITH d AS (SELECT version, owner FROM saga.definition"
	"            WHERE name = $1 ORDER BY version DESC LIMIT 1),"
	"     n AS (SELECT nextval('saga.instance_id_seq') AS id)"
	" INSERT INTO saga.instance (id, saga_type, pattern, owner,"
	"                            definition_version, data, step, phase, deadline)"
	" SELECT n.id, $1, 'orchestration', $3::oid::regrole, d.version,"
	"        $2 || jsonb_build_object('saga_id', n.id), 0, 'forward',"
	"        clock_timestamp() + $4 * interval '1 millisecond'"
	"   FROM d, n"
	" RETURNING id, (SELECT owner::oid FROM d)",
	4, {TEXTOID, JSONBOID, OIDOID, FLOAT8OID}
};

/*
 * saga_start(saga_name text, data jsonb) returns bigint
 *
 * Starts an instance of the latest version of a definition; the workers
 * run it once the calling transaction commits.  Its data gets the key
 * saga_id, the instance's id, for steps that need it.  Only the definition's
 * owner (or a member) may start it: to let others, wrap the call in a
 * SECURITY DEFINER function, as saga_place_order() does.
 */
Datum
saga_start(PG_FUNCTION_ARGS)
{
	char	   *name = saga_check_name(fcinfo, 0, "saga name");
	Jsonb	   *data;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		no_deadline;
	Oid			caller = GetUserId();
	Oid			save_userid;
	int			save_sec_context;
	bool		isnull;
	int64		id;
	Oid			owner;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("data must not be null"),
				 errhint("Start it with '{}' for a saga without data.")));
	data = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data must be a JSON object")));

	values[0] = CStringGetTextDatum(name);
	values[1] = JsonbPGetDatum(data);
	values[2] = ObjectIdGetDatum(caller);
	values[3] = Float8GetDatum(saga_deadline_ms(fcinfo, 2, &no_deadline));
	if (no_deadline)
		nulls[3] = 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	saga_execute(&start_plan, values, nulls, false, 0);
	saga_end_as_owner(save_userid, save_sec_context);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga \"%s\" is not defined", name),
				 errhint("Define it with saga_define().")));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull));
	SPI_finish();

	/* checked after the insert, which the error then rolls back */
	if (!has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to start saga \"%s\"", name),
				 errdetail("Only the role that defined a saga may start it."),
				 errhint("Its owner can offer a SECURITY DEFINER function that starts it.")));

	saga_note_published();
	saga_count(SAGA_COUNT_STARTED, 1);
	PG_RETURN_INT64(id);
}

static SagaPlan retry_plan = {
	"UPDATE saga.instance"
	"   SET phase = 'compensating', attempts = 0, next_attempt_at = now()"
	" WHERE id = $1 AND phase = 'stuck'"
	" RETURNING id",
	1, {INT8OID}
};

static SagaPlan owner_plan = {
	"SELECT owner::oid FROM saga.instance WHERE id = $1 FOR UPDATE",
	1, {INT8OID}
};

/*
 * saga_retry(saga_id bigint) returns boolean
 *
 * Resume the compensation of a saga marked 'stuck'.  Returns false if the
 * saga is not stuck.
 */
Datum
saga_retry(PG_FUNCTION_ARGS)
{
	int64		saga_id = PG_GETARG_INT64(0);
	Datum		arg = Int64GetDatum(saga_id);
	Oid			caller = GetUserId();
	SagaAsOwner as_owner;
	bool		isnull;
	bool		retried;

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&owner_plan, &arg, NULL, false, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga %lld does not exist", (long long) saga_id)));
	if (!has_privs_of_role(caller,
						   DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1, &isnull))))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to retry saga %lld", (long long) saga_id)));
	saga_execute(&retry_plan, &arg, NULL, false, 0);
	retried = SPI_processed > 0;
	saga_spi_finish_as_owner(&as_owner);

	if (retried)
		saga_note_published();
	PG_RETURN_BOOL(retried);
}
