/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Removing what finished sagas leave behind: their events, deliveries
 *	  and step records, after saga.retention.
 *
 * A saga's instance row stays (it is one small row, and saga_status() and
 * the order views read it); it is marked purged_at, and its trace then
 * shows only its start and end.  A saga some of whose deliveries are still
 * pending (a compensation waiting for a paused consumer) is left alone.
 * Events published outside any saga go once all their deliveries are done.
 * Work is done in batches of saga.retention_batch sagas per transaction,
 * by the workers when they have nothing else to do, or by saga_purge().
 *
 * The purged_at column comes with version 1.1 of the extension; in a
 * database still on 1.0 there is nothing to do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "saga.h"
#include "instance.h"
#include "retention.h"
#include "spi_util.h"


PG_FUNCTION_INFO_V1(saga_purge);

/*
 * The ended sagas older than $1 ms, at most $2 of them, and what is left
 * of them: their events, deliveries and step runs are deleted, the
 * instance is kept, marked purged.  Written in two parts, so that the
 * plan for a database still at 1.1 (which keeps no delivery failures) is
 * the same but for delivery_failure.
 */
#define PURGE_SAGAS_HEAD \
	"WITH old AS (" \
	"  SELECT i.id FROM saga.instance i" \
	"   WHERE i.status <> 'pending' AND i.purged_at IS NULL" \
	"     AND i.finished_at < now() - $1 * interval '1 millisecond'" \
	"     AND NOT EXISTS (SELECT FROM saga.event e" \
	"                       JOIN saga.delivery d ON d.event_id = e.id" \
	"                      WHERE e.saga_id = i.id AND d.status = 'pending')" \
	"   ORDER BY i.finished_at" \
	"   LIMIT $2" \
	"     FOR UPDATE SKIP LOCKED)," \
	" ev AS (DELETE FROM saga.event e USING old WHERE e.saga_id = old.id RETURNING e.id)," \
	" dl AS (DELETE FROM saga.delivery d USING ev WHERE d.event_id = ev.id),"
#define PURGE_SAGAS_TAIL \
	" sr AS (DELETE FROM saga.step_run r USING old WHERE r.saga_id = old.id)" \
	" UPDATE saga.instance i SET purged_at = clock_timestamp()" \
	"   FROM old WHERE i.id = old.id"

static SagaPlan purge_sagas_plan = {
	PURGE_SAGAS_HEAD
	" df AS (DELETE FROM saga.delivery_failure f USING old WHERE f.saga_id = old.id),"
	PURGE_SAGAS_TAIL,
	2, {FLOAT8OID, INT4OID}
};

/* The same before 1.2. */
static SagaPlan purge_sagas_plan_1_1 = {
	PURGE_SAGAS_HEAD
	PURGE_SAGAS_TAIL,
	2, {FLOAT8OID, INT4OID}
};

/*
 * Events of no saga older than $1 ms, at most $2 of them, with their
 * deliveries (and, from 1.2, their deliveries' failures).
 */
#define PURGE_LOOSE_HEAD \
	"WITH old AS (" \
	"  SELECT e.id FROM saga.event e" \
	"   WHERE e.saga_id IS NULL" \
	"     AND e.published_at < now() - $1 * interval '1 millisecond'" \
	"     AND NOT EXISTS (SELECT FROM saga.delivery d" \
	"                      WHERE d.event_id = e.id AND d.status = 'pending')" \
	"   ORDER BY e.id" \
	"   LIMIT $2" \
	"     FOR UPDATE SKIP LOCKED),"
#define PURGE_LOOSE_TAIL \
	" DELETE FROM saga.event e USING old WHERE e.id = old.id"

static SagaPlan purge_loose_events_plan = {
	PURGE_LOOSE_HEAD
	" dl AS (DELETE FROM saga.delivery d USING old WHERE d.event_id = old.id RETURNING d.id),"
	" df AS (DELETE FROM saga.delivery_failure f USING dl WHERE f.delivery_id = dl.id)"
	PURGE_LOOSE_TAIL,
	2, {FLOAT8OID, INT4OID}
};

/* The same before 1.2. */
static SagaPlan purge_loose_events_plan_1_1 = {
	PURGE_LOOSE_HEAD
	" dl AS (DELETE FROM saga.delivery d USING old WHERE d.event_id = old.id)"
	PURGE_LOOSE_TAIL,
	2, {FLOAT8OID, INT4OID}
};

/* Is this database's extension at 1.1 or later (saga.instance.purged_at)? */
static bool
schema_has_retention(void)
{
	Oid			nsp = get_namespace_oid(SAGA_SCHEMA, true);
	Oid			relid;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid("instance", nsp);
	return OidIsValid(relid) && get_attnum(relid, "purged_at") != InvalidAttrNumber;
}

/*
 * Purge one batch of what is older than older_than_ms; returns how many
 * sagas and loose events went.  The caller is in a transaction with an
 * active snapshot.
 */
int64
saga_purge_batch(double older_than_ms, int batch)
{
	Datum		values[2];
	SagaAsOwner as_owner;
	int64		n;

	if (!schema_has_retention())
		return 0;

	values[0] = Float8GetDatum(older_than_ms);
	values[1] = Int32GetDatum(batch);
	saga_spi_connect_as_owner(&as_owner);
	saga_execute(saga_schema_is_1_2() ? &purge_sagas_plan : &purge_sagas_plan_1_1,
				 values, NULL, false, 0);
	n = (int64) SPI_processed;
	saga_execute(saga_schema_is_1_2() ? &purge_loose_events_plan : &purge_loose_events_plan_1_1,
				 values, NULL, false, 0);
	n += (int64) SPI_processed;
	saga_spi_finish_as_owner(&as_owner);
	return n;
}

/*
 * saga_purge(older_than interval DEFAULT NULL) returns bigint
 *
 * Purge now, in this transaction, everything saga.retention (or
 * older_than) allows; returns how many sagas and loose events went.
 */
Datum
saga_purge(PG_FUNCTION_ARGS)
{
	double		older_than_ms;
	int64		total = 0;
	int64		n;

	if (!PG_ARGISNULL(0))
	{
		older_than_ms = saga_interval_ms(PG_GETARG_INTERVAL_P(0));
		if (older_than_ms < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("older_than must not be negative")));
	}
	else if (saga_retention == 0)
		PG_RETURN_INT64(0);		/* keep everything */
	else
		older_than_ms = (double) saga_retention * 1000.0;

	do
	{
		CHECK_FOR_INTERRUPTS();
		n = saga_purge_batch(older_than_ms, saga_retention_batch);
		total += n;
	} while (n > 0);
	PG_RETURN_INT64(total);
}
