"""Three real nodes, each in a network namespace of its own (netns.py), and what the fault
suites ask of them: status, digests, convergence, each node's data."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

import netns
from common.nodeproc import NodeProcess, ProcessRegistry, binary_snapshot, clean_environment, token, wait_until
from history import Client

PORT = 8000
CONVERGE_BOUND = 30.0  # seconds after healing (sync interval 1 s here; README: OSC_CLUSTER_SYNC_INTERVAL)
PEER_TIMEOUT = 2.0
USER_KEY = "faults-user-key-" + secrets.token_hex(8)
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "faults"


class FaultCluster:
    def __init__(self, root: Path, registry: ProcessRegistry, node_env: dict[int, dict[str, str]] | None = None,
                 quorum: str = "majority"):
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
                "OSC_CLUSTER_SECRET": secret, "OSC_CLUSTER_WRITE_QUORUM": quorum,
                "OSC_CLUSTER_SYNC_INTERVAL": "1", "OSC_CLUSTER_HEALTH_INTERVAL": "0.5",
                "OSC_CLUSTER_PEER_TIMEOUT": str(PEER_TIMEOUT),
                "OSC_LOG_LEVEL": "INFO", "OSC_LOG_FILE": str(wd / "node.log"),
            })
            env.update((node_env or {}).get(h.index, {}))
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
        return {e["key"]: json.dumps(e["value"]) for e in r.json() if e["key"].startswith(prefix)}

    def heal(self, history) -> None:
        """Ends every fault: links restored, paused nodes resumed, killed ones started again;
        the history's open windows close now."""
        self.net.heal()
        for n in self.nodes:
            if n.alive():
                os.kill(n.pid, signal.SIGCONT)
            else:
                n.launch()
                n.wait_ready()
        for w in history.windows:
            if w.end == float("inf"):
                w.end = time.monotonic()

    def close(self) -> None:
        for n in self.nodes:
            if n.alive():
                try:
                    os.kill(n.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                n.stop(10)
        self.net.close()
