"""OpenSecureConf's JS client (client-js/src/index.ts at 27ebe0d), replayed request by request:
each method's exact method, path and query (URLSearchParams, encodeURIComponent), headers
(`Content-Type: application/json` even on a GET or an empty POST, X-User-Key, X-API-Key,
X-Backup-Password) and body (JSON.stringify, which leaves out undefined members), sent raw
over a socket so nothing adds or normalises a header, against a node with the API key
required. Each must succeed, with the shape the client reads."""

from __future__ import annotations

import json
import socket
import urllib.parse

from common.sse import Stream
from harness import random_token

USER = "js-client-user-key-1"
PASSWORD = "js-backup-password"


def encode_uri_component(s: str) -> str:
    return urllib.parse.quote(s, safe="-_.!~*'()")


def search_params(pairs) -> str:
    """URLSearchParams.toString(): application/x-www-form-urlencoded, space as '+'."""
    return urllib.parse.urlencode(list(pairs), quote_via=urllib.parse.quote_plus, safe="*-._")


def send(node, method, target, headers, body=None):
    """One raw HTTP/1.1 request, as fetch() puts it on the wire; (status, headers, text)."""
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{node.port}", "Connection: close", "Accept: */*"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(payload)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as s:
        s.sendall(raw)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    response_headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if response_headers.get("transfer-encoding") == "chunked":
        body_bytes, data = b"", rest
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body_bytes, data = body_bytes + data[:size], data[size + 2:]
        rest = body_bytes
    return int(status_line.split()[1]), response_headers, rest.decode()


class JSClient:
    """The JS client's request() and its special cases, method for method."""

    def __init__(self, node, api_key):
        self.node, self.api_key = node, api_key

    def request(self, method, endpoint, body=None):
        headers = {"Content-Type": "application/json", "X-User-Key": USER, "X-API-Key": self.api_key}
        if body is not None:
            body = {k: v for k, v in body.items() if v is not None}  # JSON.stringify drops undefined
        status, _, text = send(self.node, method, endpoint, headers, body)
        assert 200 <= status < 300, (method, endpoint, status, text)
        return json.loads(text)

    def create(self, key, value, environment, category=None):
        return self.request("POST", "/configs", {"key": key, "value": value, "environment": environment, "category": category})

    def read(self, key, environment):
        return self.request("GET", f"/configs/{encode_uri_component(key)}?{search_params([('environment', environment)])}")

    def update(self, key, environment, value, category=None):
        return self.request("PUT", f"/configs/{encode_uri_component(key)}?{search_params([('environment', environment)])}",
                            {"value": value, "category": category})

    def delete(self, key, environment):
        return self.request("DELETE", f"/configs/{encode_uri_component(key)}?{search_params([('environment', environment)])}")

    def list(self, category=None, environment=None):
        pairs = [p for p in (("category", category), ("environment", environment)) if p[1]] + [("mode", "full")]
        return self.request("GET", f"/configs?{search_params(pairs)}")

    def backup_request(self, endpoint, body=None):
        headers = {"Content-Type": "application/json", "X-User-Key": USER, "X-Backup-Password": PASSWORD, "X-API-Key": self.api_key}
        status, _, text = send(self.node, "POST", endpoint, headers, body)
        assert status == 200, (endpoint, status, text)
        return json.loads(text)

    def metrics(self):
        status, headers, text = send(self.node, "GET", "/metrics", {"X-API-Key": self.api_key})
        assert status == 200 and headers["content-type"].startswith("text/plain")
        return text


def test_every_request_of_the_js_client_succeeds_as_it_sends_it(node_factory):
    api_key = random_token("js-api-")
    n = node_factory.start(api_key=api_key)
    js = JSClient(n, api_key)

    info = js.request("GET", "/")
    assert info["service"] and "endpoints" in info
    key = "db url:ü+1"  # encodeURIComponent and URLSearchParams both at work
    created = js.create(key, {"host": "h", "port": 5432}, "prod env", "database")
    assert created["key"] == key and created["environment"] == "prod env" and created["category"] == "database"
    js.create("plain", "v", "prod env")  # category undefined: left out of the body
    assert js.read(key, "prod env")["value"] == {"host": "h", "port": 5432}
    assert js.update(key, "prod env", {"host": "h2"})["value"] == {"host": "h2"}
    assert js.read(key, "prod env")["category"] == "database", "an update without category keeps it"
    listed = js.list(environment="prod env")
    assert {e["key"] for e in listed} == {key, "plain"} and all("created_at" in e for e in listed)
    assert [e["key"] for e in js.list(category="database")] == [key]
    # count / exists / listCategories / listEnvironments / bulk* are built on these calls.
    status = js.request("GET", "/cluster/status")
    assert status["enabled"] is False and status["total_nodes"] == 1 and status["nodes"][0]["is_healthy"] is True, status
    assert js.request("GET", "/cluster/health")["status"] == "healthy"
    assert "osc_config_operations_total" in js.metrics()

    backup = js.backup_request(f"/backup?{search_params([('environment', 'prod env')])}")
    assert backup["total_keys"] == 2 and backup["backup_data"]
    assert js.delete(key, "prod env")["message"]
    assert js.delete("plain", "prod env")["message"]
    imported = js.backup_request("/import", {"backup_data": backup["backup_data"], "overwrite": False})
    assert (imported["imported"], imported["failed"]) == (2, 0), imported
    assert js.read(key, "prod env")["value"] == {"host": "h2"}

    assert set(js.request("GET", "/sse/stats")) == {"subscriptions", "events", "connection_health", "performance"}
    assert js.request("GET", "/sse/subscriptions") == []
    assert js.request("GET", "/sse/health")["status"] == "healthy"
    # Its SSEClient: EventSource on /sse/subscribe?<filters>, X-API-Key as the only header (Node.js).
    with Stream(f"{n.url}/sse/subscribe?{search_params([('environment', 'prod env')])}", headers={"X-API-Key": api_key}) as s:
        assert s.next().event == "connected"
        js.update(key, "prod env", 3)
        event = s.next()
        assert (event.event, event.json["key"], event.json["environment"]) == ("updated", key, "prod env")
