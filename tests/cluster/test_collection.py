"""Tombstone collection (OSC_TOMBSTONE_HORIZON) on real node processes.

A node collects its own tombstones once they are older than the horizon and every peer holds
them; the markers reach the other nodes through anti-entropy, which compares them before the
revisions, so no copy of a collected revision is taken back. A node out of touch for longer
than the horizon (here: restored from a backup taken before the delete) sets its history
aside and refills from its peers instead of merging it. The horizon is 4 s here (the product
requires at least three anti-entropy rounds: OSC_CLUSTER_SYNC_INTERVAL is 1 s in this suite).
"""

from __future__ import annotations

import datetime
import os
import shutil
import time

import harness

USER_KEY = "collection-user-key-0123456789"
HORIZON = 4.0
ENV = {
    "OSC_TOMBSTONE_HORIZON": str(HORIZON),
    "OSC_CLUSTER_WRITE_QUORUM": "majority",
    "OSC_CLUSTER_SECRET": "c" * 16 + os.urandom(16).hex(),
}


def collecting_cluster(factory) -> harness.Cluster:
    cluster = factory.cluster(3, extra_env=ENV)
    cluster.wait_healthy(timeout=15)
    cluster.warm(USER_KEY)
    return cluster


def versions(node: harness.Node, key: str):
    return node.request("GET", f"/configs/{key}/versions", USER_KEY)


def is_collected(node: harness.Node, key: str) -> bool:
    r = versions(node, key)
    return r.status_code == 404 and "history collected" in r.json()["detail"]


def wait_for(what, timeout: float, message: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if what():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(message)


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_deleted_key_is_collected_everywhere_and_never_comes_back(factory, report):
    cluster = collecting_cluster(factory)
    a, b, c = cluster
    assert a.create(USER_KEY, "gone", "v1").status_code == 201
    assert a.update(USER_KEY, "gone", "v2").status_code == 200
    assert a.create(USER_KEY, "kept", "k").status_code == 201
    before_delete = time.time()
    time.sleep(0.01)
    assert a.delete(USER_KEY, "gone").status_code == 200
    deleted_at = time.monotonic()
    # Within the horizon every revision is kept, the tombstone too.
    cluster.wait_converged()
    for node in cluster:
        r = versions(node, "gone")
        assert r.status_code == 200 and len(r.json()["versions"]) == 3, (node, r.text)
    for node in cluster:
        wait_for(lambda: is_collected(node, "gone"), HORIZON + 15, f"{node} did not collect 'gone'")
    report("collection: delete to collected on every node (s)", f"{time.monotonic() - deleted_at:.1f} (horizon {HORIZON})")
    assert time.monotonic() - deleted_at >= HORIZON
    cluster.wait_converged()
    for node in cluster:
        assert node.read(USER_KEY, "gone").status_code == 404
        past = node.read(USER_KEY, "gone", at=rfc3339(before_delete))
        assert past.status_code == 404 and "history collected" in past.json()["detail"], past.text
        assert node.read(USER_KEY, "kept").json()["value"] == "k"
        s = node.status()
        assert s["collected_keys"] == 1 and s["tombstone_horizon_seconds"] == HORIZON, s
    assert sum(v for _, v in a.metric("osc_tombstones_collected_total")) == 1
    # The key made again is a new key, with a history of its own, on every node.
    assert c.create(USER_KEY, "gone", "again").status_code == 201
    cluster.wait_converged()
    for node in cluster:
        assert node.read(USER_KEY, "gone").json()["value"] == "again"
        assert [v["version"] for v in versions(node, "gone").json()["versions"]] == [1]


def test_a_peer_that_missed_the_delete_holds_collection_back_then_drops_the_key(factory, report):
    cluster = collecting_cluster(factory)
    a, b, c = cluster
    assert a.create(USER_KEY, "k", "v1").status_code == 201
    cluster.wait_converged()
    c.stop()
    assert a.delete(USER_KEY, "k").status_code == 200
    # Past two horizons, c still does not hold the tombstone: a keeps it (and the history).
    time.sleep(2 * HORIZON + 1)
    for node in (a, b):
        r = versions(node, "k")
        assert r.status_code == 200 and r.json()["versions"][-1]["deleted"] is True, (node, r.text)
    c.start()
    c.wait_up()
    took = wait_for(lambda: all(is_collected(n, "k") for n in cluster), HORIZON + 20, "not collected after c came back")
    report("collection: held back while a peer lacked the tombstone; collected after it returned (s)", f"{took:.1f}")
    cluster.wait_converged()
    assert c.read(USER_KEY, "k").status_code == 404


def _database_files(node: harness.Node) -> list[str]:
    path = node.env["OSC_DATABASE_PATH"]
    return [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]


def test_a_node_restored_from_a_backup_older_than_the_horizon_refills_instead_of_merging(factory, tmp_path, report):
    cluster = collecting_cluster(factory)
    a, b, c = cluster
    assert a.create(USER_KEY, "secret", "old value").status_code == 201
    assert c.create(USER_KEY, "from-c", "c's").status_code == 201
    cluster.wait_converged()
    # A backup of c's data directory while it holds 'secret' live.
    c.stop()
    backup = tmp_path / "c-backup"
    backup.mkdir()
    for f in _database_files(c):
        shutil.copy(f, backup)
    c.start()
    c.wait_up()
    cluster.wait_healthy(timeout=15)
    assert a.delete(USER_KEY, "secret").status_code == 200
    wait_for(lambda: all(is_collected(n, "secret") for n in cluster), HORIZON + 15, "'secret' was not collected")
    # Two horizons on, the markers are gone too: only the refill stands between c's old copy
    # and the cluster.
    time.sleep(HORIZON + 1)
    wait_for(lambda: all(n.status()["collected_keys"] == 0 for n in cluster), 10, "markers did not expire")
    c.stop()
    for f in _database_files(c):
        os.remove(f)
    for f in backup.iterdir():
        shutil.copy(f, os.path.dirname(c.env["OSC_DATABASE_PATH"]))
    c.start()
    c.wait_up()
    cluster.wait_healthy(timeout=15)
    cluster.wait_converged(timeout=20)
    s = c.status()
    assert s["refilled_at"] is not None and s["refill_set_aside_revisions"] >= 1, s
    assert "refills from its peers" in c.output(20000)
    for node in cluster:
        assert node.read(USER_KEY, "secret").status_code == 404, node
        assert node.read(USER_KEY, "from-c").json()["value"] == "c's"
    report("collection: restored node refilled from peers, revisions set aside", str(s["refill_set_aside_revisions"]))
