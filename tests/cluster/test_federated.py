"""Federated mode: each node stores only its own writes; reads fan out, lists aggregate."""

from __future__ import annotations

import time

import pytest

from harness import token

USER_KEY = "federated-user-key-01"


@pytest.fixture(scope="module")
def federated3(module_factory):
    cluster = module_factory.cluster(3, "federated")
    cluster.wait_healthy(timeout=15)
    return cluster


def local_revision(node, key: str):
    """What the node's own store holds for the key (the inter-node lookup is local-only)."""
    return node.request("GET", "/cluster/revision", params={"environment": "default", "key": key})


def test_read_fans_out_without_copying(federated3, report):
    a, b, c = federated3.nodes
    for n in federated3:
        assert n.status()["mode"] == "federated"
    revisions_b = b.digest()["revisions"]
    revisions_c = c.digest()["revisions"]

    key = token("fed-")
    value = {"secret": token("fedvalue-"), "n": [1, 2, 3]}
    r = a.create(USER_KEY, key, value, category="fed")
    assert r.status_code == 201, r.text
    assert local_revision(a, key).status_code == 200

    t0 = time.monotonic()
    r = b.read(USER_KEY, key)
    fanout = time.monotonic() - t0
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["value"] == value and r.json()["key"] == key and r.json()["category"] == "fed"
    r = c.read(USER_KEY, key)
    assert r.status_code == 200 and r.json()["value"] == value
    report("federated: first read through a peer (fan-out + PBKDF2 on the reader)", f"{fanout * 1000:.0f} ms")
    t0 = time.monotonic()
    for _ in range(20):
        assert b.read(USER_KEY, key).status_code == 200
    report("federated: fan-out read, warm key cache", f"{(time.monotonic() - t0) / 20 * 1000:.1f} ms per read")

    # A wrong user key is refused by the reading node, never answered with plaintext.
    r = b.read("some-other-user-key", key)
    assert r.status_code == 401, (r.status_code, r.text)

    # Reading did not copy the entry into b's or c's store, and nothing replicated since.
    time.sleep(1.5)
    assert b.digest()["revisions"] == revisions_b
    assert c.digest()["revisions"] == revisions_c
    assert local_revision(b, key).status_code == 404
    assert local_revision(c, key).status_code == 404
    assert b.read(USER_KEY, token("fed-missing-")).status_code == 404


def test_list_aggregates_every_node(federated3):
    prefix = token("agg-", 4) + "-"
    expected = {}
    for i, node in enumerate(federated3):
        for j in range(3):
            key = f"{prefix}n{i}-{j}"
            expected[key] = {"node": i, "j": j, "v": token()}
            r = node.create(USER_KEY, key, expected[key], category="agg")
            assert r.status_code == 201, r.text

    for node in federated3:
        r = node.request("GET", "/configs", USER_KEY, params={"category": "agg"})
        assert r.status_code == 200, r.text
        entries = [e for e in r.json() if e["key"].startswith(prefix)]
        keys = [e["key"] for e in entries]
        assert len(keys) == len(set(keys)), f"{node} lists a key twice: {sorted(keys)}"
        assert {e["key"]: e["value"] for e in entries} == expected, node

    # The same key created on two nodes (each holds its own copy) is listed once: the newest.
    dup = prefix + "dup"
    a, b, c = federated3.nodes
    assert a.create(USER_KEY, dup, "older").status_code == 201
    time.sleep(0.01)
    r = c.create(USER_KEY, dup, "newer")
    assert r.status_code in (201, 400), r.text
    winner = "newer" if r.status_code == 201 else "older"
    for node in federated3:
        entries = [e for e in node.request("GET", "/configs", USER_KEY).json() if e["key"] == dup]
        assert len(entries) == 1, (node, entries)
        assert entries[0]["value"] in ("older", "newer")
    assert [e["value"] for e in b.request("GET", "/configs", USER_KEY).json() if e["key"] == dup] == [winner]
    assert b.read(USER_KEY, dup).json()["value"] == winner


def test_list_and_read_agree_after_delete(federated3):
    a, b, c = federated3.nodes
    key = token("fed-del-")
    assert a.create(USER_KEY, key, "older copy on a").status_code == 201
    # b does not hold the key, so it accepts a create of its own (see the report: GET through b
    # says the key exists, yet POST through b is a 201, not a 400 "already exists").
    time.sleep(0.01)
    assert b.create(USER_KEY, key, "newer copy on b").status_code == 201
    assert c.read(USER_KEY, key).json()["value"] == "newer copy on b"
    time.sleep(0.01)
    assert b.delete(USER_KEY, key).status_code == 200  # b's tombstone is now the newest revision
    read = c.read(USER_KEY, key).status_code
    listed = [e["value"] for e in c.request("GET", "/configs", USER_KEY).json() if e["key"] == key]
    assert (read == 404) == (listed == []), f"GET through c answers {read}, the list through c shows {listed}"


def test_federated_lists_are_paged(federated3):
    """limit and offset page through the merged list (security review, finding 10: they were ignored)."""
    category = token("page-", 4)
    for i, node in enumerate(federated3):
        for j in range(3):
            assert node.create(USER_KEY, f"{category}-n{i}-{j}", j, category=category).status_code == 201
    node = federated3[1]
    whole = [e["key"] for e in node.request("GET", "/configs", USER_KEY, params={"category": category}).json()]
    assert len(whole) == 9
    pages = [node.request("GET", "/configs", USER_KEY, params={"category": category, "limit": 4, "offset": o}).json() for o in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [e["key"] for p in pages for e in p] == whole, "the pages are the whole list, in order"
    r = node.request("GET", "/configs", USER_KEY, params={"category": category, "after": 3})
    assert r.status_code == 422 and "offset" in r.json()["detail"]


def test_a_write_on_one_node_reaches_event_subscribers_of_every_node_once(federated3):
    """Federated nodes keep their own writes, so each follows its peers' change feeds: a
    write on node 1 reaches a subscriber of node 3 within about a second, once, with its
    value for the user key that wrote it; such relayed events carry no id (they are not in
    node 3's history, so a resuming stream does not replay them: README)."""
    from common.sse import Stream

    a, b, c = federated3.nodes
    key = token("fed-event-")
    headers = {"X-API-Key": c.api_key, "X-User-Key": USER_KEY}
    with Stream(c.url + "/sse/subscribe", params={"key": key}, headers=headers) as on_c, \
            Stream(a.url + "/sse/subscribe", params={"key": key}, headers={**headers, "X-API-Key": a.api_key}) as on_a:
        assert on_c.next().event == "connected" and on_a.next().event == "connected"
        time.sleep(1.5)  # each node has learnt where its peers' feeds stand
        started = time.monotonic()
        assert a.create(USER_KEY, key, {"v": 1}).status_code == 201
        assert a.update(USER_KEY, key, {"v": 2}).status_code == 200
        assert a.delete(USER_KEY, key).status_code == 200
        got = on_c.events(3, timeout=10)
        elapsed = time.monotonic() - started
        assert [(f.event, f.json["node_id"]) for f in got] == [("created", a.node_id), ("updated", a.node_id), ("deleted", a.node_id)]
        assert [f.json["data"] for f in got] == [{"value": {"v": 1}}, {"value": {"v": 2}}, None]
        assert all(f.id is None for f in got), "relayed events have no id"
        local = on_a.events(3, timeout=10)
        assert [f.event for f in local] == ["created", "updated", "deleted"] and all(f.id.startswith(a.node_id + ".") for f in local)
        assert on_c.quiet(2.5) == [] and on_a.quiet(0.1) == [], "each event once"
        assert elapsed < 5, elapsed
