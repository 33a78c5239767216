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

# Node >= 22 first on PATH: the one scripts/tools.sh keeps in .tools/node, else
# the system's if new enough, else that same pinned package installed now
# (without the edge worker's other tools).
use_node22() {
  local arch dir version
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) log "unsupported architecture $(uname -m)"; return 1 ;;
  esac
  dir=$PWD/.tools/node/node_modules/node-linux-$arch/bin
  if [ -x "$dir/node" ]; then PATH=$dir:$PATH; fi
  if [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 22 ]; then
    version=$(sed -n 's/^SK_NODE_VERSION=\([0-9.]*\).*/\1/p' scripts/tools.sh)
    command -v npm >/dev/null || { log "installing nodejs and npm (to bootstrap Node $version)"; apt_install nodejs npm; }
    log "installing Node $version into .tools/node"
    mkdir -p .tools/node
    npm install --silent --prefix .tools/node --no-save --no-package-lock --no-audit --no-fund "node-linux-$arch@$version"
    PATH=$dir:$PATH
  fi
  export PATH
}

if [ -z "${CHROMIUM_PATH:-}" ] && [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (Debian's; the test drives it with playwright-core)"
  apt_install chromium
fi
ensure_redis_binary
use_node22
export NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false

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
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
    [ package.json -nt node_modules/.package-lock.json ]; then
    npm ci --silent
  fi
  npm run --silent build
  npx tsc -p tsconfig.test.json
)

log "installing the example's test dependencies (playwright-core)"
(cd examples/web-chess-clock && npm ci --silent)

log "the browser test: node --test examples/web-chess-clock/test/*.test.mjs"
node --test examples/web-chess-clock/test/*.test.mjs
