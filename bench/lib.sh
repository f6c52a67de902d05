# bench/lib.sh: what bench/run.sh and bench/retention.sh share, a throwaway
# PostgreSQL 15 cluster run by the postgres OS user under /tmp.
#
# Sourced, not run.  The caller defines PGBIN and die(), then:
#   PORT=$(free_port FIRST)        the first port from FIRST nobody uses
#   cluster_make PREFIX            TMP (a fresh directory under /tmp, for the
#                                  postgres user), DATA, LOG; initdb
#   cluster_start SETTING...       postgresql.conf lines, then start; PSQL
#   wait_workers DB N              until N saga workers serve DB
#   cluster_stop                   fast, else immediate; in the EXIT trap
# and runs commands as the cluster's user with as_postgres.

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    [ -e "/tmp/.s.PGSQL.$1.lock" ] || [ -e "/var/run/postgresql/.s.PGSQL.$1.lock" ] && return 0
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$1" >/dev/null 2>&1 && return 0
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    return 1
}

free_port() {
    local port=$1 i
    for i in $(seq 1 100); do
        port_in_use "$port" || { echo "$port"; return 0; }
        port=$((port + 1))
    done
    return 1
}

# Runs a command as postgres in $TMP, with none of the caller's libpq
# settings.
as_postgres() {
    (cd "$TMP" && runuser -u postgres -- env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \
        -u PGDATA -u PGSERVICE -u PGOPTIONS -u LC_ALL LANG=C.UTF-8 HOME="$TMP" "$@")
}

# Under /tmp: the postgres user must reach it, and the socket path must be
# short.
cluster_make() {
    TMP="$(mktemp -d "/tmp/$1.XXXXXX")"
    DATA="$TMP/data"
    LOG="$TMP/server.log"
    chown postgres: "$TMP"
    chmod 755 "$TMP"
    as_postgres "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-instructions \
        >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
}

cluster_start() {
    {
        echo
        echo "# $(basename "$0")"
        echo "port = $PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$TMP'"
        printf '%s\n' "$@"
    } >>"$DATA/postgresql.conf"
    as_postgres "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 120 start >/dev/null || die "the server did not start"
    PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres)
}

wait_workers() {
    local db=$1 want=$2 i n
    for i in $(seq 1 600); do
        n=$(as_postgres "${PSQL[@]}" -d "$db" -At -c \
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'saga worker' AND datname = '$db'")
        [ "$n" -ge "$want" ] && return 0
        sleep 0.1
    done
    die "the saga workers of database $db did not start ($n of $want)"
}

cluster_stop() {
    if [ -n "${DATA:-}" ] && [ -f "$DATA/postmaster.pid" ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
            || as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}
