/*-------------------------------------------------------------------------
 *
 * replica.h
 *	  Logical copies (replica.c): a database that a subscription fills with
 *	  another's sagas runs none of them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_REPLICA_H
#define SAGA_REPLICA_H

#include "saga.h"

extern const char *saga_copy_subscription(void);
extern void saga_refuse_in_copy(const char *what);
extern bool saga_worker_in_copy(void);

#endif							/* SAGA_REPLICA_H */
