#!/usr/bin/env bash
# Runs the workload suite (secureconf run, export, agent) against the release binary
# (.build/release/secureconf, or SECURECONF_BIN). Extra arguments go to pytest. About a minute.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if ! python3 -c 'import pytest, requests, yaml, dotenv' 2>/dev/null; then
  python3 -m pip install --quiet pytest requests pyyaml python-dotenv 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pytest requests pyyaml python-dotenv
fi
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q tests/workloads "$@"
