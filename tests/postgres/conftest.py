"""Fixtures of the PostgreSQL suite: a private PostgreSQL server (pgserver.py) and real
`secureconf` nodes on it, each with its own working directory and port, all given the same
OSC_DATABASE_URL and the same salt file, as an operator would run them behind a load
balancer. Every process is killed at the end whatever the outcome."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import nodeproc  # noqa: E402
from common.nodeproc import NodeProcess, ProcessRegistry, clean_environment, free_port, token  # noqa: E402
from pgserver import PgServer  # noqa: E402

_FIGURES: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _FIGURES:
        terminalreporter.section("postgresql measurements")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture
def report():
    def record(name: str, value: str) -> None:
        _FIGURES.append((name, value))
        print(f"{name}: {value}")
    return record


@pytest.fixture(scope="session", autouse=True)
def _binary_present():
    binary = nodeproc.binary_path()
    if not binary.is_file():
        pytest.exit(f"secureconf binary not found at {binary}; build it or set SECURECONF_BIN", returncode=2)
    nodeproc.binary_snapshot()


@pytest.fixture
def pg():
    server = PgServer()
    server.start()
    server.create_role_and_db("osc", "osc-db-password", "osc")
    yield server
    server.stop()


class PgNodes:
    """Nodes on one database. `node()` makes one (not started); the first started creates the salt."""

    def __init__(self, root: Path, pg: PgServer, registry: ProcessRegistry):
        self.root = root
        self.pg = pg
        self.registry = registry
        self.nodes: list[NodeProcess] = []
        self.api_key = token("api-")
        self.salt = root / "shared.salt"

    def env(self, port: int, workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = clean_environment()
        env.update({
            "OSC_HOST": "127.0.0.1",
            "OSC_HOST_PORT": str(port),
            "OSC_DATABASE_URL": self.pg.url("osc", "osc-db-password", "osc"),
            "OSC_SALT_FILE_PATH": str(self.salt),
            "OSC_API_KEY_REQUIRED": "true",
            "OSC_API_KEY": self.api_key,
            "OSC_LOG_FORMAT": "console",
            "OSC_KEY_CACHE_TTL": "600",
        })
        env.update(extra or {})
        return env

    def node(self, extra: dict[str, str] | None = None) -> NodeProcess:
        port = free_port()
        workdir = self.root / f"node{len(self.nodes) + 1}"
        n = NodeProcess(workdir, port, self.env(port, workdir, extra), binary=nodeproc.binary_snapshot(),
                        registry=self.registry)
        self.nodes.append(n)
        return n

    def three(self, extra: dict[str, str] | None = None) -> list[NodeProcess]:
        first = self.node(extra)
        first.start()
        rest = [self.node(extra) for _ in range(2)]
        for n in rest:
            n.start()
        return [first, *rest]


@pytest.fixture
def nodes(tmp_path, pg):
    registry = ProcessRegistry()
    group = PgNodes(tmp_path, pg, registry)
    yield group
    registry.kill_all()
    crashes = [c for c in (n.crashes() for n in group.nodes) if c]
    if crashes:
        pytest.fail("\n\n".join(crashes), pytrace=False)
