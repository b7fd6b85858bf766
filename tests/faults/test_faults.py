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
from pathlib import Path

import pytest

import netns
from common.nodeproc import NodeProcess, ProcessRegistry, binary_snapshot, clean_environment, token, wait_until
from history import Client, History, Window, Workload, check

PORT = 8000
FAULT_SECONDS = float(os.environ.get("FAULTS_SECONDS", "5"))
ROUNDS = int(os.environ.get("FAULTS_ROUNDS", "1"))
CONVERGE_BOUND = 30.0  # seconds after healing (sync interval 1 s here; README: OSC_CLUSTER_SYNC_INTERVAL)
PEER_TIMEOUT = 2.0
USER_KEY = "faults-user-key-" + secrets.token_hex(8)
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "faults"


class FaultCluster:
    def __init__(self, root: Path, registry: ProcessRegistry):
        self.net = netns.Network(3)
        self.api_key = token("faults-api-")
        secret = secrets.token_hex(32)
        salt = os.urandom(64)
        ids = [f"{h.address}:{PORT}" for h in self.net.hosts]
        self.nodes: list[NodeProcess] = []
        for h in self.net.hosts:
            wd = root / f"node{h.index}"
            wd.mkdir(parents=True)
            (wd / "encryption.salt").write_bytes(salt)
            os.chmod(wd / "encryption.salt", 0o600)
            env = clean_environment()
            env.update({
                "OSC_HOST": h.address, "OSC_HOST_PORT": str(PORT),
                "OSC_DATABASE_PATH": str(wd / "configurations.db"), "OSC_SALT_FILE_PATH": str(wd / "encryption.salt"),
                "OSC_API_KEY_REQUIRED": "true", "OSC_API_KEY": self.api_key,
                "OSC_CLUSTER_ENABLED": "true", "OSC_CLUSTER_NODE_ID": ids[h.index], "OSC_CLUSTER_NODES": ",".join(ids),
                "OSC_CLUSTER_SECRET": secret, "OSC_CLUSTER_WRITE_QUORUM": "majority",
                "OSC_CLUSTER_SYNC_INTERVAL": "1", "OSC_CLUSTER_HEALTH_INTERVAL": "0.5",
                "OSC_CLUSTER_PEER_TIMEOUT": str(PEER_TIMEOUT),
                "OSC_LOG_LEVEL": "INFO", "OSC_LOG_FILE": str(wd / "node.log"),
            })
            self.nodes.append(NodeProcess(wd, PORT, env, binary=binary_snapshot(), log_name="stderr.log",
                                          registry=registry, host=h.address, command_prefix=h.exec_prefix()))
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.wait_ready()
        self.client = Client([n.url for n in self.nodes], self.api_key, USER_KEY)
        wait_until(self.healthy, timeout=30, what="all three nodes healthy")
        for i in range(3):  # derive the user key on each node before anything is timed
            wait_until(lambda i=i: self.client.call(i, "GET", "/configs").status_code == 200, timeout=60,
                       what=f"node {i} answering reads")

    def status(self, i: int) -> dict:
        r = self.client.session().get(self.nodes[i].url + "/cluster/status", headers={"X-API-Key": self.api_key}, timeout=5)
        r.raise_for_status()
        return r.json()

    def healthy(self) -> bool:
        return all(self.status(i)["healthy_nodes"] == 3 for i in range(3))

    def digests(self) -> list[str]:
        return [self.status(i)["digest"] for i in range(3)]

    def converge(self, since: float) -> float:
        """Seconds from `since` (the heal) until every node has the same digest."""
        wait_until(lambda: len(set(self.digests())) == 1, timeout=CONVERGE_BOUND, interval=0.1,
                   what="identical digests on every node")
        return time.monotonic() - since

    def state(self, i: int, prefix: str) -> dict[str, str]:
        r = self.client.call(i, "GET", "/configs")
        r.raise_for_status()
        import json
        return {e["key"]: json.dumps(e["value"]) for e in r.json() if e["key"].startswith(prefix)}

    def close(self) -> None:
        for n in self.nodes:
            if n.alive():
                try:
                    os.kill(n.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                n.stop(10)
        self.net.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, preconditions):
    registry = ProcessRegistry()
    c = FaultCluster(tmp_path_factory.mktemp("faults"), registry)
    try:
        yield c
    finally:
        c.close()
        registry.kill_all()


# -- faults: each returns the window it opened; heal() closes it

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


def heal(c: FaultCluster, h: History) -> None:
    c.net.heal()
    for n in c.nodes:
        if n.alive():
            os.kill(n.pid, signal.SIGCONT)
        else:
            n.launch()
            n.wait_ready()
    for w in h.windows:
        if w.end == float("inf"):
            w.end = time.monotonic()


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
        heal(cluster, history)
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
