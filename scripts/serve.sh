#!/usr/bin/env bash
# Runs the self-hosted SyncKairos service in the foreground: the whole REST
# API, the WebSocket /ws, time sync and expiry on one port (the gateway binary
# with REST_API=on), over the Redis at REDIS_URL. SIGTERM or ctrl-c stops it
# gracefully (WebSocket clients get 1012 and reconnect elsewhere).
#
#   REDIS_URL (redis://127.0.0.1:6379/; rediss:// for TLS, e.g. Upstash)
#   LISTEN    (127.0.0.1:8080)
#   METRICS_LISTEN (0.0.0.0:9091): the internal port of /metrics, apart from
#             the public one (which answers /metrics with 404)
# and the variables the edge worker and the gateway read: AUTH_MODE, JWT_*,
# SHARDS, STATE_TTL_SECONDS, SWITCH_RATE_LIMIT, IP_RATE_LIMIT,
# IP_RATE_PERIOD_SECONDS, CORS_ALLOWED_ORIGINS, CONNECTIONS_PER_IP_PER_SECOND,
# CLIENT_IP_HEADER, MAX_CONNECTIONS, SHUTDOWN_GRACE_MS, … (docs/API.md).
# AUTH_MODE defaults to jwt: set JWT_SECRET (or JWT_PUBLIC_KEY / JWT_JWKS).
# SERVER_BIN runs a binary built already (scripts/up.sh builds it with the
# rest of the stack) instead of building it here.
set -euo pipefail
cd "$(dirname "$0")/.."
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
export LISTEN=${LISTEN:-127.0.0.1:8080}
export AUTH_MODE=${AUTH_MODE:-jwt}
export REST_API=on
if [ -z "${SERVER_BIN:-}" ]; then
  cargo build -q --release --locked -p synckairos-fanout-gateway
  SERVER_BIN=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/fanout-gateway
fi
exec "$SERVER_BIN"
