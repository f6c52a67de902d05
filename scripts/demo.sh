#!/usr/bin/env bash
# scripts/demo.sh: show the order saga of the saga extension in both of its
# patterns, choreography and orchestration.
#
# Runs scripts/setup.sh (packages, build, install), then, as the postgres OS
# user, creates a throwaway PostgreSQL 15 cluster with saga preloaded (so its
# background workers run the sagas), creates the database saga_demo with the
# extension, sets alice 200.00, bob 5.00, widget 10, gadget 0, and places the
# same three orders in each pattern (six in all):
#   1. happy path:        alice buys 2 widget for 30.00  -> completed
#   2. payment fails:     bob buys 1 widget for 50.00    -> failed, nothing charged
#   3. inventory fails:   alice buys 1 gadget for 20.00  -> failed, payment refunded
# For each it prints the outcome (status, reason, the payment) and the saga's
# trace (its messages in order), then all six orders and the final balances
# and stock (alice 140.00, bob 5.00, widget 6, gadget 0).  The cluster is
# stopped and removed on exit, also on failure.  Exits non-zero if an order
# ends other than expected or the final state is not the expected one.
#
# Run as root (re-runs itself with sudo otherwise).
# Environment: DEMO_PORT (first port to try, default 5490).
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"
PGBIN=/usr/lib/postgresql/15/bin

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- env DEMO_PORT="${DEMO_PORT:-}" bash "$SELF" "$@"
    fi
    echo "demo.sh: must run as root (it runs setup.sh and the cluster as the postgres user)" >&2
    exit 1
fi

"$ROOT/scripts/setup.sh"

# --- A throwaway cluster ----------------------------------------------------

port_in_use() {
    # Something accepts TCP connections on it, or a server's socket lock
    # file for it exists in the usual places.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    [ -e "/tmp/.s.PGSQL.$1.lock" ] || [ -e "/var/run/postgresql/.s.PGSQL.$1.lock" ]
}

PORT="${DEMO_PORT:-5490}"
[ -n "$PORT" ] || PORT=5490
for _ in $(seq 1 100); do
    port_in_use "$PORT" || break
    PORT=$((PORT + 1))
done
port_in_use "$PORT" && { echo "demo.sh: no free port found near ${DEMO_PORT:-5490}" >&2; exit 1; }

# Under /tmp (not $TMPDIR): the postgres user must reach it, and the socket
# path must stay short.
DEMO="$(mktemp -d /tmp/saga-demo.XXXXXX)"
DATA="$DEMO/data"
LOG="$DEMO/server.log"

as_postgres() {
    (cd "$DEMO" && runuser -u postgres -- env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \
        -u PGDATA -u PGSERVICE -u PGOPTIONS -u LC_ALL LANG=C.UTF-8 HOME="$DEMO" "$@")
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$status" -ne 0 ] && [ -s "$LOG" ]; then
        echo >&2
        echo "demo.sh: failed; last lines of the server log:" >&2
        tail -n 40 "$LOG" >&2
    fi
    if [ -f "$DATA/postmaster.pid" ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DEMO"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
chown postgres: "$DEMO"

echo "==> creating a throwaway cluster in $DATA (port $PORT)"
as_postgres "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-instructions >"$DEMO/initdb.log" 2>&1 \
    || { cat "$DEMO/initdb.log" >&2; exit 1; }
cat >>"$DATA/postgresql.conf" <<EOF

# saga demo
port = $PORT
listen_addresses = ''                  # Unix socket only
unix_socket_directories = '$DEMO'
shared_preload_libraries = 'saga'
max_worker_processes = 16
EOF
as_postgres "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null

psql_demo() {
    as_postgres "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DEMO" -p "$PORT" -U postgres "$@"
}
q() { psql_demo -d saga_demo -At -c "$1"; }

echo "==> creating database saga_demo with the extension; setting balances and stock"
psql_demo -d postgres -c 'CREATE DATABASE saga_demo'
psql_demo -d saga_demo -o /dev/null <<'SQL'
CREATE EXTENSION saga;
SELECT saga_set_balance('alice', 200.00);
SELECT saga_set_balance('bob', 5.00);
SELECT saga_set_stock('widget', 10);
SELECT saga_set_stock('gadget', 0);
SQL

show_state() {
    psql_demo -d saga_demo -P footer=off <<'SQL'
SELECT c AS customer, saga_balance(c) AS balance FROM unnest(ARRAY['alice', 'bob']) AS c;
SELECT p AS product, saga_stock(p) AS stock FROM unnest(ARRAY['widget', 'gadget']) AS p;
SQL
}

echo
echo "==> starting state"
show_state

unexpected=0
check() {
    # check WHAT ACTUAL EXPECTED
    if [ "$2" != "$3" ]; then
        echo "!!! unexpected $1: $2 (expected $3)" >&2
        unexpected=$((unexpected + 1))
    fi
}

# pattern_heading NUMBER NAME DESCRIPTION-LINE...
pattern_heading() {
    local n=$1 name=$2
    shift 2
    echo
    echo
    echo "################################################################"
    echo "#  Pattern $n of 2: $name"
    local line
    for line in "$@"; do
        echo "#  $line"
    done
    echo "################################################################"
}

# scenario MODE NUMBER TITLE CUSTOMER PRODUCT QUANTITY AMOUNT EXPECTED_STATUS EXPECTED_PAYMENT
# EXPECTED_PAYMENT is what saga.payment holds for the order: none, charged
# or refunded.
scenario() {
    local mode=$1 n=$2 title=$3 customer=$4 product=$5 quantity=$6 amount=$7
    local expected=$8 expected_payment=$9
    local call id status pattern reason payment

    call="saga_place_order('$customer', '$product', $quantity, $amount, '$mode')"
    echo
    echo "----------------------------------------------------------------"
    echo " $mode, scenario $n of 3: $title"
    echo " SELECT $call"
    echo "----------------------------------------------------------------"
    id=$(q "SELECT $call")
    status=$(q "SELECT saga_await($id)")
    pattern=$(q "SELECT pattern FROM saga_orders WHERE order_id = $id")
    reason=$(q "SELECT coalesce(reason, '-') FROM saga_orders WHERE order_id = $id")
    payment=$(q "SELECT coalesce((SELECT status FROM saga.payment WHERE order_id = $id), 'none')")
    echo "order:   $id ($pattern)"
    echo "status:  $status (expected $expected)"
    echo "reason:  $reason"
    echo "payment: $payment (expected $expected_payment)"
    echo
    echo "trace: SELECT seq, sender, receiver, message FROM saga_trace($id)"
    psql_demo -d saga_demo -P footer=off \
        -c "SELECT seq, sender, receiver, message FROM saga_trace($id) ORDER BY seq"
    check "pattern of order $id" "$pattern" "$mode"
    check "status of order $id" "$status" "$expected"
    check "payment of order $id" "$payment" "$expected_payment"
}

pattern_heading 1 choreography \
    "Nobody is in charge: each service reacts to the events of the others," \
    "through the outbox (service -> broker: event, broker -> service: event)."
scenario choreography 1 "happy path"                            alice widget 2 30.00 completed charged
scenario choreography 2 "payment fails (insufficient balance)"  bob   widget 1 50.00 failed    none
scenario choreography 3 "inventory fails (no stock): refund"    alice gadget 1 20.00 failed    refunded

pattern_heading 2 orchestration \
    "The order saga is in charge: it calls each service in turn, and when one" \
    "says no (400 Bad Request) it compensates the steps already done, last first."
scenario orchestration 1 "happy path"                           alice widget 2 30.00 completed charged
scenario orchestration 2 "payment fails (insufficient balance)" bob   widget 1 50.00 failed    none
scenario orchestration 3 "inventory fails (no stock): refund"   alice gadget 1 20.00 failed    refunded

echo
echo
echo "==> all six orders"
psql_demo -d saga_demo -P footer=off -c \
    "SELECT order_id, pattern, customer, product, quantity, amount, status, coalesce(reason, '') AS reason
       FROM saga_orders ORDER BY order_id"

echo "==> final state (expected: alice 140.00, bob 5.00, widget 6, gadget 0:"
echo "    only the two completed orders charged alice 30.00 and took 2 widgets each)"
show_state
final=$(q "SELECT concat_ws(' ', saga_balance('alice'), saga_balance('bob'), saga_stock('widget'), saga_stock('gadget'))")
check "final state (alice bob widget gadget)" "$final" "140.00 5.00 6 0"

if [ "$unexpected" -ne 0 ]; then
    echo "demo.sh: $unexpected check(s) failed" >&2
    exit 1
fi
echo "==> all checks passed; removing the cluster"
