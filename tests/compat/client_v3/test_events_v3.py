"""opensecureconf-client 3.1.0's SSEClient against node 3 of a real three-node SecureConf
cluster: writes made on node 1 arrive as created, updated and deleted, in that order, each
once. The 3.1.0 client sends neither Last-Event-ID nor X-User-Key, so resumption after a
forced disconnect is checked with a raw SSE client (tests/common/sse.py), and its events
carry `data: null` (README, deliberate differences)."""

from __future__ import annotations

import asyncio
import time

import pytest
import requests

from common.sse import Stream
from harness import free_port, random_token

from opensecureconf_client import SSEClient

USER = "cluster-events-key-1"


@pytest.fixture
def cluster(node_factory):
    ports = sorted(free_port() for _ in range(3))
    ids = [f"127.0.0.1:{p}" for p in ports]
    secret = random_token("cluster-secret-") + "x" * 32
    api_key = random_token("cluster-api-")
    nodes = [
        node_factory.prepare(port=p, api_key=api_key, env={
            "OSC_CLUSTER_ENABLED": "true", "OSC_CLUSTER_MODE": "replica", "OSC_CLUSTER_NODE_ID": ids[i],
            "OSC_CLUSTER_NODES": ",".join(ids), "OSC_CLUSTER_SECRET": secret, "OSC_CLUSTER_SYNC_INTERVAL": "2",
            "OSC_CLUSTER_HEALTH_INTERVAL": "1",
        })
        for i, p in enumerate(ports)
    ]
    # The node that sorts first makes the salt; the others fetch it from it.
    for n in nodes:
        n.launch()
        n.wait_ready()
    return nodes


def hdr(n, **extra):
    return {"X-API-Key": n.api_key, **extra}


def write(n, method, key, value=None):
    kwargs = {"headers": hdr(n, **{"X-User-Key": USER}), "timeout": 30}
    if method == "post":
        r = requests.post(n.url + "/configs", json={"key": key, "value": value, "environment": "prod"}, **kwargs)
    elif method == "put":
        r = requests.put(f"{n.url}/configs/{key}", params={"environment": "prod"}, json={"value": value}, **kwargs)
    else:
        r = requests.delete(f"{n.url}/configs/{key}", params={"environment": "prod"}, **kwargs)
    assert r.status_code in (200, 201), r.text


def test_sseclient_on_node_3_receives_node_1s_writes_in_order_each_once(cluster):
    n1, _, n3 = cluster
    received = []

    async def on_event(event):
        received.append(event)

    async def scenario():
        client = SSEClient(base_url=n3.url, api_key=n3.api_key, environment="prod", on_event=on_event, auto_reconnect=False, log_level="CRITICAL")
        async with client:
            await client.connect()
            deadline = time.monotonic() + 10
            while not any(e.event_type == "connected" for e in received) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(write, n1, "post", "db", {"host": "a"})
            await asyncio.to_thread(write, n1, "put", "db", {"host": "b"})
            await asyncio.to_thread(write, n1, "delete", "db")
            deadline = time.monotonic() + 20
            while len([e for e in received if e.event_type != "connected"]) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # anything arriving twice would arrive now
            return client.stats

    stats = asyncio.run(scenario())
    changes = [e for e in received if e.event_type != "connected"]
    assert [(e.event_type, e.key, e.environment) for e in changes] == [
        ("created", "db", "prod"), ("updated", "db", "prod"), ("deleted", "db", "prod")]
    assert all(e.node_id == n1.node_id for e in changes), "node_id names the node that took the write"
    assert all(e.data is None for e in changes), "no X-User-Key from this client: no values"
    assert stats.events_by_type["connected"] == 1 and stats.errors == 0


def test_a_forced_disconnect_resumes_on_node_3_with_exactly_the_missed_events(cluster):
    n1, _, n3 = cluster
    with Stream(n3.url + "/sse/subscribe", headers=hdr(n3, **{"X-User-Key": USER})) as s:
        assert s.next().event == "connected"
        write(n1, "post", "k1", 1)
        first = s.next(timeout=20)
        assert first.event == "created" and first.json["key"] == "k1"
        assert first.id.startswith(n3.node_id + "."), "ids name the node that issued the event"
        resume = first.id
    # Missed while away: one more create, an update and a delete, all on node 1.
    write(n1, "post", "k2", 2)
    write(n1, "put", "k1", 10)
    write(n1, "delete", "k2")
    time.sleep(1)
    with Stream(n3.url + "/sse/subscribe", headers=hdr(n3, **{"X-User-Key": USER, "Last-Event-ID": resume})) as again:
        assert again.next().json["resumed"] is True
        got = again.events(3, timeout=20)
        assert [(f.event, f.json["key"], f.json["data"]) for f in got] == [
            ("created", "k2", {"value": 2}), ("updated", "k1", {"value": 10}), ("deleted", "k2", None)]
        assert again.quiet(1.0) == []
    # Node 3's id means nothing to node 1: an explicit reset, never a wrong replay.
    with Stream(n1.url + "/sse/subscribe", headers=hdr(n1, **{"Last-Event-ID": resume})) as elsewhere:
        assert elsewhere.next().event == "connected"
        reset = elsewhere.next()
        assert reset.event == "reset" and reset.json["reason"] == "other_node"
