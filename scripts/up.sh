#!/usr/bin/env bash
# Brings the whole local stack up and shows it working.
#
# scripts/up.sh (the edge shape):
#   Redis (local, in place of Upstash) and PostgreSQL (for the audit trail),
#   upstash-local (the dev stand-in for Upstash's REST API) on :8079,
#   the built edge worker under the Workers runtime (workerd) on :8787,
#   the fan-out gateway (WebSocket, time sync, expiry) on :8788,
#   the audit consumer (streams into PostgreSQL database `synckairos`) on :8789,
# then drives a chess clock over REST while a WebSocket client watches it on
# the gateway (the `demo` of synckairos-client), and prints the session's
# audit trail from PostgreSQL.
#
# scripts/up.sh --self-hosted (the one-service shape; no wasm toolchain):
#   Redis, PostgreSQL, the native server (REST + /ws + time sync + expiry on
#   one port, scripts/serve.sh) on :8080 and the audit consumer on :8789,
#   then the same demo and audit trail against that one URL.
#
# Both shapes also start the webhook worker on :8791 (/metrics on :9093;
# docs/API.md §8). Without WEBHOOK_ENDPOINTS (or WEBHOOK_ENDPOINTS_FILE) it
# delivers to the example receiver (examples/webhook-receiver) on :8792, which
# verifies each Standard Webhooks signature and logs the events to
# .run/webhooks.jsonl; the demo's deliveries are shown after its audit trail.
# With them set, it delivers there instead (WEBHOOK_ALLOW_LOCAL=true for a
# receiver on this machine).
#
# Both shapes end with the web chess clock (examples/web-chess-clock): the SDK
# (sdk/js) is built, a static server serves the page on :8790, and two links
# are printed for a fresh session: the host's page (creates the game, sends
# the commands) and a viewer's (a read-only mirror), each with its own token.
#
# Installs what is missing (Debian packages, the pinned worker tools, Node 22);
# the services stay up afterwards: scripts/down.sh stops them. Logs and pids in .run/.
#
#   EDGE_PORT (8787), REST_PORT (8079), GATEWAY_PORT (8788), AUDIT_PORT (8789),
#   AUDIT_METRICS_PORT (9092), WEBHOOK_PORT (8791), WEBHOOK_METRICS_PORT (9093), RECEIVER_PORT (8792:
#   the example webhook receiver), SERVER_PORT (8080, self-hosted), METRICS_PORT (9091:
#   the gateway's or the native server's internal /metrics port), REDIS_PORT (6379),
#   EXAMPLE_PORT (8790: the web chess clock's static server)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

shape=edge
case "${1:-}" in
  "") ;;
  --self-hosted) shape=self-hosted ;;
  *) log "usage: scripts/up.sh [--self-hosted]"; exit 2 ;;
esac
edge_port=${EDGE_PORT:-8787} rest_port=${REST_PORT:-8079} redis_port=${REDIS_PORT:-6379}
gateway_port=${GATEWAY_PORT:-8788} audit_port=${AUDIT_PORT:-8789} server_port=${SERVER_PORT:-8080}
audit_metrics_port=${AUDIT_METRICS_PORT:-9092} example_port=${EXAMPLE_PORT:-8790}
metrics_port=${METRICS_PORT:-9091}
webhook_port=${WEBHOOK_PORT:-8791} webhook_metrics_port=${WEBHOOK_METRICS_PORT:-9093}
receiver_port=${RECEIVER_PORT:-8792} local_receiver=0
run=.run
mkdir -p "$run"

command -v curl >/dev/null || { log "installing curl"; apt_install curl; }
ensure_redis_running
ensure_postgres_running
pg_admin=$(pg_admin_url)
database_url=${pg_admin%/postgres}/synckairos
psql "$pg_admin" -qAtc "SELECT 1 FROM pg_database WHERE datname = 'synckairos'" | grep -q 1 ||
  psql "$pg_admin" -qc 'CREATE DATABASE synckairos'
if [ "$shape" = edge ]; then
  log "edge worker tools (pinned; installed only when missing) and the wasm build"
  . scripts/tools.sh
  scripts/worker-build.sh
fi
log "building the services and the demo"
cargo build -q --release --locked -p synckairos-upstash-local -p synckairos-fanout-gateway \
  -p synckairos-audit-consumer -p synckairos-webhook-worker -p synckairos-client
bin=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release

scripts/down.sh --quiet # a stack of an earlier run
# The services refuse HS256 secrets shorter than 32 bytes; this one has about
# 48 characters (an older, shorter one is replaced).
export JWT_SECRET
JWT_SECRET=$(cat "$run/jwt-secret" 2>/dev/null || true)
if [ "${#JWT_SECRET}" -lt 32 ]; then
  head -c 36 /dev/urandom | base64 | tr -d '/+=\n' >"$run/jwt-secret"
  JWT_SECRET=$(cat "$run/jwt-secret")
fi
token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')

# The audit consumer, in both shapes.
start_audit_consumer() {
  log "migrating PostgreSQL and starting the audit consumer on 127.0.0.1:$audit_port"
  export DATABASE_URL=$database_url
  "$bin/audit-consumer" migrate 2>>"$run/audit-consumer.log"
  REDIS_URL=redis://127.0.0.1:$redis_port/ LISTEN=127.0.0.1:$audit_port \
    METRICS_LISTEN=127.0.0.1:$audit_metrics_port nohup "$bin/audit-consumer" run >"$run/audit-consumer.log" 2>&1 </dev/null &
  echo $! >"$run/audit-consumer.pid"
  start_webhook_worker
}

# The webhook worker (after the audit consumer: its migrations are the same
# set, already applied). Without configured endpoints, the example receiver is
# its endpoint, with a fresh secret.
start_webhook_worker() {
  if [ -z "${WEBHOOK_ENDPOINTS:-}${WEBHOOK_ENDPOINTS_FILE:-}" ]; then
    SK_TOOLS=node . scripts/tools.sh # Node >= 22 for the receiver
    local secret
    secret=whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')
    : >"$run/webhooks.jsonl"
    log "starting the example webhook receiver on 127.0.0.1:$receiver_port (deliveries in $run/webhooks.jsonl)"
    WEBHOOK_SECRET=$secret nohup node examples/webhook-receiver/server.mjs --port "$receiver_port" \
      --log "$run/webhooks.jsonl" >"$run/webhook-receiver.log" 2>&1 </dev/null &
    echo $! >"$run/webhook-receiver.pid"
    export WEBHOOK_ALLOW_LOCAL=true WEBHOOK_ENDPOINTS="[{\"id\":\"local-receiver\",\"url\":\"http://127.0.0.1:$receiver_port/hook\",\"secrets\":[\"$secret\"],\"events\":[\"participant_switched\",\"session_completed\",\"session_expired\",\"low_time_warning\"]}]"
    local_receiver=1
  fi
  log "starting the webhook worker on 127.0.0.1:$webhook_port"
  REDIS_URL=redis://127.0.0.1:$redis_port/ LISTEN=127.0.0.1:$webhook_port \
    METRICS_LISTEN=127.0.0.1:$webhook_metrics_port nohup "$bin/webhook-worker" run >"$run/webhook-worker.log" 2>&1 </dev/null &
  echo $! >"$run/webhook-worker.pid"
  await_ready "http://127.0.0.1:$webhook_port/ready"
}

# What the example receiver got for the demo's session $sid: every event of
# it the worker delivered, each signature verified.
show_webhooks() {
  [ "$local_receiver" = 1 ] || return 0
  local mine="\"session_id\":\"$sid\""
  for _ in $(seq 50); do # the demo ends with `complete`: wait for its delivery
    grep "$mine" "$run/webhooks.jsonl" | grep -q '"type":"session_completed"' && break
    sleep 0.1
  done
  echo
  echo "Webhooks: the example receiver (examples/webhook-receiver) got these events of session $sid, each signature verified:"
  grep "$mine" "$run/webhooks.jsonl" |
    python3 -c 'import json, sys
for l in sys.stdin:
    e = json.loads(l)
    print("  v%-3s %-22s %s  received %s" % (e["version"], e["type"], e["webhook_id"], e["received_at"]))'
}

# Waits for each URL's /ready; on a timeout shows the logs and fails.
await_ready() {
  for url in "$@"; do
    for _ in $(seq 100); do
      curl -sf "$url" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -sf "$url" >/dev/null || {
      log "the stack did not become ready ($url); logs in $run/"
      tail -n 20 "$run"/*.log >&2
      exit 1
    }
  done
}

# How to try the API at $1 by hand: a ready-made admin token (the `token`
# command mints others) and a curl line.
try_it() {
  local admin
  admin=$("$bin/token" --role admin --sub you --ttl-secs 86400 --secret-file "$run/jwt-secret")
  cat <<TXT

Try it by hand, with an admin token valid for 24 h:
  export TOKEN=$admin
  curl -s $1/v1/sessions/$sid -H "Authorization: Bearer \$TOKEN"
  (other roles and sessions: cargo run -q -p synckairos-client --bin token -- --role viewer --sid <id>)
TXT
}

# The demo against REST at $1 and WebSocket at $2, then the audit trail.
demo() {
  "$bin/demo" --base-url "$1" --gateway "$2" | tee "$run/demo.out"
  sid=$(sed -n 's/^session \([0-9a-f-]*\):.*/\1/p' "$run/demo.out" | head -n 1)
  log "the session's audit trail, from PostgreSQL (audit-consumer timeline $sid)"
  for _ in $(seq 100); do
    "$bin/audit-consumer" timeline "$sid" 2>/dev/null | grep -q session_completed && break
    sleep 0.1
  done
  "$bin/audit-consumer" timeline "$sid"
}

# The web chess clock against REST at $1 and the gateway at $2: builds the SDK,
# serves the page, and prints a host link and a viewer link for a fresh
# session. The token rides in the URL fragment, which never reaches a server.
web_example() {
  log "the web chess clock: building the SDK (sdk/js) and serving the page on 127.0.0.1:$example_port"
  SK_TOOLS=node . scripts/tools.sh # Node >= 22 (the edge shape has it already)
  if ! (
    cd sdk/js
    npm_ci_pinned
    npm run --silent build
  ) >"$run/sdk-build.log" 2>&1; then
    tail -n 20 "$run/sdk-build.log" >&2
    log "the SDK did not build (log in $run/sdk-build.log): no web chess clock this time; the stack is up"
    return 0
  fi
  nohup node examples/web-chess-clock/serve.mjs --port "$example_port" >"$run/web-example.log" 2>&1 </dev/null &
  echo $! >"$run/web-example.pid"
  await_ready "http://127.0.0.1:$example_port/synckairos/index.js"
  local game host viewer fragment
  game=$(python3 -c 'import uuid; print(uuid.uuid4())')
  host=$("$bin/token" --role host --sid "$game" --sub host --ttl-secs 86400 --secret-file "$run/jwt-secret")
  viewer=$("$bin/token" --role viewer --sid "$game" --sub viewer --ttl-secs 86400 --secret-file "$run/jwt-secret")
  fragment="api=$1&ws=$2&session=$game"
  cat <<TXT

The web chess clock (examples/web-chess-clock), session $game, tokens valid for 24 h:
  host   (creates the game; tap a clock or press Space to switch):
    http://127.0.0.1:$example_port/#$fragment&token=$host
  viewer (a read-only mirror; open it in another window or browser):
    http://127.0.0.1:$example_port/viewer.html#$fragment&token=$viewer
TXT
}

if [ "$shape" = self-hosted ]; then
  log "starting the native server on 127.0.0.1:$server_port (REST + /ws + time sync + expiry; JWT auth)"
  SERVER_BIN=$bin/fanout-gateway REDIS_URL=redis://127.0.0.1:$redis_port/ \
    LISTEN=127.0.0.1:$server_port METRICS_LISTEN=127.0.0.1:$metrics_port RUST_LOG=warn nohup scripts/serve.sh >"$run/server.log" 2>&1 </dev/null &
  echo $! >"$run/server.pid"
  start_audit_consumer
  await_ready "http://127.0.0.1:$server_port/ready" "http://127.0.0.1:$audit_port/ready"
  log "demo: a chess clock over REST, watched over WebSocket, both on http://127.0.0.1:$server_port"
  demo "http://127.0.0.1:$server_port" "ws://127.0.0.1:$server_port"
  show_webhooks
  try_it "http://127.0.0.1:$server_port"
  cat <<TXT

The self-hosted stack is up:
  SyncKairos     http://127.0.0.1:$server_port   (REST /v1/..., WebSocket /ws?sessionId=<id>&token=<JWT>, /v1/openapi.json)
                 metrics on the internal port: http://127.0.0.1:$metrics_port/metrics
                 JWT HS256 secret in $run/jwt-secret
  audit consumer http://127.0.0.1:$audit_metrics_port/metrics   (audit-consumer timeline|restore <id>, DATABASE_URL=$database_url)
  redis          127.0.0.1:$redis_port;  postgresql 127.0.0.1:5432 (database synckairos)
Stop it with scripts/down.sh.
TXT
  web_example "http://127.0.0.1:$server_port" "ws://127.0.0.1:$server_port"
  exit 0
fi

log "starting upstash-local on 127.0.0.1:$rest_port (Redis 127.0.0.1:$redis_port)"
UPSTASH_LOCAL_TOKEN=$token UPSTASH_LOCAL_LISTEN=127.0.0.1:$rest_port \
  UPSTASH_LOCAL_REDIS_URL=redis://127.0.0.1:$redis_port/ RUST_LOG=warn \
  nohup "$bin/upstash-local" >"$run/upstash-local.log" 2>&1 </dev/null &
echo $! >"$run/upstash-local.pid"

log "starting the edge worker under workerd on 127.0.0.1:$edge_port (JWT auth)"
UPSTASH_REDIS_REST_URL=http://127.0.0.1:$rest_port UPSTASH_REDIS_REST_TOKEN=$token \
  AUTH_MODE=jwt nohup scripts/workerd.sh --port "$edge_port" >"$run/workerd.log" 2>&1 </dev/null &
echo $! >"$run/workerd.pid"

log "starting the fan-out gateway on 127.0.0.1:$gateway_port (WebSocket only: REST_API=off)"
REDIS_URL=redis://127.0.0.1:$redis_port/ LISTEN=127.0.0.1:$gateway_port \
  METRICS_LISTEN=127.0.0.1:$metrics_port AUTH_MODE=jwt REST_API=off \
  nohup "$bin/fanout-gateway" >"$run/fanout-gateway.log" 2>&1 </dev/null &
echo $! >"$run/fanout-gateway.pid"
start_audit_consumer
await_ready "http://127.0.0.1:$edge_port/ready" "http://127.0.0.1:$gateway_port/ready" \
  "http://127.0.0.1:$audit_port/ready"

log "demo: a chess clock over REST through the edge worker, watched over WebSocket"
demo "http://127.0.0.1:$edge_port" "ws://127.0.0.1:$gateway_port"
show_webhooks
try_it "http://127.0.0.1:$edge_port"

cat <<TXT

The stack is up:
  edge worker    http://127.0.0.1:$edge_port   (GET /v1/openapi.json; JWT HS256 secret in $run/jwt-secret)
  gateway        ws://127.0.0.1:$gateway_port/ws?sessionId=<id>&token=<JWT>   (also /v1/time)
                 metrics on the internal port: http://127.0.0.1:$metrics_port/metrics
  audit consumer http://127.0.0.1:$audit_metrics_port/metrics   (audit-consumer timeline|restore <id>, DATABASE_URL=$database_url)
  upstash-local  http://127.0.0.1:$rest_port   (token: $token)
  redis          127.0.0.1:$redis_port;  postgresql 127.0.0.1:5432 (database synckairos)
Stop it with scripts/down.sh.
TXT
web_example "http://127.0.0.1:$edge_port" "ws://127.0.0.1:$gateway_port"
