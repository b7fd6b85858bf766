#!/usr/bin/env bash
# Runs the SecureConf compatibility + end-to-end suite against the real binary:
#   1. tests/compat/client_v2  with opensecureconf-client 2.0.2 (.venv-osc2)
#   2. tests/compat/client_v3  with opensecureconf-client 3.1.0 (.venv-osc3)
#   3. tests/compat/node       client-independent e2e checks   (.venv-osc3)
# The binary is $SECURECONF_BIN, else .build/release/secureconf, else .build/debug/secureconf.
# Extra arguments go to every pytest run (e.g. ./run.sh -x -k salt).
# Exits non-zero if any of the three runs fails.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [[ -z "${SECURECONF_BIN:-}" ]]; then
    if [[ -x "$repo/.build/release/secureconf" ]]; then
        SECURECONF_BIN="$repo/.build/release/secureconf"
    else
        SECURECONF_BIN="$repo/.build/debug/secureconf"
    fi
fi
export SECURECONF_BIN
if [[ ! -x "$SECURECONF_BIN" ]]; then
    echo "run.sh: secureconf binary not found at $SECURECONF_BIN (build it, or set SECURECONF_BIN)" >&2
    exit 2
fi
echo "run.sh: testing $SECURECONF_BIN"

"$here/setup_venvs.sh" || { echo "run.sh: could not set up the client virtualenvs" >&2; exit 2; }

cd "$here"
status=0
declare -a summary
run() {
    local name="$1" python="$2" dir="$3"
    shift 3
    echo
    echo "=== $name ==="
    "$python" -m pytest "$dir" "$@"
    local rc=$?
    summary+=("$name: pytest exit $rc")
    [[ $rc -eq 0 ]] || status=1
}

run "client 2.0.2" "$here/.venv-osc2/bin/python" client_v2 "$@"
run "client 3.1.0" "$here/.venv-osc3/bin/python" client_v3 "$@"
run "node e2e"     "$here/.venv-osc3/bin/python" node "$@"

echo
printf '%s\n' "${summary[@]}"
[[ $status -eq 0 ]] && echo "run.sh: all suites passed" || echo "run.sh: FAILED"
exit $status
