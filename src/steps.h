/*-------------------------------------------------------------------------
 *
 * steps.h
 *	  The step runner of orchestrated sagas (steps.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_STEPS_H
#define SAGA_STEPS_H

#include "saga.h"

/* Claim up to limit sagas due for a step and run each as far as it goes. */
extern SagaBatchResult saga_run_steps(int limit);

/* Careful mode (worker.c): count the next step's attempt, then run it. */
extern int64 saga_count_next_step(void);
extern SagaBatchResult saga_run_counted_step(int64 saga_id);

/* Compensate an orchestrated saga that was aborted (abort.c). */
extern void saga_abort_orchestrated(int64 saga_id, const char *reason);

#endif							/* SAGA_STEPS_H */
