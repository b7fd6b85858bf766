#!/usr/bin/env bash
# Creates one virtualenv per published OpenSecureConf client version:
#   tests/compat/.venv-osc2  opensecureconf-client==2.0.2
#   tests/compat/.venv-osc3  opensecureconf-client==3.1.0, httpx (its SSEClient), openapi-spec-validator, schemathesis
# each with pytest, requests and cryptography. Safe to re-run: an existing venv whose
# packages already import is left alone. FORCE=1 rebuilds both.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

make_venv() {
    local dir="$1" client_version="$2"
    shift 2
    local extras=("$@")
    if [[ "${FORCE:-0}" != 1 && -x "$dir/bin/python" ]] &&
        "$dir/bin/python" - "$client_version" "${extras[@]}" <<'PY' >/dev/null 2>&1
import sys, importlib, importlib.metadata as m
import pytest, requests, cryptography, opensecureconf_client  # noqa: F401
for extra in sys.argv[2:]:
    m.version(extra)
sys.exit(0 if m.version("opensecureconf-client") == sys.argv[1] else 1)
PY
    then
        echo "setup_venvs: $dir is ready (opensecureconf-client $client_version)"
        return 0
    fi
    echo "setup_venvs: creating $dir (opensecureconf-client $client_version)"
    rm -rf "$dir"
    "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
        "opensecureconf-client==$client_version" pytest requests cryptography "${extras[@]}"
    "$dir/bin/python" -c "import importlib.metadata as m; print('setup_venvs:', '$dir', 'has opensecureconf-client', m.version('opensecureconf-client'))"
}

make_venv "$here/.venv-osc2" 2.0.2
# The node suite runs here too; it checks the API document with the last two.
make_venv "$here/.venv-osc3" 3.1.0 httpx openapi-spec-validator schemathesis
