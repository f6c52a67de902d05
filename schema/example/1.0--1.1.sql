/* schema/example/1.0--1.1.sql: the example order shop, from 1.0 to 1.1 (after schema/engine/1.0--1.1.sql) */

-- The example's definition is made by the install script: marked built in,
-- pg_dump leaves it to CREATE EXTENSION (its subscriptions are marked by
-- the engine's rule: their handlers belong to the extension).
UPDATE saga.definition SET builtin = true WHERE name = 'order' AND version = 1;
UPDATE saga.definition_step SET builtin = true WHERE definition = 'order' AND version = 1;

-- The example's tables and sequences are dumped whole.
SELECT pg_extension_config_dump('saga.account', '');
SELECT pg_extension_config_dump('saga.product', '');
SELECT pg_extension_config_dump('saga.orders', '');
SELECT pg_extension_config_dump('saga.payment', '');
SELECT pg_extension_config_dump('saga.reservation', '');
SELECT pg_extension_config_dump('saga.payment_id_seq', '');
SELECT pg_extension_config_dump('saga.reservation_id_seq', '');
