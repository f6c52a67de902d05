/*-------------------------------------------------------------------------
 *
 * instance.h
 *	  Saga instances (instance.c): begin, complete, fail, status, await;
 *	  and the argument checks the SQL API shares.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_INSTANCE_H
#define SAGA_INSTANCE_H

#include "saga.h"

extern double saga_deadline_ms(FunctionCallInfo fcinfo, int argno, bool *none);
extern double saga_interval_ms(Interval *iv);
extern bool saga_may_act_for(Oid role, int64 saga_id, bool *exists);

#endif							/* SAGA_INSTANCE_H */
