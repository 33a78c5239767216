#!/usr/bin/env bash
# The web chess clock (examples/web-chess-clock) in a real browser against
# the real stack: Debian's Chromium driven by playwright-core (no browser is
# ever downloaded), a throw-away redis-server and two native servers started
# by the SDK's test helpers. Prints the tap→mirror delays, how closely two
# pages agree on the running clock, and the recovery time after a server is
# killed; screenshots and the numbers as JSON go to a folder in the system's
# temporary directory (the test prints where).
#
# Installs what is missing: chromium and redis-server (Debian), Node >= 22
# (the pinned package scripts/tools.sh uses, into .tools/node), the npm
# packages of sdk/js and of the example (exact versions from their locks).
#
#   SK_BIN_DIR      the folder of the server binaries (default: this script
#                   builds the release fanout-gateway)
#   CHROMIUM_PATH   the browser (default /usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ -z "${CHROMIUM_PATH:-}" ] && [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (Debian's; the test drives it with playwright-core)"
  apt_install chromium
fi
ensure_redis_binary
SK_TOOLS=node . scripts/tools.sh # Node >= 22 first on PATH, npm quiet and offline-minded

if [ -z "${SK_BIN_DIR:-}" ]; then
  log "building the native server (release, as deployed: the latency numbers mean something)"
  cargo build -q --release --locked -p synckairos-fanout-gateway
  SK_BIN_DIR=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
fi
export SK_BIN_DIR

log "building the SDK and its test helpers (sdk/js)"
(
  cd sdk/js
  npm_ci_pinned
  npm run --silent build
  npx tsc -p tsconfig.test.json
)

log "installing the example's test dependencies (playwright-core)"
(cd examples/web-chess-clock && npm_ci_pinned)

log "the browser test: node --test examples/web-chess-clock/test/*.test.mjs"
node --test examples/web-chess-clock/test/*.test.mjs
