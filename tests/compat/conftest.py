"""Fixtures that run the real `secureconf` binary (see harness.py for the mechanics).

- `node_factory`: start any number of nodes for one test; each still running at the end
  is stopped with SIGTERM and the test fails unless it exits 0.
- `node` / `api_node`: one node per test module (plain, and with OSC_API_KEY_REQUIRED=true),
  shared so that PBKDF2 runs once per user key per module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import NodeFactory, random_token, secureconf_binary  # noqa: E402

import common.nodelogs  # noqa: E402  (harness put tests/ on the path)


def pytest_configure(config):
    # A failing test's report carries the logs of the nodes it ran.
    config.pluginmanager.register(common.nodelogs, "secureconf-nodelogs")


def pytest_report_header(config):
    return f"secureconf binary: {secureconf_binary()}"


@pytest.fixture(scope="session", autouse=True)
def _binary_present():
    binary = secureconf_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.exit(f"secureconf binary not found at {binary}; build it or set SECURECONF_BIN", returncode=2)


def _finish(factory: NodeFactory):
    problems = factory.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def node_factory(tmp_path):
    factory = NodeFactory(tmp_path / "nodes")
    yield factory
    _finish(factory)


@pytest.fixture(scope="module")
def module_factory(tmp_path_factory):
    factory = NodeFactory(tmp_path_factory.mktemp("module-nodes"))
    yield factory
    _finish(factory)


@pytest.fixture(scope="module")
def node(module_factory):
    return module_factory.start()


@pytest.fixture(scope="module")
def api_key():
    return random_token("apikey-")


@pytest.fixture(scope="module")
def api_node(module_factory, api_key):
    return module_factory.start(api_key=api_key)


@pytest.fixture
def fresh_node(node_factory):
    """A node of its own, for tests that look at everything a store holds."""
    return node_factory.start()
