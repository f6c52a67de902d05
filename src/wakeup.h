/*-------------------------------------------------------------------------
 *
 * wakeup.h
 *	  The wake-up protocol, both sides (wakeup.c): what a commit wakes
 *	  (workers, awaiting sessions, the launcher), and a worker's idle flag,
 *	  listening and sleep.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_WAKEUP_H
#define SAGA_WAKEUP_H

#include "saga.h"
#include "storage/condition_variable.h"

extern void saga_register_xact_callbacks(void);
extern void saga_note_published(void);
extern uint64 saga_work_noted_count(void);
extern void saga_note_finished(int64 saga_id);
extern ConditionVariable *saga_await_cv(int64 saga_id);
/* the worker's side (worker.c calls these) */
extern void saga_worker_found_work(void);
extern void saga_worker_take_listening(void);
extern bool saga_worker_is_listening(void);
extern void saga_worker_set_idle(bool idle);
extern void saga_worker_sleep(long timeout_ms);

#endif							/* SAGA_WAKEUP_H */
