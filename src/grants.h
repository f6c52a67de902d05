/*-------------------------------------------------------------------------
 *
 * grants.h
 *	  Who may see and subscribe to what (grants.c): event-type owners and
 *	  grants, saga grants, the trace functions' checks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_GRANTS_H
#define SAGA_GRANTS_H

#include "saga.h"

extern void saga_check_event_right(const char *event_type, bool publish, Oid role);
extern void saga_check_visible(int64 saga_id);

#endif							/* SAGA_GRANTS_H */
