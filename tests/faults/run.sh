#!/usr/bin/env bash
# The fault suite (root: network namespaces and iptables) against the release binary
# (.build/release/secureconf, or SECURECONF_BIN). Quick pass (CI, about 2 minutes): each
# fault once for 5 s. Full run: tests/faults/run.sh --full (each fault 3 times for 30 s,
# about 20 minutes). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ "${1:-}" = "--full" ]; then
  shift
  export FAULTS_SECONDS="${FAULTS_SECONDS:-30}" FAULTS_ROUNDS="${FAULTS_ROUNDS:-3}"
fi
if ! python3 -c 'import pytest, requests' 2>/dev/null; then
  python3 -m pip install --quiet pytest requests 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pytest requests
fi
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q -s tests/faults "$@"
