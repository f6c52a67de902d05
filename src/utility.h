/*-------------------------------------------------------------------------
 *
 * utility.h
 *	  The utility hook (utility.c): DDL that must pause a database's
 *	  workers, and DROP ROLE refusals.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_UTILITY_H
#define SAGA_UTILITY_H

#include "saga.h"

extern void saga_install_utility_hook(void);

#endif							/* SAGA_UTILITY_H */
