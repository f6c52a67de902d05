#!/usr/bin/env node
// examples/node/place_order.js: place orders through the saga extension from
// Node.js with node-postgres (the "pg" package), wait for each saga's end
// and print its outcome and trace.
//
// Connection: the usual libpq environment variables, PGHOST (a host name or
// a Unix socket directory), PGPORT, PGDATABASE, PGUSER (and PGPASSWORD).
// The database must have the extension (CREATE EXTENSION saga), and the
// server shared_preload_libraries = 'saga' so that workers run the sagas.
// The user must be allowed to call saga_set_balance and saga_set_stock (the
// DBA's functions) to set up the example's customer and products.
//
//   node place_order.js                 # four orders: both patterns x
//                                       # (in stock: completed, sold out: failed)
//   node place_order.js --mode orchestration --product node-widget --expect completed
//
// Options:
//   --mode choreography|orchestration|both   the patterns to use (both)
//   --product NAME      one order per pattern of this product, instead of the
//                       four default orders; node-sold-out never has stock
//   --expect completed|failed   the outcome --product must have (completed)
//   --quantity N, --amount X    of each order (1, 10.00)
//   --timeout SECONDS   how long to await each saga (30)
//
// Exit status: 0 if every order ended as expected, 1 if one did not, 2 on a
// usage or connection error.
'use strict';

const { Client } = require('pg');

const CUSTOMER = 'node-customer';
const IN_STOCK = 'node-widget';
const SOLD_OUT = 'node-sold-out';
const MODES = ['choreography', 'orchestration'];

function usage(message) {
  console.error(`place_order.js: ${message}`);
  console.error('usage: node place_order.js [--mode choreography|orchestration|both] ' +
                '[--product NAME [--expect completed|failed]] [--quantity N] [--amount X] [--timeout SECONDS]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { mode: 'both', product: null, expect: null, quantity: 1, amount: '10.00', timeout: 30 };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    const value = argv[i + 1];
    if (!name.startsWith('--') || value === undefined) usage(`unexpected argument ${name}`);
    i++;
    switch (name) {
      case '--mode':
        if (![...MODES, 'both'].includes(value)) usage(`unknown mode ${value}`);
        opts.mode = value;
        break;
      case '--product': opts.product = value; break;
      case '--expect':
        if (!['completed', 'failed'].includes(value)) usage(`--expect: completed or failed, not ${value}`);
        opts.expect = value;
        break;
      case '--quantity':
        if (!/^[1-9][0-9]*$/.test(value)) usage(`--quantity: a positive integer, not ${value}`);
        opts.quantity = Number(value);
        break;
      case '--amount':
        if (!/^[0-9]+(\.[0-9]{1,2})?$/.test(value)) usage(`--amount: a positive amount, not ${value}`);
        opts.amount = value;
        break;
      case '--timeout':
        if (!/^[1-9][0-9]*$/.test(value)) usage(`--timeout: a positive integer, not ${value}`);
        opts.timeout = Number(value);
        break;
      default: usage(`unknown option ${name}`);
    }
  }
  if (opts.expect && !opts.product) usage('--expect needs --product');
  return opts;
}

// The orders to place: [{ mode, product, expect }]
function scenarios(opts) {
  const modes = opts.mode === 'both' ? MODES : [opts.mode];
  const list = [];
  for (const mode of modes) {
    if (opts.product) {
      list.push({ mode, product: opts.product, expect: opts.expect || 'completed' });
    } else {
      list.push({ mode, product: IN_STOCK, expect: 'completed' });
      list.push({ mode, product: SOLD_OUT, expect: 'failed' });
    }
  }
  return list;
}

// Create the customer and the products if missing, with enough money and
// stock for the orders to place; the sold-out product has none.
async function setUp(client, opts, orders) {
  const needed = Number(opts.amount) * orders.length;
  const { rows: [{ balance }] } = await client.query('SELECT saga_balance($1) AS balance', [CUSTOMER]);
  if (balance === null || Number(balance) < needed) {
    await client.query('SELECT saga_set_balance($1, $2)', [CUSTOMER, Math.max(1000, needed).toFixed(2)]);
  }
  await client.query('SELECT saga_set_stock($1, 0)', [SOLD_OUT]);
  for (const product of new Set(orders.map((o) => o.product))) {
    if (product === SOLD_OUT) continue;
    const { rows: [{ stock }] } = await client.query('SELECT saga_stock($1) AS stock', [product]);
    if (stock === null || stock < opts.quantity * orders.length) {
      await client.query('SELECT saga_set_stock($1, $2)', [product, Math.max(100, opts.quantity * orders.length)]);
    }
  }
}

// What the end of the trace must say, from the order service to the customer.
const ANSWER = { completed: '201 Created', failed: '500 Internal Server Error' };

async function placeAndAwait(client, opts, order) {
  // saga_place_order returns at once; the saga runs in the background workers.
  const { rows: [{ id }] } = await client.query(
    'SELECT saga_place_order($1, $2, $3, $4, $5) AS id',
    [CUSTOMER, order.product, opts.quantity, opts.amount, order.mode]);
  // saga_await sleeps until the saga ends (or the timeout passes: 'pending').
  const { rows: [{ status }] } = await client.query(
    'SELECT saga_await($1, make_interval(secs => $2)) AS status', [id, opts.timeout]);
  const { rows: [info] } = await client.query(
    'SELECT status, reason FROM saga_orders WHERE order_id = $1', [id]);
  const { rows: trace } = await client.query(
    'SELECT seq, sender, receiver, message FROM saga_trace($1) ORDER BY seq', [id]);

  console.log(`order ${id} (${order.mode}, ${opts.quantity} x ${order.product} for ${opts.amount}): ` +
              `${status}${info.reason ? ` (${info.reason})` : ''}`);
  for (const t of trace) {
    console.log(`  ${String(t.seq).padStart(3)}  ${t.sender.padEnd(9)} -> ${t.receiver.padEnd(9)}  ${t.message}`);
  }

  const problems = [];
  if (status !== order.expect) problems.push(`expected ${order.expect}, got ${status}`);
  const last = trace[trace.length - 1];
  const answer = ANSWER[status];
  if (answer && !(last && last.sender === 'order' && last.receiver === 'customer' && last.message === answer)) {
    problems.push(`the trace does not end with order -> customer: ${answer}`);
  }
  // a failed order that had been charged must show its refund
  const charged = trace.some((t) => t.message === 'PaymentProcessed' ||
                                    (t.sender === 'payment' && t.message === '200 OK'));
  const refunded = trace.some((t) => t.message === 'PaymentRefunded' || t.message.startsWith('DELETE /payments/'));
  if (status === 'failed' && charged && !refunded) problems.push('charged, failed, and not refunded');
  if (status === 'completed' && refunded) problems.push('completed, yet refunded');
  for (const p of problems) console.log(`  !! order ${id}: ${p}`);
  return problems.length === 0;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const orders = scenarios(opts);
  const client = new Client({
    host: process.env.PGHOST,
    port: process.env.PGPORT ? Number(process.env.PGPORT) : undefined,
    database: process.env.PGDATABASE,
    user: process.env.PGUSER,
    application_name: 'saga-example-node',
  });
  try {
    await client.connect();
  } catch (err) {
    console.error(`place_order.js: cannot connect: ${err.message}`);
    process.exit(2);
  }
  let ok = true;
  try {
    const { rows: [ext] } = await client.query(
      "SELECT extversion FROM pg_extension WHERE extname = 'saga'");
    if (!ext) throw new Error('the saga extension is not installed in this database (CREATE EXTENSION saga)');
    console.log(`connected to ${client.database} as ${client.user}; saga ${ext.extversion}`);
    await setUp(client, opts, orders);
    for (const order of orders) {
      ok = (await placeAndAwait(client, opts, order)) && ok;
    }
  } catch (err) {
    console.error(`place_order.js: ${err.message}`);
    ok = false;
  } finally {
    await client.end();
  }
  console.log(ok ? 'all orders ended as expected' : 'SOME ORDERS DID NOT END AS EXPECTED');
  process.exit(ok ? 0 : 1);
}

main();
