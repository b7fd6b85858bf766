#!/usr/bin/env bash
# Runs the PostgreSQL suite (a private PostgreSQL from Debian's `postgresql` package, real
# nodes on it) against the release binary (.build/release/secureconf, or SECURECONF_BIN).
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q tests/postgres "$@"
