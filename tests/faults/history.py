"""Concurrent clients that record every operation, and the checker of the README's promises.

Each operation is recorded when invoked and when it completes, with one of three outcomes:
`ok` (acknowledged), `fail` (refused: nothing was written), `unknown` (no answer, or 503 "write
quorum not reached": the write is committed on the node that took it and may still spread).
The workload, per writer process p (each operation sent to a node chosen at random, as a client
that retries elsewhere would):

- creates of unique keys `<scenario>-c-<p>-<n>`;
- updates of p's own register `<scenario>-r-<p>` with `p:<n>`, n increasing (one writer per
  register, so its acknowledged order is the order its values must keep);
- deletes of p's acknowledged creates, each followed by a read of that key on the same node.

Readers, each bound to one node, read the registers in turn. After the faults heal and the
nodes converge, `check` verifies:

1. every acknowledged create is present on every node with the value sent (unless a delete of
   it was attempted), and a refused one nowhere;
2. every acknowledged delete holds on every node, and a read after it on the same node was 404
   (a delete is never undone by a peer);
3. every register's final value, on every node, comes from a write that was not refused, and
   is not an acknowledged write that another acknowledged write followed in real time (an
   acknowledged write is never lost nor beaten by an earlier one);
4. a reader never sees a register's versions go backwards (by `updated_at`, which a write
   never moves back: the node's order of a key's versions), nor a value no write attempted;
5. while a node is cut off from the others, no write sent to it is acknowledged (majority);
6. no answer is a 5xx other than 503, and every node holds the same data.

An `unknown` write may take effect at any time after it was invoked, even after its client
gave up: a node paused with SIGSTOP answers the requests queued in its socket when it resumes,
so such a write can land after later acknowledged ones and be the register's newest version.
That is allowed (its client never had an answer); an acknowledged write landing out of order
is not.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

REQUEST_TIMEOUT = 6.0


@dataclass
class Op:
    process: str
    node: int
    kind: str  # create | update | delete | read
    key: str
    value: str | None
    invoked: float
    completed: float = 0.0
    outcome: str = "unknown"  # ok | fail | unknown
    status: int | None = None
    detail: str = ""
    seen: str | None = None  # a read's value (None: 404)
    seen_at: str | None = None  # its updated_at: the node's order of a key's versions


@dataclass
class Window:
    """A fault in force on `node` (or the whole cluster when None) between two instants."""
    name: str
    start: float
    end: float = float("inf")
    isolated: int | None = None


class History:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.windows: list[Window] = []
        self._lock = threading.Lock()

    def record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for w in self.windows:
                f.write(json.dumps({"window": asdict(w)}, default=str) + "\n")
            for op in sorted(self.ops, key=lambda o: o.invoked):
                f.write(json.dumps(asdict(op)) + "\n")

    def refusals(self) -> dict[str, int]:
        """Why writes were refused: status and detail, with counts."""
        out: dict[str, int] = {}
        for o in self.ops:
            if o.kind != "read" and o.outcome == "fail":
                reason = f"{o.status or '-'} {o.detail[:60]}"
                out[reason] = out.get(reason, 0) + 1
        return out

    def counts(self) -> dict[str, int]:
        writes = [o for o in self.ops if o.kind != "read"]
        return {
            "writes": len(writes),
            "acknowledged": sum(o.outcome == "ok" for o in writes),
            "refused": sum(o.outcome == "fail" for o in writes),
            "unknown": sum(o.outcome == "unknown" for o in writes),
            "reads": sum(o.kind == "read" for o in self.ops),
        }


class Client:
    """HTTP to the nodes, one session per thread."""

    def __init__(self, urls: list[str], api_key: str, user_key: str):
        self.urls = urls
        self.api_key = api_key
        self.user_key = user_key
        self._local = threading.local()

    def session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s

    def call(self, node: int, method: str, path: str, **kw) -> requests.Response:
        headers = {"X-API-Key": self.api_key, "X-User-Key": self.user_key}
        return self.session().request(method, self.urls[node] + path, headers=headers, timeout=REQUEST_TIMEOUT, **kw)


def never_sent(error: Exception | None) -> bool:
    """The connection was never made (refused, or no route): the node saw nothing."""
    text = repr(error)
    return isinstance(error, requests.exceptions.ConnectTimeout) or "NewConnectionError" in text or "Connection refused" in text


def classify(op: Op, response: requests.Response | None, error: Exception | None) -> None:
    op.completed = time.monotonic()
    if response is None:
        op.outcome = "fail" if never_sent(error) else "unknown"
        op.detail = type(error).__name__ + (" (never sent)" if op.outcome == "fail" else "")
        return
    op.status = response.status_code
    try:
        op.detail = str(response.json().get("detail", ""))[:200]
    except ValueError:
        op.detail = response.text[:200]
    if op.kind == "read":
        if response.status_code == 200:
            body = response.json()
            op.outcome, op.seen, op.seen_at = "ok", json.dumps(body.get("value")), body.get("updated_at")
        elif response.status_code == 404:
            op.outcome, op.seen = "ok", None
        else:
            op.outcome = "fail" if response.status_code < 500 or response.status_code == 503 else "unknown"
        return
    if 200 <= response.status_code < 300:
        op.outcome = "ok"
    elif response.status_code == 503 and "quorum" in op.detail.lower():
        op.outcome = "unknown"  # committed on that node, in its outbox
    elif response.status_code < 500 or response.status_code == 503:
        op.outcome = "fail"
    else:
        op.outcome = "unknown"


def _value(s: str) -> str:
    return json.dumps(s)


@dataclass
class Workload:
    scenario: str
    client: Client
    history: History
    nodes: int
    writers: int = 4
    readers: int = 3
    pause: float = 0.02
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    register_values: dict[str, set[str]] = field(default_factory=dict)

    def register(self, p: int) -> str:
        return f"{self.scenario}-r-{p}"

    def _op(self, process: str, node: int, kind: str, key: str, value: str | None) -> Op:
        op = Op(process, node, kind, key, value, time.monotonic())
        response, error = None, None
        try:
            if kind == "create":
                response = self.client.call(node, "POST", "/configs", json={"key": key, "value": value})
            elif kind == "update":
                response = self.client.call(node, "PUT", f"/configs/{key}", json={"value": value})
            elif kind == "delete":
                response = self.client.call(node, "DELETE", f"/configs/{key}")
            else:
                response = self.client.call(node, "GET", f"/configs/{key}")
        except requests.RequestException as e:
            error = e
        classify(op, response, error)
        self.history.record(op)
        return op

    def setup(self) -> None:
        """Each register created (acknowledged) before any fault."""
        for p in range(self.writers):
            key, value = self.register(p), f"{p}:0"
            self.register_values[key] = {_value(value)}
            for attempt in range(20):
                op = self._op(f"w{p}", attempt % self.nodes, "create", key, value)
                if op.outcome == "ok" or (op.status == 400 and "exist" in op.detail):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"could not create {key}: {op}")

    def _writer(self, p: int) -> None:
        rng = random.Random(f"{self.scenario}-{p}")
        n = 0
        created: list[str] = []
        while not self.stop.is_set():
            node = rng.randrange(self.nodes)
            roll = rng.random()
            n += 1
            if roll < 0.5:
                key = f"{self.scenario}-c-{p}-{n}"
                op = self._op(f"w{p}", node, "create", key, f"c{p}:{n}")
                if op.outcome == "ok":
                    created.append(key)
            elif roll < 0.85 or not created:
                key, value = self.register(p), f"{p}:{n}"
                self.register_values[key].add(_value(value))
                self._op(f"w{p}", node, "update", key, value)
            else:
                key = created.pop(rng.randrange(len(created)))
                op = self._op(f"w{p}", node, "delete", key, None)
                if op.outcome == "ok":
                    self._op(f"w{p}", node, "read", key, None)
            time.sleep(self.pause)

    def _reader(self, r: int) -> None:
        node = r % self.nodes
        i = 0
        while not self.stop.is_set():
            self._op(f"r{r}", node, "read", self.register(i % self.writers), None)
            i += 1
            time.sleep(self.pause)

    def start(self) -> None:
        for p in range(self.writers):
            self.threads.append(threading.Thread(target=self._writer, args=(p,), daemon=True))
        for r in range(self.readers):
            self.threads.append(threading.Thread(target=self._reader, args=(r,), daemon=True))
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(REQUEST_TIMEOUT + 5)


def check(history: History, workload: Workload, states: list[dict[str, str]]) -> list[str]:
    """Violations (empty: the history satisfies every promise). `states`: per node, key → value
    JSON text of every live key of the scenario."""
    problems: list[str] = []
    ops = sorted(history.ops, key=lambda o: o.invoked)
    by_key: dict[str, list[Op]] = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)

    for o in ops:
        if o.status is not None and o.status >= 500 and o.status != 503:
            problems.append(f"server error {o.status} ({o.detail}) for {o.kind} {o.key} on node {o.node}")

    # 6: identical data
    for i, s in enumerate(states[1:], start=1):
        if s != states[0]:
            diff = sorted(k for k in set(s) | set(states[0]) if s.get(k) != states[0].get(k))
            problems.append(f"node {i} differs from node 0 on {len(diff)} keys, e.g. {diff[:5]}")

    for key, key_ops in by_key.items():
        creates = [o for o in key_ops if o.kind == "create"]
        deletes = [o for o in key_ops if o.kind == "delete"]
        writes = [o for o in key_ops if o.kind == "update"]
        is_register = key in workload.register_values
        for n, state in enumerate(states):
            present = state.get(key)
            if not is_register:
                # 1 and 2
                ok_create = next((o for o in creates if o.outcome == "ok"), None)
                ok_delete = next((o for o in deletes if o.outcome == "ok"), None)
                tried_delete = any(o.outcome != "fail" for o in deletes)  # a refused delete changed nothing
                if ok_delete is not None:
                    if present is not None:
                        problems.append(f"{key}: deleted (acknowledged by node {ok_delete.node}) but present on node {n}")
                elif ok_create is not None and not tried_delete:
                    if present is None:
                        problems.append(f"{key}: acknowledged create by node {ok_create.node} lost on node {n}")
                    elif present != _value(ok_create.value):
                        problems.append(f"{key}: node {n} holds {present}, acknowledged {ok_create.value}")
                elif creates and all(o.outcome == "fail" for o in creates) and present is not None:
                    problems.append(f"{key}: create refused ({creates[0].status} {creates[0].detail}) yet present on node {n}")
            else:
                # 3
                attempted = workload.register_values[key]
                sources = [o for o in writes + creates if _value(o.value) == present]
                if present is None:
                    problems.append(f"{key}: register missing on node {n}")
                elif present not in attempted:
                    problems.append(f"{key}: node {n} holds {present}, which no write attempted")
                elif sources and all(o.outcome == "fail" for o in sources):
                    problems.append(f"{key}: node {n} holds {present}, from a refused write")
                elif sources and all(o.outcome == "ok" for o in sources):
                    source = sources[0]
                    later = next((o for o in writes if o.outcome == "ok" and o.invoked > source.completed), None)
                    if later is not None:
                        problems.append(f"{key}: node {n} holds {present}, older than acknowledged {later.value} written after it")
        # 2: the read right after an acknowledged delete, on the same node
        for d in deletes:
            if d.outcome != "ok":
                continue
            after = next((o for o in key_ops if o.kind == "read" and o.invoked >= d.completed and o.process == d.process), None)
            if after is not None and after.outcome == "ok" and after.seen is not None:
                problems.append(f"{key}: read on node {after.node} after its acknowledged delete returned {after.seen}")

    # 4: monotonic reads per reader
    last: dict[tuple[str, str], tuple[str, str]] = {}
    for o in ops:
        if o.kind != "read" or o.outcome != "ok" or o.key not in workload.register_values:
            continue
        if o.seen is None:
            problems.append(f"{o.key}: register not found on node {o.node} by {o.process}")
            continue
        if o.seen not in workload.register_values[o.key]:
            problems.append(f"{o.key}: {o.process} read {o.seen} on node {o.node}, which no write attempted")
            continue
        prev = last.get((o.process, o.key))
        if prev is not None and o.seen_at is not None and o.seen_at < prev[0]:
            problems.append(f"{o.key}: {o.process} on node {o.node} read {o.seen} ({o.seen_at}) after {prev[1]} ({prev[0]}): went backwards")
        if o.seen_at is not None and (prev is None or o.seen_at >= prev[0]):
            last[(o.process, o.key)] = (o.seen_at, o.seen)

    # 5: a node cut off acknowledges no write invoked while it was cut off
    for w in history.windows:
        if w.isolated is None:
            continue
        for o in ops:
            if o.kind != "read" and o.node == w.isolated and o.outcome == "ok" and w.start <= o.invoked and o.completed <= w.end:
                problems.append(f"{o.key}: node {o.node} acknowledged a {o.kind} while cut off from the majority ({w.name})")
    return problems
