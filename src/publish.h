/*-------------------------------------------------------------------------
 *
 * publish.h
 *	  The outbox and subscriptions (publish.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_PUBLISH_H
#define SAGA_PUBLISH_H

#include "saga.h"

extern char *saga_check_name(FunctionCallInfo fcinfo, int argno, const char *what);
extern Jsonb *saga_jsonb_strings(int npairs,...);
extern int64 saga_publish_event(const char *event_type, Jsonb *payload,
								bool has_saga_id, int64 saga_id,
								const char *publisher, bool has_cause,
								int64 caused_by);

#endif							/* SAGA_PUBLISH_H */
