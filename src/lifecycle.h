/*-------------------------------------------------------------------------
 *
 * lifecycle.h
 *	  A database's lifecycle (lifecycle.c): its state in the launcher's
 *	  eyes, pauses for DDL, restores.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_LIFECYCLE_H
#define SAGA_LIFECYCLE_H

#include "shmem.h"

/* The state of a database's entry, and the worker's probe (worker.c). */
extern void saga_mark_database(Oid dboid, SagaDbState state);
extern uint64 saga_database_generation(Oid dboid);
extern void saga_report_probe(Oid dboid, bool installed, uint64 generation);

/* Commands that need a database without sessions (utility.c). */
extern void saga_pause_database(Oid dboid);
extern void saga_resume_database(Oid dboid);
extern void saga_forget_database(Oid dboid);
extern void saga_resume_at_xact_end(Oid dboid);
extern void saga_forget_at_commit(Oid dboid);
extern void saga_wake_launcher_at_xact_end(void);

/* CREATE EXTENSION, and a restore's hold on the workers. */
extern void saga_note_extension_created(void);
extern void saga_note_create_extension(bool restoring);
extern void saga_hold_for_restore(Oid dboid);
extern bool saga_restore_xact_ended(Oid dboid);
extern void saga_release_restore(Oid dboid, int pid);

/* The end of a transaction (wakeup.c's callback). */
extern void saga_lifecycle_at_xact_end(bool commit, bool restore_commit);

#endif							/* SAGA_LIFECYCLE_H */
