"""The TLS suite's fixtures: a failing test's report carries the logs of the nodes it ran."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common.nodelogs  # noqa: E402


def pytest_configure(config):
    config.pluginmanager.register(common.nodelogs, "secureconf-nodelogs")
