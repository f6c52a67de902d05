/*-------------------------------------------------------------------------
 *
 * end_notify.c
 *	  Telling clients that sagas ended (1.2): saga_notify_on_end() and the
 *	  NOTIFY that a transaction which ended such sagas sends at its commit.
 *
 * saga_await() holds a connection for as long as it waits.  A client may
 * instead ask, in the transaction that starts a saga, to be told when it
 * ends: saga_notify_on_end(saga_id, channel) stores the channel with the
 * saga (saga.instance.notify_channel).  A transaction that ends sagas (a
 * worker's batch, a session's saga_complete or saga_cancel) notes their
 * ids (saga_end_notify_note(), from wakeup.c's saga_note_finished()), and
 * before it commits it looks them up once and sends one NOTIFY per
 * channel with "id:status" for each of them, comma-separated: once per
 * transaction and channel, never once per saga, since every transaction
 * that NOTIFYs queues on one lock in PreCommit_Notify.  A payload that
 * would pass NOTIFY's limit is split into several.
 *
 * The look-up reads the rows as they are at commit, so a saga whose end
 * was rolled back with a handler's subtransaction is still pending and is
 * not announced.  A database whose schema has no notify_channel column
 * (before 1.2, or the extension dropped in this transaction) sends
 * nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "saga.h"
#include "end_notify.h"
#include "grants.h"
#include "publish.h"
#include "spi_util.h"


PG_FUNCTION_INFO_V1(saga_notify_on_end);

/* Room for the ids in one NOTIFY payload (NOTIFY's limit is 8000 bytes). */
#define END_PAYLOAD_MAX		7900

/* The sagas this transaction ended, in TopTransactionContext. */
static int64 *ended_ids = NULL;
static int	nended = 0;
static int	ended_room = 0;

/* Opt in: (set, exists) */
static SagaPlan opt_in_plan = {
	"WITH u AS (UPDATE saga.instance SET notify_channel = $2"
	"            WHERE id = $1 AND status = 'pending' RETURNING 1)"
	"SELECT EXISTS (SELECT FROM u), EXISTS (SELECT FROM saga.instance WHERE id = $1)",
	2, {INT8OID, TEXTOID}
};

static SagaPlan ended_plan = {
	"SELECT id, status, notify_channel FROM saga.instance"
	" WHERE id = ANY ($1) AND notify_channel IS NOT NULL AND status <> 'pending'"
	" ORDER BY notify_channel, id",
	1, {INT8ARRAYOID}
};

/* A saga ended in this transaction (wakeup.c calls this). */
void
saga_end_notify_note(int64 saga_id)
{
	if (nended == ended_room)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		ended_room = ended_room == 0 ? 16 : ended_room * 2;
		ended_ids = ended_ids == NULL ? palloc(sizeof(int64) * ended_room) :
			repalloc(ended_ids, sizeof(int64) * ended_room);
		MemoryContextSwitchTo(old);
	}
	ended_ids[nended++] = saga_id;
}

/* The transaction ended: forget its sagas (their memory went with it). */
void
saga_end_notify_reset(void)
{
	ended_ids = NULL;
	nended = 0;
	ended_room = 0;
}

/* Does this database's schema have the column, now? */
static bool
have_notify_channel(void)
{
	Oid			nsp = get_namespace_oid(SAGA_SCHEMA, true);
	Oid			rel;

	if (!OidIsValid(nsp))
		return false;
	rel = get_relname_relid("instance", nsp);
	return OidIsValid(rel) && get_attnum(rel, "notify_channel") != InvalidAttrNumber;
}

/*
 * Before commit (wakeup.c): one NOTIFY per channel for the sagas this
 * transaction ended that asked for it.
 */
void
saga_end_notify_send(void)
{
	Datum	   *elems;
	Datum		arg;
	SagaAsOwner as_owner;
	StringInfoData payload;
	char	   *channel = NULL;
	uint64		i;
	int			n;
	bool		pushed;

	if (nended == 0 || !have_notify_channel())
		return;
	elems = palloc(sizeof(Datum) * nended);
	for (n = 0; n < nended; n++)
		elems[n] = Int64GetDatum(ended_ids[n]);
	arg = PointerGetDatum(construct_array(elems, nended, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	/* a worker commits its batch with no snapshot of its own left */
	pushed = !ActiveSnapshotSet();
	if (pushed)
		PushActiveSnapshot(GetTransactionSnapshot());
	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&ended_plan, &arg, NULL, true, 0);
	initStringInfo(&payload);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *status = SPI_getvalue(tup, desc, 2);
		char	   *chan = SPI_getvalue(tup, desc, 3);
		char		item[64];

		snprintf(item, sizeof(item), INT64_FORMAT ":%s", id, status);
		if (channel != NULL &&
			(strcmp(channel, chan) != 0 || payload.len + 1 + strlen(item) > END_PAYLOAD_MAX))
		{
			Async_Notify(channel, payload.data);
			resetStringInfo(&payload);
		}
		channel = chan;
		if (payload.len > 0)
			appendStringInfoChar(&payload, ',');
		appendStringInfoString(&payload, item);
	}
	if (channel != NULL)
		Async_Notify(channel, payload.data);
	saga_spi_finish_as_owner(&as_owner);
	if (pushed)
		PopActiveSnapshot();
}

/*
 * saga_notify_on_end(saga_id, channel): when the saga ends, the transaction
 * that ends it sends NOTIFY channel with "id:status" among its payload's
 * ids.  A role that may see the saga's status may ask (what it is told is
 * no more than saga_status() tells it).  False if the saga has ended
 * already.
 */
Datum
saga_notify_on_end(PG_FUNCTION_ARGS)
{
	int64		saga_id;
	char	   *channel;
	Datum		values[2];
	bool		exists;
	bool		isnull;
	SagaAsOwner as_owner;
	bool		set;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("saga_id must not be null")));
	saga_id = PG_GETARG_INT64(0);
	channel = saga_check_name(fcinfo, 1, "channel");
	if (strlen(channel) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("channel name is too long (%d bytes)", (int) strlen(channel)),
				 errhint("A channel name, as LISTEN takes it, has at most %d bytes.",
						 NAMEDATALEN - 1)));
	if (!saga_schema_is_1_2())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("saga_notify_on_end() needs version 1.2 of extension \"saga\""),
				 errhint("Run ALTER EXTENSION saga UPDATE.")));
	saga_check_visible(saga_id);	/* its owner's, and grantees' */

	values[0] = Int64GetDatum(saga_id);
	values[1] = CStringGetTextDatum(channel);
	saga_spi_connect_as_owner(&as_owner);
	saga_execute(&opt_in_plan, values, NULL, false, 0);
	set = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	saga_spi_finish_as_owner(&as_owner);
	if (!exists)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga %lld does not exist", (long long) saga_id)));
	PG_RETURN_BOOL(set);
}
