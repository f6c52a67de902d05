/*-------------------------------------------------------------------------
 *
 * labels.c
 *	  How a saga's trace names the client that started it (1.2):
 *	  saga_label_trace() and saga_unlabel_trace().
 *
 * A trace begins with an arrow from the client that started the saga and
 * ends with the answer it got.  By default they read "client", "start" and
 * the saga's status; saga.trace_client names them otherwise, per saga type
 * and owner (the example's orders come from a "customer" who sends "POST
 * /orders" and is answered "201 Created").  A role labels the traces of its
 * own sagas only: the row's owner is the calling role, which is why these
 * are C functions (a SECURITY DEFINER function cannot tell who called it).
 * The rows that come with the extension (builtin) are left alone: pg_dump
 * does not dump them, so a change to one would not survive a restore.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "saga.h"
#include "publish.h"
#include "spi_util.h"


PG_FUNCTION_INFO_V1(saga_label_trace);
PG_FUNCTION_INFO_V1(saga_unlabel_trace);

/* Set the labels, unless the row came with the extension. */
static SagaPlan label_plan = {
	"INSERT INTO saga.trace_client AS c (saga_type, owner, client, start_message,"
	"                                    completed_message, failed_message)"
	" VALUES ($1, $2::oid::regrole, $3, $4, $5, $6)"
	" ON CONFLICT (saga_type, owner) DO UPDATE"
	"   SET client = excluded.client, start_message = excluded.start_message,"
	"       completed_message = excluded.completed_message,"
	"       failed_message = excluded.failed_message"
	" WHERE NOT c.builtin"
	" RETURNING 1",
	6, {TEXTOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID}
};

/* Drop them: (builtin, deleted) of the row there was, none if none was. */
static SagaPlan unlabel_plan = {
	"WITH d AS (DELETE FROM saga.trace_client"
	"            WHERE saga_type = $1 AND owner = $2::oid::regrole AND NOT builtin"
	"            RETURNING 1)"
	"SELECT c.builtin, EXISTS (SELECT FROM d)"
	"  FROM saga.trace_client c WHERE c.saga_type = $1 AND c.owner = $2::oid::regrole",
	2, {TEXTOID, OIDOID}
};

/* Refuse a database whose schema predates the labels. */
static void
require_labels(void)
{
	if (!saga_schema_is_1_2())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("trace labels need version 1.2 of extension \"saga\""),
				 errhint("Run ALTER EXTENSION saga UPDATE.")));
}

/* The error for a row that came with the extension. */
static void
refuse_builtin(const char *saga_type)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the trace labels of saga type \"%s\" come with the extension", saga_type),
			 errdetail("They are made by CREATE EXTENSION and are not dumped by pg_dump, "
					   "so a change would be lost on restore."),
			 errhint("Give your sagas a saga type of their own.")));
}

/* A label: a name (not null, not empty, not too long), on one line. */
static char *
check_label(FunctionCallInfo fcinfo, int argno, const char *what)
{
	char	   *label = saga_check_name(fcinfo, argno, what);
	const char *p;

	for (p = label; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain control characters such as line breaks", what),
					 errhint("A label is shown on one line of the trace and its diagram.")));
	return label;
}

/*
 * saga_label_trace(saga_type, client, start_message, completed_message,
 * failed_message): the calling role's sagas of saga_type are started by
 * client, which sends start_message and is answered completed_message or
 * failed_message.
 */
Datum
saga_label_trace(PG_FUNCTION_ARGS)
{
	Datum		values[6];
	SagaAsOwner as_owner;
	char	   *saga_type;
	uint64		set;

	saga_type = check_label(fcinfo, 0, "saga_type");
	values[0] = CStringGetTextDatum(saga_type);
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = CStringGetTextDatum(check_label(fcinfo, 1, "client"));
	values[3] = CStringGetTextDatum(check_label(fcinfo, 2, "start_message"));
	values[4] = CStringGetTextDatum(check_label(fcinfo, 3, "completed_message"));
	values[5] = CStringGetTextDatum(check_label(fcinfo, 4, "failed_message"));
	require_labels();

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&label_plan, values, NULL, false, 0);
	set = SPI_processed;
	saga_spi_finish_as_owner(&as_owner);
	if (set == 0)
		refuse_builtin(saga_type);
	PG_RETURN_VOID();
}

/*
 * saga_unlabel_trace(saga_type): the calling role's sagas of saga_type get
 * the default labels again; false if they had them already.
 */
Datum
saga_unlabel_trace(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	SagaAsOwner as_owner;
	char	   *saga_type;
	bool		found;
	bool		builtin = false;
	bool		deleted = false;

	saga_type = saga_check_name(fcinfo, 0, "saga_type");
	values[0] = CStringGetTextDatum(saga_type);
	values[1] = ObjectIdGetDatum(GetUserId());
	require_labels();

	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&unlabel_plan, values, NULL, false, 0);
	found = SPI_processed > 0;
	if (found)
	{
		bool		isnull;

		builtin = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		deleted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	saga_spi_finish_as_owner(&as_owner);
	if (found && builtin)
		refuse_builtin(saga_type);
	PG_RETURN_BOOL(deleted);
}
