"""Start, probe and stop real `secureconf` cluster nodes (plain Python, no pytest).

Each node runs `secureconf serve` in its own working directory with a clean environment
(no inherited OSC_* variables), on a loopback port picked by binding port 0, with its
stdout/stderr in `<dir>/stderr.log` and its log in `<dir>/node.log`. Every process started
here is tracked by a `ProcessRegistry` so that fixtures can kill it even when a test fails.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.netproxy import RecordingProxy, build_fake_clock  # noqa: E402,F401  (shared with the fault suite)
from common.nodeproc import (  # noqa: E402  (shared by every suite that runs real nodes)
    REPO_ROOT, NodeCrashed, NodeProcess, ProcessRegistry, binary_snapshot, crashed_thread, free_ports, signal_group,
    token, wait_until,
)
from common.nodeproc import clean_environment as base_environment  # noqa: E402,F401


def secureconf_binary() -> Path:
    """The session's private copy of the binary (a rebuild during the run cannot mix two builds)."""
    return binary_snapshot()


# Short intervals so that a test sees several health/sync rounds in a few seconds.
SYNC_INTERVAL = 1.0
HEALTH_INTERVAL = 0.5
PEER_TIMEOUT = 2.0

# Generous: a user key's first request runs PBKDF2 (480,000 rounds) on a lowered-priority
# thread, which a busy machine can delay by seconds. Waits for cluster behaviour have
# their own deadlines.
REQUEST_TIMEOUT = 30.0

# Short crash reports: only the crashing thread, so a crashed node exits in a second.
BACKTRACE_SETTINGS = "enable=yes,interactive=no,preset=full,unwind=precise,threads=crashed,registers=none,images=none,color=no"


class Node(NodeProcess):
    """One `secureconf serve` process of a cluster (its output in `<dir>/stderr.log`)."""

    def __init__(self, registry: ProcessRegistry, workdir: Path, port: int, env: dict[str, str], api_key: str | None):
        super().__init__(workdir, port, env, binary=secureconf_binary(), log_name="stderr.log", registry=registry)
        self.api_key = api_key
        self._local = threading.local()

    @property
    def salt_path(self) -> Path:
        return Path(self.env["OSC_SALT_FILE_PATH"])

    @property
    def stderr_path(self) -> Path:
        return self.log_path

    def salt_bytes(self) -> bytes | None:
        try:
            return self.salt_path.read_bytes()
        except FileNotFoundError:
            return None

    def output(self, tail: int = 4000) -> str:
        return self.log_text(tail=tail)

    def start(self) -> "Node":
        self.launch()
        self._local = threading.local()
        return self

    def wait_up(self, timeout: float = 30.0) -> None:
        """Until GET /health answers 200 (the HTTP server runs, the salt is settled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self} did not answer /health within {timeout}s:\n{self.output()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.kill()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not stop in time)."""
        assert self.proc is not None
        return super().stop(timeout)

    # -- HTTP

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            self._local.session = s
        return s

    def request(self, method: str, path: str, user_key: str | None = None, api_key: str | None = "default",
                timeout: float = REQUEST_TIMEOUT, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        key = self.api_key if api_key == "default" else api_key
        if key is not None:
            headers["X-API-Key"] = key
        if user_key is not None:
            headers["X-User-Key"] = user_key
        return self._session().request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)

    def warm(self, user_key: str) -> None:
        """Derives (and caches) the user key on this node, so that later requests are not
        timed with a PBKDF2 run in them."""
        r = self.request("GET", "/configs", user_key)
        assert r.status_code in (200, 401), (r.status_code, r.text)

    def status(self) -> dict:
        r = self.request("GET", "/cluster/status")
        r.raise_for_status()
        return r.json()

    def a_peer(self) -> str:
        """A node id this node lists as its peer (what a signed request may claim to be)."""
        return next(n for n in self.env["OSC_CLUSTER_NODES"].split(",") if n != self.node_id)

    def digest(self) -> dict:
        secret = self.env.get("OSC_CLUSTER_SECRET")
        if secret:
            r = peer_request(self, secret, self.a_peer(), "GET", "/cluster/digest")
        else:
            r = self.request("GET", "/cluster/digest")
        r.raise_for_status()
        return r.json()

    def create(self, user_key: str, key: str, value, **extra) -> requests.Response:
        return self.request("POST", "/configs", user_key, json={"key": key, "value": value, **extra})

    def read(self, user_key: str, key: str, **params) -> requests.Response:
        return self.request("GET", f"/configs/{key}", user_key, params=params or None)

    def update(self, user_key: str, key: str, value) -> requests.Response:
        return self.request("PUT", f"/configs/{key}", user_key, json={"value": value})

    def delete(self, user_key: str, key: str) -> requests.Response:
        return self.request("DELETE", f"/configs/{key}", user_key)

    def metric(self, name: str) -> list[tuple[str, float]]:
        """(labels, value) for every sample of `name` in /metrics."""
        text = requests.get(self.url + "/metrics", timeout=REQUEST_TIMEOUT).text
        out = []
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                head, _, value = line.rpartition(" ")
                out.append((head[len(name):], float(value)))
        return out


class Cluster:
    """A set of nodes that know each other (OSC_CLUSTER_NODES lists all of them)."""

    def __init__(self, nodes: list[Node], api_key: str, mode: str):
        self.nodes = nodes
        self.api_key = api_key
        self.mode = mode

    def __iter__(self):
        return iter(self.nodes)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def start(self) -> "Cluster":
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_up()
        return self

    def wait_healthy(self, timeout: float = 10.0) -> float:
        """Until every node reports healthy_nodes == total; returns the seconds it took."""
        started = time.monotonic()
        total = len(self.nodes)

        def all_healthy():
            for n in self.nodes:
                n.check_alive()
            return all(n.status()["healthy_nodes"] == total for n in self.nodes)

        wait_until(all_healthy, timeout, what=f"healthy_nodes == {total} on {self.nodes}")
        return time.monotonic() - started

    def warm(self, *user_keys: str) -> None:
        """Every user key derived on every node, in parallel."""
        threads = [threading.Thread(target=n.warm, args=(k,)) for n in self.nodes for k in user_keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT + 5)

    def digests(self) -> list[str]:
        return [n.digest()["digest"] for n in self.nodes]

    def wait_converged(self, timeout: float = 15.0) -> float:
        started = time.monotonic()
        wait_until(lambda: len(set(self.digests())) == 1, timeout, what="equal /cluster/digest on every node")
        return time.monotonic() - started


class ClusterFactory:
    """Builds clusters in a temp directory; every process goes into one registry."""

    def __init__(self, root: Path, registry: ProcessRegistry):
        self.root = root
        self.registry = registry
        self.nodes: list[Node] = []
        self._count = 0

    def node(self, workdir: Path, port: int, env: dict[str, str], api_key: str | None) -> Node:
        n = Node(self.registry, workdir, port, env, api_key)
        self.nodes.append(n)
        return n

    def crashes(self) -> list[str]:
        return [f"{n} crashed:\n{report}" for n in self.nodes if (report := n.crashes())]

    def node_env(self, workdir: Path, port: int, nodes: list[str], api_key: str | None, mode: str = "replica",
                 extra: dict[str, str] | None = None) -> dict[str, str]:
        env = base_environment()
        env.update({
            "OSC_HOST": "127.0.0.1",
            "OSC_HOST_PORT": str(port),
            "OSC_DATABASE_PATH": str(workdir / "configurations.db"),
            "OSC_SALT_FILE_PATH": str(workdir / "encryption.salt"),
            "OSC_CLUSTER_ENABLED": "true",
            "OSC_CLUSTER_MODE": mode,
            "OSC_CLUSTER_NODE_ID": f"127.0.0.1:{port}",
            "OSC_CLUSTER_NODES": ",".join(nodes),
            "OSC_CLUSTER_SYNC_INTERVAL": str(SYNC_INTERVAL),
            "OSC_CLUSTER_HEALTH_INTERVAL": str(HEALTH_INTERVAL),
            "OSC_CLUSTER_PEER_TIMEOUT": str(PEER_TIMEOUT),
            "OSC_LOG_LEVEL": "INFO",
            "OSC_LOG_FILE": str(workdir / "node.log"),
            "SWIFT_BACKTRACE": BACKTRACE_SETTINGS,
        })
        if api_key is not None:
            env["OSC_API_KEY_REQUIRED"] = "true"
            env["OSC_API_KEY"] = api_key
        if extra:
            env.update(extra)
        return env

    def workdir(self, label: str) -> Path:
        self._count += 1
        d = self.root / f"{self._count:02d}-{label}"
        d.mkdir(parents=True)
        return d

    def cluster(self, n: int = 3, mode: str = "replica", extra_env: dict[str, str] | None = None) -> Cluster:
        """n nodes listing each other, started from empty directories, all answering /health."""
        api_key = token("cluster-api-")
        ports = free_ports(n)
        ids = [f"127.0.0.1:{p}" for p in ports]
        nodes = []
        for i, port in enumerate(ports):
            wd = self.workdir(f"{mode}-node{i}")
            nodes.append(self.node(wd, port, self.node_env(wd, port, ids, api_key, mode, extra_env), api_key))
        return Cluster(nodes, api_key, mode).start()


# -- the peer credential, as a node signs (SecureConfCluster/PeerCredential.swift)

import hashlib  # noqa: E402
import hmac  # noqa: E402


def _signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"secureconf peer signing v1", hashlib.sha256).digest()


def sign_request(secret: str, method: str, path: str, receiver: str, sender: str, body: bytes = b"",
                 time_ms: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """The headers a node sends with a signed node-to-node request."""
    time_ms = int(time.time() * 1000) if time_ms is None else time_ms
    nonce = secrets.token_hex(16) if nonce is None else nonce
    message = "\n".join(["secureconf-request-v1", method, path, receiver, sender, str(time_ms), nonce,
                         hashlib.sha256(body).hexdigest()])
    signature = "v1=" + hmac.new(_signing_key(secret), message.encode(), hashlib.sha256).hexdigest()
    return {"X-SecureConf-Peer": sender, "X-SecureConf-Time": str(time_ms), "X-SecureConf-Nonce": nonce,
            "X-SecureConf-Signature": signature, "X-SecureConf-Content-SHA256": hashlib.sha256(body).hexdigest()}


def response_signature(secret: str, nonce: str, status: int, responder: str, body: bytes) -> str:
    message = "\n".join(["secureconf-response-v1", nonce, str(status), responder, hashlib.sha256(body).hexdigest()])
    return "v1=" + hmac.new(_signing_key(secret), message.encode(), hashlib.sha256).hexdigest()


def peer_request(node: Node, secret: str, sender: str, method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None, **sign_kwargs) -> requests.Response:
    """A node-to-node request to `node`, signed as `sender` with `secret`."""
    h = sign_request(secret, method, path, node.node_id, sender, body, **sign_kwargs)
    if body:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    return requests.request(method, node.url + path, data=body or None, headers=h, timeout=REQUEST_TIMEOUT)
