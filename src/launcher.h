/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher (launcher.c): keeps saga.workers workers running in every
 *	  database with the extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAGA_LAUNCHER_H
#define SAGA_LAUNCHER_H

#include "saga.h"

extern void saga_register_launcher(void);
extern PGDLLEXPORT void saga_launcher_main(Datum main_arg);

#endif							/* SAGA_LAUNCHER_H */
