#!/usr/bin/env bash
# Benchmarks the engine against a private, throw-away redis-server:
#   1. the ceiling: redis-benchmark running a trivial script (EVALSHA of
#      `return 1`) at the same concurrency;
#   2. the real switch script replayed by redis-benchmark on one session (what
#      the server alone can do for this script, no Rust client involved);
#   3. engine-bench (closed loop through synckairos_engine::Engine) for each
#      command in COMMANDS.
# Then prints a summary: ceiling rps, engine calls/s, the ratio, p50/p99, the
# CPU split and the exact commands used.
#
# Run from anywhere (it cd's to the repo root). Environment:
#   CONCURRENCY (16)  DURATION (10 s)  SESSIONS (1000)  COMMANDS ("switch get")
#   CEILING_REQUESTS (200000)  REPLAY_REQUESTS (50000; 0 skips step 2)
#   PIPELINE (1): redis-benchmark -P for the ceiling. engine-bench's Engine is
#     a multiplexed connection, so several tasks on one connection are in
#     effect pipelined; PIPELINE > 1 gives the matching ceiling.
#   CARGO_TARGET_DIR (target)
#   ENGINE_BENCH: an engine-bench binary to run instead of building this
#     checkout's (another commit's build, for a side-by-side comparison)
# Extra arguments are passed to every engine-bench run (e.g. --connections 1).
set -euo pipefail

CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-1000}
COMMANDS=${COMMANDS:-switch get}
CEILING_REQUESTS=${CEILING_REQUESTS:-200000}
REPLAY_REQUESTS=${REPLAY_REQUESTS:-50000}
PIPELINE=${PIPELINE:-1}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${ENGINE_BENCH:-${CARGO_TARGET_DIR:-target}/release/engine-bench}

. scripts/lib.sh
ensure_redis_binary
command -v jq >/dev/null || apt_install jq
for tool in redis-server redis-cli redis-benchmark cargo jq; do
    command -v "$tool" >/dev/null || { echo "bench-engine: $tool not found" >&2; exit 1; }
done

TMP=$(mktemp -d -t bench-engine.XXXXXX)
REDIS_PID=
cleanup() {
    if [[ -n "$REDIS_PID" ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${ENGINE_BENCH:-}" ]]; then
    BUILD_CMD=(cargo build --release -p synckairos-engine --bin engine-bench)
    echo "+ ${BUILD_CMD[*]}" >&2
    "${BUILD_CMD[@]}" >&2
fi

# A free port: try random ones until a redis-server stays up on one.
PORT=
for _ in $(seq 1 20); do
    candidate=$((20000 + RANDOM % 40000))
    if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        continue # something listens there
    fi
    redis-server --port "$candidate" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
        if redis-cli -p "$candidate" ping >/dev/null 2>&1; then
            PORT=$candidate
            break
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$PORT" ]] && break
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
done
[[ -n "$PORT" ]] || { echo "bench-engine: could not start redis-server" >&2; exit 1; }
URL="redis://127.0.0.1:$PORT/"
echo "bench-engine: redis-server $(redis-server --version | grep -o 'v=[^ ]*') pid $REDIS_PID on port $PORT;" \
    "$(nproc) CPU(s); concurrency $CONCURRENCY" >&2

# Redis CPU seconds (user + sys) so far.
server_cpu() {
    redis-cli -p "$PORT" info cpu | tr -d '\r' |
        awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.3f", s }'
}
now() { date +%s.%N; }

# Runs redis-benchmark ("$@" after the common flags) under /usr/bin/time;
# prints "rps p50_ms p99_ms max_ms client_cpu_pct server_cpu_pct".
run_redis_benchmark() {
    local s0 t0 s1 t1 csv
    s0=$(server_cpu)
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$TMP/time" \
        redis-benchmark -p "$PORT" -c "$CONCURRENCY" --csv "$@" >"$TMP/rb.csv"
    t1=$(now)
    s1=$(server_cpu)
    csv=$(tail -n 1 "$TMP/rb.csv" | tr -d '"')
    # test,rps,avg,min,p50,p95,p99,max (the test name may contain commas).
    awk -F, -v s0="$s0" -v s1="$s1" -v t0="$t0" -v t1="$t1" -v cpu="$(cat "$TMP/time")" '
        { split(cpu, c, " "); wall = t1 - t0
          printf "%s %s %s %s %.1f %.1f\n", $(NF-6), $(NF-3), $(NF-1), $NF,
                 100 * (c[1] + c[2]) / wall, 100 * (s1 - s0) / wall }' <<<"$csv"
}

# 1. Ceiling: a trivial script.
SHA=$(redis-cli -p "$PORT" SCRIPT LOAD "return 1")
CEIL_ARGS=(-n "$CEILING_REQUESTS" -P "$PIPELINE" EVALSHA "$SHA" 0)
CEIL_CMD=(redis-benchmark -p "$PORT" -c "$CONCURRENCY" --csv "${CEIL_ARGS[@]}")
echo "+ ${CEIL_CMD[*]}" >&2
read -r CEIL_RPS CEIL_P50 CEIL_P99 CEIL_MAX CEIL_CCPU CEIL_SCPU \
    < <(run_redis_benchmark "${CEIL_ARGS[@]}")

# 2. The real switch script, replayed on one session by redis-benchmark.
REPLAY_LINE="(skipped)"
if ((REPLAY_REQUESTS > 0)); then
    mapfile -t CALL < <("$BIN" --redis-url "$URL" --print-switch-call)
    REPLAY_CMD=(redis-benchmark -p "$PORT" -c "$CONCURRENCY" --csv -n "$REPLAY_REQUESTS" "${CALL[@]}")
    # Empty arguments are real (unset ARGV); show them quoted.
    echo "+ $(printf '%q ' "${REPLAY_CMD[@]}")" >&2
    read -r REP_RPS REP_P50 REP_P99 REP_MAX REP_CCPU REP_SCPU \
        < <(run_redis_benchmark -n "$REPLAY_REQUESTS" "${CALL[@]}")
    REPLAY_LINE=$(printf '%10s rps  p50 %s ms  p99 %s ms  max %s ms  (%.1f%% of ceiling; cpu: redis-benchmark %s%%, redis %s%%)' \
        "$REP_RPS" "$REP_P50" "$REP_P99" "$REP_MAX" \
        "$(awk -v a="$REP_RPS" -v b="$CEIL_RPS" 'BEGIN { print 100 * a / b }')" "$REP_CCPU" "$REP_SCPU")
fi

# 3. engine-bench.
declare -a RESULTS=() BENCH_CMDS=()
for cmd in $COMMANDS; do
    BENCH_CMD=("$BIN" --redis-url "$URL" --sessions "$SESSIONS" --concurrency "$CONCURRENCY"
        --duration-secs "$DURATION" --command "$cmd" "$@")
    echo "+ ${BENCH_CMD[*]}" >&2
    out=$("${BENCH_CMD[@]}")
    echo "$out"
    RESULTS+=("$out")
    BENCH_CMDS+=("${BENCH_CMD[*]}")
done

echo
echo "=== bench-engine summary ($(nproc) CPUs; client and server share them) ==="
printf 'ceiling  EVALSHA "return 1" (redis-benchmark -P %s): %10s rps  p50 %s ms  p99 %s ms  max %s ms  (cpu: redis-benchmark %s%%, redis %s%%)\n' \
    "$PIPELINE" "$CEIL_RPS" "$CEIL_P50" "$CEIL_P99" "$CEIL_MAX" "$CEIL_CCPU" "$CEIL_SCPU"
echo "switch script replayed (redis-benchmark):   $REPLAY_LINE"
for out in "${RESULTS[@]}"; do
    jq -r --arg ceil "$CEIL_RPS" '
        "engine-bench \(.command) (\(.connections) conn): \(.calls_per_s) calls/s = \((100 * .calls_per_s / ($ceil | tonumber) * 10 | round) / 10)% of ceiling"
        + "  p50 \(.p50_us) us  p99 \(.p99_us) us  max \(.max_us) us  errors \(.errors)/\(.calls)"
        + "  (cpu: engine-bench \(.cpu.client_pct)%, redis \(.cpu.server_pct)%)"' <<<"$out"
done
echo "commands:"
echo "  ${CEIL_CMD[*]}"
[[ -n "${REPLAY_CMD+x}" ]] && echo "  $(printf '%q ' "${REPLAY_CMD[@]}")"
for c in "${BENCH_CMDS[@]}"; do echo "  $c"; done
