#!/usr/bin/env bash
# bench/retention.sh: how big the engine's tables get, and what retention
# gives back.
#
# One command, as root (re-runs itself with sudo otherwise):
#
#     bench/retention.sh
#
# It builds and installs the extension (scripts/setup.sh), starts a throwaway
# PostgreSQL 15 cluster as the postgres OS user with
# shared_preload_libraries = 'saga', and in two rounds passes RET_SAGAS sagas
# (both patterns, all three outcomes) through it with pgbench calling
# saga_place_order; once every saga has ended it reports the size
# (pg_total_relation_size: heap, indexes, TOAST) and the row count of
# saga.event, saga.delivery, saga.step_run and saga.instance, then removes
# what retention removes:
#   round 1: by the workers: saga.retention set to RET_RETENTION with
#            ALTER SYSTEM + pg_reload_conf(); timed until no finished saga is
#            left unpurged;
#   round 2: by saga_purge('0 s'), timed;
# then VACUUM (timed) and VACUUM FULL, with the sizes after each.  It fails
# (exit 1) if a saga does not end, if anything of a finished saga is left
# after the purge, or if a purged saga's status or trace is wrong.
# It writes bench/results/retention-<timestamp>.md and prints it.  The
# cluster is stopped and removed on exit, also on failure.
#
# Environment:
#   RET_SAGAS          sagas per round (200000)
#   RET_CLIENTS        pgbench clients (4)
#   RET_WORKERS        saga.workers (2)
#   RET_RETENTION      saga.retention for round 1, in seconds (5)
#   RET_ROUNDS         "1 2", "1" or "2": which rounds to run ("1 2")
#   RET_PORT           first port to try (5690)
#   RET_DRAIN_TIMEOUT  seconds the sagas of a round, or the workers' purge,
#                      may take (3600)
#   RET_SKIP_SETUP     1: use the installed extension, skip scripts/setup.sh
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
BENCH="$(dirname "$SELF")"
ROOT="$(cd "$BENCH/.." && pwd)"
PGBIN=/usr/lib/postgresql/15/bin

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=RET_SAGAS,RET_CLIENTS,RET_WORKERS,RET_RETENTION,RET_ROUNDS,RET_PORT,RET_DRAIN_TIMEOUT,RET_SKIP_SETUP \
            -- bash "$SELF" "$@"
    fi
    echo "retention.sh: must run as root (it runs the cluster as the postgres user)" >&2
    exit 1
fi

SAGAS="${RET_SAGAS:-200000}"
CLIENTS="${RET_CLIENTS:-4}"
WORKERS="${RET_WORKERS:-2}"
RETENTION="${RET_RETENTION:-5}"
ROUNDS="${RET_ROUNDS:-1 2}"
FIRST_PORT="${RET_PORT:-5690}"
DRAIN_TIMEOUT="${RET_DRAIN_TIMEOUT:-3600}"
SKIP_SETUP="${RET_SKIP_SETUP:-0}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '\nretention.sh FAILED: %s\n' "$*" >&2; exit 1; }
posint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, not '$2'"; }
posint RET_SAGAS "$SAGAS"
posint RET_CLIENTS "$CLIENTS"
posint RET_WORKERS "$WORKERS"
posint RET_RETENTION "$RETENTION"
posint RET_PORT "$FIRST_PORT"
posint RET_DRAIN_TIMEOUT "$DRAIN_TIMEOUT"
for r in $ROUNDS; do [[ "$r" =~ ^[12]$ ]] || die "RET_ROUNDS: 1 and/or 2, not '$ROUNDS'"; done

START_EPOCH=$(date +%s)
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

if [ "$SKIP_SETUP" = 1 ]; then
    say "RET_SKIP_SETUP=1: using the installed extension"
    [ -f /usr/share/postgresql/15/extension/saga.control ] || die "saga is not installed (run without RET_SKIP_SETUP)"
else
    "$ROOT/scripts/setup.sh" >&2
fi

# --- A throwaway cluster ----------------------------------------------------

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
PORT=$(free_port "$FIRST_PORT") || die "no free port found from $FIRST_PORT on"

STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$BENCH/results"
REPORT="$BENCH/results/retention-$STAMP.md"
TMP=
DATA=
LOG=
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$status" -ne 0 ] && [ -n "$LOG" ] && [ -s "$LOG" ]; then
        echo "retention.sh: last lines of the server log:" >&2
        tail -n 30 "$LOG" >&2
    fi
    cluster_stop
    [ -n "$TMP" ] && rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cluster_make saga-retention
say "created a throwaway cluster in $DATA (port $PORT)"
# Sized like bench/run.sh's cluster; synchronous_commit is off because the
# subject is the tables' size, not the commit rate.
SETTINGS=(
    "shared_buffers = '1GB'"
    "work_mem = '16MB'"
    "maintenance_work_mem = '256MB'"
    "max_wal_size = '8GB'"
    "checkpoint_timeout = '30min'"
    "synchronous_commit = off"
    "max_connections = 100"
    "max_worker_processes = 16"
    "shared_preload_libraries = 'saga'"
    "saga.workers = $WORKERS"
)
cluster_start "${SETTINGS[@]}"
q() { as_postgres "${PSQL[@]}" -d bench -At -c "$1"; }

as_postgres "${PSQL[@]}" -d postgres -c 'CREATE DATABASE bench' >/dev/null
q 'CREATE EXTENSION saga' >/dev/null
# 10% of the orders: a customer with no money (fails payment); 10%: a
# product with no stock (charged, fails inventory, refunded); 80% complete.
q "SELECT saga_set_balance('c' || i, CASE WHEN i <= 100 THEN 0 ELSE 1000000000 END) FROM generate_series(1, 1000) i;
   SELECT saga_set_stock('p' || i, CASE WHEN i <= 10 THEN 0 ELSE 1000000000 END) FROM generate_series(1, 100) i" >/dev/null
wait_workers bench "$WORKERS"
say "cluster up: $(q 'SHOW server_version'), saga $(q "SELECT extversion FROM pg_extension WHERE extname = 'saga'"), $WORKERS workers"

cat >"$TMP/place.pgbench" <<'EOF'
\set r random(1, 100)
\set c random(101, 1000)
\set p random(11, 100)
\set c0 random(1, 100)
\set p0 random(1, 10)
\set m random(0, 1)
SELECT saga_place_order('c' || CASE WHEN :r <= 10 THEN :c0 ELSE :c END,
                        'p' || CASE WHEN :r > 10 AND :r <= 20 THEN :p0 ELSE :p END,
                        1, 10.00, CASE WHEN :m = 0 THEN 'choreography' ELSE 'orchestration' END);
EOF
chown postgres: "$TMP/place.pgbench"

TABLES="'saga.event', 'saga.delivery', 'saga.step_run', 'saga.instance'"
# sizes LABEL: one markdown table row per table, and a total
sizes() {
    q "WITH t AS (SELECT r::regclass AS rel, ord FROM unnest(ARRAY[$TABLES]) WITH ORDINALITY AS u(r, ord)),
            s AS (SELECT rel, ord, pg_total_relation_size(rel) AS total, pg_relation_size(rel) AS heap,
                         pg_indexes_size(rel) AS idx,
                         (xpath('/row/n/text()', query_to_xml('SELECT count(*) AS n FROM ' || rel, false, true, '')))[1]::text::bigint AS n
                    FROM t)
       SELECT format('| %s | %s | %s | %s | %s | %s |', '$1', rel, n, pg_size_pretty(total), pg_size_pretty(heap), pg_size_pretty(idx))
         FROM s
       UNION ALL
       SELECT format('| %s | **the four** | %s | **%s** | %s | %s |', '$1', sum(n), pg_size_pretty(sum(total)),
                     pg_size_pretty(sum(heap)), pg_size_pretty(sum(idx)))
         FROM s"
}
total_bytes() { q "SELECT sum(pg_total_relation_size(r::regclass)) FROM unnest(ARRAY[$TABLES]) r"; }

drain() {
    local since=$1 pending
    while :; do
        pending=$(q "SELECT count(*) FROM saga.instance WHERE status = 'pending'")
        [ "$pending" -eq 0 ] && return 0
        [ $(( $(date +%s) - since )) -gt "$DRAIN_TIMEOUT" ] && die "$pending sagas still pending after ${DRAIN_TIMEOUT}s"
        sleep 1
    done
}

check_invariants() {
    local bad
    bad=$(q "SELECT count(*) FROM saga_orders o JOIN saga.payment p ON p.order_id = o.order_id
              WHERE (o.status = 'failed') <> (p.status = 'refunded')")
    [ "$bad" -eq 0 ] || die "$bad orders whose charge and outcome disagree"
    bad=$(q "SELECT count(*) FROM saga.delivery WHERE status = 'dead'")
    [ "$bad" -eq 0 ] || die "$bad dead letters"
}

# After a purge: nothing of a finished saga is left, a purged saga still
# answers saga_status and its trace is its start and its end.
check_purged() {
    local left id
    left=$(q "SELECT (SELECT count(*) FROM saga.event) + (SELECT count(*) FROM saga.delivery)
                     + (SELECT count(*) FROM saga.step_run)
                     + (SELECT count(*) FROM saga.instance WHERE status <> 'pending' AND purged_at IS NULL)")
    [ "$left" -eq 0 ] || die "$left events, deliveries, step records or unpurged sagas left after the purge"
    id=$(q "SELECT max(id) FROM saga.instance WHERE status = 'failed' AND pattern = 'choreography'")
    [ "$(q "SELECT saga_status($id)")" = failed ] || die "saga_status of purged saga $id is not failed"
    [ "$(q "SELECT string_agg(sender || '->' || receiver || ':' || message, ' ' ORDER BY seq) FROM saga_trace($id)")" \
        = "customer->order:POST /orders order->customer:500 Internal Server Error" ] \
        || die "the trace of purged saga $id is not its start and end: $(q "SELECT string_agg(message, ', ') FROM saga_trace($id)")"
}

ROWS_MD=()
NOTES_MD=()
place_round() {
    local round=$1 per t0 t1 log
    per=$(( (SAGAS + CLIENTS - 1) / CLIENTS ))
    log="$TMP/pgbench.log"
    say "round $round: placing $((per * CLIENTS)) orders with $CLIENTS pgbench clients"
    t0=$(now)
    as_postgres "$PGBIN/pgbench" -n -M prepared -h "$TMP" -p "$PORT" -U postgres \
        -c "$CLIENTS" -j "$CLIENTS" -t "$per" -f "$TMP/place.pgbench" bench >"$log" 2>&1 \
        || { cat "$log" >&2; die "pgbench failed"; }
    grep -Eq '^number of failed transactions: [1-9]' "$log" && { cat "$log" >&2; die "pgbench: failed transactions"; }
    drain "${t0%.*}"
    t1=$(now)
    check_invariants
    PLACED=$((per * CLIENTS))
    PASS_SECONDS=$(elapsed "$t0" "$t1")
    say "round $round: $PLACED sagas ended in ${PASS_SECONDS}s"
    NOTES_MD+=("- round $round: $PLACED sagas placed and ended in ${PASS_SECONDS} s ($(awk -v n="$PLACED" -v s="$PASS_SECONDS" 'BEGIN { printf "%.0f", n / s }') sagas/s); outcomes: $(q "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM saga_orders WHERE order_id > coalesce((SELECT max(id) FROM saga.instance WHERE purged_at IS NOT NULL), 0) GROUP BY 1) s")")
}

after_purge() {
    local round=$1 t0 t1
    ROWS_MD+=("$(sizes "$round: purged, before VACUUM")")
    t0=$(now)
    q "VACUUM saga.event, saga.delivery, saga.step_run, saga.instance" >/dev/null
    t1=$(now)
    VACUUM_SECONDS=$(elapsed "$t0" "$t1")
    ROWS_MD+=("$(sizes "$round: after VACUUM (${VACUUM_SECONDS} s)")")
    t0=$(now)
    q "VACUUM FULL saga.event, saga.delivery, saga.step_run, saga.instance" >/dev/null
    t1=$(now)
    ROWS_MD+=("$(sizes "$round: after VACUUM FULL ($(elapsed "$t0" "$t1") s)")")
}

for round in $ROUNDS; do
    place_round "$round"
    ROWS_MD+=("$(sizes "$round: all ended")")
    BEFORE_BYTES=$(total_bytes)
    if [ "$round" = 1 ]; then
        say "round 1: saga.retention = ${RETENTION}s, the workers purge"
        t0=$(now)
        q "ALTER SYSTEM SET saga.retention = '${RETENTION}s'" >/dev/null
        q "SELECT pg_reload_conf()" >/dev/null
        while :; do
            left=$(q "SELECT count(*) FROM saga.instance WHERE status <> 'pending' AND purged_at IS NULL")
            [ "$left" -eq 0 ] && [ "$(q 'SELECT count(*) FROM saga.event')" -eq 0 ] && break
            [ $(( $(date +%s) - ${t0%.*} )) -gt "$DRAIN_TIMEOUT" ] && die "$left sagas not purged after ${DRAIN_TIMEOUT}s"
            sleep 1
        done
        t1=$(now)
        PURGE_SECONDS=$(elapsed "$t0" "$t1")
        q "ALTER SYSTEM RESET saga.retention" >/dev/null
        q "SELECT pg_reload_conf()" >/dev/null
        NOTES_MD+=("- round 1: the workers purged $PLACED sagas in ${PURGE_SECONDS} s from the reload of saga.retention = ${RETENTION}s (including the ${RETENTION} s every saga must have been finished; the workers purge at most 10 batches of saga.retention_batch = $(q 'SHOW saga.retention_batch') sagas per worker every 10 s)")
    else
        say "round 2: saga_purge('0 s')"
        t0=$(now)
        n=$(q "SELECT saga_purge('0 s')")
        t1=$(now)
        PURGE_SECONDS=$(elapsed "$t0" "$t1")
        NOTES_MD+=("- round 2: \`SELECT saga_purge('0 s')\` removed $n sagas' events, deliveries and step records in ${PURGE_SECONDS} s (one transaction)")
    fi
    check_purged
    say "round $round: purged in ${PURGE_SECONDS}s"
    after_purge "$round"
    NOTES_MD+=("- round $round: the four tables went from $(q "SELECT pg_size_pretty($BEFORE_BYTES::bigint)") to $(q "SELECT pg_size_pretty($(total_bytes)::bigint)") after VACUUM FULL; plain VACUUM took ${VACUUM_SECONDS} s")
done

ERRORS=$(grep -cE '(ERROR|FATAL|PANIC):' "$LOG" || true)
# the distinct messages, with their counts (timestamps and pids stripped)
ERROR_KINDS=$(grep -E '(ERROR|FATAL|PANIC):' "$LOG" | sed -E 's/^.*(ERROR|FATAL|PANIC):/\1:/' \
    | sort | uniq -c | sort -rn | head -n 10 || true)
ELAPSED=$(( $(date +%s) - START_EPOCH ))
GITREV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
{
    echo "# saga retention, $STAMP"
    echo
    echo "$(q 'SELECT version()'); saga $(q "SELECT extversion FROM pg_extension WHERE extname = 'saga'") ($GITREV);"
    echo "$(nproc) CPUs. Sagas per round: $SAGAS, placed by $CLIENTS pgbench clients calling \`saga_place_order\`"
    echo "(half choreography, half orchestration; 80% complete, 10% fail payment, 10% fail inventory and are refunded);"
    echo "\`saga.workers\` = $WORKERS; settings: ${SETTINGS[*]}."
    echo "Whole run: ${ELAPSED} s; ERROR/FATAL/PANIC lines in the server log: $ERRORS."
    if [ -n "$ERROR_KINDS" ]; then
        echo
        echo '```'
        echo "$ERROR_KINDS"
        echo '```'
    fi
    echo
    echo "Round 1 purges through the workers (\`saga.retention\` = ${RETENTION}s set with ALTER SYSTEM and"
    echo "\`pg_reload_conf()\`), round 2 with \`saga_purge('0 s')\`, on the same tables (round 2's"
    echo "saga.instance also holds round 1's purged rows: an instance row stays, marked \`purged_at\`)."
    echo "Sizes are \`pg_total_relation_size\` (heap + indexes + TOAST), then heap and indexes alone."
    echo "Plain VACUUM makes the space reusable (and truncates empty trailing pages); VACUUM FULL"
    echo "gives it back to the file system."
    echo
    echo "| when | table | rows | total | heap | indexes |"
    echo "|---|---|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS_MD[@]}"
    echo
    printf '%s\n' "${NOTES_MD[@]}"
} >"$REPORT"
cat "$REPORT"
say "report: $REPORT (${ELAPSED}s)"
