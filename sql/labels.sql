--
-- Trace labels (1.2): a role names the client of its own sagas' traces
-- (saga_label_trace, saga_unlabel_trace), per saga type; another role's
-- sagas of the same type keep theirs; the example's labels come with the
-- extension and are left alone.  Run by ordinary roles.
--
CREATE EXTENSION saga;
CREATE ROLE shopkeeper;
CREATE ROLE rival;
GRANT EXECUTE ON FUNCTION
    saga_begin(text, interval), saga_complete(bigint), saga_fail(bigint, text),
    saga_label_trace(text, text, text, text, text), saga_unlabel_trace(text)
TO shopkeeper, rival;

SET ROLE shopkeeper;
SELECT saga_begin('cart') AS plain \gset
SELECT saga_complete(:plain);
SELECT sender, receiver, message FROM saga_trace(:plain);

-- labelled: every saga of the type, also those that ran before
SELECT saga_label_trace('cart', 'browser', 'PUT /cart', '200 OK', '409 Conflict');
SELECT saga_begin('cart') AS failing \gset
SELECT saga_fail(:failing, 'out of stock');
SELECT sender, receiver, message FROM saga_trace(:plain);
SELECT sender, receiver, message FROM saga_trace(:failing);
-- labelled again: the new labels replace the old
SELECT saga_label_trace('cart', 'app', 'PUT /cart; #1', '200 OK', '409 Conflict');
SELECT sender, receiver, message FROM saga_trace(:plain);
SELECT saga_trace_mermaid(:plain);

-- another role's sagas of the same type keep the default labels, and its
-- labels are its own
SET ROLE rival;
SELECT saga_begin('cart') AS rivals \gset
SELECT saga_complete(:rivals);
SELECT sender, receiver, message FROM saga_trace(:rivals);
SELECT saga_unlabel_trace('cart');
SELECT saga_label_trace('cart', 'kiosk', 'tap', 'beep', 'buzz');
SELECT sender, receiver, message FROM saga_trace(:rivals);
SET ROLE shopkeeper;
SELECT sender, receiver, message FROM saga_trace(:plain);

-- bad labels: nothing changes
\set VERBOSITY default
SELECT saga_label_trace('cart', NULL, 'PUT /cart', '200 OK', '409 Conflict');
SELECT saga_label_trace('cart', ' ', 'PUT /cart', '200 OK', '409 Conflict');
SELECT saga_label_trace('cart', 'app', E'PUT\n/cart', '200 OK', '409 Conflict');
SELECT saga_label_trace('cart', repeat('x', 1000), 'PUT /cart', '200 OK', '409 Conflict');
SELECT saga_label_trace(NULL, 'app', 'PUT /cart', '200 OK', '409 Conflict');
SELECT saga_unlabel_trace(NULL);
SELECT sender, receiver, message FROM saga_trace(:plain);

-- back to the default labels
SELECT saga_unlabel_trace('cart');
SELECT saga_unlabel_trace('cart');
SELECT sender, receiver, message FROM saga_trace(:plain);
SET ROLE rival;
SELECT sender, receiver, message FROM saga_trace(:rivals);

-- not granted: refused
RESET ROLE;
CREATE ROLE nobody;
SET ROLE nobody;
SELECT saga_label_trace('cart', 'app', 'PUT /cart', '200 OK', '409 Conflict');
RESET ROLE;

-- the example's labels come with the extension: its owner may not change
-- them (a restore would lose the change), and they stay as they were
SELECT saga_label_trace('order', 'shopper', 'POST /basket', 'yes', 'no');
SELECT saga_unlabel_trace('order');
SELECT saga_type, client, start_message, completed_message, failed_message, builtin
  FROM saga.trace_client ORDER BY saga_type, owner::text;
\set VERBOSITY terse

-- Clean up.
SET client_min_messages = warning;
DROP EXTENSION saga CASCADE;
DROP ROLE shopkeeper, rival, nobody;
