"""The cluster under real network faults, checked by a history checker.

Three `secureconf serve` processes, each in its own network namespace with its own address
(netns.py), at OSC_CLUSTER_WRITE_QUORUM=majority with signed peers. Each scenario runs the
recorded workload of history.py on every node, injects one fault for FAULTS_SECONDS, heals
it, measures how long the nodes take to agree (identical digests), and checks the history:
nothing acknowledged is lost, a node cut off acknowledges nothing, deletes stay deleted,
reads never go backwards, every node holds the same data. A failing scenario keeps its
history in .artifacts/faults/<scenario>.jsonl.
"""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest

from common.nodeproc import ProcessRegistry
from faultcluster import ARTIFACTS, PORT, FaultCluster
from history import History, Window, Workload, check

FAULT_SECONDS = float(os.environ.get("FAULTS_SECONDS", "5"))
ROUNDS = int(os.environ.get("FAULTS_ROUNDS", "1"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, preconditions):
    registry = ProcessRegistry()
    c = FaultCluster(tmp_path_factory.mktemp("faults"), registry)
    try:
        yield c
    finally:
        c.close()
        registry.kill_all()


# -- faults: each records the window it opened; FaultCluster.heal() closes it

def isolate_one(c: FaultCluster, h: History) -> None:
    c.net.isolate(0)
    h.windows.append(Window("node 0 cut off", time.monotonic(), isolated=0))


def asymmetric(c: FaultCluster, h: History) -> None:
    c.net.one_way(0, 1)  # 0 cannot reach 1; 1 still reaches 0
    h.windows.append(Window("0 -/-> 1", time.monotonic()))


def bridge(c: FaultCluster, h: History) -> None:
    c.net.cut(0, 2)  # 0-1 and 1-2 up, 0-2 down
    h.windows.append(Window("0 x 2, both through 1", time.monotonic()))


def slow_lossy(c: FaultCluster, h: History) -> None:
    c.net.slow_link(2, PORT, delay_ms=80, jitter_ms=60, loss=0.05)
    h.windows.append(Window("node 2: 80±60 ms, 5% loss", time.monotonic()))


def paused(c: FaultCluster, h: History) -> None:
    os.kill(c.nodes[1].pid, signal.SIGSTOP)  # longer than the peer timeout (FAULT_SECONDS > 2 s)
    h.windows.append(Window("node 1 SIGSTOP", time.monotonic()))


def killed(c: FaultCluster, h: History) -> None:
    c.nodes[2].kill()
    h.windows.append(Window("node 2 kill -9", time.monotonic()))


SCENARIOS = {
    "full partition of one node": isolate_one,
    "asymmetric partition": asymmetric,
    "bridge partition": bridge,
    "latency, jitter and loss on one link": slow_lossy,
    "process paused past the peer timeout": paused,
    "kill -9 and restart": killed,
}


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault(cluster: FaultCluster, summary, name: str, round_: int):
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)[:24] + f"-{round_}-{secrets.token_hex(2)}"
    history = History()
    workload = Workload(slug, cluster.client, history, nodes=3)
    workload.setup()
    workload.start()
    try:
        time.sleep(1.0)
        SCENARIOS[name](cluster, history)
        time.sleep(FAULT_SECONDS)
    finally:
        cluster.heal(history)
    healed = time.monotonic()
    time.sleep(1.0)  # the workload goes on across the heal
    workload.finish()
    converged = cluster.converge(since=healed)
    states = [cluster.state(i, slug) for i in range(3)]
    problems = check(history, workload, states)
    counts = history.counts()
    lost = sum("lost" in p or "older than acknowledged" in p for p in problems)
    summary.append({"scenario": f"{name} #{round_}", **counts, "lost": lost, "converged_s": converged,
                    "verdict": "ok" if not problems else f"{len(problems)} violations"})
    print(f"\n{name}: {counts}, faults {cluster.net.faults[-2:]}, converged in {converged:.2f}s, "
          f"{'ok' if not problems else 'VIOLATIONS'}; refused: {history.refusals()}")
    if problems:
        path = ARTIFACTS / f"{slug}.jsonl"
        history.dump(path)
        pytest.fail(f"{name}: {len(problems)} violations (history in {path}):\n" + "\n".join(problems[:30]), pytrace=False)
    assert counts["acknowledged"] > 0, "the workload made no acknowledged write: nothing was tested"
