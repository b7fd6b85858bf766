"""Nodes on one PostgreSQL database: real processes, real HTTP, a real PostgreSQL.

What a user sees: every node serves every write at once (no replication delay, no
last-writer-wins), one create wins a race, the audit trail is one chain, change events
reach subscribers of every node, a node or PostgreSQL itself can die under load without an
acknowledged write going missing, and the database password shows up nowhere."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from common.nodeproc import token, wait_until
from common.sse import Stream

USER_KEY = "pg-suite-user-key"
DB_PASSWORD = "osc-db-password"


def call(node, method, path, user_key=USER_KEY, timeout=30, **kw):
    headers = {"X-API-Key": node.env["OSC_API_KEY"]}
    if user_key:
        headers["X-User-Key"] = user_key
    return requests.request(method, node.url + path, headers=headers, timeout=timeout, **kw)


def test_three_nodes_on_one_database_see_every_write_at_once(nodes, report):
    a, b, c = nodes.three()
    for n in (a, b, c):
        r = requests.get(n.url + "/ready", timeout=10)
        assert r.status_code == 200 and r.json()["storage"] == "postgresql", r.text
    key = token("shared-")
    started = time.monotonic()
    assert call(a, "POST", "/configs", json={"key": key, "value": {"v": 1}, "category": "db"}).status_code == 201
    # No replication: the next request, to another node, sees it.
    r = call(b, "GET", f"/configs/{key}")
    assert r.status_code == 200 and r.json()["value"] == {"v": 1}, r.text
    assert call(c, "PUT", f"/configs/{key}", json={"value": {"v": 2}}).status_code == 200
    assert call(a, "GET", f"/configs/{key}").json()["value"] == {"v": 2}
    report("create on node 1 to read on node 2, then update on node 3 to read on node 1", f"{time.monotonic() - started:.3f} s")
    versions = call(b, "GET", f"/configs/{key}/versions").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert [v["origin_node"] for v in versions["versions"]] == [a.node_id, c.node_id]
    assert call(c, "GET", f"/configs/{key}/versions/1").json()["value"] == {"v": 1}
    # A wrong user key opens nothing, on any node.
    assert call(b, "GET", f"/configs/{key}", user_key="another-user-key").status_code == 401
    assert call(b, "DELETE", f"/configs/{key}").status_code == 200
    assert call(a, "GET", f"/configs/{key}").status_code == 404
    assert call(c, "POST", f"/configs/{key}/rollback", params={"version": 1}).status_code == 200
    assert call(a, "GET", f"/configs/{key}").json()["value"] == {"v": 1}
    listed = call(c, "GET", "/configs", params={"category": "db"}).json()
    assert [e["key"] for e in listed] == [key]
    # The database holds ciphertext only: the value is nowhere in it in the clear.
    dump = nodes.pg.psql("SELECT string_agg(ciphertext, ' ') FROM revisions", db="osc")
    assert '"v"' not in dump and dump.startswith("gAAAAA"), dump[:80]


def test_racing_creates_of_one_key_on_three_nodes_make_one_entry(nodes):
    """PostgreSQL serialises: of 30 creates of one key spread over three nodes, exactly one
    gets 201 and every other one 400 "already exists"; never two entries, never a 500."""
    trio = nodes.three()
    for n in trio:
        call(n, "GET", "/configs")  # derive the user key on each node first
    rounds, per_round = 10, 30
    for _ in range(rounds):
        key = token("race-")
        barrier = threading.Barrier(per_round)

        def create(i):
            barrier.wait()
            return call(trio[i % 3], "POST", "/configs", json={"key": key, "value": i})

        with ThreadPoolExecutor(per_round) as pool:
            results = list(pool.map(create, range(per_round)))
        codes = sorted(r.status_code for r in results)
        assert codes == [201] + [400] * (per_round - 1), codes
        assert all("already exists" in r.json()["detail"] for r in results if r.status_code == 400)
        winner = next(r.json()["value"] for r in results if r.status_code == 201)
        assert all(call(n, "GET", f"/configs/{key}").json()["value"] == winner for n in trio)
        assert nodes.pg.psql(f"SELECT count(*) FROM entries WHERE key = '{key}'", db="osc") == "1"


def test_the_audit_trail_is_one_chain_that_every_node_verifies(nodes):
    trio = nodes.three()
    with ThreadPoolExecutor(12) as pool:
        keys = [token("audit-") for _ in range(60)]
        list(pool.map(lambda i: call(trio[i % 3], "POST", "/configs", json={"key": keys[i], "value": i}), range(60)))
        list(pool.map(lambda i: call(trio[(i + 1) % 3], "GET", f"/configs/{keys[i]}"), range(60)))
    verdicts = [call(n, "GET", "/audit/verify", user_key=None).json() for n in trio]
    assert all(v["valid"] for v in verdicts), verdicts
    # Each verification is itself audited: each node sees the chain one record longer, and
    # its head is the record the chain then ended with.
    counts = [v["records"] for v in verdicts]
    assert counts[0] >= 120 and counts == sorted(counts) and len(set(counts)) == 3, verdicts
    for v in verdicts:
        assert nodes.pg.psql(f"SELECT hash FROM audit_log WHERE id = {v['records']}", db="osc") == v["head_hash"]
    ids = nodes.pg.psql("SELECT count(*), min(id), max(id) FROM audit_log", db="osc").split("|")
    assert ids[0] == ids[2] and ids[1] == "1", ids
    # Every node lists the other nodes' records: one trail.
    page = call(trio[2], "GET", "/audit", user_key=None, params={"limit": 1000}).json()
    items = page["records"] if isinstance(page, dict) else page
    assert {r["node_id"] for r in items} >= {n.node_id for n in trio}
    # A record altered behind the store's back is caught by every node.
    nodes.pg.psql("UPDATE audit_log SET outcome = 'tampered' WHERE id = 5", db="osc")
    for n in trio:
        v = call(n, "GET", "/audit/verify", user_key=None).json()
        assert not v["valid"] and v["first_broken"] == 5, v


def test_a_write_through_one_node_reaches_event_subscribers_of_every_node(nodes, report):
    a, b, c = nodes.three()
    key = token("event-")
    headers = {"X-API-Key": nodes.api_key, "X-User-Key": USER_KEY}
    call(a, "GET", "/configs")
    with Stream(c.url + "/sse/subscribe", params={"key": key}, headers=headers) as on_c, \
            Stream(b.url + "/sse/subscribe", params={"key": key}, headers=headers) as on_b:
        assert on_c.next().event == "connected" and on_b.next().event == "connected"
        started = time.monotonic()
        assert call(a, "POST", "/configs", json={"key": key, "value": {"v": 1}}).status_code == 201
        assert call(a, "PUT", f"/configs/{key}", json={"value": {"v": 2}}).status_code == 200
        assert call(b, "DELETE", f"/configs/{key}").status_code == 200
        got = on_c.events(3, timeout=10)
        elapsed = time.monotonic() - started
        assert [f.event for f in got] == ["created", "updated", "deleted"]
        assert [f.json["data"] for f in got] == [{"value": {"v": 1}}, {"value": {"v": 2}}, None]
        assert [f.event for f in on_b.events(3, timeout=10)] == ["created", "updated", "deleted"]
        assert on_c.quiet(1.5) == [], "each event once"
    report("write on node 1 to its event on node 3's stream (3 events)", f"{elapsed:.3f} s")
    assert elapsed < 3, elapsed


def test_a_node_given_another_salt_refuses_to_start(nodes, tmp_path):
    first = nodes.node()
    first.start()
    other = nodes.node({"OSC_SALT_FILE_PATH": str(tmp_path / "other.salt")})
    (tmp_path / "other.salt").write_bytes(bytes(random.getrandbits(8) for _ in range(64)))
    other.launch()
    assert other.wait_exit(30) not in (None, 0)
    out = other.run_output()
    assert "salt" in out and "does not match" in out, out[-2000:]


def test_misconfigurations_are_refused_with_the_reason_and_never_the_password(nodes, tmp_path):
    cases = [
        ({"OSC_DATABASE_URL": nodes.pg.url("osc", "wrong-" + DB_PASSWORD, "osc")}, "credentials"),
        ({"OSC_CLUSTER_ENABLED": "true", "OSC_CLUSTER_NODES": "127.0.0.1:1,127.0.0.1:2"}, "do not replicate"),
        ({"OSC_DATABASE_URL": f"mysql://osc:{DB_PASSWORD}@127.0.0.1/osc"}, "scheme"),
        ({"OSC_DATABASE_URL": f"postgres://osc:{DB_PASSWORD}@127.0.0.1:{nodes.pg.port}/osc?sslmode=sometimes"}, "sslmode"),
        ({"OSC_DATABASE_URL": f"postgres://osc:{DB_PASSWORD}@127.0.0.1:1/osc?connect_timeout=1"}, "no PostgreSQL host answered"),
    ]
    for extra, reason in cases:
        n = nodes.node(extra)
        n.launch()
        code = n.wait_exit(60)
        out = n.run_output()
        assert code not in (None, 0), (extra, out[-1000:])
        assert reason in out, (reason, out[-1500:])
        assert DB_PASSWORD not in out, out


def test_the_password_appears_in_no_log_metric_or_reply(nodes, tmp_path):
    pwfile = tmp_path / "pw"
    pwfile.write_text(DB_PASSWORD + "\n")
    n = nodes.node({
        "OSC_DATABASE_URL": f"postgres://osc@127.0.0.1:{nodes.pg.port}/osc?sslmode=disable",
        "OSC_DATABASE_PASSWORD_FILE": str(pwfile),
        "OSC_LOG_LEVEL": "DEBUG",
    })
    n.start()
    assert call(n, "POST", "/configs", json={"key": token("pw-"), "value": "x"}).status_code == 201
    seen = [n.log_text(), requests.get(n.url + "/metrics", timeout=10).text,
            call(n, "GET", "/cluster/status", user_key=None).text, requests.get(n.url + "/ready", timeout=10).text]
    assert all(DB_PASSWORD not in s for s in seen)
    assert "postgres://osc@127.0.0.1" in n.log_text()


class Writers:
    """Threads creating unique keys through the given nodes until stopped; remembers every
    acknowledged key and every answer's status."""

    def __init__(self, targets, threads=6):
        self.targets = targets
        self.stop_flag = threading.Event()
        self.acked: list[tuple[str, int]] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, i):
        s = requests.Session()
        n = 0
        while not self.stop_flag.is_set():
            node = self.targets[(i + n) % len(self.targets)]
            n += 1
            key = token(f"load-{i}-")
            try:
                r = s.post(node.url + "/configs", json={"key": key, "value": n},
                           headers={"X-API-Key": node.env["OSC_API_KEY"], "X-User-Key": USER_KEY}, timeout=20)
            except requests.RequestException:
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code == 201:
                    self.acked.append((key, n))
            if r.status_code != 201:
                time.sleep(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


def all_present(node, acked):
    def check(item):
        key, value = item
        r = call(node, "GET", f"/configs/{key}")
        return r.status_code == 200 and r.json()["value"] == value
    with ThreadPoolExecutor(8) as pool:
        missing = [k for k, ok in zip(acked, pool.map(check, acked)) if not ok]
    return missing


def test_kill9_of_a_node_under_write_load_loses_nothing_acknowledged(nodes, report):
    a, b, c = nodes.three()
    for n in (a, b, c):
        call(n, "GET", "/configs")
    with Writers([a, b, c]) as w:
        time.sleep(2)
        b.kill()
        time.sleep(2)
        b.start()
        time.sleep(1.5)
    assert len(w.acked) > 50, w.statuses
    assert 500 not in w.statuses, w.statuses
    missing = all_present(c, w.acked)
    assert missing == [], missing[:5]
    assert all_present(b, w.acked[-20:]) == []
    assert call(a, "GET", "/audit/verify", user_key=None).json()["valid"]
    report("kill -9 of one of three nodes under load", f"{len(w.acked)} acknowledged creates, 0 missing, answers {w.statuses}, "
           f"{w.errors} connection errors (the killed node)")


def test_a_postgresql_restart_under_write_load_loses_nothing_acknowledged(nodes, report):
    """PostgreSQL is killed (-9, as a power cut) under load and restarted 2 s later: while it is
    down the nodes answer 503 with Retry-After, never a 500 and never a hang; afterwards they
    resume on their own, and every acknowledged write is there."""
    a, b, c = nodes.three()
    for n in (a, b, c):
        call(n, "GET", "/configs")
    with Writers([a, b, c]) as w:
        time.sleep(2)
        nodes.pg.kill9()
        down = time.monotonic()
        time.sleep(1)
        r = call(a, "POST", "/configs", json={"key": token("down-"), "value": 1}, timeout=20)
        assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
        assert "detail" in r.json() and DB_PASSWORD not in r.text
        ready = requests.get(b.url + "/ready", timeout=20)
        assert ready.status_code == 503, ready.text
        time.sleep(1)
        nodes.pg.start()
        acked_before = len(w.acked)
        resumed = wait_until(lambda: len(w.acked) > acked_before + 10 and time.monotonic(), timeout=30,
                             what="writes acknowledged again after the restart")
        time.sleep(1)
    assert 500 not in w.statuses, w.statuses
    assert w.statuses.get(503, 0) > 0, w.statuses
    missing = all_present(a, w.acked)
    assert missing == [], missing[:5]
    for n in (a, b, c):
        assert call(n, "GET", "/audit/verify", user_key=None).json()["valid"]
    # The outage is in the node's metrics: failed operations, and the latency of the others.
    metrics = "".join(requests.get(n.url + "/metrics", timeout=10).text for n in (a, b, c))
    assert "osc_db_errors_total{" in metrics, [l for l in metrics.splitlines() if "osc_db" in l]
    assert "osc_db_operation_duration_seconds_count" in metrics and "osc_db_pool_in_use" in metrics
    report("PostgreSQL kill -9 and restart under load",
           f"{len(w.acked)} acknowledged creates, 0 missing, answers {w.statuses}; writes acknowledged again "
           f"{resumed - down - 2:.2f} s after PostgreSQL was started again")


def test_nodes_starting_together_on_an_empty_database_migrate_it_once(nodes):
    """Three nodes started at the same moment on a new database: the schema is made once
    (the migration lock), one salt is recorded, and all three serve it."""
    trio = [nodes.node() for _ in range(3)]
    # One salt file shared by all three, as the README says to give them.
    first = trio[0]
    first.start()
    first.stop()
    nodes.pg.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION osc", db="osc")
    for n in trio:
        n.launch()
    for n in trio:
        n.wait_ready(timeout=60)
    assert nodes.pg.psql("SELECT count(*) FROM secureconf_migrations", db="osc") == "1"
    key = token("together-")
    assert call(trio[1], "POST", "/configs", json={"key": key, "value": 1}).status_code == 201
    assert all(call(n, "GET", f"/configs/{key}").status_code == 200 for n in trio)


def test_promoting_the_standby_under_write_load_loses_nothing_acknowledged(nodes, report):
    """A synchronous hot standby (every acknowledged commit is on both) is promoted when the
    primary dies under load: nodes given both hosts (OSC_DATABASE_HOSTS) answer 503 with
    Retry-After meanwhile (never a 500, never a hang), find the promoted host on their own,
    and every acknowledged write is there."""
    from pgserver import make_standby

    primary = nodes.pg
    standby = make_standby(primary, synchronous=True)
    try:
        hosts = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
        trio = nodes.three({"OSC_DATABASE_HOSTS": hosts})
        for n in trio:
            call(n, "GET", "/configs")
        with Writers(trio) as w:
            time.sleep(2)
            primary.kill9()
            time.sleep(1.5)
            r = call(trio[0], "POST", "/configs", json={"key": token("nowhere-"), "value": 1}, timeout=20)
            assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
            acked_before = len(w.acked)
            promoted = time.monotonic()
            standby.promote()
            first = wait_until(lambda: len(w.acked) > acked_before and time.monotonic(), timeout=30,
                               what="a write acknowledged on the promoted standby")
            time.sleep(1.5)
        assert 500 not in w.statuses, w.statuses
        assert len(w.acked) > acked_before + 5, w.statuses
        missing = all_present(trio[1], w.acked)
        assert missing == [], (missing[:3], [call(trio[1], "GET", f"/configs/{k}").text for k, _ in missing[:3]])
        for n in trio:
            v = call(n, "GET", "/audit/verify", user_key=None)
            assert v.status_code == 200 and v.json()["valid"], v.text
        report("promoting the synchronous standby under load",
               f"{len(w.acked)} acknowledged creates, 0 missing, answers {w.statuses}; first write acknowledged "
               f"{first - promoted:.2f} s after the promotion was asked for")
    finally:
        standby.stop()
