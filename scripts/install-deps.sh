#!/usr/bin/env bash
# Installs what a fresh Debian machine with Swift 6.3 lacks to build, run and test SecureConf.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
packages=(libssl-dev libsqlite3-dev libcurl4-openssl-dev)
if [ "${1:-}" = "--test" ]; then
  # Test-only tools: Prometheus/promtool for the metrics checks, wrk for the benchmark, openssl for TLS fixtures,
  # gcc: the cluster suite compiles tests/cluster/fakeclock.c, its wall-clock shim.
  # chromium + chromium-driver: the web console's browser suite (tests/cluster/test_console.py, Selenium).
  # etcd-server: the benchmark's peer (bench/bench.py --only peers), also in its bounded pass.
  # iproute2 + iptables: the fault suite's network namespaces and partitions (tests/faults).
  # postgresql: the PostgreSQL suite's private servers (tests/postgres; started by the suite, as
  # the postgres user under root; the package's own cluster is not used).
  packages+=(prometheus wrk openssl sqlite3 gcc chromium chromium-driver etcd-server iproute2 iptables postgresql)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  # Python's cryptography is the interop reference for the Swift crypto tests.
  # python-dotenv reads back `secureconf export --format dotenv`; kubernetes-validate checks deploy/kubernetes offline.
  # matplotlib draws the benchmark's growth plot.
  python3 -c "import cryptography, pytest, requests, yaml, dotenv, kubernetes_validate, selenium, matplotlib" 2>/dev/null \
    || python3 -m pip install -q cryptography pytest requests pyyaml python-dotenv kubernetes-validate selenium matplotlib 2>/dev/null \
    || python3 -m pip install -q --break-system-packages cryptography pytest requests pyyaml python-dotenv kubernetes-validate selenium matplotlib
fi
