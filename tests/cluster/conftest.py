"""Fixtures for the cluster suite: real `secureconf` processes on free loopback ports.

Run it with tests/cluster/run.sh (or `python3 -m pytest -q tests/cluster` from the repo
root); SECURECONF_BIN picks another binary than .build/release/secureconf. The session
runs a private copy of the binary, so a rebuild during the run cannot mix two builds.

- `factory`: builds clusters for one test; every process it started is killed at the end
  (SIGTERM to its process group, then SIGKILL), whatever the outcome, and the test fails
  if any of its nodes crashed (with the crashed thread's backtrace).
- `replica3`: one three-node replica cluster shared by a module's tests.
- `report`: records a measured figure; all figures are printed in the terminal summary.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import common.nodelogs  # noqa: E402
from common import nodeproc  # noqa: E402
from harness import ClusterFactory, ProcessRegistry, secureconf_binary  # noqa: E402


def pytest_configure(config):
    # A failing test's report carries the logs of the nodes it ran.
    config.pluginmanager.register(common.nodelogs, "secureconf-nodelogs")

_FIGURES: list[tuple[str, str]] = []


def pytest_report_header(config):
    return f"secureconf binary: {nodeproc.binary_path()}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _FIGURES:
        terminalreporter.section("cluster measurements")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session", autouse=True)
def _binary_present():
    binary = nodeproc.binary_path()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.exit(f"secureconf binary not found at {binary}; build it or set SECURECONF_BIN", returncode=2)
    # Every node runs the session's private copy: a rebuild during the run must not mix two builds.
    nodeproc.binary_snapshot()
    yield


@pytest.fixture
def report():
    def record(name: str, value: str) -> None:
        _FIGURES.append((name, value))
        print(f"{name}: {value}")

    return record


@pytest.fixture
def registry():
    r = ProcessRegistry()
    yield r
    r.kill_all()


def _no_crash(factory: ClusterFactory) -> None:
    crashes = factory.crashes()
    if crashes:
        pytest.fail("\n\n".join(crashes), pytrace=False)


@pytest.fixture
def factory(tmp_path, registry):
    f = ClusterFactory(tmp_path / "nodes", registry)
    yield f
    registry.kill_all()
    _no_crash(f)


@pytest.fixture(scope="module")
def module_registry():
    r = ProcessRegistry()
    yield r
    r.kill_all()


@pytest.fixture(scope="module")
def module_factory(tmp_path_factory, module_registry):
    f = ClusterFactory(tmp_path_factory.mktemp("module-nodes"), module_registry)
    yield f
    module_registry.kill_all()
    _no_crash(f)


@pytest.fixture(scope="module")
def replica3(module_factory):
    cluster = module_factory.cluster(3, "replica")
    cluster.wait_healthy(timeout=15)
    return cluster
