/*-------------------------------------------------------------------------
 *
 * invoke.h
 *	  Running users' functions as their roles (invoke.c): settings, time
 *	  limits, lock-wait sampling, retry delays.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_INVOKE_H
#define SAGA_INVOKE_H

#include "saga.h"

extern void saga_lookup_function(Oid fn, FmgrInfo *flinfo, MemoryContext cxt);
extern Datum saga_invoke_as(Oid role, FmgrInfo *flinfo, Datum arg, bool *isnull,
							 bool watch_locks);
extern bool saga_error_is_transient(int sqlerrcode);
extern char *saga_error_text(ErrorData *edata);
extern bool saga_in_user_function(void);
extern double saga_retry_delay_ms(int attempts, int sqlerrcode);
extern int	saga_lock_blocker(void);

#endif							/* SAGA_INVOKE_H */
