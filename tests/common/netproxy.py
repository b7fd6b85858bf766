"""Test helpers shared by the suites that run real nodes: a recording TCP proxy and the
wall-clock shim (tests/cluster/fakeclock.c)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

FAKE_CLOCK_SOURCE = Path(__file__).resolve().parents[1] / "cluster" / "fakeclock.c"


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 (`listen_port`, or a free one) that forwards to
    `target_host:target_port` and records every byte both ways; with `delay`, each chunk
    towards the target is held that many seconds first (a slow link)."""

    def __init__(self, target_port: int, delay: float = 0.0, target_host: str = "127.0.0.1", listen_port: int = 0):
        self.target_port = target_port
        self.target_host = target_host
        self.delay = delay
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._to_target = bytearray()
        self._from_target = bytearray()
        self._sockets: list[socket.socket] = []
        self._stopped = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._accept_loop, name="recording-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sent(self) -> bytes:
        with self._lock:
            return bytes(self._to_target)

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._from_target)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, self._to_target, self.delay), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self._from_target, 0.0), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray, delay: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    record += data
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stopped.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def build_fake_clock(directory: Path) -> Path:
    """Compiles tests/cluster/fakeclock.c (an LD_PRELOAD shim moving only the wall clock)."""
    out = directory / "fakeclock.so"
    if not out.exists():
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(FAKE_CLOCK_SOURCE), "-ldl"],
                       check=True)
    return out
