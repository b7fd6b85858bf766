#!/usr/bin/env bash
# Runs every test: the Swift unit and in-process HTTP tests, then the compatibility and
# end-to-end suite that drives the release binary with OpenSecureConf's published clients.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
swift build --build-tests
swift test --skip-build
swift build -c release --product secureconf
SECURECONF_BIN="$PWD/.build/release/secureconf" tests/compat/run.sh
