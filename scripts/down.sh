#!/usr/bin/env bash
# Stops what scripts/up.sh started (the audit consumer, the webhook worker and its example receiver, the native server, workerd, the gateway,
# upstash-local, the web chess clock's static server); Redis and
# PostgreSQL, which the machine may run for other things, stay up.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet=0
[ "${1:-}" = --quiet ] && quiet=1
for name in web-example webhook-worker webhook-receiver audit-consumer server workerd fanout-gateway upstash-local; do
  pidfile=.run/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    [ "$quiet" = 1 ] || echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
