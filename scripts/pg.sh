#!/usr/bin/env bash
# A PostgreSQL 15 server of the tests' own (Debian's postgresql-15; initdb and pg_ctl live in
# /usr/lib/postgresql/15/bin, off the PATH). Never a system service: initdb into a folder, a
# free loopback port, trust authentication on loopback only, stopped by `stop`.
#
#   scripts/pg.sh install              # apt-get install postgresql-15 when it is missing
#   scripts/pg.sh start <state-dir>    # writes <state-dir>/pg-env (source it): SPOOL_TEST_PG_URL
#   scripts/pg.sh stop <state-dir>
#
# initdb refuses to run as root: as root the server runs as the `postgres` user (runuser).
set -euo pipefail

PGBIN="${SPOOL_PG_BIN:-/usr/lib/postgresql/15/bin}"
die() { echo "pg: $*" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_install() {
  if [ -x "$PGBIN/initdb" ]; then
    echo "postgresql-15: already installed"
    return
  fi
  echo "== installing postgresql-15 (the cluster tests' database)"
  apt-get update -qq
  # Only the binaries: no cluster is created and no service is started.
  mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
  [ -x "$PGBIN/initdb" ] || die "postgresql-15 installed but $PGBIN/initdb is missing"
}

cmd_start() {
  local dir="${1:?state dir}"
  [ -x "$PGBIN/initdb" ] || cmd_install
  mkdir -p "$dir"
  local home data port
  # The server's own folder (as root: owned by `postgres`, who may not enter the state folder).
  home=$(mktemp -d "${TMPDIR:-/tmp}/spool-pg.XXXXXX")
  if [ "$(id -u)" = 0 ]; then chown postgres "$home"; fi
  echo "$home" >"$dir/pg-home"
  data="$home/pgdata"
  port=$(free_port)
  as_owner "$PGBIN/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/pg-initdb.log" 2>&1 \
    || { cat "$dir/pg-initdb.log" >&2; die "initdb failed"; }
  # Loopback only, no Unix socket outside the folder; a takeover never waits forever on a
  # paused owner's transaction or lock (engine-spec/cluster.md).
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$home'
max_connections = 200
fsync = on
idle_in_transaction_session_timeout = '10s'
lock_timeout = '5s'
EOF
  as_owner "$PGBIN/pg_ctl" -D "$data" -l "$home/postgres.log" -w -t 60 start >/dev/null \
    || { cat "$home/postgres.log" >&2; die "the server did not start"; }
  echo "export SPOOL_TEST_PG_URL=postgres://postgres@127.0.0.1:$port/postgres" >"$dir/pg-env"
  echo "PostgreSQL 15 on 127.0.0.1:$port (data $data)"
}

cmd_stop() {
  local dir="${1:?state dir}" home
  [ -f "$dir/pg-home" ] || return 0
  home=$(cat "$dir/pg-home")
  as_owner "$PGBIN/pg_ctl" -D "$home/pgdata" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$home"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
