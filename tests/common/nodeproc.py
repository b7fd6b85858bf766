"""Real `secureconf serve` processes for every suite: the compatibility, cluster,
reliability and TLS suites all find the binary, pick ports, start, stop and kill nodes,
and collect their logs on failure through this one module (plain Python, no pytest needed).

    from common.nodeproc import NodeProcess, free_port, clean_environment
    node = NodeProcess(Path("/tmp/x"), free_port(), clean_environment())
    node.start(); print(node.url); node.stop()

A node runs in its own working directory with a clean environment (no inherited OSC_*
variables), on 127.0.0.1, with stdout and stderr appended to one log file. Nothing here
ever signals a process it did not start.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- the binary ---------------------------------------------------------------------------

def binary_path() -> Path:
    """SECURECONF_BIN, else the release build if present, else the debug build."""
    explicit = os.environ.get("SECURECONF_BIN")
    if explicit:
        return Path(explicit)
    release = REPO_ROOT / ".build" / "release" / "secureconf"
    if release.exists():
        return release
    return REPO_ROOT / ".build" / "debug" / "secureconf"


_snapshot: Path | None = None


def binary_snapshot(wait: float = 300.0) -> Path:
    """A private copy of the binary, made once per process: a rebuild while a suite runs
    cannot mix two builds in one run (a kill -9 and its restart must run the same code),
    and the moment the file is missing during a rebuild is waited out. The copy's
    directory is world-readable so that a node can also run as an unprivileged user."""
    global _snapshot
    if _snapshot is not None and _snapshot.exists():
        return _snapshot
    src = binary_path()
    deadline = time.monotonic() + wait
    while True:
        try:
            if src.is_file() and os.access(src, os.X_OK):
                d = Path(tempfile.mkdtemp(prefix="secureconf-bin-"))
                atexit.register(shutil.rmtree, d, True)
                os.chmod(d, 0o755)
                dst = d / "secureconf"
                shutil.copy2(src, dst)
                os.chmod(dst, 0o755)
                # A half-written binary (rebuild in progress) fails this; retry.
                subprocess.run([str(dst), "version"], check=True, capture_output=True, timeout=30)
                _snapshot = dst
                return dst
        except (OSError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"secureconf binary not available at {src}; build it or set SECURECONF_BIN")
        time.sleep(2)


# ---- ports, tokens, environments, waiting -------------------------------------------------

def free_ports(n: int) -> list[int]:
    """n distinct loopback ports the kernel handed out for port 0 (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def token(prefix: str = "", n: int = 12) -> str:
    """A distinctive random string (hex) that cannot occur by chance."""
    return prefix + secrets.token_hex(n)


def clean_environment() -> dict[str, str]:
    """The parent environment minus every OSC_* variable, so only what a test sets applies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSC_")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # Every first use of a new user key that decrypts nothing counts as a failed attempt, and
    # the suites use many fresh keys from 127.0.0.1: the limiter gets a budget to match here
    # (tests of the limiter set their own).
    env["OSC_AUTH_FAILURE_LIMIT"] = "100000"
    return env


def apply_overrides(env: dict[str, str], overrides: dict[str, str | None] | None) -> dict[str, str]:
    """`env` with `overrides` applied; a None value removes the variable."""
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
               what: str = "condition") -> object:
    """Polls `predicate` until it returns something truthy; AssertionError at the deadline.

    Exceptions from the predicate (a node still starting, a refused connection) count as
    "not yet"; the last one is reported if the deadline passes. NodeCrashed is raised at once."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except NodeCrashed:
            raise
        except Exception as e:  # noqa: BLE001 - anything is "not yet" until the deadline
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


# ---- processes ----------------------------------------------------------------------------

class NodeStartError(RuntimeError):
    pass


class NodeCrashed(RuntimeError):
    pass


def crashed_thread(report: str) -> str:
    """The interesting part of a Swift crash report: what was logged last, the fatal error,
    and the crashed thread's frames."""
    at = report.find("*** Signal")
    if at < 0:
        at = report.find("Fatal error")
    if at < 0:
        return report[-4000:]
    before = report[max(0, at - 1500):at]
    thread = report.find("crashed:", at)
    frames = report[thread:thread + 5000] if thread >= 0 else report[at:at + 5000]
    return before + report[at:at + 300] + "\n" + frames


def signal_group(p: subprocess.Popen, sig: int) -> None:
    """`sig` to the process group of a node started in its own session."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ProcessRegistry:
    """Every child process a test starts; `kill_all` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.append(proc)

    def kill_all(self, grace: float = 5.0) -> None:
        """SIGTERM to each process group (a node and, after a crash, its backtracer), then SIGKILL."""
        with self._lock:
            procs = list(self._procs)
            self._procs.clear()
        for p in procs:
            signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The group is ours alone (start_new_session): SIGKILL whatever is left in it.
            signal_group(p, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# Every node started in this process, for the failure report (`nodelogs`).
_launched: "weakref.WeakSet[NodeProcess]" = weakref.WeakSet()


def launched_since(mark: float) -> list["NodeProcess"]:
    """Nodes launched at or after the monotonic time `mark`, in launch order."""
    return sorted((n for n in list(_launched) if n.first_launch is not None and n.first_launch >= mark),
                  key=lambda n: n.first_launch)


def running() -> list["NodeProcess"]:
    """Nodes of this process that are running now."""
    return sorted((n for n in list(_launched) if n.alive()), key=lambda n: n.first_launch or 0.0)


class NodeProcess:
    """One node: a working directory, a port and an environment, started and stopped any
    number of times, its output appended to `log_path`. Each run is its own session (process
    group), so that a stop or a kill reaches a crash reporter it spawned too."""

    def __init__(self, workdir: Path, port: int, env: dict[str, str], *, args: list[str] | None = None,
                 binary: Path | None = None, log_name: str = "node.log", registry: ProcessRegistry | None = None,
                 preexec_fn=None, host: str = "127.0.0.1", command_prefix: list[str] | None = None):
        self.workdir = Path(workdir)
        # Where clients reach the node, and what runs it (`ip netns exec NS`, which execs the
        # node itself, so its pid is the node's).
        self.host = host
        self.command_prefix = list(command_prefix or [])
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.env = env
        self.args = list(args or [])
        self.binary = binary
        self.log_path = self.workdir / log_name
        self.registry = registry
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.first_launch: float | None = None
        self._log = None
        self._run_offset = 0

    # -- identity and output

    @property
    def url(self) -> str:
        scheme = "https" if self.env.get("OSC_TLS_CERT_FILE") else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def node_id(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self, tail: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:] if tail else text

    def run_output(self) -> str:
        """The output of the current (or last) run only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._run_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<node {self.node_id}>"

    # -- process

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> float:
        """Starts the process (not waiting); returns the monotonic launch time."""
        assert not self.alive(), f"{self} is already running"
        self._run_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")
        self.returncode = None
        started = time.monotonic()
        if self.first_launch is None:
            self.first_launch = started
        command = [*self.command_prefix, str(self.binary or binary_path()), "serve", *self.args]
        self.proc = subprocess.Popen(command, cwd=self.workdir, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     start_new_session=self.preexec_fn is None, preexec_fn=self.preexec_fn)
        if self.registry is not None:
            self.registry.add(self.proc)
        _launched.add(self)
        return started

    def wait_ready(self, started: float | None = None, timeout: float = 60.0, verify=False) -> float:
        """Polls GET /health until 200; returns seconds from launch. NodeStartError (with the
        log's tail) if the process exits first or the deadline passes."""
        started = started if started is not None else time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                raise NodeStartError(f"secureconf exited with {self.returncode} before becoming ready; "
                                     f"output:\n{self.run_output()[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=1, verify=verify).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise NodeStartError(f"secureconf not ready after {timeout}s; output:\n{self.run_output()[-3000:]}")

    def start(self, timeout: float = 60.0) -> float:
        """Launches and waits for /health; a port taken in the meantime is replaced (twice at most)."""
        for attempt in range(3):
            started = self.launch()
            try:
                return self.wait_ready(started, timeout)
            except NodeStartError as e:
                if self.alive():
                    self.kill()
                if "in use" in str(e).lower() and attempt < 2 and self.env.get("OSC_HOST_PORT") == str(self.port):
                    self.port = free_port()
                    self.env["OSC_HOST_PORT"] = str(self.port)
                    continue
                raise
        raise AssertionError("unreachable")

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` (the process is left running)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return self.returncode

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code, or -9 after a SIGKILL at `timeout`."""
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.returncode = -9
                return -9
        self._reap()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (kill -9) to the node and anything it spawned, and reap."""
        if self.proc is not None:
            if self.preexec_fn is None:
                signal_group(self.proc, signal.SIGKILL)
            elif self.alive():
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            self.returncode = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- crashes

    def has_died(self) -> bool:
        """The process exited, or is writing a crash report."""
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            return True
        out = self.run_output()
        return "*** Signal" in out or "Program crashed" in out

    def crash_report(self, settle: float = 15.0) -> str | None:
        """None while the node runs normally; else the output of the run that died (waiting up
        to `settle` seconds for the crash report to be complete)."""
        if not self.has_died():
            return None
        try:
            self.proc.wait(timeout=settle)
        except subprocess.TimeoutExpired:
            pass
        signal_group(self.proc, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._reap()
        return self.run_output() or f"(exit {self.proc.returncode}, no output)"

    def check_alive(self) -> None:
        """Raises NodeCrashed (with the crashed thread's backtrace) if the node died."""
        report = self.crash_report()
        if report is not None:
            raise NodeCrashed(f"{self} died (exit {self.proc.returncode}):\n{crashed_thread(report)}")

    def crashes(self) -> str | None:
        """The crash report of any run of this node, if one crashed."""
        text = self.log_text()
        return crashed_thread(text) if ("*** Signal" in text or "Fatal error" in text) else None
