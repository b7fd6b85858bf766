"""Tombstone collection (OSC_TOMBSTONE_HORIZON) under real faults, checked by the history checker.

The recorded workload of history.py (creates, updates, deletes of acknowledged creates, reads)
runs on a cluster that collects deleted keys 5 s after their delete, while a node is cut off or
paused for 6 s, longer than that horizon. On healing, the node that was away refills from its
peers (it answers 503 "refilling" meanwhile) instead of merging its history, keeping its own
writes of the last two horizons (less twice the clock skew allowed, 1 s here): those it made
while cut off. The fault lasts a fixed 6 s whatever FAULTS_SECONDS says: longer than one
horizon and well within two. The checker's guarantees must hold as without collection (nothing acknowledged lost,
deletes stay deleted, reads never go backwards, every node the same), and afterwards every
acknowledged delete is collected on every node and the digests agree.
"""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest

from common.nodeproc import ProcessRegistry, wait_until
from faultcluster import ARTIFACTS, FaultCluster
from history import History, Window, Workload, check

HORIZON = 5.0
FAULT_SECONDS = HORIZON + 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, preconditions):
    registry = ProcessRegistry()
    env = {"OSC_TOMBSTONE_HORIZON": str(HORIZON), "OSC_CLUSTER_MAX_CLOCK_SKEW": "1"}
    c = FaultCluster(tmp_path_factory.mktemp("collection-faults"), registry, node_env={i: env for i in range(3)})
    try:
        yield c
    finally:
        c.close()
        registry.kill_all()


def isolate_one(c: FaultCluster, h: History) -> int:
    c.net.isolate(0)
    h.windows.append(Window("node 0 cut off past the horizon", time.monotonic(), isolated=0))
    return 0


def paused(c: FaultCluster, h: History) -> int:
    os.kill(c.nodes[1].pid, signal.SIGSTOP)
    h.windows.append(Window("node 1 SIGSTOP past the horizon", time.monotonic()))
    return 1


SCENARIOS = {"node cut off past the horizon": isolate_one, "node paused past the horizon": paused}


def collected(c: FaultCluster, i: int, key: str) -> bool:
    """No history left: 404 "... history collected" while the marker lasts, plain 404 after."""
    r = c.client.call(i, "GET", f"/configs/{key}/versions")
    return r.status_code == 404


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_collection_under_a_fault(cluster: FaultCluster, summary, report, name: str):
    slug = "gc-" + "".join(ch if ch.isalnum() else "-" for ch in name)[:20] + f"-{secrets.token_hex(2)}"
    history = History()
    workload = Workload(slug, cluster.client, history, nodes=3)
    workload.setup()
    workload.start()
    try:
        time.sleep(1.0)
        away = SCENARIOS[name](cluster, history)
        time.sleep(FAULT_SECONDS)
    finally:
        cluster.heal(history)
    healed = time.monotonic()
    time.sleep(1.0)
    workload.finish()
    converged = cluster.converge(since=healed)
    states = [cluster.state(i, slug) for i in range(3)]
    problems = check(history, workload, states)
    deleted = sorted({o.key for o in history.ops if o.kind == "delete" and o.outcome == "ok"})
    refill = cluster.status(away)
    if not problems:
        # Every acknowledged delete is collected everywhere, and the nodes still agree.
        start = time.monotonic()
        try:
            wait_until(lambda: all(collected(cluster, i, k) for i in range(3) for k in deleted), timeout=HORIZON + 20,
                       interval=0.5, what="every acknowledged delete collected on every node")
        except AssertionError as e:
            problems.append(str(e))
        report(f"{name}: acknowledged deletes collected on every node", f"{len(deleted)} in {time.monotonic() - start:.1f} s")
        cluster.converge(since=time.monotonic())
        after = [cluster.state(i, slug) for i in range(3)]
        if after != states:
            problems.append("the data changed when the deleted keys were collected")
    if refill["refilled_at"] is None:
        problems.append(f"node {away} was away longer than the horizon but did not refill: {refill}")
    counts = history.counts()
    lost = sum("lost" in p or "older than acknowledged" in p for p in problems)
    summary.append({"scenario": f"{name} (collecting)", **counts, "lost": lost, "converged_s": converged,
                    "verdict": "ok" if not problems else f"{len(problems)} violations"})
    if problems:
        path = ARTIFACTS / f"{slug}.jsonl"
        history.dump(path)
        path.with_suffix(".problems.txt").write_text("\n".join(problems) + "\n")
        pytest.fail(f"{name}: {len(problems)} violations (history in {path}):\n" + "\n".join(problems[:30]), pytrace=False)
    assert counts["acknowledged"] > 0 and deleted, "the workload acknowledged no write or no delete: nothing was tested"
