#!/usr/bin/env bash
# The scale run: a local Redis Cluster of 3 primaries and 3 replicas
# (Debian's redis-server in cluster mode, on free ports), a fresh PostgreSQL
# database with the audit consumer draining every shard's stream into it, and
# 3 native servers (the gateway with REST_API=on: REST, /ws and expiry), all
# on the cluster; then `loadgen --mode scale` against them (see
# loadgen/src/scale.rs for the phases). Prints loadgen's JSON report.
#
#   scripts/bench-scale.sh                        # 50,000 sessions, 10,200 watchers, 500 switches/s for 60 s
#   scripts/bench-scale.sh --sessions 5000 --watchers 1000 --duration-secs 20 --rate 200   # a quick one
#
# Arguments go to loadgen (defaults: --sessions 50000 --watchers 10200
# --rate 500 --duration-secs 60 --concurrency 64). The servers run with
# AUTH_MODE=disabled and no per-address limits (one client address sends
# everything); the per-session switch limit stays at the service's default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

ensure_redis_binary
ensure_postgres_running
command -v jq >/dev/null || apt_install jq
cargo build -q --release --locked -p synckairos-loadgen -p synckairos-fanout-gateway -p synckairos-audit-consumer
bin=${CARGO_TARGET_DIR:-target}/release
bench_scaffold scale
# Ten thousand sockets and more per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The cluster: ports p and p + 10000 (its bus) free for each node.
nodes=()
while [ ${#nodes[@]} -lt 6 ]; do
  p=$(free_port)
  [ "$p" -lt 55000 ] || continue
  python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', $p + 10000))" 2>/dev/null || continue
  mkdir -p "$tmp/node-$p"
  redis-server --port "$p" --bind 127.0.0.1 --protected-mode no --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000 --appendonly no --save "" \
    --dir "$tmp/node-$p" --logfile "$tmp/node-$p.log" &
  pids+=($!)
  nodes+=("$p")
done
for p in "${nodes[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${nodes[@]}") --cluster-replicas 1 --cluster-yes \
  >"$tmp/cluster-create.log" 2>&1 || { cat "$tmp/cluster-create.log" >&2; exit 1; }
for p in "${nodes[@]}"; do
  for _ in $(seq 200); do
    redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
done
seeds=$(printf '127.0.0.1:%s,' "${nodes[@]:0:3}")
seeds=${seeds%,}
export REDIS_CLUSTER_URLS=$(printf 'redis://127.0.0.1:%s,' "${nodes[@]:0:3}")
export REDIS_CLUSTER_URLS=${REDIS_CLUSTER_URLS%,}
unset REDIS_URL
export AUTH_MODE=disabled IP_RATE_LIMIT=0 RUST_LOG=warn CONNECTIONS_PER_IP_PER_SECOND=0 MAX_CONNECTIONS=50000 \
  MAX_CONNECTIONS_PER_IP=0 MESSAGES_PER_SECOND=0 LOW_TIME_WARNING_MS=0

psql "$pg_admin" -qc "CREATE DATABASE $db"
DATABASE_URL=$database_url "$bin/audit-consumer" migrate 2>"$tmp/migrate.log"
audit_port=$(free_port) audit_metrics=$(free_port)
DATABASE_URL=$database_url LISTEN=127.0.0.1:$audit_port METRICS_LISTEN=127.0.0.1:$audit_metrics \
  "$bin/audit-consumer" run >"$tmp/audit.log" 2>&1 &
pids+=($!)
procs=(--process "consumer=$!")
gateways=() metrics=()
for g in 1 2 3; do
  port=$(free_port) mport=$(free_port)
  REST_API=on LISTEN=127.0.0.1:$port METRICS_LISTEN=127.0.0.1:$mport "$bin/fanout-gateway" \
    >"$tmp/gateway-$g.log" 2>&1 &
  pids+=($!)
  procs+=(--process "gateway-$g=$!")
  gateways+=("ws://127.0.0.1:$port") metrics+=("http://127.0.0.1:$mport/metrics")
  await_url "http://127.0.0.1:$port/ready"
done
await_url "http://127.0.0.1:$audit_port/ready"
log "cluster 127.0.0.1:{$(IFS=,; echo "${nodes[*]}")}, 3 gateways, audit consumer: up"

join() { local IFS=,; echo "$*"; }
# The defaults, where the arguments do not say otherwise.
defaults=()
for d in sessions=50000 watchers=10200 rate=500 duration-secs=60 concurrency=64; do
  case " $* " in *" --${d%%=*} "* | *" --${d%%=*}="*) ;; *) defaults+=("--${d%%=*}" "${d#*=}") ;; esac
done
"$bin/loadgen" --mode scale --redis-url "redis+cluster://$seeds" --gateway "$(join "${gateways[@]}")" \
  --gateway-metrics "$(join "${metrics[@]}")" "${procs[@]}" "${defaults[@]}" "$@" \
  >"$tmp/scale.json" 2> >(tee "$tmp/loadgen.err" >&2) || {
  tail -n 30 "$tmp"/gateway-*.log "$tmp/audit.log" >&2
  cat "$tmp/scale.json"
  exit 1
}
jq . "$tmp/scale.json"
