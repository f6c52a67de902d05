#!/usr/bin/env bash
# scripts/cassert-check.sh: run the test suites against an assert-enabled
# PostgreSQL 15.
#
# Debian's PostgreSQL is built without --enable-cassert: memory that the
# extension pfree()s keeps its old contents, so a read after a free (or a
# write past a palloc'd chunk) goes unnoticed, and neither AddressSanitizer
# nor valgrind sees inside palloc's chunks.  A server configured with
# --enable-cassert turns on CLOBBER_FREED_MEMORY (freed chunks are
# overwritten with 0x7F), MEMORY_CONTEXT_CHECKING (sentinels after every
# chunk, checked when the context is reset) and every Assert() of the
# server, which catch that class of bug at once.
#
# The script
#   1. fetches PostgreSQL 15's source from Debian (apt-get source, adding a
#      deb-src entry to apt if there is none): the version installed here,
#      or else the newest that the archive serves (the same major version:
#      the extension is built and tested against the server it fetched);
#   2. builds it with --enable-cassert --enable-debug --enable-tap-tests
#      into a private prefix (several minutes; done once, then reused);
#   3. builds and installs the extension against it, in a copy of this
#      tree, and runs `make installcheck` there as the postgres OS user,
#      one kind of suite at a time (the workers suite, the pg_regress
#      suites, the isolation specs, the TAP tests), so that a failing one
#      does not keep the others from running;
#   4. looks through every server log for failed assertions (TRAP), backends
#      killed by a signal (but SIGKILL, which the crash tests send),
#      memory-context complaints and resource leaks.
# Its last line is "cassert check: passed" or "cassert check: FAILED (...)".
#
# Nothing is written to this tree: everything lives under CASSERT_DIR.  It is
# not part of CI (scripts/test.sh): building the server takes too long.
#
# Run as root (apt, and the postgres OS user for the tests).
# Usage: scripts/cassert-check.sh [--build-only | make arguments...]
#   --build-only: steps 1 and 2 only.  Make arguments replace the default
#   "installcheck", for a quicker look, e.g.
#   scripts/cassert-check.sh installcheck REGRESS='await security' \
#       REGRESS_WORKERS= ISOLATION= TAP_TESTS=
# Environment: CASSERT_DIR (default /var/tmp/saga-cassert): where the source,
#   the build and the test tree go; JOBS (default: the number of CPUs).
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"
CASSERT_DIR="${CASSERT_DIR:-/var/tmp/saga-cassert}"
JOBS="${JOBS:-$(nproc)}"
PREFIX="$CASSERT_DIR/install"
PG_CONFIG="$PREFIX/bin/pg_config"

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- env CASSERT_DIR="$CASSERT_DIR" JOBS="$JOBS" bash "$SELF" "$@"
    fi
    echo "cassert-check.sh: must run as root" >&2
    exit 1
fi

as_postgres() {
    runuser -u postgres -- env \
        -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA \
        -u PGSERVICE -u PGOPTIONS -u PGPASSWORD -u LC_ALL \
        HOME="$CASSERT_DIR" LANG=C.UTF-8 "$@"
}

mkdir -p "$CASSERT_DIR"
chown postgres: "$CASSERT_DIR"
chmod 755 "$CASSERT_DIR"

# --- 1. PostgreSQL 15's source, from Debian ----------------------------------

version="$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)"
# Upstream's source, the .orig tarball: Debian's patches move the install
# directories out of the prefix (to /usr/lib/postgresql/15/...).
srcdir="$(find "$CASSERT_DIR" -maxdepth 1 -type d -name 'postgresql-15.*' | sort -V | tail -n 1)"
if [ -z "$srcdir" ]; then
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ &&
       ! grep -qs '^deb-src' /etc/apt/sources.list; then
        echo "==> adding a deb-src entry for Debian's archive"
        cat >/etc/apt/sources.list.d/saga-cassert-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq
    # the installed version first; a mirror may lack it (the security
    # archive's sources, say): then the newest one that can be fetched
    fetched=
    for v in $( (echo "$version"; apt-cache showsrc postgresql-15 | sed -n 's/^Version: //p' | sort -rV) | awk 'NF && !seen[$0]++'); do
        echo "==> apt-get source postgresql-15=$v"
        if (cd "$CASSERT_DIR" && as_postgres apt-get source -qq --download-only "postgresql-15=$v"); then
            fetched=$v
            break
        fi
    done
    [ -n "$fetched" ] || { echo "cassert-check.sh: apt-get source postgresql-15 failed" >&2; exit 1; }
    upstream="${fetched%-*}"
    (cd "$CASSERT_DIR" && as_postgres tar -xf "postgresql-15_${upstream}.orig.tar."*)
    srcdir="$(find "$CASSERT_DIR" -maxdepth 1 -type d -name 'postgresql-15.*' | sort -V | tail -n 1)"
fi
[ -n "$srcdir" ] || { echo "cassert-check.sh: no PostgreSQL source in $CASSERT_DIR" >&2; exit 1; }

# --- 2. An assert-enabled build in a private prefix --------------------------

if [ ! -x "$PG_CONFIG" ] || ! "$PG_CONFIG" --configure | grep -q -- --enable-cassert; then
    echo "==> building PostgreSQL from $srcdir with --enable-cassert (make -j$JOBS)"
    (
        cd "$srcdir" &&
        as_postgres ./configure --prefix="$PREFIX" --enable-cassert --enable-debug \
            --enable-tap-tests --without-icu --without-llvm >"$CASSERT_DIR/configure.log" 2>&1 &&
        as_postgres make -s -j"$JOBS" >"$CASSERT_DIR/build.log" 2>&1 &&
        as_postgres make -s install >>"$CASSERT_DIR/build.log" 2>&1
    ) || {
        echo "cassert-check.sh: building PostgreSQL failed; see $CASSERT_DIR/configure.log and build.log" >&2
        exit 1
    }
fi
echo "==> $("$PG_CONFIG" --version), configured with: $("$PG_CONFIG" --configure | grep -o -- --enable-cassert)"
if [ "${1:-}" = "--build-only" ]; then
    exit 0
fi
[ "$#" -gt 0 ] || set -- installcheck

# --- 3. The extension against it, and the suites -----------------------------

TREE="$CASSERT_DIR/tree"
rm -rf "$TREE"
mkdir "$TREE"
tar -C "$ROOT" \
    --exclude=./.git --exclude='./tmp_check*' --exclude=./results \
    --exclude=./log --exclude=./regression.diffs --exclude=./regression.out \
    --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    -cf - . | tar -C "$TREE" -xf -
chown -R postgres: "$TREE"

echo "==> building the extension against the assert-enabled server"
as_postgres make -C "$TREE" --no-print-directory -s PG_CONFIG="$PG_CONFIG" \
    COPT="-Werror" all install

# Each kind of suite in a make run of its own, so that a failure in one
# does not keep the others from running; their logs are kept apart (the
# pg_regress runs write to the same log/ directory).
if [ "$#" -gt 0 ] && [ "$1" != installcheck ] || [ "$#" -gt 1 ]; then
    steps=("custom")
else
    steps=(workers regress isolation tap)
fi
LOGS="$CASSERT_DIR/logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"
: >"$CASSERT_DIR/installcheck.out"
failed_steps=()
for step in "${steps[@]}"; do
    case $step in
        custom)    args=("$@") ;;
        workers)   args=(installcheck-workers) ;;
        regress)   args=(installcheck REGRESS_WORKERS= ISOLATION= TAP_TESTS=) ;;
        isolation) args=(installcheck REGRESS= REGRESS_WORKERS= TAP_TESTS=) ;;
        tap)       args=(installcheck REGRESS= REGRESS_WORKERS= ISOLATION=) ;;
    esac
    echo "==> [$step] make ${args[*]} (as postgres, in $TREE)"
    rm -rf "$TREE/log" "$TREE/regression.diffs" "$TREE/output_iso"
    set +e
    (cd "$TREE" && as_postgres make --no-print-directory PG_CONFIG="$PG_CONFIG" \
        "${args[@]}" </dev/null) 2>&1 | tee -a "$CASSERT_DIR/installcheck.out"
    status=${PIPESTATUS[0]}
    set -e
    mkdir -p "$LOGS/$step"
    for d in log output_iso/log tmp_check/log; do
        [ -d "$TREE/$d" ] && cp -r "$TREE/$d" "$LOGS/$step/${d//\//_}"
    done
    for f in regression.diffs output_iso/regression.diffs; do
        [ -f "$TREE/$f" ] && cp "$TREE/$f" "$LOGS/$step/${f//\//_}"
    done
    [ "$status" -eq 0 ] || failed_steps+=("$step")
done

# --- 4. What the assert-enabled server said ----------------------------------

logs=()
while IFS= read -r -d '' f; do
    logs+=("$f")
done < <(find "$LOGS" -type f -name '*.log' -print0 | sort -z)

# A process killed by a signal, but for SIGKILL: the crash tests send it.
pattern='TRAP: |terminated by signal|was terminated by exception|problem in alloc set|detected write past chunk|leaked|reference leak|WARNING: .*leak'
expected='terminated by signal 9: Killed'
found=0
for f in "${logs[@]}"; do
    if grep -E "$pattern" "$f" | grep -vqF "$expected"; then
        found=1
        echo
        echo "======== ${f#"$LOGS"/} ========"
        grep -En -A8 "$pattern" "$f" | grep -vF "$expected" | head -n 200
    fi
done

echo
echo "(${#logs[@]} logs searched, kept in $LOGS; test tree in $TREE)"
for f in "$LOGS"/*/*regression.diffs; do
    [ -f "$f" ] && { echo "======== ${f#"$LOGS"/} ========"; cat "$f"; }
done
if [ "${#failed_steps[@]}" -gt 0 ] || [ "$found" -ne 0 ]; then
    echo "cassert check: FAILED (suites that failed: ${failed_steps[*]:-none}; assertion or memory reports in the logs: $([ "$found" -ne 0 ] && echo yes || echo no))"
    exit 1
fi
echo "cassert check: passed"
