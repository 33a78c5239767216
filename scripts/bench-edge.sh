#!/usr/bin/env bash
# Benchmarks the whole local edge stack: a private redis-server, upstash-local
# and the release worker under workerd, each on a free port, driven by
# loadgen (closed loop). Prints loadgen's JSON, then the CPU each process
# used per request while the measured phase ran (from /proc, so it holds on
# a noisy machine better than throughput does).
#
#   scripts/bench-edge.sh [loadgen args...]     e.g. --concurrency 64 --mix get
# Environment: CARGO_TARGET_DIR. The worker runs with AUTH_MODE=disabled and
# no per-IP limit (IP_RATE_LIMIT=0: one client IP sends everything);
# everything else, the per-session switch limit included, at its defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh
ensure_redis_binary
command -v jq >/dev/null || apt_install jq
tmp=$(mktemp -d -t bench-edge.XXXXXX)
scripts/worker-build.sh >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
cargo build -q --release --locked -p synckairos-upstash-local -p synckairos-loadgen
bin=${CARGO_TARGET_DIR:-target}/release

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
redis_port=$(free_port) rest_port=$(free_port) edge_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  --logfile "$tmp/redis.log" &
pids+=($!)
UPSTASH_LOCAL_TOKEN=bench UPSTASH_LOCAL_LISTEN=127.0.0.1:$rest_port \
  UPSTASH_LOCAL_REDIS_URL=redis://127.0.0.1:$redis_port/ RUST_LOG=warn "$bin/upstash-local" >"$tmp/rest.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$rest_port/health" >/dev/null 2>&1 && break; sleep 0.1; done
UPSTASH_REDIS_REST_URL=http://127.0.0.1:$rest_port UPSTASH_REDIS_REST_TOKEN=bench AUTH_MODE=disabled \
  IP_RATE_LIMIT=0 scripts/workerd.sh --port "$edge_port" >"$tmp/workerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$edge_port/ready" >/dev/null 2>&1 && break; sleep 0.1; done

# CPU ticks (user + system) of each process.
ticks() { for p in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done; }
"$bin/loadgen" --base-url "http://127.0.0.1:$edge_port" "$@" >"$tmp/loadgen.json" 2>"$tmp/loadgen.err" &
lg=$!
# The measured phase starts once the sessions exist and the warm-up is over.
until grep -q 'created and started' "$tmp/loadgen.err" 2>/dev/null; do
  kill -0 "$lg" 2>/dev/null || { cat "$tmp/loadgen.err" >&2; exit 1; }
  sleep 0.05
done
arg() { sed -n "s/.*--$1[ =]\([0-9]*\).*/\1/p" <<<"$*"; }
warmup=$(arg warmup-secs "$@") duration=$(arg duration-secs "$@")
sleep "${warmup:-1}"
# Sample the middle of the measured phase (its first and last half second
# out), so session set-up and clean-up are not counted.
sleep 0.5
before=$(ticks)
window=$(awk -v d="${duration:-10}" 'BEGIN { print d - 1 }')
sleep "$window"
after=$(ticks)
wait "$lg"
jq -c . "$tmp/loadgen.json"
hz=$(getconf CLK_TCK)
op=$(jq -r 'if .switch.ok > 0 then "switch" else "get" end' "$tmp/loadgen.json")
rate=$(jq -r ".$op.per_s" "$tmp/loadgen.json")
paste <(printf '%s\n' redis-server upstash-local workerd) <(echo "$before") <(echo "$after") |
  awk -v hz="$hz" -v secs="$window" -v rate="$rate" -v op="$op" '
    BEGIN { printf "CPU per %s while measured (%.1f s at %.0f/s):\n", op, secs, rate }
    { s = ($3 - $2) / hz; printf "  %-14s %5.0f %% of a core  %6.0f us/request\n", $1, 100 * s / secs, 1e6 * s / secs / rate }'
