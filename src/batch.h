/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  The batch driver (batch.c): rounds of deliveries and steps in one
 *	  transaction, for the workers and for saga_run_pending().
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_BATCH_H
#define SAGA_BATCH_H

#include "saga.h"

/*
 * Run rounds of deliveries and steps in the current transaction (with an
 * active snapshot) until a round publishes nothing, limit items were
 * claimed, time_ms have passed (0: no limit) or a lock conflict came.
 */
extern SagaBatchResult saga_batch_run_rounds(int limit, int time_ms);

/* Has the batch running now used up its time?  (Dispatcher, step runner.) */
extern bool saga_batch_out_of_time(void);

#endif							/* SAGA_BATCH_H */
