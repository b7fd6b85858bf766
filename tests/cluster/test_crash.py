"""Nodes survive their first health rounds.

Regression test: optimized builds crashed (SIGSEGV in TaskGroupBase::prepareWaitingTaskWithTask
copying the child result, or a garbage peer String in checkHealth) in about one node start in
four, when ClusterCoordinator.checkHealth collected its probes in a tuple-typed task group
(fixed by collecting them as a struct, 07bd47a). The crash came in the first health rounds
after a peer answered, so this starts a few clusters and watches exactly that window.
"""

from __future__ import annotations

import os
import time

import pytest

import harness
from harness import ClusterFactory, free_ports

ROUNDS = 3


def test_nodes_survive_first_health_rounds(tmp_path, registry):
    f = ClusterFactory(tmp_path / "nodes", registry)
    api_key = harness.token("crash-api-")
    for round_ in range(ROUNDS):
        ports = free_ports(3)
        ids = [f"127.0.0.1:{p}" for p in ports]
        salt = os.urandom(64)  # shared up front: no bootstrap, every node starts probing at once
        nodes = []
        for i, port in enumerate(ports):
            wd = f.workdir(f"crash-r{round_}-n{i}")
            env = f.node_env(wd, port, ids, api_key, "replica")
            (wd / "encryption.salt").write_bytes(salt)
            os.chmod(wd / "encryption.salt", 0o600)
            nodes.append(f.node(wd, port, env, api_key).start())
        deadline = time.monotonic() + 20
        settled_at = None
        while time.monotonic() < deadline:
            for n in nodes:
                if n.has_died():
                    pytest.fail(f"round {round_}: {n} died during its first health rounds:\n"
                                f"{harness.crashed_thread(n.crash_report())}", pytrace=False)
            try:
                healthy = all(n.status()["healthy_nodes"] == 3 for n in nodes)
            except Exception:  # noqa: BLE001 - still starting
                healthy = False
            if healthy and settled_at is None:
                settled_at = time.monotonic()
            if settled_at is not None and time.monotonic() - settled_at > 1.0:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"round {round_}: the cluster did not become healthy within 20s")
        for n in nodes:
            assert n.stop() == 0, harness.crashed_thread(n.run_output())
