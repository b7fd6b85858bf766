"""Fixtures for the workload suite (`secureconf run`, `export`, `agent`): real nodes from the
release binary (tests/common/nodeproc.py), each test with its own data directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common.nodelogs  # noqa: E402
from common import nodeproc  # noqa: E402

USER_KEY = "workload-user-key-01"


def pytest_configure(config):
    config.pluginmanager.register(common.nodelogs, "secureconf-nodelogs")


@pytest.fixture(scope="session")
def binary() -> str:
    path = nodeproc.binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.exit(f"secureconf binary not found at {path}; build it or set SECURECONF_BIN", returncode=2)
    return str(nodeproc.binary_snapshot())


class Node(nodeproc.NodeProcess):
    def put(self, key, value, environment="prod", category=None, user_key=USER_KEY):
        h = {"X-User-Key": user_key}
        r = requests.get(f"{self.url}/configs/{key}", params={"environment": environment}, headers=h, timeout=15)
        if r.status_code == 404:
            body = {"key": key, "value": value, "environment": environment}
            if category:
                body["category"] = category
            r = requests.post(self.url + "/configs", json=body, headers=h, timeout=15)
            assert r.status_code == 201, r.text
        else:
            r = requests.put(f"{self.url}/configs/{key}", params={"environment": environment}, json={"value": value},
                             headers=h, timeout=15)
            assert r.status_code == 200, r.text

    def remove(self, key, environment="prod", user_key=USER_KEY):
        r = requests.delete(f"{self.url}/configs/{key}", params={"environment": environment},
                            headers={"X-User-Key": user_key}, timeout=15)
        assert r.status_code == 200, r.text


@pytest.fixture
def node(tmp_path, binary):
    port = nodeproc.free_port()
    env = nodeproc.clean_environment()
    env.update({
        "OSC_HOST": "127.0.0.1", "OSC_HOST_PORT": str(port),
        "OSC_DATABASE_PATH": str(tmp_path / "node" / "configurations.db"),
        "OSC_SALT_FILE_PATH": str(tmp_path / "node" / "encryption.salt"),
        "OSC_SSE_KEEPALIVE_SECONDS": "1",
    })
    n = Node(tmp_path / "node", port, env, binary=Path(binary), log_name="node.log")
    n.start()
    yield n
    if n.alive():
        n.stop()


@pytest.fixture
def client_env(node):
    """What a workload command is run with: the user key in the environment, nothing else."""
    env = nodeproc.clean_environment()
    env["SECURECONF_USER_KEY"] = USER_KEY
    return env
