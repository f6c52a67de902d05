/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  A database worker (worker.c): its loop, careful mode, the deadline
 *	  sweep and purges.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_WORKER_H
#define SAGA_WORKER_H

#include "shmem.h"

extern PGDLLEXPORT void saga_worker_main(Datum main_arg);

/* Slot of the current process if it is a database worker, else NULL. */
extern SagaWorkerSlot *MySagaWorker;
extern SagaDatabase *MySagaDatabase;	/* its database's entry */

#endif							/* SAGA_WORKER_H */
