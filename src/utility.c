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
 * starts none); afterwards, whether the command succeeded or not, the
 * launcher looks at it afresh.  After DROP EXTENSION saga, the database's
 * workers find the extension gone at their next look (at the latest after
 * saga.poll_interval) and exit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "saga.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* The database a utility statement needs to itself, if any. */
static Oid
database_to_pause(Node *parsetree, bool *rescan)
{
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
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

	if (OidIsValid(paused))
		saga_pause_database(paused);

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (OidIsValid(paused))
			saga_resume_database(paused);
		else if (rescan)
			saga_wake_launcher_now(true);
	}
	PG_END_TRY();
}

void
saga_install_utility_hook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = saga_ProcessUtility;
}
