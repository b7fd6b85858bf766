#!/usr/bin/env bash
# Stops the local cluster (SIGTERM: in-flight requests finish, the stores close cleanly).
# cluster/stop.sh --wipe also deletes cluster/data/.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for pidfile in "$here"/data/node*/pid "$here"/data/prometheus/pid; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
done
[ "${1:-}" = "--wipe" ] && rm -rf "$here/data"
echo "stopped"
