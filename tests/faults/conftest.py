"""Fixtures for the fault suite: three real nodes, each in a network namespace of its own.

Run it with tests/faults/run.sh (root: ip netns and iptables). FAULTS_SECONDS sets how long
each fault lasts (default 5, the CI pass); FAULTS_ROUNDS repeats each scenario (default 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common.nodelogs  # noqa: E402
from common import nodeproc  # noqa: E402
import netns  # noqa: E402

_ROWS: list[dict] = []
_FIGURES: list[tuple[str, str]] = []


def pytest_configure(config):
    config.pluginmanager.register(common.nodelogs, "secureconf-nodelogs")


def pytest_report_header(config):
    return f"secureconf binary: {nodeproc.binary_path()}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _FIGURES:
        terminalreporter.section("faults: measurements")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")
    if not _ROWS:
        return
    terminalreporter.section("faults: operations, losses, convergence")
    head = f"{'scenario':<34} {'writes':>6} {'acked':>6} {'refused':>7} {'unknown':>7} {'reads':>6} {'lost':>4} {'converged':>9}  verdict"
    terminalreporter.write_line(head)
    for r in _ROWS:
        terminalreporter.write_line(
            f"{r['scenario']:<34} {r['writes']:>6} {r['acknowledged']:>6} {r['refused']:>7} {r['unknown']:>7} "
            f"{r['reads']:>6} {r['lost']:>4} {r['converged_s']:>8.2f}s  {r['verdict']}")


@pytest.fixture(scope="session")
def preconditions():
    """Root, namespaces and iptables, and the binary (the checker's own tests need none)."""
    why = netns.available()
    if why:  # a machine that cannot run the suite fails it, rather than passing it unrun
        pytest.exit(f"the fault suite cannot run here: {why}", returncode=2)
    binary = nodeproc.binary_path()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.exit(f"secureconf binary not found at {binary}; build it or set SECURECONF_BIN", returncode=2)
    nodeproc.binary_snapshot()
    yield


@pytest.fixture
def summary():
    return _ROWS


@pytest.fixture
def report():
    def record(name: str, value: str) -> None:
        _FIGURES.append((name, value))
    return record
