"""CORS for OpenSecureConf's web GUI (gui-ng): its browser's preflights, exactly as it sends
them, answered 200 with the headers the GUI needs; the allowed-origin list of CORS_ORIGINS;
never a credentials grant; never CORS on node-to-node routes."""

from __future__ import annotations

import subprocess

import pytest
import requests

from harness import USER_KEY

GUI = "http://localhost:4200"


def curl_preflight(url: str, method: str, headers: str, origin: str = GUI) -> tuple[int, dict[str, str], str]:
    """What Chrome sends before gui-ng's fetch() with X-User-Key/X-API-Key, through curl."""
    out = subprocess.run(
        ["curl", "-s", "-i", "-X", "OPTIONS", url,
         "-H", f"Origin: {origin}",
         "-H", f"Access-Control-Request-Method: {method}",
         "-H", f"Access-Control-Request-Headers: {headers}",
         "-H", "Referer: http://localhost:4200/",
         "-H", "Sec-Fetch-Mode: cors",
         "-H", "Accept: */*"],
        capture_output=True, text=True, timeout=15, check=True).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields, body


@pytest.fixture(scope="module")
def gui_nodes(tmp_path_factory):
    from harness import NodeFactory
    with NodeFactory(tmp_path_factory.mktemp("cors")) as nodes:
        open_node = nodes.start()
        listed = nodes.start(env={"CORS_ORIGINS": f"{GUI}, https://gui.example.com:8443"})
        closed = nodes.start(env={"CORS_ORIGINS": ""})
        yield open_node, listed, closed


def test_gui_preflights_are_answered_200_with_what_the_gui_needs(gui_nodes):
    node, _, _ = gui_nodes
    for method, path, asked in [("GET", "/configs?environment=prod", "x-api-key,x-user-key"),
                                ("POST", "/configs", "content-type,x-api-key,x-user-key"),
                                ("PUT", "/configs/db?environment=prod", "content-type,x-api-key,x-user-key"),
                                ("DELETE", "/configs/db?environment=prod", "x-api-key,x-user-key"),
                                ("GET", "/cluster/status", "x-api-key,x-user-key"),
                                ("POST", "/backup", "content-type,x-backup-password,x-user-key")]:
        status, h, _ = curl_preflight(node.url + path, method, asked)
        assert status == 200, (method, path, status, h)
        assert h["access-control-allow-origin"] == "*"
        methods = {m.strip() for m in h["access-control-allow-methods"].split(",")}
        assert {"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"} <= methods
        allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
        assert set(asked.split(",")) <= allowed and {"authorization", "x-backup-password"} <= allowed
        assert h.get("access-control-max-age") == "3600"
        assert "access-control-allow-credentials" not in h, "no cookie may ever be honoured cross-origin"


def test_responses_to_the_gui_carry_cors_headers_errors_included(gui_nodes):
    node, _, _ = gui_nodes
    created = requests.post(node.url + "/configs", json={"key": "cors-db", "value": {"a": 1}},
                            headers={"Origin": GUI, "X-User-Key": USER_KEY}, timeout=15)
    assert created.status_code == 201
    for r in [created,
              requests.get(node.url + "/configs/cors-db", headers={"Origin": GUI, "X-User-Key": USER_KEY}, timeout=15),
              requests.get(node.url + "/configs/cors-db", headers={"Origin": GUI, "X-User-Key": "a-wrong-user-key"}, timeout=15),
              requests.get(node.url + "/configs/missing", headers={"Origin": GUI, "X-User-Key": USER_KEY}, timeout=15)]:
        assert r.headers.get("Access-Control-Allow-Origin") == "*", (r.status_code, dict(r.headers))
        assert "X-Request-ID" in r.headers.get("Access-Control-Expose-Headers", "")
        assert "Access-Control-Allow-Credentials" not in r.headers
    without_origin = requests.get(node.url + "/configs/cors-db", headers={"X-User-Key": USER_KEY}, timeout=15)
    assert "Access-Control-Allow-Origin" not in without_origin.headers


def test_an_origin_list_allows_only_its_origins(gui_nodes):
    _, node, closed = gui_nodes
    status, h, _ = curl_preflight(node.url + "/configs", "GET", "x-api-key,x-user-key")
    assert status == 200 and h["access-control-allow-origin"] == GUI and "origin" in h.get("vary", "").lower()
    status, h, _ = curl_preflight(node.url + "/configs", "GET", "x-user-key", origin="https://gui.example.com:8443")
    assert status == 200 and h["access-control-allow-origin"] == "https://gui.example.com:8443"
    for target in (node, closed):
        status, h, body = curl_preflight(target.url + "/configs", "GET", "x-user-key", origin="https://evil.example")
        assert status == 400 and "access-control-allow-origin" not in h and "Disallowed CORS origin" in body
        r = requests.get(target.url + "/health", headers={"Origin": "https://evil.example"}, timeout=10)
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(node.url + "/health", headers={"Origin": GUI}, timeout=10)
    assert r.headers.get("Access-Control-Allow-Origin") == GUI and "Origin" in r.headers.get("Vary", "")


def test_disallowed_methods_and_headers_are_refused_in_preflight(gui_nodes):
    node, _, _ = gui_nodes
    status, h, body = curl_preflight(node.url + "/configs", "PATCH", "x-user-key")
    assert status == 400 and "method" in body and "access-control-allow-origin" not in h
    status, h, body = curl_preflight(node.url + "/configs", "GET", "x-user-key,x-evil-header")
    assert status == 400 and "headers" in body


def test_node_to_node_routes_never_answer_with_cors(gui_nodes):
    node, _, _ = gui_nodes
    for method, path in [("GET", "/cluster/salt"), ("POST", "/cluster/replicate"), ("GET", "/cluster/digest"),
                         ("POST", "/cluster/fetch"), ("POST", "/cluster/buckets")]:
        status, h, _ = curl_preflight(node.url + path, method, "content-type,x-api-key")
        assert "access-control-allow-origin" not in h, (path, status, h)
        r = requests.request(method, node.url + path, headers={"Origin": GUI}, timeout=10)
        assert "Access-Control-Allow-Origin" not in r.headers, (path, r.status_code)
