#!/usr/bin/env bash
# bench/cost.sh: what one saga costs the database, next to the same writes
# done once: WAL bytes, row writes and index lookups per order.
#
# One command, as root (re-runs itself with sudo otherwise):
#
#     bench/cost.sh
#
# These figures are counted, not timed: pg_current_wal_lsn() and the
# pg_stat_user_tables counters before and after a run, divided by the orders
# placed.  They hardly move from one run to the next, so one run of a few
# thousand orders is enough, also on a busy machine.  For each workload
# (wide: the throughput benchmark's 1000 customers and 100 products, 10% and
# 10% failures; hot: 40 customers and 20 products, quantities 1 to 3, every
# order completes) it measures
#   (b)            the order's writes in one transaction (bench.order_once),
#   choreography   saga_place_order(..., 'choreography') and its saga,
#   orchestration  saga_place_order(..., 'orchestration') and its saga,
# each with COST_CLIENTS pgbench clients placing COST_ORDERS orders, after a
# CHECKPOINT, and prints a Markdown table (also written to
# bench/results/cost-<timestamp>.md).  Autovacuum runs as it would on a
# real server (its WAL is counted with the run's, a few per cent that may
# land in one run or the next); before each run the tables are emptied and
# analyzed, as after a fresh install.
#
# Environment:
#   COST_ORDERS   orders per run (4000)
#   COST_CLIENTS  pgbench clients (8)
#   COST_WORKERS  saga.workers (2)
#   PG_CONFIG     the installation to use (Debian's PostgreSQL 15)
#   COST_REPORT   where to write the table (bench/results/cost-<timestamp>.md)
#   BENCH_PORT, BENCH_SKIP_SETUP, BENCH_EXTRA_SETTINGS as for bench/run.sh
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
BENCH="$(dirname "$SELF")"
ROOT="$(cd "$BENCH/.." && pwd)"
# PG_CONFIG chooses the PostgreSQL 15 installation (Debian's by default).
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PGBIN="$("$PG_CONFIG" --bindir)"

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 &&
        exec sudo --preserve-env=COST_ORDERS,COST_CLIENTS,COST_WORKERS,COST_REPORT,PG_CONFIG,BENCH_PORT,BENCH_SKIP_SETUP,BENCH_EXTRA_SETTINGS -- bash "$SELF" "$@"
    echo "cost.sh: must run as root" >&2
    exit 1
fi

ORDERS="${COST_ORDERS:-4000}"
CLIENTS="${COST_CLIENTS:-8}"
WORKERS="${COST_WORKERS:-2}"
FIRST_PORT="${BENCH_PORT:-5590}"
EXTRA_SETTINGS="${BENCH_EXTRA_SETTINGS:-}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '!!! bench/cost.sh FAILED: %s\n' "$*" >&2; exit 1; }
for v in ORDERS CLIENTS WORKERS FIRST_PORT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done

if [ "${BENCH_SKIP_SETUP:-0}" = 1 ]; then
    [ -f "$("$PG_CONFIG" --sharedir)/extension/saga.control" ] || die "saga is not installed"
else
    "$ROOT/scripts/setup.sh" >&2
fi

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
PORT=$(free_port "$FIRST_PORT") || die "no free port found from $FIRST_PORT on"
TMP= DATA= LOG=
trap 'cluster_stop; [ -n "$TMP" ] && rm -rf "$TMP"' EXIT
cluster_make saga-cost
SETTINGS=(
    "shared_buffers = '1GB'" "wal_buffers = '16MB'" "max_wal_size = '4GB'" "min_wal_size = '1GB'"
    "checkpoint_timeout = '30min'" "synchronous_commit = on" "full_page_writes = on"
    "max_worker_processes = 16" "shared_preload_libraries = 'saga'"
    "saga.workers = $WORKERS"
)
IFS=';' read -r -a extra <<<"$EXTRA_SETTINGS"
for line in "${extra[@]}"; do
    line="$(echo "$line" | sed -E 's/^[[:space:]]+|[[:space:]]+$//g')"
    [ -n "$line" ] && SETTINGS+=("$line")
done
cluster_start "${SETTINGS[@]}"
q() { as_postgres "${PSQL[@]}" -d bench -At -c "$1"; }
as_postgres "${PSQL[@]}" -d postgres -c 'CREATE DATABASE bench' >/dev/null
q "CREATE EXTENSION saga" >/dev/null
as_postgres "${PSQL[@]}" -d bench -o /dev/null <"$BENCH/sql/schema.sql"
wait_workers bench "$WORKERS"

# The counters of the tables a run writes: the extension's and bench's.
COUNTERS="SELECT pg_current_wal_lsn() - '0/0'::pg_lsn,
                 sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_hot_upd), sum(n_tup_del),
                 sum(coalesce(idx_scan, 0)), sum(coalesce(idx_tup_fetch, 0)), sum(seq_scan)
            FROM pg_stat_user_tables WHERE schemaname IN ('saga', 'bench')"

set_workers() {
    local n=$1 i
    q "ALTER SYSTEM SET saga.workers = $n" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 300); do
        [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' AND datname = 'bench'")" -eq "$n" ] && return 0
        sleep 0.1
    done
    die "saga.workers = $n did not take"
}

# measure LABEL SCRIPT: places the orders, waits until every saga ended,
# then stops the workers (a worker that exits reports its statistics) and
# prints one row: WAL bytes, inserts, updates, HOT share, deletes, index
# lookups and index fetches per order.
measure() {
    local label=$1 script=$2 per before after log
    per=$(( (ORDERS + CLIENTS - 1) / CLIENTS ))
    set_workers 0
    q "SELECT bench.reset_baseline()" >/dev/null
    q "SELECT bench.reset_saga()" >/dev/null
    q "TRUNCATE saga.delivery_failure" >/dev/null
    q "VACUUM ANALYZE" >/dev/null
    q "CHECKPOINT" >/dev/null
    set_workers "$WORKERS"
    q "SELECT pg_stat_clear_snapshot()" >/dev/null
    before=$(q "$COUNTERS")
    log="$TMP/pgbench.log"
    as_postgres "$PGBIN/pgbench" -n -M prepared -h "$TMP" -p "$PORT" -U postgres \
        -c "$CLIENTS" -j "$CLIENTS" -t "$per" -f "$BENCH/pgbench/$script" bench >"$log" 2>&1 \
        || { cat "$log" >&2; die "pgbench failed ($label)"; }
    while [ "$(q "SELECT count(*) FROM saga.instance WHERE status = 'pending'")" -ne 0 ]; do sleep 0.2; done
    set_workers 0
    sleep 1
    after=$(q "SELECT pg_stat_clear_snapshot(); $COUNTERS" | tail -n 1)
    awk -F'|' -v label="$label" -v n=$((per * CLIENTS)) -v b="$before" '
        BEGIN { split(b, x, "|") }
        { wal = ($1 - x[1]) / n; ins = ($2 - x[2]) / n; upd = ($3 - x[3]) / n
          hot = ($3 - x[3]) > 0 ? 100 * ($4 - x[4]) / ($3 - x[3]) : 0
          del = ($5 - x[5]) / n; idx = ($6 - x[6]) / n; fetch = ($7 - x[7]) / n
          printf "%s|%.0f|%.2f|%.2f|%.0f%%|%.2f|%.1f|%.1f\n", label, wal, ins, upd, hot, del, idx, fetch }' <<<"$after"
}

OUT="$BENCH/results"
mkdir -p "$OUT"
REPORT="${COST_REPORT:-$OUT/cost-$(date +%Y%m%d-%H%M%S).md}"
{
    echo "| workload | what | WAL bytes/order | ratio to (b) | inserts | updates | HOT | deletes | index scans | index fetches |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in wide hot; do
        if [ "$w" = wide ]; then b=order_once.pgbench; c=place_choreography.pgbench; o=place_orchestration.pgbench
        else b=order_once_hot.pgbench; c=place_hot_choreography.pgbench; o=place_hot_orchestration.pgbench; fi
        say "$w: (b)";            rb=$(measure "(b)" "$b")
        say "$w: choreography";   rc=$(measure choreography "$c")
        say "$w: orchestration";  ro=$(measure orchestration "$o")
        wb=$(cut -d'|' -f2 <<<"$rb")
        for r in "$rb" "$rc" "$ro"; do
            awk -F'|' -v w="$w" -v wb="$wb" '{ printf "| %s | %s | %s | %.1fx | %s | %s | %s | %s | %s | %s |\n",
                w, $1, $2, $2 / wb, $3, $4, $5, $6, $7, $8 }' <<<"$r"
        done
    done
    echo
    echo "$ORDERS orders per run, $CLIENTS pgbench clients, saga.workers = $WORKERS, synchronous_commit on,"
    echo "a CHECKPOINT before each run; counts per order over the tables of schemas saga and bench."
} | tee "$REPORT"
say "written to $REPORT"
