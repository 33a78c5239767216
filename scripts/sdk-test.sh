#!/usr/bin/env bash
# The JavaScript SDK (sdk/js): its generated wire types up to date with
# docs/openapi.json and docs/ws-messages.schema.json, a strict `tsc --noEmit`,
# then node's test runner against real local stacks (each test file starts a
# redis-server and native servers of its own, test/support/stack.ts), the
# `npm pack` install test included; then the example webhook receiver's tests
# (examples/webhook-receiver). Installs Node 22 (scripts/tools.sh) and the
# SDK's pinned dev dependencies when missing.
#
#   SK_BIN_DIR  the folder of the server binaries (default: this script builds
#               the debug fanout-gateway, which the other tests build anyway)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis_binary
SK_TOOLS=node . scripts/tools.sh # Node >= 22 on PATH

if [ -z "${SK_BIN_DIR:-}" ]; then
  log "building the server for the SDK tests"
  cargo build -q --locked -p synckairos-fanout-gateway
  SK_BIN_DIR=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug
fi
export SK_BIN_DIR

cd sdk/js
npm_ci_pinned
log "SDK: generated types are up to date (scripts/gen-types.mjs --check)"
node scripts/gen-types.mjs --check
log "SDK: tsc --noEmit (strict)"
npm run --silent typecheck
log "SDK: node --test against the local stack"
npm test
cd ../..
log "the example webhook receiver: Standard Webhooks' published example verifies, a forged request does not"
node --test examples/webhook-receiver/test/*.test.mjs
