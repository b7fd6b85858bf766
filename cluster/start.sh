#!/usr/bin/env bash
# Starts a local three-node replica cluster on 127.0.0.1:9001-9003 (data in cluster/data/),
# and a Prometheus scraping it on 127.0.0.1:9090 when the `prometheus` binary is present.
# Usage: cluster/start.sh [replica|federated]      Stop with cluster/stop.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
mode="${1:-replica}"
bin="${SECURECONF_BIN:-$root/.build/release/secureconf}"
if [ ! -x "$bin" ]; then
  (cd "$root" && scripts/install-deps.sh && swift build -c release --product secureconf)
fi
mkdir -p "$here/data"
keyfile="$here/data/api-key"
[ -s "$keyfile" ] || (head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$keyfile" && chmod 600 "$keyfile")
# The peer credential: only the nodes hold it (clients get the API key).
secretfile="$here/data/cluster-secret"
[ -s "$secretfile" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secretfile")
nodes="127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
for i in 1 2 3; do
  dir="$here/data/node$i"
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "node$i already running (pid $(cat "$dir/pid"))"; continue
  fi
  (
    cd "$dir"
    OSC_HOST=127.0.0.1 OSC_HOST_PORT=900$i \
    OSC_CLUSTER_ENABLED=true OSC_CLUSTER_MODE="$mode" OSC_CLUSTER_NODE_ID=127.0.0.1:900$i OSC_CLUSTER_NODES="$nodes" \
    OSC_CLUSTER_SYNC_INTERVAL="${OSC_CLUSTER_SYNC_INTERVAL:-5}" OSC_CLUSTER_HEALTH_INTERVAL="${OSC_CLUSTER_HEALTH_INTERVAL:-2}" \
    OSC_API_KEY_REQUIRED=true OSC_API_KEY="$(cat "$keyfile")" OSC_CLUSTER_SECRET_FILE="$secretfile" \
    OSC_DATABASE_PATH="$dir/configurations.db" OSC_SALT_FILE_PATH="$dir/encryption.salt" \
    OSC_LOG_FILE="$dir/node.log" OSC_LOG_LEVEL="${OSC_LOG_LEVEL:-INFO}" \
    nohup "$bin" serve >"$dir/stderr.log" 2>&1 &
    echo $! > "$dir/pid"
  )
  echo "node$i: http://127.0.0.1:900$i (pid $(cat "$dir/pid"))"
done
if command -v prometheus >/dev/null 2>&1; then
  pdir="$here/data/prometheus"
  mkdir -p "$pdir"
  if ! { [ -f "$pdir/pid" ] && kill -0 "$(cat "$pdir/pid")" 2>/dev/null; }; then
    nohup prometheus --config.file="$here/prometheus.yml" --storage.tsdb.path="$pdir/tsdb" \
      --web.listen-address=127.0.0.1:9090 >"$pdir/log" 2>&1 &
    echo $! > "$pdir/pid"
    echo "prometheus: http://127.0.0.1:9090"
  fi
fi
echo "API key: cluster/data/api-key   check: cluster/check.sh   stop: cluster/stop.sh"
