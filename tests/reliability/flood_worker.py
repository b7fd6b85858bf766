"""Wrong-user-key flood, run as its own process so that its threads do not share the GIL with
the client whose latency the test measures.

    python3 flood_worker.py URL PATH SECONDS THREADS  ->  one JSON line of counts on stdout

Every request carries a new random user key, so every one costs the node a PBKDF2 run unless
the node refuses it first (503/429 with Retry-After).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from collections import Counter

import requests


def main() -> None:
    url, path, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    # The load generator shares this machine's two cores with the node: spinning on fast 503s,
    # its eight threads would take a core from the node, and the figure would measure the
    # test's own client. At the lowest priority it still sends as fast as the node answers.
    os.nice(19)
    stop = threading.Event()
    lock = threading.Lock()
    statuses: Counter = Counter()
    with_retry_after: Counter = Counter()
    errors: Counter = Counter()
    durations: list[float] = []

    def worker() -> None:
        s = requests.Session()
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = s.get(url + path, headers={"X-User-Key": "wrong-" + secrets.token_hex(12)}, timeout=30)
            except requests.RequestException as e:
                with lock:
                    errors[type(e).__name__] += 1
                s = requests.Session()
                time.sleep(0.05)
                continue
            with lock:
                statuses[r.status_code] += 1
                durations.append(time.perf_counter() - t)
                if "retry-after" in r.headers:
                    with_retry_after[r.status_code] += 1

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join(40)
    print(json.dumps({
        "statuses": {str(k): v for k, v in statuses.items()},
        "retry_after": {str(k): v for k, v in with_retry_after.items()},
        "errors": dict(errors),
        "requests": sum(statuses.values()),
        "mean_ms": 1000 * sum(durations) / len(durations) if durations else None,
    }), flush=True)


if __name__ == "__main__":
    main()
