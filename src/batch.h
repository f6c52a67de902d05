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

#include "spi_util.h"

/*
 * Run rounds of deliveries and steps in the current transaction (with an
 * active snapshot) until a round publishes nothing, limit items were
 * claimed, time_ms have passed (0: no limit) or a lock conflict came.
 */
extern SagaBatchResult saga_batch_run_rounds(int limit, int time_ms);

/* Has the batch running now used up its time?  (Dispatcher, step runner.) */
extern bool saga_batch_out_of_time(void);

/*
 * Careful mode (worker.c): how long an item whose attempt was counted is
 * not due again: long enough for the next transaction to lock it, which it
 * then holds while it runs; if the worker dies, it is due again this soon
 * after.
 */
#define SAGA_LEASE_MS	1000.0

/*
 * Deliveries kept in memory (see batch.c): published by a handler of this
 * batch, to be run by a later round of it and written once, done.
 */
extern bool saga_batch_deferring(void);
extern void saga_batch_set_deferring(bool on);
extern void saga_batch_defer(int64 event_id, int32 subscription_id, int64 saga_id);
extern bool saga_batch_has_deferred(int64 saga_id);
extern int	saga_batch_deferred(void);
extern void saga_batch_forget_deferred(int keep);
extern int	saga_batch_take_deferred(int max, Datum **event_ids, Datum **subscription_ids);
extern void saga_batch_write_pending(Datum *event_ids, Datum *subscription_ids, int n);

extern bool saga_careful_next(SagaPlan *next_due, int64 *id, int32 *attempts);
extern void saga_careful_lease(SagaPlan *count_attempt, int64 id);

#endif							/* SAGA_BATCH_H */
