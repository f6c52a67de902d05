/*-------------------------------------------------------------------------
 *
 * abort.h
 *	  Ending sagas early (abort.c): saga_cancel(), deadlines, settling
 *	  aborted sagas.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_ABORT_H
#define SAGA_ABORT_H

#include "saga.h"

extern int	saga_abort_expired(int limit);
extern int	saga_settle_aborted(int64 *ids, int n);
extern void saga_mark_aborted(int64 saga_id, const char *reason);
extern void saga_abort_now(int64 *ids, const char **reasons, int n);

#endif							/* SAGA_ABORT_H */
