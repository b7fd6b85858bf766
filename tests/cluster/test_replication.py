"""Replica mode: writes on any node reach every node; a node killed with SIGKILL catches up."""

from __future__ import annotations

import statistics
import threading
import time

import requests

from harness import Cluster, Node, token, wait_until

USER_KEY = "replica-user-key-0001"


def listed(node: Node, user_key: str = USER_KEY) -> dict[str, object]:
    r = node.request("GET", "/configs", user_key)
    r.raise_for_status()
    entries = r.json()
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)), f"{node} lists a key twice"
    return {e["key"]: e["value"] for e in entries}


def wait_state(cluster: Cluster, expected: dict[str, object], timeout: float, sent_at: dict[str, float] | None = None):
    """Polls every node's list until it holds exactly `expected` (key -> value; None = absent).

    Returns {(node index, key): monotonic time first seen right} for the keys in `sent_at`."""
    seen: dict[tuple[int, str], float] = {}
    deadline = time.monotonic() + timeout
    while True:
        done = True
        for i, node in enumerate(cluster):
            try:
                state = listed(node)
            except requests.RequestException:
                done = False
                continue
            now = time.monotonic()
            for k, v in expected.items():
                ok = (k not in state) if v is None else (state.get(k) == v)
                if ok:
                    seen.setdefault((i, k), now)
                else:
                    seen.pop((i, k), None)
                    done = False
        if done:
            return seen
        if time.monotonic() > deadline:
            missing = sorted({k for k in expected for i in range(len(cluster)) if (i, k) not in seen})
            raise AssertionError(f"not converged after {timeout}s; keys wrong somewhere: {missing[:10]} ({len(missing)})")
        time.sleep(0.02)


def lag_summary(seen, sent_at: dict[str, float], n_nodes: int) -> tuple[float, float]:
    lags = [max(seen[(i, k)] for i in range(n_nodes)) - t for k, t in sent_at.items()]
    return statistics.median(lags), max(lags)


def test_writes_propagate_to_every_node(replica3, report):
    cluster = replica3
    prefix = token("rr-", 4) + "-"
    # Warm the derived-key cache on every node (one PBKDF2 run each) so it is not timed.
    for n in cluster:
        assert n.request("GET", "/configs", USER_KEY).status_code in (200, 401)

    expected: dict[str, object] = {}
    sent_at: dict[str, float] = {}
    started = time.monotonic()
    for i in range(60):
        key = f"{prefix}{i:03d}"
        value = {"i": i, "secret": token("v-")}
        r = cluster[i % 3].create(USER_KEY, key, value, category="rr")
        assert r.status_code == 201, (r.status_code, r.text)
        sent_at[key] = time.monotonic()
        expected[key] = value
    elapsed = time.monotonic() - started
    report("replica: 60 sequential creates round-robin over 3 nodes", f"{elapsed:.2f}s ({60 / elapsed:.0f} creates/s)")

    seen = wait_state(cluster, expected, timeout=10, sent_at=sent_at)
    all_done = max(seen.values()) - started
    median, worst = lag_summary(seen, sent_at, 3)
    report("replica: create propagation (ack -> visible on all 3, list polling)", f"median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms")
    report("replica: 60 creates written and visible everywhere", f"{all_done:.2f}s after the first create")
    for n in cluster:
        for k in list(expected)[:3]:
            r = n.read(USER_KEY, k)
            assert r.status_code == 200 and r.json()["value"] == expected[k] and r.json()["category"] == "rr"

    # Single-write latency, polled tightly with GET on the two other nodes.
    lags = []
    for j in range(9):
        writer = cluster[j % 3]
        others = [n for n in cluster if n is not writer]
        key = f"{prefix}lat-{j}"
        r = writer.create(USER_KEY, key, j)
        assert r.status_code == 201, r.text
        t0 = time.monotonic()
        for o in others:
            wait_until(lambda: o.read(USER_KEY, key).status_code == 200, 5, interval=0.002, what=f"{key} on {o}")
        lags.append(time.monotonic() - t0)
        expected[key] = j
    report("replica: single create propagation to both peers (GET polling)",
           f"median {statistics.median(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms")

    # Updates on one node.
    upd_at = {}
    for i in range(0, 20, 2):
        key = f"{prefix}{i:03d}"
        value = {"i": i, "updated": token("u-")}
        r = cluster[0].update(USER_KEY, key, value)
        assert r.status_code == 200, (r.status_code, r.text)
        upd_at[key] = time.monotonic()
        expected[key] = value
    seen = wait_state(cluster, expected, timeout=10, sent_at=upd_at)
    median, worst = lag_summary(seen, upd_at, 3)
    report("replica: update propagation (10 updates on node 0)", f"median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms")

    # Deletes on another node.
    del_at = {}
    for i in range(1, 21, 2):
        key = f"{prefix}{i:03d}"
        r = cluster[1].delete(USER_KEY, key)
        assert r.status_code == 200, (r.status_code, r.text)
        del_at[key] = time.monotonic()
        expected[key] = None
    seen = wait_state(cluster, expected, timeout=10, sent_at=del_at)
    median, worst = lag_summary(seen, del_at, 3)
    report("replica: delete propagation (10 deletes on node 1)", f"median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms")
    for n in cluster:
        for k in del_at:
            r = n.read(USER_KEY, k)
            assert r.status_code == 404, (n, k, r.status_code, r.text)

    cluster.wait_converged(timeout=10)
    live = sum(1 for v in expected.values() if v is not None)
    for n in cluster:
        assert n.status()["entries"] >= live


class Writer(threading.Thread):
    """Creates keys on one node as fast as it answers, recording what was acknowledged."""

    def __init__(self, node: Node, prefix: str):
        super().__init__(daemon=True)
        self.node = node
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.unknown: list[str] = []
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            key = f"{self.prefix}{i:05d}"
            value = token("inflight-")
            try:
                r = self.node.request("POST", "/configs", USER_KEY, json={"key": key, "value": value}, timeout=2)
            except requests.RequestException:
                self.unknown.append(key)
                return
            if r.status_code == 201:
                self.acked[key] = value
            else:
                self.unknown.append(key)
                return
            i += 1


def check_everywhere(cluster: Cluster, expected: dict[str, object]) -> list[str]:
    """Problems with `expected` on any node, by individual GETs (None = must be 404)."""
    problems = []
    for n in cluster:
        for k, v in expected.items():
            r = n.read(USER_KEY, k)
            if v is None:
                if r.status_code != 404:
                    problems.append(f"{n.node_id} {k}: expected 404, got {r.status_code} {r.text[:80]}")
            elif r.status_code != 200 or r.json()["value"] != v:
                problems.append(f"{n.node_id} {k}: expected {v!r}, got {r.status_code} {r.text[:80]}")
    return problems


def test_killed_node_catches_up_and_nothing_acknowledged_is_lost(factory, report):
    cluster = factory.cluster(3, "replica")
    cluster.wait_healthy(timeout=10)
    a, b, c = cluster.nodes
    prefix = token("kill-", 4) + "-"
    expected: dict[str, object] = {}

    # Phase 1: 30 keys spread over the three nodes, replicated everywhere.
    for i in range(30):
        key = f"{prefix}p1-{i:02d}"
        expected[key] = {"phase": 1, "i": i, "v": token()}
        r = cluster[i % 3].create(USER_KEY, key, expected[key])
        assert r.status_code == 201, r.text
    wait_state(cluster, expected, timeout=10)

    # SIGKILL c while a client is writing to it: every acknowledged create must survive.
    writer = Writer(c, prefix + "inflight-")
    writer.start()
    wait_until(lambda: len(writer.acked) >= 20, 10, what="20 acknowledged writes on the node about to be killed")
    c.kill9()
    killed_at = time.monotonic()
    writer.stop.set()
    writer.join(timeout=10)
    assert not writer.is_alive()
    expected.update(writer.acked)

    # Phase 2, c down: creates, updates and deletes on a and b (each key touched by one node).
    survivors = [a, b]
    for i in range(30):
        key = f"{prefix}p2-{i:02d}"
        expected[key] = {"phase": 2, "i": i, "v": token()}
        r = survivors[i % 2].create(USER_KEY, key, expected[key])
        assert r.status_code == 201, r.text
    for i in range(0, 30, 3):  # updates, including keys c created
        key = f"{prefix}p1-{i:02d}"
        expected[key] = {"phase": 2, "updated": token()}
        r = survivors[i % 2].update(USER_KEY, key, expected[key])
        assert r.status_code == 200, r.text
    for i in range(1, 30, 3):  # deletes, including keys c created
        key = f"{prefix}p1-{i:02d}"
        r = survivors[i % 2].delete(USER_KEY, key)
        assert r.status_code == 200, r.text
        expected[key] = None
    for i in range(0, 30, 5):  # deletes of keys created while c was down
        key = f"{prefix}p2-{i:02d}"
        r = survivors[i % 2].delete(USER_KEY, key)
        assert r.status_code == 200, r.text
        expected[key] = None
    for i in range(0, 30, 10):  # updates then deletes of keys c wrote just before it died
        keys = sorted(writer.acked)
        key = keys[i]
        expected[key] = "updated-while-down-" + token()
        assert survivors[i % 2].update(USER_KEY, key, expected[key]).status_code in (200, 404)
    # (c's last acknowledged writes may not have reached a/b before the kill: an update of a
    # key they do not hold yet is a 404, and the create from c then wins when c is back.)
    for i in range(0, 30, 10):
        key = sorted(writer.acked)[i]
        r = survivors[0].read(USER_KEY, key)
        if r.status_code == 404:
            expected[key] = writer.acked[key]
    down_for = time.monotonic() - killed_at

    # Restart c and measure how long it takes until all three agree on everything.
    restarted = time.monotonic()
    c.start()
    c.wait_up()
    up = time.monotonic() - restarted
    converged = cluster.wait_converged(timeout=20)
    total = time.monotonic() - restarted
    problems = check_everywhere(cluster, expected)
    assert not problems, "\n".join(problems[:20])
    checked = time.monotonic() - restarted
    report("replica: kill -9 recovery: node down for", f"{down_for:.2f}s ({len(writer.acked)} writes acked by it before the kill)")
    report("replica: restarted node answering /health", f"{up:.2f}s after restart")
    report("replica: convergence after restart (equal /cluster/digest on all 3)", f"{total:.2f}s after restart ({converged:.2f}s after it was up)")
    report("replica: every acknowledged write verified on all 3", f"{checked:.2f}s after restart ({len(expected)} keys x 3 nodes)")

    # Whatever c was writing when it died is on all nodes or none.
    for key in writer.unknown:
        codes = {n.read(USER_KEY, key).status_code for n in cluster}
        assert len(codes) == 1, (key, codes)

    # Outboxes drain, and deletes stay deleted over further anti-entropy rounds.
    wait_until(lambda: all(p.get("outbox_depth", 0) == 0 for n in cluster for p in n.status()["nodes"] if not p["self"]),
               10, what="every outbox empty")
    time.sleep(3.2)
    problems = check_everywhere(cluster, expected)
    assert not problems, "\n".join(problems[:20])
    assert len(set(cluster.digests())) == 1
    for n in cluster:
        state = listed(n)
        assert {k for k, v in expected.items() if v is None}.isdisjoint(state), f"{n} lists a deleted key"
