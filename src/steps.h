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

/*
 * A step of a definition: what saga_define() (definition.c) stores and
 * the step runner reads back, with whether its service is paused now.
 */
typedef struct SagaStepDef
{
	char	   *name;
	char	   *service;
	Oid			action;
	Oid			compensation;
	char	   *request;
	char	   *compensation_request;
	bool		paused;			/* its service is paused (the step runner) */
} SagaStepDef;

/* Claim up to limit sagas due for a step and run each as far as it goes. */
extern SagaBatchResult saga_run_steps(int limit);

/* Careful mode (worker.c): count the next step's attempt, then run it. */
extern int64 saga_count_next_step(void);
extern SagaBatchResult saga_run_counted_step(int64 saga_id);

/* Compensate an orchestrated saga that was aborted (abort.c). */
extern void saga_abort_orchestrated(int64 saga_id, const char *reason);

#endif							/* SAGA_STEPS_H */
