#!/usr/bin/env bash
# Contract check: the OpenAPI document (/v1/openapi.json) says exactly what
# the server accepts and answers. Schemathesis generates requests from the
# document and runs every check on the answers (--checks all: no server
# error, documented statuses, content types, headers and bodies, schema-
# violating requests refused, valid ones accepted, unsupported methods 405,
# auth not ignored, ...), against both transports, each on a private
# redis-server on free ports:
#   native  the native server (fanout-gateway, REST_API=on);
#   edge    the built worker under workerd, over upstash-local
#           (scripts/worker-build.sh must have run; scripts/test.sh does).
# Each runs with AUTH_MODE=jwt and an admin token, and with the general
# per-address limit raised (IP_RATE_LIMIT=1000000): every request comes from
# one address, and the limit itself is tested elsewhere. Any failure or
# server error fails the script.
#
# Where the contract answers a schema-valid request with a refusal no schema
# can express (a command the session's status refuses, ...), the expected
# statuses are widened in scripts/schemathesis.toml, which says why.
# Schemathesis is installed once, pinned, into a virtualenv outside the clone.
#
#   scripts/schemathesis.sh [native|edge ...]   (default: both)
#   SCHEMATHESIS_MAX_EXAMPLES (default 30): test cases per operation and phase
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

version=4.32.5
venv=${XDG_CACHE_HOME:-$HOME/.cache}/synckairos/venv-schemathesis
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-30}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(native edge)
for t in "${targets[@]}"; do
  case "$t" in native | edge) ;; *) log "usage: scripts/schemathesis.sh [native|edge ...]"; exit 2 ;; esac
done

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $version"; then
  log "installing schemathesis $version into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv # Debian ships venv's ensurepip separately
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check --no-input "schemathesis==$version"
fi
ensure_redis_binary
command -v curl >/dev/null || apt_install curl

cargo build -q --locked -p synckairos-fanout-gateway -p synckairos-upstash-local -p synckairos-client
bin=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug

tmp=$(mktemp -d -t schemathesis.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
await() {
  for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "$1 did not come up"; tail -n 30 "$tmp"/*.log >&2; exit 1
}

export JWT_SECRET
JWT_SECRET=$(head -c 36 /dev/urandom | base64 | tr -d '/+=\n')
export AUTH_MODE=jwt IP_RATE_LIMIT=1000000 RUST_LOG=warn
token=$("$bin/token" --role admin --sub schemathesis --ttl-secs 3600)

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  --logfile "$tmp/redis.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

run() { # $1 name, $2 base URL
  log "schemathesis $version on the $1 server at $2: --checks all, up to $max_examples examples per operation and phase, IP_RATE_LIMIT=$IP_RATE_LIMIT (raised: one client address sends everything)"
  "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$2/v1/openapi.json" --url "$2" \
    --checks all --max-examples "$max_examples" --seed 20261202 --workers 1 \
    --header "Authorization: Bearer $token" \
    --request-timeout 10 --no-color </dev/null
}

for t in "${targets[@]}"; do
  if [ "$t" = native ]; then
    port=$(free_port)
    REDIS_URL=redis://127.0.0.1:$redis_port/ LISTEN=127.0.0.1:$port \
      METRICS_LISTEN=127.0.0.1:$(free_port) REST_API=on "$bin/fanout-gateway" >"$tmp/native.log" 2>&1 &
    pids+=($!)
    await "http://127.0.0.1:$port/ready"
    run native "http://127.0.0.1:$port"
  else
    rest_port=$(free_port) port=$(free_port)
    UPSTASH_LOCAL_TOKEN=schemathesis UPSTASH_LOCAL_LISTEN=127.0.0.1:$rest_port \
      UPSTASH_LOCAL_REDIS_URL=redis://127.0.0.1:$redis_port/ "$bin/upstash-local" >"$tmp/upstash-local.log" 2>&1 &
    pids+=($!)
    await "http://127.0.0.1:$rest_port/health"
    UPSTASH_REDIS_REST_URL=http://127.0.0.1:$rest_port UPSTASH_REDIS_REST_TOKEN=schemathesis \
      scripts/workerd.sh --port "$port" >"$tmp/workerd.log" 2>&1 &
    pids+=($!)
    await "http://127.0.0.1:$port/ready"
    run edge "http://127.0.0.1:$port"
  fi
done
log "schemathesis: no failures (${targets[*]})"
