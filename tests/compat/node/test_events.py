"""Change events on one real node, through a raw SSE client (tests/common/sse.py): OpenSecureConf
3.1's wire format and /sse/* shapes, values only for the subscriber's own user key, ids that
resume with Last-Event-ID, single-use tickets for EventSource, the subscriber bound, and
SIGTERM closing every stream at once."""

from __future__ import annotations

import signal
import time

import requests

from common.nodeproc import wait_until
from common.sse import Stream
from harness import random_token

USER = "events-user-key-01"
OTHER = "events-other-key-2"


def create(n, key, value, env="prod", user=USER, **extra):
    body = {"key": key, "value": value, "environment": env, **extra}
    r = requests.post(n.url + "/configs", json=body, headers=hdr(n, user), timeout=15)
    assert r.status_code == 201, r.text


def hdr(n, user=None):
    h = {}
    if user:
        h["X-User-Key"] = user
    if n.api_key:
        h["X-API-Key"] = n.api_key
    return h


def subscribe(n, user=None, last_event_id=None, **params):
    h = hdr(n, user)
    if last_event_id:
        h["Last-Event-ID"] = last_event_id
    return Stream(n.url + "/sse/subscribe", params=params, headers=h)


def test_events_arrive_in_opensecureconfs_format_with_values_only_for_the_writers_key(node_factory):
    n = node_factory.start()
    with subscribe(n, USER, environment="prod") as mine, subscribe(n) as anyone, subscribe(n, OTHER) as other:
        assert mine.status == 200 and mine.response.headers["content-type"].startswith("text/event-stream")
        hello = mine.next()
        assert hello.event == "connected" and hello.id == f"{n.node_id}.0"
        body = hello.json
        assert set(body) >= {"subscription_id", "filters", "server_time"}
        assert body["filters"] == {"key": None, "environment": "prod", "category": None}
        for s in (anyone, other):
            assert s.next().event == "connected"
        create(n, "db", {"host": "h", "password": "s3cr3t"}, category="database")
        create(n, "elsewhere", 1, env="staging")
        r = requests.put(n.url + "/configs/db", params={"environment": "prod"}, json={"value": "v2"}, headers=hdr(n, USER), timeout=15)
        assert r.status_code == 200
        assert requests.delete(n.url + "/configs/db", params={"environment": "prod"}, headers=hdr(n, USER), timeout=15).status_code == 200
        got = mine.events(3)
        assert [(f.event, f.json["key"]) for f in got] == [("created", "db"), ("updated", "db"), ("deleted", "db")]
        assert [f.json["data"] for f in got] == [{"value": {"host": "h", "password": "s3cr3t"}}, {"value": "v2"}, None]
        assert got[0].json["category"] == "database" and got[0].json["environment"] == "prod"
        assert got[0].json["node_id"] == n.node_id and got[0].json["timestamp"].endswith("Z")
        seqs = [int(f.id.rsplit(".", 1)[1]) for f in got]
        assert all(f.id.startswith(n.node_id + ".") for f in got) and seqs == sorted(seqs) and len(set(seqs)) == 3
        assert mine.quiet(0.5) == [], "the staging write is filtered out"
        # Without the writer's user key: names and kinds, never a value.
        for s in (anyone, other):
            seen = s.events(4)
            assert [f.event for f in seen] == ["created", "created", "updated", "deleted"]
            assert all(f.json["data"] is None for f in seen), [f.data for f in seen]
    log = n.stderr_text()
    assert "s3cr3t" not in log and USER not in log


def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed(node_factory):
    n = node_factory.start()
    with subscribe(n, USER) as s:
        start = s.next()
        create(n, "a", 1)
        create(n, "b", 2)
        first = s.events(2)
        assert [f.json["key"] for f in first] == ["a", "b"]
        resume_from = s.last_id
    create(n, "c", 3)
    create(n, "d", 4)
    with subscribe(n, USER, last_event_id=resume_from) as again:
        hello = again.next()
        assert hello.event == "connected" and hello.json["resumed"] is True and hello.id is None
        create(n, "e", 5)
        got = again.events(3)
        assert [(f.json["key"], f.json["data"]) for f in got] == [("c", {"value": 3}), ("d", {"value": 4}), ("e", {"value": 5})]
        assert again.quiet(0.5) == [], "nothing twice"
    # From the connected event's id, with nothing received: the changes since it.
    with subscribe(n, last_event_id=start.id) as from_start:
        from_start.next()
        assert [f.json["key"] for f in from_start.events(5)] == ["a", "b", "c", "d", "e"]
    # An id of another node, or one this node never issued: an explicit reset, then the present.
    for bad in ("some-other-node:9000.3", f"{n.node_id}.999999", "not-an-id"):
        with subscribe(n, last_event_id=bad) as s:
            hello, reset = s.next(), s.next()
            assert hello.event == "connected" and hello.id == f"{n.node_id}.5"
            assert reset.event == "reset" and reset.json["last_event_id"] == bad, reset.data
            assert reset.json["reason"] in ("other_node", "unknown_event_id")


def test_a_ticket_opens_one_stream_without_headers_as_eventsource_needs(node_factory):
    api_key = random_token("events-api-")
    n = node_factory.start(api_key=api_key)
    assert requests.get(n.url + "/sse/subscribe", timeout=5).status_code == 403, "no API key, no ticket"
    r = requests.post(n.url + "/sse/ticket", headers=hdr(n, USER), timeout=15)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    ticket = r.json()["ticket"]
    assert r.json()["expires_in"] == 30 and len(ticket) >= 40
    with Stream(n.url + "/sse/subscribe", params={"ticket": ticket, "key": "t"}) as s:
        assert s.status == 200
        assert s.next().event == "connected"
        create(n, "t", "ticket value")
        assert s.next().json["data"] == {"value": "ticket value"}, "the ticket carries the user key"
    again = requests.get(n.url + "/sse/subscribe", params={"ticket": ticket}, timeout=5)
    assert again.status_code == 401 and "ticket" in again.json()["detail"], "single use"
    forged = requests.get(n.url + "/sse/subscribe", params={"ticket": "x" * 43}, timeout=5)
    assert forged.status_code == 401
    assert requests.head(n.url + "/sse/subscribe", params={"ticket": "x" * 43}, timeout=5).status_code == 401, \
        "HEAD with a ticket checks it (the API key is not asked for)"
    assert requests.post(n.url + "/sse/ticket", timeout=5).status_code == 403
    assert ticket not in n.stderr_text()


def test_stats_subscriptions_and_health_in_opensecureconfs_shapes(node_factory):
    n = node_factory.start()
    with subscribe(n, key="db", environment="prod") as a, subscribe(n) as b:
        a.next(), b.next()
        create(n, "db", 1)
        a.events(1), b.events(1)
        stats = requests.get(n.url + "/sse/stats", timeout=5).json()
        assert set(stats) == {"subscriptions", "events", "connection_health", "performance"}
        subs = stats["subscriptions"]
        assert (subs["active"], subs["total_created"], subs["wildcard"]) == (2, 2, 1)
        assert subs["by_key"] == {"db": 1} and subs["by_environment"] == {"prod": 1}
        assert stats["events"]["total_sent"] == 2 and stats["events"]["by_type"]["created"] == 2
        listing = requests.get(n.url + "/sse/subscriptions", timeout=5).json()
        assert len(listing) == 2
        assert set(listing[0]) == {"subscription_id", "filters", "created_at", "duration_seconds", "queue_size", "queue_max_size"}
        assert {tuple(sorted((k, v) for k, v in s["filters"].items() if v)) for s in listing} == {(("environment", "prod"), ("key", "db")), ()}
        health = requests.get(n.url + "/sse/health", timeout=5).json()
        assert health == {"status": "healthy", "active_subscriptions": 2, "total_events_sent": 2}
    metrics = requests.get(n.url + "/metrics", timeout=5).text
    assert 'osc_sse_events_sent_total{event_type="created"} 2' in metrics


def test_subscribers_beyond_the_bound_get_503_and_sigterm_closes_every_stream_at_once(node_factory):
    n = node_factory.start(env={"OSC_SSE_MAX_SUBSCRIBERS": "2", "OSC_SSE_KEEPALIVE_SECONDS": "60"})
    streams = [subscribe(n), subscribe(n)]
    for s in streams:
        assert s.next().event == "connected"
    full = requests.get(n.url + "/sse/subscribe", timeout=5)
    assert full.status_code == 503 and "OSC_SSE_MAX_SUBSCRIBERS" in full.json()["detail"] and full.headers.get("retry-after")
    started = time.monotonic()
    n.proc.send_signal(signal.SIGTERM)
    assert all(s.ended(5) for s in streams), "every stream ends at once, not at its next keep-alive"
    assert n.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_bad_filters_are_refused_and_keepalives_flow(node_factory):
    n = node_factory.start(env={"OSC_SSE_KEEPALIVE_SECONDS": "0.3"})
    r = requests.get(n.url + "/sse/subscribe", params={"key": "x" * 300}, timeout=5)
    assert r.status_code == 422 and "detail" in r.json()
    with subscribe(n) as s:
        s.next()
        comment = s.next(timeout=3, comments=True)
        assert comment.comment is not None and comment.comment.startswith("keep-alive")
    assert requests.head(n.url + "/sse/subscribe", timeout=5).status_code == 200, "HEAD opens no stream"
    # A client that left is noticed at the next keep-alive at the latest.
    assert wait_until(lambda: requests.get(n.url + "/sse/health", timeout=5).json()["active_subscriptions"] == 0, 5)
