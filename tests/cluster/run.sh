#!/usr/bin/env bash
# Runs the cluster suite against the release binary (.build/release/secureconf, or
# SECURECONF_BIN). Extra arguments go to pytest, e.g. tests/cluster/run.sh -k federated
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if ! python3 -c 'import pytest, requests' 2>/dev/null; then
  python3 -m pip install --quiet pytest requests 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pytest requests
fi
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q tests/cluster "$@"
