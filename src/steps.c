/*-------------------------------------------------------------------------
 *
 * steps.c
 *	  The step runner: the workers (and saga_run_pending()) take orchestrated
 *	  sagas due for a step and run them as far as they go.
 *
 * The runner claims instances due for work with FOR UPDATE SKIP LOCKED and
 * takes each as far as it can go in the batch's transaction, step after
 * step, each step in a subtransaction that also writes the instance's new
 * state and the step's record: the step's effects and the saga's progress
 * commit together, so after a crash the saga resumes at the step it was on
 * and no step runs twice.
 *
 * Outcomes of a step:
 *	- it returns: the next step is due (or the saga is completed);
 *	- it rejects (SQLSTATE SG400, raised by saga_reject()): a business "no",
 *	  so the steps done so far are compensated at once, last first;
 *	- it raises anything else: a technical error, retried with exponential
 *	  backoff up to saga.max_attempts, then treated as a rejection.
 * A compensation that raises is retried likewise, never skipped; after
 * saga.max_attempts the saga is marked 'stuck' for a person to look at,
 * and saga_retry() resumes it.  Every failed attempt is kept in step_run
 * (outcome 'retry'), so that the trace shows it; the trace's request
 * labels ("DELETE /payments/{payment_id}") are filled in here too
 * (render_label()).
 *
 * A saga's deadline is checked before each forward step starts and when
 * it ends: a step that ends past the deadline is compensated with the
 * steps before it, and no further step starts.  (The deadline sweep in
 * abort.c skips sagas being run, whose lock the runner holds.)
 *
 * In careful mode (worker.c) the runner takes one saga's step at a time,
 * its attempt counted first (saga_count_next_step()).
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
#include "abort.h"
#include "batch.h"
#include "invoke.h"
#include "shmem.h"
#include "spi_util.h"
#include "stats.h"
#include "steps.h"
#include "wakeup.h"


/*
 * What a claim reads of a saga (unpack_claimed() takes it apart), and
 * which sagas are due: pending, going forward or compensating, their next
 * attempt's time come, their step's service not paused.
 */
#define CLAIM_SELECT \
	"SELECT i.id, i.saga_type, i.definition_version, i.step, i.phase, i.data," \
	"       i.attempts, i.reason, d.steps, d.owner::oid, i.deadline," \
	"       i.aborted_at IS NOT NULL, i.last_error IS NOT NULL" \
	"  FROM saga.instance i" \
	"  JOIN saga.definition d" \
	"    ON d.name = i.saga_type AND d.version = i.definition_version"
#define DUE_JOIN \
	"  JOIN saga.definition_step ds" \
	"    ON ds.definition = i.saga_type AND ds.version = i.definition_version" \
	"   AND ds.step_no = i.step"
#define DUE_WHERE \
	" WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating')" \
	"   AND i.next_attempt_at <= now()" \
	"   AND NOT EXISTS (SELECT FROM saga.paused_consumer p" \
	"                    WHERE p.consumer = ds.service)" \
	" ORDER BY i.id"

/*
 * The claim: the oldest due sagas, locked, then their definitions.  As
 * the dispatcher's claim does, it locks first, on the instance table
 * alone (rows SKIP LOCKED passes over are not joined, and the lock follows
 * the runnable index), and returns the locked rows' own columns.  The
 * paused services are looked at only when some consumer is paused: the
 * uncorrelated test comes first and is evaluated once.
 */
static SagaPlan claim_plan = {
	"WITH i AS ("
	"  SELECT i.id, i.saga_type, i.definition_version, i.step, i.phase, i.data,"
	"         i.attempts, i.reason, i.deadline, i.aborted_at,"
	"         i.last_error IS NOT NULL AS failed_before"
	"    FROM saga.instance i"
	"   WHERE i.status = 'pending' AND i.phase IN ('forward', 'compensating')"
	"     AND i.next_attempt_at <= now()"
	"     AND (NOT EXISTS (SELECT FROM saga.paused_consumer)"
	"          OR NOT EXISTS (SELECT FROM saga.definition_step ds"
	"                           JOIN saga.paused_consumer p ON p.consumer = ds.service"
	"                          WHERE ds.definition = i.saga_type"
	"                            AND ds.version = i.definition_version"
	"                            AND ds.step_no = i.step))"
	"   ORDER BY i.id"
	"   LIMIT $1"
	"     FOR UPDATE SKIP LOCKED) "
	"SELECT i.id, i.saga_type, i.definition_version, i.step, i.phase, i.data,"
	"       i.attempts, i.reason, d.steps, d.owner::oid, i.deadline,"
	"       i.aborted_at IS NOT NULL, i.failed_before"
	"  FROM i"
	"  JOIN saga.definition d"
	"    ON d.name = i.saga_type AND d.version = i.definition_version"
	" ORDER BY i.id",
	1, {INT4OID}
};

/*
 * The saga whose next attempt careful mode has counted (and leased)
 * already.  It waits for the row rather than skip it, as the dispatcher's
 * does: the other worker's look for the saga due next may have locked it
 * in passing (a row locked by SELECT ... FOR UPDATE stays locked even when
 * its new version no longer qualifies), and a skipped saga would keep the
 * attempt counted without its step having run.
 */
static SagaPlan claim_counted_plan = {
	CLAIM_SELECT
	" WHERE i.id = $1 AND i.status = 'pending' AND i.phase IN ('forward', 'compensating')"
	"   FOR UPDATE OF i",
	1, {INT8OID}
};

/* Careful mode: the saga due next, and its attempts so far. */
static SagaPlan next_due_plan = {
	"SELECT i.id, i.attempts"
	"  FROM saga.instance i"
	DUE_JOIN
	DUE_WHERE
	" LIMIT 1"
	"   FOR UPDATE OF i SKIP LOCKED",
	0, {InvalidOid}
};

/* Careful mode: count the attempt before it runs, and lease the saga. */
static SagaPlan count_attempt_plan = {
	"UPDATE saga.instance"
	"   SET attempts = attempts + 1,"
	"       next_attempt_at = clock_timestamp() + $2 * interval '1 millisecond'"
	" WHERE id = $1",
	2, {INT8OID, FLOAT8OID}
};

static SagaPlan step_plan = {
	"SELECT name, service, action::oid, compensation::oid, request,"
	"       compensation_request,"
	"       EXISTS (SELECT FROM saga.paused_consumer p WHERE p.consumer = service)"
	"  FROM saga.definition_step"
	" WHERE definition = $1 AND version = $2 AND step_no = $3",
	3, {TEXTOID, INT4OID, INT4OID}
};

/*
 * The saga moved on: new data, step and phase, maybe finished; no longer
 * blocked, if its step was.
 */
#define ADVANCE_HEAD \
	"UPDATE saga.instance" \
	"   SET data = $2, step = $3, phase = $4, status = $5, reason = $6," \
	"       attempts = 0, last_error = NULL, next_attempt_at = now(),"
#define ADVANCE_TAIL \
	"       finished_at = CASE WHEN $5 = 'pending' THEN NULL ELSE clock_timestamp() END," \
	"       finish_seq = CASE WHEN $5 = 'pending' THEN NULL ELSE nextval('saga.trace_seq') END" \
	" WHERE id = $1"

static SagaPlan advance_plan = {
	ADVANCE_HEAD
	"       blocked_since = NULL, blocked_by = NULL,"
	ADVANCE_TAIL,
	6, {INT8OID, JSONBOID, INT4OID, TEXTOID, TEXTOID, TEXTOID}
};

/* The same before 1.2, which notes no blocked steps. */
static SagaPlan advance_plan_1_1 = {
	ADVANCE_HEAD
	ADVANCE_TAIL,
	6, {INT8OID, JSONBOID, INT4OID, TEXTOID, TEXTOID, TEXTOID}
};

/*
 * A step raised: try again later, or give up on it.  A step that met a
 * lock conflict ($6) is due again as a blocked delivery is (dispatch.c):
 * later each time, half the time it has been blocked, at most a second
 * after; it notes since when it is blocked, and by whom when the worker
 * saw it ($7), for saga_stuck.
 */
static SagaPlan retry_later_plan = {
	"UPDATE saga.instance"
	"   SET attempts = attempts + $5, last_error = $2, phase = $3,"
	"       blocked_since = CASE WHEN $6 THEN coalesce(blocked_since, clock_timestamp()) END,"
	"       blocked_by = CASE WHEN $6 THEN coalesce($7, blocked_by) END,"
	"       next_attempt_at = clock_timestamp() +"
	"           CASE WHEN NOT $6 THEN $4 * interval '1 millisecond'"
	"                ELSE least(greatest($4 * interval '1 millisecond',"
	"                                    (clock_timestamp() - coalesce(blocked_since, clock_timestamp())) / 2),"
	"                           interval '1 second') END"
	" WHERE id = $1",
	7, {INT8OID, TEXTOID, TEXTOID, FLOAT8OID, INT4OID, BOOLOID, INT4OID}
};

/* The same before 1.2. */
static SagaPlan retry_later_plan_1_1 = {
	"UPDATE saga.instance"
	"   SET attempts = attempts + $5, last_error = $2, phase = $3,"
	"       next_attempt_at = clock_timestamp() + $4 * interval '1 millisecond'"
	" WHERE id = $1",
	5, {INT8OID, TEXTOID, TEXTOID, FLOAT8OID, INT4OID}
};

static SagaPlan step_run_plan = {
	"INSERT INTO saga.step_run (saga_id, step_no, step, service, kind, outcome,"
	"                           request, detail, request_seq, response_seq,"
	"                           started_at, finished_at, attempt)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nextval('saga.trace_seq'),"
	"         $10, clock_timestamp(), $11)",
	11, {INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	INT8OID, TIMESTAMPTZOID, INT4OID}
};

/* The same before 1.2: no attempt number, and no failed attempts kept. */
static SagaPlan step_run_plan_1_1 = {
	"INSERT INTO saga.step_run (saga_id, step_no, step, service, kind, outcome,"
	"                           request, detail, request_seq, response_seq,"
	"                           started_at, finished_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nextval('saga.trace_seq'),"
	"         $10, clock_timestamp())",
	10, {INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	INT8OID, TIMESTAMPTZOID}
};

typedef struct ClaimedSaga
{
	int64		id;
	char	   *saga_type;
	int32		version;
	int32		step;
	bool		compensating;
	Jsonb	   *data;
	int32		attempts;
	char	   *reason;
	int32		nsteps;
	Oid			owner;
	bool		has_deadline;
	TimestampTz deadline;
	bool		aborted;		/* by its deadline or saga_cancel() */
	bool		settled;		/* completed or failed */
	bool		counted;		/* its attempt counted already (careful mode) */
	bool		failed_before;	/* it has a last error: it may be blocked */
	int			steps_run;		/* steps run on it in this batch */
} ClaimedSaga;


/*
 * Read step step_no of the saga's definition version into *def; false if
 * there is no such step.
 */
static bool
load_step(ClaimedSaga *cs, int step_no, SagaStepDef *def)
{
	Datum		values[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(cs->saga_type);
	values[1] = Int32GetDatum(cs->version);
	values[2] = Int32GetDatum(step_no);
	saga_execute(&step_plan, values, NULL, false, 0);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	def->name = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	def->service = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	def->action = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	def->compensation = isnull ? InvalidOid : DatumGetObjectId(d);
	def->request = TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull));
	d = SPI_getbinval(tup, desc, 6, &isnull);
	def->compensation_request = isnull ?
		psprintf("compensate %s", def->name) : TextDatumGetCString(d);
	def->paused = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
	return true;
}

/*
 * Replace each {key} in a label by the data's value for key, so that a
 * trace shows "DELETE /payments/17" rather than a template.
 */
static char *
render_label(const char *tmpl, Jsonb *data)
{
	StringInfoData buf;
	const char *p = tmpl;

	initStringInfo(&buf);
	while (*p)
	{
		const char *close;

		if (*p == '{' && (close = strchr(p + 1, '}')) != NULL)
		{
			JsonbValue	v;
			JsonbValue *found;

			found = getKeyJsonValueFromContainer(&data->root, p + 1,
												 close - p - 1, &v);
			if (found != NULL && found->type == jbvString)
				appendBinaryStringInfo(&buf, found->val.string.val, found->val.string.len);
			else if (found != NULL && found->type == jbvNumeric)
				appendStringInfoString(&buf,
									   DatumGetCString(DirectFunctionCall1(numeric_out,
																		   NumericGetDatum(found->val.numeric))));
			else
				appendBinaryStringInfo(&buf, p, close - p + 1);
			p = close + 1;
			continue;
		}
		appendStringInfoChar(&buf, *p++);
	}
	return buf.data;
}

/*
 * Record one run of a step or compensation in saga.step_run, for the
 * trace and saga_check(): its outcome, its request label and, for a
 * failure, the error.  Databases still at the 1.1 schema keep no failed
 * attempts.
 */
static void
record_step_run(ClaimedSaga *cs, int step_no, SagaStepDef *def, bool compensation,
				const char *outcome, const char *request, const char *detail,
				int64 request_seq, TimestampTz started_at)
{
	Datum		values[11];
	char		nulls[11];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(cs->id);
	values[1] = Int32GetDatum(step_no);
	values[2] = CStringGetTextDatum(def->name);
	values[3] = CStringGetTextDatum(def->service);
	values[4] = CStringGetTextDatum(compensation ? "compensation" : "action");
	values[5] = CStringGetTextDatum(outcome);
	values[6] = CStringGetTextDatum(request);
	if (detail)
		values[7] = CStringGetTextDatum(detail);
	else
		nulls[7] = 'n';
	values[8] = Int64GetDatum(request_seq);
	values[9] = TimestampTzGetDatum(started_at);
	values[10] = Int32GetDatum(cs->attempts + 1);
	if (saga_schema_is_1_2())
		saga_execute(&step_run_plan, values, nulls, false, 0);
	else if (strcmp(outcome, "retry") != 0)
		saga_execute(&step_run_plan_1_1, values, nulls, false, 0);
}

/*
 * Move the saga on: its new data, step, phase and status (and reason),
 * its attempts back to zero; an ended saga wakes its saga_await()ers and
 * is counted.  cs follows, for the saga's next step in this batch.
 */
static void
advance(ClaimedSaga *cs, Jsonb *data, int step, const char *phase,
		const char *status, const char *reason)
{
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(cs->id);
	values[1] = JsonbPGetDatum(data);
	values[2] = Int32GetDatum(step);
	values[3] = CStringGetTextDatum(phase);
	values[4] = CStringGetTextDatum(status);
	if (reason)
		values[5] = CStringGetTextDatum(reason);
	else
		nulls[5] = 'n';
	saga_execute(saga_schema_is_1_2() ? &advance_plan : &advance_plan_1_1,
				 values, nulls, false, 0);

	/* where the saga is now, for its next step in this batch */
	cs->data = data;
	cs->step = step;
	cs->compensating = strcmp(phase, "compensating") == 0;
	cs->attempts = 0;
	cs->reason = reason ? pstrdup(reason) : NULL;
	cs->settled = strcmp(status, "pending") != 0;
	if (cs->settled)
	{
		saga_note_finished(cs->id);
		saga_count(strcmp(status, "completed") == 0 ? SAGA_COUNT_COMPLETED : SAGA_COUNT_FAILED, 1);
	}
}

/*
 * The saga's steps before step_no are done and must be undone, last first.
 * Find the next one that has a compensation; if none is left, the saga
 * has failed.
 */
static void
start_compensating(ClaimedSaga *cs, Jsonb *data, int step_no, const char *reason)
{
	SagaStepDef def;
	int			s;

	for (s = step_no - 1; s >= 0; s--)
		if (load_step(cs, s, &def) && OidIsValid(def.compensation))
			break;
	if (s >= 0)
		advance(cs, data, s, "compensating", "pending", reason);
	else
		advance(cs, data, 0, "done", "failed", reason);
}

/* Has the saga's deadline passed, and is it not aborted yet? */
static bool
past_deadline(ClaimedSaga *cs)
{
	return cs->has_deadline && !cs->aborted && !cs->compensating &&
		GetCurrentTimestamp() >= cs->deadline;
}

/*
 * The deadline passed while the saga was going forward: abort it and
 * compensate the steps before step_no, last first.
 */
static void
abort_at_deadline(ClaimedSaga *cs, Jsonb *data, int step_no)
{
	saga_mark_aborted(cs->id, "deadline exceeded");
	cs->aborted = true;
	start_compensating(cs, data, step_no, "deadline exceeded");
	saga_count(SAGA_COUNT_ABORTED, 1);
}

/* Merge a step's result into the data. */
static Jsonb *
merge_data(Jsonb *data, Datum result, bool isnull, Oid rettype)
{
	Jsonb	   *add;

	if (isnull || rettype == VOIDOID)
		return data;
	add = DatumGetJsonbP(result);
	if (!JB_ROOT_IS_OBJECT(add))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a saga step must return a JSON object (or NULL), not %s",
						JsonbToCString(NULL, &add->root, VARSIZE(add)))));
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
											  JsonbPGetDatum(data),
											  JsonbPGetDatum(add)));
}

/* A compensation failed saga.max_attempts times: a person must look at it. */
static void
warn_stuck(ClaimedSaga *cs, SagaStepDef *def, const char *msg)
{
	ereport(WARNING,
			(errmsg("saga %lld is stuck: compensation \"%s\" failed %d times",
					(long long) cs->id, def->name, cs->attempts + 1),
			 errdetail("Last error: %s", msg),
			 errhint("Fix the cause, then call saga_retry(%lld).",
					 (long long) cs->id)));
}

/*
 * A step of saga saga_id raised msg: note it, with the saga's phase from
 * now on, when it is due again (after delay_ms) and what to add to its
 * attempts; transient: it met a lock conflict, held by pid blocked_by if
 * the worker saw it (else 0).
 */
static void
retry_later(int64 saga_id, const char *msg, const char *phase, double delay_ms,
			int count, bool transient, int blocked_by)
{
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(saga_id);
	values[1] = CStringGetTextDatum(msg);
	values[2] = CStringGetTextDatum(phase);
	values[3] = Float8GetDatum(delay_ms);
	values[4] = Int32GetDatum(count);
	values[5] = BoolGetDatum(transient);
	values[6] = Int32GetDatum(blocked_by);
	if (blocked_by == 0)
		nulls[6] = 'n';
	if (saga_schema_is_1_2())
		saga_execute(&retry_later_plan, values, nulls, false, 0);
	else
		saga_execute(&retry_later_plan_1_1, values, nulls, false, 0);
}

/* What became of a saga's next step (run_one_step). */
typedef enum StepOutcome
{
	STEP_MOVED_ON,				/* it succeeded or was rejected: the saga moved on */
	STEP_FAILED,				/* it raised: tried again later */
	STEP_PAUSED					/* not run: its service is paused */
} StepOutcome;

/*
 * Take one claimed saga one step further.  *transient tells whether a
 * step that raised hit a lock timeout or a deadlock.  A step whose service
 * is paused is not run, unless the claim has checked that already (the
 * saga's first step in this batch).
 */
static StepOutcome
run_one_step(ClaimedSaga *cs, MemoryContext cxt, bool *transient_out)
{
	SagaStepDef def;
	bool		compensation = cs->compensating;
	int64		request_seq;
	TimestampTz started_at;
	char	   *request;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ClaimedSaga before = *cs;
	volatile StepOutcome outcome = STEP_MOVED_ON;

	if (!load_step(cs, cs->step, &def))
		elog(ERROR, "step %d of saga \"%s\" version %d is missing",
			 cs->step, cs->saga_type, cs->version);
	if (def.paused && cs->steps_run > 0)
		return STEP_PAUSED;
	request = render_label(compensation ? def.compensation_request : def.request,
						   cs->data);
	request_seq = nextval_internal(get_relname_relid("trace_seq",
													 get_namespace_oid(SAGA_SCHEMA, false)),
								   false);
	started_at = GetCurrentTimestamp();

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		FmgrInfo	flinfo;
		Datum		result;
		bool		isnull;
		Jsonb	   *data;

		saga_lookup_function(compensation ? def.compensation : def.action,
							 &flinfo, cxt);
		result = saga_invoke_as(cs->owner, &flinfo, JsonbPGetDatum(cs->data), &isnull,
								cs->failed_before);
		data = merge_data(cs->data, result, isnull, get_func_rettype(flinfo.fn_oid));

		record_step_run(cs, cs->step, &def, compensation, "ok", request, NULL,
						request_seq, started_at);
		if (past_deadline(cs))
			abort_at_deadline(cs, data, cs->step + 1);	/* this step too */
		else if (!compensation && cs->step + 1 < cs->nsteps)
			advance(cs, data, cs->step + 1, "forward", "pending", NULL);
		else if (!compensation)
			advance(cs, data, cs->step + 1, "done", "completed", NULL);
		else
			start_compensating(cs, data, cs->step, cs->reason);

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		saga_count(SAGA_COUNT_STEPS, 1);
		if (compensation)
			saga_count(SAGA_COUNT_COMPENSATIONS, 1);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		bool		rejected;
		bool		transient;
		bool		exhausted;
		char	   *msg;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		/* what the step's subtransaction wrote is gone: so is its progress */
		*cs = before;

		rejected = !compensation && edata->sqlerrcode == ERRCODE_SAGA_REJECTED;
		transient = saga_error_is_transient(edata->sqlerrcode);
		/* a step whose role no longer exists can never run: at once */
		exhausted = !transient && (cs->attempts + 1 >= saga_max_attempts ||
								   edata->sqlerrcode == ERRCODE_SAGA_ROLE_GONE);
		msg = saga_error_text(edata);

		if (rejected || (!compensation && exhausted))
		{
			/* the step said no, or kept failing: undo what was done */
			record_step_run(cs, cs->step, &def, false,
							rejected ? "rejected" : "error", request,
							edata->message, request_seq, started_at);
			start_compensating(cs, cs->data, cs->step,
							   edata->message ? edata->message : msg);
		}
		else
		{
			int			blocked_by = transient ? saga_lock_blocker() : 0;

			/* an attempt counted before it ran is not counted again */
			int			count = transient ? (cs->counted ? -1 : 0) :
				(cs->counted ? 0 : 1);

			/* the attempt, for the trace; a lock conflict is not one */
			if (!transient)
				record_step_run(cs, cs->step, &def, compensation, "retry", request,
								msg, request_seq, started_at);
			/* a compensation is never skipped: a person must look at it */
			retry_later(cs->id, msg,
						!compensation ? "forward" : exhausted ? "stuck" : "compensating",
						saga_retry_delay_ms(cs->attempts + 1, edata->sqlerrcode),
						count, transient, blocked_by);
			*transient_out = transient;
			/* a lock conflict is retried, but is not an attempt: not counted */
			if (compensation && exhausted)
				saga_count(SAGA_COUNT_DEAD, 1);
			else if (!transient)
				saga_count(SAGA_COUNT_RETRIES, 1);
			if (compensation && exhausted)
				warn_stuck(cs, &def, msg);
			outcome = STEP_FAILED;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	cs->steps_run++;
	return outcome;
}

static SagaPlan abort_look_plan = {
	"SELECT i.saga_type, i.definition_version, i.step, i.phase, i.data,"
	"       d.steps, d.owner::oid"
	"  FROM saga.instance i"
	"  JOIN saga.definition d"
	"    ON d.name = i.saga_type AND d.version = i.definition_version"
	" WHERE i.id = $1",
	1, {INT8OID}
};

/*
 * Abort an orchestrated saga (abort.c): if it is still going forward,
 * compensate the steps done so far; if it is compensating already, let
 * that go on.  The caller holds the instance's lock, is connected to SPI
 * and acts as the tables' owner.
 */
void
saga_abort_orchestrated(int64 saga_id, const char *reason)
{
	Datum		arg = Int64GetDatum(saga_id);
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	ClaimedSaga cs;

	saga_execute(&abort_look_plan, &arg, NULL, false, 0);
	if (SPI_processed == 0)
		return;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (strcmp(TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull)), "forward") != 0)
		return;

	memset(&cs, 0, sizeof(cs));
	cs.id = saga_id;
	cs.saga_type = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	cs.version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	cs.step = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	cs.data = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull));
	cs.nsteps = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	cs.owner = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	start_compensating(&cs, cs.data, cs.step, reason);
}

/* A claimed saga, from a row of claim_plan or claim_counted_plan. */
static void
unpack_claimed(HeapTuple tup, TupleDesc desc, ClaimedSaga *cs)
{
	bool		isnull;
	Datum		d;

	memset(cs, 0, sizeof(*cs));
	cs->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	cs->saga_type = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	cs->version = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	cs->step = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	cs->compensating =
		strcmp(TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull)),
			   "compensating") == 0;
	cs->data = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull));
	cs->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	d = SPI_getbinval(tup, desc, 8, &isnull);
	cs->reason = isnull ? NULL : TextDatumGetCString(d);
	cs->nsteps = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	cs->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 10, &isnull));
	d = SPI_getbinval(tup, desc, 11, &isnull);
	cs->has_deadline = !isnull;
	cs->deadline = isnull ? 0 : DatumGetTimestampTz(d);
	cs->aborted = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull));
	cs->failed_before = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
}

/*
 * Claim up to limit orchestrated sagas due for a step and run each as far
 * as it goes; or, with counted_id, that saga's next step only, whose
 * attempt careful mode has counted already.  The caller is in a
 * transaction with an active snapshot.  claimed counts sagas; done and
 * failed count steps.
 */
static SagaBatchResult
run_steps(int limit, int64 counted_id)
{
	SagaBatchResult result = {0, 0, 0, 0};
	uint64		noted = saga_work_noted_count();
	MemoryContext batch_cxt;
	MemoryContext oldcxt;
	ClaimedSaga *claimed;
	Datum		arg;
	int			i;

	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "saga steps",
									  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batch_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (counted_id != 0)
	{
		arg = Int64GetDatum(counted_id);
		saga_execute(&claim_counted_plan, &arg, NULL, false, 0);
		limit = 1;
	}
	else
	{
		arg = Int32GetDatum(limit);
		saga_execute(&claim_plan, &arg, NULL, false, 0);
	}
	result.claimed = (int) SPI_processed;
	if (result.claimed > 0)
		saga_worker_found_work();	/* a worker is busy from now on */
	claimed = palloc0(sizeof(ClaimedSaga) * Max(result.claimed, 1));
	for (i = 0; i < result.claimed; i++)
	{
		unpack_claimed(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &claimed[i]);
		if (counted_id != 0)
		{
			/* the attempt about to run is counted in attempts already */
			claimed[i].counted = true;
			claimed[i].attempts--;
		}
	}

	/*
	 * Each saga goes as far as it can: step after step in this transaction
	 * until it ends, a step fails, or it reaches a paused service.  One
	 * commit then covers all of a saga's steps instead of one each.  The
	 * bound is a backstop; forward steps only go up and compensations only
	 * down, so no saga needs more than twice its number of steps.  A batch
	 * runs at most limit steps and ends when saga.batch_time is up, also
	 * in the middle of a long saga: its progress is saved after each step,
	 * and the next batch takes it on from there.
	 */
	for (i = 0; i < result.claimed; i++)
	{
		ClaimedSaga *cs = &claimed[i];
		bool		transient = false;

		while (!cs->settled && cs->steps_run <= 2 * cs->nsteps &&
			   result.done + result.failed < limit && !saga_batch_out_of_time())
		{
			StepOutcome outcome;

			CHECK_FOR_INTERRUPTS();
			if (past_deadline(cs))
			{
				/* no step starts after the deadline */
				abort_at_deadline(cs, cs->data, cs->step);
				continue;
			}
			outcome = run_one_step(cs, batch_cxt, &transient);
			if (outcome == STEP_MOVED_ON)
				result.done++;
			else if (outcome == STEP_FAILED)
				result.failed++;
			if (outcome != STEP_MOVED_ON)
				break;
		}
		if (transient)
		{
			/* end the batch, releasing its locks (see dispatch.c) */
			result.transient++;
			break;
		}
		if (result.done + result.failed >= limit || saga_batch_out_of_time())
			break;
	}

	SPI_finish();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(batch_cxt);
	result.published = (int) (saga_work_noted_count() - noted);
	return result;
}

/*
 * Claim up to limit orchestrated sagas due for a step and run each as far
 * as it goes (run_steps).
 */
SagaBatchResult
saga_run_steps(int limit)
{
	return run_steps(limit, 0);
}

/*
 * Careful mode (worker.c), for orchestrated sagas as saga_count_next_attempt()
 * is for deliveries.  First half, in a transaction of its own: take the
 * saga due next, count an attempt at its step and lease it
 * (SAGA_LEASE_MS), so that the attempt counts even if the worker dies in
 * the step.  A step whose attempts ran out this way (it ended the worker
 * saga.max_attempts times) is given up instead, without running it again:
 * a forward step is compensated like one that kept failing, a compensation
 * is left stuck for a person to look at.  Returns the saga's id, 0 if none
 * is due, -1 if it gave up a step.
 */
int64
saga_count_next_step(void)
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
		ClaimedSaga cs;
		SagaStepDef def;
		char	   *msg;
		Datum		arg = Int64GetDatum(id);

		saga_execute(&claim_counted_plan, &arg, NULL, false, 0);
		unpack_claimed(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, &cs);
		cs.attempts = attempts - 1;		/* the last one, for the trace */
		if (!load_step(&cs, cs.step, &def))
			elog(ERROR, "step %d of saga \"%s\" version %d is missing",
				 cs.step, cs.saga_type, cs.version);
		msg = psprintf("step \"%s\" did not finish %d times: the worker running it exited",
					   def.name, attempts);
		if (!cs.compensating)
		{
			record_step_run(&cs, cs.step, &def, false, "error",
							render_label(def.request, cs.data), msg,
							nextval_internal(get_relname_relid("trace_seq",
															   get_namespace_oid(SAGA_SCHEMA, false)),
											 false),
							GetCurrentTimestamp());
			start_compensating(&cs, cs.data, cs.step, msg);
			saga_count(SAGA_COUNT_RETRIES, 1);
		}
		else
		{
			retry_later(id, msg, "stuck", 0, 0, false, 0);
			saga_count(SAGA_COUNT_DEAD, 1);
			warn_stuck(&cs, &def, msg);
		}
		SPI_finish();
		return -1;
	}
	saga_careful_lease(&count_attempt_plan, id);
	SPI_finish();
	return id;
}

/*
 * Careful mode, second half: run the step whose attempt
 * saga_count_next_step() counted, in this transaction.
 */
SagaBatchResult
saga_run_counted_step(int64 saga_id)
{
	return run_steps(1, saga_id);
}
