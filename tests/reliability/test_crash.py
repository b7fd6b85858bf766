"""Scenario 1: crash safety.

kill -9 at a random moment of a concurrent POST/PUT/DELETE load, then restart: everything
acknowledged is there with its value (acknowledged deletes absent), the database passes
PRAGMA integrity_check and the node serves at once. SIGTERM during the same load: requests
already sent are answered, the process exits 0 within 5 s, nothing acknowledged is lost.
"""

from __future__ import annotations

import secrets
import socket
import time

import pytest

from harness import (USER_KEY, NoResponse, budget, integrity_check, integrity_check_copy, judge_time, log,
                     read_response)
from load import Model, WriteLoad

CLIENTS = 4
INFLIGHT = 4


def _run_until_random_moment(load: WriteLoad, rng, min_acks: int = 30, max_wait: float = 60.0) -> float:
    """Lets the load make some progress (a loaded machine can be slow to get going), then a
    random 0.3-2.0 s more; returns the seconds since the load started."""
    t0 = time.monotonic()
    load.wait_progress(min_acks, max_wait)
    time.sleep(rng.uniform(0.3, 2.0))
    return time.monotonic() - t0


def _verify(node, model: Model, what: str) -> int:
    found = node.list_all()
    ok, problems = model.check(found)
    assert not problems, f"{what}: {len(problems)} keys lost or wrong, e.g.\n" + "\n".join(problems[:20])
    return ok


def test_kill9_during_write_load(nodes, rng, seed, tmp_path):
    rounds = budget(3, 1)
    node = nodes.new("crash")
    node.start()
    model = Model()
    for rnd in range(1, rounds + 1):
        if rnd > 1:
            ready = node.start()
        load = WriteLoad(node.url, rnd, CLIENTS, seed + rnd).start()
        delay = _run_until_random_moment(load, rng)
        assert node.alive(), f"node died under write load before the kill; log:\n{node.log_text()[-3000:]}"
        node.kill()
        load.stop()
        assert node.returncode == -9
        model.absorb(load)
        ops = load.ops()
        bad = load.bad_statuses()
        assert not bad, f"unexpected answers under write load: {bad[:10]}"

        ic_crash = integrity_check_copy(node.db_path, tmp_path / f"crash-copy-{rnd}")
        assert ic_crash == "ok", f"integrity_check of the crashed database: {ic_crash}"

        ready = node.start()
        found = node.list_all()
        ok, problems = model.check(found)
        assert not problems, (f"round {rnd}: {len(problems)} acknowledged writes lost or wrong after kill -9, e.g.\n"
                              + "\n".join(problems[:20]))
        present = sum(1 for k in model.acked if k in found)
        in_flight = sum(len(v) for v in model.uncertain.values())
        applied = model.settle(found)
        rc = node.stop()
        assert rc == 0, f"exit {rc} on SIGTERM after the restart"
        ic = integrity_check(node.db_path)
        assert ic == "ok", f"integrity_check after the restart: {ic}"
        log(f"kill -9 during {CLIENTS}-client write load (round {rnd}/{rounds}, {delay:.2f} s in): "
            f"{load.acknowledged} writes acknowledged ({ops['create']} creates, {ops['update']} updates, "
            f"{ops['delete']} deletes); after restart all {ok} keys written so far hold their last acknowledged "
            f"state ({present} present, {ok - present} absent); "
            f"{in_flight} unacknowledged in flight, {applied} of them applied; integrity_check ok "
            f"(crash image and after restart); first /health 200 {ready * 1000:.0f} ms after restart")
        judge_time(ready, 10, "first /health 200 after kill -9 and restart (s)")


def _kdf_bound_post(port: int, user_key: str, key: str) -> socket.socket:
    """A POST with a never-seen user key: the node must run a PBKDF2 (tens of ms) before it can
    answer, so the request is certainly in flight when SIGTERM follows."""
    body = ('{"key": "%s", "value": {"inflight": true}}' % key).encode()
    req = (f"POST /configs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-Key: {user_key}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(req)
    return s


def test_sigterm_during_write_load(nodes, rng, seed):
    node = nodes.new("sigterm")
    node.start()
    model = Model()
    load = WriteLoad(node.url, 1, CLIENTS, seed).start()
    _run_until_random_moment(load, rng)
    assert node.alive()

    # Requests fully sent before the signal, each needing a key derivation.
    inflight = []
    for i in range(INFLIGHT):
        uk = "inflight-user-key-" + secrets.token_hex(6)
        inflight.append((uk, f"inflight-{i}", _kdf_bound_post(node.port, uk, f"inflight-{i}")))
    time.sleep(0.005)
    t_term = time.monotonic()
    node.terminate()

    answered, resets = {}, 0
    deadline = time.monotonic() + 60
    for uk, key, s in inflight:
        try:
            answered[key] = read_response(s, deadline).status
        except (NoResponse, ConnectionResetError, socket.timeout) as e:
            resets += 1
            answered[key] = type(e).__name__
        finally:
            s.close()

    rc = node.wait_exit(max(0.1, 60.0 - (time.monotonic() - t_term)))
    exit_after = time.monotonic() - t_term
    if rc is None:
        node.kill()
        pytest.fail(f"node still running 60 s after SIGTERM under load (killed); log:\n{node.log_text()[-3000:]}")
    load.stop()
    model.absorb(load)
    assert rc == 0, f"exit code {rc} after SIGTERM; log:\n{node.log_text()[-3000:]}"

    bad = [b for b in load.bad_statuses() if b[2] != 503]
    assert not bad, f"unexpected answers under write load: {bad[:10]}"
    unacked = load.unacked()

    ready = node.start()
    ok = _verify(node, model, "after SIGTERM and restart")
    # every in-flight POST that was answered 201 must be stored; ask with its own user key
    kept = 0
    for uk, key, _ in inflight:
        if answered[key] == 201:
            r = node.get(f"/configs/{key}", user_key=uk)
            assert r.status_code == 200 and r.json()["value"] == {"inflight": True}, \
                f"in-flight POST {key} acknowledged 201 before shutdown but reads {r.status_code} {r.text[:200]}"
            kept += 1
    ops = load.ops()
    n201 = sum(1 for v in answered.values() if v == 201)
    log(f"SIGTERM during {CLIENTS}-client write load: exit 0 after {exit_after:.2f} s; "
        f"{load.acknowledged} writes acknowledged ({ops['create']} creates, {ops['update']} updates, "
        f"{ops['delete']} deletes), all {ok} keys hold their acknowledged state after restart; "
        f"unacknowledged at shutdown: {dict(unacked)}; {INFLIGHT} KDF-bound POSTs sent before the signal: "
        f"{n201} answered 201 and kept ({kept}), others {[v for v in answered.values() if v != 201]}; "
        f"restart served in {ready * 1000:.0f} ms")
    judge_time(exit_after, 5.0, "exit after SIGTERM under write load (s)")
    assert resets == 0, (f"{resets} of {INFLIGHT} requests fully sent before SIGTERM got no answer "
                         f"(connection closed): {answered}")
    assert node.stop() == 0
    assert integrity_check(node.db_path) == "ok"
