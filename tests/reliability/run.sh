#!/usr/bin/env bash
# SecureConf reliability suite: crash safety, damaged state, abuse, hostile HTTP input
# (pytest against the real binary), then the libFuzzer harnesses in fuzz/.
#
#   tests/reliability/run.sh [--quick] [pytest args...]
#
# --quick: one kill -9 round instead of three, shorter floods, ~500 fuzzed HTTP requests
# instead of ~3000, 20 s per libFuzzer target instead of 60. Budgets: --quick < ~4 min,
# default < ~10 min (plus the first build of the fuzz package, which compiles the whole
# dependency graph with the fuzzer sanitizer once).
#
# The binary is $SECURECONF_BIN, else .build/release/secureconf (copied once per run, so a
# rebuild by someone else does not change it mid-run). Needs root for the tmpfs disk-full
# test, chattr and running a node as `nobody` (each skips with a reason otherwise).
# RELIABILITY_SEED=<n> replays a random schedule; RELIABILITY_SKIP_FUZZ=1 skips fuzz/run.sh.
# Exits non-zero if pytest or the fuzzers fail.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

start=$(date +%s)
quick=0
args=()
for a in "$@"; do
    if [[ "$a" == "--quick" ]]; then quick=1; else args+=("$a"); fi
done

if [[ -z "${SECURECONF_BIN:-}" ]]; then
    SECURECONF_BIN="$repo/.build/release/secureconf"
fi
export SECURECONF_BIN
for i in $(seq 1 60); do
    [[ -x "$SECURECONF_BIN" ]] && break
    [[ $i -eq 1 ]] && echo "run.sh: waiting for $SECURECONF_BIN (being rebuilt?)"
    sleep 5
done
if [[ ! -x "$SECURECONF_BIN" ]]; then
    echo "run.sh: secureconf binary not found at $SECURECONF_BIN (build it with swift build -c release, or set SECURECONF_BIN)" >&2
    exit 2
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import pytest, requests' 2>/dev/null; then
    echo "run.sh: installing pytest and requests"
    "$PY" -m pip install --quiet pytest requests || { echo "run.sh: need pytest and requests" >&2; exit 2; }
fi
if ! "$PY" -c 'import hypothesis' 2>/dev/null; then
    echo "run.sh: installing hypothesis"
    "$PY" -m pip install --quiet hypothesis || echo "run.sh: hypothesis unavailable; its property test will be skipped"
fi

echo "run.sh: reliability suite against $SECURECONF_BIN ($([[ $quick -eq 1 ]] && echo quick || echo full))"
if [[ $quick -eq 1 ]]; then export RELIABILITY_QUICK=1; else unset RELIABILITY_QUICK; fi

(cd "$here" && "$PY" -m pytest "${args[@]}")
pytest_rc=$?
echo "run.sh: pytest exit $pytest_rc ($(( $(date +%s) - start )) s since start)"

fuzz_rc=0
if [[ "${RELIABILITY_SKIP_FUZZ:-0}" == "1" ]]; then
    echo "run.sh: fuzz/run.sh skipped (RELIABILITY_SKIP_FUZZ=1)"
else
    seconds=60
    [[ $quick -eq 1 ]] && seconds=20
    "$repo/fuzz/run.sh" "$seconds"
    fuzz_rc=$?
    echo "run.sh: fuzz/run.sh exit $fuzz_rc"
fi

echo "run.sh: finished in $(( $(date +%s) - start )) s: pytest exit $pytest_rc, fuzzers exit $fuzz_rc"
[[ $pytest_rc -eq 0 && $fuzz_rc -eq 0 ]] && { echo "run.sh: reliability suite passed"; exit 0; }
echo "run.sh: FAILED"
exit 1
