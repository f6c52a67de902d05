#!/usr/bin/env bash
# scripts/demo.sh: show the choreographed order saga of the saga extension.
#
# Runs scripts/setup.sh (packages, build, install), then, as the postgres OS
# user, creates a throwaway PostgreSQL 15 cluster with saga preloaded (so its
# background workers run the sagas), creates the database saga_demo with the
# extension, and places three orders:
#   1. happy path:        alice buys 2 widget for 30.00  -> completed
#   2. payment fails:     bob buys 1 widget for 50.00    -> failed, nothing charged
#   3. inventory fails:   alice buys 1 gadget for 20.00  -> failed, payment refunded
# For each it prints the outcome and the saga's trace (its messages in order),
# then the final balances and stock.  The cluster is stopped and removed on
# exit, also on failure.  Exits non-zero if an order ends other than expected.
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
SELECT saga_set_balance('alice', 100.00);
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

# scenario NUMBER TITLE CUSTOMER PRODUCT QUANTITY AMOUNT EXPECTED_STATUS
scenario() {
    local n=$1 title=$2 customer=$3 product=$4 quantity=$5 amount=$6 expected=$7
    local id status reason

    echo
    echo "================================================================"
    echo " Scenario $n: $title"
    echo " saga_place_order('$customer', '$product', $quantity, $amount)"
    echo "================================================================"
    id=$(q "SELECT saga_place_order('$customer', '$product', $quantity, $amount)")
    status=$(q "SELECT saga_await($id)")
    reason=$(q "SELECT coalesce(reason, '-') FROM saga_orders WHERE order_id = $id")
    echo "order:  $id"
    echo "status: $status (expected $expected)"
    echo "reason: $reason"
    echo
    echo "trace:"
    psql_demo -d saga_demo -P footer=off \
        -c "SELECT seq, sender, receiver, message FROM saga_trace($id) ORDER BY seq"
    if [ "$status" != "$expected" ]; then
        echo "!!! unexpected status: $status, expected $expected" >&2
        unexpected=$((unexpected + 1))
    fi
}

scenario 1 "happy path"                          alice widget 2 30.00 completed
scenario 2 "payment fails (insufficient balance)" bob   widget 1 50.00 failed
scenario 3 "inventory fails (no stock): refund"   alice gadget 1 20.00 failed

echo
echo "==> final state (expected: alice 70.00, bob 5.00, widget 8, gadget 0)"
show_state
final=$(q "SELECT concat_ws(' ', saga_balance('alice'), saga_balance('bob'), saga_stock('widget'), saga_stock('gadget'))")
if [ "$final" != "70.00 5.00 8 0" ]; then
    echo "!!! unexpected final state: $final" >&2
    unexpected=$((unexpected + 1))
fi

if [ "$unexpected" -ne 0 ]; then
    echo "demo.sh: $unexpected check(s) failed" >&2
    exit 1
fi
echo "==> demo done; removing the cluster"
