#!/usr/bin/env bash
# bench/run.sh: benchmark the saga extension against what the machine can do.
#
# One command, as root (re-runs itself with sudo otherwise):
#
#     bench/run.sh
#
# It builds and installs the extension (scripts/setup.sh), installs gnuplot
# (Debian's gnuplot-nox) if missing, starts a throwaway PostgreSQL 15 cluster
# as the postgres OS user with shared_preload_libraries = 'saga', and
# measures, in one run:
#   - baselines with pgbench: (a) one single-row INSERT per transaction,
#     (b) an order's writes in one transaction (bench.order_once), (c) the
#     same writes as four transactions;
#   - the extension: BENCH_ORDERS orders placed with saga_place_order by
#     1, 2, 4, 8 pgbench clients, choreography and orchestration, sagas per
#     second from the first placement to the last saga's end, with the
#     invariants checked after every run (it fails, exit 1, if one breaks);
#   - a hot-row workload (40 customers, 20 products, quantities 1 to 3)
#     with BENCH_HOT_CLIENTS clients: (b) and both patterns on those rows;
#   - the latency of a saga at half the best throughput (pgbench --rate);
#   - draining a backlog of BENCH_BACKLOG orders placed while the workers
#     were stopped, against the steady-state rate;
#   - a CPU profile of the workers (perf, when it is installed);
#   - the workers' CPU while idle, and the largest NOTIFY queue usage;
#   - what a saga costs the database (bench/cost.sh: WAL bytes, row writes
#     and index lookups per order, next to (b)'s).
# It writes bench/results/<timestamp>/ (results.md, throughput.png,
# latency.png, raw.csv, the server log) and prints results.md.  The cluster
# is stopped and removed on exit, also on failure.  See bench/README.md.
#
# Environment:
#   BENCH_ORDERS            orders per saga run (20000)
#   BENCH_REPS              repetitions of every throughput measurement (3)
#   BENCH_CLIENTS           client counts ("1 2 4 8")
#   BENCH_LATENCY_SECONDS   length of each fixed-rate latency run (20)
#   BENCH_BASELINE_SECONDS  length of each baseline pgbench run (5)
#   BENCH_IDLE_SECONDS      idle period whose worker CPU is measured (10)
#   BENCH_WORKERS           saga.workers (2)
#   BENCH_PORT              first port to try (5590)
#   BENCH_DRAIN_TIMEOUT     seconds a run may take to finish its sagas (900)
#   BENCH_SKIP_SETUP        1: use the installed extension, skip scripts/setup.sh
#   BENCH_EXTENSION_VERSION CREATE EXTENSION saga VERSION ... (default: the control file's)
#   BENCH_EXTRA_SETTINGS    more postgresql.conf lines, separated by ';' (none), e.g.
#                           "saga.batch_size = 10; deadlock_timeout = '100ms'"
#   BENCH_HOT_CLIENTS       clients of the hot-row runs (8)
#   BENCH_BACKLOG           orders in the backlog drained at the end (200000; 0: skip)
#   BENCH_PERF              1: profile the workers with perf, 0: do not (1 when perf is installed)
#   BENCH_COST              1: also run bench/cost.sh and include its table (1)
#   BENCH_PROFILE           1: also load pg_stat_statements (track = all) and write
#                           profile.md, the statements that took the most time in
#                           the throughput runs (this slows every run a little)
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
BENCH="$(dirname "$SELF")"
ROOT="$(cd "$BENCH/.." && pwd)"
PGBIN=/usr/lib/postgresql/15/bin

ENV_VARS=(BENCH_ORDERS BENCH_REPS BENCH_CLIENTS BENCH_LATENCY_SECONDS BENCH_BASELINE_SECONDS
          BENCH_IDLE_SECONDS BENCH_WORKERS BENCH_PORT BENCH_DRAIN_TIMEOUT BENCH_SKIP_SETUP
          BENCH_EXTENSION_VERSION BENCH_EXTRA_SETTINGS BENCH_PROFILE BENCH_HOT_CLIENTS
          BENCH_BACKLOG BENCH_PERF BENCH_COST COST_ORDERS COST_CLIENTS)

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env="$(IFS=,; echo "${ENV_VARS[*]}")" -- bash "$SELF" "$@"
    fi
    echo "run.sh: must run as root (it installs packages and runs the cluster as the postgres user)" >&2
    exit 1
fi

ORDERS="${BENCH_ORDERS:-20000}"
REPS="${BENCH_REPS:-3}"
CLIENTS="${BENCH_CLIENTS:-1 2 4 8}"
LAT_SECONDS="${BENCH_LATENCY_SECONDS:-20}"
BASE_SECONDS="${BENCH_BASELINE_SECONDS:-5}"
IDLE_SECONDS="${BENCH_IDLE_SECONDS:-10}"
WORKERS="${BENCH_WORKERS:-2}"
FIRST_PORT="${BENCH_PORT:-5590}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-900}"
SKIP_SETUP="${BENCH_SKIP_SETUP:-0}"
EXT_VERSION="${BENCH_EXTENSION_VERSION:-}"
EXTRA_SETTINGS="${BENCH_EXTRA_SETTINGS:-}"
PROFILE="${BENCH_PROFILE:-0}"
HOT_CLIENTS="${BENCH_HOT_CLIENTS:-8}"
BACKLOG="${BENCH_BACKLOG:-200000}"
PERF="${BENCH_PERF:-$(command -v perf >/dev/null 2>&1 && echo 1 || echo 0)}"
COST="${BENCH_COST:-1}"

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! bench/run.sh FAILED: %s\n' "$*" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    exit 1
}
posint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, not '$2'"; }
posint BENCH_ORDERS "$ORDERS"
posint BENCH_REPS "$REPS"
posint BENCH_LATENCY_SECONDS "$LAT_SECONDS"
posint BENCH_BASELINE_SECONDS "$BASE_SECONDS"
posint BENCH_IDLE_SECONDS "$IDLE_SECONDS"
posint BENCH_WORKERS "$WORKERS"
posint BENCH_PORT "$FIRST_PORT"
posint BENCH_DRAIN_TIMEOUT "$DRAIN_TIMEOUT"
[[ "$EXT_VERSION" =~ ^[0-9A-Za-z._-]*$ ]] || die "BENCH_EXTENSION_VERSION: not a version: '$EXT_VERSION'"
[[ "$PROFILE" =~ ^[01]$ ]] || die "BENCH_PROFILE must be 0 or 1, not '$PROFILE'"
posint BENCH_HOT_CLIENTS "$HOT_CLIENTS"
[[ "$BACKLOG" =~ ^[0-9]+$ ]] || die "BENCH_BACKLOG must be a number of orders (0: skip), not '$BACKLOG'"
[[ "$PERF" =~ ^[01]$ ]] || die "BENCH_PERF must be 0 or 1, not '$PERF'"
[[ "$COST" =~ ^[01]$ ]] || die "BENCH_COST must be 0 or 1, not '$COST'"
[ "$PERF" = 0 ] || command -v perf >/dev/null 2>&1 || die "BENCH_PERF=1, but perf is not installed (Debian: linux-perf)"
read -r -a CLIENT_LIST <<<"$CLIENTS"
[ "${#CLIENT_LIST[@]}" -gt 0 ] || die "BENCH_CLIENTS is empty"
for c in "${CLIENT_LIST[@]}"; do posint "BENCH_CLIENTS (each)" "$c"; done

START_EPOCH=$(date +%s)

# --- Build, install, gnuplot ------------------------------------------------

if [ "$SKIP_SETUP" = 1 ]; then
    say "BENCH_SKIP_SETUP=1: using the installed extension"
    [ -f /usr/share/postgresql/15/extension/saga.control ] || die "saga is not installed (run without BENCH_SKIP_SETUP)"
else
    "$ROOT/scripts/setup.sh" >&2
fi

if ! command -v gnuplot >/dev/null 2>&1; then
    say "installing gnuplot-nox"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends gnuplot-nox </dev/null >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends gnuplot-nox </dev/null >&2
    fi
fi
command -v gnuplot >/dev/null 2>&1 || die "gnuplot is not available"

# --- A throwaway cluster ----------------------------------------------------

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
PORT=$(free_port "$FIRST_PORT") || die "no free port found from $FIRST_PORT on"

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$BENCH/results/$STAMP"
mkdir -p "$OUT"
RAW="$OUT/raw.csv"
echo "kind,rep,clients,value,placement_tps,seconds,orders,deadlocks,retries" >"$RAW"

TMP=
DATA=
LOG=
SAMPLER_PID=

stop_sampler() {
    if [ -n "$SAMPLER_PID" ]; then
        rm -f "$SAMPLER_STOP"
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_sampler
    if [ -n "$LOG" ] && [ -s "$LOG" ]; then
        cp "$LOG" "$OUT/server.log" 2>/dev/null && chmod 644 "$OUT/server.log" || true
        if [ "$status" -ne 0 ]; then
            echo "run.sh: last lines of the server log ($OUT/server.log):" >&2
            tail -n 30 "$LOG" >&2
        fi
    fi
    cluster_stop
    [ -n "$TMP" ] && rm -rf "$TMP"
    [ "$status" -ne 0 ] && echo "run.sh: exit status $status; partial results in $OUT" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cluster_make saga-bench
SAMPLER_STOP="$TMP/sampler.run"
SAMPLES="$TMP/queue_usage.txt"
say "created a throwaway cluster in $DATA (port $PORT); results go to $OUT"

# The settings of the run; every one of them is reported.  Sized for a
# 2-core, 24 GB machine; durability as shipped (fsync, synchronous_commit on).
SETTINGS=(
    "shared_buffers = '1GB'"
    "effective_cache_size = '16GB'"
    "work_mem = '16MB'"
    "maintenance_work_mem = '256MB'"
    "wal_buffers = '16MB'"
    "max_wal_size = '4GB'"
    "min_wal_size = '1GB'"
    "checkpoint_timeout = '30min'"
    "checkpoint_completion_target = 0.9"
    "synchronous_commit = on"
    "fsync = on"
    "full_page_writes = on"
    "max_connections = 100"
    "max_worker_processes = 16"
    "shared_preload_libraries = '$([ "$PROFILE" = 1 ] && echo 'saga, pg_stat_statements' || echo saga)'"
    "saga.workers = $WORKERS"
    "log_lock_waits = on"
)
[ "$PROFILE" = 1 ] && SETTINGS+=("pg_stat_statements.track = all" "pg_stat_statements.max = 1000")
IFS=';' read -r -a extra <<<"$EXTRA_SETTINGS"
for line in "${extra[@]}"; do
    line="$(echo "$line" | sed -E 's/^[[:space:]]+|[[:space:]]+$//g')"
    [ -n "$line" ] && SETTINGS+=("$line")
done
cluster_start "${SETTINGS[@]}"
q() { as_postgres "${PSQL[@]}" -d bench -At -c "$1"; }

as_postgres "${PSQL[@]}" -d postgres -c 'CREATE DATABASE bench' >/dev/null
as_postgres "${PSQL[@]}" -d bench -c "CREATE EXTENSION saga${EXT_VERSION:+ VERSION '$EXT_VERSION'}" >/dev/null \
    || die "CREATE EXTENSION saga failed"
as_postgres "${PSQL[@]}" -d bench -o /dev/null <"$BENCH/sql/schema.sql"
[ "$PROFILE" = 1 ] && { as_postgres "${PSQL[@]}" -d bench -c 'CREATE EXTENSION pg_stat_statements' >/dev/null \
    || die "CREATE EXTENSION pg_stat_statements failed"; }

# The workers of database bench, once the launcher has started them.
wait_workers bench "$WORKERS"
say "cluster up: $(q 'SHOW server_version'), saga $(q "SELECT extversion FROM pg_extension WHERE extname = 'saga'"), $WORKERS saga workers in database bench"

# --- Measurements -------------------------------------------------------------

# pgbench_run LOGFILE ARGS...: runs pgbench as postgres on database bench;
# fails loudly if pgbench fails or reports failed transactions.
pgbench_run() {
    local log=$1
    shift
    if ! as_postgres "$PGBIN/pgbench" -n -M prepared -h "$TMP" -p "$PORT" -U postgres "$@" bench >"$log" 2>&1; then
        cat "$log" >&2
        die "pgbench failed: pgbench $*"
    fi
    if grep -Eq '^number of failed transactions: [1-9]' "$log"; then
        cat "$log" >&2
        die "pgbench reports failed transactions: pgbench $*"
    fi
}
deadlocks() { q "SELECT deadlocks FROM pg_stat_database WHERE datname = 'bench'"; }
# saga_counters().retries (version 1.1 on): failed deliveries and steps
# that were tried again, lock timeouts included; empty without the function.
HAVE_COUNTERS=
[ "$(q "SELECT to_regprocedure('saga_counters()') IS NOT NULL")" = t ] && HAVE_COUNTERS=1
retries() { [ -n "$HAVE_COUNTERS" ] && q "SELECT retries FROM saga_counters()" || true; }
pgbench_tps() { sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\).*/\1/p' "$1"; }
fmt_rate() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
pgbench_done() { sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$1"; }

# baseline KIND SCRIPT REP CLIENTS: one time-boxed pgbench run on fresh tables.
baseline() {
    local kind=$1 script=$2 rep=$3 clients=$4 log tps done bad dl0
    log="$TMP/pgbench.log"
    q "SELECT bench.reset_baseline()" >/dev/null
    q "VACUUM ANALYZE bench.account, bench.product" >/dev/null
    q "CHECKPOINT" >/dev/null
    dl0=$(deadlocks)
    pgbench_run "$log" -c "$clients" -j "$clients" -T "$BASE_SECONDS" -f "$BENCH/pgbench/$script"
    tps=$(pgbench_tps "$log")
    done=$(pgbench_done "$log")
    [ -n "$tps" ] || { cat "$log" >&2; die "no tps in the output of pgbench ($kind)"; }
    if [ "$kind" != insert ]; then
        bad=$(q "SELECT string_agg(v, '; ') FROM bench.baseline_violations() v")
        [ -z "$bad" ] || die "baseline $kind: $bad"
    fi
    echo "$kind,$rep,$clients,$tps,,$BASE_SECONDS,$done,$(( $(deadlocks) - dl0 ))," >>"$RAW"
    printf '    %-14s rep %d, %d clients: %10.1f %s/s\n' "$kind" "$rep" "$clients" "$tps" \
        "$([ "$kind" = insert ] && echo tx || echo orders)" >&2
}

# The workers are stopped while a saga run's data is reset: TRUNCATE takes
# ACCESS EXCLUSIVE locks on the tables the workers poll, and a worker that
# waits for such a lock longer than saga.lock_timeout fails and is
# restarted after a delay (see the README).  saga.workers = 0 stops them
# (reload); back at its configured value, the launcher starts them again.
workers_running() {
    q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' AND datname = 'bench'"
}
stop_workers() {
    local i n
    q "ALTER SYSTEM SET saga.workers = 0" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 300); do
        n=$(workers_running)
        [ "$n" -eq 0 ] && return 0
        sleep 0.1
    done
    die "the saga workers did not stop with saga.workers = 0 ($n still running)"
}
start_workers() {
    q "ALTER SYSTEM RESET saga.workers" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    wait_workers bench "$WORKERS"
}
# reset_saga: fresh saga tables and data, a checkpoint, the workers running.
reset_saga() {
    stop_workers
    q "SELECT bench.reset_saga()" >/dev/null
    q "CHECKPOINT" >/dev/null
    start_workers
}

# drain SINCE: waits until no saga is pending (the end is read from the
# table, so the polling interval does not matter); dies after DRAIN_TIMEOUT.
drain() {
    local since=$1 pending
    while :; do
        pending=$(q "SELECT count(*) FROM saga.instance WHERE status = 'pending'")
        [ "$pending" -eq 0 ] && return 0
        if [ $(( $(date +%s) - since )) -gt "$DRAIN_TIMEOUT" ]; then
            q "SELECT problem, count(*) FROM saga_stuck GROUP BY 1" >&2 || true
            die "$pending sagas still pending after ${DRAIN_TIMEOUT}s (BENCH_DRAIN_TIMEOUT)"
        fi
        sleep 0.5
    done
}

# check_invariants WHAT EXPECTED_ORDERS: fails loudly if one does not hold.
check_invariants() {
    local what=$1 expected=$2 bad dead
    bad=$(q "SELECT v FROM bench.violations($expected) v LIMIT 20")
    if [ -n "$bad" ]; then
        printf '%s\n' "$bad" >&2
        die "INVARIANT VIOLATED after $what (first 20 violations above)"
    fi
    dead=$(q "SELECT count(*) FROM saga.delivery WHERE status = 'dead'")
    [ "$dead" -eq 0 ] || say "note: $dead dead-lettered deliveries after $what"
}

# saga_run KIND REP CLIENTS [SCRIPT]: places the orders (with
# pgbench/place_KIND.pgbench unless SCRIPT is given), waits for every saga
# to end, checks the invariants, records sagas/s.
saga_run() {
    local mode=$1 rep=$2 clients=$3 script=${4:-place_$1.pgbench} log per total done tps since row dl0 dl r0 r
    log="$TMP/pgbench.log"
    per=$(( (ORDERS + clients - 1) / clients ))
    total=$(( per * clients ))
    reset_saga
    dl0=$(deadlocks)
    r0=$(retries)
    since=$(date +%s)
    pgbench_run "$log" -c "$clients" -j "$clients" -t "$per" -f "$BENCH/pgbench/$script"
    tps=$(pgbench_tps "$log")
    done=$(pgbench_done "$log")
    [ "$done" = "$total" ] || die "pgbench placed $done orders, expected $total"
    drain "$since"
    check_invariants "$mode, rep $rep, $clients clients" "$total"
    # sagas per second from the first placement to the last end
    row=$(q "SELECT count(*) / extract(epoch FROM max(finished_at) - min(started_at)),
                    extract(epoch FROM max(finished_at) - min(started_at))
               FROM saga.instance" | tr '|' ' ')
    read -r value seconds <<<"$row"
    dl=$(( $(deadlocks) - dl0 ))
    r=$(retries)
    [ -n "$r" ] && r=$(( r - r0 ))
    echo "$mode,$rep,$clients,$value,$tps,$seconds,$total,$dl,$r" >>"$RAW"
    printf '    %-14s rep %d, %d clients: %10.1f sagas/s (%d sagas in %.1f s; placed at %.0f/s; %d deadlocks, %s retries)\n' \
        "$mode" "$rep" "$clients" "$value" "$total" "$seconds" "$tps" "$dl" "${r:--}" >&2
}

# The NOTIFY queue sampler: one session, a query every ~100 ms, until the
# stop file is removed.
start_sampler() {
    touch "$SAMPLER_STOP"
    (
        while [ -e "$SAMPLER_STOP" ]; do
            echo "SELECT pg_notification_queue_usage();"
            sleep 0.1
        done | as_postgres "${PSQL[@]}" -d bench -At >"$SAMPLES" 2>&1
    ) &
    SAMPLER_PID=$!
}

MODES=(choreography orchestration)
BASELINES=("insert insert.pgbench" "order_once order_once.pgbench" "order_chain order_chain.pgbench")

say "throughput: $REPS repetition(s) x clients ($CLIENTS) x 3 baselines (${BASE_SECONDS}s each) + 2 patterns ($ORDERS orders each)"
start_sampler
for rep in $(seq 1 "$REPS"); do
    for clients in "${CLIENT_LIST[@]}"; do
        for b in "${BASELINES[@]}"; do
            read -r kind script <<<"$b"
            baseline "$kind" "$script" "$rep" "$clients"
        done
        for mode in "${MODES[@]}"; do
            saga_run "$mode" "$rep" "$clients"
        done
    done
done

# The hot-row workload: 40 customers and 20 products with ample balance and
# stock, quantities 1 to 3, every order completes; (b) and both patterns on
# those rows, HOT_CLIENTS clients.
say "hot rows: $REPS repetition(s) x (b) + 2 patterns, $HOT_CLIENTS clients"
for rep in $(seq 1 "$REPS"); do
    baseline order_once_hot order_once_hot.pgbench "$rep" "$HOT_CLIENTS"
    for mode in "${MODES[@]}"; do
        saga_run "hot_$mode" "$rep" "$HOT_CLIENTS" "place_hot_$mode.pgbench"
    done
done

# A CPU profile of the workers (BENCH_PERF=1): one more run of each pattern
# with the most clients, not counted above, with perf sampling the saga
# workers' CPU (cpu-clock; call graphs from DWARF unwinding, since the
# server is built without frame pointers).  perf-<pattern>.txt: the share
# per library, the top symbols by their own time and by inclusive time;
# perf-<pattern>.data: the samples, for perf report -i.
if [ "$PERF" = 1 ]; then
    perf_clients=${CLIENT_LIST[-1]}
    for mode in "${MODES[@]}"; do
        say "perf: the workers during $ORDERS $mode orders, $perf_clients clients"
        reset_saga
        pids=$(q "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'saga worker' AND datname = 'bench'")
        perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -p "$pids" -o "$TMP/perf.data" >/dev/null 2>"$TMP/perf.err" &
        perf_pid=$!
        sleep 0.5
        per=$(( (ORDERS + perf_clients - 1) / perf_clients ))
        since=$(date +%s)
        pgbench_run "$TMP/pgbench.log" -c "$perf_clients" -j "$perf_clients" -t "$per" -f "$BENCH/pgbench/place_$mode.pgbench"
        drain "$since"
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        check_invariants "the perf run of $mode" "$(( per * perf_clients ))"
        {
            echo "Share of the saga workers' CPU samples by library (perf, cpu-clock, $mode, $perf_clients clients):"
            echo
            perf report -i "$TMP/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -E '^ +[0-9]' | sed -n '1,8p'
            echo
            echo "Top symbols:"
            echo
            perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null | grep -E '^ +[0-9]' | sed -n '1,30p'
            echo
            echo "Inclusive (a function with everything it calls), 2% and more:"
            echo
            perf report -i "$TMP/perf.data" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null \
                | grep -E '^ +[0-9]' | sed -n '1,60p'
        } >"$OUT/perf-$mode.txt"
        mv "$TMP/perf.data" "$OUT/perf-$mode.data"
        say "wrote $OUT/perf-$mode.txt"
    done
fi

# Where the time of the throughput runs went, by statement (BENCH_PROFILE=1):
# the workers' own statements, the handlers' and steps' (nested), and the
# clients' placements and baselines.
if [ "$PROFILE" = 1 ]; then
    {
        echo "# Statements by total execution time, all throughput runs ($STAMP)"
        echo
        echo "pg_stat_statements with track = all: nested statements (inside handlers,"
        echo "steps and functions) are counted on their own and in their callers."
        echo
        echo "| calls | total ms | mean ms | rows/call | statement |"
        echo "|---:|---:|---:|---:|---|"
        q "SELECT format('| %s | %s | %s | %s | %s |', calls, round(total_exec_time::numeric),
                         round(mean_exec_time::numeric, 3), round(rows::numeric / calls, 1),
                         replace(left(regexp_replace(query, '\s+', ' ', 'g'), 140), '|', '\|'))
             FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')
            ORDER BY total_exec_time DESC LIMIT 30"
    } >"$OUT/profile.md"
    say "wrote $OUT/profile.md"
fi

# Latency at a fixed offered rate: half the best median throughput of the
# pattern, with the client count that reached it.
LAT_CSV="$OUT/latency.csv"
echo "pattern,rate,clients,sagas,p50_ms,p95_ms,p99_ms,max_ms,mean_ms,placement_tps,lag_ms" >"$LAT_CSV"
for mode in "${MODES[@]}"; do
    best=$(awk -F, -v m="$mode" '
        $1 == m { v[$3] = v[$3] " " $4 }
        END {
            for (c in v) {
                n = split(substr(v[c], 2), a, " ")
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                if (med > bestv) { bestv = med; bestc = c }
            }
            printf "%d %d\n", bestv, bestc
        }' "$RAW")
    read -r bestv bestc <<<"$best"
    rate=$(( bestv / 2 ))
    [ "$rate" -ge 1 ] || rate=1
    say "latency, $mode: --rate $rate (half of $bestv sagas/s) with $bestc clients for ${LAT_SECONDS}s"
    reset_saga
    log="$TMP/pgbench.log"
    since=$(date +%s)
    pgbench_run "$log" -c "$bestc" -j "$bestc" -T "$LAT_SECONDS" --rate "$rate" -f "$BENCH/pgbench/place_$mode.pgbench"
    done=$(pgbench_done "$log")
    tps=$(pgbench_tps "$log")
    lag=$(sed -nE 's/^rate limit schedule lag: avg ([0-9.]+) .*/\1/p' "$log")
    drain "$since"
    check_invariants "the latency run of $mode" "$done"
    row=$(q "SELECT count(*),
                    round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                    round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                    round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                    round(max(ms)::numeric, 1), round(avg(ms)::numeric, 1)
               FROM (SELECT extract(epoch FROM finished_at - started_at) * 1000 AS ms
                       FROM saga.instance) s" | tr '|' ',')
    echo "$mode,$rate,$bestc,$row,$tps,${lag:-}" >>"$LAT_CSV"
    say "    $mode: sagas,p50,p95,p99,max,mean (ms) = $row"
done
stop_sampler

# Draining a backlog: BACKLOG orders placed while the workers are stopped,
# then the workers started; the rate is the sagas over the time from the
# start of the workers to the last saga's end, against the steady-state
# rate (the median throughput with the most clients, above).
BACKLOG_CSV="$OUT/backlog.csv"
echo "pattern,orders,placed_per_s,seconds,drain_per_s" >"$BACKLOG_CSV"
if [ "$BACKLOG" -gt 0 ]; then
    bl_clients=${CLIENT_LIST[-1]}
    for mode in "${MODES[@]}"; do
        say "backlog: $BACKLOG $mode orders placed with the workers stopped, then drained"
        reset_saga
        stop_workers
        per=$(( (BACKLOG + bl_clients - 1) / bl_clients ))
        pgbench_run "$TMP/pgbench.log" -c "$bl_clients" -j "$bl_clients" -t "$per" -f "$BENCH/pgbench/place_$mode.pgbench"
        tps=$(pgbench_tps "$TMP/pgbench.log")
        q "VACUUM ANALYZE" >/dev/null
        q "CHECKPOINT" >/dev/null
        t0=$(q "SELECT extract(epoch FROM clock_timestamp())")
        since=$(date +%s)
        start_workers
        drain "$since"
        check_invariants "the backlog of $mode" "$(( per * bl_clients ))"
        row=$(q "SELECT count(*), round((extract(epoch FROM max(finished_at)) - $t0)::numeric, 1),
                        round((count(*) / (extract(epoch FROM max(finished_at)) - $t0))::numeric)
                   FROM saga.instance" | tr '|' ',')
        IFS=, read -r n secs rate <<<"$row"
        echo "$mode,$n,$tps,$secs,$rate" >>"$BACKLOG_CSV"
        say "    $mode: $n sagas drained in $secs s = $rate sagas/s (placed at $(fmt_rate "$tps")/s)"
    done
fi

# Idle cost: CPU of the launcher and the workers over IDLE_SECONDS.
say "idle: the saga processes' CPU over ${IDLE_SECONDS}s"
sleep 2
PIDS=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('saga worker', 'saga launcher') ORDER BY pid")
NPROCS=$(echo "$PIDS" | grep -c . || true)
[ "$NPROCS" -gt 0 ] || die "no saga worker or launcher found in pg_stat_activity"
cpu_ticks() {
    local pid total=0 stat rest
    for pid in $PIDS; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || die "saga process $pid went away during the idle measurement"
        rest=${stat##*) }          # fields from 3 (state) on
        read -r -a f <<<"$rest"
        total=$(( total + f[11] + f[12] ))   # utime (14) + stime (15)
    done
    echo "$total"
}
T0=$(cpu_ticks); W0=$(date +%s.%N)
sleep "$IDLE_SECONDS"
T1=$(cpu_ticks); W1=$(date +%s.%N)
HZ=$(getconf CLK_TCK)
IDLE_CPU=$(awk -v t=$((T1 - T0)) -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
IDLE_WALL=$(awk -v a="$W0" -v b="$W1" 'BEGIN { printf "%.1f", b - a }')
IDLE_PCT=$(awk -v t=$((T1 - T0)) -v hz="$HZ" -v w="$IDLE_WALL" 'BEGIN { printf "%.2f", 100 * t / hz / w }')
say "    $NPROCS processes: ${IDLE_CPU} CPU s in ${IDLE_WALL} s = ${IDLE_PCT}% of one core"

QUEUE_MAX=$(grep -E '^[0-9.eE+-]+$' "$SAMPLES" | sort -g | tail -n 1)
QUEUE_SAMPLES=$(grep -cE '^[0-9.eE+-]+$' "$SAMPLES" || true)
QUEUE_NONZERO=$(grep -E '^[0-9.eE+-]+$' "$SAMPLES" | awk '$1 > 0' | wc -l)
[ -n "$QUEUE_MAX" ] || die "the NOTIFY queue sampler recorded nothing: $(head -c 500 "$SAMPLES")"

# What a saga costs the database, counted (bench/cost.sh, its own cluster).
COST_MD="$OUT/cost.md"
if [ "$COST" = 1 ]; then
    say "cost: bench/cost.sh"
    BENCH_SKIP_SETUP=1 BENCH_PORT=$(( PORT + 1 )) COST_REPORT="$COST_MD" BENCH_EXTRA_SETTINGS="$EXTRA_SETTINGS" \
        bash "$BENCH/cost.sh" >/dev/null || die "bench/cost.sh failed"
fi

# --- Report -----------------------------------------------------------------

say "writing $OUT"
ELAPSED=$(( $(date +%s) - START_EPOCH ))
export OUT RAW LAT_CSV BACKLOG_CSV COST_MD HOT_CLIENTS BACKLOG PERF PORT ORDERS REPS CLIENTS LAT_SECONDS BASE_SECONDS IDLE_SECONDS WORKERS \
    IDLE_CPU IDLE_WALL IDLE_PCT NPROCS QUEUE_MAX QUEUE_SAMPLES QUEUE_NONZERO ELAPSED STAMP
PGVERSION=$(q "SELECT version()")
EXTVERSION=$(q "SELECT extversion FROM pg_extension WHERE extname = 'saga'")
GITREV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
SETTINGS_MD=$(q "SELECT format('| %s | %s | %s |', name, current_setting(name), source)
                   FROM pg_settings
                  WHERE source NOT IN ('default', 'override', 'client', 'session')
                     OR name LIKE 'saga.%'
                  ORDER BY name")
ERRORS=$(grep -cE '(ERROR|FATAL|PANIC|WARNING):' "$LOG" || true)
LOG_DEADLOCKS=$(grep -c 'detected deadlock while waiting' "$LOG" || true)
LOG_LOCKWAITS=$(grep -c 'still waiting for' "$LOG" || true)
export PGVERSION EXTVERSION GITREV SETTINGS_MD ERRORS LOG_DEADLOCKS LOG_LOCKWAITS
bash "$BENCH/report.sh" >"$OUT/results.md"

(cd "$OUT" && gnuplot "$BENCH/plot/throughput.gp" && gnuplot "$BENCH/plot/latency.gp") \
    || die "gnuplot failed"

cat "$OUT/results.md"
say "done in ${ELAPSED}s: $OUT/results.md, $OUT/throughput.png, $OUT/latency.png"
