/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  Claim a batch of pending deliveries and run their handlers.
 *
 * A batch runs inside the caller's transaction (a worker's, or the session
 * calling saga_run_pending()).  Deliveries are claimed with FOR UPDATE SKIP
 * LOCKED, so any number of workers can share the queue without taking the
 * same delivery twice.  Each handler runs in its own subtransaction: what
 * it writes and what it publishes commit together with the delivery
 * marked done, or not at all; a handler that raises rolls back alone, its
 * error is recorded and the delivery is retried with exponential backoff
 * until saga.max_attempts, after which it is dead-lettered.
 *
 * A handler runs as the role that subscribed it (see invoke.c).
 *
 * A batch is bounded in bytes as well as in count.  Events larger than
 * SAGA_INLINE_BYTES are not read by the claim but one at a time, just
 * before their handler runs, into a memory context reset after each
 * delivery; and a batch stops taking deliveries once their payloads add up
 * to saga.batch_bytes (the rest, claimed but not handled, is released at
 * commit and taken by the next batch).  A worker's memory is then bounded
 * by the largest event, not by the batch size times the largest event.
 *
 * Nothing forward runs after a saga's end.  A delivery of a subscription
 * with forward = true is cancelled instead of handled when its saga has
 * been aborted (its deadline passed, or saga_cancel()), or had already
 * completed or failed when the event was published: a late event must not
 * reserve stock for an order that failed.  Compensations (forward = false)
 * still run, and so does every delivery of SagaAborted, which the abort
 * itself publishes for the services to undo their part.  An aborted choreographed saga fails, with the abort's reason,
 * once none of its deliveries is pending any more (see abort.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "saga.h"
#include "abort.h"
#include "batch.h"
#include "dispatch.h"
#include "instance.h"
#include "invoke.h"
#include "publish.h"
#include "shmem.h"
#include "spi_util.h"
#include "stats.h"
#include "wakeup.h"


SagaCurrentDelivery *saga_current_delivery = NULL;

/* One claimed delivery, copied out of SPI's memory. */
typedef struct ClaimedDelivery
{
	int64		delivery_id;
	int32		attempts;
	Oid			handler;
	Oid			owner;
	char	   *consumer;
	int64		event_id;
	int64		saga_id;
	bool		has_saga_id;
	Datum		event;			/* the saga.event row */
	char	   *on_failure;		/* event to publish if dead-lettered */
	bool		forward;		/* false: a compensation */
	Jsonb	   *payload;
	bool		aborting;		/* its saga is aborted and not yet ended */
	bool		cancel;			/* forward work of a saga that is over */
	int64		size;			/* the payload's stored size, in bytes */
	bool		failed_before;	/* it has a last error: it may be blocked */
	bool		paused;			/* kept in memory, for a paused consumer */
} ClaimedDelivery;

/*
 * How many deliveries the next claim locks (0: saga.batch_size).  A batch
 * ends when saga.batch_time is up (batch.c), and the deliveries it claimed
 * but had no time for were locked for nothing: each lock is a WAL record
 * (in a burst of orders, 15 per order, most of them for deliveries left
 * over), and the other worker passes over them.  So a claim asks for
 * about what the last batch could handle: after one that ran out of time,
 * a quarter more than it handled; after one that handled all it claimed,
 * twice as many, up to saga.batch_size.
 */
static int	claim_size = 0;

/*
 * The batch ran out of time with deliveries its handlers published still
 * in memory (batch.c): the claim that started the chain was too large for
 * the chain to end in one batch, and what was left is written twice
 * (pending, then done).  Claim half as many next time.
 */
void
saga_dispatch_claim_less(void)
{
	int			size = claim_size > 0 ? claim_size : saga_batch_size;

	claim_size = Max(size / 2, 4);
}

/* Note what a claim of asked deliveries came to: handled of claimed. */
static void
adapt_claim_size(int asked, int claimed, int handled)
{
	if (handled < claimed && saga_batch_out_of_time())
		claim_size = Max(handled + handled / 4, 4);
	else if (handled == claimed && claimed == asked)
		claim_size = Min(asked * 2, saga_batch_size);
}

/* Events up to this size (stored) come with the claim; larger ones later. */
#define SAGA_INLINE_BYTES	(64 * 1024)

/*
 * What a claim reads of each delivery, and from where.  CLAIM_COLUMNS
 * reads the delivery's own columns from "d", which is the table itself for
 * the claim of one counted delivery and, for claim_plan, the rows its
 * first part locked.
 */
#define CLAIM_COLUMNS \
	"SELECT d.id, d.attempts, s.handler::oid, s.owner::oid, s.consumer," \
	"       e.id, e.saga_id," \
	"       CASE WHEN pg_column_size(e.payload) <= $2 THEN e END," \
	"       s.on_failure," \
	"       CASE WHEN pg_column_size(e.payload) <= $2 THEN e.payload END," \
	"       s.forward," \
	"       coalesce(i.status = 'pending' AND i.aborted_at IS NOT NULL, false)," \
	"       coalesce(s.forward AND e.event_type <> 'SagaAborted' AND" \
	"                (i.aborted_at IS NOT NULL OR" \
	"                 (i.status <> 'pending' AND e.seq > i.finish_seq)), false)," \
	"       pg_column_size(e.payload), d.failed_before, d.paused"
#define CLAIM_JOINS \
	"  JOIN saga.subscription s ON s.id = d.subscription_id" \
	"  JOIN saga.event e ON e.id = d.event_id" \
	"  LEFT JOIN saga.instance i ON i.id = e.saga_id"

/*
 * The claim: the oldest due deliveries of consumers not paused, locked,
 * then what their handlers need.  It locks first, on the delivery table
 * alone, and joins afterwards: rows that SKIP LOCKED passes over (the
 * other worker's) are not joined for nothing, and the lock is taken in
 * the order of the pending index, whatever the statistics say about the
 * tables around it.  The paused consumers' subscriptions are looked up
 * once per claim, and only when some consumer is paused: the planner
 * estimates "subscription_id <> ALL (...)" from the column's statistics,
 * and a backlog that waits at one subscription (one distinct value)
 * made it expect a single row, and plan a sequential scan and a sort of
 * the whole table on every claim (t/018 drains such a backlog).  The
 * locked rows' own columns come from the lock (a row updated since the
 * statement's snapshot is read as locked).
 */
static SagaPlan claim_plan = {
	"WITH d AS ("
	"  SELECT d.id, d.attempts, d.event_id, d.subscription_id,"
	"         d.last_error IS NOT NULL AS failed_before, false AS paused"
	"    FROM saga.delivery d"
	"   WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
	"     AND (NOT EXISTS (SELECT FROM saga.paused_consumer)"
	"          OR d.subscription_id <> ALL (ARRAY(SELECT s.id FROM saga.subscription s"
	"                                               JOIN saga.paused_consumer p"
	"                                                 ON p.consumer = s.consumer)))"
	"   ORDER BY d.id"
	"   LIMIT $1"
	"     FOR UPDATE SKIP LOCKED) "
	CLAIM_COLUMNS
	"  FROM d"
	CLAIM_JOINS
	" ORDER BY d.id",
	2, {INT4OID, INT4OID}
};

/*
 * Deliveries that wait in memory (batch.c), $3 and $4 their events and
 * subscriptions: the same columns as a claim's, with no id yet.
 */
static SagaPlan deferred_plan = {
	"WITH d AS ("
	"  SELECT NULL::bigint AS id, 0 AS attempts, u.event_id, u.subscription_id,"
	"         false AS failed_before, u.n,"
	"         EXISTS (SELECT FROM saga.subscription s JOIN saga.paused_consumer p"
	"                     ON p.consumer = s.consumer"
	"                  WHERE s.id = u.subscription_id) AS paused"
	"    FROM unnest($3::bigint[], $4::integer[]) WITH ORDINALITY AS u(event_id, subscription_id, n)) "
	CLAIM_COLUMNS
	"  FROM d"
	CLAIM_JOINS
	" ORDER BY d.n",
	4, {INT4OID, INT4OID, INT8ARRAYOID, INT4ARRAYOID}
};

/* A deferred delivery handled: written once, done. */
static SagaPlan insert_done_plan = {
	"INSERT INTO saga.delivery (event_id, subscription_id, status, attempts, delivered_at, seq)"
	" SELECT u.e, u.s, 'done', 1, u.a, u.q"
	"   FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::timestamptz[]) AS u(e, s, q, a)",
	4, {INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID}
};

/* A deferred delivery that did not succeed: written pending, to fail as any. */
static SagaPlan insert_pending_plan = {
	"INSERT INTO saga.delivery (event_id, subscription_id) VALUES ($1, $2) RETURNING id",
	2, {INT8OID, INT4OID}
};

/* One delivery whose attempt has been counted already (careful mode). */
static SagaPlan claim_counted_plan = {
	"WITH d AS ("
	"  SELECT d.id, d.attempts, d.event_id, d.subscription_id,"
	"         d.last_error IS NOT NULL AS failed_before, false AS paused"
	"    FROM saga.delivery d"
	"   WHERE d.id = $3 AND d.status = 'pending' AND $1 > 0"
	"     FOR UPDATE) "
	CLAIM_COLUMNS
	"  FROM d"
	CLAIM_JOINS,
	3, {INT4OID, INT4OID, INT8OID}
};

/*
 * Careful mode: the next due delivery, locked, to count an attempt at it
 * (and lease it) in a transaction of its own before it runs.
 */
static SagaPlan next_due_plan = {
	"SELECT d.id, d.attempts FROM saga.delivery d"
	"  JOIN saga.subscription s ON s.id = d.subscription_id"
	" WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
	"   AND NOT EXISTS (SELECT FROM saga.paused_consumer p"
	"                    WHERE p.consumer = s.consumer)"
	" ORDER BY d.id"
	" LIMIT 1"
	"   FOR UPDATE OF d SKIP LOCKED",
	0, {InvalidOid}
};

static SagaPlan count_attempt_plan = {
	"UPDATE saga.delivery"
	"   SET attempts = attempts + 1,"
	"       next_attempt_at = clock_timestamp() + $2 * interval '1 millisecond'"
	" WHERE id = $1",
	2, {INT8OID, FLOAT8OID}
};

/* A large event, read when its delivery's turn comes. */
static SagaPlan event_plan = {
	"SELECT e, e.payload FROM saga.event e WHERE e.id = $1",
	1, {INT8OID}
};

static SagaPlan cancel_plan = {
	"UPDATE saga.delivery d"
	"   SET status = 'cancelled',"
	"       last_error = 'cancelled: saga ' || e.saga_id ||"
	"                    CASE WHEN i.aborted_at IS NOT NULL THEN ' was aborted'"
	"                         ELSE ' had ' || i.status END"
	"  FROM saga.event e, saga.instance i"
	" WHERE d.id = ANY($1) AND e.id = d.event_id AND i.id = e.saga_id",
	1, {INT8ARRAYOID}
};

/* Handled: done, and no longer blocked if it was. */
#define DONE_HEAD \
	"UPDATE saga.delivery d" \
	"   SET status = 'done', attempts = d.attempts + $4, last_error = NULL," \
	"       delivered_at = u.at, seq = u.seq"
#define DONE_TAIL \
	"  FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS u(id, seq, at)" \
	" WHERE d.id = u.id"

static SagaPlan done_plan = {
	DONE_HEAD ", blocked_since = NULL, blocked_by = NULL"
	DONE_TAIL,
	4, {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT4OID}
};

/* The same before 1.2, which notes no blocked deliveries. */
static SagaPlan done_plan_1_1 = {
	DONE_HEAD
	DONE_TAIL,
	4, {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT4OID}
};

/*
 * A handler failed: count the attempt (unless the failure was transient),
 * dead-letter the delivery after saga.max_attempts, and keep the failure
 * for the saga's trace.  A delivery that met a lock conflict is due again
 * later each time it meets one (half the time it has been blocked, between
 * the retry delay and a second), so that a row held for long by another
 * session does not put the same delivery at the head of every batch, and
 * it notes since when it is blocked and, when the worker saw it, by whom
 * ($7, the pid; if not seen this time, the one seen before), for
 * saga_stuck.
 */
static SagaPlan failed_plan = {
	"WITH u AS ("
	"  UPDATE saga.delivery"
	"     SET attempts = attempts + $2, last_error = $3,"
	"         status = CASE WHEN attempts + $2 >= $4 THEN 'dead' ELSE 'pending' END,"
	"         blocked_since = CASE WHEN $6 THEN NULL"
	"                              ELSE coalesce(blocked_since, clock_timestamp()) END,"
	"         blocked_by = CASE WHEN $6 THEN NULL ELSE coalesce($7, blocked_by) END,"
	"         next_attempt_at = clock_timestamp() +"
	"             CASE WHEN $6 THEN $5 * interval '1 millisecond'"
	"                  ELSE least(greatest($5 * interval '1 millisecond',"
	"                                      (clock_timestamp() - coalesce(blocked_since, clock_timestamp())) / 2),"
	"                             interval '1 second') END"
	"   WHERE id = $1"
	"   RETURNING status, attempts, event_id),"
	" f AS ("
	"  INSERT INTO saga.delivery_failure (delivery_id, saga_id, attempt, error, dead)"
	"  SELECT $1, e.saga_id, u.attempts, $3, u.status = 'dead'"
	"    FROM u JOIN saga.event e ON e.id = u.event_id"
	"   WHERE $6)"
	"SELECT status FROM u",
	7, {INT8OID, INT4OID, TEXTOID, INT4OID, FLOAT8OID, BOOLOID, INT4OID}
};

/* The same before 1.2, which keeps no failures for the trace. */
static SagaPlan failed_plan_1_1 = {
	"UPDATE saga.delivery"
	"   SET attempts = attempts + $2, last_error = $3,"
	"       status = CASE WHEN attempts + $2 >= $4 THEN 'dead' ELSE 'pending' END,"
	"       next_attempt_at = clock_timestamp() + $5 * interval '1 millisecond'"
	" WHERE id = $1"
	" RETURNING status",
	5, {INT8OID, INT4OID, TEXTOID, INT4OID, FLOAT8OID}
};

/* A claimed delivery, from a row of claim_plan or claim_counted_plan. */
static void
unpack_claimed(HeapTuple tup, TupleDesc desc, ClaimedDelivery *cd)
{
	bool		isnull;
	Datum		d;

	memset(cd, 0, sizeof(*cd));
	cd->delivery_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	cd->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	cd->handler = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	cd->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	cd->consumer = TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull));
	cd->event_id = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
	cd->saga_id = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
	cd->has_saga_id = !isnull;
	d = SPI_getbinval(tup, desc, 8, &isnull);
	cd->event = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	d = SPI_getbinval(tup, desc, 9, &isnull);
	cd->on_failure = isnull ? NULL : TextDatumGetCString(d);
	d = SPI_getbinval(tup, desc, 10, &isnull);
	cd->payload = isnull ? NULL : DatumGetJsonbPCopy(d);
	cd->forward = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
	cd->aborting = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull));
	cd->cancel = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
	cd->size = DatumGetInt32(SPI_getbinval(tup, desc, 14, &isnull));
	cd->failed_before = DatumGetBool(SPI_getbinval(tup, desc, 15, &isnull));
	cd->paused = DatumGetBool(SPI_getbinval(tup, desc, 16, &isnull));
}

/* Cached FmgrInfo of the handlers seen in this batch. */
typedef struct HandlerInfo
{
	Oid			oid;
	FmgrInfo	flinfo;
} HandlerInfo;

/* The FmgrInfo of a handler, looked up once per batch and kept in cache. */
static FmgrInfo *
lookup_handler(HandlerInfo *cache, volatile int *ncache, int maxcache, Oid handler,
			   MemoryContext cxt)
{
	int			i;

	for (i = 0; i < *ncache; i++)
		if (cache[i].oid == handler)
			return &cache[i].flinfo;

	Assert(*ncache < maxcache);
	saga_lookup_function(handler, &cache[*ncache].flinfo, cxt);
	cache[*ncache].oid = handler;
	return &cache[(*ncache)++].flinfo;
}

/*
 * A handler failed with edata; counted: its attempt was counted already
 * (careful mode); blocked_by: the pid of the session that held the lock it
 * timed out waiting for, 0 if not known.
 */
static void
record_failure(ClaimedDelivery *cd, ErrorData *edata, bool counted, int blocked_by)
{
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		transient;
	char	   *status;
	bool		isnull;
	char	   *msg;

	transient = saga_error_is_transient(edata->sqlerrcode);
	msg = saga_error_text(edata);

	values[0] = Int64GetDatum(cd->delivery_id);
	/*
	 * An attempt counted before it ran (careful mode) is not counted again;
	 * one that met a lock conflict or a deadlock is not counted at all.
	 */
	values[1] = Int32GetDatum(transient ? (counted ? -1 : 0) : (counted ? 0 : 1));
	values[2] = CStringGetTextDatum(msg);
	/* a role that no longer exists will never run it: dead at once */
	values[3] = Int32GetDatum(edata->sqlerrcode == ERRCODE_SAGA_ROLE_GONE ?
							  0 : saga_max_attempts);
	values[4] = Float8GetDatum(saga_retry_delay_ms(cd->attempts + 1, edata->sqlerrcode));
	values[5] = BoolGetDatum(!transient);	/* kept for the trace */
	values[6] = Int32GetDatum(blocked_by);
	nulls[6] = blocked_by != 0 ? ' ' : 'n';
	saga_execute(saga_schema_is_1_2() ? &failed_plan : &failed_plan_1_1,
				 values, nulls, false, 0);

	status = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	if (strcmp(status, "dead") == 0 && cd->on_failure != NULL)
	{
		/*
		 * The subscription turns its dead letters into a failure event that
		 * the saga's other participants handle, so that the saga compensates
		 * instead of waiting forever.
		 */
		Jsonb	   *extra = saga_jsonb_strings(1, "reason",
											   edata->message ? edata->message : "unknown error");

		bool		exists;
		bool		into_saga = cd->has_saga_id &&
			saga_may_act_for(cd->owner, cd->saga_id, &exists);

		/* into the saga only if the subscriber acts for its owner */
		saga_publish_event(cd->on_failure,
						   DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
															  JsonbPGetDatum(cd->payload),
															  JsonbPGetDatum(extra))),
						   into_saga, cd->saga_id, cd->consumer,
						   true, cd->event_id);
	}
	/* a lock conflict is retried, but is not an attempt: not counted */
	if (strcmp(status, "dead") == 0)
		saga_count(SAGA_COUNT_DEAD, 1);
	else if (!transient)
		saga_count(SAGA_COUNT_RETRIES, 1);
	if (strcmp(status, "dead") == 0)
		ereport(WARNING,
				(errmsg("saga: delivery %lld of event %lld to consumer \"%s\" dead-lettered after %d attempts",
						(long long) cd->delivery_id, (long long) cd->event_id,
						cd->consumer, cd->attempts + (counted ? 0 : 1)),
				 errdetail("Last error: %s", msg)));
	else
		ereport(DEBUG1,
				(errmsg("saga: delivery %lld to consumer \"%s\" failed, will retry",
						(long long) cd->delivery_id, cd->consumer),
				 errdetail("%s", msg)));
}

/*
 * Read a large event into cxt, when its delivery's turn comes.  The caller
 * is connected to SPI.
 */
static void
load_event(ClaimedDelivery *cd, MemoryContext cxt)
{
	Datum		arg = Int64GetDatum(cd->event_id);
	MemoryContext old;
	bool		isnull;

	saga_execute(&event_plan, &arg, NULL, false, 0);
	if (SPI_processed != 1)
		elog(ERROR, "event %lld of delivery %lld is missing",
			 (long long) cd->event_id, (long long) cd->delivery_id);
	old = MemoryContextSwitchTo(cxt);
	cd->event = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(SPI_tuptable->vals[0],
																	SPI_tuptable->tupdesc, 1,
																	&isnull)));
	cd->payload = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 2, &isnull));
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Give a deferred delivery its row, pending, so that what happens to it
 * next (a failure, a cancellation) is written as for any other.
 */
static void
write_deferred_row(ClaimedDelivery *cd, Datum subscription_id)
{
	Datum		values[2];
	bool		isnull;

	values[0] = Int64GetDatum(cd->event_id);
	values[1] = subscription_id;
	saga_execute(&insert_pending_plan, values, NULL, false, 0);
	cd->delivery_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	saga_note_published();
}

/*
 * Claim up to limit deliveries and run their handlers; or, with counted_id,
 * that delivery only, whose attempt careful mode has counted already.  The
 * caller is in a transaction with an active snapshot.
 */
static SagaBatchResult
dispatch(int limit, int64 counted_id)
{
	SagaBatchResult result = {0, 0, 0, 0};
	uint64		noted = saga_work_noted_count();
	MemoryContext batch_cxt;
	MemoryContext item_cxt;
	MemoryContext oldcxt;
	ClaimedDelivery *claimed;
	volatile int64 bytes = 0;
	HandlerInfo *handlers;
	volatile int nhandlers = 0;
	Datum	   *done_ids;
	Datum	   *cancel_ids;
	int			ncancel = 0;
	int64	   *settle_ids;
	int			nsettle = 0;
	int64	   *abort_ids;
	const char **abort_reasons;
	volatile int nabort = 0;
	Datum	   *done_seqs;
	Datum	   *done_ats;
	Oid			seq_oid;
	Datum		args[4];
	int			i;
	volatile int asked = limit;	/* read after PG_TRY: volatile */
	int			ndeferred = 0;	/* the claim is of deliveries kept in memory */
	Datum	   *def_events = NULL;
	Datum	   *def_subs = NULL;
	Datum	   *new_events;		/* deferred deliveries done, to be written */
	Datum	   *new_subs;
	Datum	   *new_seqs;
	Datum	   *new_ats;
	volatile int nnew = 0;
	volatile int next = 0;		/* the first claimed delivery not dealt with */

	if (saga_current_delivery != NULL || saga_in_user_function())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot deliver events from inside a handler or step")));

	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "saga batch",
									  ALLOCSET_DEFAULT_SIZES);
	item_cxt = AllocSetContextCreate(batch_cxt, "saga delivery",
									 ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batch_cxt);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	seq_oid = get_relname_relid("trace_seq", get_namespace_oid(SAGA_SCHEMA, false));

	args[0] = Int32GetDatum(asked);
	args[1] = Int32GetDatum(SAGA_INLINE_BYTES);
	args[2] = Int64GetDatum(counted_id);
	if (counted_id == 0 && saga_batch_deferred() > 0)
	{
		/* what the last round's handlers published comes first */
		ndeferred = saga_batch_take_deferred(asked, &def_events, &def_subs);
		args[2] = PointerGetDatum(construct_array(def_events, ndeferred, INT8OID, sizeof(int64),
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[3] = PointerGetDatum(construct_array(def_subs, ndeferred, INT4OID, sizeof(int32),
												  true, TYPALIGN_INT));
		saga_execute(&deferred_plan, args, NULL, false, 0);
	}
	else
		saga_execute(counted_id != 0 ? &claim_counted_plan : &claim_plan, args, NULL, false, 0);
	result.claimed = (int) SPI_processed;
	/* after deliveries from memory, the table's due ones may follow */
	result.full = ndeferred > 0 || result.claimed == asked;
	if (result.claimed > 0)
		saga_worker_found_work();	/* a worker is busy from now on */

	claimed = palloc0(sizeof(ClaimedDelivery) * Max(result.claimed, 1));
	handlers = palloc0(sizeof(HandlerInfo) * Max(result.claimed, 1));
	done_ids = palloc(sizeof(Datum) * Max(result.claimed, 1));
	done_seqs = palloc(sizeof(Datum) * Max(result.claimed, 1));
	done_ats = palloc(sizeof(Datum) * Max(result.claimed, 1));
	cancel_ids = palloc(sizeof(Datum) * Max(result.claimed, 1));
	settle_ids = palloc(sizeof(int64) * Max(result.claimed, 1));
	abort_ids = palloc(sizeof(int64) * Max(result.claimed, 1));
	abort_reasons = palloc(sizeof(char *) * Max(result.claimed, 1));
	new_events = palloc(sizeof(Datum) * Max(result.claimed, 1));
	new_subs = palloc(sizeof(Datum) * Max(result.claimed, 1));
	new_seqs = palloc(sizeof(Datum) * Max(result.claimed, 1));
	new_ats = palloc(sizeof(Datum) * Max(result.claimed, 1));

	for (i = 0; i < result.claimed; i++)
		unpack_claimed(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &claimed[i]);
	SPI_freetuptable(SPI_tuptable);

	for (i = 0; i < result.claimed; i++)
	{
		ClaimedDelivery *cd = &claimed[i];
		SagaCurrentDelivery current;
		ResourceOwner oldowner = CurrentResourceOwner;
		TimestampTz at;
		int64		seq;
		int			keep;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(item_cxt);

		/* enough bytes for one batch: leave the rest to the next */
		if (i > 0 && !cd->cancel && bytes + cd->size > saga_batch_bytes * INT64CONST(1024))
			break;
		bytes += cd->size;

		/* a paused consumer's delivery waits, pending, as published */
		if (cd->paused)
		{
			write_deferred_row(cd, def_subs[i]);
			next = i + 1;
			continue;
		}

		/* an aborted saga may end once this delivery is out of the way */
		if (cd->aborting)
			settle_ids[nsettle++] = cd->saga_id;
		if (cd->cancel)
		{
			if (ndeferred > 0)
				write_deferred_row(cd, def_subs[i]);
			cancel_ids[ncancel++] = Int64GetDatum(cd->delivery_id);
			next = i + 1;
			continue;
		}

		current.event_id = cd->event_id;
		current.saga_id = cd->saga_id;
		current.has_saga_id = cd->has_saga_id;
		current.consumer = cd->consumer;

		if (cd->event == (Datum) 0)
			load_event(cd, item_cxt);

		/* the moment of delivery, for the trace: before what it publishes */
		seq = nextval_internal(seq_oid, false);
		at = GetCurrentTimestamp();

		keep = saga_batch_deferred();
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(item_cxt);
		PG_TRY();
		{
			FmgrInfo   *flinfo;
			bool		isnull;

			flinfo = lookup_handler(handlers, &nhandlers, result.claimed,
									cd->handler, batch_cxt);
			saga_current_delivery = &current;
			/* what it publishes may wait in memory for the next round */
			saga_batch_set_deferring(counted_id == 0);
			(void) saga_invoke_as(cd->owner, flinfo, cd->event, &isnull,
								  cd->failed_before);
			saga_batch_set_deferring(false);
			saga_current_delivery = NULL;

			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(batch_cxt);
			CurrentResourceOwner = oldowner;

			if (ndeferred > 0)
			{
				new_events[nnew] = Int64GetDatum(cd->event_id);
				new_subs[nnew] = def_subs[i];
				new_seqs[nnew] = Int64GetDatum(seq);
				new_ats[nnew] = TimestampTzGetDatum(at);
				nnew++;
			}
			else
			{
				done_ids[result.done - nnew] = Int64GetDatum(cd->delivery_id);
				done_seqs[result.done - nnew] = Int64GetDatum(seq);
				done_ats[result.done - nnew] = TimestampTzGetDatum(at);
			}
			result.done++;
			if (!cd->forward)
				saga_count(SAGA_COUNT_COMPENSATIONS, 1);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			saga_batch_set_deferring(false);
			saga_current_delivery = NULL;
			MemoryContextSwitchTo(item_cxt);
			edata = CopyErrorData();
			FlushErrorState();

			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(item_cxt);
			CurrentResourceOwner = oldowner;

			/* its events went with its subtransaction, and so must their deliveries */
			saga_batch_forget_deferred(keep);
			if (ndeferred > 0)
				write_deferred_row(cd, def_subs[i]);

			record_failure(cd, edata, counted_id != 0, saga_lock_blocker());
			if (saga_error_is_transient(edata->sqlerrcode))
				result.transient++;
			MemoryContextSwitchTo(batch_cxt);
			/* its role is gone: the saga cannot go on, it is aborted */
			if (edata->sqlerrcode == ERRCODE_SAGA_ROLE_GONE && cd->has_saga_id && cd->forward)
			{
				abort_ids[nabort] = cd->saga_id;
				abort_reasons[nabort++] = pstrdup(edata->message);
			}
			result.failed++;
		}
		PG_END_TRY();
		next = i + 1;

		/*
		 * Another transaction holds rows this batch needs.  Going on would
		 * keep the locks of everything done so far while waiting more: end
		 * the batch here, so that both make progress.  The deliveries not
		 * handled are released at commit, and taken again.  Until the batch
		 * has done something it holds no such locks, and goes on: deliveries
		 * that wait for a row held elsewhere do not keep it from the ones
		 * that do not.
		 */
		if ((result.transient > 0 && result.done > 0) || saga_batch_out_of_time())
			break;
	}
	if (counted_id == 0 && ndeferred == 0)
		adapt_claim_size(asked, result.claimed, result.done + result.failed + ncancel);

	MemoryContextSwitchTo(batch_cxt);
	MemoryContextReset(item_cxt);
	/* deferred deliveries not reached: pending, as if published so */
	if (ndeferred > 0 && next < result.claimed)
	{
		Datum	   *events = palloc(sizeof(Datum) * (result.claimed - next));

		for (i = next; i < result.claimed; i++)
			events[i - next] = Int64GetDatum(claimed[i].event_id);
		saga_batch_write_pending(events, def_subs + next, result.claimed - next);
	}
	if (nnew > 0)
	{
		Datum		values[4];

		values[0] = PointerGetDatum(construct_array(new_events, nnew, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[1] = PointerGetDatum(construct_array(new_subs, nnew, INT4OID,
													sizeof(int32), true, TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_array(new_seqs, nnew, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[3] = PointerGetDatum(construct_array(new_ats, nnew, TIMESTAMPTZOID,
													sizeof(TimestampTz), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		saga_execute(&insert_done_plan, values, NULL, false, 0);
	}
	if (result.done - nnew > 0)
	{
		Datum		values[4];

		values[0] = PointerGetDatum(construct_array(done_ids, result.done - nnew, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[1] = PointerGetDatum(construct_array(done_seqs, result.done - nnew, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[2] = PointerGetDatum(construct_array(done_ats, result.done - nnew, TIMESTAMPTZOID,
													sizeof(TimestampTz), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[3] = Int32GetDatum(counted_id != 0 ? 0 : 1);
		saga_execute(saga_schema_is_1_2() ? &done_plan : &done_plan_1_1,
					 values, NULL, false, 0);
	}
	saga_count(SAGA_COUNT_DELIVERIES, result.done);
	if (ncancel > 0)
	{
		Datum		arg;

		arg = PointerGetDatum(construct_array(cancel_ids, ncancel, INT8OID,
											  sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		saga_execute(&cancel_plan, &arg, NULL, false, 0);
	}
	if (nabort > 0)
		saga_abort_now(abort_ids, abort_reasons, nabort);
	if (nsettle > 0)
		saga_settle_aborted(settle_ids, nsettle);

	SPI_finish();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(batch_cxt);
	result.published = (int) (saga_work_noted_count() - noted);
	return result;
}

/*
 * Claim up to limit deliveries and run their handlers.  The caller is in
 * a transaction with an active snapshot.
 */
SagaBatchResult
saga_dispatch_batch(int limit)
{
	/* what the last batches could handle, at most */
	return dispatch(claim_size > 0 ? Min(limit, claim_size) : limit, 0);
}

/*
 * Careful mode, first half: in a transaction of its own, take the next due
 * delivery, count an attempt at it and lease it (SAGA_LEASE_MS), so that
 * the attempt counts even if the worker dies in it; the second half, in
 * the next transaction, is saga_dispatch_counted().  A delivery whose
 * attempts ran out this way (its handler ended the worker
 * saga.max_attempts times) is dead-lettered instead, without running it
 * again.  Returns the delivery's id, 0 if none is due, -1 if it
 * dead-lettered one.
 */
int64
saga_count_next_attempt(void)
{
	int64		id;
	int32		attempts;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!saga_careful_next(&next_due_plan, &id, &attempts))
	{
		SPI_finish();
		return 0;
	}
	if (attempts >= saga_max_attempts)
	{
		/* record it as a failure of the handler, and let the others take over */
		Datum		args[3];
		ClaimedDelivery cd;
		ErrorData	edata;

		args[0] = Int32GetDatum(1);
		args[1] = Int32GetDatum(SAGA_INLINE_BYTES);
		args[2] = Int64GetDatum(id);
		saga_execute(&claim_counted_plan, args, NULL, false, 0);
		unpack_claimed(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, &cd);
		SPI_freetuptable(SPI_tuptable);
		cd.attempts = attempts;
		/* its on_failure event carries the payload */
		if (cd.on_failure != NULL && cd.payload == NULL)
			load_event(&cd, CurrentMemoryContext);
		memset(&edata, 0, sizeof(edata));
		edata.sqlerrcode = ERRCODE_ADMIN_SHUTDOWN;
		edata.message = psprintf("its handler did not finish %d times: the worker running it exited",
								 attempts);
		record_failure(&cd, &edata, true, 0);
		SPI_finish();
		return -1;
	}
	saga_careful_lease(&count_attempt_plan, id);
	SPI_finish();
	return id;
}

/*
 * Careful mode, second half: run the delivery whose attempt
 * saga_count_next_attempt() counted, in this transaction.
 */
SagaBatchResult
saga_dispatch_counted(int64 delivery_id)
{
	return dispatch(1, delivery_id);
}
