#!/usr/bin/env bash
# TLS: a throwaway CA, a three-node cluster over HTTPS, an untrusted peer refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pytest -q -s tests/tls
