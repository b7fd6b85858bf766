"""A concurrent write load that records every acknowledged response, and the check that a
node still holds all of it (used by the kill -9 and SIGTERM scenarios).

Each client thread owns its keys (prefix `r<round>c<client>-`), so per key there is at most
one request in flight. Per key the model keeps the last acknowledged state (a value, or
ABSENT after an acknowledged delete) and, for a request that got no acknowledgement (the
connection died, or any non-success answer), the state it would have produced: after a
crash a key must hold its acknowledged state or, if a request was in flight, that one's.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import requests

from harness import USER_KEY

ABSENT = object()


def _value(rng: random.Random, client: int, n: int):
    """A distinctive JSON value of varied shape."""
    kind = n % 4
    tag = f"c{client}n{n}-{rng.getrandbits(48):012x}"
    if kind == 0:
        return tag
    if kind == 1:
        return {"tag": tag, "n": n, "nested": {"list": [1, 2.5, None, True, "ü€😀"], "empty": {}}}
    if kind == 2:
        return [tag, n, -n, {"k": "v" * rng.randrange(1, 200)}]
    return {"tag": tag, "big": "x" * rng.randrange(500, 3000)}


class Client(threading.Thread):
    def __init__(self, url: str, round_no: int, client: int, seed: int, stop: threading.Event,
                 user_key: str = USER_KEY):
        super().__init__(daemon=True, name=f"load-r{round_no}c{client}")
        self.url = url
        self.prefix = f"r{round_no}c{client}-"
        self.client = client
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.user_key = user_key
        self.acked: dict[str, object] = {}         # key -> last acknowledged state
        self.uncertain: dict[str, list] = {}       # key -> states an unacknowledged request may have produced
        self.ops = Counter()                       # acknowledged ops by kind
        self.unacked = Counter()                   # unacknowledged answers by status / error class
        self.bad_statuses: list[tuple[str, str, int, str]] = []  # 5xx other than 503+Retry-After, or 4xx where success was due
        self.error: str | None = None
        self.refused = 0                           # 503 "not applied": must not be visible afterwards
        self.n = 0

    def _live_keys(self) -> list[str]:
        return [k for k, v in self.acked.items() if v is not ABSENT and k not in self.uncertain]

    def run(self) -> None:
        s = requests.Session()
        h = {"X-User-Key": self.user_key}
        while not self.stop_event.is_set():
            self.n += 1
            live = self._live_keys()
            roll = self.rng.random()
            if not live or roll < 0.5:
                key = f"{self.prefix}{self.n}"
                value = _value(self.rng, self.client, self.n)
                op, method, path, body, want, new = "create", "POST", "/configs", {"key": key, "value": value}, 201, value
            elif roll < 0.8:
                key = self.rng.choice(live)
                value = _value(self.rng, self.client, self.n)
                op, method, path, body, want, new = "update", "PUT", f"/configs/{key}", {"value": value}, 200, value
            else:
                key = self.rng.choice(live)
                op, method, path, body, want, new = "delete", "DELETE", f"/configs/{key}", None, 200, ABSENT
            try:
                r = s.request(method, self.url + path, json=body, headers=h, timeout=60)
            except requests.RequestException as e:
                # Sent (perhaps partly) and never answered: either outcome is allowed.
                self.uncertain.setdefault(key, []).append(new)
                self.unacked[type(e).__name__] += 1
                self.error = f"{type(e).__name__}: {e}"
                return
            if r.status_code == want:
                self.acked[key] = new
                self.uncertain.pop(key, None)
                self.ops[op] += 1
                continue
            if r.status_code == 503 and "not applied" in r.text:
                # The node says the write was refused: it must not show up later (strict).
                self.refused += 1
                self.unacked["503 not applied"] += 1
                time.sleep(0.05)
                continue
            self.uncertain.setdefault(key, []).append(new)
            self.unacked[r.status_code] += 1
            if r.status_code >= 500 and not (r.status_code == 503 and "retry-after" in r.headers) \
                    or 400 <= r.status_code < 500:
                # a 503 without Retry-After can be a node that is shutting down: recorded, judged by the caller
                self.bad_statuses.append((method, path, r.status_code, r.text[:200]))
            if r.status_code == 503:
                time.sleep(0.05)


class WriteLoad:
    def __init__(self, url: str, round_no: int, clients: int, seed: int, user_key: str = USER_KEY):
        self.stop_event = threading.Event()
        self.clients = [Client(url, round_no, i, seed * 7919 + i, self.stop_event, user_key) for i in range(clients)]

    def start(self) -> "WriteLoad":
        for c in self.clients:
            c.start()
        return self

    def stop(self, timeout: float = 90.0) -> None:
        self.stop_event.set()
        for c in self.clients:
            c.join(timeout)
            assert not c.is_alive(), f"{c.name} did not finish (a request hung past its timeout)"

    def wait_progress(self, min_acks: int, max_wait: float = 60.0) -> None:
        """Waits until `min_acks` writes are acknowledged (a loaded machine can be slow to start)."""
        t0 = time.monotonic()
        while self.acknowledged < min_acks and time.monotonic() - t0 < max_wait:
            time.sleep(0.05)

    @property
    def acknowledged(self) -> int:
        return sum(sum(c.ops.values()) for c in self.clients)

    def ops(self) -> Counter:
        total = Counter()
        for c in self.clients:
            total.update(c.ops)
        return total

    def unacked(self) -> Counter:
        total = Counter()
        for c in self.clients:
            total.update(c.unacked)
        return total

    @property
    def refused(self) -> int:
        return sum(c.refused for c in self.clients)

    def bad_statuses(self) -> list:
        return [b for c in self.clients for b in c.bad_statuses]


class Model:
    """Everything acknowledged over several rounds of load on one store."""

    def __init__(self):
        self.acked: dict[str, object] = {}
        self.uncertain: dict[str, list] = {}
        self.acknowledged_ops = 0

    def absorb(self, load: WriteLoad) -> None:
        for c in load.clients:
            self.acked.update(c.acked)
            for k, states in c.uncertain.items():
                self.uncertain.setdefault(k, []).extend(states)
            self.acknowledged_ops += sum(c.ops.values())

    def settle(self, found: dict[str, object]) -> int:
        """After a check, an uncertain key's state is whatever the store holds; returns how
        many in-flight requests turned out applied."""
        applied = 0
        for k, states in self.uncertain.items():
            now = found.get(k, ABSENT)
            before = self.acked.get(k, ABSENT)
            if not _same(now, before):
                applied += 1
            self.acked[k] = now
        self.uncertain.clear()
        return applied

    def check(self, found: dict[str, object]) -> tuple[int, list[str]]:
        """(keys that hold an acknowledged state, problems)."""
        problems = []
        ok = 0
        for k, state in self.acked.items():
            got = found.get(k, ABSENT)
            allowed = [state] + self.uncertain.get(k, [])
            if any(_same(got, a) for a in allowed):
                ok += 1
                continue
            problems.append(f"{k}: expected {_show(state)}"
                            + (f" or (in flight) {[_show(a) for a in self.uncertain[k]]}" if k in self.uncertain else "")
                            + f", found {_show(got)}")
        for k in found:
            if k not in self.acked and k not in self.uncertain:
                problems.append(f"{k}: present but never written")
        return ok, problems

    @property
    def live_keys(self) -> int:
        return sum(1 for v in self.acked.values() if v is not ABSENT)


def _same(a, b) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    return a == b


def _show(v) -> str:
    if v is ABSENT:
        return "<absent>"
    s = repr(v)
    return s if len(s) < 80 else s[:77] + "..."
