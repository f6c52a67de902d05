#!/usr/bin/env bash
# scripts/setup.sh: get a Debian bookworm machine ready to use the saga
# extension.  Installs the Debian packages needed to build and test it (only
# those missing), builds it from a clean copy of this tree with no compiler
# warnings allowed, and installs it into PostgreSQL 15 (make install).
#
# Run as root (re-runs itself with sudo otherwise).  Idempotent: a repeated
# run installs no packages and just rebuilds and reinstalls the extension.
#
# It also installs the Node.js example's dependencies (examples/node: npm ci,
# skipped when node_modules already matches package-lock.json), which
# t/007_node_example.pl needs; Debian's nodejs and npm are installed if node
# is missing.
#
# Environment: PG_CONFIG (default /usr/lib/postgresql/15/bin/pg_config).
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"

PACKAGES=(
    postgresql-15            # server, initdb, pg_ctl, psql
    postgresql-server-dev-15 # PGXS, headers, pg_regress, PostgreSQL::Test::*
    postgresql-contrib
    libipc-run-perl          # TAP tests (t/*.pl)
    libkrb5-dev              # gssapi.h, included by server headers (libpq-be.h)
    prometheus-postgres-exporter # t/019_exporter.pl scrapes examples/prometheus/saga_queries.yaml
    python3-psycopg          # t/020_python_example.pl runs examples/python/place_order.py
    make
    gcc
)

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        say "not root: re-running with sudo"
        exec sudo -- env PG_CONFIG="$PG_CONFIG" bash "$SELF" "$@"
    fi
    die "must run as root (installs packages and writes into PostgreSQL's directories); try: su -c '$SELF'"
fi

# --- Debian packages --------------------------------------------------------

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
else
    say "Debian packages already installed"
fi

[ -x "$PG_CONFIG" ] || die "$PG_CONFIG not found or not executable"

# --- Build (no warnings allowed) and install -------------------------------

# Build in a scratch copy so that object files left in the tree (possibly
# built from other sources or flags) can neither be reused nor hide warnings:
# every run compiles every file, and every warning is seen.
BUILD="$(mktemp -d /tmp/saga-build.XXXXXX)"
trap 'rm -rf "$BUILD"' EXIT

tar -C "$ROOT" \
    --exclude=./.git --exclude='./tmp_check*' --exclude=./results \
    --exclude=./log --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./examples/node/node_modules \
    -cf - . | tar -C "$BUILD" -xf -

say "building saga with $PG_CONFIG ($("$PG_CONFIG" --version))"
make -C "$BUILD" --no-print-directory PG_CONFIG="$PG_CONFIG" clean >/dev/null
if ! make -C "$BUILD" --no-print-directory PG_CONFIG="$PG_CONFIG" -j"$(nproc 2>/dev/null || echo 2)" \
        >"$BUILD/.build.log" 2>&1; then
    cat "$BUILD/.build.log" >&2
    die "build failed"
fi
if grep -q 'warning:' "$BUILD/.build.log"; then
    printf 'setup.sh: the build printed compiler warnings (none are allowed):\n' >&2
    grep -A3 'warning:' "$BUILD/.build.log" >&2
    exit 1
fi
say "build clean: no warnings"

say "installing saga into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension"
if ! make -C "$BUILD" --no-print-directory PG_CONFIG="$PG_CONFIG" install >"$BUILD/.install.log" 2>&1; then
    cat "$BUILD/.install.log" >&2
    die "make install failed"
fi

# --- The Node.js example's dependencies --------------------------------------

# t/007_node_example.pl runs examples/node/place_order.js with the packages of
# its package-lock.json, installed here in the tree (scripts/test.sh copies
# the tree, node_modules included).  npm ci only when they are missing or the
# lock file changed since the last run: a repeated run is fast and offline.
NODE_DIR="$ROOT/examples/node"
if [ -f "$NODE_DIR/package-lock.json" ]; then
    if ! command -v node >/dev/null 2>&1; then
        say "installing Debian packages: nodejs npm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends nodejs npm </dev/null
    fi
    command -v npm >/dev/null 2>&1 || die "node is installed ($(command -v node)) but npm is not: install npm"
    stamp="$NODE_DIR/node_modules/.saga-setup-lock.sha256"
    want="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$NODE_DIR/node_modules/pg/package.json" ]; then
        say "examples/node: dependencies already installed (node $(node --version))"
    else
        say "examples/node: npm ci (node $(node --version), npm $(npm --version 2>/dev/null))"
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund </dev/null) || die "npm ci failed in examples/node"
        echo "$want" >"$stamp"
    fi
fi

say "setup done"
