"""Fixtures for the reliability suite (mechanics in harness.py).

- `binary`: a private copy of the release binary for the whole session.
- `seed` / `rng`: RELIABILITY_SEED (printed) so a failing random schedule can be replayed.
- `nodes`: start any number of nodes in a test's tmp dir; each still running at the end is
  stopped with SIGTERM and the test fails unless it exits 0.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import QUICK, NodeSet, binary_path, binary_snapshot, busy_machine  # noqa: E402

SEED = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(1, 2**31))


def pytest_report_header(config):
    load = os.getloadavg()
    return [f"secureconf binary: {binary_path()}",
            f"reliability seed: RELIABILITY_SEED={SEED}  quick: {QUICK}",
            f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores"
            + ("  (overloaded: wall-clock limits are reported, not judged)" if busy_machine() else "")]


@pytest.fixture(scope="session")
def binary():
    try:
        return binary_snapshot()
    except RuntimeError as e:
        pytest.exit(f"{e}; build it or set SECURECONF_BIN", returncode=2)


@pytest.fixture
def seed(request):
    # A per-test seed derived from the session seed and the test name: replaying one test
    # with the same RELIABILITY_SEED gives the same schedule whatever else runs.
    return (SEED * 1_000_003 + sum(map(ord, request.node.name))) % 2**31


@pytest.fixture
def rng(seed):
    return random.Random(seed)


@pytest.fixture
def nodes(tmp_path, binary):
    ns = NodeSet(tmp_path / "nodes", binary)
    yield ns
    problems = ns.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
