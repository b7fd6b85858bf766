#!/usr/bin/env bash
# Sets up a fresh machine and starts a node on the embedded default: SQLite and the salt
# in ./data/, listening on 127.0.0.1:9000 (override with OSC_* variables or flags).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product secureconf
exec .build/release/secureconf serve "$@"
