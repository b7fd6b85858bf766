"""Start, probe and stop real `secureconf` processes for the compatibility suite.

Everything here is plain Python (no pytest), so the client-specific tests, the node
tests and a developer at a REPL can all use it:

    from harness import NodeFactory
    with NodeFactory("/tmp/x") as nodes:
        node = nodes.start()
        print(node.url)

A node runs `secureconf serve` in its own working directory with a clean environment
(no inherited OSC_* variables), on a port picked by ephemeral allocation, with stderr
captured to `<dir>/stderr.log`. `stop()` sends SIGTERM and returns the exit code.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# The default OpenSecureConf PBKDF2 iteration count; the compat tests never change it.
KDF_ITERATIONS = 480_000

# User keys are reused across tests: every new key costs one PBKDF2 run (480k rounds) per node.
USER_KEY = "compat-user-key-0001"
OTHER_USER_KEY = "compat-user-key-0002"


def secureconf_binary() -> Path:
    """SECURECONF_BIN, else the release build if present, else the debug build."""
    explicit = os.environ.get("SECURECONF_BIN")
    if explicit:
        return Path(explicit)
    release = REPO_ROOT / ".build" / "release" / "secureconf"
    if release.exists():
        return release
    return REPO_ROOT / ".build" / "debug" / "secureconf"


def free_port() -> int:
    """A port the kernel just handed out as ephemeral and that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_token(prefix: str = "", n: int = 12) -> str:
    """A distinctive random string (letters and digits only) that cannot occur by chance."""
    return prefix + secrets.token_hex(n)


def base_environment() -> dict[str, str]:
    """The parent environment minus every OSC_* variable, so only what a test sets applies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSC_")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # Every first use of a new user key that decrypts nothing counts as a failed attempt, and
    # the suites use many fresh keys from 127.0.0.1: the limiter gets a budget to match here
    # (tests of the limiter set their own).
    env["OSC_AUTH_FAILURE_LIMIT"] = "100000"
    return env


class NodeStartError(RuntimeError):
    pass


@dataclass
class Node:
    """One `secureconf serve` process."""

    workdir: Path
    port: int
    env: dict[str, str]
    args: list[str]
    api_key: str | None = None
    proc: subprocess.Popen | None = None
    exit_code: int | None = None
    _stderr_file: object | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return Path(self.env.get("OSC_DATABASE_PATH") or self.workdir / "data" / "configurations.db")

    @property
    def salt_path(self) -> Path:
        return Path(self.env.get("OSC_SALT_FILE_PATH") or self.workdir / "data" / "encryption.salt")

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [str(secureconf_binary()), "serve", *self.args],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr_file,
            stderr=self._stderr_file,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Polls GET /health until 200; raises NodeStartError if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_stderr()
                self.exit_code = self.proc.returncode
                raise NodeStartError(
                    f"secureconf exited with {self.proc.returncode} before becoming ready; stderr:\n{self.stderr_text()}"
                )
            try:
                r = requests.get(self.url + "/health", timeout=1)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise NodeStartError(f"secureconf not ready after {timeout}s; stderr:\n{self.stderr_text()}")

    def wait_exit(self, timeout: float) -> int:
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        finally:
            self._close_stderr()
        return self.exit_code

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL and -9 after `timeout`)."""
        if self.proc is None:
            return self.exit_code if self.exit_code is not None else 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_code = -9
                self._close_stderr()
                return -9
        self.exit_code = self.proc.returncode
        self._close_stderr()
        return self.exit_code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    # ---- HTTP helpers -------------------------------------------------------

    def headers(self, user_key: str | None = USER_KEY, api_key: str | None = "auto", **extra: str) -> dict[str, str]:
        h: dict[str, str] = {}
        if user_key is not None:
            h["X-User-Key"] = user_key
        if api_key == "auto":
            api_key = self.api_key
        if api_key is not None:
            h["X-API-Key"] = api_key
        h.update(extra)
        return h

    def request(self, method: str, path: str, *, user_key: str | None = USER_KEY, api_key: str | None = "auto",
                timeout: float = 15, **kwargs) -> requests.Response:
        headers = self.headers(user_key, api_key, **kwargs.pop("headers", {}))
        return requests.request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)

    def create(self, key: str, value, category: str | None = None, environment: str | None = None,
               user_key: str = USER_KEY) -> requests.Response:
        body = {"key": key, "value": value}
        if category is not None:
            body["category"] = category
        if environment is not None:
            body["environment"] = environment
        return self.request("POST", "/configs", json=body, user_key=user_key)

    def metrics_text(self) -> str:
        r = requests.get(self.url + "/metrics", timeout=10)
        r.raise_for_status()
        return r.text


class NodeFactory:
    """Starts nodes in sub-directories of `root` and stops every one still running on close.

    `close()` returns a list of problems (a node that did not exit 0 on SIGTERM) so the
    pytest fixture can fail the test that owned it.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.nodes: list[Node] = []
        self._count = 0

    def __enter__(self) -> "NodeFactory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def prepare(self, *, workdir: Path | None = None, env: dict[str, str] | None = None,
                api_key: str | None = None, port: int | None = None, args: Iterable[str] = (),
                set_port: bool = True, set_paths: bool = True) -> Node:
        """A configured, not yet launched node."""
        self._count += 1
        workdir = Path(workdir) if workdir else self.root / f"node{self._count}"
        workdir.mkdir(parents=True, exist_ok=True)
        full_env = base_environment()
        port = port or free_port()
        if set_port:
            full_env["OSC_HOST_PORT"] = str(port)
        full_env["OSC_HOST"] = "127.0.0.1"
        if set_paths:
            full_env["OSC_DATABASE_PATH"] = str(workdir / "data" / "configurations.db")
            full_env["OSC_SALT_FILE_PATH"] = str(workdir / "data" / "encryption.salt")
        if api_key is not None:
            full_env["OSC_API_KEY_REQUIRED"] = "true"
            full_env["OSC_API_KEY"] = api_key
        if env:
            for k, v in env.items():
                if v is None:
                    full_env.pop(k, None)
                else:
                    full_env[k] = v
        node = Node(workdir=workdir, port=port, env=full_env, args=list(args), api_key=api_key)
        self.nodes.append(node)
        return node

    def start(self, **kwargs) -> Node:
        """Launches a node and waits until /health answers 200. A port lost to a race is retried."""
        for attempt in range(3):
            node = self.prepare(**kwargs)
            node.launch()
            try:
                node.wait_ready()
                return node
            except NodeStartError as e:
                if "in use" in str(e).lower() and attempt < 2 and "port" not in kwargs:
                    continue
                raise
        raise AssertionError("unreachable")

    def restart(self, node: Node, **overrides) -> Node:
        """A new process on the same working directory, port and environment."""
        if node.alive():
            rc = node.stop()
            assert rc == 0, f"node exited {rc} on SIGTERM"
        env = dict(node.env)
        env.update(overrides)
        new = Node(workdir=node.workdir, port=node.port, env=env, args=node.args, api_key=node.api_key)
        self.nodes.append(new)
        new.launch()
        new.wait_ready()
        return new

    def close(self) -> list[str]:
        problems = []
        for node in self.nodes:
            if node.alive():
                rc = node.stop()
                if rc != 0:
                    problems.append(f"node on port {node.port} exited {rc} on SIGTERM; stderr tail:\n"
                                    + node.stderr_text()[-2000:])
            else:
                node._close_stderr()
        return problems


# ---- Encryption (the OpenSecureConf scheme, in Python, for cross-checking) -------------

def fernet_for(user_key: str, salt: bytes, iterations: int = KDF_ITERATIONS):
    """The Fernet object OpenSecureConf's EncryptionManager builds for this user key and salt."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(user_key.encode())))


def python_dumps(value) -> str:
    """What OpenSecureConf encrypts: json.dumps with Python's defaults."""
    return json.dumps(value)


# ---- Raw HTTP, for requests `requests` refuses to send --------------------------------

@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def raw_http(port: int, data: bytes, *, timeout: float = 10.0, half_close: bool = False) -> RawResponse | None:
    """Sends `data` as-is on a new connection and parses the first response (None if the
    server closed the connection without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return None if not buf else _parse_raw(buf, s)
            buf += chunk
        return _parse_raw(buf, s)


def _parse_raw(buf: bytes, s: socket.socket) -> RawResponse:
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if "content-length" not in headers and headers.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return RawResponse(status, headers, _dechunk(rest))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out
