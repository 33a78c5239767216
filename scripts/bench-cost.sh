#!/usr/bin/env bash
# What a whole self-hosted stack costs in Redis commands: a private
# redis-server, the native server (REST + /ws + expiry) and the audit
# consumer draining into a fresh PostgreSQL database, every client-issued
# command counted with MONITOR (commands a script runs inside Redis are not
# counted: a per-command bill counts one EVALSHA as one command). Three
# phases, each probed (/ready every 10 s) and scraped (/metrics every 15 s)
# as a deployment would be:
#   1. idle for a minute (no sessions, no sockets);
#   2. a minute with 1,000 running sessions (24 h banks: no deadline is
#      reached) and nobody acting;
#   3. 1,000 switches (one per session, 4 at a time), until the consumer has
#      stored them.
#
#   scripts/bench-cost.sh                 # the current build (release)
#   scripts/bench-cost.sh --bin-dir DIR   # fanout-gateway and audit-consumer from DIR
#                                         # (e.g. an earlier commit's build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin=$2; shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done
ensure_redis_binary
ensure_postgres_running
if [ -z "$bin" ]; then
  cargo build -q --release --locked -p synckairos-fanout-gateway -p synckairos-audit-consumer
  bin=${CARGO_TARGET_DIR:-target}/release
fi
bench_scaffold cost
redis_port=$(free_port) audit_port=$(free_port) port=$(free_port)
gw_metrics=$(free_port) audit_metrics=$(free_port)
redis_url=redis://127.0.0.1:$redis_port/
export AUTH_MODE=disabled IP_RATE_LIMIT=0 RUST_LOG=warn SWITCH_RATE_LIMIT=0

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  --logfile "$tmp/redis.log" &
pids+=($!)
psql "$pg_admin" -qc "CREATE DATABASE $db"
DATABASE_URL=$database_url "$bin/audit-consumer" migrate 2>"$tmp/migrate.log"
DATABASE_URL=$database_url REDIS_URL=$redis_url LISTEN=127.0.0.1:$audit_port \
  METRICS_LISTEN=127.0.0.1:$audit_metrics "$bin/audit-consumer" run >"$tmp/audit.log" 2>&1 &
pids+=($!)
REDIS_URL=$redis_url LISTEN=127.0.0.1:$port METRICS_LISTEN=127.0.0.1:$gw_metrics \
  "$bin/fanout-gateway" >"$tmp/server.log" 2>&1 &
pids+=($!)
base=http://127.0.0.1:$port
await_url "$base/ready"
await_url "http://127.0.0.1:$audit_port/ready"
sleep 3 # past start-up: script loads, the first clock samples

# Builds that serve /metrics on the public port and builds with an internal
# metrics port are both measured: scrape whichever answers.
scrape() { curl -sf "http://127.0.0.1:$2/metrics" >/dev/null 2>&1 || curl -sf "http://127.0.0.1:$1/metrics" >/dev/null 2>&1 || true; }
operate() { # $1 seconds
  local t
  for t in $(seq 0 $(($1 - 1))); do
    if [ $((t % 10)) = 0 ]; then curl -sf "$base/ready" >/dev/null; curl -sf "http://127.0.0.1:$audit_port/ready" >/dev/null; fi
    if [ $((t % 15)) = 0 ]; then scrape "$port" "$gw_metrics"; scrape "$audit_port" "$audit_metrics"; fi
    sleep 1
  done
}
monitor_start() { redis-cli -p "$redis_port" monitor >"$tmp/monitor.$1" & mon=$!; sleep 0.3; }
monitor_stop() { # $1 phase → "total top-commands"
  kill "$mon"; wait "$mon" 2>/dev/null || true
  awk '/^[0-9]+\.[0-9]+ \[/ && !/\[[0-9]+ lua\]/ { n++; c[tolower($4)]++ }
    END { printf "%d  (", n; k = 0; PROCINFO["sorted_in"] = "@val_num_desc";
          for (x in c) { if (k++ < 5) printf "%s%s %d", (k > 1 ? ", " : ""), x, c[x] } print ")" }' "$tmp/monitor.$1" | tr -d '"'
}

log "phase 1: idle for 60 s"
monitor_start idle
operate 60
idle=$(monitor_stop idle)

log "creating and starting 1,000 sessions (not counted)"
python3 - "$tmp/ids" "$tmp/bodies" <<'PY'
import json, sys, uuid
with open(sys.argv[1], "w") as ids, open(sys.argv[2], "w") as bodies:
    for _ in range(1000):
        sid = str(uuid.uuid4())
        ids.write(sid + "\n")
        bank = 86_400_000
        bodies.write(json.dumps({"session_id": sid, "sync_mode": "per_participant", "total_time_ms": bank,
            "participants": [{"participant_id": str(uuid.uuid4()), "participant_index": i, "total_time_ms": bank}
                             for i in range(2)]}) + "\n")
PY
xargs -P 4 -d '\n' -I{} curl -sf -o /dev/null -H 'content-type: application/json' -d '{}' "$base/v1/sessions" <"$tmp/bodies"
xargs -P 4 -I{} curl -sf -o /dev/null -X POST "$base/v1/sessions/{}/start" <"$tmp/ids"
sleep 5 # the consumer stores the 2,000 events

log "phase 2: 60 s with 1,000 running sessions, nobody acting"
monitor_start running
operate 60
running=$(monitor_stop running)

log "phase 3: 1,000 switches"
stored() { psql "$database_url" -tAc "SELECT count(*) FROM sync_events WHERE event_type = 'participant_switched'" 2>/dev/null || echo 0; }
monitor_start switches
xargs -P 4 -I@ curl -sf -o /dev/null -H 'content-type: application/json' -d '{}' -X POST "$base/v1/sessions/@/switch" <"$tmp/ids"
for _ in $(seq 100); do [ "$(stored)" -ge 1000 ] && break; sleep 0.1; done
switches=$(monitor_stop switches)
[ "$(stored)" -ge 1000 ] || { log "the consumer did not store the 1,000 switches"; exit 1; }

printf '\nRedis commands issued by the whole stack (native server + audit consumer), client-issued only:\n'
printf '  idle minute:                          %s\n' "$idle"
printf '  minute with 1,000 running sessions:   %s\n' "$running"
printf '  1,000 switches (until stored):        %s\n' "$switches"
