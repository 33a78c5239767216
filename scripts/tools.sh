#!/usr/bin/env bash
# The pinned tools that build and run the edge worker, installed only from the
# package registries (crates, npm, Debian) and only when missing or at another
# version. Idempotent; no prompts.
#
#   . scripts/tools.sh     installs what is missing, then exports the env below
#   scripts/tools.sh       installs what is missing, then prints that env as
#                          `export` lines (eval "$(scripts/tools.sh)")
#   SK_TOOLS=node . scripts/tools.sh
#                          only Node >= 22 (the SDK and the web example need
#                          no wasm toolchain), then exports the env below
#   SK_TOOLS=promtool . scripts/tools.sh
#                          only promtool (scripts/check-ops.sh: the alert rules'
#                          checks and unit tests), from Debian's prometheus
#                          package at the pinned version
#
# Exported: WASM_BINDGEN_BIN, WASM_OPT_BIN, ESBUILD_BIN (worker-build downloads
# whatever these do not name, and it never looks on PATH), WORKER_BUILD_BIN,
# WORKERD_BIN, PATH (Node >= 22.12 and node_modules/.bin first), and the
# variables that keep wrangler and npm from calling home.
#
# Where things go:
#   cargo tools  ${SYNCKAIROS_TOOLS:-~/.cache/synckairos/tools}/<crate>-<version>
#                (one root per version: two checkouts pinning different
#                wasm-bindgen versions never reinstall over each other, and the
#                folder survives between CI runs like the cargo target dir)
#   Node 22      .tools/node (repo-local, gitignored) when the system node is older
#   wrangler, workerd, esbuild, binaryen   node_modules/ (pinned in package.json)
#   promtool     /usr/bin (Debian's prometheus package; as root or with sudo)

# --- pins ------------------------------------------------------------------
SK_WORKER_BUILD_VERSION=0.8.7
SK_NODE_VERSION=22.23.3 # npm package node-linux-<arch>; wrangler 4.x needs >= 22.12
SK_NODE_MIN=22.12.0
# promtool: Debian's prometheus package, this upstream version (any Debian
# revision of it: a point release replaces the older one in the archive).
SK_PROMETHEUS_VERSION=2.42.0
# wasm-bindgen-cli: exactly the wasm-bindgen of Cargo.lock (read below).
# wrangler and binaryen: exact versions in package.json / package-lock.json.

_sk_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_sk_tools=${SYNCKAIROS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/synckairos/tools}

# The version of a package in Cargo.lock.
_sk_lock_version() {
  awk -v name="$1" '$1 == "name" && $3 == "\"" name "\"" { getline; gsub(/"/, "", $3); print $3; exit }' \
    "$_sk_root/Cargo.lock"
}

_sk_node_arch() {
  case "$(uname -m)" in
    x86_64) echo x64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) echo "unsupported architecture $(uname -m)" >&2; return 1 ;;
  esac
}

# 0 when version $1 >= version $2 (dotted numbers, optional leading v).
_sk_version_ge() {
  [ "$(printf '%s\n%s\n' "${1#v}" "${2#v}" | sort -V | head -n 1)" = "${2#v}" ]
}

# `cargo install` of crate $1 at version $2 into its own root, unless that
# root's binary $3 already reports the version. Extra arguments go to cargo.
_sk_cargo_tool() {
  local crate=$1 version=$2 bin=$3
  shift 3
  local root="$_sk_tools/$crate-$version"
  if [ -x "$root/bin/$bin" ] && "$root/bin/$bin" --version 2>/dev/null | grep -qw "$version"; then
    return 0
  fi
  log "installing $crate $version (cargo install, a few minutes cold)"
  local t=$SECONDS
  cargo install --quiet --force --root "$root" "$crate" --version "=$version" "$@"
  log "installed $crate $version ($((SECONDS - t)) s)"
}

_sk_install() {
  set -euo pipefail
  . "$_sk_root/scripts/lib.sh"
  local t0=$SECONDS

  # worker-build: the wasm build driver (wasm-pack's steps + the Worker shim).
  if ! pkg-config --exists openssl 2>/dev/null; then
    log "installing libssl-dev and pkg-config (worker-build links OpenSSL)"
    apt_install libssl-dev pkg-config
  fi
  ensure_wasm_target
  _sk_cargo_tool worker-build "$SK_WORKER_BUILD_VERSION" worker-build --locked

  # wasm-bindgen-cli must equal the wasm-bindgen library to the patch version.
  # Not --locked: its lock pins a crate version the registry no longer serves.
  local wb
  wb=$(_sk_lock_version wasm-bindgen)
  [ -n "$wb" ] || { log "no wasm-bindgen in Cargo.lock"; return 1; }
  _sk_cargo_tool wasm-bindgen-cli "$wb" wasm-bindgen

  _sk_install_node

  # wrangler (+ workerd, esbuild) and binaryen, exactly as package-lock.json
  # says. `npm install`, not `npm ci`: the registry lacks workerd's other-OS
  # packages at this version, so the lock cannot list them and `npm ci` refuses.
  _sk_env_node
  # The lock names no registry: npm resolves against whichever is configured.
  export NPM_CONFIG_OMIT_LOCKFILE_REGISTRY_RESOLVED=true
  if ! _sk_node_modules_current; then
    log "installing npm packages (wrangler, workerd, esbuild, binaryen)"
    (cd "$_sk_root" && npm install --silent --no-audit --no-fund)
  fi
  log "tools ready ($((SECONDS - t0)) s)"
}

# Node >= 22.12 (wrangler, the SDK, the web example): the system one if new
# enough, else the npm package node-linux-<arch> unpacked into .tools/node.
_sk_install_node() {
  set -euo pipefail
  . "$_sk_root/scripts/lib.sh"
  if ! command -v npm >/dev/null; then
    log "installing nodejs and npm (to bootstrap Node $SK_NODE_VERSION)"
    apt_install nodejs npm
  fi
  local sys_node local_node arch
  arch=$(_sk_node_arch)
  local_node="$_sk_root/.tools/node/node_modules/node-linux-$arch/bin/node"
  sys_node=$(command -v node || true)
  if { [ -z "$sys_node" ] || ! _sk_version_ge "$(node --version)" "$SK_NODE_MIN"; } &&
    ! { [ -x "$local_node" ] && [ "$("$local_node" --version)" = "v$SK_NODE_VERSION" ]; }; then
    log "installing Node $SK_NODE_VERSION into .tools/node (system node: $(node --version 2>/dev/null || echo none))"
    mkdir -p "$_sk_root/.tools/node"
    npm install --silent --prefix "$_sk_root/.tools/node" --no-save --no-package-lock \
      --no-audit --no-fund "node-linux-$arch@$SK_NODE_VERSION"
  fi
}

# promtool at SK_PROMETHEUS_VERSION, from Debian's prometheus package (the
# server it also ships is not wanted: a service the package started is
# stopped and disabled again).
_sk_install_promtool() {
  set -euo pipefail
  . "$_sk_root/scripts/lib.sh"
  if command -v promtool >/dev/null &&
    promtool --version 2>&1 | head -n 1 | grep -q "version $SK_PROMETHEUS_VERSION+"; then
    return 0
  fi
  log "installing promtool (Debian's prometheus $SK_PROMETHEUS_VERSION)"
  apt_install --no-install-recommends "prometheus=$SK_PROMETHEUS_VERSION+*"
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  promtool --version 2>&1 | head -n 1 | grep -q "version $SK_PROMETHEUS_VERSION+" || {
    log "promtool is not at version $SK_PROMETHEUS_VERSION: $(promtool --version 2>&1 | head -n 1)"
    return 1
  }
}

# PATH with Node >= 22.12 first (and the repo's node_modules/.bin).
_sk_env_node() {
  local arch
  arch=$(_sk_node_arch) || return 1
  local dir="$_sk_root/.tools/node/node_modules/node-linux-$arch/bin"
  if [ -x "$dir/node" ]; then
    case ":$PATH:" in *":$dir:"*) ;; *) PATH="$dir:$PATH" ;; esac
  fi
  case ":$PATH:" in *":$_sk_root/node_modules/.bin:"*) ;; *) PATH="$_sk_root/node_modules/.bin:$PATH" ;; esac
  export PATH
}

# 0 when node_modules holds exactly the versions package.json pins.
_sk_node_modules_current() {
  (cd "$_sk_root" && node -e '
    const fs = require("fs");
    const want = require("./package.json").devDependencies;
    for (const [name, version] of Object.entries(want)) {
      const file = `node_modules/${name}/package.json`;
      if (!fs.existsSync(file) || JSON.parse(fs.readFileSync(file)).version !== version) process.exit(1);
    }' 2>/dev/null)
}

_sk_export_env() {
  local wb arch
  wb=$(_sk_lock_version wasm-bindgen)
  arch=$(_sk_node_arch) || return 1
  _sk_env_node
  export WORKER_BUILD_BIN="$_sk_tools/worker-build-$SK_WORKER_BUILD_VERSION/bin/worker-build"
  export WASM_BINDGEN_BIN="$_sk_tools/wasm-bindgen-cli-$wb/bin/wasm-bindgen"
  export ESBUILD_BIN="$_sk_root/node_modules/@esbuild/linux-$arch/bin/esbuild"
  # binaryen's wasm-opt, compiled to JS/wasm (the npm package has no native
  # binary); it runs under the node on PATH.
  export WASM_OPT_BIN="$_sk_root/node_modules/binaryen/bin/wasm-opt"
  export WORKERD_BIN="$_sk_root/node_modules/@cloudflare/workerd-linux-${arch/x64/64}/bin/workerd"
  # wrangler and npm offline: no telemetry, no error reports, no fetch of the
  # cf object (miniflare uses a built-in one), no banner (the banner is what
  # runs wrangler's npm update check on every command; no variable turns that
  # check off), no npm update notifier.
  export WRANGLER_SEND_METRICS=false
  export WRANGLER_SEND_ERROR_REPORTS=false
  export CLOUDFLARE_CF_FETCH_ENABLED=false
  export WRANGLER_HIDE_BANNER=true
  export NO_UPDATE_NOTIFIER=1
  export NPM_CONFIG_UPDATE_NOTIFIER=false
  export NPM_CONFIG_FUND=false
  export NPM_CONFIG_AUDIT=false
  export NPM_CONFIG_OMIT_LOCKFILE_REGISTRY_RESOLVED=true
}

_sk_print_env() {
  local v
  for v in PATH WORKER_BUILD_BIN WASM_BINDGEN_BIN WASM_OPT_BIN ESBUILD_BIN WORKERD_BIN \
    WRANGLER_SEND_METRICS WRANGLER_SEND_ERROR_REPORTS CLOUDFLARE_CF_FETCH_ENABLED \
    WRANGLER_HIDE_BANNER NO_UPDATE_NOTIFIER NPM_CONFIG_UPDATE_NOTIFIER NPM_CONFIG_FUND NPM_CONFIG_AUDIT \
    NPM_CONFIG_OMIT_LOCKFILE_REGISTRY_RESOLVED; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
}

if [ "${SK_TOOLS:-all}" = promtool ]; then
  # Only promtool (scripts/check-ops.sh); nothing to export.
  (_sk_install_promtool)
elif [ "${SK_TOOLS:-all}" = node ]; then
  # Only Node (scripts that need no wasm toolchain): install, then export
  # PATH and the quiet npm settings.
  (_sk_install_node) && _sk_export_env
elif [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: install in a subshell (its `set -e` stays there), then export.
  (_sk_install) && _sk_export_env
else
  _sk_install && _sk_export_env && _sk_print_env
fi
