#!/usr/bin/env bash
# Checks what operators run against the services: the Prometheus rules
# (deploy/prometheus/alerts.yml), their unit tests, the Grafana dashboards
# (deploy/grafana/*.json) and the runbook (docs/RUNBOOK.md).
#
#   1. `promtool check config` of deploy/prometheus/prometheus.yml (which
#      checks alerts.yml too) and `promtool test rules` of alerts.test.yml;
#   2. a live scrape: starts the native services on free ports, on a
#      redis-server of its own and a fresh PostgreSQL database (the native
#      server with REST_API=on, the audit consumer, the webhook worker with an
#      endpoint and the push sender configured, and the edge exporter against
#      a stand-in for the Analytics Engine SQL API, scripts/fake-analytics-sql.py),
#      sends a few REST commands, scrapes every /metrics, and fails listing
#      each metric that a rule, a panel or a dashboard variable names and no
#      service exports (scripts/check-ops-names.py; recording rules are not
#      metrics, and histogram _bucket/_sum/_count are read as the scrape has
#      them); it also fails for an alert without a test that fires it or
#      without its runbook section.
#
# Installs what is missing (promtool: Debian's prometheus package at the
# version scripts/tools.sh pins; redis-server; postgresql); builds the four
# binaries (debug, as `cargo test` does). Fails loudly, with the service's
# log, when a service does not become ready or its /metrics cannot be read.
# scripts/test.sh runs it. About 20 s once the binaries are built.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

t0=$SECONDS
SK_TOOLS=promtool . scripts/tools.sh
python3 -c 'import yaml' 2>/dev/null || { log "installing python3-yaml"; apt_install python3-yaml; }
command -v curl >/dev/null || { log "installing curl"; apt_install curl; }
command -v openssl >/dev/null || { log "installing openssl"; apt_install openssl; }

log "promtool: the rules and the example configuration"
promtool check config deploy/prometheus/prometheus.yml
log "promtool: the rules' unit tests (deploy/prometheus/alerts.test.yml)"
promtool test rules deploy/prometheus/alerts.test.yml
python3 scripts/check-ops-names.py --self-test

log "the live scrape: building the services"
cargo build -q --locked -p synckairos-fanout-gateway -p synckairos-audit-consumer -p synckairos-webhook-worker \
  -p synckairos-edge-exporter
bin=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug

ensure_redis_binary
ensure_postgres_running
work=$(mktemp -d)
pids=()
pg_admin=$(pg_admin_url)
db=sk_ops_check_$$
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts "$@" in the background with its output in $work/$name.log.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
# Waits for http://127.0.0.1:$2/ready; on a timeout shows $1's log and fails.
await_ready() {
  for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$2/ready" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "$1 did not become ready on 127.0.0.1:$2 within 30 s; its log:"
  tail -n 40 "$work/$1.log" >&2
  exit 1
}

redis_port=$(free_port)
start redis redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
psql "$pg_admin" -qc "CREATE DATABASE $db"
export REDIS_URL=redis://127.0.0.1:$redis_port/ DATABASE_URL=${pg_admin%/postgres}/$db RUST_LOG=warn

server_port=$(free_port) server_metrics=$(free_port)
audit_port=$(free_port) audit_metrics=$(free_port)
webhook_port=$(free_port) webhook_metrics=$(free_port)
closed_port=$(free_port) # nothing listens: deliveries fail, and are counted
edge_port=$(free_port) edge_metrics=$(free_port) sql_port=$(free_port)

log "starting the native server, the audit consumer, the webhook worker (with push) and the edge exporter"
LISTEN=127.0.0.1:$server_port METRICS_LISTEN=127.0.0.1:$server_metrics AUTH_MODE=disabled REST_API=on \
  start server "$bin/fanout-gateway"
"$bin/audit-consumer" migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; exit 1; }
LISTEN=127.0.0.1:$audit_port METRICS_LISTEN=127.0.0.1:$audit_metrics start audit "$bin/audit-consumer" run
# A service account with a fresh key: the push sender starts (its metrics
# are served), and nothing is ever sent, since no device is registered.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/fcm.pem" 2>/dev/null
python3 - "$work/fcm.pem" "$closed_port" >"$work/fcm.json" <<'PY'
import json, sys
print(json.dumps({"type": "service_account", "project_id": "ops-check", "private_key_id": "k1",
                  "private_key": open(sys.argv[1]).read(), "client_email": "ops-check@example.invalid",
                  "token_uri": f"http://127.0.0.1:{sys.argv[2]}/token"}))
PY
secret=whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')
WEBHOOK_ENDPOINTS="[{\"id\":\"ops-check\",\"url\":\"http://127.0.0.1:$closed_port/hook\",\"secrets\":[\"$secret\"],\"events\":[\"participant_switched\",\"session_completed\",\"session_expired\",\"low_time_warning\"]}]" \
  WEBHOOK_ALLOW_LOCAL=true FCM_SERVICE_ACCOUNT_FILE=$work/fcm.json FCM_SEND_URL=http://127.0.0.1:$closed_port/send \
  LISTEN=127.0.0.1:$webhook_port METRICS_LISTEN=127.0.0.1:$webhook_metrics start webhook-worker "$bin/webhook-worker" run
# The edge exporter, querying a stand-in for the SQL API every second with
# no lag: it is ready once a query has been answered.
sql_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
start sql-api python3 scripts/fake-analytics-sql.py "$sql_port" "$sql_token"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$sql_port/" && break; sleep 0.1; done
CF_ACCOUNT_ID=opscheck CF_API_TOKEN=$sql_token SCRAPE_INTERVAL_SECONDS=1 LAG_SECONDS=0 \
  ANALYTICS_SQL_URL="http://127.0.0.1:$sql_port/client/v4/accounts/{account}/analytics_engine/sql" \
  LISTEN=127.0.0.1:$edge_port METRICS_LISTEN=127.0.0.1:$edge_metrics start edge-exporter "$bin/edge-exporter"
await_ready server "$server_port"
await_ready audit "$audit_port"
await_ready webhook-worker "$webhook_port"
await_ready edge-exporter "$edge_port"

# A few commands, so that the REST series (by route and status) have samples.
api=http://127.0.0.1:$server_port
sid=$(python3 -c 'import uuid; print(uuid.uuid4())')
p1=$(python3 -c 'import uuid; print(uuid.uuid4())') p2=$(python3 -c 'import uuid; print(uuid.uuid4())')
call() { curl -s -o /dev/null -w '%{http_code}' -X "$1" -H 'content-type: application/json' ${3:+-d "$3"} "$api$2"; }
codes=$(
  call POST /v1/sessions "{\"session_id\":\"$sid\",\"sync_mode\":\"per_participant\",\"total_time_ms\":60000,\"participants\":[{\"participant_id\":\"$p1\",\"participant_index\":0,\"total_time_ms\":60000},{\"participant_id\":\"$p2\",\"participant_index\":1,\"total_time_ms\":60000}]}"
  echo -n " "; call POST "/v1/sessions/$sid/start" '{}'
  echo -n " "; call POST "/v1/sessions/$sid/switch" '{}'
  echo -n " "; call GET "/v1/sessions/$sid"
  echo -n " "; call GET /v1/elsewhere
)
[ "$codes" = "201 200 200 200 404" ] || {
  log "the REST commands answered $codes (expected 201 200 200 200 404); the server's log:"
  tail -n 40 "$work/server.log" >&2
  exit 1
}

log "scraping every service's /metrics"
for target in "server:$server_metrics" "audit:$audit_metrics" "webhook-worker:$webhook_metrics" \
  "edge-exporter:$edge_metrics"; do
  name=${target%%:*} port=${target##*:}
  curl -sf "http://127.0.0.1:$port/metrics" >"$work/$name.prom" || {
    log "cannot scrape $name at http://127.0.0.1:$port/metrics; its log:"
    tail -n 40 "$work/$name.log" >&2
    exit 1
  }
done
python3 scripts/check-ops-names.py deploy/prometheus/alerts.yml deploy/prometheus/alerts.test.yml \
  docs/RUNBOOK.md deploy/grafana "$work/server.prom" "$work/audit.prom" "$work/webhook-worker.prom" \
  "$work/edge-exporter.prom"
log "ops checks passed ($((SECONDS - t0)) s)"
