#!/usr/bin/env bash
# `wrangler deploy --dry-run` for every deployable configuration of
# wrangler.toml (the top level, which a plain `wrangler deploy` ships, then
# each [env.*]), offline: it builds and bundles the worker and lists its
# bindings without uploading anything. Fails unless each one binds
# AUTH_MODE "jwt".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/tools.sh >/dev/null
export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false \
  CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_HIDE_BANNER=true
out=$(mktemp -d -t deploy-dry-run.XXXXXX)
trap 'rm -rf "$out"' EXIT
envs=("" $(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("wrangler.toml", "rb")).get("env", {})))'))
for env in "${envs[@]}"; do
  args=(deploy --dry-run --outdir "$out/${env:-top}")
  [ -n "$env" ] && args+=(--env "$env")
  if ! wrangler "${args[@]}" >"$out/log" 2>&1; then
    cat "$out/log" >&2
    log "wrangler ${args[*]} failed"
    exit 1
  fi
  grep -q 'env.AUTH_MODE ("jwt")' "$out/log" || {
    cat "$out/log" >&2
    log "wrangler ${args[*]}: AUTH_MODE is not \"jwt\""
    exit 1
  }
  log "wrangler deploy --dry-run${env:+ --env $env}: ok (AUTH_MODE jwt)"
done
