#!/usr/bin/env bash
# The whole performance comparison on a fresh clone, one command:
#   scripts/bench.sh                 # every phase, 10 s per load, growth to 1,000,000 entries (about 25 minutes)
#   scripts/bench.sh --quick         # 3 s per load; add --growth 1000,10000,100000 to stop growth earlier
# Installs what the comparison needs (wrk, etcd-server, matplotlib), builds the release node
# and the HTTP ceiling program, then runs bench/bench.py. The table is printed and the JSON
# and the growth plot go to bench-results/ (bench.json, growth.svg). Extra arguments go to bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
swift build -c release --product secureconf
swift build -c release --product secureconf-ceiling
mkdir -p bench-results
growth=(--growth)
for a in "$@"; do case "$a" in --growth|--growth=*|--only) growth=() ;; esac; done
exec python3 bench/bench.py "${growth[@]}" --json-out bench-results/bench.json --plot-out bench-results/growth.svg "$@"
