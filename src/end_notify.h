/*-------------------------------------------------------------------------
 *
 * end_notify.h
 *	  Telling clients that sagas ended (end_notify.c): the sagas a
 *	  transaction ended, and the NOTIFY it sends for them before commit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_END_NOTIFY_H
#define SAGA_END_NOTIFY_H

#include "saga.h"

extern void saga_end_notify_note(int64 saga_id);
extern void saga_end_notify_send(void);
extern void saga_end_notify_reset(void);

#endif							/* SAGA_END_NOTIFY_H */
