"""OpenSecureConf 3.x shapes beyond the clients' calls: `mode=short|full` on reads and
lists, 405 with `Allow` for a known path asked with another method, HEAD wherever GET is."""

from __future__ import annotations

import requests

from harness import USER_KEY


def test_mode_short_leaves_out_the_times_and_full_keeps_them(node):
    assert node.create("shape-db", {"host": "db"}, environment="shapes").status_code == 201
    base = node.url + "/configs/shape-db?environment=shapes"
    short = node.request("GET", "/configs/shape-db?environment=shapes&mode=short").json()
    full = node.request("GET", "/configs/shape-db?environment=shapes&mode=full").json()
    default = node.request("GET", "/configs/shape-db?environment=shapes").json()
    assert "created_at" not in short and "updated_at" not in short and short["value"] == {"host": "db"}
    assert {"created_at", "updated_at"} <= set(full) and set(default) == set(full)
    listed = node.request("GET", "/configs?environment=shapes&mode=short").json()
    assert listed and all("created_at" not in e for e in listed)
    bad = node.request("GET", "/configs/shape-db?environment=shapes&mode=tiny")
    assert bad.status_code == 422 and "mode" in bad.json()["detail"], base


def test_a_known_path_with_another_method_is_405_with_allow(api_node):
    for method, path, allowed in [("PATCH", "/configs", {"GET", "HEAD", "POST"}),
                                  ("POST", "/configs/some-key", {"GET", "HEAD", "PUT", "DELETE"}),
                                  ("DELETE", "/health", {"GET", "HEAD"}),
                                  ("GET", "/configs/some-key/rollback", {"POST"}),
                                  ("PUT", "/restore", {"POST"})]:
        r = requests.request(method, api_node.url + path, timeout=10)  # no credentials at all: 405 comes first
        assert r.status_code == 405, (method, path, r.status_code, r.text)
        assert set(m.strip() for m in r.headers["Allow"].split(",")) == allowed, r.headers["Allow"]
        assert r.json()["detail"] == "Method Not Allowed"
    assert requests.get(api_node.url + "/no-such-path", timeout=10).status_code == 404
    # Node-to-node paths stay 404 to clients on a node without clustering.
    assert requests.put(api_node.url + "/cluster/salt", timeout=10).status_code == 404


def test_head_answers_wherever_get_does_without_a_body(node):
    assert node.create("shape-head", 1, environment="shapes").status_code == 201
    for path, user_key, status in [("/health", None, 200), ("/metrics", None, 200),
                                   ("/configs/shape-head?environment=shapes", USER_KEY, 200),
                                   ("/configs/shape-missing?environment=shapes", USER_KEY, 404),
                                   ("/configs/shape-head?environment=shapes", "a-wrong-user-key", 401)]:
        headers = {"X-User-Key": user_key} if user_key else {}
        got = requests.get(node.url + path, headers=headers, timeout=10)
        head = requests.head(node.url + path, headers=headers, timeout=10)
        assert got.status_code == status and head.status_code == status, (path, got.status_code, head.status_code)
        assert head.content == b"" and head.headers.get("Content-Type") == got.headers.get("Content-Type")


def test_stats_count_only_what_the_callers_key_opens(node_factory):
    from harness import OTHER_USER_KEY
    n = node_factory.start()
    assert n.create("db", {"h": 1}, category="database", environment="prod").status_code == 201
    assert n.create("cache", 1, category="cache", environment="prod").status_code == 201
    assert n.create("flag", True, environment="dev").status_code == 201
    assert n.create("theirs", "x", category="secret-category", environment="theirs", user_key=OTHER_USER_KEY).status_code == 201
    r = n.request("GET", "/stats")
    assert r.status_code == 200, r.text
    assert r.json() == {"total_keys": 3, "total_categories": 3, "total_environments": 2,
                        "keys_by_category": {"cache": 1, "database": 1, "uncategorized": 1},
                        "keys_by_environment": {"dev": 1, "prod": 2}}
    assert "secret-category" not in r.text and "theirs" not in r.text, "another user's names are not counted or named"
    assert n.request("GET", "/stats", user_key="opens-nothing-here").status_code == 401
    assert n.request("GET", "/stats", user_key=None).status_code == 401


def test_stats_operations_are_the_nodes_counters(api_node):
    assert api_node.create("ops-key", 1, environment="ops").status_code == 201
    assert api_node.request("GET", "/configs/ops-key?environment=ops").status_code == 200
    assert api_node.request("GET", "/configs/ops-missing?environment=ops").status_code == 404
    assert requests.get(api_node.url + "/stats/operations", timeout=10).status_code == 403, "operators only: the API key"
    ops = api_node.request("GET", "/stats/operations", user_key=None).json()
    assert set(ops) == {"read_operations", "write_operations", "encryption_operations", "total_http_requests"}
    assert ops["read_operations"]["success"] >= 1 and ops["read_operations"]["not_found"] >= 1
    assert ops["write_operations"]["create_success"] >= 1 and ops["encryption_operations"]["encrypt"] >= 1
    assert any(k.startswith("GET_/configs/{key}_200") for k in ops["total_http_requests"])


def test_distribution_without_clustering_is_400_as_in_opensecureconf(node):
    r = node.request("GET", "/cluster/distribution")
    assert r.status_code == 400 and r.json()["detail"] == "Clustering is not enabled"
    assert node.request("GET", "/cluster/configs").status_code == 200
