#!/usr/bin/env bash
# Builds the edge worker into edge-worker/build/ (index.js + index_bg.wasm)
# with the pinned tools of scripts/tools.sh; nothing is downloaded. This is
# wrangler.toml's [build] command, so `wrangler dev` and `wrangler deploy` run it.
#
#   scripts/worker-build.sh            release build (what gets deployed)
#   scripts/worker-build.sh --dev      debug build, no wasm-opt (faster)
#   scripts/worker-build.sh --force    rebuild even if the output is up to date
#
# Other arguments go to worker-build (`--no-opt`, …). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh

# worker-build fetches any of these three it is not given; fail instead.
for bin in "$WORKER_BUILD_BIN" "$WASM_BINDGEN_BIN" "$ESBUILD_BIN" "$WASM_OPT_BIN"; do
  [ -x "$bin" ] || { echo "missing $bin (run scripts/tools.sh)" >&2; exit 1; }
done

# Release settings for the wasm module only (env, so the workspace's own
# release profile, which keeps debug info for native profiling, stays as is):
# small code, whole-program optimisation, no debug info (wasm-bindgen warns
# about `strip`, so it is not used).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_DEBUG=0

mode=--release profile=release force=0
args=()
for a in "$@"; do
  case "$a" in
    --dev) mode=--dev profile=debug; args+=(--no-opt) ;;
    --force) force=1 ;;
    *) args+=("$a") ;;
  esac
done

cd edge-worker
# Skip the bindgen/wasm-opt/bundle steps (~10 s) when the wasm cargo produces
# is the one the output was made from: `wrangler dev` runs this on every
# start. The cargo build is worker-build's own (same command and env), so
# cargo decides freshness and worker-build's build below is a no-op.
export WASM_BINDGEN_USE_JS_SYS=1
cargo_profile=(--release)
[ "$profile" = debug ] && cargo_profile=()
cargo build --quiet --lib --target wasm32-unknown-unknown "${cargo_profile[@]}" --locked
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0)).target_directory)')
wasm="$target_dir/wasm32-unknown-unknown/$profile/synckairos_edge_worker.wasm"
stamp="$mode ${args[*]} $WASM_BINDGEN_BIN $WASM_OPT_BIN $(sha256sum <"$wasm")"
if [ "$force" = 0 ] && [ -f build/index.js ] && [ -f build/index_bg.wasm ] &&
  [ "$(cat build/.stamp 2>/dev/null)" = "$stamp" ]; then
  echo "edge-worker/build is up to date" >&2
  exit 0
fi
# Trailing `--locked` goes to cargo: the build fails rather than edit Cargo.lock.
"$WORKER_BUILD_BIN" "$mode" "${args[@]}" --locked
echo "$stamp" >build/.stamp
ls -l build/index.js build/index_bg.wasm >&2
