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
 * Roles.  The engine's rows name roles by OID (subscriptions, definitions
 * and sagas run as their owners; event types and grants belong to roles),
 * and PostgreSQL does not know of them: a role dropped under them left
 * work that failed on "invalid role OID" for ever.  So, in a database
 * where the extension is installed: DROP ROLE is refused (2BP01) while the
 * engine's rows there name the role, saying what they are; REASSIGN OWNED
 * BY a TO b gives a's rows to b, as it gives a's objects (after PostgreSQL
 * has checked the caller's rights and done its part); DROP OWNED BY a
 * takes back what was granted to a, and the grants on a's sagas.  The
 * rows of other databases cannot be seen from here: a role dropped from
 * another database's session is handled when its work comes up
 * (invoke.c).  These run only where the library is loaded, that is
 * preloaded (as the workers need it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "commands/tablespace.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "saga.h"
#include "lifecycle.h"
#include "spi_util.h"
#include "utility.h"


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

/* ------------------------------------------------------------------------
 * Roles that the engine's rows name (see the header)
 * ------------------------------------------------------------------------
 */

/* What a role owns, and what was granted to it or on its sagas. */
static SagaPlan role_rows_plan = {
	"SELECT (SELECT count(*) FROM saga.subscription WHERE owner = $1::oid::regrole),"
	"       (SELECT count(DISTINCT name) FROM saga.definition WHERE owner = $1::oid::regrole),"
	"       (SELECT count(*) FROM saga.instance WHERE owner = $1::oid::regrole),"
	"       (SELECT count(*) FROM saga.event_type WHERE owner = $1::oid::regrole),"
	"       (SELECT count(*) FROM saga.event_grant WHERE grantee = $1::oid::regrole)"
	"     + (SELECT count(*) FROM saga.saga_grant"
	"         WHERE grantee = $1::oid::regrole OR owner = $1::oid::regrole)"
	"     + (SELECT count(*) FROM saga.trace_client WHERE owner = $1::oid::regrole)",
	1, {OIDOID}
};

/* The same before 1.2, which has no event types nor grants. */
static SagaPlan role_rows_plan_1_1 = {
	"SELECT (SELECT count(*) FROM saga.subscription WHERE owner = $1::oid::regrole),"
	"       (SELECT count(DISTINCT name) FROM saga.definition WHERE owner = $1::oid::regrole),"
	"       (SELECT count(*) FROM saga.instance WHERE owner = $1::oid::regrole),"
	"       0::bigint, 0::bigint",
	1, {OIDOID}
};

static SagaPlan reassign_plans[] = {
	{"UPDATE saga.subscription SET owner = $2::oid::regrole WHERE owner = $1::oid::regrole",
	2, {OIDOID, OIDOID}},
	{"UPDATE saga.definition SET owner = $2::oid::regrole WHERE owner = $1::oid::regrole",
	2, {OIDOID, OIDOID}},
	{"UPDATE saga.instance SET owner = $2::oid::regrole WHERE owner = $1::oid::regrole",
	2, {OIDOID, OIDOID}},
	/* 1.2 only, from here */
	{"UPDATE saga.event_type SET owner = $2::oid::regrole WHERE owner = $1::oid::regrole",
	2, {OIDOID, OIDOID}},
	/* a grant the new owner has already given stays once */
	{"DELETE FROM saga.saga_grant g WHERE g.owner = $1::oid::regrole"
	 "   AND EXISTS (SELECT FROM saga.saga_grant h"
	 "                WHERE h.saga_type = g.saga_type AND h.owner = $2::oid::regrole"
	 "                  AND h.grantee = g.grantee)",
	2, {OIDOID, OIDOID}},
	{"UPDATE saga.saga_grant SET owner = $2::oid::regrole WHERE owner = $1::oid::regrole",
	2, {OIDOID, OIDOID}},
	/* trace labels: the new owner's own, where it has some, stay */
	{"DELETE FROM saga.trace_client c WHERE c.owner = $1::oid::regrole"
	 "   AND EXISTS (SELECT FROM saga.trace_client h"
	 "                WHERE h.saga_type = c.saga_type AND h.owner = $2::oid::regrole)",
	2, {OIDOID, OIDOID}},
	{"UPDATE saga.trace_client SET owner = $2::oid::regrole WHERE owner = $1::oid::regrole",
	2, {OIDOID, OIDOID}}
};

#define REASSIGN_PLANS_1_1	3

static SagaPlan drop_grants_plans[] = {
	{"DELETE FROM saga.event_grant WHERE grantee = $1::oid::regrole", 1, {OIDOID}},
	{"DELETE FROM saga.saga_grant WHERE grantee = $1::oid::regrole OR owner = $1::oid::regrole",
	1, {OIDOID}},
	{"DELETE FROM saga.trace_client WHERE owner = $1::oid::regrole AND NOT builtin",
	1, {OIDOID}}
};

/* Is the extension installed in this database? */
static bool
engine_is_here(void)
{
	return OidIsValid(get_extension_oid(SAGA_EXTENSION, true)) &&
		OidIsValid(get_namespace_oid(SAGA_SCHEMA, true));
}

/* Append "n thing(s)" to a list being built, with ", " or " and ". */
static void
append_count(StringInfo buf, int64 n, const char *what, int *items, int total)
{
	if (n == 0)
		return;
	if (*items > 0)
		appendStringInfoString(buf, *items == total - 1 ? " and " : ", ");
	appendStringInfo(buf, INT64_FORMAT " %s%s", n, what, n == 1 ? "" : "s");
	(*items)++;
}

/*
 * DROP ROLE: refuse to drop a role that the engine's rows in this database
 * name, with what they are.  Only for a caller who may drop roles at all
 * (else PostgreSQL's own error says so, and tells nothing of the rows).
 */
static void
refuse_drop_role(DropRoleStmt *stmt)
{
	ListCell   *lc;

	if (!has_createrole_privilege(GetUserId()) || !engine_is_here())
		return;
	foreach(lc, stmt->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			role;
		Datum		arg;
		int64		n[5];
		int			i;
		int			owned = 0;
		int			items = 0;
		Oid			save_userid;
		int			save_sec_context;
		StringInfoData buf;

		if (spec->roletype != ROLESPEC_CSTRING ||
			!OidIsValid(role = get_role_oid(spec->rolename, true)))
			continue;			/* PostgreSQL's error, or IF EXISTS */

		arg = ObjectIdGetDatum(role);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		saga_begin_as_owner(&save_userid, &save_sec_context);
		saga_execute(saga_schema_is_1_2() ? &role_rows_plan : &role_rows_plan_1_1,
					 &arg, NULL, true, 0);
		for (i = 0; i < 5; i++)
		{
			bool		isnull;

			n[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, i + 1, &isnull));
		}
		saga_end_as_owner(save_userid, save_sec_context);
		SPI_finish();

		for (i = 0; i < 4; i++)
			owned += n[i] > 0;
		if (owned == 0 && n[4] == 0)
			continue;

		initStringInfo(&buf);
		if (owned > 0)
		{
			appendStringInfoString(&buf, "In this database it owns ");
			append_count(&buf, n[0], "subscription", &items, owned);
			append_count(&buf, n[1], "saga definition", &items, owned);
			append_count(&buf, n[2], "saga", &items, owned);
			append_count(&buf, n[3], "event type", &items, owned);
			appendStringInfoString(&buf, n[4] > 0 ? ", and " : ".");
		}
		else
			appendStringInfoString(&buf, "In this database ");
		if (n[4] > 0)
			appendStringInfo(&buf, INT64_FORMAT " grant%s or trace label%s of the saga engine name%s it.",
							 n[4], n[4] == 1 ? "" : "s", n[4] == 1 ? "" : "s", n[4] == 1 ? "s" : "");

		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because the saga engine still names it",
						spec->rolename),
				 errdetail("%s", buf.data),
				 errhint("Give its rows to another role with REASSIGN OWNED BY %s TO another_role, "
						 "then take back its grants and trace labels with DROP OWNED BY %s (or remove its subscriptions "
						 "with saga_unsubscribe()), in every database that uses saga.",
						 quote_identifier(spec->rolename), quote_identifier(spec->rolename))));
	}
}

/*
 * After REASSIGN OWNED or DROP OWNED has done its part: the same for the
 * engine's rows in this database.
 */
static void
roles_after(Node *parsetree)
{
	List	   *roles;
	Oid			newrole = InvalidOid;
	bool		is_1_2;
	ListCell   *lc;
	Oid			save_userid;
	int			save_sec_context;

	if (!engine_is_here())
		return;
	if (IsA(parsetree, ReassignOwnedStmt))
	{
		roles = ((ReassignOwnedStmt *) parsetree)->roles;
		newrole = get_rolespec_oid(((ReassignOwnedStmt *) parsetree)->newrole, false);
	}
	else
		roles = ((DropOwnedStmt *) parsetree)->roles;
	is_1_2 = saga_schema_is_1_2();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	saga_begin_as_owner(&save_userid, &save_sec_context);
	foreach(lc, roles)
	{
		Datum		args[2];
		int			i;

		args[0] = ObjectIdGetDatum(get_rolespec_oid(lfirst(lc), false));
		args[1] = ObjectIdGetDatum(newrole);
		if (OidIsValid(newrole))
		{
			for (i = 0; i < lengthof(reassign_plans); i++)
				if (is_1_2 || i < REASSIGN_PLANS_1_1)
					saga_execute(&reassign_plans[i], args, NULL, false, 0);
		}
		else if (is_1_2)
		{
			for (i = 0; i < lengthof(drop_grants_plans); i++)
				saga_execute(&drop_grants_plans[i], args, NULL, false, 0);
		}
	}
	saga_end_as_owner(save_userid, save_sec_context);
	SPI_finish();
}

/*
 * The hook: pause what the statement needs paused, note a CREATE EXTENSION
 * run as a restore runs it (see lifecycle.c), run the statement, and have the
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
	 * A restore turns check_function_bodies off first (see lifecycle.c).  Any
	 * CREATE EXTENSION may create saga, with CASCADE.
	 */
	if (IsA(parsetree, CreateExtensionStmt))
		saga_note_create_extension(!check_function_bodies);

	/* a role the engine's rows name is not dropped under them */
	if (IsA(parsetree, DropRoleStmt))
		refuse_drop_role((DropRoleStmt *) parsetree);

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

	if (IsA(parsetree, ReassignOwnedStmt) || IsA(parsetree, DropOwnedStmt))
		roles_after(parsetree);
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
