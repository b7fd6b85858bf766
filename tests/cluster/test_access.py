"""Access control (OSC_AUTH_MODE=tokens) with real node processes: users made with
`secureconf users add` and POST /auth/users, login tokens and service tokens, role and
scoped policies (403 naming the capability, listings/stats/events/backups showing only what
the policy allows), the audit actor, revocation across a three-node cluster within a second
(also on a node that was down while it happened), rotation of a service token with an
overlap, the failed-login limiter under a flood while valid users keep reading, and no
password or token secret in any log or database file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest
import requests

from harness import secureconf_binary
from common.nodeproc import wait_until

USER_KEY = "access-user-key-01"
ADMIN_PASSWORD = "admin-password-" + os.urandom(4).hex()


def add_user(node, name, role, password):
    env = dict(node.env, SECURECONF_PASSWORD=password)
    r = subprocess.run([str(secureconf_binary()), "users", "add", name, "--role", role], env=env, cwd=node.workdir,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr
    return r


def login(node, name, password, form=False):
    if form:
        r = requests.post(node.url + "/auth/login", data={"username": name, "password": password}, timeout=10)
    else:
        r = requests.post(node.url + "/auth/login", json={"username": name, "password": password}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    return body["access_token"]


def call(node, method, path, token=None, user_key=USER_KEY, **kw):
    headers = dict(kw.pop("headers", {}) or {})
    if token:
        headers["Authorization"] = "Bearer " + token
    if user_key:
        headers["X-User-Key"] = user_key
    return requests.request(method, node.url + path, headers=headers, timeout=10, **kw)


def follow(node, headers, on_line=None):
    """Opens /sse/subscribe with `headers` and reads it in a thread: the list of the events'
    data, growing as they arrive (`on_line` may add entries for other lines)."""
    events = []
    stream = requests.get(node.url + "/sse/subscribe", headers=headers, stream=True, timeout=10)
    assert stream.status_code == 200, stream.text

    def read_stream():
        try:
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                elif line and on_line:
                    on_line(line, events)
        except Exception:
            pass
    threading.Thread(target=read_stream, daemon=True).start()
    return stream, events


@pytest.fixture(scope="module")
def single(module_factory):
    """One node in tokens mode (a cluster of one: the harness's node with OSC_AUTH_MODE=tokens)."""
    cluster = module_factory.cluster(1, "replica", {"OSC_AUTH_MODE": "tokens", "OSC_AUTH_FAILURE_LIMIT": "20"})
    node = cluster[0]
    add_user(node, "root", "admin", ADMIN_PASSWORD)
    return node


def test_roles_and_scoped_policies_decide_what_each_user_may_do_and_see(single):
    node = single
    admin = login(node, "root", ADMIN_PASSWORD)
    # Without a token: 401, whatever else the request carries; the break-glass API key still works.
    r = call(node, "GET", "/configs")
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert call(node, "GET", "/configs", token="sct_0123456789abcdef_" + "x" * 43).status_code == 401
    assert call(node, "GET", "/configs", headers={"X-API-Key": node.api_key}).status_code == 200

    for env, key in [("production", "db.password"), ("staging", "db.password"), ("staging", "feature.flag")]:
        assert call(node, "POST", "/configs", admin, json={"key": key, "value": f"{env}-{key}", "environment": env}).status_code == 201
    users = [
        {"username": "rita", "password": "rita-pass-1", "role": "reader"},
        {"username": "walt", "password": "walt-pass-1", "role": "writer",
         "policies": [{"environments": ["staging"], "capabilities": ["read", "list", "write", "history", "events"]}]},
        {"username": "kim", "password": "kim-pass-01", "role": "reader",
         "policies": [{"environments": ["*"], "keys": ["feature.*"], "capabilities": ["read", "list"]}]},
    ]
    for u in users:
        r = call(node, "POST", "/auth/users", admin, json=u)
        assert r.status_code == 201, r.text
        assert "password" not in r.json()
    assert call(node, "POST", "/auth/users", admin, json=users[0]).status_code == 400, "a taken name"
    bad = call(node, "POST", "/auth/users", admin, json={"username": "x", "password": "long-enough", "role": "boss"})
    assert bad.status_code == 422 and "role" in bad.json()["detail"]
    bad = call(node, "POST", "/auth/users", admin,
               json={"username": "y", "password": "long-enough", "policies": [{"capabilities": ["fly"]}]})
    assert bad.status_code == 422 and "fly" in bad.json()["detail"]

    rita, walt = login(node, "rita", "rita-pass-1"), login(node, "walt", "walt-pass-1", form=True)
    kim = login(node, "kim", "kim-pass-01")
    me = call(node, "GET", "/auth/me", walt, user_key=None).json()
    assert me["subject"] == "user:walt" and me["role"] == "writer" and me["policies"][0]["environments"] == ["staging"]

    # A reader reads, and gets 403 naming the capability on a write.
    assert call(node, "GET", "/configs/db.password", rita, params={"environment": "production"}).status_code == 200
    r = call(node, "PUT", "/configs/db.password", rita, params={"environment": "production"}, json={"value": "no"})
    assert r.status_code == 403 and "'write'" in r.json()["detail"], r.text
    # A writer scoped to staging: 403 on production, 200 on staging.
    r = call(node, "PUT", "/configs/db.password", walt, params={"environment": "production"}, json={"value": "no"})
    assert r.status_code == 403 and "production" in r.json()["detail"]
    assert call(node, "PUT", "/configs/db.password", walt, params={"environment": "staging"}, json={"value": "new"}).status_code == 200
    # Lists and stats show only what the policy allows.
    listed = call(node, "GET", "/configs", walt)
    assert listed.status_code == 200
    assert sorted((e["environment"], e["key"]) for e in listed.json()) == [("staging", "db.password"), ("staging", "feature.flag")]
    assert listed.headers.get("X-SecureConf-Skipped", "0") == "0", "what the policy hides is not counted either"
    assert [e["key"] for e in call(node, "GET", "/configs", kim).json()] == ["feature.flag"]
    # Pages count only what the policy shows: no short page, and no next id, betrays hidden entries.
    pages, after = [], None
    while True:
        page = call(node, "GET", "/configs", walt, params={"limit": 1, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        pages.append([(e["environment"], e["key"]) for e in page.json()])
        after = page.headers.get("X-SecureConf-Next-After")
        if not after:
            break
    assert pages == [[("staging", "db.password")], [("staging", "feature.flag")], []], pages
    assert [len(call(node, "GET", "/configs", walt, params={"limit": 1, "offset": i}).json()) for i in range(3)] == [1, 1, 0]
    stats = call(node, "GET", "/stats", walt).json()
    assert stats["total_keys"] == 2 and "production" not in json.dumps(stats)
    # Walt has no delete, no audit, no admin.
    assert call(node, "DELETE", "/configs/feature.flag", walt, params={"environment": "staging"}).status_code == 403
    assert call(node, "GET", "/audit", walt, user_key=None).status_code == 403
    assert call(node, "GET", "/auth/users", walt, user_key=None).status_code == 403
    # A backup holds only what the policy lets the caller read.
    backup = call(node, "POST", "/backup", kim, headers={"X-Backup-Password": "backup-pass"})
    assert backup.status_code == 200 and backup.json()["total_keys"] == 1

    # Events: walt's stream carries staging changes only.
    stream, events = follow(node, {"Authorization": "Bearer " + walt})
    time.sleep(0.3)
    assert call(node, "PUT", "/configs/db.password", admin, params={"environment": "production"}, json={"value": "p2"}).status_code == 200
    assert call(node, "PUT", "/configs/feature.flag", admin, params={"environment": "staging"}, json={"value": "s2"}).status_code == 200
    assert wait_until(lambda: any(e.get("environment") == "staging" and e.get("key") == "feature.flag" for e in events), 5)
    time.sleep(0.3)
    stream.close()
    assert not any(e.get("environment") == "production" for e in events), events

    # The audit trail names the user for every request it made.
    records = call(node, "GET", "/audit", admin, user_key=None, params={"actor": "user:walt", "limit": 1000}).json()["records"]
    actions = {r["action"] for r in records}
    assert {"login", "auth_me", "update", "list", "stats", "delete", "subscribe"} <= actions, actions
    assert all(r["actor"] == "user:walt" for r in records)
    denied = [r for r in records if r["outcome"] == "denied"]
    assert any(r["action"] == "update" and r["environment"] == "production" for r in denied), denied

    # Users and tokens never show in listings or events as configuration.
    everything = call(node, "GET", "/configs", admin, params={"mode": "full"}).json()
    assert all(e["environment"] in ("production", "staging") for e in everything)

    # A role change takes effect on the user's existing token; deleting the user ends its tokens.
    assert call(node, "PUT", "/auth/users/rita", admin, user_key=None, json={"role": "writer"}).status_code == 200
    assert wait_until(lambda: call(node, "PUT", "/configs/feature.flag", rita, params={"environment": "staging"},
                                   json={"value": "by-rita"}).status_code == 200, 3)
    assert call(node, "DELETE", "/auth/users/rita", admin, user_key=None).status_code == 200
    assert call(node, "GET", "/configs", rita).status_code == 401
    # Logout revokes the token it carries.
    assert call(node, "POST", "/auth/logout", kim, user_key=None).status_code == 200
    assert call(node, "GET", "/configs", kim).status_code == 401


def test_service_tokens_rotate_with_an_overlap_and_secrets_stay_out_of_logs_and_files(single):
    node = single
    admin = login(node, "root", ADMIN_PASSWORD)
    assert call(node, "POST", "/configs", admin, json={"key": "ci.deploy", "value": 1, "environment": "ci"}).status_code in (201, 400)
    policy = [{"environments": ["ci"], "capabilities": ["read", "list"]}]
    first = call(node, "POST", "/auth/tokens", admin, user_key=None, json={"name": "ci-deploy", "policies": policy})
    assert first.status_code == 201, first.text
    old = first.json()
    assert old["token"].startswith("sct_") and old["subject"] == "token:ci-deploy"
    assert call(node, "GET", "/configs/ci.deploy", old["token"], params={"environment": "ci"}).status_code == 200
    assert call(node, "GET", "/configs", old["token"], params={"environment": "staging"}).status_code == 403
    assert [e["key"] for e in call(node, "GET", "/configs", old["token"]).json()] == ["ci.deploy"]
    new = call(node, "POST", "/auth/tokens", admin, user_key=None,
               json={"name": "ci-deploy-2", "policies": policy, "expires_in": 86400}).json()
    # Both valid during the overlap.
    for t in (old["token"], new["token"]):
        assert call(node, "GET", "/configs/ci.deploy", t, params={"environment": "ci"}).status_code == 200
    listing = call(node, "GET", "/auth/tokens", admin, user_key=None)
    assert listing.status_code == 200
    by_id = {t["id"]: t for t in listing.json()}
    assert by_id[old["id"]]["last_used_at"] and by_id[new["id"]]["expires_at"]
    assert old["token"] not in listing.text and "hash" not in listing.text
    # Revoke the old one: refused at once; the new one goes on.
    assert call(node, "DELETE", f"/auth/tokens/{old['id']}", admin, user_key=None).status_code == 200
    assert call(node, "GET", "/configs/ci.deploy", old["token"], params={"environment": "ci"}).status_code == 401
    assert call(node, "GET", "/configs/ci.deploy", new["token"], params={"environment": "ci"}).status_code == 200
    assert call(node, "DELETE", f"/auth/tokens/{old['id']}", admin, user_key=None).status_code == 404
    records = call(node, "GET", "/audit", admin, user_key=None, params={"actor": "token:ci-deploy-2"}).json()["records"]
    assert records and all(r["actor"] == "token:ci-deploy-2" for r in records)

    # No secret in the log or in any file of the node's directory (records hold hashes only).
    secrets_ = [ADMIN_PASSWORD, old["token"], new["token"], old["token"].split("_", 2)[2], "walt-pass-1", admin]
    blobs = [node.log_text().encode()]
    for name in os.listdir(node.workdir):
        path = node.workdir / name
        if path.is_file():
            blobs.append(path.read_bytes())
    for s in secrets_:
        assert not any(s.encode() in b for b in blobs), "a password or token secret was written in the clear"


def test_a_wrong_password_flood_gets_429_while_valid_users_keep_reading(factory):
    node = factory.cluster(1, "replica", {"OSC_AUTH_MODE": "tokens", "OSC_AUTH_FAILURE_LIMIT": "20"})[0]
    add_user(node, "root", "admin", ADMIN_PASSWORD)
    admin = login(node, "root", ADMIN_PASSWORD)
    assert call(node, "POST", "/configs", admin, json={"key": "hot", "value": "v", "environment": "flood"}).status_code in (201, 400)
    call(node, "GET", "/configs/hot", admin, params={"environment": "flood"})  # warm the user key

    def read_latencies(n):
        out = []
        s = requests.Session()
        for _ in range(n):
            t = time.perf_counter()
            r = s.get(node.url + "/configs/hot", params={"environment": "flood"},
                      headers={"Authorization": "Bearer " + admin, "X-User-Key": USER_KEY}, timeout=10)
            out.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        return sorted(out)

    baseline = read_latencies(200)
    statuses = []
    stop = threading.Event()

    def flood():
        s = requests.Session()
        while not stop.is_set():
            r = s.post(node.url + "/auth/login", json={"username": "root", "password": "wrong-" + os.urandom(3).hex()}, timeout=10)
            statuses.append(r.status_code)

    flooders = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for f in flooders:
        f.start()
    # Past the limit (OSC_AUTH_FAILURE_LIMIT, 20 by default): each wrong password costs a scrypt run first.
    assert wait_until(lambda: 429 in statuses, 30), f"no 429 after {len(statuses)} wrong passwords"
    during = read_latencies(300)
    stop.set()
    for f in flooders:
        f.join(10)
    p99 = lambda xs: xs[int(len(xs) * 0.99) - 1] * 1000  # noqa: E731
    print(f"login flood: {len(statuses)} attempts, {statuses.count(429)} answered 429, {statuses.count(401)} 401; "
          f"valid reads p99 {p99(baseline):.1f} ms before, {p99(during):.1f} ms during")
    assert 429 in statuses and 200 not in statuses
    assert p99(during) < 250, "valid users' reads keep answering during a login flood"


def test_apikey_mode_has_no_auth_routes(factory):
    cluster = factory.cluster(1)
    node = cluster[0]
    assert requests.post(node.url + "/auth/login", json={"username": "a", "password": "b"}, timeout=5).status_code == 404
    assert "auth_login" not in json.dumps(requests.get(node.url + "/", timeout=5).json())


@pytest.mark.parametrize("mode", ["replica", "federated"])
def test_a_revocation_reaches_every_node_within_a_second_and_a_returning_node(factory, mode):
    """Users and tokens replicate in both cluster modes (a federated node keeps its own
    entries, but a login works on every node and a revocation holds on every node)."""
    cluster = factory.cluster(3, mode, {"OSC_AUTH_MODE": "tokens"})
    cluster.wait_healthy(timeout=15)
    n0, n1, n2 = cluster[0], cluster[1], cluster[2]
    add_user(n0, "root", "admin", ADMIN_PASSWORD)
    # The user replicates: every node logs it in.
    assert wait_until(lambda: requests.post(n2.url + "/auth/login", json={"username": "root", "password": ADMIN_PASSWORD},
                                            timeout=5).status_code == 200, 10)
    admin = login(n1, "root", ADMIN_PASSWORD)
    # A login token made on one node is good on the others once it has replicated (milliseconds).
    assert wait_until(lambda: call(n0, "GET", "/auth/me", admin, user_key=None).status_code == 200, 5)
    created = call(n0, "POST", "/auth/tokens", admin, user_key=None, json={"name": "svc", "role": "reader"}).json()
    token = created["token"]
    for n in cluster:
        assert wait_until(lambda n=n: call(n, "GET", "/configs", token).status_code == 200, 5), n
    revoked_at = time.monotonic()
    assert call(n0, "DELETE", f"/auth/tokens/{created['id']}", admin, user_key=None).status_code == 200
    seen = {}
    deadline = revoked_at + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        for n in (n1, n2):
            if n.node_id not in seen and call(n, "GET", "/configs", token).status_code == 401:
                seen[n.node_id] = time.monotonic() - revoked_at
        time.sleep(0.02)
    print(f"{mode}: revocation enforced on the other nodes after " + ", ".join(f"{v * 1000:.0f} ms" for v in seen.values()))
    assert len(seen) == 2 and max(seen.values()) < 1.0, seen

    # Another tenant's distribution: each node counts that tenant's entries (replica: all of
    # them everywhere; federated: where they were written), and nothing of the default tenant.
    assert call(n0, "POST", "/configs", admin, json={"key": "default.only", "value": 1}).status_code == 201
    assert call(n0, "POST", "/auth/users", admin, user_key=None,
                json={"username": "ann", "password": "ann-pass-01", "role": "writer", "tenant": "acme"}).status_code == 201
    assert wait_until(lambda: requests.post(n1.url + "/auth/login", json={"username": "ann", "password": "ann-pass-01"},
                                            timeout=5).status_code == 200, 10)
    ann = login(n1, "ann", "ann-pass-01")
    for i in range(2):
        assert call(n1, "POST", "/configs", ann, json={"key": f"acme.{i}", "value": i}).status_code == 201
    expected = {n.node_id: (2 if mode == "replica" or n is n1 else 0) for n in cluster}

    def distribution():
        r = call(n0, "GET", "/cluster/distribution", ann)
        assert r.status_code == 200, r.text
        return {d["node_id"]: d["keys_count"] for d in r.json()["nodes_distribution"]}
    assert wait_until(lambda: distribution() == expected, 10), (distribution(), expected)
    assert call(n0, "GET", "/cluster/status", ann, user_key=None).status_code == 403, "entry counts span every tenant"

    # A scoped policy's pages count only what it may see, merged across federated nodes too.
    for env in ("hidden", "seen"):
        for i in range(2):
            assert call(n0, "POST", "/configs", admin, json={"key": f"{env}.{i}", "value": i, "environment": env}).status_code == 201
    assert call(n0, "POST", "/auth/users", admin, user_key=None, json={
        "username": "sam", "password": "sam-pass-01", "policies": [{"environments": ["seen"], "capabilities": ["read", "list"]}]}).status_code == 201
    assert wait_until(lambda: requests.post(n1.url + "/auth/login", json={"username": "sam", "password": "sam-pass-01"},
                                            timeout=5).status_code == 200, 10)
    sam = login(n1, "sam", "sam-pass-01")
    pages = [[e["key"] for e in call(n1, "GET", "/configs", sam, params={"limit": 1, "offset": i}).json()] for i in range(3)]
    assert pages == [["seen.0"], ["seen.1"], []], pages
    assert call(n0, "GET", "/cluster/status", admin, user_key=None).status_code == 200

    # A node down while a token is revoked refuses it as soon as it is back.
    second = call(n0, "POST", "/auth/tokens", admin, user_key=None, json={"name": "svc2", "role": "reader"}).json()
    assert wait_until(lambda: call(n2, "GET", "/configs", second["token"]).status_code == 200, 5)
    n2.stop()

    def n2_healthy_on_n0():
        return next(n for n in n0.status()["nodes"] if n["node_id"] == n2.node_id)["healthy"]
    assert wait_until(lambda: not n2_healthy_on_n0(), 10)
    assert call(n0, "DELETE", f"/auth/tokens/{second['id']}", admin, user_key=None).status_code == 200
    # A write that sends nothing to the stopped node (a federated node's data) does not make it look alive.
    assert call(n0, "POST", "/configs", admin, json={"key": "while.down", "value": 1}).status_code == 201
    time.sleep(0.5)
    assert not n2_healthy_on_n0(), "a stopped peer shown healthy after a local write"
    n2.launch()
    answers = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            # Ready first: once it says ready, the node has caught up and takes tokens again.
            ready = requests.get(n2.url + "/ready", timeout=5).status_code
            status = call(n2, "GET", "/configs", second["token"]).status_code
        except requests.RequestException:
            time.sleep(0.02)
            continue
        answers.append(status)
        assert not (ready == 200 and status == 503), "ready while it refuses tokens"
        if status == 401:
            break
        time.sleep(0.02)
    print(f"{mode}: returning node answered the revoked token: {sorted(set(answers))} (503 while catching up)")
    assert answers and answers[-1] == 401 and 200 not in answers, answers

    # A node that comes back while no peer answers trusts no token, issues none, and says it
    # is not ready; once a peer is back it catches up and serves again.
    for n in (n1, n2, n0):
        n.stop()
    n0.launch()
    time.sleep(1.5)
    assert requests.get(n0.url + "/ready", timeout=5).status_code == 503
    r = requests.post(n0.url + "/auth/login", json={"username": "root", "password": ADMIN_PASSWORD}, timeout=10)
    assert r.status_code == 503 and "catching up" in r.json()["detail"], r.text
    n1.launch()
    assert wait_until(lambda: requests.get(n0.url + "/ready", timeout=5).status_code == 200, 15)
    assert call(n0, "GET", "/auth/me", login(n0, "root", ADMIN_PASSWORD), user_key=None).status_code == 200


def test_tenants_see_nothing_of_each_other(single):
    node = single
    root = login(node, "root", ADMIN_PASSWORD)
    r = call(node, "POST", "/auth/users", root, user_key=None,
             json={"username": "ann", "password": "ann-pass-01", "role": "admin", "tenant": "acme"})
    assert r.status_code == 201 and r.json()["tenant"] == "acme", r.text
    assert call(node, "POST", "/auth/users", root, user_key=None,
                json={"username": "bad", "password": "bad-pass-01", "tenant": "Not A Tenant"}).status_code == 422
    ann = login(node, "ann", "ann-pass-01")
    assert call(node, "GET", "/auth/me", ann, user_key=None).json()["tenant"] == "acme"
    # The same key in two tenants is two entries; each sees its own.
    assert call(node, "POST", "/configs", root, json={"key": "shared.db", "value": "default-value", "environment": "prod"}).status_code == 201
    assert call(node, "POST", "/configs", root, json={"key": "only.default", "value": 1, "environment": "prod"}).status_code == 201
    assert call(node, "POST", "/configs", ann, json={"key": "shared.db", "value": "acme-value", "environment": "prod"}).status_code == 201
    assert call(node, "GET", "/configs/shared.db", ann, params={"environment": "prod"}).json()["value"] == "acme-value"
    assert call(node, "GET", "/configs/shared.db", root, params={"environment": "prod"}).json()["value"] == "default-value"
    # Another tenant's keys are not found (404, not 403), and cannot be written over.
    r = call(node, "GET", "/configs/only.default", ann, params={"environment": "prod"})
    assert r.status_code == 404, r.text
    assert call(node, "PUT", "/configs/only.default", ann, params={"environment": "prod"}, json={"value": 2}).status_code == 404
    assert call(node, "GET", "/configs/only.default/versions", ann, params={"environment": "prod"}).status_code == 404
    # Listings, counts, backups, exports, events: the tenant's own only.
    listed = call(node, "GET", "/configs", ann)
    assert [(e["environment"], e["key"], e["value"]) for e in listed.json()] == [("prod", "shared.db", "acme-value")]
    assert listed.headers.get("X-SecureConf-Skipped", "0") == "0"
    assert call(node, "GET", "/stats", ann).json()["total_keys"] == 1
    assert call(node, "POST", "/backup", ann, headers={"X-Backup-Password": "pw-123456"}).json()["total_keys"] == 1
    export = subprocess.run([str(secureconf_binary()), "export", "--url", node.url, "--environment", "prod", "--format", "json"],
                            env={"PATH": os.environ["PATH"], "SECURECONF_TOKEN": ann, "SECURECONF_USER_KEY": USER_KEY,
                                 "HOME": str(node.workdir)}, capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert json.loads(export.stdout) == {"shared.db": "acme-value"}
    stream, events = follow(node, {"Authorization": "Bearer " + ann, "X-User-Key": USER_KEY})
    time.sleep(0.3)
    assert call(node, "PUT", "/configs/shared.db", root, params={"environment": "prod"}, json={"value": "d2"}).status_code == 200
    assert call(node, "PUT", "/configs/shared.db", ann, params={"environment": "prod"}, json={"value": "a2"}).status_code == 200
    assert wait_until(lambda: any(e.get("key") == "shared.db" and (e.get("data") or {}).get("value") == "a2" for e in events), 5)
    time.sleep(0.3)
    stream.close()
    assert not any((e.get("data") or {}).get("value") == "d2" for e in events), events
    # A tenant's audit trail is its own; the default tenant's administrators see every tenant's.
    mine = call(node, "GET", "/audit", ann, user_key=None, params={"limit": 1000})
    assert mine.status_code == 200, mine.text
    records = mine.json()["records"]
    assert records and all(r["tenant"] == "acme" for r in records), records
    assert {"login", "create", "update", "list", "stats", "backup"} <= {r["action"] for r in records}
    assert not any(r["actor"] == "user:root" for r in records), "nothing of the default tenant"
    assert all(r["environment"] is None or r["environment"].endswith("prod") or r["environment"] == "\u0002acme\u0002"
               for r in records)
    assert call(node, "GET", "/audit/verify", ann, user_key=None).status_code == 403
    everyone = call(node, "GET", "/audit", root, user_key=None, params={"actor": "user:ann", "limit": 1000}).json()["records"]
    assert len(everyone) >= len([r for r in records if r["actor"] == "user:ann"]) > 0
    only_acme = call(node, "GET", "/audit", root, user_key=None, params={"tenant": "acme", "limit": 1000}).json()["records"]
    assert only_acme and all(r.get("tenant") == "acme" for r in only_acme)
    # What spans tenants stays with the default tenant's administrators.
    assert call(node, "GET", "/sse/subscriptions", ann, user_key=None).status_code == 403
    assert [u["username"] for u in call(node, "GET", "/auth/users", ann, user_key=None).json()] == ["ann"]
    assert call(node, "DELETE", "/auth/users/walt", ann, user_key=None).status_code == 404
    created = call(node, "POST", "/auth/tokens", ann, user_key=None, json={"name": "acme-ci", "role": "reader"}).json()
    assert created["tenant"] == "acme"
    assert [e["key"] for e in call(node, "GET", "/configs", created["token"]).json()] == ["shared.db"]
    # The default tenant's listing shows none of acme's.
    assert all(e["value"] != "a2" for e in call(node, "GET", "/configs", root).json())


def test_rekey_retires_a_user_key_across_the_cluster(factory):
    cluster = factory.cluster(3)
    cluster.wait_healthy(timeout=15)
    n0, n1, n2 = cluster[0], cluster[1], cluster[2]
    old, new, other = "leaked-user-key-01", "fresh-user-key-001", "someone-elses-key"
    for i in range(3):
        assert n0.request("POST", "/configs", old, json={"key": f"k{i}", "value": {"n": i}, "environment": "prod"}).status_code == 201
    assert n0.request("POST", "/configs", other, json={"key": "theirs", "value": "t", "environment": "prod"}).status_code == 201
    assert n0.request("POST", "/configs", old, json={"key": "elsewhere", "value": 1, "environment": "dev"}).status_code == 201
    r = n1.request("POST", "/rekey", old, params={"environment": "prod"}, headers={"X-New-User-Key": "short"})
    assert r.status_code == 422 and "X-New-User-Key" in r.json()["detail"]
    assert n1.request("POST", "/rekey", old, params={"environment": "prod"}).status_code == 422
    assert n1.request("POST", "/rekey", "a-wrong-user-key", params={"environment": "prod"},
                      headers={"X-New-User-Key": new}).status_code == 401
    cluster.wait_converged()
    r = n1.request("POST", "/rekey", old, params={"environment": "prod"}, headers={"X-New-User-Key": new})
    assert r.status_code == 200, r.text
    assert r.json() == {"environment": "prod", "rekeyed": ["k0", "k1", "k2"], "other_keys": 1, "purged": False}
    cluster.wait_converged()
    for n in cluster:
        assert n.request("GET", "/configs/k1", new, params={"environment": "prod"}).json()["value"] == {"n": 1}
        assert n.request("GET", "/configs/k1", old, params={"environment": "prod"}).status_code == 401
        assert n.request("GET", "/configs/theirs", other, params={"environment": "prod"}).json()["value"] == "t"
        assert n.request("GET", "/configs/elsewhere", old, params={"environment": "dev"}).status_code == 200, "another environment"
    assert [v["version"] for v in n0.request("GET", "/configs/k1/versions", new, params={"environment": "prod"}).json()["versions"]] == [1, 2]

    # With purge=true the old values leave history on every node: their ciphertexts are gone
    # from every node's database, and the old versions answer 404 (pruned).
    for i in range(2):
        assert n0.request("POST", "/configs", old, json={"key": f"s{i}", "value": "v1", "environment": "stage"}).status_code == 201
        assert n0.request("PUT", f"/configs/s{i}", old, params={"environment": "stage"}, json={"value": "v2"}).status_code == 200
    cluster.wait_converged()
    import sqlite3

    def ciphertexts(n, key):
        db = sqlite3.connect(f"file:{n.workdir / 'configurations.db'}?mode=ro", uri=True)
        try:
            return {row[0] for row in db.execute("SELECT ciphertext FROM revisions WHERE key = ?", (key,))}
        finally:
            db.close()
    retired = ciphertexts(n0, "s0") | ciphertexts(n0, "s1")
    assert len(retired) == 4
    assert n2.request("POST", "/rekey", old, params={"environment": "stage", "purge": "maybe"},
                      headers={"X-New-User-Key": new}).status_code == 422
    r = n2.request("POST", "/rekey", old, params={"environment": "stage", "purge": "true"}, headers={"X-New-User-Key": new})
    assert r.status_code == 200 and r.json() == {"environment": "stage", "rekeyed": ["s0", "s1"], "other_keys": 0, "purged": True}, r.text
    cluster.wait_converged()
    for n in cluster:
        versions = n.request("GET", "/configs/s0/versions", new, params={"environment": "stage"}).json()["versions"]
        assert [v["version"] for v in versions] == [3], versions
        gone = n.request("GET", "/configs/s0/versions/1", new, params={"environment": "stage"})
        assert gone.status_code == 404 and "pruned" in gone.json()["detail"], gone.text
        assert n.request("GET", "/configs/s1", new, params={"environment": "stage"}).json()["value"] == "v2"
        left = ciphertexts(n, "s0") | ciphertexts(n, "s1")
        assert len(left) == 2 and not (left & retired), n.node_id
    records = n1.request("GET", "/audit", params={"action": "rekey"}).json()["records"]
    assert [(r["status"], r["outcome"]) for r in records] == [(422, "failure"), (422, "failure"), (401, "denied"), (200, "success")], records
    records = n2.request("GET", "/audit", params={"action": "rekey"}).json()["records"]
    assert [(r["environment"], r["status"]) for r in records] == [("stage", 422), ("stage", 200)], records
    # Nor are they left in the files' free space (secure_delete) or write-ahead log (emptied
    # after a purge), while the nodes run.
    time.sleep(0.5)
    for n in cluster:
        files = [p for p in n.workdir.iterdir() if p.name.startswith("configurations.db")]
        holding = [p.name for p in files if any(c.encode() in p.read_bytes() for c in retired)]
        assert not holding, (n.node_id, holding)
    assert new not in n1.log_text() and old not in n1.log_text()


def test_what_a_scoped_token_cannot_reach_sideways(single):
    """The ways round a policy that a review found, each closed: values through a listing,
    a diff or an event without `read`; an import into an environment without `write`; a
    scoped `admin` rule taken for an administrator; a deleted (or re-created) user's login
    token; a forged tenant name in an audit record; a revoked token's open event stream;
    a policy whose globs would cost minutes to match."""
    node = single
    root = login(node, "root", ADMIN_PASSWORD)
    for env in ("side-prod", "side-dev"):
        assert call(node, "POST", "/configs", root, json={"key": "db", "value": f"{env}-secret", "environment": env}).status_code == 201
    assert call(node, "PUT", "/configs/db", root, params={"environment": "side-prod"}, json={"value": "v2"}).status_code == 200
    policy = [{"capabilities": ["list", "history", "events"]}, {"environments": ["side-dev"], "capabilities": ["read", "write", "admin"]}]
    r = call(node, "POST", "/auth/users", root, user_key=None, json={"username": "sid", "password": "sid-pass-01", "policies": policy})
    assert r.status_code == 201, r.text
    sid = login(node, "sid", "sid-pass-01")
    listed = call(node, "GET", "/configs", sid).json()
    assert {(e["environment"], e["value"]) for e in listed if e["environment"].startswith("side-")} == {("side-dev", "side-dev-secret")}
    r = call(node, "GET", "/configs/db/diff", sid, params={"environment": "side-prod", "from": 1, "to": 2})
    assert r.status_code == 403 and "'read'" in r.json()["detail"], r.text
    assert call(node, "GET", "/configs/db/versions", sid, params={"environment": "side-prod"}).status_code == 200
    # A scoped admin rule is no administrator.
    assert call(node, "GET", "/auth/users", sid, user_key=None).status_code == 403
    assert call(node, "POST", "/auth/users", sid, user_key=None,
                json={"username": "escalated", "password": "long-enough", "role": "admin"}).status_code == 403
    # Import writes only where the policy lets it.
    backup = call(node, "POST", "/backup", root, params={"environment": "side-prod"}, headers={"X-Backup-Password": "pw-123456"}).json()
    assert call(node, "DELETE", "/configs/db", root, params={"environment": "side-prod"}).status_code == 200
    report = call(node, "POST", "/import", sid, headers={"X-Backup-Password": "pw-123456"},
                  json={"backup_data": backup["backup_data"], "overwrite": True}).json()
    assert report["imported"] == 0 and report["failed_keys"][0]["key"] == "db" and "write" in report["failed_keys"][0]["error"], report
    assert call(node, "GET", "/configs/db", root, params={"environment": "side-prod"}).status_code == 404
    # Events without read carry no value.
    stream, events = follow(node, {"Authorization": "Bearer " + sid, "X-User-Key": USER_KEY},
                            on_line=lambda line, out: out.append({"revoked": True}) if "revoked" in line else None)
    time.sleep(0.3)
    assert call(node, "POST", "/configs", root, json={"key": "db", "value": "again", "environment": "side-prod"}).status_code == 201
    assert call(node, "PUT", "/configs/db", root, params={"environment": "side-dev"}, json={"value": "dev2"}).status_code == 200
    assert wait_until(lambda: any(e.get("environment") == "side-dev" for e in events), 5)
    prod = [e for e in events if e.get("environment") == "side-prod"]
    dev = [e for e in events if e.get("environment") == "side-dev"]
    assert prod and all(e["data"] is None for e in prod), prod
    assert dev[-1]["data"] == {"value": "dev2"}
    # Deleting the user ends its token, and its open stream; a new user of the same name is not it.
    assert call(node, "DELETE", "/auth/users/sid", root, user_key=None).status_code == 200
    assert call(node, "GET", "/configs", sid).status_code == 401
    time.sleep(1.1)  # the stream checks its token at most once a second, before it sends anything
    assert call(node, "PUT", "/configs/db", root, params={"environment": "side-dev"}, json={"value": "dev3"}).status_code == 200
    assert wait_until(lambda: {"revoked": True} in events, 20), events[-3:]
    assert not any((e.get("data") or {}).get("value") == "dev3" for e in events if "revoked" not in e)
    stream.close()
    assert call(node, "POST", "/auth/users", root, user_key=None,
                json={"username": "sid", "password": "sid-pass-01", "role": "admin"}).status_code == 201
    assert call(node, "GET", "/configs", sid).status_code == 401, "the old token is not the new user's"
    # A password change ends the sessions of the old one.
    fresh = login(node, "sid", "sid-pass-01")
    assert call(node, "PUT", "/auth/users/sid", root, user_key=None, json={"password": "sid-pass-02"}).status_code == 200
    assert call(node, "GET", "/configs", fresh).status_code == 401
    # A control character in a name cannot make a record another tenant's.
    requests.get(node.url + "/configs/k", params={"environment": "\x02acme\x02prod"}, timeout=5)
    forged = call(node, "GET", "/audit", root, user_key=None, params={"tenant": "acme", "limit": 1000}).json()["records"]
    assert not any(r["actor"] == "anonymous" for r in forged)
    # Globs are bounded.
    r = call(node, "POST", "/auth/users", root, user_key=None,
             json={"username": "globby", "password": "long-enough", "policies": [{"keys": ["*a" * 9], "capabilities": ["read"]}]})
    assert r.status_code == 422 and "'*'" in r.json()["detail"]
