#!/usr/bin/env bash
# Measures what the audit trail costs: the release node with OSC_AUDIT_ENABLED=true and
# =false, in the same run on the same machine, under
#   reads:  wrk -t2 -c32 -d10s of GET /configs/{key} (one key, X-User-Key)
#   writes: wrk -t2 -c32 -d10s of POST /configs with unique keys (scripts/bench/unique-writes.lua)
# Each configuration gets a fresh data directory. Ports 19310 (audit on) and 19311 (off).
# Usage: swift build -c release --product secureconf && scripts/bench-audit.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release/secureconf}
ROUNDS=${1:-1}
DURATION=${DURATION:-10s}
export USER_KEY=bench-user-key-0001
API_KEY=bench-admin-api-key-0001
work=$(mktemp -d /tmp/secureconf-bench.XXXXXX)
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

start() { # audit(true|false) port dir
  mkdir -p "$3"
  OSC_AUDIT_ENABLED=$1 OSC_API_KEY=$API_KEY OSC_LOG_LEVEL=WARNING \
    "$BIN" serve --port "$2" --database-path "$3/configurations.db" --salt-file "$3/encryption.salt" --env-file "$3/none.env" \
    >"$3/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/health" >/dev/null && return 0; sleep 0.1; done
  echo "node on port $2 did not start" >&2; cat "$3/node.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

summary() { # label file
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$2")
  p50=$(awk '$1 == "50%" {print $2}' "$2")
  p99=$(awk '$1 == "99%" {print $2}' "$2")
  errors=$(awk '/Non-2xx/ {print $5}' "$2")
  printf '%-22s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$p50" "$p99" "${errors:-0}"
}

echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for audit in true false; do
    port=$([ "$audit" = true ] && echo 19310 || echo 19311)
    dir="$work/audit-$audit-$round"
    start "$audit" "$port" "$dir"
    curl -sf -X POST "http://127.0.0.1:$port/configs" -H "X-User-Key: $USER_KEY" -H 'Content-Type: application/json' \
      -d '{"key":"bench","value":{"host":"db.internal","port":5432,"pool":{"min":2,"max":20}}}' >/dev/null
    curl -sf "http://127.0.0.1:$port/configs/bench" -H "X-User-Key: $USER_KEY" >/dev/null   # derive and cache the key once
    wrk -t2 -c32 -d"$DURATION" --latency -H "X-User-Key: $USER_KEY" "http://127.0.0.1:$port/configs/bench" >"$dir/reads.txt"
    wrk -t2 -c32 -d"$DURATION" --latency -s scripts/bench/unique-writes.lua "http://127.0.0.1:$port" >"$dir/writes.txt"
    verify=$(curl -sf -w ' in %{time_total}s' "http://127.0.0.1:$port/audit/verify" -H "X-API-Key: $API_KEY")
    stop
    summary "round $round audit=$audit reads" "$dir/reads.txt"
    summary "round $round audit=$audit writes" "$dir/writes.txt"
    echo "    GET /audit/verify: $verify"
    echo "    database after the run: $(du -k "$dir/configurations.db" "$dir/configurations.db-wal" 2>/dev/null | awk '{s += $1} END {print s}') KiB"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
