"""A pytest hook every suite's conftest imports: when a test fails, the logs of the nodes
it started are attached to its report (the last lines of each), so that a CI failure shows
what the nodes said without rerunning anything.

    import common.nodelogs
    def pytest_configure(config):            # in a suite's conftest
        config.pluginmanager.register(common.nodelogs, "secureconf-nodelogs")
"""

from __future__ import annotations

import time

import pytest

from common.nodeproc import launched_since, running

TAIL = 6000


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._nodes_mark = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    # The nodes this test started, and those still running (a module's shared cluster).
    nodes = launched_since(getattr(item, "_nodes_mark", 0.0))
    nodes += [n for n in running() if n not in nodes]
    for node in nodes:
        report.sections.append((f"node {node.node_id} log ({node.log_path})", node.log_text(tail=TAIL) or "(empty)"))
