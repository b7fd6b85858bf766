"""Scenario 3: abuse.

(a) A flood of requests with random wrong user keys (each one a PBKDF2 run) while another
    client does cached valid reads: the valid reads stay fast (target p99 <= 100 ms), the
    flood is shed with 503/429 + Retry-After, the node stays up.
(b) Hundreds of idle connections and half-sent requests: a normal client still gets answers
    quickly, and with OSC_IDLE_TIMEOUT=2 they are closed after about 2 s.
(c) Oversized headers and bodies are refused early with 4xx.
(d) Repeated failed user-key attempts from one client get 429 (OSC_AUTH_FAILURE_LIMIT /
    OSC_AUTH_FAILURE_WINDOW), when the binary has them.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from harness import (USER_KEY, NoResponse, binary_variables, budget, busy_machine, judge_time, log, percentile,
                     raw_request, read_response)

HERE = Path(__file__).resolve().parent
P99_TARGET_MS = 100.0


def _metric(node, name: str) -> float:
    text = requests.get(node.url + "/metrics", timeout=60).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _valid_reads(node, seconds: float, interval: float = 0.002) -> tuple[list[float], Counter]:
    """Cached valid reads on one keep-alive connection; (latencies in ms, statuses). Every
    2 ms, so that a quick pass of a few seconds has several hundred samples: with the ~120 a
    10 ms interval gave, "p99" was the second-slowest read."""
    s = requests.Session()
    lat, statuses = [], Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            r = s.get(node.url + "/configs/target", headers={"X-User-Key": USER_KEY}, timeout=60)
            statuses[r.status_code] += 1
        except requests.RequestException as e:
            statuses[type(e).__name__] += 1
            s = requests.Session()
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(interval)
    return lat, statuses


def _flood(node, seconds: float, threads: int = 8) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "flood_worker.py"), node.url, "/configs/target",
                             str(seconds), str(threads)], stdout=subprocess.PIPE, text=True)


def _flood_result(proc: subprocess.Popen, seconds: float) -> dict:
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the flood process did not finish (a request hung)")
    return json.loads(out.strip().splitlines()[-1])


def _variable_default(binary, name: str) -> int | None:
    out = subprocess.run([str(binary), "variables"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.startswith(name + "\t") or line.startswith(name + " "):
            m = re.search(r"default (\d+)", line)
            return int(m.group(1)) if m else None
    return None


def _flood_phase(node, label: str, seconds: float) -> dict:
    assert node.post("target", {"v": "target"}).status_code in (201, 400)
    assert node.get("/configs/target").status_code == 200  # key derived and cached
    derivations_before = _metric(node, "osc_key_derivations_total")
    baseline, bstat = _valid_reads(node, 2.0)
    proc = _flood(node, seconds)
    time.sleep(0.5)  # let the flood reach full speed
    lat, vstat = _valid_reads(node, seconds - 1.0)
    flood = _flood_result(proc, seconds)
    assert node.alive(), f"node died under the wrong-key flood; log:\n{node.log_text()[-3000:]}"
    assert requests.get(node.url + "/health", timeout=60).status_code == 200
    derivations = _metric(node, "osc_key_derivations_total") - derivations_before
    refused = _metric(node, "osc_key_derivations_refused_total")
    statuses = {int(k): v for k, v in flood["statuses"].items()}
    retry = {int(k): v for k, v in flood["retry_after"].items()}
    assert set(bstat) == {200} and set(vstat) == {200}, f"valid reads: {dict(bstat)} / {dict(vstat)}"
    assert set(statuses) <= {401, 429, 503}, f"flood answers: {statuses}"
    for code in (429, 503):
        assert retry.get(code, 0) == statuses.get(code, 0), f"{code} without Retry-After: {statuses} {retry}"
    assert not flood["errors"], f"flood connection errors: {flood['errors']}"
    res = {
        "label": label, "baseline_p50": percentile(baseline, 50), "baseline_p99": percentile(baseline, 99),
        "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat), "reads": len(lat),
        "flood": flood["requests"], "statuses": statuses, "derivations": derivations, "refused": refused,
    }
    log(f"wrong-key flood ({label}; 8 client threads in their own process, {seconds:.0f} s, every request a "
        f"new random key): {flood['requests']} flood requests -> {dict(sorted(statuses.items()))}, "
        f"503 with Retry-After: {retry.get(503, 0)}, 429 with Retry-After: {retry.get(429, 0)}, "
        f"{derivations:.0f} PBKDF2 runs; {len(lat)} cached valid reads all 200: p50 {res['p50']:.1f} ms, "
        f"p99 {res['p99']:.1f} ms, max {res['max']:.0f} ms (without the flood: p50 {res['baseline_p50']:.1f} ms, "
        f"p99 {res['baseline_p99']:.1f} ms); node up")
    return res


def test_wrong_key_flood_keeps_valid_reads_fast(nodes, binary):
    busy_before = busy_machine()  # the flood itself loads the machine: judge by the state before it
    limiter = "OSC_AUTH_FAILURE_LIMIT" in binary_variables(binary)
    off = {"OSC_AUTH_FAILURE_LIMIT": "0"} if limiter else {}  # else the per-client limiter sheds the flood first
    results = []

    # A: default derivation queue: every flood request is a PBKDF2 run, both cores busy with them
    node = nodes.new("flood", env=off)
    node.start()
    results.append(_flood_phase(node, "every request derived: per-client limiter off, default OSC_KDF_MAX_QUEUE",
                                budget(10, 6)))
    assert node.stop() == 0

    # B: a short derivation queue: the excess is shed with 503 + Retry-After
    node = nodes.new("flood-queue", env={**off, "OSC_KDF_MAX_QUEUE": "4"})
    node.start()
    res = _flood_phase(node, "per-client limiter off, OSC_KDF_MAX_QUEUE=4", budget(6, 4))
    results.append(res)
    answered = sum(res["statuses"].values())
    if answered > 50:
        assert res["statuses"].get(503, 0) > 0, f"a queue of 4 never answered 503 to 8 concurrent derivations: {res}"
    assert node.stop() == 0

    # C: the per-client limiter with its defaults
    if limiter:
        limit = _variable_default(binary, "OSC_AUTH_FAILURE_LIMIT") or 20
        node = nodes.new("flood-limited", env={"OSC_AUTH_FAILURE_LIMIT": None})  # the node's own default, not the harness's
        node.start()
        res = _flood_phase(node, f"default per-client limiter, {limit} failures per window", budget(5, 4))
        results.append(res)
        answered = sum(res["statuses"].values())
        if answered > limit + 8:
            assert res["statuses"].get(429, 0) > 0, \
                f"the per-client limiter never answered 429 to {answered} wrong keys (limit {limit})"
        else:
            log(f"per-client limiter not reached: only {answered} flood requests were answered (limit {limit}); "
                f"the machine is slow ({busy_machine() or 'not overloaded'})")
        assert node.stop() == 0
    else:
        log("wrong-key flood with the per-client limiter: skipped, the binary has no OSC_AUTH_FAILURE_LIMIT")
    for r in results:
        judge_time(r["p99"], P99_TARGET_MS, f"p99 of cached valid reads under the wrong-key flood ({r['label']}) (ms)",
                   busy=busy_before)


# ---- (b) idle and half-sent connections ------------------------------------------------------------

def _open_idle(port: int, n: int) -> list[tuple[str, socket.socket]]:
    uk = USER_KEY.encode()
    kinds = [
        ("idle", b""),
        ("headers without the final CRLF", b"GET /configs/target HTTP/1.1\r\nHost: x\r\nX-User-Key: " + uk + b"\r\n"),
        ("body shorter than Content-Length", b"POST /configs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                              b"X-User-Key: " + uk + b"\r\nContent-Length: 100\r\n\r\n{\"key\": \"half"),
    ]
    out = []
    for i in range(n):
        kind, data = kinds[i % len(kinds)]
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if data:
            s.sendall(data)
        out.append((kind, s))
    return out


def _wait_closed(socks, t0: float, limit: float) -> dict[str, list[float]]:
    """Seconds from t0 until the server closed each socket (by kind); unclosed ones missing."""
    sel = selectors.DefaultSelector()
    for kind, s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, kind)
    closed: dict[str, list[float]] = {}
    remaining = len(socks)
    while remaining and time.monotonic() - t0 < limit:
        for key, _ in sel.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if not chunk:
                closed.setdefault(key.data, []).append(time.monotonic() - t0)
                sel.unregister(key.fileobj)
                remaining -= 1
    sel.close()
    return closed


def test_idle_and_half_sent_connections(nodes):
    n_conns = 300
    # All from 127.0.0.1: the per-client connection cap (its own test in tests/cluster/test_security.py) is lifted here.
    node = nodes.new("idle", env={"OSC_IDLE_TIMEOUT": "2", "OSC_MAX_CONNECTIONS_PER_CLIENT": "1000"})
    node.start()
    assert node.post("target", {"v": 1}).status_code == 201
    assert node.get("/configs/target").status_code == 200
    t0 = time.monotonic()
    socks = _open_idle(node.port, n_conns)
    opened = time.monotonic() - t0
    lat = []
    for _ in range(20):
        t = time.perf_counter()
        r = requests.get(node.url + "/configs/target", headers={"X-User-Key": USER_KEY}, timeout=60)
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    served_at = time.monotonic() - t0
    closed = _wait_closed(socks, t0, 30.0)
    for _, s in socks:
        s.close()
    assert node.alive()
    all_closed = sorted(t for ts in closed.values() for t in ts)
    by_kind = ", ".join(f"{k}: {len(v)} closed at {min(v):.2f}-{max(v):.2f} s" for k, v in closed.items())
    log(f"{n_conns} idle/half-sent connections held open (opened in {opened:.2f} s; {by_kind}): "
        f"a normal client meanwhile got 20 answers, p50 {percentile(lat, 50):.1f} ms, max {max(lat):.0f} ms "
        f"(all within {served_at:.2f} s); with OSC_IDLE_TIMEOUT=2 {len(all_closed)}/{n_conns} closed by the server, "
        f"first at {all_closed[0] if all_closed else float('nan'):.2f} s, last at "
        f"{all_closed[-1] if all_closed else float('nan'):.2f} s")
    judge_time(percentile(lat, 50), 250, "p50 of a normal client among 300 idle connections (ms)")
    judge_time(max(lat), 2000, "slowest answer to a normal client among 300 idle connections (ms)")
    assert len(all_closed) == n_conns, f"only {len(all_closed)} of {n_conns} idle connections closed within 30 s"
    assert all_closed[0] >= 1.5, f"a connection was closed after {all_closed[0]:.2f} s, before the 2 s idle timeout"
    judge_time(all_closed[-1], 6.0, "last idle connection closed (s after opening)")
    assert requests.get(node.url + "/health", timeout=30).status_code == 200


def test_slow_trickle_connection(nodes):
    """A client that trickles one header byte every 0.5 s (slowloris) is closed at OSC_REQUEST_TIMEOUT."""
    node = nodes.new("trickle", env={"OSC_IDLE_TIMEOUT": "2", "OSC_REQUEST_TIMEOUT": "3"})
    node.start()
    socks = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(3)]
    header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
    t0 = time.monotonic()
    open_after = 0.0
    i = 0
    duration = budget(8.0, 5.0)
    while time.monotonic() - t0 < duration:
        try:
            for s in socks:
                s.sendall(header[i % len(header):i % len(header) + 1])
        except OSError:
            break
        i += 1
        open_after = time.monotonic() - t0
        time.sleep(0.5)
    for s in socks:
        s.close()
    assert node.alive()
    assert open_after < 4.6, f"a trickling client was still connected after {open_after:.1f} s (OSC_REQUEST_TIMEOUT=3)"
    log(f"slow trickle (1 header byte / 0.5 s, OSC_REQUEST_TIMEOUT=3): the server closed the connections; "
        f"the client noticed after {open_after:.1f} s")


# ---- (c) oversized headers and bodies ------------------------------------------------------------

def test_oversized_headers_and_bodies(nodes):
    node = nodes.new("oversized")
    node.start()
    uk = USER_KEY.encode()
    results = []

    # Beyond OSC_MAX_HEADER_BYTES (2 MiB by default: /import's query form carries whole backups).
    req = b"GET /configs/x HTTP/1.1\r\nHost: x\r\nX-User-Key: " + uk + b"\r\nX-Big: " + b"a" * 3 * 1024 * 1024 + b"\r\n\r\n"
    t = time.monotonic()
    r = raw_request(node.port, req, timeout=30)
    assert r.status in (400, 431), f"3 MB header: {r.status}"
    results.append(f"3 MB header -> {r.status} in {1000 * (time.monotonic() - t):.0f} ms"
                   + ("" if r.body.startswith(b"{") else " (empty body, no JSON detail)"))

    req = b"GET /configs/x HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(10000)) + b"\r\n"
    r = raw_request(node.port, req, timeout=30)
    assert 400 <= r.status < 500, f"10000 headers: {r.status}"
    results.append(f"10000 headers (~100 KB) -> {r.status}")

    body_len = 10 * 1024 * 1024
    head = (b"POST /configs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-User-Key: " + uk
            + b"\r\nContent-Length: %d\r\n\r\n" % body_len)
    s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    s.sendall(head + b"{" + b" " * 65535)  # 64 KB of the announced 10 MB
    t = time.monotonic()
    try:
        r = read_response(s, time.monotonic() + 30)
    except (NoResponse, socket.timeout) as e:
        pytest.fail(f"10 MB Content-Length: no answer after 64 KB of body ({e}); the body is not refused early")
    finally:
        s.close()
    assert r.status == 413, f"10 MB Content-Length: {r.status} {r.body[:200]}"
    results.append(f"10 MB body by Content-Length -> 413 after only 64 KB sent ({1000 * (time.monotonic() - t):.0f} ms)")

    r = requests.post(node.url + "/configs", data=b"x" * body_len, headers={"X-User-Key": USER_KEY}, timeout=30)
    assert r.status_code == 413, r.status_code
    results.append(f"10 MB body sent whole -> 413 {r.text[:60]!r}")

    s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    s.sendall(b"POST /configs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-User-Key: " + uk
              + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = 0
    try:
        while sent < body_len:
            s.sendall(b"10000\r\n" + b"a" * 0x10000 + b"\r\n")
            sent += 0x10000
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    try:
        r = read_response(s, time.monotonic() + 30)
    except (NoResponse, socket.timeout) as e:
        pytest.fail(f"10 MB chunked body: no answer ({e})")
    finally:
        s.close()
    assert 400 <= r.status < 500, f"10 MB chunked body: {r.status}"
    results.append(f"10 MB chunked body -> {r.status} {r.body[:60]!r} after {sent // 1024} KiB accepted")

    assert node.alive()
    assert requests.get(node.url + "/health", timeout=60).status_code == 200
    assert node.post("after-oversized", {"ok": True}).status_code == 201
    log("oversized input refused, node up: " + "; ".join(results))


# ---- (d) per-client limit on failed user-key attempts --------------------------------------------------

def test_failed_user_key_attempts_rate_limited(nodes, binary):
    if "OSC_AUTH_FAILURE_LIMIT" not in binary_variables(binary):
        pytest.skip("`secureconf variables --names-only` does not list OSC_AUTH_FAILURE_LIMIT: this binary has no "
                    "per-client limit on failed user-key attempts yet")
    limit, window = 5, 3
    node = nodes.new("ratelimit", env={"OSC_AUTH_FAILURE_LIMIT": str(limit), "OSC_AUTH_FAILURE_WINDOW": str(window)})
    node.start()
    assert node.post("target", {"v": 1}).status_code == 201  # a new key checked against nothing: counted...
    assert node.get("/configs/target").status_code == 200  # ...and refunded once a read proves it
    wrong = [node.get("/configs/target", user_key=f"wrong-key-{i:04d}").status_code for i in range(limit)]
    assert wrong == [401] * limit, f"the first {limit} wrong keys: {wrong}"
    t_limited = time.monotonic()
    r = node.get("/configs/target", user_key="wrong-key-over-the-limit")
    assert r.status_code == 429, f"attempt {limit + 1} within {window} s: {r.status_code} {r.text[:200]}"
    retry_after = r.headers.get("retry-after")
    assert retry_after and retry_after.isdigit() and 1 <= int(retry_after) <= window + 1, retry_after
    assert "detail" in r.json()
    more = [node.get("/configs/target", user_key=f"wrong-key-more-{i}").status_code for i in range(5)]
    assert set(more) == {429}, more
    valid = node.get("/configs/target").status_code
    new_key = node.get("/configs/target", user_key="never-seen-but-long-enough").status_code
    time.sleep(max(0.0, window + 0.3 - (time.monotonic() - t_limited)))
    after = node.get("/configs/target", user_key="wrong-key-after-window").status_code
    assert after == 401, f"a wrong key after the {window} s window: {after} (want 401)"
    assert node.alive()
    log(f"failed user-key attempts (OSC_AUTH_FAILURE_LIMIT={limit}, OSC_AUTH_FAILURE_WINDOW={window}): "
        f"{limit} wrong keys -> 401, then 429 with Retry-After {retry_after} (and for 5 more); meanwhile the "
        f"cached valid key -> {valid}, an unseen key -> {new_key}; after the window a wrong key -> 401 again")
