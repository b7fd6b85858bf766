"""The security review's findings (issue: "Nothing a client sends can break the cluster"),
each tried against real node processes as an attacker holding what a client holds: the
API key, a user key of its own, the public endpoints.

Without OSC_CLUSTER_SECRET (OpenSecureConf's model) the API key still opens the
node-to-node routes, so the forged-revision attacks are sent with it; what they carry
must be refused all the same (validation, bounded clocks). With OSC_CLUSTER_SECRET, the
API key opens nothing there.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import datetime, timezone

import pytest
import requests
from cryptography.fernet import Fernet

import harness
from harness import peer_request, sign_request, token, wait_until

INT64_MAX = 2**63 - 1


def now_hlc(offset_ms: int = 0) -> int:
    return (int(time.time() * 1000) + offset_ms) << 16


def fernet_token(payload: bytes = b'"forged"', at: int | None = None) -> str:
    """A well-formed Fernet token under a key nobody uses (what an attacker can make)."""
    f = Fernet(Fernet.generate_key())
    return (f.encrypt_at_time(payload, at) if at is not None else f.encrypt(payload)).decode()


def revision(key: str, origin: str, hlc: int | None = None, ciphertext: str | None = None, **fields) -> dict:
    now_us = int(time.time() * 1_000_000)
    r = {"environment": "default", "key": key, "category": None, "ciphertext": fernet_token() if ciphertext is None else ciphertext,
         "hlc": now_hlc() if hlc is None else hlc, "origin": origin, "deleted": False, "created_at": now_us,
         "updated_at": now_us, "actor": None}
    r.update(fields)
    return r


def push(node, origin: str, revisions: list[dict], api_key: str | None) -> requests.Response:
    """POST /cluster/replicate as a client holding the API key would."""
    fingerprint = requests.get(node.url + "/cluster/health", timeout=10).json()["salt_fingerprint"]
    headers = {"X-SecureConf-Salt-Fingerprint": fingerprint}
    if api_key:
        headers["X-API-Key"] = api_key
    return requests.post(node.url + "/cluster/replicate", json={"origin": origin, "revisions": revisions},
                         headers=headers, timeout=30)


def single_node(factory, label: str, extra: dict[str, str] | None = None):
    """One running node with clustering off (no API key), with `extra` settings."""
    wd = factory.workdir(label)
    port = harness.free_ports(1)[0]
    env = factory.node_env(wd, port, [f"127.0.0.1:{port}"], None, extra={"OSC_CLUSTER_ENABLED": "false", **(extra or {})})
    node = factory.node(wd, port, env, None).start()
    node.wait_up()
    return node


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def cluster(module_factory):
    """A three-node replica cluster in OpenSecureConf's model (API key only)."""
    c = module_factory.cluster(3, "replica")
    c.wait_healthy(timeout=20)
    return c


@pytest.fixture(scope="module")
def old_secret(cluster):
    """A key written at module start: by the replay test its token is older than any stamp may lag."""
    user_key = token("uk-old-")
    r = cluster[0].create(user_key, "rotated-secret", "old-password")
    assert r.status_code == 201, r.text
    old = cluster[0].request("GET", "/cluster/revision", params={"environment": "default", "key": "rotated-secret"}).json()
    assert cluster[0].update(user_key, "rotated-secret", "new-password").status_code == 200
    assert cluster[0].delete(user_key, "rotated-secret").status_code == 200
    return {"user_key": user_key, "revision": old, "at": time.monotonic()}


def unchanged(cluster, before: list[str]) -> None:
    cluster.wait_converged(timeout=15)
    assert cluster.digests() == before, "a refused revision left every node's data and digest as they were"


# -- finding 1 (critical): an Int64.max stamp

def test_int64_max_stamp_is_refused_and_the_cluster_keeps_writing(cluster, old_secret):
    cluster.wait_converged(timeout=15)
    before = cluster.digests()
    victim, origin = cluster[0], cluster[1].node_id
    r = push(victim, origin, [revision(token("crash-"), origin, hlc=INT64_MAX)], cluster.api_key)
    assert r.status_code == 503, r.text
    body = r.json()
    assert "ahead" in body["detail"] and body["rejected"][0]["ahead"] is True
    unchanged(cluster, before)
    # Every node still writes, and again after a restart (the clock resumes from stored stamps).
    user_key = token("uk-")
    for n in cluster:
        assert n.create(user_key, token("after-"), 1).status_code == 201
    victim.stop()
    victim.start().wait_up()
    cluster.wait_healthy(timeout=20)
    assert victim.create(user_key, token("after-restart-"), 2).status_code == 201
    cluster.wait_converged(timeout=15)


# -- finding 2 (high): forged revisions

@pytest.mark.parametrize("case", ["garbage-ciphertext", "negative-hlc", "zero-hlc", "long-category", "control-category",
                                  "receivers-own-origin", "foreign-origin", "origin-not-sender", "huge-key",
                                  "tombstone-with-ciphertext", "updated-before-created", "token-from-the-future",
                                  "bad-actor", "unknown-tenant"])
def test_forged_revisions_are_refused_and_change_nothing(cluster, case):
    cluster.wait_converged(timeout=15)
    before = cluster.digests()
    victim, sender = cluster[0], cluster[1].node_id
    key = token("forged-")
    origin = sender
    r = revision(key, sender)
    if case == "garbage-ciphertext":
        r["ciphertext"] = "not-a-fernet-token"
    elif case == "negative-hlc":
        r["hlc"] = -5
    elif case == "zero-hlc":
        r["hlc"] = 0
    elif case == "long-category":
        r["category"] = "c" * 5000
    elif case == "control-category":
        r["category"] = "ops\x07\x1b[2J"
    elif case == "receivers-own-origin":
        origin = victim.node_id
        r["origin"] = victim.node_id
    elif case == "foreign-origin":
        origin = "10.9.9.9:9000"
        r["origin"] = origin
    elif case == "origin-not-sender":
        r["origin"] = cluster[2].node_id
    elif case == "huge-key":
        r["key"] = "e" + "\u0301" * 600  # one grapheme, 601 scalars
    elif case == "tombstone-with-ciphertext":
        r["deleted"] = True
    elif case == "updated-before-created":
        r["updated_at"] = r["created_at"] - 10
    elif case == "token-from-the-future":
        r["ciphertext"] = fernet_token(at=int(time.time()) + 3600)
    elif case == "bad-actor":
        r["actor"] = "uk:<script>"
    elif case == "unknown-tenant":
        r["tenant"] = "acme"
    def refused() -> float:
        return sum(v for _, v in victim.metric("osc_cluster_revisions_refused_total"))
    counted = refused()
    reply = push(victim, origin, [r], cluster.api_key)
    assert reply.status_code == 422, (case, reply.status_code, reply.text)
    assert "detail" in reply.json()
    unchanged(cluster, before)
    if case not in ("receivers-own-origin", "foreign-origin", "origin-not-sender"):
        assert refused() == counted + 1, "the refused revision is counted"


def test_a_valid_revision_in_a_batch_with_a_forged_one_is_not_applied(cluster):
    cluster.wait_converged(timeout=15)
    before = cluster.digests()
    sender = cluster[1].node_id
    good, bad = revision(token("good-"), sender), revision(token("bad-"), sender, hlc=-1)
    reply = push(cluster[0], sender, [good, bad], cluster.api_key)
    assert reply.status_code == 422
    assert [x["index"] for x in reply.json()["rejected"]] == [1]
    unchanged(cluster, before)


def test_renumbering_with_a_negative_stamp_is_refused(cluster):
    user_key = token("uk-")
    key = token("numbered-")
    assert cluster[0].create(user_key, key, "v1").status_code == 201
    assert cluster[0].update(user_key, key, "v2").status_code == 200
    sender = cluster[1].node_id
    reply = push(cluster[0], sender, [revision(key, sender, hlc=-(2**40))], cluster.api_key)
    assert reply.status_code == 422
    versions = cluster[0].request("GET", f"/configs/{key}/versions", user_key).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert cluster[0].read(user_key, key).json()["value"] == "v2"


# -- finding 3: same identity, other content

def test_conflicting_contents_of_one_identity_converge_everywhere(cluster):
    cluster.wait_converged(timeout=15)
    origin = cluster[2].node_id
    key = token("twin-")
    a = revision(key, origin)
    b = dict(a, ciphertext=fernet_token(b'"other"'))
    assert push(cluster[0], origin, [a], cluster.api_key).status_code == 200
    assert push(cluster[1], origin, [b], cluster.api_key).status_code == 200
    cluster.wait_converged(timeout=20)
    held = {n.request("GET", "/cluster/revision", params={"environment": "default", "key": key}).json()["ciphertext"] for n in cluster}
    assert len(held) == 1 and held <= {a["ciphertext"], b["ciphertext"]}, "every node keeps the same one of the two"
    assert any(n.metric("osc_cluster_identity_conflicts_total") for n in cluster)


# -- finding 4: no offline oracle

def test_actor_ids_are_shown_to_api_key_holders_as_audit_readers(cluster):
    """Where every client holds the API key, every client is an audit reader; the ids are
    keyed by a secret that is not the salt, so they test no guess."""
    user_key = token("uk-")
    key = token("owned-")
    assert cluster[0].create(user_key, key, "x").status_code == 201
    listed = cluster[0].request("GET", f"/configs/{key}/versions", None).json()["versions"]
    assert listed[0]["actor"].startswith("uk:")


def test_compatibility_mode_says_plainly_that_peers_use_the_clients_key(cluster):
    status = cluster[0].status()
    assert status["peer_authentication"] == "api-key"
    assert "OSC_CLUSTER_SECRET" in status["peer_authentication_warning"]
    assert cluster[0].metric("osc_cluster_peer_auth_insecure") == [("", 1.0)]
    assert "OSC_CLUSTER_SECRET" in cluster[0].output(tail=10**6)


def test_a_single_node_has_no_node_to_node_routes(factory):
    node = single_node(factory, "single")
    for method, path in [("GET", "/cluster/salt"), ("POST", "/cluster/salt"), ("GET", "/cluster/digest"), ("POST", "/cluster/replicate"),
                         ("POST", "/cluster/fetch"), ("POST", "/cluster/buckets"), ("GET", "/cluster/entries"), ("GET", "/cluster/revision"),
                         ("POST", "/cluster/collected")]:
        r = requests.request(method, node.url + path, headers={"Origin": "http://evil.example"}, timeout=10, data=b"{}")
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert not any(h.lower().startswith("access-control-") for h in r.headers), path
    # The default configuration: no salt for anyone, and actor ids only for the owner's key.
    user_key = token("uk-")
    assert node.create(user_key, "owned", "x").status_code == 201
    anonymous = node.request("GET", "/configs/owned/versions", None, api_key=None).json()["versions"]
    assert all(v["actor"] is None for v in anonymous)
    owner = node.request("GET", "/configs/owned/versions", user_key, api_key=None).json()["versions"]
    assert owner[0]["actor"].startswith("uk:")
    assert node.request("GET", "/configs/owned/versions", token("uk-guess-"), api_key=None).status_code == 401


# -- finding 2/4 with the peer credential

SECRET = "s3cr3t-" + secrets.token_hex(24)


@pytest.fixture(scope="module")
def signed(module_factory):
    c = module_factory.cluster(3, "replica", extra_env={"OSC_CLUSTER_SECRET": SECRET})
    c.wait_healthy(timeout=20)
    return c


def test_the_api_key_opens_no_node_to_node_route(signed):
    node = signed[0]
    for method, path in [("GET", "/cluster/salt"), ("POST", "/cluster/salt"), ("GET", "/cluster/digest"), ("POST", "/cluster/replicate"),
                         ("POST", "/cluster/fetch"), ("POST", "/cluster/buckets"), ("GET", "/cluster/entries"),
                         ("GET", "/cluster/revision?key=k"), ("POST", "/cluster/collected")]:
        r = node.request(method, path, data=b"{}")
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert "OSC_CLUSTER_SECRET" in r.json()["detail"]
    assert node.status()["peer_authentication"] == "secret"
    assert node.metric("osc_cluster_peer_auth_insecure") == [("", 0.0)]


def test_signed_nodes_replicate_and_converge(signed):
    user_key = token("uk-")
    key = token("signed-")
    assert signed[0].create(user_key, key, {"v": 1}).status_code == 201
    wait_until(lambda: signed[2].read(user_key, key).status_code == 200, 15, what="replication with signed messages")
    signed.wait_converged(timeout=15)


def test_forged_stolen_and_replayed_signatures_are_refused(signed):
    node, sender = signed[0], signed[1].node_id
    body = json.dumps({"origin": sender, "revisions": [revision(token("k-"), sender)]}).encode()
    fp = {"X-SecureConf-Salt-Fingerprint": requests.get(node.url + "/cluster/health", timeout=10).json()["salt_fingerprint"]}

    wrong = peer_request(node, "not-the-secret-" + "x" * 32, sender, "POST", "/cluster/replicate", body, headers=fp)
    assert wrong.status_code == 401 and "does not verify" in wrong.json()["detail"]

    skewed = peer_request(node, SECRET, sender, "POST", "/cluster/replicate", body, headers=fp, time_ms=int(time.time() * 1000) - 600_000)
    assert skewed.status_code == 401 and "clock skew" in skewed.json()["detail"], skewed.text

    itself = peer_request(node, SECRET, node.node_id, "POST", "/cluster/replicate", body, headers=fp)
    assert itself.status_code == 401 and "not a configured peer" in itself.json()["detail"]

    headers = sign_request(SECRET, "POST", "/cluster/replicate", node.node_id, sender, body)
    headers.update(fp, **{"Content-Type": "application/json"})
    first = requests.post(node.url + "/cluster/replicate", data=body, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    assert first.headers["X-SecureConf-Signature"] == harness.response_signature(
        SECRET, headers["X-SecureConf-Nonce"], 200, node.node_id, first.content), "the answer is signed back"
    again = requests.post(node.url + "/cluster/replicate", data=body, headers=headers, timeout=10)
    assert again.status_code == 401 and "replay" in again.json()["detail"]

    other = signed[2]
    redirected = requests.post(other.url + "/cluster/replicate", data=body, headers=headers, timeout=10)
    assert redirected.status_code == 401, "a message signed for one node is refused by another"

    fresh = sign_request(SECRET, "POST", "/cluster/replicate", node.node_id, sender, body)
    fresh.update(fp, **{"Content-Type": "application/json"})
    tampered = requests.post(node.url + "/cluster/replicate", data=body.replace(b'"default"', b'"defaulx"'), headers=fresh, timeout=10)
    assert tampered.status_code == 401 and "signed hash" in tampered.json()["detail"], tampered.text
    no_hash = sign_request(SECRET, "POST", "/cluster/replicate", node.node_id, sender, body)
    del no_hash["X-SecureConf-Content-SHA256"]
    no_hash.update(fp, **{"Content-Type": "application/json"})
    missing = requests.post(node.url + "/cluster/replicate", data=body, headers=no_hash, timeout=10)
    assert missing.status_code == 401 and "Content-SHA256" in missing.json()["detail"], missing.text


# -- finding 5: a node whose clock runs a day fast

def test_a_day_fast_node_cannot_drag_clocks_or_win(factory, tmp_path):
    shim = harness.build_fake_clock(tmp_path)
    api_key = token("cluster-api-")
    ports = harness.free_ports(3)
    ids = [f"127.0.0.1:{p}" for p in ports]
    nodes = []
    for i, port in enumerate(ports):
        wd = factory.workdir(f"clock{i}")
        extra = {"LD_PRELOAD": str(shim), "SECURECONF_FAKE_CLOCK_OFFSET": "86400"} if i == 2 else {}
        nodes.append(factory.node(wd, port, factory.node_env(wd, port, ids, api_key, extra=extra), api_key))
    c = harness.Cluster(nodes, api_key, "replica").start()
    honest, fast = c[0], c[2]
    wait_until(lambda: fast.status().get("clock_ahead") is True, 20, what="the fast node to see it is ahead")
    status = fast.status()
    assert status["clock_offset_ms"] > 86_000_000
    user_key = token("uk-")
    refused = fast.create(user_key, token("fast-"), 1)
    assert refused.status_code == 503 and "ahead" in refused.json()["detail"], refused.text
    assert fast.metric("osc_cluster_clock_ahead") == [("", 1.0)]

    # A revision stamped a day ahead (as the fast node would ship) is refused by honest nodes.
    before = [honest.digest()["digest"], c[1].digest()["digest"]]
    r = push(honest, fast.node_id, [revision(token("ahead-"), fast.node_id, hlc=now_hlc(86_400_000))], api_key)
    assert r.status_code == 503
    assert [honest.digest()["digest"], c[1].digest()["digest"]] == before

    # Honest nodes' clocks stay on real time: a key made now is there at now, and a restore to now changes nothing.
    key = token("honest-")
    assert honest.create(user_key, key, "v").status_code == 201
    made = honest.request("GET", "/cluster/revision", params={"environment": "default", "key": key}).json()
    assert abs((made["hlc"] >> 16) - time.time() * 1000) < 10_000, "the stamp is real time, not a day ahead"
    wait_until(lambda: c[1].read(user_key, key).status_code == 200, 10, what="replication to the other honest node")
    time.sleep(0.05)
    at = iso_now()
    assert c[1].read(user_key, key, at=at).status_code == 200
    restore = c[1].request("POST", "/restore", user_key, params={"at": at})
    assert restore.status_code == 200, restore.text
    assert restore.json()["deleted"] == [] and restore.json()["restored"] == []


# -- finding 6: a backlog larger than one message

def test_a_backlog_larger_than_a_message_still_replicates(factory):
    c = factory.cluster(2, "replica")
    c.wait_healthy(timeout=20)
    a, b = c[0], c[1]
    user_key = token("uk-")
    a.warm(user_key)
    b.stop()
    value = "x" * 900_000
    for i in range(80):  # ~96 MB of ciphertext: more than the 64 MiB a message may carry
        assert a.create(user_key, f"big-{i}", value).status_code == 201
    b.start().wait_up()
    c.wait_converged(timeout=120)

    def drained():
        peer = a.status()["nodes"][1]
        return peer["outbox_depth"] == 0 and peer["replication_error"] is None
    wait_until(drained, 60, interval=0.5, what="the outbox to drain with no replication error")


# -- finding 7: one limiter for every derivation

def test_every_derivation_meets_the_limiter(factory):
    node = single_node(factory, "limiter", {"OSC_AUTH_FAILURE_LIMIT": "4", "OSC_AUTH_FAILURE_WINDOW": "60"})
    owner = token("uk-owner-")
    assert node.create(owner, "k", "v").status_code == 201

    def derivations() -> float:
        return sum(v for _, v in node.metric("osc_key_derivations_total"))

    start = derivations()
    for i in range(20):  # reads of absent keys: nothing to decrypt, so no derivation at all
        assert node.read(token("uk-"), f"absent-{i}").status_code == 404
    assert derivations() == start, "the audit trail names the actor without deriving a key"

    # The owner's create derived a key that checked against nothing: one failure of the budget of 4.
    guesses = [node.request("GET", "/configs/k/versions/1", token("uk-guess-")).status_code for _ in range(8)]
    assert guesses == [401] * 3 + [429] * 5, guesses
    assert derivations() - start == 3, "one derivation per counted guess, none once refused"
    # The same client budget covers every other path that derives a key.
    for method, path in [("GET", "/configs/k/diff?from=1&to=1"), ("GET", "/configs/k/versions"), ("POST", "/configs/k/rollback?version=1"),
                         ("POST", "/restore?at=2030-01-01T00:00:00Z"), ("GET", "/configs/k"), ("GET", "/configs")]:
        r = node.request(method, path, token("uk-guess-"))
        assert r.status_code == 429, (path, r.status_code, r.text)
    assert derivations() - start == 3
    assert node.read(owner, "k").status_code == 200, "a cached key still gets through"


def test_creating_with_a_guess_to_list_with_it_costs_a_failure(factory):
    """A guess cached by a create (which checks the key against nothing) and then tried by a
    list is counted: the create is a derivation that proved nothing."""
    node = single_node(factory, "limiter-create", {"OSC_AUTH_FAILURE_LIMIT": "3", "OSC_AUTH_FAILURE_WINDOW": "60"})
    victim = token("uk-victim-")
    assert node.request("POST", "/configs", victim, json={"key": "db", "value": "s3cret", "environment": "victim"}).status_code == 201
    assert node.request("GET", "/configs/db", victim, params={"environment": "victim"}).status_code == 200  # proven: refunded
    creates, lists = [], []
    for i in range(6):
        guess = token("uk-guess-")
        creates.append(node.request("POST", "/configs", guess, json={"key": f"throwaway-{i}", "value": 1, "environment": "mine"}).status_code)
        lists.append(node.request("GET", "/configs", guess, params={"environment": "victim"}).status_code)
    # Each guess costs two: its create (a derivation that proves nothing) and its failed list.
    assert creates == [201, 201, 429, 429, 429, 429], creates
    assert lists == [401, 401, 429, 429, 429, 429], f"the cached guesses open nothing of the victim's: {lists}"


# -- finding 9: restore behind the gates, never naming what the caller cannot open

def test_restore_names_no_key_the_caller_cannot_open(cluster):
    mine, theirs = token("uk-mine-"), token("uk-theirs-")
    env = token("env-")
    assert cluster[0].request("POST", "/configs", theirs, json={"key": "their-db", "value": 1, "environment": env}).status_code == 201
    wrong = cluster[0].request("POST", "/restore", mine, params={"environment": env, "at": iso_now()})
    assert wrong.status_code == 401 and "their-db" not in wrong.text
    assert cluster[0].request("POST", "/configs", mine, json={"key": "my-db", "value": 2, "environment": env}).status_code == 201
    time.sleep(0.01)
    at = iso_now()
    time.sleep(0.01)
    assert cluster[0].request("PUT", "/configs/their-db", theirs, params={"environment": env}, json={"value": 3}).status_code == 200
    ok = cluster[0].request("POST", "/restore", mine, params={"environment": env, "at": at})
    assert ok.status_code == 200 and ok.json()["undecryptable"] == 1 and "their-db" not in ok.text


# -- finding 2: resurrecting a deleted secret by replaying its old revision (runs last: needs an old token)

def test_replaying_an_old_revision_cannot_resurrect_a_deleted_secret(cluster, old_secret):
    wait = 40 - (time.monotonic() - old_secret["at"])
    if wait > 0:
        time.sleep(wait)
    cluster.wait_converged(timeout=15)
    before = cluster.digests()
    old = dict(old_secret["revision"])
    sender = old["origin"]
    target = next(n for n in cluster if n.node_id != sender)
    old["hlc"] = now_hlc()
    old["updated_at"] = int(time.time() * 1_000_000)
    reply = push(target, sender, [old], cluster.api_key)
    assert reply.status_code == 422 and "replayed" in reply.text, reply.text
    unchanged(cluster, before)
    assert target.read(old_secret["user_key"], "rotated-secret").status_code == 404


# -- finding 8: slow request bodies and connection exhaustion

def slow_body_attack(url_port: int, count: int, source: str = "127.0.0.1") -> list:
    """`count` connections that send a POST's headers and then one body byte at a time."""
    import socket
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", url_port))
            s.sendall(b"POST /configs HTTP/1.1\r\nHost: x\r\nX-User-Key: attacker-key-123\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{")
            s.settimeout(None)  # blocking: still_open's MSG_DONTWAIT reads then answer at once
        except OSError:
            pass
        socks.append(s)
    return socks


def still_open(socks) -> int:
    """How many attack connections the server has not closed (no EOF after what it sent)."""
    n = 0
    for s in socks:
        try:
            while True:
                data = s.recv(65536, 0x40)  # MSG_DONTWAIT
                if data == b"":
                    break  # EOF: closed by the server
        except BlockingIOError:
            n += 1  # nothing more to read and no EOF: still open
        except OSError:
            pass  # reset: closed
    return n


def timed_health(port: int, source: str) -> float:
    """Seconds for GET /health from `source` on a fresh connection (inf if refused or timed out)."""
    import socket
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(4096)
            if b" 200 " not in data.split(b"\r\n", 1)[0]:
                return float("inf")
    except OSError:
        return float("inf")
    return time.monotonic() - started


def test_slow_bodies_cannot_hold_the_node(factory, report):
    node = single_node(factory, "slowloris", {"OSC_MAX_CONNECTIONS_PER_CLIENT": "64", "OSC_REQUEST_TIMEOUT": "3"})
    port = node.port
    socks = slow_body_attack(port, 300)
    try:
        time.sleep(0.5)
        held = still_open(socks)
        assert 0 < held <= 64, f"{held} connections from one address held open (limit 64)"
        latency = timed_health(port, "127.0.0.2")
        assert latency < 1.0, f"another client waited {latency:.2f} s"
        time.sleep(4)
        after = still_open(socks)
        assert after == 0, f"{after} slow requests still open after OSC_REQUEST_TIMEOUT"
        refused = sum(v for _, v in node.metric("osc_http_connections_refused_total"))
        timeouts = sum(v for _, v in node.metric("osc_http_request_timeouts_total"))
        assert refused >= 300 - 64 and timeouts >= 1
        report("slow-body attack, 300 connections from one address",
               f"{held} held (cap 64), another client answered in {latency * 1000:.0f} ms, {after} left after 4 s")
    finally:
        for s in socks:
            s.close()


# -- finding 10: the low ones

def test_limits_count_scalars_and_member_names_are_compared_by_bytes(cluster):
    user_key = token("uk-")
    huge = "e" + "\u0301" * 600  # one grapheme cluster, 601 Unicode scalars
    r = cluster[0].request("POST", "/configs", user_key, json={"key": huge, "value": 1})
    assert r.status_code == 422 and "at most 255" in r.json()["detail"]
    key = token("names-")
    body = '{"key": "%s", "value": {"\u00e9": 1, "e\u0301": 2}}' % key
    r = cluster[0].request("POST", "/configs", user_key, data=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    value = cluster[0].read(user_key, key).json()["value"]
    assert value == {"\u00e9": 1, "e\u0301": 2}, "canonically equivalent names stay two members, as in Python"


def test_bucket_requests_are_bounded_and_labels_name_only_peers(cluster):
    node = cluster[0]
    r = node.request("POST", "/cluster/buckets", json={"buckets": list(range(256)) * 40})
    assert r.status_code == 400
    one = node.request("POST", "/cluster/buckets", json={"buckets": [7]}).json()["ids"]
    dup = node.request("POST", "/cluster/buckets", json={"buckets": [7, 7, 7]}).json()["ids"]
    assert len(dup) == len(one), "duplicated buckets are answered once"
    forged = "10.66.66.66:1"
    push(node, forged, [revision(token("k-"), forged)], cluster.api_key)
    assert forged not in requests.get(node.url + "/metrics", timeout=10).text


def test_collected_marker_requests_are_bounded(cluster):
    node = cluster[0]
    for body in ({"limit": 0}, {"limit": 5000}, {"limit": "many"}, {"after": {"environment": "e", "key": "a/b"}},
                 {"after": {"environment": "x" * 200, "key": "k"}}, {"after": {"key": "k"}}):
        r = node.request("POST", "/cluster/collected", json=body)
        assert r.status_code in (400, 422) and "detail" in r.json(), (body, r.status_code, r.text)
    r = node.request("POST", "/cluster/collected", json={})
    assert r.status_code == 200 and r.json() == {"markers": []}, r.text


def test_a_write_that_misses_its_quorum_is_audited_as_the_client_saw_it(factory):
    c = factory.cluster(2, "replica", extra_env={"OSC_CLUSTER_WRITE_QUORUM": "all", "OSC_CLUSTER_PEER_TIMEOUT": "1"})
    c.wait_healthy(timeout=20)
    a, b = c[0], c[1]
    user_key = token("uk-")
    a.warm(user_key)
    b.stop()
    key = token("quorum-")
    r = a.create(user_key, key, 1)
    assert r.status_code == 503, r.text
    records = a.request("GET", "/audit", params={"key": key}).json()
    records = records.get("records", records) if isinstance(records, dict) else records
    creates = [x for x in records if x["action"] == "create"]
    assert [x["status"] for x in creates] == [503], creates
    ops = dict(a.metric("osc_config_operations_total"))
    assert ops.get('{operation="create",status="success"}', 0) == 0, ops


def test_audit_verify_catches_a_column_rewritten_as_a_blob(factory):
    import subprocess
    wd = factory.workdir("audit-blob")
    port = harness.free_ports(1)[0]
    api_key = token("api-")
    env = factory.node_env(wd, port, [f"127.0.0.1:{port}"], api_key, extra={"OSC_CLUSTER_ENABLED": "false"})
    node = factory.node(wd, port, env, api_key).start()
    node.wait_up()
    user_key = token("uk-")
    assert node.create(user_key, "k", 1).status_code == 201
    assert node.request("GET", "/audit/verify").json()["valid"] is True
    node.stop()
    subprocess.run(["sqlite3", str(wd / "configurations.db"), "UPDATE audit_log SET action = CAST(action AS BLOB) WHERE id = 1"], check=True)
    node.start().wait_up()
    verdict = node.request("GET", "/audit/verify").json()
    assert verdict["valid"] is False and verdict["first_broken"] == 1, verdict


def test_a_running_cluster_moves_to_the_secret_without_downtime(factory):
    """The README's upgrade: nodes restarted one by one with the secret and
    OSC_CLUSTER_ACCEPT_API_KEY_PEERS keep replicating with the ones not yet restarted; then
    restarted without the flag, the API key opens no node-to-node route."""
    c = factory.cluster(3, "replica")
    c.wait_healthy(timeout=20)
    user_key = token("uk-")
    c.warm(user_key)
    secret = "upgrade-" + secrets.token_hex(24)

    def write_everywhere_and_see_it_everywhere(label: str) -> None:
        for i, n in enumerate(c):
            key = f"{label}-{i}-{token()}"
            assert n.create(user_key, key, i).status_code == 201, (label, n)
            for other in c:
                wait_until(lambda: other.read(user_key, key).status_code == 200, 15, what=f"{key} on {other} ({label})")

    def restart(n, env: dict[str, str], drop: tuple[str, ...] = ()) -> None:
        n.stop()
        n.env.update(env)
        for k in drop:
            n.env.pop(k, None)
        n.start().wait_up()

    for n in c:  # step 1, one node at a time, writes checked in between
        restart(n, {"OSC_CLUSTER_SECRET": secret, "OSC_CLUSTER_ACCEPT_API_KEY_PEERS": "true"})
        c.wait_healthy(timeout=20)
        write_everywhere_and_see_it_everywhere(f"step1-{n.port}")
    assert {n.status()["peer_authentication"] for n in c} == {"secret+api-key"}
    for n in c:  # step 2
        restart(n, {}, drop=("OSC_CLUSTER_ACCEPT_API_KEY_PEERS",))
        c.wait_healthy(timeout=20)
        write_everywhere_and_see_it_everywhere(f"step2-{n.port}")
    assert {n.status()["peer_authentication"] for n in c} == {"secret"}
    assert c[0].request("GET", "/cluster/digest").status_code == 401
    c.wait_converged(timeout=20)


def test_rollback_and_restore_wait_for_the_quorum(factory):
    """Rollback and restore wake replication and wait for OSC_CLUSTER_WRITE_QUORUM like any
    write (they used to be acknowledged before any peer held them, and 200 with a peer down)."""
    c = factory.cluster(3, "replica", extra_env={"OSC_CLUSTER_WRITE_QUORUM": "all", "OSC_CLUSTER_PEER_TIMEOUT": "1"})
    c.wait_healthy(timeout=20)
    a = c[0]
    user_key = token("uk-")
    c.warm(user_key)
    key = token("rb-")
    assert a.create(user_key, key, "v1").status_code == 201
    assert a.update(user_key, key, "v2").status_code == 200
    r = a.request("POST", f"/configs/{key}/rollback", user_key, params={"version": 1})
    assert r.status_code == 200, r.text
    for n in c[1:]:  # acknowledged at quorum all: every peer holds it already
        assert n.read(user_key, key).json()["value"] == "v1", n
    at = iso_now()
    time.sleep(0.01)
    assert a.update(user_key, key, "v3").status_code == 200
    r = a.request("POST", "/restore", user_key, params={"at": at})
    assert r.status_code == 200 and r.json()["restored"] == [key], r.text
    for n in c[1:]:
        assert n.read(user_key, key).json()["value"] == "v1", n
    c[2].stop()
    r = a.request("POST", f"/configs/{key}/rollback", user_key, params={"version": 2})
    assert r.status_code == 503 and "quorum" in r.json()["detail"].lower(), r.text
    r = a.request("POST", "/restore", user_key, params={"at": iso_now()})
    assert r.status_code in (200, 503), r.text  # nothing to change is no write
    assert a.update(user_key, key, "v4").status_code == 503
    r = a.request("POST", "/restore", user_key, params={"at": at})
    assert r.status_code == 503 and "quorum" in r.json()["detail"].lower(), r.text


def test_concurrent_guesses_cannot_outrun_the_limiter(factory):
    """Each derivation is counted before it runs, so 30 guesses at once cost at most the limit."""
    import concurrent.futures
    node = single_node(factory, "limiter-concurrent", {"OSC_AUTH_FAILURE_LIMIT": "5", "OSC_AUTH_FAILURE_WINDOW": "60"})
    owner = token("uk-owner-")
    assert node.create(owner, "k", "v").status_code == 201
    assert node.read(owner, "k").status_code == 200  # proves the owner's key: its create's count is refunded
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(lambda _: requests.get(node.url + "/configs/k/versions/1", headers={"X-User-Key": token("uk-g-")},
                                                         timeout=60).status_code, range(30)))
    assert statuses.count(401) == 5 and statuses.count(429) == 25, sorted(statuses)
    derivations = sum(v for _, v in node.metric("osc_key_derivations_total"))
    assert derivations == 6, f"{derivations} derivations (the owner's and 5 guesses) for 30 concurrent guesses with a limit of 5"


def test_a_refused_write_stays_on_its_node_and_never_counts_for_the_quorum(factory):
    """A peer that refuses a revision for good (here: its OSC_MAX_BODY_BYTES is smaller, so the
    ciphertext is over its cap) is skipped for that revision: the write stays on the node that
    took it, and it is not reported as held by that peer."""
    c = factory.cluster(2, "replica", extra_env={"OSC_CLUSTER_WRITE_QUORUM": "all", "OSC_CLUSTER_PEER_TIMEOUT": "2"})
    c.wait_healthy(timeout=20)
    a, b = c[0], c[1]
    b.stop()
    b.env["OSC_MAX_BODY_BYTES"] = "1024"
    b.start().wait_up()
    c.wait_healthy(timeout=20)
    user_key = token("uk-")
    c.warm(user_key)
    small = token("small-")
    assert a.create(user_key, small, 1).status_code == 201, "a revision the peer takes reaches the quorum"
    big = token("big-")
    r = a.create(user_key, big, "x" * 20_000)
    assert r.status_code == 503 and "quorum" in r.json()["detail"].lower(), r.text
    assert a.read(user_key, big).json()["value"] == "x" * 20_000, "the write is kept on the node that took it"
    assert b.read(user_key, big).status_code == 404
    wait_until(lambda: a.status()["nodes"][1]["refused_by_peer"] >= 1, 10, what="the refusal in /cluster/status")
    after = token("after-")
    assert a.create(user_key, after, 2).status_code == 201, "the outbox moved on past the refused revision"
    assert b.read(user_key, after).status_code == 200
