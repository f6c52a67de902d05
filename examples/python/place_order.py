#!/usr/bin/python3
"""examples/python/place_order.py: place orders through the saga extension
from Python with psycopg 3, be told when each saga ends (LISTEN and
saga_notify_on_end), and print its outcome and trace.

Connection: the usual libpq environment variables, PGHOST (a host name or a
Unix socket directory), PGPORT, PGDATABASE, PGUSER (and PGPASSWORD).  The
database must have the extension (CREATE EXTENSION saga) and the server
shared_preload_libraries = 'saga', so that workers run the sagas.  The user
must be allowed to call saga_set_balance and saga_set_stock (the DBA's
functions) to set up the example's customer and products.

    python3 place_order.py            # four orders: both patterns x
                                      # (in stock: completed, sold out: failed)
    python3 place_order.py --timeout 10

Exit status: 0 if every order ended as expected, 1 if one did not, 2 on a
usage or connection error.

How it is told: it LISTENs on a channel of its own, then places each order
and calls saga_notify_on_end(order, channel) in the same transaction, so
that the saga cannot end before it has asked.  The transaction that ends
sagas (a worker's batch) sends one NOTIFY per channel with "id:status" of
each of them, comma-separated.  NOTIFY is not durable: a client that was
disconnected looks at saga_status() for what it missed, as this one does
when the notification does not come in time.
"""
import argparse
import os
import select
import sys
import time

import psycopg

CUSTOMER = 'python-customer'
IN_STOCK = 'python-widget'
SOLD_OUT = 'python-sold-out'


def main():
    parser = argparse.ArgumentParser(description='place orders and be told when they end')
    parser.add_argument('--timeout', type=float, default=30,
                        help='seconds to wait for each order to end (30)')
    args = parser.parse_args()
    orders = [(mode, product, expected)
              for mode in ('choreography', 'orchestration')
              for product, expected in ((IN_STOCK, 'completed'), (SOLD_OUT, 'failed'))]
    channel = 'orders_done_%d' % os.getpid()

    try:
        conn = psycopg.connect(autocommit=True)
    except psycopg.Error as e:
        print('place_order.py: cannot connect: %s' % e, file=sys.stderr)
        return 2

    with conn:
        # the example's customer and products
        try:
            conn.execute('SELECT saga_set_balance(%s, 1000.00)', (CUSTOMER,))
            conn.execute('SELECT saga_set_stock(%s, 100)', (IN_STOCK,))
            conn.execute('SELECT saga_set_stock(%s, 0)', (SOLD_OUT,))
        except psycopg.errors.InsufficientPrivilege as e:
            print('place_order.py: %s\n(saga_set_balance and saga_set_stock are the DBA\'s: '
                  'run this as the extension\'s owner, or have it grant them to %s)'
                  % (str(e).strip(), conn.info.user), file=sys.stderr)
            return 2
        except psycopg.errors.UndefinedFunction as e:
            print('place_order.py: %s\n(is the saga extension installed in database %s? '
                  'CREATE EXTENSION saga)' % (str(e).strip(), conn.info.dbname), file=sys.stderr)
            return 2
        conn.execute('LISTEN %s' % channel)

        # told: each notification names the sagas that ended in one commit;
        # the handler is in place before the first order, which may end
        # while the next ones are placed
        # (psycopg 3.1 hands notifications to a handler whenever the
        # connection reads from the server: wait until it has something to
        # read, then let it read)
        ended = {}

        def on_notify(note):
            if note.channel != channel:
                return
            for item in note.payload.split(','):
                saga_id, status = item.split(':')
                ended[int(saga_id)] = status
                print('told: order %s %s' % (saga_id, status))

        conn.add_notify_handler(on_notify)

        placed = {}
        for mode, product, expected in orders:
            with conn.transaction():
                (order,) = conn.execute(
                    'SELECT saga_place_order(%s, %s, 1, 10.00, %s)',
                    (CUSTOMER, product, mode)).fetchone()
                conn.execute('SELECT saga_notify_on_end(%s, %s)', (order, channel))
            placed[order] = (mode, product, expected)
            print('placed order %d (%s, %s)' % (order, mode, product))

        conn.execute('SELECT 1')        # what came while placing
        deadline = time.monotonic() + args.timeout
        while not set(placed) <= set(ended) and time.monotonic() < deadline:
            select.select([conn.fileno()], [], [], max(0.0, deadline - time.monotonic()))
            conn.execute('SELECT 1')
        for order in placed:
            if order not in ended:
                # not told in time: ask (saga_await would wait for it)
                (status,) = conn.execute('SELECT saga_status(%s)', (order,)).fetchone()
                print('not told of order %d: saga_status says %s' % (order, status))
                ended[order] = status

        failures = 0
        for order, (mode, product, expected) in placed.items():
            status = ended[order]
            ok = status == expected
            failures += not ok
            print('order %d (%s, %s): %s%s' % (order, mode, product, status,
                                                '' if ok else ', expected ' + expected))
            for seq, sender, receiver, message in conn.execute(
                    'SELECT seq, sender, receiver, message FROM saga_trace(%s)', (order,)):
                print('  %2d. %s -> %s: %s' % (seq, sender, receiver, message))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
