#!/usr/bin/env bash
# bench/report.sh: writes results.md (to stdout) and the gnuplot data files
# (throughput.dat, latency.dat in $OUT) from raw.csv and latency.csv.
# Called by bench/run.sh, which exports the variables used here.
set -euo pipefail

: "${OUT:?}" "${RAW:?}" "${LAT_CSV:?}"

KINDS="insert order_once order_chain choreography orchestration"

# kind clients median min max n, one line per (kind, clients)
STATS=$(awk -F, 'NR > 1 { v[$1 SUBSEP $3] = v[$1 SUBSEP $3] " " $4 }
    END {
        for (k in v) {
            split(k, kc, SUBSEP)
            n = split(substr(v[k], 2), a, " ")
            for (i = 1; i <= n; i++) a[i] += 0
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            printf "%s %s %.6f %.6f %.6f %d\n", kc[1], kc[2], med, a[1], a[n], n
        }
    }' "$RAW" | sort -k2,2n -k1,1)

CLIENT_VALUES=$(echo "$STATS" | awk '{ print $2 }' | sort -nu)

stat() { # stat KIND CLIENTS FIELD(3 median, 4 min, 5 max, 6 n)
    echo "$STATS" | awk -v k="$1" -v c="$2" -v f="$3" '$1 == k && $2 == c { print $f }'
}
fmt() { # a rate: no decimals from 100 on, one below
    awk -v x="$1" 'BEGIN { if (x == "") print "-"; else if (x >= 100) printf "%.0f", x; else printf "%.1f", x }'
}
cell() { # median (min–max)
    local med min max
    med=$(stat "$1" "$2" 3); min=$(stat "$1" "$2" 4); max=$(stat "$1" "$2" 5)
    [ -n "$med" ] || { echo "-"; return; }
    echo "$(fmt "$med") ($(fmt "$min")–$(fmt "$max"))"
}
ratio() { # ratio of medians, as a percentage
    local a b
    a=$(stat "$1" "$3" 3); b=$(stat "$2" "$3" 3)
    awk -v a="$a" -v b="$b" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.1f%%", 100 * a / b }'
}

# --- gnuplot data ---------------------------------------------------------

{
    echo "# clients, then median min max of: $KINDS"
    for c in $CLIENT_VALUES; do
        line="$c"
        for k in $KINDS; do
            med=$(stat "$k" "$c" 3)
            if [ -n "$med" ]; then
                line="$line $med $(stat "$k" "$c" 4) $(stat "$k" "$c" 5)"
            else
                line="$line NaN NaN NaN"
            fi
        done
        echo "$line"
    done
} >"$OUT/throughput.dat"

awk -F, 'NR > 1 { p50[NR] = $5; p95[NR] = $6; p99[NR] = $7; mx[NR] = $8; name[NR] = $1 " at " $2 "/s"; n = NR }
    END {
        printf "percentile"; for (i = 2; i <= n; i++) printf " \"%s\"", name[i]; printf "\n"
        printf "p50";  for (i = 2; i <= n; i++) printf " %s", p50[i]; printf "\n"
        printf "p95";  for (i = 2; i <= n; i++) printf " %s", p95[i]; printf "\n"
        printf "p99";  for (i = 2; i <= n; i++) printf " %s", p99[i]; printf "\n"
        printf "max";  for (i = 2; i <= n; i++) printf " %s", mx[i]; printf "\n"
    }' "$LAT_CSV" >"$OUT/latency.dat"

# --- results.md -----------------------------------------------------------

CPU_MODEL=$(sed -nE 's/^model name[[:space:]]*: (.*)/\1/p' /proc/cpuinfo | head -n 1)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)

cat <<EOF
# saga benchmark, $STAMP

Orders per saga run: $ORDERS; repetitions: $REPS; clients: $CLIENTS;
baseline runs: ${BASE_SECONDS} s each; latency runs: ${LAT_SECONDS} s each; \`saga.workers\` = $WORKERS.
Whole run: ${ELAPSED} s.

## Throughput

Median of $REPS repetition(s), (min–max) in parentheses. (a) is transactions
per second; (b), (c) and the patterns are orders per second (for (c): pgbench
runs of its four-statement script, i.e. committed transactions / 4); the
patterns are sagas per second from the first placement (\`started_at\`) to the
last saga's end (\`finished_at\`), all sagas included (80% complete, 10% fail
in payment, 10% fail in inventory and are refunded).

| clients | (a) 1-row INSERT tx/s | (b) order in 1 tx | (c) order in 4 tx | choreography | orchestration |
|---:|---:|---:|---:|---:|---:|
EOF
for c in $CLIENT_VALUES; do
    echo "| $c | $(cell insert "$c") | $(cell order_once "$c") | $(cell order_chain "$c") | $(cell choreography "$c") | $(cell orchestration "$c") |"
done

cat <<EOF

Ratios of the medians above (same run, same machine): how much of the
lower bound (b) and of the naive chain of transactions (c) each pattern
achieves.

| clients | choreography / (b) | choreography / (c) | orchestration / (b) | orchestration / (c) |
|---:|---:|---:|---:|---:|
EOF
for c in $CLIENT_VALUES; do
    echo "| $c | $(ratio choreography order_once "$c") | $(ratio choreography order_chain "$c") | $(ratio orchestration order_once "$c") | $(ratio orchestration order_chain "$c") |"
done

cat <<EOF

Inside the saga runs (medians): how fast the pgbench clients placed the
orders (\`saga_place_order\` calls per second; the sagas run in the
background, so placement runs ahead of completion), how long the run took
from the first placement to the last saga's end, how many deadlocks the
server detected during the run (\`pg_stat_database.deadlocks\`; each one
has cost the waiting transaction \`deadlock_timeout\` before it was
resolved), and how many deliveries or steps failed and were tried again
(\`saga_counters().retries\`, lock timeouts of \`saga.lock_timeout\`
included; "-" if the extension has no counters). Where a pattern's
throughput is close to its placement rate, the clients were the limit,
not the workers (typically with 1 client: the workers keep up).

| clients | choreography placed/s | seconds | deadlocks | retries | orchestration placed/s | seconds | deadlocks | retries |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
median_col() { # median_col KIND CLIENTS COLUMN
    awk -F, -v k="$1" -v c="$2" -v f="$3" '$1 == k && $3 == c && $f != "" { print $f }' "$RAW" | sort -g \
        | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
for c in $CLIENT_VALUES; do
    row="| $c"
    for k in choreography orchestration; do
        r=$(median_col "$k" "$c" 9)
        row="$row | $(fmt "$(median_col "$k" "$c" 5)") | $(fmt "$(median_col "$k" "$c" 6)") | $(median_col "$k" "$c" 8) | ${r:--}"
    done
    echo "$row |"
done

xratio() { # xratio A B: A / B as "0.42×", "-" if either is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f×", a / b }'
}
TOP_CLIENTS=$(echo "$CLIENT_VALUES" | tail -n 1)
HC=${HOT_CLIENTS:-8}

if [ -n "$(stat order_once_hot "$HC" 3)" ]; then
    cat <<EOF

## Hot rows

40 customers and 20 products with ample balance and stock, quantities 1 to
3 (every order completes), $HC clients: the same rows are updated over and
over, so orders collide on row locks; (b) is the one-transaction bound on
the same rows (\`pgbench/order_once_hot.pgbench\`).

| (b) orders/s | choreography sagas/s | orchestration sagas/s | choreography / (b) | orchestration / (b) |
|---:|---:|---:|---:|---:|
| $(cell order_once_hot "$HC") | $(cell hot_choreography "$HC") | $(cell hot_orchestration "$HC") | $(xratio "$(stat hot_choreography "$HC" 3)" "$(stat order_once_hot "$HC" 3)") | $(xratio "$(stat hot_orchestration "$HC" 3)" "$(stat order_once_hot "$HC" 3)") |
EOF
fi

if [ -n "${BACKLOG_CSV:-}" ] && [ "$(wc -l <"$BACKLOG_CSV")" -gt 1 ]; then
    cat <<EOF

## Draining a backlog

The orders were placed with the workers stopped (\`saga.workers = 0\`),
$TOP_CLIENTS clients; then the workers were started. Drain rate: sagas over
the time from the workers' start to the last saga's end. Steady state: the
pattern's median throughput with $TOP_CLIENTS clients above.

| pattern | sagas | placed/s | drained in s | drain sagas/s | steady state sagas/s | drain / steady state |
|---|---:|---:|---:|---:|---:|---:|
EOF
    tail -n +2 "$BACKLOG_CSV" | while IFS=, read -r m n placed secs rate; do
        ss=$(stat "$m" "$TOP_CLIENTS" 3)
        echo "| $m | $n | $(fmt "$placed") | $secs | $rate | $(fmt "$ss") | $(xratio "$rate" "$ss") |"
    done
fi

if [ -n "${COST_MD:-}" ] && [ -s "$COST_MD" ]; then
    cat <<EOF

## What a saga costs the database

\`bench/cost.sh\` in its own cluster: counted, not timed, so these hardly
move between runs. Per order, over the tables of schemas \`saga\` and
\`bench\`: WAL bytes (\`pg_current_wal_lsn()\` delta), rows inserted and
updated, the share of updates that were HOT, rows deleted, index scans and
index fetches (\`pg_stat_user_tables\`).

EOF
    cat "$COST_MD"
fi

for f in "$OUT"/perf-*.txt; do
    [ -f "$f" ] || continue
    m=$(basename "$f" .txt); m=${m#perf-}
    printf '\n## Profile of the workers: %s\n\n```\n' "$m"
    cat "$f"
    printf '```\n'
done

# The targets of 1.2 part 4 (issue 13), from the figures above.
wal_ratio() { # wal_ratio WORKLOAD PATTERN: the "ratio to (b)" column of cost.md
    if [ -z "${COST_MD:-}" ] || [ ! -s "$COST_MD" ]; then echo "-"; return; fi
    awk -F'|' -v w="$1" -v p="$2" '{ gsub(/ /, "", $2); gsub(/ /, "", $3); gsub(/ /, "", $5) } $2 == w && $3 == p { print $5 }' "$COST_MD"
}
lat() { awk -F, -v m="$1" -v f="$2" '$1 == m { print $f }' "$LAT_CSV"; }
bl() { [ -n "${BACKLOG_CSV:-}" ] && awk -F, -v m="$1" '$1 == m { print $5 }' "$BACKLOG_CSV"; }
cat <<EOF

## Against the targets of 1.2 part 4

| target | choreography | orchestration |
|---|---:|---:|
| WAL bytes per saga ≤ 2.0× (b) (wide / hot) | $(wal_ratio wide choreography) / $(wal_ratio hot choreography) | $(wal_ratio wide orchestration) / $(wal_ratio hot orchestration) |
EOF
for c in 4 8; do
    [ -n "$(stat order_once "$c" 3)" ] || continue
    echo "| throughput ≥ 0.9× (b), $c clients | $(xratio "$(stat choreography "$c" 3)" "$(stat order_once "$c" 3)") | $(xratio "$(stat orchestration "$c" 3)" "$(stat order_once "$c" 3)") |"
done
if [ -n "$(stat order_once_hot "$HC" 3)" ]; then
    echo "| hot rows ≥ 0.7× their (b), $HC clients | $(xratio "$(stat hot_choreography "$HC" 3)" "$(stat order_once_hot "$HC" 3)") | $(xratio "$(stat hot_orchestration "$HC" 3)" "$(stat order_once_hot "$HC" 3)") |"
fi
echo "| p50 ≤ 3 ms / p99 ≤ 10 ms at half the best rate | $(lat choreography 5) / $(lat choreography 7) ms ($(lat choreography 3) clients) | $(lat orchestration 5) / $(lat orchestration 7) ms ($(lat orchestration 3) clients) |"
if [ -n "${BACKLOG_CSV:-}" ] && [ "$(wc -l <"$BACKLOG_CSV")" -gt 1 ]; then
    echo "| a backlog of ${BACKLOG} drains ≥ 0.9× steady state | $(xratio "$(bl choreography)" "$(stat choreography "$TOP_CLIENTS" 3)") | $(xratio "$(bl orchestration)" "$(stat orchestration "$TOP_CLIENTS" 3)") |"
fi

cat <<EOF

![throughput](throughput.png)

## Latency at a fixed offered rate

pgbench \`--rate\` at half of the pattern's best median throughput above, with
the client count that reached it, for ${LAT_SECONDS} s; then every saga of the
run is measured: \`finished_at - started_at\`. The placement's commit time is
not stored: \`started_at\` (\`clock_timestamp()\` when the saga row is
inserted, inside the placing transaction, a fraction of a millisecond
before its commit) stands for it.

| pattern | offered rate/s | clients | sagas | p50 ms | p95 ms | p99 ms | max ms | mean ms | placement schedule lag avg ms |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
awk -F, 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, ($11 == "" ? "-" : $11) }' "$LAT_CSV"

cat <<EOF

![latency](latency.png)

## Idle cost and the NOTIFY queue

- Idle: the $NPROCS saga processes (launcher and workers, \`pg_stat_activity.backend_type\`
  'saga launcher' / 'saga worker') used **${IDLE_CPU} CPU seconds in ${IDLE_WALL} s**
  (utime + stime from \`/proc/<pid>/stat\`) = **${IDLE_PCT}% of one core**.
- NOTIFY queue: the largest \`pg_notification_queue_usage()\` seen in
  $QUEUE_SAMPLES samples (~every 100 ms through all saga runs, throughput and
  latency) was **$QUEUE_MAX** ($QUEUE_NONZERO samples above 0).
- Server log (\`server.log\`, with \`log_lock_waits = on\`): $ERRORS lines with ERROR,
  FATAL, PANIC or WARNING; $LOG_DEADLOCKS "detected deadlock while waiting" and
  $LOG_LOCKWAITS "still waiting for" (lock waits longer than \`deadlock_timeout\`).

## Machine and settings

- CPUs (nproc): $(nproc); CPU: $CPU_MODEL
- Memory: $MEM; kernel: $(uname -r)
- Load average when the report was written: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes numbers noisy)
- PostgreSQL: $PGVERSION
- saga: extension version $EXTVERSION, source tree \`$GITREV\`
- pgbench: $(/usr/lib/postgresql/15/bin/pgbench --version), \`-M prepared\`, \`-j\` = clients, Unix socket
- Cluster: initdb defaults plus the settings below (everything not at its default):

| setting | value | source |
|---|---|---|
$SETTINGS_MD

Raw numbers: \`raw.csv\` (one line per run: kind, repetition, clients,
throughput, placement rate, seconds, orders, deadlocks, retries) and
\`latency.csv\`.
EOF
