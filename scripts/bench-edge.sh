#!/usr/bin/env bash
# The edge stack's benchmark: scripts/bench-stack.sh --shape edge. Until
# 2026-12-02 this script ran without the gateway, the audit consumer and
# PostgreSQL; the figures in docs/BENCHMARKS.md say which they came from.
exec "$(dirname "$0")/bench-stack.sh" --shape edge "$@"
