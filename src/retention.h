/*-------------------------------------------------------------------------
 *
 * retention.h
 *	  Purging ended sagas (retention.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_RETENTION_H
#define SAGA_RETENTION_H

#include "saga.h"

extern int64 saga_purge_batch(double older_than_ms, int batch);

#endif							/* SAGA_RETENTION_H */
