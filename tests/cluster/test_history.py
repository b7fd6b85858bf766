"""History in a replica cluster: versions written on one node are listed identically on
every node after convergence, and a rollback made on another node is numbered the same
everywhere."""

from __future__ import annotations

import pytest

from harness import token, wait_until

USER_KEY = "history-user-key-0001"


def versions(node, key):
    r = node.request("GET", f"/configs/{key}/versions")
    assert r.status_code == 200, r.text
    return r.json()


def test_history_is_listed_identically_on_every_node(replica3, report):
    a, b, c = replica3.nodes
    key = token("hist-")
    assert a.create(USER_KEY, key, {"v": 1}).status_code == 201
    assert a.update(USER_KEY, key, {"v": 2}).status_code == 200

    def value_on(node):
        r = node.read(USER_KEY, key)
        return r.json().get("value") if r.status_code == 200 else None

    wait_until(lambda: value_on(b) == {"v": 2}, 15, what="version 2 on b")
    assert b.update(USER_KEY, key, {"v": 3}).status_code == 200
    wait_until(lambda: value_on(c) == {"v": 3}, 15, what="version 3 on c")
    assert c.delete(USER_KEY, key).status_code == 200
    replica3.wait_converged()

    listings = [versions(n, key) for n in replica3.nodes]
    assert listings[0]["versions"], listings[0]
    assert all(listing == listings[0] for listing in listings), listings
    assert listings[0]["versions"][-1]["deleted"] is True
    origins = {v["origin_node"] for v in listings[0]["versions"]}
    assert len(origins) >= 2, f"versions came from several nodes: {origins}"

    # Undelete on b: the new version has the same number on every node.
    rolled = b.request("POST", f"/configs/{key}/rollback?version=1", USER_KEY)
    assert rolled.status_code == 200, rolled.text
    replica3.wait_converged()
    listings = [versions(n, key) for n in replica3.nodes]
    assert all(listing == listings[0] for listing in listings), listings
    newest = listings[0]["current_version"]
    for n in replica3.nodes:
        r = n.request("GET", f"/configs/{key}/versions/{newest}", USER_KEY)
        assert r.status_code == 200 and r.json()["value"] == {"v": 1}, r.text
    report("history: versions listed identically on 3 nodes", f"{len(listings[0]['versions'])} versions from {len(origins)} origins")



@pytest.mark.parametrize("how", ["purge", "max_versions"])
def test_a_node_down_while_revisions_were_pruned_numbers_versions_alike(factory, how):
    """A revision pruned on its origin before a stopped peer received it (by a rekey that
    purges, or by OSC_MAX_VERSIONS) reaches that peer as a marker when it returns, so every
    node numbers the key's versions alike."""
    extra = {"OSC_MAX_VERSIONS": "2"} if how == "max_versions" else {}
    cluster = factory.cluster(3, "replica", extra)
    cluster.wait_healthy(timeout=15)
    n0, n1, n2 = cluster.nodes
    key, new_key = token("pruned-"), "history-user-key-new1"
    assert n0.create(USER_KEY, key, {"v": 1}).status_code == 201
    assert n0.update(USER_KEY, key, {"v": 2}).status_code == 200
    cluster.wait_converged()
    n2.stop()
    for v in (3, 4, 5):
        assert n0.update(USER_KEY, key, {"v": v}).status_code == 200
    if how == "purge":
        r = n0.request("POST", "/rekey", USER_KEY, params={"environment": "default", "purge": "true"},
                       headers={"X-New-User-Key": new_key})
        assert r.status_code == 200 and r.json()["rekeyed"] == [key], r.text
    n2.launch()
    cluster.wait_healthy(timeout=15)
    cluster.wait_converged(timeout=20)
    reader = new_key if how == "purge" else USER_KEY

    def listing(node):
        r = node.request("GET", f"/configs/{key}/versions", reader)
        assert r.status_code == 200, r.text
        body = r.json()
        return body["current_version"], body["pruned"], [v["version"] for v in body["versions"]]
    expected = (6, 5, [6]) if how == "purge" else (5, 3, [4, 5])
    assert wait_until(lambda: all(listing(n) == expected for n in cluster.nodes), 10), [listing(n) for n in cluster.nodes]
