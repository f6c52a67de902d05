/*-------------------------------------------------------------------------
 *
 * dispatch.h
 *	  The dispatcher (dispatch.c): claims deliveries and runs their handlers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_DISPATCH_H
#define SAGA_DISPATCH_H

#include "saga.h"

extern SagaBatchResult saga_dispatch_batch(int limit);
extern void saga_dispatch_claim_less(void);
extern int64 saga_count_next_attempt(void);
extern SagaBatchResult saga_dispatch_counted(int64 delivery_id);

/* The delivery being handled right now, for saga_publish's defaults. */
typedef struct SagaCurrentDelivery
{
	int64		event_id;
	int64		saga_id;		/* 0 when the event has none */
	bool		has_saga_id;
	const char *consumer;
} SagaCurrentDelivery;

extern SagaCurrentDelivery *saga_current_delivery;

#endif							/* SAGA_DISPATCH_H */
