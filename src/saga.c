/*-------------------------------------------------------------------------
 *
 * saga.c
 *	  Module initialisation: GUCs, shared memory hooks, the launcher.
 *
 * Loaded by shared_preload_libraries, the module reserves shared memory,
 * registers the launcher background worker and a ProcessUtility hook.
 * Loaded later (CREATE EXTENSION without preloading), it only defines its
 * GUCs and SQL functions: sagas then run through saga_run_pending().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "saga.h"
#include "launcher.h"
#include "shmem.h"
#include "stats.h"
#include "utility.h"
#include "wakeup.h"


PG_MODULE_MAGIC;

void		_PG_init(void);

int			saga_workers = 2;
int			saga_batch_size = 100;
int			saga_poll_interval = 1000;
int			saga_max_attempts = 5;
int			saga_retry_backoff = 1000;
int			saga_deadline = 0;
int			saga_retention = 7 * 24 * 3600;
int			saga_retention_batch = 1000;
int			saga_lock_timeout = 5;
int			saga_batch_time = 10;
int			saga_batch_bytes = 16 * 1024;
int			saga_handler_timeout = 60 * 1000;
int			saga_test_probe_delay = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Ask for the extension's shared memory (PG 15 requests it in this hook).
 */
static void
saga_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	saga_shmem_request();
}

/*
 * Create or attach to the extension's shared memory, after the hooks
 * installed before ours.
 */
static void
saga_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	saga_shmem_startup();
}

/*
 * Load the library: define the GUCs and install the transaction callbacks
 * (in every backend that loads it).  When preloaded
 * (shared_preload_libraries), also ask for shared memory, install the
 * utility hook and register the launcher.
 */
void
_PG_init(void)
{
	DefineCustomIntVariable("saga.workers",
							"Number of saga workers per database.",
							"Each database where the extension is installed gets this many "
							"background workers; 0 stops them.",
							&saga_workers,
							2, 0, 64,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.batch_size",
							"Deliveries a worker claims and handles in one transaction.",
							NULL,
							&saga_batch_size,
							100, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.batch_time",
							"Longest time a worker spends on one batch before it commits.",
							"A batch ends when it has handled saga.batch_size deliveries and steps "
							"or after this long, whichever comes first: the row locks it holds are "
							"then released soon, so other workers rarely wait for them.  0: no limit.",
							&saga_batch_time,
							10, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.batch_bytes",
							"Most event payload a worker takes on in one transaction.",
							"A batch stops taking deliveries once their payloads add up to this "
							"(it always takes one), and events larger than 64kB are read one at "
							"a time, so that a worker's memory is bounded by the largest event.",
							&saga_batch_bytes,
							16 * 1024, 64, INT_MAX / 1024,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.poll_interval",
							"Longest time an idle worker sleeps before looking for work.",
							"Workers are woken by NOTIFY as soon as work arrives; the poll "
							"is the backstop for notifications lost in a crash.",
							&saga_poll_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.max_attempts",
							"Attempts at a delivery before it is dead-lettered.",
							NULL,
							&saga_max_attempts,
							5, 1, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.retry_backoff",
							"Delay before the first retry of a failed delivery; doubles each attempt.",
							NULL,
							&saga_retry_backoff,
							1000, 0, 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.deadline",
							"Time a saga may take before it is aborted and compensated; 0 means none.",
							"The default for sagas started without a deadline of their own.",
							&saga_deadline,
							0, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.handler_timeout",
							"Longest a handler or step may run before it is cancelled.",
							"A cancelled handler or step fails like any error and is retried; "
							"its role's statement_timeout applies instead if it is shorter.  "
							"0: no limit.",
							&saga_handler_timeout,
							60 * 1000, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.lock_timeout",
							"Longest a worker's handler or step waits for a lock before it is retried.",
							"A worker holds the row locks of its whole batch until the batch commits; "
							"a handler that waits on another worker's batch gives up after this and "
							"is retried in a later batch.  0 waits for ever.",
							&saga_lock_timeout,
							5, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.retention",
							"How long the events, deliveries and step records of a finished saga are kept.",
							"The workers remove them afterwards; 0 keeps them forever.",
							&saga_retention,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.retention_batch",
							"Finished sagas purged per transaction.",
							NULL,
							&saga_retention_batch,
							1000, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("saga.test_probe_delay",
							"For tests only: how long a new worker waits between looking for the extension and reporting it.",
							"Lets a test commit CREATE EXTENSION while a worker that did not see it "
							"is about to report the database as without the extension.",
							&saga_test_probe_delay,
							0, 0, 60 * 1000,
							PGC_SUSET, GUC_UNIT_MS | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("saga");

	saga_register_xact_callbacks();
	saga_register_subxact_callback();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = saga_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = saga_shmem_startup_hook;

	saga_install_utility_hook();
	saga_register_launcher();
}
