/*-------------------------------------------------------------------------
 *
 * spi_util.h
 *	  SPI helpers (spi_util.c): saved plans with a pinned search_path,
 *	  acting as the tables' owner, the schema version of a database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_SPI_UTIL_H
#define SAGA_SPI_UTIL_H

#include "saga.h"
#include "executor/spi.h"

typedef struct SagaPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[12];
	SPIPlanPtr	plan;
	TimestampTz planned_at;
	int			uses;			/* executions since planned_at */
} SagaPlan;

extern SPIPlanPtr saga_prepare(SagaPlan *p);
extern int	saga_execute(SagaPlan *p, Datum *values, const char *nulls,
						 bool read_only, long count);
extern Oid	saga_internal_owner(void);
extern bool saga_schema_is_1_2(void);

extern void saga_begin_as_owner(Oid *save_userid, int *save_sec_context);
extern void saga_end_as_owner(Oid save_userid, int save_sec_context);

/* The caller saga_spi_connect_as_owner() switched away from. */
typedef struct SagaAsOwner
{
	Oid			caller;
	int			sec_context;
} SagaAsOwner;

extern void saga_spi_connect_as_owner(SagaAsOwner *save);
extern void saga_spi_finish_as_owner(SagaAsOwner *save);

#endif							/* SAGA_SPI_UTIL_H */
