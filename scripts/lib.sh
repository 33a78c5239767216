# Shared helpers of the set-up scripts: install and start what is missing.
# Debian packages; run as root or with sudo available.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  if [ -z "${_APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The redis-server binary (tests start their own servers on free ports).
ensure_redis_binary() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    log "installing redis-server"
    apt_install redis-server
  fi
}

# A Redis answering on 127.0.0.1:${REDIS_PORT:-6379}.
ensure_redis_running() {
  ensure_redis_binary
  local port=${REDIS_PORT:-6379}
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    log "starting redis-server on port $port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" \
      --appendonly no --dir /tmp --logfile "/tmp/synckairos-redis-$port.log"
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    log "redis-server did not start; see /tmp/synckairos-redis-$port.log"
    return 1
  fi
}

# A PostgreSQL answering on 127.0.0.1:5432 (used by the audit consumer).
ensure_postgres_running() {
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing postgresql"
    apt_install postgresql
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting postgresql $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.2; done
    log "postgresql did not start"
    return 1
  fi
}

# Prints a PostgreSQL URL (database `postgres`) that may create databases.
# The local server with trust auth answers as `postgres`; a fresh Debian
# install asks for a password over TCP, so a `synckairos` role with one is
# made (through the `postgres` OS user) the first time.
pg_admin_url() {
  local trust=postgres://postgres@127.0.0.1:5432/postgres
  local role=postgres://synckairos:synckairos@127.0.0.1:5432/postgres
  if psql "$trust" -qAtc 'SELECT 1' >/dev/null 2>&1; then echo "$trust"; return 0; fi
  if ! psql "$role" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    log "creating the PostgreSQL role synckairos (CREATEDB) for the local stack and the tests"
    as_root runuser -u postgres -- psql -qc \
      "DO \$\$BEGIN CREATE ROLE synckairos LOGIN CREATEDB PASSWORD 'synckairos'; EXCEPTION WHEN duplicate_object THEN NULL; END\$\$" >&2
  fi
  echo "$role"
}

# For the bench scripts: a scratch dir (`tmp`, unless set already), a fresh
# database's name and URL (`db`, `database_url`, `pg_admin`), the pids to
# stop (`pids`), and a trap that stops them, drops the database and removes
# the dir on exit. $1 names the run (the database's prefix).
bench_scaffold() {
  tmp=${tmp:-$(mktemp -d -t "bench-$1.XXXXXX")}
  pg_admin=$(pg_admin_url)
  db=${1//-/_}_$$_$RANDOM
  database_url=${pg_admin%/postgres}/$db
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
  rm -rf "$tmp"
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 30 s for URL to answer 2xx; otherwise prints the tail of the
# logs in $tmp and exits.
await_url() {
  for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "$1 not ready"
  tail -n 20 "$tmp"/*.log >&2
  exit 1
}

# The wasm target the core crate must build for.
ensure_wasm_target() {
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

# `npm ci` in the current folder (an npm project with a package-lock.json)
# unless node_modules already holds exactly what the lock file pins.
npm_ci_pinned() {
  if [ -f node_modules/.package-lock.json ] && cmp -s <(python3 -c '
import json, sys
def pins(path, top):
    d = json.load(open(path))["packages"]
    return sorted((k, v.get("version")) for k, v in d.items() if k.startswith("node_modules/"))
print(pins("package-lock.json", 1) == pins("node_modules/.package-lock.json", 0))') <(echo True); then
    return 0
  fi
  log "npm ci in $(pwd | sed "s|^$(git rev-parse --show-toplevel)/||") (pinned by its package-lock.json)"
  npm ci --silent --no-audit --no-fund
}
