"""A node whose wall clock runs an hour ahead, inside its own namespace, during partitions.

Node 2 runs under tests/cluster/fakeclock.c (LD_PRELOAD; it shifts CLOCK_REALTIME,
gettimeofday and time, and leaves the monotonic clock, so its timers still fire). At the
default write quorum (1), the worst case: an isolated node cannot compare clocks and takes
writes, stamped an hour ahead. Checked: /cluster/status names the skewed node; the honest
nodes' view of their own clocks does not move, and their stamps stay on real time; the
skewed node refuses writes and /ready while it can compare; what it stamped while cut off
never beats a later honest write (also one made before the skewed write could reach the
honest node), not after healing, and not after its clock is corrected and it restarts.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from common.nodeproc import ProcessRegistry, wait_until
from common.netproxy import build_fake_clock
from faultcluster import FaultCluster

AHEAD = 3600


@pytest.fixture
def skewed(tmp_path, preconditions):
    registry = ProcessRegistry()
    shim = build_fake_clock(tmp_path)
    c = FaultCluster(tmp_path / "nodes", registry, quorum="1",
                     node_env={2: {"LD_PRELOAD": str(shim), "SECURECONF_FAKE_CLOCK_OFFSET": str(AHEAD)}})
    try:
        yield c
    finally:
        c.close()
        registry.kill_all()


def peer_view(c: FaultCluster, i: int, peer: int) -> dict:
    address = c.nodes[peer].node_id
    return next(n for n in c.status(i)["nodes"] if n["node_id"] == address)


def stamp_seconds_from_now(entry: dict) -> float:
    t = datetime.fromisoformat(entry["updated_at"].replace("Z", "+00:00"))
    return (t - datetime.now(timezone.utc)).total_seconds()


def test_an_hour_ahead_node_never_beats_honest_writes(skewed: FaultCluster, report):
    c = skewed
    # /cluster/status names it: the honest nodes see its offset, it sees itself ahead.
    wait_until(lambda: c.status(2)["clock_ahead"], timeout=20, what="node 2 reporting its clock ahead")
    for i in (0, 1):
        view = peer_view(c, i, 2)
        offset = view["clock_offset_ms"]
        assert offset is not None and abs(offset - AHEAD * 1000) < 5000, (i, offset)
        assert view["clock_skewed"] is True, view
        assert peer_view(c, i, 1 - i)["clock_skewed"] is False  # the other honest node
        own = c.status(i)
        assert own["clock_ahead"] is False and abs(own["clock_offset_ms"]) < 1000, own  # one skewed peer moves nothing
    report("skewed node's offset seen by node 0 (s)", f"{peer_view(c, 0, 2)['clock_offset_ms'] / 1000:.1f}")
    ready = c.client.session().get(c.nodes[2].url + "/ready", timeout=5)
    assert ready.status_code == 503 and "ahead" in ready.json()["detail"], ready.text
    refused = c.client.call(2, "POST", "/configs", json={"key": "skew-connected", "value": "future"})
    assert refused.status_code == 503 and "ahead" in refused.json()["detail"], refused.text

    # Cut off, it cannot compare clocks and takes writes stamped an hour ahead.
    c.net.isolate(2)
    wait_until(lambda: c.status(2)["clock_offset_ms"] is None, timeout=20, what="node 2 alone")
    for key in ("skew-contested", "skew-only-there"):
        r = c.client.call(2, "POST", "/configs", json={"key": key, "value": "future"})
        assert r.status_code == 201, r.text
        assert stamp_seconds_from_now(r.json()) > AHEAD - 60
    # A later honest write of the same key, on a node that never saw the skewed one.
    honest = c.client.call(0, "POST", "/configs", json={"key": "skew-contested", "value": "honest"})
    assert honest.status_code == 201, honest.text
    assert abs(stamp_seconds_from_now(honest.json())) < 10
    c.net.heal()

    # Healed: the honest value holds on the honest nodes; the skewed node sets aside what it
    # stamped ahead of the cluster (its peers refuse it) instead of serving it.
    wait_until(lambda: c.status(2)["clock_ahead"], timeout=20, what="node 2 comparing clocks again")
    wait_until(lambda: c.status(2)["set_aside_revisions"] >= 2, timeout=20, what="node 2 setting its future revisions aside")
    for i in range(3):
        r = c.client.call(i, "GET", "/configs/skew-contested")
        if i < 2:
            assert r.status_code == 200 and r.json()["value"] == "honest", (i, r.text)
        else:
            assert r.status_code == 404 or r.json()["value"] != "future", r.text
        assert c.client.call(i, "GET", "/configs/skew-only-there").status_code == 404, i
    # The honest nodes' clocks never jumped: a new write is stamped on real time.
    fresh = c.client.call(1, "POST", "/configs", json={"key": "skew-after", "value": "now"})
    assert fresh.status_code == 201 and abs(stamp_seconds_from_now(fresh.json())) < 10, fresh.text

    # Its clock corrected and restarted, it converges on the honest data; the future value is
    # nowhere, and stays nowhere (it was set aside, not left to win in an hour).
    node = c.nodes[2]
    assert node.stop(10) == 0
    for var in ("LD_PRELOAD", "SECURECONF_FAKE_CLOCK_OFFSET"):
        node.env.pop(var)
    node.launch()
    node.wait_ready()
    started = time.monotonic()
    wait_until(lambda: len(set(c.digests())) == 1, timeout=30, what="identical digests")
    report("converged after the skewed node's clock was corrected (s)", f"{time.monotonic() - started:.2f}")
    for i in range(3):
        assert c.client.call(i, "GET", "/configs/skew-contested").json()["value"] == "honest", i
        values = {e["key"]: e["value"] for e in c.client.call(i, "GET", "/configs").json()}
        assert "future" not in json.dumps(values), (i, values)
    assert c.status(2)["clock_ahead"] is False
    assert c.client.call(2, "PUT", "/configs/skew-after", json={"value": "writable again"}).status_code == 200


@pytest.fixture
def one_behind(tmp_path, preconditions):
    registry = ProcessRegistry()
    shim = build_fake_clock(tmp_path)
    c = FaultCluster(tmp_path / "nodes", registry, quorum="1",
                     node_env={1: {"LD_PRELOAD": str(shim), "SECURECONF_FAKE_CLOCK_OFFSET": str(-AHEAD)}})
    try:
        yield c
    finally:
        c.close()
        registry.kill_all()


def test_one_peer_behind_never_makes_a_node_discard_its_writes(one_behind: FaultCluster):
    """Node 1's clock runs an hour behind. With node 2 down, node 0 measures only node 1 and
    so looks an hour ahead: it refuses writes (it cannot tell which clock is wrong), but it
    never sets aside what it wrote: that takes a majority of the cluster's clocks."""
    c = one_behind
    wait_until(lambda: c.status(0)["healthy_nodes"] == 3, timeout=20, what="three healthy")
    assert c.status(0)["clock_ahead"] is False  # two peers: the median is an honest clock
    for i in range(5):
        assert c.client.call(0, "POST", "/configs", json={"key": f"behind-{i}", "value": i}).status_code == 201
    c.nodes[2].kill()
    wait_until(lambda: c.status(0)["clock_ahead"], timeout=20, what="node 0 measuring only the slow peer")
    time.sleep(3)  # several health rounds
    assert c.status(0)["set_aside_revisions"] == 0
    for i in range(5):
        r = c.client.call(0, "GET", f"/configs/behind-{i}")
        assert r.status_code == 200 and r.json()["value"] == i, r.text
