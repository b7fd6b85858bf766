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
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO_ROOT = Path(__file__).resolve().parents[2]

# The default OpenSecureConf PBKDF2 iteration count; the compat tests never change it.
KDF_ITERATIONS = 480_000

# User keys are reused across tests: every new key costs one PBKDF2 run (480k rounds) per node.
USER_KEY = "compat-user-key-0001"
OTHER_USER_KEY = "compat-user-key-0002"


from common.nodeproc import NodeProcess, NodeStartError, binary_path as secureconf_binary, free_port  # noqa: E402,F401
from common.nodeproc import clean_environment as base_environment  # noqa: E402
from common.nodeproc import token as random_token  # noqa: E402,F401


class Node(NodeProcess):
    """One `secureconf serve` process (its output in `<dir>/stderr.log`)."""

    def __init__(self, workdir: Path, port: int, env: dict[str, str], args: list[str], api_key: str | None = None):
        super().__init__(workdir, port, env, args=args, log_name="stderr.log")
        self.api_key = api_key

    @property
    def exit_code(self) -> int | None:
        return self.returncode

    @property
    def db_path(self) -> Path:
        return Path(self.env.get("OSC_DATABASE_PATH") or self.workdir / "data" / "configurations.db")

    @property
    def salt_path(self) -> Path:
        return Path(self.env.get("OSC_SALT_FILE_PATH") or self.workdir / "data" / "encryption.salt")

    @property
    def stderr_path(self) -> Path:
        return self.log_path

    def stderr_text(self) -> str:
        return self.log_text()

    def wait_ready(self, timeout: float = 30.0) -> None:
        super().wait_ready(timeout=timeout)

    def wait_exit(self, timeout: float) -> int:
        """The exit code; subprocess.TimeoutExpired if the node still runs after `timeout`."""
        code = super().wait_exit(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(str(self.binary or secureconf_binary()), timeout)
        return code

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
                node.kill()
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
