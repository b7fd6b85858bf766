#!/usr/bin/env bash
# Prints each node's health, salt fingerprint, entries and digest, and whether they agree.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key="$(cat "$here/data/api-key")"
digests=()
for i in 1 2 3; do
  status=$(curl -s -m 2 -H "X-API-Key: $key" "http://127.0.0.1:900$i/cluster/status") || status=""
  digest=$(curl -s -m 2 -H "X-API-Key: $key" "http://127.0.0.1:900$i/cluster/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["digest"][:16], d["revisions"])' 2>/dev/null)
  if [ -z "$status" ]; then echo "node$i: DOWN"; continue; fi
  echo "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"node$i {d['node_id']}: healthy_nodes={d['healthy_nodes']}/{d['total_nodes']} salt={d['salt_fingerprint']} consistent={d['salt_consistent']} entries={d['entries']} digest=$digest\")"
  digests+=("${digest%% *}")
done
if [ "${#digests[@]}" -eq 3 ] && [ "$(printf '%s\n' "${digests[@]}" | sort -u | wc -l)" -eq 1 ]; then
  echo "all three nodes agree"
else
  echo "nodes do not (yet) agree"; exit 1
fi
