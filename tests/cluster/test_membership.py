"""Membership changes without restarting the others, and a rolling restart, under load.

The procedure (README, "Adding and retiring nodes"): every node names the cluster in
OSC_CLUSTER_NODES_FILE (or OSC_CLUSTER_NODES in its .env file); to add a node, list it in the
running nodes' files and send them SIGHUP, then start it (it fetches the salt from a peer and
the whole state through anti-entropy and its peers' shippers); to retire one, drop it from the
others' files, SIGHUP them (they stop shipping to it, drop its outbox cursor and refuse its
signed requests), then stop it.

The clients here retry on another node when a node does not answer or answers 503, as the
README advises; a create retried that answers 400 "already exists" counts as done when the
stored value is the one sent. Every acknowledged operation is checked on every node after.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

import harness
from harness import ClusterFactory, free_ports

USER_KEY = "membership-user-key-0123456789"
ENV = {
    "OSC_CLUSTER_WRITE_QUORUM": "majority",
    "OSC_CLUSTER_SECRET": "m" * 16 + os.urandom(16).hex(),
}


class RetryingClients:
    """Writers that create unique keys, each operation retried on the next node until done."""

    def __init__(self, nodes: list[harness.Node], writers: int = 3):
        self.nodes = nodes
        self.lock = threading.Lock()
        self.done: dict[str, str] = {}
        self.failed: list[str] = []
        self.retries = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(writers)]

    def targets(self) -> list[harness.Node]:
        with self.lock:
            return list(self.nodes)

    def _attempt(self, node: harness.Node, key: str, value: str, retried: bool) -> bool | None:
        """True: done; None: try another node."""
        try:
            r = node.request("POST", "/configs", USER_KEY, json={"key": key, "value": value}, timeout=10)
        except requests.RequestException:
            return None
        if r.status_code == 201:
            return True
        if r.status_code == 400 and "already exists" in r.text and retried:
            try:
                back = node.read(USER_KEY, key)
            except requests.RequestException:
                return None
            return True if back.status_code == 200 and back.json()["value"] == value else None
        if r.status_code in (503, 502) or r.status_code == 401 and "salt" in r.text:
            return None
        raise AssertionError(f"{key} on {node}: {r.status_code} {r.text}")

    def _run(self, w: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key, value = f"m-{w}-{n}", f"value {w}/{n}"
            deadline = time.monotonic() + 60
            attempt = 0
            while True:
                nodes = self.targets()
                node = nodes[(w + n + attempt) % len(nodes)]
                outcome = self._attempt(node, key, value, retried=attempt > 0)
                if outcome:
                    with self.lock:
                        self.done[key] = value
                    break
                attempt += 1
                with self.lock:
                    self.retries += 1
                if time.monotonic() > deadline:
                    with self.lock:
                        self.failed.append(key)
                    break
                time.sleep(0.1)
            time.sleep(0.01)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


def nodes_file_env(f: ClusterFactory, wd, port: int, nodes_file, api_key: str) -> dict[str, str]:
    env = f.node_env(wd, port, [], api_key, "replica", ENV)
    env.pop("OSC_CLUSTER_NODES")
    env["OSC_CLUSTER_NODES_FILE"] = str(nodes_file)
    return env


def write_nodes(path, ids: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# the cluster's nodes\n" + "\n".join(ids) + "\n")
    tmp.rename(path)


def peer_ids(node: harness.Node) -> set[str]:
    return {n["node_id"] for n in node.status()["nodes"] if not n.get("self")}


def assert_everywhere(nodes: list[harness.Node], done: dict[str, str]) -> None:
    for node in nodes:
        held = {e["key"]: e["value"] for e in node.request("GET", "/configs", USER_KEY).json()}
        missing = [k for k, v in done.items() if held.get(k) != v]
        assert not missing, f"{node}: {len(missing)} acknowledged writes missing, e.g. {missing[:5]}"


def test_add_and_retire_a_node_under_load(tmp_path, registry, report):
    f = ClusterFactory(tmp_path / "nodes", registry)
    api_key = harness.token("membership-api-")
    ports = free_ports(4)
    ids = [f"127.0.0.1:{p}" for p in ports]
    workdirs = [f.workdir(f"member{i}") for i in range(4)]
    files = [wd / "cluster-nodes" for wd in workdirs]
    for i in range(3):
        write_nodes(files[i], ids[:3])
    nodes = [f.node(workdirs[i], ports[i], nodes_file_env(f, workdirs[i], ports[i], files[i], api_key), api_key) for i in range(4)]
    for n in nodes[:3]:
        n.start()
    for n in nodes[:3]:
        n.wait_up()
    harness.wait_until(lambda: all(n.status()["healthy_nodes"] == 3 for n in nodes[:3]), timeout=30, what="3 healthy")
    for n in nodes[:3]:
        n.warm(USER_KEY)
    for i in range(200):  # state the new node must receive
        assert nodes[i % 3].create(USER_KEY, f"before-{i}", i).status_code == 201

    load = RetryingClients(nodes[:3])
    load.start()
    time.sleep(1.0)
    # Add node 3: the running nodes first learn of it, then it starts (from nothing: no salt, no data).
    for i in range(3):
        write_nodes(files[i], ids)
        os.kill(nodes[i].pid, signal.SIGHUP)
    write_nodes(files[3], ids)
    harness.wait_until(lambda: all(ids[3] in peer_ids(n) for n in nodes[:3]), timeout=10, what="node 3 listed by all")
    started = time.monotonic()
    nodes[3].start()
    nodes[3].wait_up()
    nodes[3].warm(USER_KEY)
    with load.lock:
        load.nodes.append(nodes[3])
    harness.wait_until(lambda: all(n.status()["healthy_nodes"] == 4 for n in nodes), timeout=30, what="4 healthy")
    time.sleep(2.0)  # writes on all four, the new node's among them
    assert nodes[3].salt_bytes() == nodes[0].salt_bytes(), "the new node has the cluster's salt"

    # Retire node 2: the others drop it, then it stops.
    with load.lock:
        load.nodes.remove(nodes[2])
    keep = [nodes[0], nodes[1], nodes[3]]
    for n, path in ((nodes[0], files[0]), (nodes[1], files[1]), (nodes[3], files[3])):
        write_nodes(path, [ids[0], ids[1], ids[3]])
        os.kill(n.pid, signal.SIGHUP)
    harness.wait_until(lambda: all(ids[2] not in peer_ids(n) for n in keep), timeout=10, what="node 2 dropped by all")
    # Its signed requests are refused now.
    r = harness.peer_request(nodes[0], ENV["OSC_CLUSTER_SECRET"], ids[2], "GET", "/cluster/digest")
    assert r.status_code == 401, r.text
    assert nodes[2].stop() == 0
    time.sleep(2.0)
    load.finish()

    report("membership: acknowledged creates during add and retire", str(len(load.done)))
    report("membership: retries on another node", str(load.retries))
    assert not load.failed, f"operations that never succeeded: {load.failed[:10]}"
    harness.wait_until(lambda: len({n.status()["digest"] for n in keep}) == 1, timeout=60, what="identical digests")
    report("membership: node added to converged (s)", f"{time.monotonic() - started:.1f}")
    assert_everywhere(keep, {**load.done, **{f"before-{i}": i for i in range(200)}})
    for n in keep:
        st = n.status()
        assert st["total_nodes"] == 3 and st["healthy_nodes"] == 3, st

    # A truncated list changes nothing: the same peers, and their signed requests still accepted.
    files[0].write_text("")
    os.kill(nodes[0].pid, signal.SIGHUP)
    time.sleep(1.0)
    assert peer_ids(nodes[0]) == {ids[1], ids[3]}
    assert nodes[1].create(USER_KEY, "after-empty-reload", 1).status_code == 201
    harness.wait_until(lambda: nodes[0].read(USER_KEY, "after-empty-reload").status_code == 200, timeout=10,
                       what="a write on node 1 replicated to node 0 after the refused reload")
    assert "names no peer" in nodes[0].log_text()


def test_rolling_restart_under_load_fails_no_operation(tmp_path, registry, report):
    f = ClusterFactory(tmp_path / "nodes", registry)
    cluster = f.cluster(3, extra_env=ENV)
    cluster.wait_healthy(timeout=30)
    cluster.warm(USER_KEY)
    nodes = list(cluster)
    load = RetryingClients(nodes)
    load.start()
    time.sleep(1.0)
    for n in nodes:
        took = time.monotonic()
        assert n.stop() == 0
        report(f"rolling restart: {n} stopped in (s)", f"{time.monotonic() - took:.2f}")
        n.start()
        n.wait_up()
        n.warm(USER_KEY)
        cluster.wait_healthy(timeout=30)
        time.sleep(1.0)
    load.finish()
    report("rolling restart: acknowledged creates", str(len(load.done)))
    report("rolling restart: retries on another node", str(load.retries))
    assert not load.failed, f"operations that never succeeded: {load.failed[:10]}"
    assert len(load.done) > 50
    cluster.wait_converged(timeout=60)
    assert_everywhere(nodes, load.done)
