#!/usr/bin/env bash
# Benchmarks a whole local stack, as a user meets it, on free ports: a private
# redis-server, a fresh PostgreSQL database with the audit consumer draining
# the streams into it, and either
#   --shape self-hosted  the native server (REST + /ws + expiry on one port), or
#   --shape edge         upstash-local, the release worker under workerd and
#                        the gateway (REST_API=off),
# then drives it closed-loop with loadgen (the remaining arguments), or with
# Debian's wrk (--wrk switch|get: one thread, WRK_SESSIONS running sessions,
# WRK_SECS seconds, WRK_CONNECTIONS connections, a `{}` switch body). Prints
# the result, then the CPU each process used per request while it ran (from
# /proc, which holds on a noisy machine better than throughput does), the time
# Redis spent in scripts (INFO commandstats) over the same window, and (loadgen
# with a warm-up) each script's own time from a SLOWLOG sample of the warm-up.
#
#   scripts/bench-stack.sh --shape self-hosted --sessions 1000 --concurrency 16
#   scripts/bench-stack.sh --shape edge --wrk switch
#   scripts/bench-stack.sh --shape self-hosted --mode ws-fanout --clients-per-session 10 --rate 1000
#   scripts/bench-stack.sh --shape edge --sessions 1000 --concurrency 16 --control byoyomi
#
# --control fischer|bronstein|byoyomi (anywhere in the arguments) is the time
# control of every session the run creates, through loadgen or for wrk:
# fischer (the default) is the body without `time_control` (increment 0),
# bronstein {"type":"bronstein","delay_ms":2000}, byoyomi
# {"type":"byoyomi","periods":5,"period_ms":30000}.
#
# The servers run with AUTH_MODE=disabled and no per-address limits
# (IP_RATE_LIMIT=0, CONNECTIONS_PER_IP_PER_SECOND=0, MAX_CONNECTIONS_PER_IP=0:
# one client address sends everything). SWITCH_RATE_LIMIT defaults to the
# service's 10/s per session for loadgen (1000 sessions stay under it) and to
# 0 (off) for wrk, whose 200 sessions would pass it; set it to override.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

shape=self-hosted wrk_op=
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) shape=$2; shift 2 ;;
    --wrk) wrk_op=$2; shift 2 ;;
    *) break ;;
  esac
done
case "$shape" in edge | self-hosted) ;; *) log "--shape edge|self-hosted"; exit 2 ;; esac
# --control may come anywhere among loadgen's arguments: taken out here, and
# given to loadgen (or used for wrk's sessions) below.
control=fischer rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --control) control=${2:-}; shift 2 || shift ;;
    --control=*) control=${1#--control=}; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
set -- ${rest[@]+"${rest[@]}"}
case "$control" in
  fischer) time_control= ;;
  bronstein) time_control='"time_control":{"type":"bronstein","delay_ms":2000},' ;;
  byoyomi) time_control='"time_control":{"type":"byoyomi","periods":5,"period_ms":30000},' ;;
  *) log "--control fischer|bronstein|byoyomi"; exit 2 ;;
esac
ensure_redis_binary
ensure_postgres_running
command -v jq >/dev/null || apt_install jq
[ -z "$wrk_op" ] || command -v wrk >/dev/null || apt_install wrk
tmp=$(mktemp -d -t bench-stack.XXXXXX)
if [ "$shape" = edge ]; then
  scripts/worker-build.sh >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
fi
cargo build -q --release --locked -p synckairos-upstash-local -p synckairos-loadgen \
  -p synckairos-fanout-gateway -p synckairos-audit-consumer
bin=${CARGO_TARGET_DIR:-target}/release
# The scripts' names by SHA (as core/src/script.rs and the consumer compute
# them), to name them in the SLOWLOG sample below.
script_names=$(
  for c in create start switch pause resume complete cancel expire delete; do
    sha=$(cat core/lua/lib.lua "core/lua/$c.lua" | sha1sum | cut -c1-8)
    printf '"%s":"%s %s",' "$sha" "$c" "$sha"
  done
  printf '"%s":"lease","%s":"trim (audit consumer)"' "$(sha1sum <core/lua/lease.lua | cut -c1-8)" \
    "$(sha1sum <audit-consumer/src/lua/trim.lua | cut -c1-8)"
)

bench_scaffold stack
names=()
started() { pids+=("$1"); names+=("$2"); }
redis_port=$(free_port) audit_port=$(free_port) audit_metrics_port=$(free_port) port=$(free_port)
# The WebSocket server's internal /metrics port (METRICS_LISTEN).
metrics_port=$(free_port)
redis_url=redis://127.0.0.1:$redis_port/
export AUTH_MODE=disabled IP_RATE_LIMIT=0 RUST_LOG=warn CONNECTIONS_PER_IP_PER_SECOND=0 MAX_CONNECTIONS=50000 \
  MAX_CONNECTIONS_PER_IP=0 MESSAGES_PER_SECOND=0
[ -n "$wrk_op" ] && export SWITCH_RATE_LIMIT=${SWITCH_RATE_LIMIT:-0}

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  --logfile "$tmp/redis.log" &
started $! redis-server
psql "$pg_admin" -qc "CREATE DATABASE $db"
DATABASE_URL=$database_url "$bin/audit-consumer" migrate 2>"$tmp/migrate.log"
DATABASE_URL=$database_url REDIS_URL=$redis_url LISTEN=127.0.0.1:$audit_port \
  METRICS_LISTEN=127.0.0.1:$audit_metrics_port "$bin/audit-consumer" run >"$tmp/audit.log" 2>&1 &
started $! audit-consumer
if [ "$shape" = self-hosted ]; then
  REDIS_URL=$redis_url LISTEN=127.0.0.1:$port METRICS_LISTEN=127.0.0.1:$metrics_port \
    SERVER_BIN=$bin/fanout-gateway scripts/serve.sh >"$tmp/server.log" 2>&1 &
  started $! server
  base=http://127.0.0.1:$port ws=ws://127.0.0.1:$port
else
  rest_port=$(free_port) gateway_port=$(free_port)
  UPSTASH_LOCAL_TOKEN=bench UPSTASH_LOCAL_LISTEN=127.0.0.1:$rest_port UPSTASH_LOCAL_REDIS_URL=$redis_url \
    "$bin/upstash-local" >"$tmp/rest.log" 2>&1 &
  started $! upstash-local
  await_url "http://127.0.0.1:$rest_port/health"
  UPSTASH_REDIS_REST_URL=http://127.0.0.1:$rest_port UPSTASH_REDIS_REST_TOKEN=bench \
    scripts/workerd.sh --port "$port" >"$tmp/workerd.log" 2>&1 &
  started $! workerd
  REDIS_URL=$redis_url LISTEN=127.0.0.1:$gateway_port METRICS_LISTEN=127.0.0.1:$metrics_port REST_API=off \
    "$bin/fanout-gateway" >"$tmp/gateway.log" 2>&1 &
  started $! gateway
  base=http://127.0.0.1:$port ws=ws://127.0.0.1:$gateway_port
  await_url "http://127.0.0.1:$gateway_port/ready"
fi
await_url "$base/ready"
await_url "http://127.0.0.1:$audit_port/ready"

# CPU ticks (user + system) of each process and its children (workerd.sh
# runs workerd as a child).
ticks() {
  for p in "${pids[@]}"; do
    local t=0 c
    for c in $p $(pgrep -P "$p" || true); do
      t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
  done
}
# Redis's own account of the scripts (INFO commandstats): EVAL + EVALSHA calls
# and their µs (a script's commands included), and PUBLISH calls (one per state
# change; a refused command and the audit consumer's trim scripts publish
# nothing).
scripts() {
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' | awk -F'[:=,]' '
    $1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { calls += $3; usec += $5 }
    $1 == "cmdstat_publish" { pub = $3 }
    END { print calls + 0, usec + 0, pub + 0 }'
}
scripts_report() { # $1 before, $2 after (scripts' output)
  awk -v b="$1" -v a="$2" 'BEGIN {
    split(b, x, " "); split(a, y, " ")
    calls = y[1] - x[1]; usec = y[2] - x[2]; pub = y[3] - x[3]
    if (calls > 0 && pub > 0)
      printf "Redis scripts while measured: %d calls, %.1f us each; %d of them state changes (PUBLISH; the others are refusals and the audit consumer'"'"'s trims): %.1f us of script time per state change\n",
        calls, usec / calls, pub, usec / pub }'
}
report() { # $1 op, $2 rate per second, $3 seconds sampled, $4 before, $5 after
  paste <(printf '%s\n' "${names[@]}") <(echo "$4") <(echo "$5") |
    awk -v hz="$(getconf CLK_TCK)" -v secs="$3" -v rate="$2" -v op="$1" '
      BEGIN { printf "CPU per %s while measured (%.1f s at %.0f/s):\n", op, secs, rate }
      { s = ($3 - $2) / hz; printf "  %-14s %5.0f %% of a core  %6.0f us/request\n", $1, 100 * s / secs, 1e6 * s / secs / rate }'
}

if [ -n "$wrk_op" ]; then
  sessions=${WRK_SESSIONS:-200} secs=${WRK_SECS:-15} conns=${WRK_CONNECTIONS:-16}
  : >"$tmp/ids"
  for _ in $(seq "$sessions"); do
    sid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    body=$(printf '{"session_id":"%s","sync_mode":"per_participant","total_time_ms":86400000,%s"participants":[{"participant_id":"%s","participant_index":0,"total_time_ms":86400000},{"participant_id":"%s","participant_index":1,"total_time_ms":86400000}]}' \
      "$sid" "$time_control" "$(python3 -c 'import uuid; print(uuid.uuid4())')" "$(python3 -c 'import uuid; print(uuid.uuid4())')")
    curl -sf -o /dev/null -H 'content-type: application/json' -d "$body" "$base/v1/sessions"
    curl -sf -o /dev/null -X POST "$base/v1/sessions/$sid/start"
    echo "$sid" >>"$tmp/ids"
  done
  cat >"$tmp/wrk.lua" <<'LUA'
local ids = {}
for line in io.lines(os.getenv("SK_IDS")) do ids[#ids + 1] = line end
local op, i = os.getenv("SK_OP"), 0
local headers = { ["content-type"] = "application/json" }
request = function()
  i = i % #ids + 1
  if op == "switch" then
    return wrk.format("POST", "/v1/sessions/" .. ids[i] .. "/switch", headers, "{}")
  end
  return wrk.format("GET", "/v1/sessions/" .. ids[i])
end
local codes = {}
response = function(status) codes[status] = (codes[status] or 0) + 1 end
done = function(summary, latency)
  io.write(string.format("wrk %s: %d requests in %.1f s = %.0f/s; p50 %.2f ms p90 %.2f ms p99 %.2f ms max %.2f ms; errors %d\n",
    op, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
LUA
  before=$(ticks) scripts_before=$(scripts)
  SK_IDS=$tmp/ids SK_OP=$wrk_op wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$tmp/wrk.lua" "$base" >"$tmp/wrk.out"
  after=$(ticks) scripts_after=$(scripts)
  echo "control: $control"
  grep '^wrk ' "$tmp/wrk.out"
  grep -A1 'Non-2xx' "$tmp/wrk.out" || true
  rate=$(sed -n 's/.* = \([0-9]*\)\/s;.*/\1/p' "$tmp/wrk.out")
  report "$wrk_op" "$rate" "$secs" "$before" "$after"
  scripts_report "$scripts_before" "$scripts_after"
  exit 0
fi

extra=()
# The WebSocket server's pid, for the modes that read its RSS and CPU.
case "$*" in *reconnect-storm* | *ws-idle*) extra=(--gateway-pid "${pids[${#pids[@]} - 1]}") ;; esac
# The expiry mode reads the lag histogram from the internal /metrics port.
case "$*" in *expiry*) extra+=(--gateway-metrics "http://127.0.0.1:$metrics_port/metrics") ;; esac
"$bin/loadgen" --base-url "$base" --gateway "$ws" --control "$control" "${extra[@]}" "$@" >"$tmp/loadgen.json" 2>"$tmp/loadgen.err" &
lg=$!
# The measured phase starts once the sessions exist and the warm-up is over.
until grep -q 'created and started\|sessions ready\|connected' "$tmp/loadgen.err" 2>/dev/null; do
  kill -0 "$lg" 2>/dev/null || break
  sleep 0.05
done
arg() { sed -n "s/.*--$1[ =]\([0-9]*\).*/\1/p" <<<"$*"; }
warmup=$(arg warmup-secs "$@") duration=$(arg duration-secs "$@")
rcli() { redis-cli -p "$redis_port" "$@" >/dev/null; }
sample=yes
case "$*" in *ws-fanout* | *ws-idle* | *expiry* | *reconnect-storm*) sample=no ;; esac
if [ "$sample" = yes ] && [ "${warmup:-1}" -ge 1 ]; then
  # A sample of each script's own time: SLOWLOG logs every command for 0.6 s
  # of loadgen's warm-up (REST mode), before its measurement and the CPU
  # window.
  sleep 0.2
  rcli config set slowlog-max-len 1000000
  rcli slowlog reset
  rcli config set slowlog-log-slower-than 0
  sleep 0.6
  rcli config set slowlog-log-slower-than -1
  sleep "$(awk -v w="${warmup:-1}" 'BEGIN { print w - 0.3 }')"
else
  sleep "${warmup:-1}"
  sleep 0.5
fi
before=$(ticks) scripts_before=$(scripts)
window=$(awk -v d="${duration:-10}" 'BEGIN { print (d > 2 ? d - 1 : d) }')
sleep "$window"
after=$(ticks) scripts_after=$(scripts)
wait "$lg" || { cat "$tmp/loadgen.err" >&2; exit 1; }
jq -c . "$tmp/loadgen.json"
# A storm or idle sockets have no request rate to divide by; their JSON says
# the gateway's CPU and RSS itself.
case "$*" in *reconnect-storm* | *ws-idle*) exit 0 ;; esac
op=$(jq -r 'if (.switch.ok // 0) > 0 then "switch" elif (.get.ok // 0) > 0 then "get" else "request" end' "$tmp/loadgen.json")
rate=$(jq -r "(.$op.per_s // .switches_per_s // 1)" "$tmp/loadgen.json" 2>/dev/null || echo 1)
report "$op" "$rate" "$window" "$before" "$after"
scripts_report "$scripts_before" "$scripts_after"
# The warm-up's SLOWLOG sample, per script (the commands scripts call are
# logged too, so each call carries the cost of logging them).
redis-cli --json -p "$redis_port" slowlog get 1000000 2>/dev/null | jq -r --argjson names "{$script_names}" '
  [.[] | select(.[3][0] | ascii_downcase | test("^eval(sha)?$"))
    | {script: ($names[.[3][1][0:8]] // .[3][1][0:8]), us: .[2]}]
  | group_by(.script) | map({script: .[0].script, n: length, us: (map(.us) | sort)}) | sort_by(-.n)
  | if length > 0 then "Script time in Redis (SLOWLOG, 0.6 s of the warm-up; us each):" else empty end,
    (.[] | "  \(.script): \(.n) calls, mean \(.us | add / length | . * 10 | round / 10), p50 \(.us[.n / 2 | floor]), p99 \(.us[.n * 0.99 | floor])")' || true
