#!/usr/bin/env python3
"""Connection exhaustion, measured: a slow-body attack against one node, and how another
client fares meanwhile. Prints figures; asserts nothing.

    python3 bench/connections.py [--binary PATH] [--attackers 1030] [--seconds 20]

The node runs with a 1,024-descriptor limit (as in the security review). The attacker
opens `--attackers` connections from 127.0.0.1, each sending a POST's headers and then one
body byte every 5 s. Every 0.5 s a second client (from 127.0.0.2, a fresh connection each
time) asks GET /health; the script reports how many of those were answered, the longest
wait, how long the attacker held connections, and when the node served again. Run it with
the current binary and with an older one to compare (the README gives both figures).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port: int) -> float | None:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=("127.0.0.2", 0)) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if b" 200 " in s.recv(4096).split(b"\r\n", 1)[0]:
                return time.monotonic() - started
    except OSError:
        pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / ".build/release/secureconf"))
    ap.add_argument("--attackers", type=int, default=1030)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="secureconf-conn-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSC_")}
    env.update({"OSC_HOST_PORT": str(port), "OSC_DATABASE_PATH": str(work / "db"), "OSC_SALT_FILE_PATH": str(work / "salt")})

    def limit_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    node = subprocess.Popen([args.binary, "serve"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=limit_fds)
    try:
        deadline = time.monotonic() + 20
        while probe(port) is None:
            if time.monotonic() > deadline:
                raise SystemExit("node did not start")
            time.sleep(0.1)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
        socks: list[socket.socket] = []
        stop = threading.Event()
        opened = time.monotonic()
        for _ in range(args.attackers):
            s = socket.socket()
            s.setblocking(True)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"POST /configs HTTP/1.1\r\nHost: x\r\nX-User-Key: attacker-key-123\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            except OSError:
                pass
            socks.append(s)

        def trickle():
            while not stop.wait(5):
                for s in socks:
                    try:
                        s.send(b" ")
                    except OSError:
                        pass

        threading.Thread(target=trickle, daemon=True).start()
        answered, waits, first_ok = 0, [], None
        probes = 0
        while time.monotonic() - opened < args.seconds:
            probes += 1
            w = probe(port)
            if w is not None:
                answered += 1
                waits.append(w)
                if first_ok is None:
                    first_ok = time.monotonic() - opened
            time.sleep(0.5)
        alive = 0
        for s in socks:
            try:
                s.setblocking(False)
                while True:
                    if s.recv(65536) == b"":
                        break
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        stop.set()
        for s in socks:
            s.close()
        print(f"binary: {args.binary}")
        print(f"attack: {args.attackers} slow-body connections from 127.0.0.1, node limited to 1024 descriptors")
        print(f"other client (127.0.0.2): {answered}/{probes} GET /health answered in {args.seconds:.0f} s; "
              f"longest answered wait {max(waits) * 1000 if waits else float('nan'):.0f} ms; "
              f"first answer {first_ok if first_ok is not None else float('nan'):.1f} s after the attack began")
        print(f"attack connections still open after {args.seconds:.0f} s: {alive}")
    finally:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
