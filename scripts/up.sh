#!/usr/bin/env bash
# Brings the local stack up (Redis in place of Upstash, PostgreSQL for the
# audit trail) and shows it working: a chess clock driven through the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_redis_running
ensure_postgres_running
log "demo: a chess clock through the engine"
REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}/" cargo run -q --release -p synckairos-engine --bin demo
