#!/usr/bin/env bash
# Install, start and stop the local S3 test servers used by the storage tests:
#   s3s-fs 0.14.1 (checks SigV4, objects are files under a root folder) and
#   moto[server] 5.2.5 (broader S3 semantics, does NOT check signatures).
# See /work/shared/emulators.md for what was verified against object_store.
#
#   scripts/storage-servers.sh install
#   scripts/storage-servers.sh start <state-dir>      # writes <state-dir>/env (source it)
#   scripts/storage-servers.sh make-bucket <state-dir> <s3s|moto> <bucket>
#   scripts/storage-servers.sh stop <state-dir>
#
# Tools live outside the checkout in ${SPOOL_TOOLS_DIR:-$HOME/.cache/spool-tools}.
# Ports: ${SPOOL_MOTO_PORT:-9000}, ${SPOOL_S3S_PORT:-8014}; both bind 127.0.0.1 only.
set -euo pipefail

TOOLS="${SPOOL_TOOLS_DIR:-$HOME/.cache/spool-tools}"
MOTO_VERSION="5.2.5"
S3S_VERSION="0.14.1"   # 0.17.x needs rustc >= 1.96
MOTO_PORT="${SPOOL_MOTO_PORT:-9000}"
S3S_PORT="${SPOOL_S3S_PORT:-8014}"
S3S_ACCESS_KEY="AKIAEMULATOR"
S3S_SECRET_KEY="emulatorsecret"
HOST="127.0.0.1"

MOTO_BIN="$TOOLS/venv/bin/moto_server"
S3S_BIN="$TOOLS/cargo-root/bin/s3s-fs"

die() { echo "storage-servers: $*" >&2; exit 1; }
usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
now_ms() { date +%s%3N; }
secs_since() { # start_ms -> "S.mmm"
  local d=$(( $(now_ms) - $1 ))
  printf '%d.%03d' $((d / 1000)) $((d % 1000))
}

cmd_install() {
  mkdir -p "$TOOLS"
  local t

  t=$(now_ms)
  if [ -x "$MOTO_BIN" ] && "$TOOLS/venv/bin/python" -c \
      "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
    echo "moto $MOTO_VERSION: already installed ($(secs_since "$t") s)"
  else
    [ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    echo "moto $MOTO_VERSION: pip install took $(secs_since "$t") s"
  fi

  t=$(now_ms)
  if [ -x "$S3S_BIN" ]; then
    echo "s3s-fs: already installed at $S3S_BIN ($(secs_since "$t") s)"
  else
    # Built outside the checkout (own target dir, toolchain of $TOOLS, not the project's
    # rust-toolchain.toml), niced and with ${CARGO_BUILD_JOBS:-1} jobs by default.
    (cd "$TOOLS" && CARGO_TARGET_DIR="$TOOLS/cargo-target" CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" \
      nice -n 10 cargo install "s3s-fs@$S3S_VERSION" --locked --features binary --root "$TOOLS/cargo-root")
    echo "s3s-fs $S3S_VERSION: cargo install took $(secs_since "$t") s"
  fi
}

port_in_use() { # port -> 0 if something accepts connections on HOST:port
  python3 - "$HOST" "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
sys.exit(0)
EOF
}

wait_http() { # name url pid logfile -> waits up to 30 s for any HTTP answer
  local name=$1 url=$2 pid=$3 log=$4 i
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "storage-servers: $name (pid $pid) exited during startup; last log lines:" >&2
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    # Any HTTP status counts (s3s-fs answers an unsigned GET / with 403); 000 = no answer yet.
    if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)" != "000" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "storage-servers: $name did not answer on $url within 30 s; see $log" >&2
  return 1
}

cmd_start() {
  local state=$1
  [ -x "$MOTO_BIN" ] || die "moto not installed ($MOTO_BIN); run: $0 install"
  [ -x "$S3S_BIN" ] || die "s3s-fs not installed ($S3S_BIN); run: $0 install"
  mkdir -p "$state/pids" "$state/logs" "$state/s3s-root"
  state=$(cd "$state" && pwd)

  for name in moto s3s; do
    [ -f "$state/pids/$name.pid" ] && kill -0 "$(cat "$state/pids/$name.pid")" 2>/dev/null &&
      die "$name already running from $state (pid $(cat "$state/pids/$name.pid")); run: $0 stop $state"
  done
  port_in_use "$MOTO_PORT" && die "port $HOST:$MOTO_PORT (moto) is already in use; stop that process or set SPOOL_MOTO_PORT"
  port_in_use "$S3S_PORT" && die "port $HOST:$S3S_PORT (s3s-fs) is already in use; stop that process or set SPOOL_S3S_PORT"

  local t pid
  t=$(now_ms)
  "$MOTO_BIN" -H "$HOST" -p "$MOTO_PORT" >"$state/logs/moto.log" 2>&1 &
  pid=$!
  echo "$pid" >"$state/pids/moto.pid"
  if ! wait_http moto "http://$HOST:$MOTO_PORT/moto-api/" "$pid" "$state/logs/moto.log"; then
    cmd_stop "$state" >/dev/null 2>&1 || true
    exit 1
  fi
  echo "moto   on http://$HOST:$MOTO_PORT (pid $pid) up in $(secs_since "$t") s"

  t=$(now_ms)
  RUST_LOG=warn "$S3S_BIN" --host "$HOST" --port "$S3S_PORT" \
    --access-key "$S3S_ACCESS_KEY" --secret-key "$S3S_SECRET_KEY" "$state/s3s-root" \
    >"$state/logs/s3s-fs.log" 2>&1 &
  pid=$!
  echo "$pid" >"$state/pids/s3s.pid"
  if ! wait_http s3s-fs "http://$HOST:$S3S_PORT/" "$pid" "$state/logs/s3s-fs.log"; then
    cmd_stop "$state" >/dev/null 2>&1 || true
    exit 1
  fi
  echo "s3s-fs on http://$HOST:$S3S_PORT (pid $pid) up in $(secs_since "$t") s"

  cat >"$state/env" <<EOF
export SPOOL_TEST_S3S_ENDPOINT=http://$HOST:$S3S_PORT
export SPOOL_TEST_S3S_ROOT=$state/s3s-root
export SPOOL_TEST_S3S_ACCESS_KEY=$S3S_ACCESS_KEY
export SPOOL_TEST_S3S_SECRET_KEY=$S3S_SECRET_KEY
export SPOOL_TEST_MOTO_ENDPOINT=http://$HOST:$MOTO_PORT
EOF
  echo "env: $state/env"
}

cmd_stop() {
  local state=$1 f pid i
  [ -d "$state/pids" ] || { echo "nothing to stop in $state"; return 0; }
  for f in "$state"/pids/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "$(basename "$f" .pid) (pid $pid) ignored TERM for 5 s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      echo "stopped $(basename "$f" .pid) (pid $pid)"
    fi
    rm -f "$f"
  done
}

cmd_make_bucket() {
  local state=$1 kind=$2 bucket=$3 code
  case "$kind" in
    s3s)
      # An s3s-fs bucket is a sub-directory of its root (works before or while it runs).
      mkdir -p "$state/s3s-root/$bucket"
      echo "s3s bucket $bucket: $state/s3s-root/$bucket"
      ;;
    moto)
      # moto does not check signatures, so an unsigned CreateBucket is fine.
      code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -X PUT "http://$HOST:$MOTO_PORT/$bucket" || true)
      case "$code" in
        200) echo "moto bucket $bucket: created" ;;
        409) echo "moto bucket $bucket: already exists" ;;
        *) die "moto CreateBucket $bucket answered HTTP $code (is moto running on :$MOTO_PORT?)" ;;
      esac
      ;;
    *) die "make-bucket: kind must be s3s or moto, got '$kind'" ;;
  esac
}

case "${1:-}" in
  install) [ $# -eq 1 ] || usage; cmd_install ;;
  start) [ $# -eq 2 ] || usage; cmd_start "$2" ;;
  stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  make-bucket) [ $# -eq 4 ] || usage; cmd_make_bucket "$2" "$3" "$4" ;;
  *) usage ;;
esac
