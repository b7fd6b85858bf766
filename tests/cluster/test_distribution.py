"""OpenSecureConf 3.x's /cluster/distribution and /cluster/configs on a real three-node
replica cluster: shapes as its GUI reads them, counting and listing only what the
caller's user key opens (OpenSecureConf lists every key name to anyone holding the API key)."""

from __future__ import annotations

from harness import token, wait_until


def test_distribution_counts_what_the_callers_key_opens_on_every_node(replica3):
    mine, theirs = token("dist-mine-"), token("dist-theirs-")
    names = [token("dist-key-") for _ in range(3)]
    for name in names:
        assert replica3[0].create(mine, name, {"v": name}, category="dist").status_code == 201
    hidden = token("dist-hidden-")
    assert replica3[1].create(theirs, hidden, 1, category="hidden-category").status_code == 201

    def distribution():
        r = replica3[2].request("GET", "/cluster/distribution", mine)
        assert r.status_code == 200, r.text
        body = r.json()
        counts = [n["keys_count"] for n in body["nodes_distribution"]]
        return body if len(counts) == 3 and min(counts) >= 3 else None

    body = wait_until(distribution, timeout=15, what="every node to hold the caller's three entries")
    assert body["cluster_mode"] == "replica" and body["is_replica"] is True
    local = [n for n in body["nodes_distribution"] if n["is_local"]]
    assert len(local) == 1 and local[0]["node_id"] == replica3[2].node_id
    assert {n["node_id"] for n in body["nodes_distribution"]} == {n.node_id for n in replica3}
    assert all(n["is_healthy"] for n in body["nodes_distribution"])
    # Counted for this key only: the other user's entry is in every node but not in the counts.
    mine_total = len(replica3[2].request("GET", "/configs", mine).json())
    assert all(n["keys_count"] == mine_total for n in body["nodes_distribution"])
    assert body["all_nodes_synced"] is True

    listed = replica3[1].request("GET", "/cluster/configs", mine, params={"category": "dist"}).json()
    assert sorted(e["key"] for e in listed) == sorted(names)
    assert all(set(e) == {"key", "category", "environment", "created_at", "updated_at"} for e in listed), "no values"
    everything = replica3[1].request("GET", "/cluster/configs", mine).text
    assert hidden not in everything and "hidden-category" not in everything
    assert replica3[0].request("GET", "/cluster/distribution", "opens-nothing-at-all").status_code == 401
    assert replica3[0].request("GET", "/cluster/configs", None).status_code == 401


def test_distribution_marks_a_stopped_node_unhealthy(factory):
    cluster = factory.cluster(3, "replica")
    cluster.wait_healthy(timeout=15)
    user = token("dist-user-")
    assert cluster[0].create(user, token("k-"), 1).status_code == 201
    cluster[2].stop()

    def seen_down():
        body = cluster[0].request("GET", "/cluster/distribution", user).json()
        down = [n for n in body["nodes_distribution"] if n["node_id"] == cluster[2].node_id]
        return body if down and not down[0]["is_healthy"] and down[0]["keys_count"] == 0 else None

    body = wait_until(seen_down, timeout=15, what="the stopped node to show as unhealthy")
    assert body["all_nodes_synced"] is False


def test_an_imported_opensecureconf_directory_replicates_to_every_node(factory):
    """`secureconf import-osc` into the first node (stopped, with the node's own environment),
    which then starts first; the others start empty: they take its salt and every imported revision
    (stamped when its token was issued, so it passes their checks), and each user key reads
    its values on every node."""
    import json
    import subprocess
    from pathlib import Path

    from harness import Cluster, free_ports, secureconf_binary

    fixtures = Path(__file__).resolve().parents[1] / "compat" / "fixtures" / "osc_datadirs" / "osc3.1"
    api_key = token("cluster-api-")
    ports = free_ports(3)
    ids = [f"127.0.0.1:{p}" for p in ports]
    nodes = []
    for i, port in enumerate(ports):
        wd = factory.workdir(f"import-node{i}")
        nodes.append(factory.node(wd, port, factory.node_env(wd, port, ids, api_key, "replica"), api_key))
    done = subprocess.run([str(secureconf_binary()), "import-osc", "--database", str(fixtures / "configurations.db"),
                           "--salt", str(fixtures / "encryption.salt")], env=nodes[0].env, cwd=nodes[0].workdir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "4 imported" in done.stdout, (done.stdout, done.stderr)
    # The imported node starts first: the others, empty, take its salt (an empty node that
    # found no peer with a salt and sorted first would make its own).
    nodes[0].start()
    nodes[0].wait_up()
    for n in nodes[1:]:
        n.start()
    for n in nodes[1:]:
        n.wait_up()
    cluster = Cluster(nodes, api_key, "replica")
    cluster.wait_healthy(timeout=20)
    expected = json.loads((fixtures / "expected_reads.json").read_text())
    for node in cluster:
        for entry in expected:
            got = wait_until(lambda node=node, entry=entry: (lambda r: r.json() if r.status_code == 200 else None)(
                node.read(entry["user_key"], entry["key"], environment=entry["environment"])), timeout=20,
                what=f"{entry['key']} on {node}")
            assert got["value"] == entry["value"]
        status = node.status()
        assert all(not p.get("replication_error") for p in status["nodes"] if not p["self"]), status
