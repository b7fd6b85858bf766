"""A raw Server-Sent Events client for tests: reads a stream on a thread and parses frames
(id, event, data, comments) exactly as the wire carries them, so tests see what any
EventSource would, Last-Event-ID included."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class Frame:
    event: str | None
    data: str | None
    id: str | None = None
    comment: str | None = None

    @property
    def json(self):
        return json.loads(self.data) if self.data is not None else None


@dataclass
class Stream:
    url: str
    params: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    timeout: float = 10.0

    def __post_init__(self):
        self.frames: "queue.Queue[Frame | None]" = queue.Queue()
        self.response = requests.get(self.url, params=self.params, headers=self.headers, stream=True, timeout=(5, 120))
        self.status = self.response.status_code
        self.last_id: str | None = None
        self._thread = None
        if self.status == 200:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()

    def _read(self):
        event = data = ident = None
        try:
            for raw in self.response.iter_lines(chunk_size=1, decode_unicode=False):
                line = raw.decode("utf-8")
                if line == "":
                    if event is not None or data is not None:
                        if ident is not None:
                            self.last_id = ident
                        self.frames.put(Frame(event, data, ident))
                    event = data = ident = None
                elif line.startswith(":"):
                    self.frames.put(Frame(None, None, comment=line[1:].strip()))
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data = value if data is None else data + "\n" + value
                    elif name == "id":
                        ident = value
        except Exception:  # noqa: BLE001  (closed by the test or the server)
            pass
        finally:
            self.frames.put(None)

    def next(self, timeout: float | None = None, comments: bool = False) -> Frame | None:
        """The next frame (skipping comments unless asked), or None when the stream ended."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame within {timeout or self.timeout} s")
            frame = self.frames.get(timeout=left)
            if frame is None:
                self.frames.put(None)
                return None
            if frame.comment is not None and not comments:
                continue
            return frame

    def events(self, n: int, timeout: float | None = None) -> list[Frame]:
        """The next n named events (keep-alive comments skipped)."""
        out = []
        for _ in range(n):
            frame = self.next(timeout)
            if frame is None:
                break
            out.append(frame)
        return out

    def quiet(self, seconds: float) -> list[Frame]:
        """Every event that arrives within `seconds` (a check that nothing more comes)."""
        out = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                frame = self.frames.get(timeout=left)
            except queue.Empty:
                return out
            if frame is None:
                self.frames.put(None)
                return out
            if frame.comment is None:
                out.append(frame)

    def ended(self, timeout: float) -> bool:
        """Whether the server ends the stream within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if frame is None:
                self.frames.put(None)
                return True
        return False

    def close(self):
        # Shut the socket down first: the reader thread is blocked in recv() holding the
        # buffer's lock, and a plain close() would wait for the server's next keep-alive.
        sock = self._socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.response.close()
        except Exception:  # noqa: BLE001
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _socket(self):
        raw = self.response.raw
        connection = getattr(raw, "_connection", None)
        if connection is not None and getattr(connection, "sock", None) is not None:
            return connection.sock
        try:
            return raw._fp.fp.raw._sock  # http.client's socket file
        except AttributeError:
            return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
