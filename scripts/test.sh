#!/usr/bin/env bash
# Runs every check and test. Installs what is missing (redis-server,
# postgresql, the wasm target, the edge worker's pinned tools, promtool); the tests start
# their own redis-server processes on free ports, the end-to-end tests the
# built worker under workerd in front of them, and the audit tests a fresh
# PostgreSQL database each (one of them a PostgreSQL server of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_redis_binary
ensure_postgres_running
SK_TEST_PG_ADMIN_URL=$(pg_admin_url)
export SK_TEST_PG_ADMIN_URL
ensure_wasm_target
# The gateway's rediss:// test makes a self-signed certificate.
command -v openssl >/dev/null || { log "installing openssl"; apt_install openssl; }

log "format";  cargo fmt --all -- --check
log "lint";    cargo clippy --workspace --all-targets --locked -- -D warnings
log "core builds for wasm32-unknown-unknown"
cargo build -p synckairos-core --target wasm32-unknown-unknown --locked
log "edge worker lints clean for wasm32-unknown-unknown"
cargo clippy -p synckairos-edge-worker --target wasm32-unknown-unknown --locked -- -D warnings
log "edge worker tools (pinned; installed only when missing) and the wasm build"
scripts/tools.sh >/dev/null
scripts/worker-build.sh
log "wrangler deploy --dry-run of every deployable configuration (offline)"
scripts/deploy-dry-run.sh
log "deployment manifests (Kubernetes schemas offline, Fly configs)"
scripts/check-deploy.sh
log "operations: alert rules (promtool check and unit tests), dashboards and runbook against a live scrape"
scripts/check-ops.sh
log "contract: schemathesis against the native server and the worker (docs/API.md, Contract checks)"
scripts/schemathesis.sh
log "tests"
# --nocapture shows the differential tallies and the contention result.
cargo test --workspace --locked -- --nocapture
log "JavaScript SDK: generated types, tsc --noEmit, node --test against local servers"
scripts/sdk-test.sh
log "browser: the web chess clock in headless Chromium against the local stack"
scripts/browser-test.sh
