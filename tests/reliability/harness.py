"""Start, kill and probe real `secureconf` processes for the reliability suite.

Plain Python (no pytest) so a developer can use it from a REPL:

    from harness import Node, binary_snapshot
    node = Node(Path("/tmp/x"), binary=binary_snapshot())
    node.start(); print(node.url); node.stop()

Every node runs `secureconf serve` in its own working directory with a clean environment
(no inherited OSC_* variables), listening on 127.0.0.1 only, with stdout and stderr in
`<workdir>/node.log`. Nothing here ever signals a process it did not start.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

USER_KEY = "reliability-user-key-0001"

QUICK = os.environ.get("RELIABILITY_QUICK", "") not in ("", "0", "false")


def budget(default: int, quick: int) -> int:
    return quick if QUICK else default


def busy_machine() -> str | None:
    """A reason when the machine is too loaded for wall-clock limits to mean anything
    (others' builds and tests share it), else None."""
    load1 = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load1 > 2 * cpus:
        return f"load average {load1:.1f} on {cpus} cores"
    return None


_UNSET = object()


def judge_time(measured: float, limit: float, what: str, hard_limit: float | None = None, busy=_UNSET) -> None:
    """Fails when `measured` > `limit` on a machine that is not overloaded; on an overloaded one
    only logs (RELIABILITY_STRICT_TIMING=1 judges anyway), still failing past `hard_limit`.
    `busy`: the overload reason taken before the test put its own load on the machine (by
    default, the state now)."""
    if measured <= limit:
        return
    if busy is _UNSET:
        busy = busy_machine()
    if busy and not os.environ.get("RELIABILITY_STRICT_TIMING") and (hard_limit is None or measured <= hard_limit):
        log(f"NOT JUDGED: {what} took {measured:.2f} (limit {limit}) but the machine is overloaded ({busy}); "
            f"RELIABILITY_STRICT_TIMING=1 judges it anyway")
        return
    raise AssertionError(f"{what}: {measured:.2f} over the limit {limit} ({busy or 'machine not overloaded'})")


def log(msg: str) -> None:
    """What a scenario tried and what held: printed so that `pytest -s` (run.sh) shows it."""
    print(f"[reliability] {msg}", flush=True)


# ---- the binary, ports, environments: the module every real-process suite shares -----------

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.nodeproc import NodeProcess, NodeStartError, binary_path, binary_snapshot, free_port  # noqa: E402,F401
from common.nodeproc import apply_overrides, clean_environment as clean_env  # noqa: E402


def binary_variables(binary: Path) -> set[str]:
    out = subprocess.run([str(binary), "variables", "--names-only"], capture_output=True, text=True, timeout=30)
    return set(out.stdout.split())


class Node(NodeProcess):
    """One node: a working directory, a port and an environment, started and stopped many times
    (its output in `<workdir>/node.log`)."""

    def __init__(self, workdir: Path, *, binary: Path, env: dict[str, str] | None = None,
                 data_dir: Path | None = None, port: int | None = None, preexec_fn=None):
        workdir = Path(workdir)
        self.data_dir = Path(data_dir) if data_dir else workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        full_env = clean_env()
        full_env.update({
            "OSC_HOST": "127.0.0.1",
            "OSC_HOST_PORT": str(port),
            "OSC_DATABASE_PATH": str(self.data_dir / "configurations.db"),
            "OSC_SALT_FILE_PATH": str(self.data_dir / "encryption.salt"),
            "OSC_LOG_LEVEL": "WARNING",
        })
        super().__init__(workdir, port, apply_overrides(full_env, env), binary=binary, log_name="node.log", preexec_fn=preexec_fn)

    @property
    def db_path(self) -> Path:
        return Path(self.env["OSC_DATABASE_PATH"])

    @property
    def salt_path(self) -> Path:
        return Path(self.env["OSC_SALT_FILE_PATH"])

    def wait_ready(self, t0: float, timeout: float = 120.0) -> float:
        return super().wait_ready(t0, timeout)

    def start(self, timeout: float = 120.0) -> float:
        return super().start(timeout)

    # ---- HTTP ----------------------------------------------------------------------------

    def get(self, path: str, user_key: str | None = USER_KEY, timeout: float = 60, **kw) -> requests.Response:
        h = kw.pop("headers", {})
        if user_key is not None:
            h["X-User-Key"] = user_key
        return requests.get(self.url + path, headers=h, timeout=timeout, **kw)

    def post(self, key: str, value, user_key: str = USER_KEY, timeout: float = 60, **body) -> requests.Response:
        return requests.post(self.url + "/configs", json={"key": key, "value": value, **body},
                             headers={"X-User-Key": user_key}, timeout=timeout)

    def put(self, key: str, value, user_key: str = USER_KEY, timeout: float = 60) -> requests.Response:
        return requests.put(self.url + f"/configs/{key}", json={"value": value},
                            headers={"X-User-Key": user_key}, timeout=timeout)

    def list_all(self, user_key: str = USER_KEY) -> dict[str, object]:
        r = self.get("/configs", user_key=user_key, timeout=120)
        if r.status_code == 401:  # nothing decryptable (empty store answers [] but be lenient)
            return {}
        r.raise_for_status()
        return {e["key"]: e["value"] for e in r.json()}


class NodeSet:
    """Every node a test started; `close()` stops those still running (SIGTERM, then SIGKILL)."""

    def __init__(self, root: Path, binary: Path):
        self.root = Path(root)
        self.binary = binary
        self.nodes: list[Node] = []

    def new(self, name: str | None = None, **kw) -> Node:
        node = Node(self.root / (name or f"node{len(self.nodes) + 1}"), binary=self.binary, **kw)
        self.nodes.append(node)
        return node

    def close(self) -> list[str]:
        problems = []
        for n in self.nodes:
            if n.alive():
                rc = n.stop()
                if rc != 0:
                    problems.append(f"node on port {n.port} exited {rc} on SIGTERM; log tail:\n{n.log_text()[-2000:]}")
        return problems


# ---- SQLite ---------------------------------------------------------------------------------

def integrity_check(db: Path) -> str:
    """PRAGMA integrity_check on a database whose node is stopped; 'ok' when sound."""
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=10)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return "; ".join(str(r[0]) for r in rows)


def integrity_check_copy(db: Path, scratch: Path) -> str:
    """integrity_check on a copy of db (+ -wal, -shm) so the original crash state is left to
    the node's own recovery."""
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(db) + suffix)
        if src.exists():
            shutil.copy2(src, scratch / (db.name + suffix))
    return integrity_check(scratch / db.name)


# ---- raw HTTP -------------------------------------------------------------------------------

@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class NoResponse(Exception):
    """The server closed the connection without a status line."""


def read_response(s: socket.socket, deadline: float) -> RawResponse:
    buf = b""
    while b"\r\n\r\n" not in buf:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            if buf.startswith(b"HTTP/"):
                break
            raise NoResponse(buf[:200])
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return RawResponse(status, headers, rest)
    while len(rest) < length:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])


def raw_request(port: int, data: bytes, timeout: float = 10.0, half_close: bool = False) -> RawResponse:
    """Sends `data` as-is on a new connection and reads one response.

    Raises NoResponse when the server closes without answering and socket.timeout on a hang.
    A server that answers and closes before it has read everything we send (an early 413)
    is fine: a send error is ignored and the response read."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return read_response(s, deadline)
        except ConnectionResetError as e:
            raise NoResponse(f"reset: {e}") from e


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]
