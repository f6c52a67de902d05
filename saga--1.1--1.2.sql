/* saga--1.1--1.2.sql: upgrade the saga extension from 1.1 to 1.2 */

\echo Use "ALTER EXTENSION saga UPDATE TO '1.2'" to load this file. \quit

/*
 * 1.2 keeps the engine's promise off the beaten path: every saga ends,
 * completed or compensated; nothing forward runs after an abort; nothing
 * is applied twice.  Each section below belongs to one concern.
 */

------------------------------------------------------------------------------
-- Sagas end by the engine's own rules (aborts, deadlines, late events)
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Workers: why they exit
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- What a saga's owner sees
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- The history checker: saga_check()
------------------------------------------------------------------------------
