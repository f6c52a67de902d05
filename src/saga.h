/*-------------------------------------------------------------------------
 *
 * saga.h
 *	  Declarations shared by the saga extension's source files.
 *
 * The parts, a file each (docs/architecture.md tells how they work
 * together):
 *	- the launcher (launcher.c), a background worker that keeps saga.workers
 *	  database workers running in every database with the extension;
 *	- database workers (worker.c) that sleep until woken by NOTIFY, their
 *	  latch or the poll interval, then run batches;
 *	- the batch driver (batch.c, batch.h): rounds of deliveries and steps
 *	  in one transaction, for the workers and saga_run_pending();
 *	- the dispatcher (dispatch.c), which claims deliveries and runs their
 *	  handlers, and the step runner (steps.c, steps.h) for orchestrated
 *	  sagas; both run user code through invoke.c;
 *	- the SQL API: the outbox and subscriptions (publish.c), instances
 *	  (instance.c), definitions (definition.c), aborts and deadlines
 *	  (abort.c), the operator's calls (admin.c), rights (grants.c),
 *	  counters (stats.c), purges (retention.c), logical copies (replica.c);
 *	- a database's lifecycle: probed, active, paused for DDL, forgotten,
 *	  held back by a restore (lifecycle.c, lifecycle.h); the utility hook
 *	  that pauses it (utility.c); the commit-time wake-up (wakeup.c);
 *	- shared memory (shmem.c) and the SPI helpers (spi_util.c); the GUCs
 *	  and _PG_init() (saga.c).
 * Each part has a header of its own, named after its file, that declares
 * what the others may call; this one holds what they all share: names,
 * the GUCs, the engine's SQLSTATEs and what a batch did.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_H
#define SAGA_H

#include "postgres.h"

#include "fmgr.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#define SAGA_SCHEMA			"saga"
#define SAGA_EXTENSION		"saga"
#define SAGA_NOTIFY_CHANNEL "saga"
/* The event the engine publishes into a saga it aborts. */
#define SAGA_ABORTED_EVENT	"SagaAborted"

/* Number of condition variables that saga_await() sleeps on. */
#define SAGA_AWAIT_CVS		64

/* GUCs (saga.c) */
extern int	saga_workers;
extern int	saga_batch_size;
extern int	saga_poll_interval;
extern int	saga_max_attempts;
extern int	saga_retry_backoff;
extern int	saga_deadline;
extern int	saga_retention;
extern int	saga_lock_timeout;
extern int	saga_batch_time;
extern int	saga_batch_bytes;
extern int	saga_handler_timeout;
extern int	saga_retention_batch;
extern int	saga_test_probe_delay;	/* for tests only */

/* SQLSTATEs of the engine's own */
/* SQLSTATE SG400: a saga step's business "no" (see saga_reject()). */
#define ERRCODE_SAGA_REJECTED	MAKE_SQLSTATE('S','G','4','0','0')

/*
 * SQLSTATE SG410: the role a handler or step runs as no longer exists (it
 * was dropped from another database's session): its work can never run.
 */
#define ERRCODE_SAGA_ROLE_GONE	MAKE_SQLSTATE('S','G','4','1','0')

/* What a batch of deliveries or steps did (dispatch.c, steps.c, batch.c). */
typedef struct SagaBatchResult
{
	int			claimed;		/* deliveries taken */
	int			done;			/* handled successfully */
	int			failed;			/* handler raised; retried later or dead */
	int			transient;		/* of which a lock timeout or deadlock: due again at once */
	int			published;		/* work its handlers and steps made due (saga_note_published) */
	bool		full;			/* it claimed all it asked for: more may be due */
} SagaBatchResult;

#endif							/* SAGA_H */
