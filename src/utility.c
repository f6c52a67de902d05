/*-------------------------------------------------------------------------
 *
 * utility.c
 *	  ProcessUtility hook: get the workers out of the way of commands that
 *	  need a database to themselves, and tell the launcher about changes.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME / SET TABLESPACE and CREATE
 * DATABASE ... TEMPLATE fail while another session is connected to the
 * database concerned, and our workers are such sessions.  So before the
 * command runs, the database is paused (its workers stop and the launcher
 * starts none); when the transaction ends, committed or not, the launcher
 * looks at it afresh (not before: it would still see a database being
 * dropped, and start a worker that cannot connect).
 *
 * DROP EXTENSION saga and ALTER EXTENSION saga take their locks on the
 * extension's tables one by one, while a worker's batch holds share locks
 * on several of them: they could deadlock.  So the database's workers are
 * paused for the rest of that transaction too, and the launcher looks
 * again once it has committed or aborted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "saga.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Does a DROP EXTENSION statement drop this extension? */
static bool
drops_saga(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
		if (strcmp(strVal(lfirst(lc)), SAGA_EXTENSION) == 0)
			return true;
	return false;
}

/* The database a utility statement needs without our workers, if any. */
static Oid
database_to_pause(Node *parsetree, bool *rescan)
{
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_DropStmt:
			return drops_saga((DropStmt *) parsetree) ? MyDatabaseId : InvalidOid;

		case T_AlterExtensionStmt:
			return strcmp(((AlterExtensionStmt *) parsetree)->extname,
						  SAGA_EXTENSION) == 0 ? MyDatabaseId : InvalidOid;

		case T_AlterExtensionContentsStmt:
			return strcmp(((AlterExtensionContentsStmt *) parsetree)->extname,
						  SAGA_EXTENSION) == 0 ? MyDatabaseId : InvalidOid;

		case T_DropdbStmt:
			*rescan = true;
			return get_database_oid(((DropdbStmt *) parsetree)->dbname, true);

		case T_CreatedbStmt:
			*rescan = true;
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *opt = lfirst_node(DefElem, lc);

				if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
					return get_database_oid(defGetString(opt), true);
			}
			return InvalidOid;

		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				return get_database_oid(((RenameStmt *) parsetree)->subname, true);
			return InvalidOid;

		case T_AlterDatabaseStmt:
			*rescan = true;
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				DefElem    *opt = lfirst_node(DefElem, lc);

				if (strcmp(opt->defname, "tablespace") == 0)
					return get_database_oid(((AlterDatabaseStmt *) parsetree)->dbname, true);
			}
			return InvalidOid;

		default:
			return InvalidOid;
	}
}

static void
saga_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	bool		rescan = false;
	Oid			paused = database_to_pause(pstmt->utilityStmt, &rescan);

	/* a restore turns check_function_bodies off first (see wakeup.c) */
	if (IsA(pstmt->utilityStmt, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) pstmt->utilityStmt)->extname, SAGA_EXTENSION) == 0)
		saga_note_create_extension(!check_function_bodies);

	/* the launcher looks at the database again when the transaction ends */
	if (OidIsValid(paused))
	{
		saga_pause_database(paused);
		saga_resume_at_xact_end(paused);
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (nodeTag(pstmt->utilityStmt) == T_DropdbStmt && OidIsValid(paused))
		saga_forget_at_commit(paused);
	if (rescan)
		saga_wake_launcher_at_xact_end();
}

void
saga_install_utility_hook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = saga_ProcessUtility;
}
