#!/usr/bin/env bash
# scripts/test.sh: run every test suite of the saga extension.
#
# Runs scripts/setup.sh (packages, warning-free build, make install), copies
# this tree into a temporary directory owned by the postgres OS user and runs
# `make installcheck` there as that user (initdb refuses to run as root).
# installcheck creates its own throwaway clusters: pg_regress --temp-instance
# for the SQL suites (REGRESS, REGRESS_WORKERS in the Makefile) and
# PostgreSQL::Test::Cluster for the TAP tests in t/.
#
# On failure it prints regression.diffs, pg_regress's logs (log/: initdb and
# the temporary postmaster) and the TAP tests' logs (tmp_check*/log/), keeps
# the temporary directory for inspection and exits with make's status.  Its last line counts the tests:
# "N passed, M failed".
#
# Run as root (re-runs itself with sudo otherwise).
# Environment: PG_CONFIG (default /usr/lib/postgresql/15/bin/pg_config);
#   LOG_LINES: how many last lines of each log to print on failure (400).
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
LOG_LINES="${LOG_LINES:-400}"

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- env PG_CONFIG="$PG_CONFIG" LOG_LINES="$LOG_LINES" bash "$SELF" "$@"
    fi
    echo "test.sh: must run as root (it runs setup.sh, then the tests as the postgres user)" >&2
    exit 1
fi

"$ROOT/scripts/setup.sh"

# --- A copy of the tree owned by postgres ----------------------------------

TOP="$(mktemp -d /tmp/saga-test.XXXXXX)"
chmod 711 "$TOP"                # postgres must reach $TOP/tree
TREE="$TOP/tree"
OUT="$TOP/installcheck.out"
status=1
kept_notice=
cleanup() {
    if [ "$status" -eq 0 ]; then
        rm -rf "$TOP"
    elif [ -z "$kept_notice" ]; then
        echo "test.sh: test tree and output kept in $TOP" >&2
    fi
}
trap cleanup EXIT

mkdir "$TREE"
tar -C "$ROOT" \
    --exclude=./.git --exclude='./tmp_check*' --exclude=./results \
    --exclude=./log --exclude=./regression.diffs --exclude=./regression.out \
    --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    -cf - . | tar -C "$TREE" -xf -
chown -R postgres: "$TREE"

# --- make installcheck as postgres -----------------------------------------

echo "==> make installcheck (as postgres, in $TREE)"
set +e
(
    cd "$TREE" &&
    runuser -u postgres -- env \
        -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA \
        -u PGSERVICE -u PGOPTIONS -u PGPASSWORD -u LC_ALL \
        HOME="$TREE" LANG=C.UTF-8 \
        make --no-print-directory PG_CONFIG="$PG_CONFIG" installcheck </dev/null
) 2>&1 | tee "$OUT"
status=${PIPESTATUS[0]}
set -e

# --- Count the tests ---------------------------------------------------------
#
# pg_regress (PostgreSQL 15):  "test name   ... ok   12 ms",
#   in a parallel group "     name   ... ok   12 ms", a failure "... FAILED";
#   (PostgreSQL 16+ prints TAP: "ok 1 - name", "not ok 2 - name").
# prove: "Files=2, Tests=17, ..." counts the TAP subtests that ran; its
#   summary has one line per failed script, "t/x.pl (Wstat: 256 Tests: 5
#   Failed: 2)"; a script that failed without a failed subtest (it died, or
#   its plan was wrong) counts as one failure.
read -r passed failed < <(awk '
    /^(test |     )[^ ].* \.\.\. +ok( |$)/            { pass++; next }
    /^(test |     )[^ ].* \.\.\. +FAILED/             { fail++; next }
    /^ok [0-9]+ +[-+]/                                { pass++; next }
    /^not ok [0-9]+ /                                 { fail++; next }
    /^Files=[0-9]+, Tests=[0-9]+/ {
        n = $2; sub(/^Tests=/, "", n); sub(/,$/, "", n); tap_total += n; next
    }
    /\(Wstat: .*Tests: [0-9]+ Failed: [0-9]+\)/ {
        k = $0; sub(/.*Failed: /, "", k); sub(/\).*/, "", k)
        tap_failed_subtests += k; fail += (k > 0 ? k : 1); next
    }
    END { print pass + tap_total - tap_failed_subtests + 0, fail + 0 }
' "$OUT")

# --- Report ------------------------------------------------------------------

print_file() {
    local f=$1 lines
    lines=$(wc -l <"$f")
    echo
    echo "======== ${f#"$TREE"/} ($lines lines) ========"
    if [ "$lines" -gt "$LOG_LINES" ]; then
        echo "[... first $((lines - LOG_LINES)) lines omitted; set LOG_LINES to see more ...]"
        tail -n "$LOG_LINES" "$f"
    else
        cat "$f"
    fi
}

if [ "$status" -ne 0 ]; then
    echo
    echo "==> make installcheck FAILED (exit status $status)"
    if [ -f "$TREE/regression.diffs" ]; then
        echo
        echo "======== regression.diffs ========"
        cat "$TREE/regression.diffs"
    fi
    while IFS= read -r -d '' f; do
        print_file "$f"
    done < <(find "$TREE" \( -path "$TREE/log/*" -o -path "$TREE/tmp_check*/log/*" \) \
                  -type f -print0 | sort -z)
    echo
    echo "(make stops at the first failing suite: suites after it did not run)"
    echo "test tree and output kept in $TOP"
    kept_notice=1
    if [ "$failed" -gt 0 ]; then
        echo "$passed passed, $failed failed"
    else
        echo "FAILED: make installcheck exited with status $status; $passed tests passed before it stopped"
    fi
    exit "$status"
fi

if [ "$passed" -eq 0 ]; then
    echo "test.sh: make installcheck succeeded but no test result was found in its output" >&2
fi
echo "$passed passed, 0 failed"
