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
 * The pause comes before the command runs (by the time PostgreSQL's own
 * code could tell us, it has taken its locks or counted the sessions), so
 * before PostgreSQL has checked the caller's rights.  Pausing for a caller
 * whose command is bound to fail would let any role restart the workers of
 * any database, and wait up to SAGA_PAUSE_TIMEOUT_MS for a busy one, at
 * will.  So the hook checks the rights that PostgreSQL will check, first:
 * ownership of the extension; ownership of the database to drop, rename or
 * move; CREATEDB to rename or copy one; ownership of the template, unless
 * it is marked as a template, to copy it; CREATE on the tablespace to move
 * to; membership in the new database's owner.  Without them it leaves the
 * workers alone, and the command fails with PostgreSQL's own error.  These
 * checks must never be stricter than PostgreSQL's: a command that passes
 * them but not ours would find our workers in its way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "commands/tablespace.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "saga.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/*
 * DROP EXTENSION: the database to pause if the statement drops saga and the
 * caller owns every extension it names that exists (RemoveObjects() checks
 * each of them before dropping any).
 */
static Oid
drop_extension_pauses(DropStmt *stmt)
{
	ListCell   *lc;
	bool		drops_saga = false;

	if (stmt->removeType != OBJECT_EXTENSION)
		return InvalidOid;
	foreach(lc, stmt->objects)
	{
		const char *name = strVal(lfirst(lc));
		Oid			extoid = get_extension_oid(name, true);

		if (!OidIsValid(extoid))
			continue;			/* an error, or skipped with IF EXISTS */
		if (!pg_extension_ownercheck(extoid, GetUserId()))
			return InvalidOid;
		if (strcmp(name, SAGA_EXTENSION) == 0)
			drops_saga = true;
	}
	return drops_saga ? MyDatabaseId : InvalidOid;
}

/* ALTER EXTENSION saga ...: pause if the caller owns the extension. */
static Oid
alter_extension_pauses(const char *extname)
{
	Oid			extoid;

	if (strcmp(extname, SAGA_EXTENSION) != 0)
		return InvalidOid;
	extoid = get_extension_oid(SAGA_EXTENSION, true);
	if (!OidIsValid(extoid) || !pg_extension_ownercheck(extoid, GetUserId()))
		return InvalidOid;
	return MyDatabaseId;
}

/* A database the caller owns, by name, or InvalidOid. */
static Oid
owned_database(const char *dbname)
{
	Oid			dboid = get_database_oid(dbname, true);

	if (!OidIsValid(dboid) || !pg_database_ownercheck(dboid, GetUserId()))
		return InvalidOid;
	return dboid;
}

/*
 * CREATE DATABASE ... TEMPLATE: the template to pause, if the caller may
 * create databases, may make the new one's owner the role it names, and
 * may copy the template (it is a template, or the caller owns it), as
 * createdb() requires.
 */
static Oid
createdb_pauses(CreatedbStmt *stmt)
{
	const char *template = NULL;
	const char *owner = NULL;
	Oid			dboid;
	HeapTuple	tup;
	bool		is_template;
	ListCell   *lc;

	foreach(lc, stmt->options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);

		if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
			template = defGetString(opt);
		else if (strcmp(opt->defname, "owner") == 0 && opt->arg != NULL)
			owner = defGetString(opt);
	}
	if (template == NULL || !have_createdb_privilege())
		return InvalidOid;
	if (owner != NULL)
	{
		Oid			ownerid = get_role_oid(owner, true);

		if (!OidIsValid(ownerid) || !is_member_of_role(GetUserId(), ownerid))
			return InvalidOid;
	}

	dboid = get_database_oid(template, true);
	if (!OidIsValid(dboid))
		return InvalidOid;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	is_template = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
	ReleaseSysCache(tup);
	if (!is_template && !pg_database_ownercheck(dboid, GetUserId()))
		return InvalidOid;
	return dboid;
}

/*
 * ALTER DATABASE ... SET TABLESPACE: the database to pause, if the caller
 * owns it and may create objects in the tablespace, as movedb() requires.
 */
static Oid
alterdb_pauses(AlterDatabaseStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);
		Oid			spcoid;

		if (strcmp(opt->defname, "tablespace") != 0)
			continue;
		spcoid = get_tablespace_oid(defGetString(opt), true);
		if (!OidIsValid(spcoid) ||
			pg_tablespace_aclcheck(spcoid, GetUserId(), ACL_CREATE) != ACLCHECK_OK)
			return InvalidOid;
		return owned_database(stmt->dbname);
	}
	return InvalidOid;
}

/*
 * The database a utility statement needs without our workers, if any, and
 * if the caller has the rights that the statement needs (see the header).
 * Sets *rescan for statements after which the launcher re-reads
 * pg_database.
 */
static Oid
database_to_pause(Node *parsetree, bool *rescan)
{
	switch (nodeTag(parsetree))
	{
		case T_DropStmt:
			return drop_extension_pauses((DropStmt *) parsetree);

		case T_AlterExtensionStmt:
			return alter_extension_pauses(((AlterExtensionStmt *) parsetree)->extname);

		case T_AlterExtensionContentsStmt:
			return alter_extension_pauses(((AlterExtensionContentsStmt *) parsetree)->extname);

		case T_DropdbStmt:
			*rescan = true;
			return owned_database(((DropdbStmt *) parsetree)->dbname);

		case T_CreatedbStmt:
			*rescan = true;
			return createdb_pauses((CreatedbStmt *) parsetree);

		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE &&
				have_createdb_privilege())
				return owned_database(((RenameStmt *) parsetree)->subname);
			return InvalidOid;

		case T_AlterDatabaseStmt:
			*rescan = true;
			return alterdb_pauses((AlterDatabaseStmt *) parsetree);

		default:
			return InvalidOid;
	}
}

/*
 * The hook: pause what the statement needs paused, note a CREATE EXTENSION
 * run as a restore runs it (see wakeup.c), run the statement, and have the
 * launcher look again when the transaction ends.
 */
static void
saga_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		rescan = false;
	Oid			paused = database_to_pause(parsetree, &rescan);
	Oid			dropped = InvalidOid;

	/*
	 * A restore turns check_function_bodies off first (see wakeup.c).  Any
	 * CREATE EXTENSION may create saga, with CASCADE.
	 */
	if (IsA(parsetree, CreateExtensionStmt))
		saga_note_create_extension(!check_function_bodies);

	/* forgotten if the drop commits, whether we paused or not */
	if (IsA(parsetree, DropdbStmt))
		dropped = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);

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

	if (IsA(parsetree, CreateExtensionStmt))
		saga_note_create_extension(false);
	if (OidIsValid(dropped))
		saga_forget_at_commit(dropped);
	if (rescan)
		saga_wake_launcher_at_xact_end();
}

/* Install the hook (from _PG_init, when preloaded). */
void
saga_install_utility_hook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = saga_ProcessUtility;
}
