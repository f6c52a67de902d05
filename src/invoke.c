/*-------------------------------------------------------------------------
 *
 * invoke.c
 *	  Run a user's function (a handler or a saga step) as the role that
 *	  registered it.
 *
 * The worker runs as a superuser; user code must not.  So the function is
 * called with the registering role as current user, inside a
 * security-restricted operation, and whatever GUCs it changes (SET LOCAL
 * search_path, say) are undone before the next user's function runs in
 * the same transaction: the way VACUUM runs index expressions as the
 * table's owner.  The role must still be allowed to execute the function.
 *
 * The function also runs with the role's own settings, as a session
 * logged in as that role would: what ALTER ROLE ... SET gave it, in this
 * database and in all, the database's own ahead of the others (the
 * worker's connection already applied ALTER DATABASE ... SET).  A handler
 * that names its tables without a schema finds them through the role's
 * search_path.  Settings that may not change inside a security-restricted
 * operation (role, session_authorization) are left out, as they must be:
 * the worker runs as a superuser.  When the function fails on a name it
 * cannot find, the error's hint says which role and search_path it ran
 * with.
 *
 * A function may run for at most saga.handler_timeout, or its role's own
 * statement_timeout if that is shorter: then it is cancelled, as a
 * statement is, and fails like any error (the attempt counts), so that a
 * handler that hangs holds up its batch for that long and no longer.
 *
 * A handler that waited saga.lock_timeout for a lock fails, and is
 * retried; saga_stuck names the session that held the lock.  What the
 * handler waited for is known only while it waits: by the time the lock
 * timeout's error can be caught, the wait has been cleaned up.  So while
 * the handler of a delivery that failed before runs, a timeout of ours
 * looks every half lock timeout at what it waits for (in the signal
 * handler: it only copies the lock's tag), and when it fails on the lock
 * timeout, saga_lock_blocker() finds who held that lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_db_role_setting.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/sinvaladt.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "saga.h"
#include "dispatch.h"
#include "invoke.h"
#include "worker.h"


/*
 * Delay before retrying a function that raised, after the given number of
 * failed attempts: saga.retry_backoff, doubling each time, at most an
 * hour.  A deadlock, a serialization failure or a lock wait that timed
 * out (saga.lock_timeout) is not the function's fault: it is retried
 * almost at once, and the attempt is not counted.
 */
bool
saga_error_is_transient(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_TRANSACTION_ROLLBACK ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

double
saga_retry_delay_ms(int attempts, int sqlerrcode)
{
	double		delay = (double) saga_retry_backoff;

	if (saga_error_is_transient(sqlerrcode))
		return 10.0;
	delay *= (double) (1 << Min(Max(attempts - 1, 0), 20));
	return Min(delay, 3600.0 * 1000.0);
}

/*
 * Look a function up for saga_invoke_as(), with a clear error if it was
 * dropped since it was registered.
 */
void
saga_lookup_function(Oid fn, FmgrInfo *flinfo, MemoryContext cxt)
{
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(fn)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function %u registered with saga no longer exists", fn),
				 errhint("Register a new function for it.")));
	fmgr_info_cxt(fn, flinfo, cxt);
}

/*
 * The time limit of a user's function: a timeout of our own (a session's
 * statement_timeout may be running around saga_run_pending()), which
 * cancels the function as statement_timeout cancels a statement.
 */
static TimeoutId limit_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t limit_reached = false;

static void
limit_timeout_handler(void)
{
	limit_reached = true;
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

/*
 * How long the function may run, in milliseconds (0: no limit):
 * saga.handler_timeout, or the role's statement_timeout if shorter (its
 * settings are in force by now).
 */
static int
function_time_limit(void)
{
	int			limit = saga_handler_timeout;

	if (StatementTimeout > 0 && (limit == 0 || StatementTimeout < limit))
		limit = StatementTimeout;
	return limit;
}

/* Stop the limit's timer; a cancel it asked for too late is dropped. */
static void
stop_time_limit(bool armed)
{
	if (!armed)
		return;
	disable_timeout(limit_timeout, false);
	if (limit_reached && !proc_exit_inprogress)
	{
		limit_reached = false;
		QueryCancelPending = false;
	}
}

/*
 * What the handler waited for, sampled by lock_sample_handler(): the
 * lock's tag and mode, and the start of the lock timeout of that wait (0:
 * none sampled), which tells whether the lock timeout that made the
 * handler fail was of this wait or of a later one, not sampled.
 */
static TimeoutId sample_timeout = MAX_TIMEOUTS;
static volatile LOCKTAG sample_tag;
static volatile LOCKMODE sample_mode;
static volatile TimestampTz sample_wait_start = 0;

/* Set when the function failed on the lock timeout of the sampled wait. */
static bool sample_matched = false;

/*
 * Called in the SIGALRM handler: no allocation, no locks.  The lock we wait
 * for cannot go away while we wait for it (our PROCLOCK is on it), and it
 * is only ourselves that clear waitLock at the end of our wait, or the
 * process granting it to us: at worst we copy the tag of a lock just
 * granted, and saga_lock_blocker() finds no one in the way.
 */
static void
lock_sample_handler(void)
{
	LOCK	   *lock = MyProc->waitLock;

	if (lock != NULL)
	{
		sample_tag = lock->tag;
		sample_mode = MyProc->waitLockMode;
		sample_wait_start = get_timeout_start_time(LOCK_TIMEOUT);
	}
}

/*
 * Start sampling the locks the function waits for, every half lock timeout
 * (at least every millisecond): a wait that lasts a whole lock timeout is
 * sampled at least once, and before the lock timeout fires (timeouts due
 * together fire in the order of their due time, and the error is raised
 * only once the signal handler has returned).
 */
static void
start_lock_sampler(void)
{
	int			every = Max(saga_lock_timeout / 2, 1);

	if (sample_timeout == MAX_TIMEOUTS)
		sample_timeout = RegisterTimeout(USER_TIMEOUT, lock_sample_handler);
	sample_wait_start = 0;
	sample_matched = false;
	enable_timeout_every(sample_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), every),
						 every);
}

/*
 * Stop sampling; with failed_on, the SQLSTATE the function failed with:
 * note whether it was the lock timeout of the wait sampled last.
 */
static void
stop_lock_sampler(bool armed, int failed_on)
{
	if (!armed)
		return;
	disable_timeout(sample_timeout, false);
	sample_matched = failed_on == ERRCODE_LOCK_NOT_AVAILABLE &&
		sample_wait_start != 0 &&
		sample_wait_start == get_timeout_start_time(LOCK_TIMEOUT);
}

/*
 * The pid of a session holding the lock whose wait made the last function
 * fail (the lock timeout of a wait that lock_sample_handler() saw), or 0
 * if it is not known.  If that session waits itself for another (another
 * worker queued for the same row ahead of this one, say), it is that
 * other, as far as such a chain goes: the session that holds things up.
 * Called once the function's subtransaction has been rolled back; forgets
 * the sample.
 */
int
saga_lock_blocker(void)
{
	LOCKTAG		tag;
	LOCKMODE	mode;
	VirtualTransactionId *vxids;
	int			pid = 0;
	int			hops;

	if (!sample_matched)
		return 0;
	sample_matched = false;
	tag = sample_tag;
	mode = sample_mode;

	vxids = GetLockConflicts(&tag, mode, NULL);
	for (; VirtualTransactionIdIsValid(*vxids); vxids++)
	{
		PGPROC	   *proc = BackendIdGetProc(vxids->backendId);

		/* a prepared transaction has no backend, and no pid to name */
		if (proc != NULL && proc->lxid == vxids->localTransactionId &&
			proc->pid != 0 && proc->pid != MyProcPid)
		{
			pid = proc->pid;
			break;
		}
	}

	/* up the chain of sessions waiting for one another, a few steps */
	for (hops = 0; pid != 0 && hops < 8; hops++)
	{
		ArrayType  *blockers;
		int32	   *pids;
		int			n;
		int			next = 0;
		int			i;

		blockers = DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids,
														  Int32GetDatum(pid)));
		n = ArrayGetNItems(ARR_NDIM(blockers), ARR_DIMS(blockers));
		pids = (int32 *) ARR_DATA_PTR(blockers);
		for (i = 0; i < n && next == 0; i++)
			if (pids[i] != MyProcPid && pids[i] != pid)
				next = pids[i];
		if (next == 0)
			break;
		pid = next;
	}
	return pid;
}

/*
 * Nesting depth of users' functions run by saga_invoke_as(): above zero,
 * a handler or step is running, and saga_run_pending() must refuse to
 * start another batch inside it (it would claim the work being done).
 */
static int	invoke_depth = 0;

bool
saga_in_user_function(void)
{
	return invoke_depth > 0;
}

/*
 * The ALTER ROLE ... SET settings of the roles that ran functions in this
 * transaction: looked up once per role and transaction (a worker's batch),
 * so that a change to a role's settings reaches its handlers at the next
 * batch.  Kept in TopTransactionContext, and valid while lxid matches.
 */
typedef struct RoleSettings
{
	Oid			role;
	ArrayType  *all_databases;	/* ALTER ROLE r SET, or NULL */
	ArrayType  *this_database;	/* ALTER ROLE r IN DATABASE d SET, or NULL */
} RoleSettings;

#define SAGA_ROLE_SETTINGS_CACHE	16

static RoleSettings role_settings[SAGA_ROLE_SETTINGS_CACHE];
static int	n_role_settings = 0;
static LocalTransactionId role_settings_lxid = InvalidLocalTransactionId;

/* One row of pg_db_role_setting, copied into cxt, or NULL. */
static ArrayType *
fetch_setting(Relation rel, Oid dboid, Oid role, MemoryContext cxt)
{
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	ArrayType  *result = NULL;

	ScanKeyInit(&keys[0], Anum_pg_db_role_setting_setdatabase,
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(dboid));
	ScanKeyInit(&keys[1], Anum_pg_db_role_setting_setrole,
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(role));
	scan = systable_beginscan(rel, DbRoleSettingDatidRolidIndexId, true,
							  NULL, 2, keys);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_db_role_setting_setconfig,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			result = DatumGetArrayTypePCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	systable_endscan(scan);
	return result;
}

static RoleSettings *
lookup_role_settings(Oid role)
{
	RoleSettings *rs;
	Relation	rel;
	int			i;

	if (role_settings_lxid != MyProc->lxid)
	{
		n_role_settings = 0;
		role_settings_lxid = MyProc->lxid;
	}
	for (i = 0; i < n_role_settings; i++)
		if (role_settings[i].role == role)
			return &role_settings[i];

	/* a full cache starts over: more than a few roles per batch is rare */
	if (n_role_settings == SAGA_ROLE_SETTINGS_CACHE)
		n_role_settings = 0;
	rs = &role_settings[n_role_settings];
	rel = table_open(DbRoleSettingRelationId, AccessShareLock);
	rs->all_databases = fetch_setting(rel, InvalidOid, role, TopTransactionContext);
	rs->this_database = fetch_setting(rel, MyDatabaseId, role, TopTransactionContext);
	table_close(rel, AccessShareLock);
	rs->role = role;
	n_role_settings++;
	return rs;
}

/*
 * Apply an array of name=value settings for the current GUC nest level,
 * as a function's SET clause does.  A setting that cannot be applied here
 * (one refused in a security-restricted operation, or no longer valid) is
 * skipped, as a login skips a bad ALTER ROLE setting with a warning.
 */
static void
apply_settings(ArrayType *array)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (array == NULL)
		return;
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		char	   *s;
		char	   *name;
		char	   *value;

		if (nulls[i])
			continue;
		s = TextDatumGetCString(elems[i]);
		ParseLongOption(s, &name, &value);
		if (value != NULL)
			(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, DEBUG1, false);
		/* PostgreSQL 15's ParseLongOption() allocates with malloc() */
		free(name);
		if (value)
			free(value);
		pfree(s);
	}
	pfree(elems);
	pfree(nulls);
}

/* Does an error say that a name could not be found? */
static bool
error_is_undefined_name(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		sqlerrcode == ERRCODE_UNDEFINED_FUNCTION ||
		sqlerrcode == ERRCODE_UNDEFINED_OBJECT ||
		sqlerrcode == ERRCODE_INVALID_SCHEMA_NAME;
}

/*
 * How a failure of a user's function is recorded (a delivery's or a
 * saga's last_error): the message and its SQLSTATE, and for a name that
 * could not be found, the hint saying where it was looked for.
 */
char *
saga_error_text(ErrorData *edata)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s (SQLSTATE %s)",
					 edata->message ? edata->message : "unknown error",
					 unpack_sql_state(edata->sqlerrcode));
	if (error_is_undefined_name(edata->sqlerrcode) && edata->hint != NULL)
		appendStringInfo(&buf, " HINT: %s", edata->hint);
	return buf.data;
}

/*
 * Call flinfo's function with one argument as role; returns its result
 * (*isnull tells whether it is NULL).  watch_locks: the work failed before
 * and may be blocked by another session's lock: sample the locks it waits
 * for, so that saga_lock_blocker() can name the holder if it fails on one.
 */
Datum
saga_invoke_as(Oid role, FmgrInfo *flinfo, Datum arg, bool *isnull, bool watch_locks)
{
	LOCAL_FCINFO(fcinfo, 1);
	MemoryContext cxt = CurrentMemoryContext;
	RoleSettings *settings;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Datum		result;
	int			limit;
	volatile bool armed = false;
	volatile bool sampling = false;

	/*
	 * A role dropped from another database's session (in this one, DROP
	 * ROLE is refused while the engine names it: utility.c) can never run
	 * its work, and no other role may stand in for it: say so, once.  The
	 * work fails for good (dispatch.c, steps.c).
	 */
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
		ereport(ERROR,
				(errcode(ERRCODE_SAGA_ROLE_GONE),
				 saga_current_delivery != NULL ?
				 errmsg("role %u of consumer \"%s\" no longer exists",
						role, saga_current_delivery->consumer) :
				 errmsg("role %u that the saga's steps run as no longer exists", role),
				 errdetail("The role was dropped while work of its was pending; "
						   "its work cannot run as any other role."),
				 errhint("Before DROP ROLE, run REASSIGN OWNED BY the role in every database that uses saga.")));

	settings = lookup_role_settings(role);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(role,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	apply_settings(settings->all_databases);
	apply_settings(settings->this_database);

	/*
	 * In a worker, two batches that lock the same rows in different orders
	 * would deadlock, and the deadlock detector only steps in after
	 * deadlock_timeout, once per victim.  So the function waits for a lock
	 * at most saga.lock_timeout: then it is retried in a later batch, and
	 * its batch ends (dispatch.c).  Only the function: the worker's own
	 * statements wait as long as it takes, so that a TRUNCATE or an index
	 * build on the extension's tables delays the workers but does not fail
	 * them.  It is set after the role's own settings, which cannot lift it.
	 */
	if (MySagaWorker != NULL && saga_lock_timeout > 0)
	{
		char		buf[32];

		snprintf(buf, sizeof(buf), "%d", saga_lock_timeout);
		(void) set_config_option("lock_timeout", buf, PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}

	if (pg_proc_aclcheck(flinfo->fn_oid, role, ACL_EXECUTE) != ACLCHECK_OK)
	{
		char	   *rolename = GetUserNameFromId(role, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute %s",
						rolename ? rolename : "(dropped role)",
						format_procedure(flinfo->fn_oid))));
	}

	InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = arg;
	fcinfo->args[0].isnull = false;

	/* the outermost function's limit covers any nested in it */
	limit = invoke_depth == 0 ? function_time_limit() : 0;
	if (limit > 0)
	{
		if (limit_timeout == MAX_TIMEOUTS)
			limit_timeout = RegisterTimeout(USER_TIMEOUT, limit_timeout_handler);
		limit_reached = false;
		enable_timeout_after(limit_timeout, limit);
		armed = true;
	}
	/* work that failed before may be blocked: see who blocks it */
	if (invoke_depth == 0 && MySagaWorker != NULL && saga_lock_timeout > 0 &&
		watch_locks)
	{
		start_lock_sampler();
		sampling = true;
	}
	invoke_depth++;
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char	   *rolename;
		bool		timed_out = armed && limit_reached;

		invoke_depth--;
		stop_time_limit(armed);
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		stop_lock_sampler(sampling, edata->sqlerrcode);
		if (timed_out && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			/* say which limit it was */
			FlushErrorState();
			edata->message = psprintf("%s ran longer than its time limit of %d ms",
									  format_procedure_qualified(flinfo->fn_oid), limit);
			edata->hint = pstrdup("The limit is saga.handler_timeout, or the role's statement_timeout if shorter.");
			ReThrowError(edata);
		}
		if (!error_is_undefined_name(edata->sqlerrcode))
			PG_RE_THROW();

		/* say where the name was looked for, while the settings hold */
		FlushErrorState();
		rolename = GetUserNameFromId(role, true);
		edata->hint = psprintf("%s%sThe function ran as role \"%s\" with search_path = %s.",
							   edata->hint ? edata->hint : "",
							   edata->hint ? " " : "",
							   rolename ? rolename : "(dropped role)",
							   namespace_search_path);
		ReThrowError(edata);
	}
	PG_END_TRY();
	invoke_depth--;
	stop_time_limit(armed);
	stop_lock_sampler(sampling, 0);
	*isnull = fcinfo->isnull;

	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return result;
}
