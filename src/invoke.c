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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "saga.h"

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
 * Call flinfo's function with one argument as role; returns its result
 * (*isnull tells whether it is NULL).
 */
Datum
saga_invoke_as(Oid role, FmgrInfo *flinfo, Datum arg, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 1);
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Datum		result;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(role,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();

	/*
	 * In a worker, two batches that lock the same rows in different orders
	 * would deadlock, and the deadlock detector only steps in after
	 * deadlock_timeout, once per victim.  So the function waits for a lock
	 * at most saga.lock_timeout: then it is retried in a later batch, and
	 * its batch ends (dispatch.c).  Only the function: the worker's own
	 * statements wait as long as it takes, so that a TRUNCATE or an index
	 * build on the extension's tables delays the workers but does not fail
	 * them.
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
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;

	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return result;
}
