/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Counters per database (stats.c), kept in shared memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_STATS_H
#define SAGA_STATS_H

#include "shmem.h"

extern void saga_count(SagaCounter counter, int64 n);
extern void saga_flush_counts(bool commit);
extern void saga_register_subxact_callback(void);

#endif							/* SAGA_STATS_H */
