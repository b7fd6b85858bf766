#!/usr/bin/env python3
"""SecureConf benchmark: one command, figures beside the targets of issue 5.

    python3 bench/bench.py                 # full run (10 s per load test, about 2-3 minutes)
    python3 bench/bench.py --quick         # 3 s per load test, about a minute
    python3 bench/bench.py --json-out results.json --skip-cluster

Starts release nodes (`secureconf serve`) in a temporary directory on 127.0.0.1 and ports
the kernel hands out, drives them with wrk (the Lua scripts next to this file) and with
http.client, and prints a table and a JSON document. Every node it starts is stopped
(SIGTERM, then SIGKILL after 10 s) on success, error, Ctrl-C or SIGTERM.

Python 3 standard library only, plus wrk (Debian's `wrk` package). See bench/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"

USER_KEY_ALPHABET = string.ascii_letters + string.digits

# Targets of issue 5 (figures, not pass/fail: the exit code does not depend on them).
TARGET_READS_PER_S = 20_000
TARGET_READ_P99_MS = 5.0
TARGET_WRITES_PER_S = 5_000
TARGET_FIRST_REQUEST_MS = 60.0
TARGET_RSS_IDLE_MB = 64.0
TARGET_RSS_LOAD_MB = 150.0
TARGET_STARTUP_S = 1.0
TARGET_KDF_RATIO = 1.5
TARGET_CLUSTER_WRITES_PER_S = 2_000
TARGET_CLUSTER_AGREEMENT_MS = 1_000.0


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the table and the JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def random_token(n: int) -> str:
    return "".join(secrets.choice(USER_KEY_ALPHABET) for _ in range(n))


class BenchError(RuntimeError):
    pass


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C so every node is stopped."""


# --------------------------------------------------------------------------- processes

_CHILDREN: list[subprocess.Popen] = []


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Starts a child in its own session (Ctrl-C reaches only us; we stop it) and tracks it."""
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    _CHILDREN.append(proc)
    return proc


def stop_processes(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM to every live process, then SIGKILL to those still alive after `grace` seconds."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} still running {grace:.0f} s after SIGTERM: SIGKILL")
            try:
                p.kill()
            except ProcessLookupError:
                pass
            p.wait(5)
    for p in procs:
        if p in _CHILDREN and p.poll() is not None:
            _CHILDREN.remove(p)


def stop_all_children() -> None:
    stop_processes(list(_CHILDREN))


def free_ports(n: int) -> list[int]:
    """n distinct ports the kernel hands out for 127.0.0.1 (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- HTTP

class Client:
    """One keep-alive HTTP/1.1 connection (http.client), reconnecting once if the node closed it."""

    def __init__(self, port: int, headers: dict[str, str] | None = None, timeout: float = 60.0):
        self.port = port
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body=None, headers: dict[str, str] | None = None):
        """Returns (status, response headers, body bytes)."""
        data = None
        all_headers = dict(self.headers)
        all_headers.update(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=all_headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                return resp.status, resp.headers, payload
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body=None, expect: tuple[int, ...] = (200,)):
        status, _, payload = self.request(method, path, body)
        if status not in expect:
            raise BenchError(f"{method} {path}: HTTP {status}: {payload[:300]!r}")
        return json.loads(payload)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def health_ok(port: int, timeout: float = 1.0) -> bool:
    """One GET /health over a fresh connection: True on 200, False if refused or not 200."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException, socket.timeout, OSError):
        return False
    finally:
        conn.close()


# --------------------------------------------------------------------------- nodes

def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Node:
    """One `secureconf serve` process with its data in `workdir` (also its working directory)."""

    def __init__(self, binary: Path, workdir: Path, port: int, extra_env: dict[str, str] | None = None):
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.spawned_at = 0.0
        self.ready_at = 0.0
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSC_")}
        env.update({
            "OSC_HOST": HOST,
            "OSC_HOST_PORT": str(self.port),
            "OSC_DATABASE_PATH": str(self.workdir / "configurations.db"),
            "OSC_SALT_FILE_PATH": str(self.workdir / "encryption.salt"),
            "OSC_LOG_LEVEL": "WARNING",
        })
        env.update(self.extra_env)
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_timeout: float = 60.0, poll_interval: float = 0.002) -> float:
        """Spawns the node and waits for GET /health 200; returns seconds from spawn to ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise BenchError("node already running")
        env = self.env
        logfile = open(self.workdir / "node.log", "ab")
        self.spawned_at = time.monotonic()
        try:
            self.proc = spawn([str(self.binary), "serve"], cwd=self.workdir, env=env,
                              stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT)
        finally:
            logfile.close()
        deadline = self.spawned_at + ready_timeout
        while True:
            if health_ok(self.port, timeout=2.0):
                self.ready_at = time.monotonic()
                return self.ready_at - self.spawned_at
            if self.proc.poll() is not None:
                raise BenchError(f"node on port {self.port} exited with {self.proc.returncode} "
                                 f"before answering /health:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"node on port {self.port} not ready after {ready_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(poll_interval)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        stop_processes([self.proc])
        return self.proc.returncode

    def rss_kb(self) -> int | None:
        return proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int | None:
        return proc_status_kb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the node has used (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def entries(self) -> int:
        c = Client(self.port)
        try:
            return int(c.json("GET", "/ready")["entries"])
        finally:
            c.close()

    def log_tail(self, lines: int = 8) -> str:
        """The node's log: a crash report's headline and crashed thread, fatal errors, last lines."""
        try:
            text = (self.workdir / "node.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        picked: list[str] = []
        for i, l in enumerate(text):
            if "Program crashed" in l or "Fatal error" in l or "fatal error" in l:
                picked.append(l)
            elif l.endswith("crashed:"):
                frames = [f for f in text[i + 1:i + 16] if f.strip()][:8]
                picked += [l] + frames
        if not picked:
            picked = [l for l in text if l.strip() and not l.startswith("0x")][-lines:]
        return "\n".join(f"    {l}" for l in picked[:24]) or "    (empty log)"


# --------------------------------------------------------------------------- wrk

class Wrk:
    """wrk with one of the Lua scripts in bench/; results come from the script's done() JSON line."""

    def __init__(self, script: str, port: int, threads: int, connections: int, duration_s: int,
                 env: dict[str, str], wrk_bin: str = "wrk"):
        self.script = BENCH_DIR / script
        self.port = port
        self.threads = threads
        self.connections = connections
        self.duration_s = duration_s
        args = [wrk_bin, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s",
                "--latency", "-s", str(self.script), f"http://{HOST}:{port}"]
        full_env = dict(os.environ)
        full_env.update({"BENCH_THREADS": str(threads)})
        full_env.update(env)
        self.started_at = time.monotonic()
        self.proc = spawn(args, env=full_env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def interrupt(self) -> None:
        """SIGINT: wrk stops early and still reports (done() runs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def result(self, timeout: float | None = None) -> dict:
        if timeout is None:
            timeout = self.duration_s + 30
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise BenchError(f"wrk {self.script.name} did not finish within {timeout:.0f} s")
        finally:
            if self.proc in _CHILDREN:
                _CHILDREN.remove(self.proc)
        if self.proc.returncode != 0:
            raise BenchError(f"wrk {self.script.name} exited with {self.proc.returncode}: {err.strip()} {out[-500:]}")
        line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
        if line is None:
            raise BenchError(f"wrk {self.script.name}: no BENCH_JSON line in its output:\n{out}\n{err}")
        r = json.loads(line[len("BENCH_JSON "):])
        seconds = r["duration_us"] / 1e6
        lat = r["latency_us"]
        r["seconds"] = round(seconds, 3)
        r["requests_per_s"] = round(r["requests"] / seconds, 1) if seconds else 0.0
        r["ok_per_s"] = round(r["ok"] / seconds, 1) if seconds else 0.0
        r["latency_ms"] = {k: round(v / 1000.0, 3) for k, v in lat.items()}
        if r["sent"] == 0 and r["requests"] > 0:
            r["sent"] = None   # a static request (read_one.lua): wrk builds it once, nothing counts sends
        r["threads"] = self.threads
        r["connections"] = self.connections
        r["script"] = self.script.name
        del r["latency_us"]
        return r


def run_wrk(script: str, port: int, duration_s: int, env: dict[str, str],
            threads: int = 2, connections: int = 32) -> dict:
    return Wrk(script, port, threads, connections, duration_s, env).result()


# --------------------------------------------------------------------------- helpers

def wait_for_binary(path: Path, timeout: float = 300.0) -> None:
    """The release binary is rebuilt by others from time to time: wait until it exists and is stable."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            st1 = path.stat()
            if os.access(path, os.X_OK) and st1.st_size > 0:
                time.sleep(1.0)
                st2 = path.stat()
                if (st1.st_size, st1.st_mtime_ns) == (st2.st_size, st2.st_mtime_ns):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{path} missing or changing for {timeout:.0f} s")
        if not announced:
            log(f"waiting for {path} (missing or being rebuilt)")
            announced = True
        time.sleep(2.0)


def snapshot_binary(source: Path, dest_dir: Path) -> tuple[Path, str]:
    """Copies the binary into the run's directory, so a rebuild in the middle of the run changes nothing."""
    dest = dest_dir / "secureconf"
    for attempt in range(1, 6):
        wait_for_binary(source)
        shutil.copy2(source, dest)
        dest.chmod(0o755)
        try:
            version = subprocess.run([str(dest), "version"], capture_output=True, text=True, timeout=30)
            if version.returncode == 0:
                return dest, version.stdout.strip()
            log(f"copied binary does not run (attempt {attempt}): {version.stderr.strip()}")
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"copied binary does not run (attempt {attempt}): {e}")
        time.sleep(5)
    raise BenchError(f"could not get a working copy of {source}")


def mb(kb: int | None) -> float | None:
    """kB from /proc (KiB) to MB (10^6 bytes)."""
    return None if kb is None else round(kb * 1024 / 1e6, 1)


def populate(node: Node, n: int, env_name: str, key_prefix: str, user_key: str, timeout: float = 300.0,
             first: int = 0) -> dict:
    """Creates keys key_prefix+first .. key_prefix+(first+n-1) with wrk (populate.lua), stopping it once
    GET /ready counts them all, or once every wrk thread has sent its share and the count has
    not moved for a second; any key still missing then is created over http.client."""
    base = node.entries()
    target = base + n
    threads = 2
    marker = node.workdir / f"populate-{random_token(8)}"
    w = Wrk("populate.lua", node.port, threads, 32, int(timeout) + 60, {
        "BENCH_USER_KEY": user_key, "BENCH_ENV": env_name, "BENCH_KEY_PREFIX": key_prefix,
        "BENCH_KEYS": str(n), "BENCH_DONE_FILE": str(marker), "BENCH_KEY_FIRST": str(first),
    })
    t0 = time.monotonic()
    client = Client(node.port)
    entries, last_change, last_entries = base, t0, base
    while True:
        entries = int(client.json("GET", "/ready")["entries"])
        now = time.monotonic()
        if entries != last_entries:
            last_entries, last_change = entries, now
        if entries >= target or w.proc.poll() is not None or now - t0 > timeout:
            break
        if now - last_change > 1.0 and len(list(node.workdir.glob(marker.name + ".*"))) == threads:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    w.interrupt()
    r = w.result(timeout=30)
    missing = 0
    if entries < target:
        # Creates lost to a dropped connection or refused (503): list what is there, create the rest.
        present: set[str] = set()
        after = None
        for _ in range((first + n) // 1000 + 100):
            q = f"/configs?environment={env_name}&limit=1000" + (f"&after={after}" if after else "")
            status, headers, payload = client.request("GET", q, headers={"X-User-Key": user_key})
            if status != 200:
                raise BenchError(f"listing during populate: HTTP {status}")
            present.update(e["key"] for e in json.loads(payload))
            after = headers.get("X-SecureConf-Next-After")
            if not after:
                break
        todo = [i for i in range(first, first + n) if f"{key_prefix}{i}" not in present]
        missing = len(todo)
        log(f"populate: creating {missing:,} keys wrk did not get acknowledged")

        def create_some(indices: list[int]) -> None:
            c = Client(node.port, {"X-User-Key": user_key})
            try:
                for i in indices:
                    status, _, payload = c.request("POST", "/configs", {"key": f"{key_prefix}{i}", "value": {"n": i},
                                                                        "environment": env_name})
                    if status not in (201, 400):   # 400: it was created after all ("already exists")
                        raise BenchError(f"populate {key_prefix}{i}: HTTP {status} {payload[:200]!r}")
            finally:
                c.close()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for f in [pool.submit(create_some, todo[k::8]) for k in range(8)]:
                f.result()
        entries = node.entries()
    client.close()
    if entries < target:
        raise BenchError(f"populate: {entries - base} of {n} entries after filling gaps")
    return {"entries": n, "seconds": round(elapsed, 3), "writes_per_s": round((n - missing) / elapsed, 1),
            "non2xx": r["non2xx"], "socket_errors": r["errors"], "filled_afterwards": missing}


def first_request_latency(port: int, samples: int, run_id: str) -> dict:
    """POST of a new key with a never-seen user key, each over a fresh connection (connect included)."""
    times = []
    for i in range(samples):
        user_key = "first-" + random_token(24)
        body = json.dumps({"key": f"first-{run_id}-{i}", "value": {"sample": i}}).encode()
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.request("POST", "/configs", body=body,
                     headers={"X-User-Key": user_key, "Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        t1 = time.perf_counter()
        conn.close()
        if resp.status != 201:
            raise BenchError(f"first request: HTTP {resp.status} {payload[:200]!r}")
        times.append((t1 - t0) * 1000)
        time.sleep(0.05)
    return {"samples": samples, "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2), "max_ms": round(max(times), 2),
            "all_ms": [round(t, 2) for t in times]}


def list_benchmark(port: int, user_key: str, env_name: str, expected: int, walks: int, full_runs: int) -> dict:
    client = Client(port, {"X-User-Key": user_key})
    problems: list[str] = []
    walk_times = []
    pages = 0
    for _ in range(walks):
        t0 = time.perf_counter()
        after = None
        seen = 0
        pages = 0
        for _ in range(expected // 1000 + 10):
            q = f"/configs?environment={env_name}&limit=1000" + (f"&after={after}" if after else "")
            status, headers, payload = client.request("GET", q)
            if status != 200:
                raise BenchError(f"GET {q}: HTTP {status} {payload[:200]!r}")
            pages += 1
            seen += len(json.loads(payload))
            after = headers.get("X-SecureConf-Next-After")
            if not after:
                break
        walk_times.append(time.perf_counter() - t0)
        if seen != expected:
            problems.append(f"a paginated walk saw {seen} entries, expected {expected}")
    full_times = []
    size = 0
    for _ in range(full_runs):
        t0 = time.perf_counter()
        status, _, payload = client.request("GET", f"/configs?environment={env_name}")
        full_times.append(time.perf_counter() - t0)
        if status != 200:
            raise BenchError(f"unpaginated list: HTTP {status}")
        n = len(json.loads(payload))
        size = len(payload)
        if n != expected:
            problems.append(f"the unpaginated list returned {n} entries, expected {expected}")
    client.close()
    walk = statistics.median(walk_times)
    return {"entries": expected, "page_limit": 1000, "requests_per_walk": pages,
            "walks": walks, "walk_ms_median": round(walk * 1000, 1), "walk_ms_best": round(min(walk_times) * 1000, 1),
            "pages_per_s": round(pages / walk, 1),
            "unpaginated_runs": full_runs, "unpaginated_ms_median": round(statistics.median(full_times) * 1000, 1),
            "unpaginated_ms_best": round(min(full_times) * 1000, 1), "unpaginated_bytes": size,
            "problems": sorted(set(problems))}


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# --------------------------------------------------------------------------- phases

def phase_kdf(binary: Path) -> dict:
    log("key derivation: secureconf bench-kdf")
    p = subprocess.run([str(binary), "bench-kdf"], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise BenchError(f"bench-kdf exited with {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def phase_single_node(binary: Path, root: Path, duration: int, quick: bool, results: dict) -> None:
    user_key = "bench-" + random_token(24)
    run_id = random_token(8)
    env_name = "bench"
    nkeys = 10_000
    node = Node(binary, root / "node", free_ports(1)[0])
    log(f"single node: starting on port {node.port}")
    results["startup_empty_s"] = round(node.start(), 4)
    time.sleep(1.0)
    results["rss_idle_mb"] = mb(node.rss_kb())
    rss_phases = {"idle": mb(node.hwm_kb())}
    try:
        log("first request with a new user key (10 cold keys)")
        results["first_request"] = first_request_latency(node.port, 10, run_id)

        # The hot key lives in its own environment, so the "bench" environment holds exactly
        # the 10,000 preloaded keys that the list test walks.
        hot = f"hot-{run_id}"
        c = Client(node.port, {"X-User-Key": user_key})
        c.json("POST", "/configs", {"key": hot, "value": {"host": "db.internal", "password": "s3cret"},
                                    "environment": "hot"}, expect=(201,))
        c.json("GET", f"/configs/{hot}?environment=hot")
        c.close()
        common = {"BENCH_USER_KEY": user_key, "BENCH_ENV": env_name, "BENCH_KEY": hot,
                  "BENCH_KEY_PREFIX": f"cfg-{run_id}-", "BENCH_KEYS": str(nkeys)}
        hot_env = dict(common, BENCH_ENV="hot")

        log(f"warm reads of one key ({duration} s after a 1 s warm-up)")
        run_wrk("read_one.lua", node.port, 1, hot_env)
        results["read_one"] = run_wrk("read_one.lua", node.port, duration, hot_env)
        rss_phases["read_one"] = mb(node.hwm_kb())

        log(f"preloading {nkeys:,} keys")
        results["preload_10k"] = populate(node, nkeys, env_name, common["BENCH_KEY_PREFIX"], user_key)

        log(f"warm reads of {nkeys:,} random keys ({duration} s after a 1 s warm-up)")
        run_wrk("read_random.lua", node.port, 1, common)
        results["read_10k"] = run_wrk("read_random.lua", node.port, duration, common)
        rss_phases["read_10k"] = mb(node.hwm_kb())

        log(f"list of {nkeys:,} entries: paginated walks and unpaginated")
        results["list_10k"] = list_benchmark(node.port, user_key, env_name, nkeys,
                                             walks=2 if quick else 5, full_runs=2 if quick else 3)
        rss_phases["list_10k"] = mb(node.hwm_kb())

        log(f"unique-key writes ({duration} s)")
        results["writes_unique"] = run_wrk("write_unique.lua", node.port, duration,
                                           dict(common, BENCH_PREFIX=f"w-{run_id}"))
        rss_phases["writes_unique"] = mb(node.hwm_kb())

        log(f"updates of the {nkeys:,} preloaded keys ({duration} s)")
        results["updates"] = run_wrk("update_random.lua", node.port, duration, common)
        rss_phases["updates"] = mb(node.hwm_kb())

        log(f"90/10 read/update mix ({duration} s)")
        results["mix_90_10"] = run_wrk("mix.lua", node.port, duration, dict(common, BENCH_WRITE_PCT="10"))

        results["rss_peak_mb"] = mb(node.hwm_kb())
        results["rss_after_load_mb"] = mb(node.rss_kb())
        rss_phases["mix_90_10"] = results["rss_peak_mb"]
        results["rss_hwm_after_phase_mb"] = rss_phases
        results["entries_at_end"] = node.entries()
    finally:
        t0 = time.monotonic()
        code = node.stop()
        results["single_node_shutdown"] = {"exit_code": code, "seconds": round(time.monotonic() - t0, 3)}


def phase_auth(binary: Path, root: Path, duration: int, results: dict) -> None:
    """Warm reads of one key on a node in apikey mode and on one in tokens mode (a login
    token on every request), alternated five times; the overhead of token verification is
    the difference of the median runs."""
    user_key = "bench-" + random_token(24)
    password = "bench-" + random_token(16)
    plain = Node(binary, root / "auth-apikey", free_ports(1)[0])
    tokens = Node(binary, root / "auth-tokens", free_ports(1)[0], {"OSC_AUTH_MODE": "tokens"})
    created = subprocess.run([str(binary), "users", "add", "bench", "--role", "admin"], cwd=tokens.workdir,
                             env=dict(tokens.env, SECURECONF_PASSWORD=password), capture_output=True, text=True, timeout=60)
    if created.returncode != 0:
        raise BenchError(f"users add: {created.stderr.strip()}")
    runs: dict[str, list[dict]] = {"apikey": [], "tokens": []}
    for node in (plain, tokens):
        log(f"auth: starting a node in {'tokens' if node is tokens else 'apikey'} mode on port {node.port}")
        node.start()
    try:
        c = Client(tokens.port, {"Content-Type": "application/json"})
        token = c.json("POST", "/auth/login", {"username": "bench", "password": password})["access_token"]
        c.close()
        envs = {}
        for name, node, extra in (("apikey", plain, {}), ("tokens", tokens, {"Authorization": "Bearer " + token})):
            c = Client(node.port, {"X-User-Key": user_key, **extra})
            c.json("POST", "/configs", {"key": "hot", "value": {"password": "s3cret"}, "environment": "hot"}, expect=(201,))
            c.json("GET", "/configs/hot?environment=hot")
            c.close()
            envs[name] = {"BENCH_USER_KEY": user_key, "BENCH_ENV": "hot", "BENCH_KEY": "hot",
                          **({"BENCH_BEARER": token} if name == "tokens" else {})}
            run_wrk("read_one.lua", node.port, 1, envs[name])
        cpu: dict[str, list[float]] = {"apikey": [], "tokens": []}
        for i in range(5):
            for name, node in (("apikey", plain), ("tokens", tokens)) if i % 2 == 0 else (("tokens", tokens), ("apikey", plain)):
                log(f"auth: warm reads, {name} mode, run {i + 1} of 5 ({duration} s)")
                before = node.cpu_seconds()
                w = run_wrk("read_one.lua", node.port, duration, envs[name])
                runs[name].append(w)
                if w["requests"]:
                    cpu[name].append((node.cpu_seconds() - before) / w["requests"] * 1e6)
    finally:
        for node in (plain, tokens):
            node.stop()
    best = {name: sorted(rs, key=lambda w: w["ok_per_s"])[len(rs) // 2] for name, rs in runs.items()}
    overhead = (best["apikey"]["ok_per_s"] - best["tokens"]["ok_per_s"]) / best["apikey"]["ok_per_s"] * 100
    cpu_median = {name: sorted(v)[len(v) // 2] for name, v in cpu.items() if v}
    in_process = subprocess.run([str(binary), "bench-token"], capture_output=True, text=True, timeout=300)
    verify_us = json.loads(in_process.stdout.strip().splitlines()[-1])["microseconds_per_verification"] if in_process.returncode == 0 else None
    results["auth"] = {"read_one_apikey": best["apikey"], "read_one_tokens": best["tokens"],
                       "runs_per_s": {n: [round(w["ok_per_s"]) for w in rs] for n, rs in runs.items()},
                       "token_overhead_pct": round(overhead, 2),
                       "node_cpu_us_per_read": {n: round(v, 1) for n, v in cpu_median.items()},
                       "cpu_overhead_pct": round((cpu_median["tokens"] - cpu_median["apikey"]) / cpu_median["apikey"] * 100, 2)
                       if len(cpu_median) == 2 else None,
                       "verify_us_in_process": verify_us}


def phase_startup(binary: Path, root: Path, n: int, runs: int, results: dict) -> None:
    user_key = "bench-" + random_token(24)
    node = Node(binary, root / "startup", free_ports(1)[0])
    log(f"start-up: populating a store with {n:,} entries on port {node.port}")
    try:
        node.start()
        pop = populate(node, n, "bench", "big-", user_key)
    finally:
        t0 = time.monotonic()
        code = node.stop()
    stop_s = time.monotonic() - t0
    if code != 0:
        raise BenchError(f"node exited with {code} after SIGTERM:\n{node.log_tail()}")
    db = node.workdir / "configurations.db"
    size = sum(p.stat().st_size for p in node.workdir.glob("configurations.db*"))
    times = []
    for i in range(runs):
        node.port = free_ports(1)[0]
        try:
            times.append(node.start())
            entries = node.entries()
        finally:
            node.stop()
        if entries != n:
            raise BenchError(f"restarted node reports {entries} entries, expected {n}")
        log(f"start-up {i + 1}/{runs}: {times[-1] * 1000:.1f} ms to the first /health 200")
    results["startup_100k"] = {"entries": n, "populate": pop, "shutdown_after_populate_s": round(stop_s, 3),
                               "database_bytes": size, "runs_s": [round(t, 4) for t in times],
                               "best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4)}


def check_alive(nodes: list[Node]) -> None:
    for n in nodes:
        if n.proc is not None and n.proc.poll() is not None:
            raise BenchError(f"node on port {n.port} exited with {n.proc.returncode}:\n{n.log_tail()}")


def replica_cluster(binary: Path, root: Path, name: str, extra_env: dict[str, str] | None = None) -> tuple[list[Node], str, str]:
    """Three replica nodes (not started) sharing one salt and one API key; returns them, the API key and a user key."""
    ports = free_ports(3)
    api_key = random_token(32)
    user_key = "bench-" + random_token(24)
    run_id = random_token(8)
    members = ",".join(f"{HOST}:{p}" for p in ports)
    salt = secrets.token_bytes(64)
    nodes = []
    for i, port in enumerate(ports):
        workdir = root / f"{name}-{i}"
        workdir.mkdir(parents=True)
        # One salt for the whole cluster, as a deployment would provision it.
        salt_path = workdir / "encryption.salt"
        salt_path.write_bytes(salt)
        salt_path.chmod(0o600)
        nodes.append(Node(binary, workdir, port, {
            "OSC_CLUSTER_ENABLED": "true", "OSC_CLUSTER_MODE": "replica",
            "OSC_CLUSTER_NODE_ID": f"{HOST}:{port}", "OSC_CLUSTER_NODES": members,
            "OSC_API_KEY_REQUIRED": "true", "OSC_API_KEY": api_key, "OSC_CLUSTER_SYNC_INTERVAL": "2",
            **(extra_env or {}),
        }))
    return nodes, api_key, user_key


def run_replica_cluster(binary: Path, root: Path, name: str, duration: int, out: dict, spread: bool,
                        extra_env: dict[str, str] | None = None, connections: int | None = None) -> None:
    """Starts three replica nodes, loads them (see cluster_load) and stops them; figures go into `out`."""
    nodes, api_key, user_key = replica_cluster(binary, root, name, extra_env)
    out["nodes"] = ",".join(f"{HOST}:{n.port}" for n in nodes)
    try:
        cluster_load(nodes, api_key, user_key, random_token(8), root, duration, out, spread, connections)
    except (OSError, http.client.HTTPException, ValueError) as e:
        check_alive(nodes)   # a node that died explains the error better than the error does
        raise BenchError(f"cluster: {type(e).__name__}: {e}") from e
    finally:
        check_alive_note(nodes, out)
        stop_processes([n.proc for n in nodes if n.proc is not None])


def phase_cluster(binary: Path, root: Path, duration: int, results: dict) -> None:
    results["cluster"] = {}
    run_replica_cluster(binary, root, "cluster", duration, results["cluster"], spread=True)


def check_alive_note(nodes: list[Node], out: dict) -> None:
    """Records nodes that exited on their own (before we stopped them)."""
    dead = [f"{n.port}: exit {n.proc.returncode}" for n in nodes if n.proc is not None and n.proc.poll() is not None]
    if dead:
        out["nodes_exited"] = dead


def cluster_load(nodes: list[Node], api_key: str, user_key: str, run_id: str, root: Path, duration: int, out: dict,
                 spread: bool = True, connections: int | None = None) -> None:
    """Unique-key creates for `duration` seconds: with `spread`, one wrk -t1 -c16 per node;
    otherwise one wrk -t2 -c32 on the first node (as etcd's three members are loaded). Then
    the time until the three digests agree."""
    log(f"cluster: starting three replica nodes on ports {', '.join(str(n.port) for n in nodes)}")
    for node in nodes:
        node.start()
    clients = [Client(n.port, {"X-API-Key": api_key}) for n in nodes]
    status, _, payload = clients[0].request("GET", "/cluster/digest")
    if status == 404:
        out["skipped"] = "GET /cluster/digest answers 404: this build has no replica cluster yet"
        log("cluster: " + out["skipped"] + "; skipping")
        return
    if status != 200:
        out["skipped"] = f"GET /cluster/digest answers HTTP {status}: {payload[:200]!r}"
        log("cluster: " + out["skipped"] + "; skipping")
        return
    out["revisions_before"] = [c.json("GET", "/cluster/digest")["revisions"] for c in clients]

    stop_file = root / f"cluster-stop-{run_id}"
    loaded = nodes if spread else nodes[:1]
    shape = (1, 16) if spread else (2, 32)
    if connections is not None:
        shape = (1 if connections < 2 else 2, connections)
    log(f"cluster: unique-key writes on {'all three nodes' if spread else 'the first node'} "
        f"({duration} s, wrk -t{shape[0]} -c{shape[1]} per loaded node)")
    t_start = time.monotonic()
    loads = [Wrk("write_unique.lua", n.port, shape[0], shape[1], duration + 120, {
        "BENCH_USER_KEY": user_key, "BENCH_API_KEY": api_key, "BENCH_PREFIX": f"c-{run_id}-n{i}",
        "BENCH_STOP_FILE": str(stop_file)}) for i, n in enumerate(loaded)]
    time.sleep(max(0.0, t_start + duration - time.monotonic()))
    stop_file.touch()
    t_stop = time.monotonic()
    write_seconds = t_stop - t_start

    # Poll every 20 ms until every wrk has drained its writes and the three digests agree.
    drained_at = None
    agreed_at = None
    polls = 0
    failure = None
    last: list = []
    deadline = t_stop + 60.0
    while time.monotonic() < deadline:
        tick = time.monotonic()
        if drained_at is None and len(list(root.glob(stop_file.name + ".stopped.*"))) == shape[0] * len(loaded):
            drained_at = time.monotonic()
        try:
            last = [c.json("GET", "/cluster/digest") for c in clients]
        except (OSError, http.client.HTTPException, BenchError) as e:
            failure = f"GET /cluster/digest failed: {type(e).__name__}: {e}"
            break
        polls += 1
        if drained_at is not None and len({d["digest"] for d in last}) == 1:
            agreed_at = time.monotonic()
            break
        time.sleep(max(0.0, 0.02 - (time.monotonic() - tick)))
    for w in loads:
        w.interrupt()
    per_node = [w.result(timeout=30) for w in loads]
    if failure:
        # The write figures stand; agreement cannot be measured (a node that died says why).
        out.update({"write_seconds": round(write_seconds, 3),
                    "acknowledged_writes": sum(r["ok"] for r in per_node),
                    "non2xx": sum(r["non2xx"] for r in per_node),
                    "socket_errors": [r["errors"] for r in per_node],
                    "writes_per_s": round(sum(r["ok"] for r in per_node) / write_seconds, 1)})
        check_alive(nodes)
        raise BenchError(failure)
    acked = sum(r["ok"] for r in per_node)
    non2xx = sum(r["non2xx"] for r in per_node)
    sent = sum(r["sent"] for r in per_node)
    out.update({
        "write_seconds": round(write_seconds, 3),
        "acknowledged_writes": acked, "sent_writes": sent, "non2xx": non2xx,
        "last_non2xx_status": [r["last_non2xx_status"] for r in per_node],
        "writes_per_s": round(acked / write_seconds, 1),
        "per_node_writes_per_s": [round(r["ok"] / write_seconds, 1) for r in per_node],
        "per_node_latency_ms": [{k: r["latency_ms"][k] for k in ("p50", "p99")} for r in per_node],
        "drain_ms": None if drained_at is None else round((drained_at - t_stop) * 1000, 1),
        "digest_polls": polls,
        "final_revisions": [d["revisions"] for d in last],
        "final_digests_equal": len({d["digest"] for d in last}) == 1,
    })
    if agreed_at is None:
        out["agreement_ms"] = None
        out["agreement_note"] = "digests did not agree within 60 s after the load stopped"
    else:
        out["agreement_ms"] = round((agreed_at - t_stop) * 1000, 1)
    revs = last[0]["revisions"] if last else None
    out["revisions_equal_acknowledged"] = bool(agreed_at is not None and revs == acked + out["revisions_before"][0])
    for c in clients:
        c.close()


# --------------------------------------------------------------------------- peers (issue 14)

class EtcdMember:
    """One etcd 3.4 member (Debian's etcd-server) on 127.0.0.1, data in `workdir`."""

    def __init__(self, workdir: Path, name: str, client_port: int, peer_port: int):
        self.workdir = workdir
        self.name = name
        self.port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def start(self, initial_cluster: str, token: str) -> None:
        logfile = open(self.workdir / "etcd.log", "ab")
        try:
            self.proc = spawn([
                "etcd", "--name", self.name, "--data-dir", str(self.workdir / "data"),
                "--listen-client-urls", f"http://{HOST}:{self.port}", "--advertise-client-urls", f"http://{HOST}:{self.port}",
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", token, "--log-level", "error",
            ], cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT)
        finally:
            logfile.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"etcd {self.name} exited with {self.proc.returncode}: "
                                 f"{(self.workdir / 'etcd.log').read_text(errors='replace')[-500:]}")
            try:
                c = Client(self.port, timeout=2.0)
                status, _, payload = c.request("GET", "/health")
                c.close()
                if status == 200 and json.loads(payload).get("health") == "true":
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)
        raise BenchError(f"etcd {self.name} not healthy after {timeout:.0f} s")

    def put(self, key: str, value: str) -> None:
        import base64
        c = Client(self.port, {"Content-Type": "application/json"})
        try:
            c.json("POST", "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                          "value": base64.b64encode(value.encode()).decode()})
        finally:
            c.close()


def etcd_cluster(root: Path, name: str, size: int) -> list[EtcdMember]:
    ports = free_ports(2 * size)
    members = [EtcdMember(root / f"{name}-{i}", f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(size)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    token = "bench-" + random_token(8)   # one per cluster: members with different tokens never form one
    for m in members:
        m.start(initial, token)
    for m in members:
        m.wait_ready()
    return members


def snapshot_ceiling(source: Path, root: Path) -> Path | None:
    """The HTTP ceiling program beside the secureconf binary (secureconf-ceiling), copied like it."""
    if not (source.exists() and os.access(source, os.X_OK)):
        return None
    dest = root / "secureconf-ceiling"
    shutil.copy2(source, dest)
    dest.chmod(0o755)
    return dest


def best_of(runs: list[dict]) -> dict:
    """The median run (by 2xx/s) of several, with every run's figure beside it."""
    ordered = sorted(runs, key=lambda w: w["ok_per_s"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["runs_per_s"] = [round(w["ok_per_s"]) for w in runs]
    return chosen


def phase_peers(binary: Path, ceiling_source: Path, root: Path, duration: int, rounds: int, results: dict) -> None:
    """The same load, in one run, against the HTTP ceiling, etcd 3.4 and SecureConf with the
    audit trail on and off (reads of one key, unique-key writes), then three etcd members
    beside three SecureConf nodes at quorum 1 and majority (writes sent to one of them).
    Reads alternate between the servers `rounds` times; the median run of each is kept."""
    out: dict = {"rounds": rounds, "load": "wrk -t2 -c32", "duration_s": duration}
    results["peers"] = out
    user_key = "bench-" + random_token(24)
    value = '{"host":"db.internal","port":5432,"password":"s3cret-1","pool":{"min":2,"max":16}}'
    servers: dict[str, int] = {}
    ceiling = snapshot_ceiling(ceiling_source, root)
    etcd_ok = shutil.which("etcd") is not None
    if not etcd_ok:
        out["etcd_skipped"] = "etcd not found: apt-get install etcd-server"
        log("peers: " + out["etcd_skipped"])
    on = Node(binary, root / "peers-audit-on", free_ports(1)[0])
    off = Node(binary, root / "peers-audit-off", free_ports(1)[0], {"OSC_AUDIT_ENABLED": "false"})
    try:
        for node in (on, off):
            node.start()
            c = Client(node.port, {"X-User-Key": user_key})
            c.json("POST", "/configs", {"key": "hot", "value": json.loads(value), "environment": "hot"}, expect=(201,))
            status, _, payload = c.request("GET", "/configs/hot?environment=hot")
            c.close()
            out["read_body_bytes"] = len(payload)
        servers["secureconf_audit_on"] = on.port
        servers["secureconf_audit_off"] = off.port
        if ceiling is not None:
            port = free_ports(1)[0]
            spawn([str(ceiling), str(port), str(out["read_body_bytes"])], stdin=subprocess.DEVNULL,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while not health_ok(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            servers["ceiling"] = port
        else:
            out["ceiling_skipped"] = f"{ceiling_source} not found: swift build -c release --product secureconf-ceiling"
            log("peers: " + out["ceiling_skipped"])
        etcd1: list[EtcdMember] = []
        if etcd_ok:
            etcd1 = etcd_cluster(root, "peers-etcd", 1)
            etcd1[0].put("hot", value)
            servers["etcd"] = etcd1[0].port
        scripts = {"ceiling": "read_one.lua", "etcd": "etcd_read.lua",
                   "secureconf_audit_on": "read_one.lua", "secureconf_audit_off": "read_one.lua"}
        read_env = {"BENCH_USER_KEY": user_key, "BENCH_ENV": "hot", "BENCH_KEY": "hot"}
        reads: dict[str, list[dict]] = {name: [] for name in servers}
        for name, port in servers.items():
            run_wrk(scripts[name], port, 1, read_env)   # warm-up
        for i in range(rounds):
            order = list(servers.items()) if i % 2 == 0 else list(reversed(servers.items()))
            for name, port in order:
                log(f"peers: warm reads of one key, {name}, round {i + 1} of {rounds} ({duration} s)")
                reads[name].append(run_wrk(scripts[name], port, duration, read_env))
        out["reads"] = {name: best_of(rs) for name, rs in reads.items()}
        writes: dict[str, dict] = {}
        for name, port, script in (("etcd", servers.get("etcd"), "etcd_put.lua"),
                                   ("secureconf_audit_on", on.port, "write_unique.lua"),
                                   ("secureconf_audit_off", off.port, "write_unique.lua")):
            if port is None:
                continue
            log(f"peers: unique-key writes, {name} ({duration} s)")
            writes[name] = run_wrk(script, port, duration, dict(read_env, BENCH_PREFIX=f"u-{random_token(6)}"))
        out["writes"] = writes
        out["rss_mb"] = {"secureconf_audit_on": mb(on.hwm_kb()), "secureconf_audit_off": mb(off.hwm_kb())}
    finally:
        stop_all_children()

    three: dict = {}
    out["three_nodes"] = three
    if etcd_ok:
        members = etcd_cluster(root, "peers-etcd3", 3)
        try:
            log(f"peers: three etcd members, unique-key puts to one of them ({duration} s)")
            three["etcd"] = run_wrk("etcd_put.lua", members[0].port, duration, {"BENCH_PREFIX": f"e3-{random_token(6)}"})
        finally:
            stop_all_children()
    for quorum in ("1", "majority"):
        r: dict = {}
        three[f"secureconf_quorum_{quorum}"] = r
        run_replica_cluster(binary, root, f"peers-q{quorum}", duration, r, spread=False,
                            extra_env={"OSC_CLUSTER_WRITE_QUORUM": quorum})


def ratio(a, b):
    return None if not a or not b else round(a / b, 3)


def peer_rows(r: dict) -> list[dict]:
    """The side-by-side table: each figure, each ratio, each target of issue 14."""
    p = r.get("peers") or {}
    rows: list[dict] = []
    if not p:
        return rows
    reads, writes, three = p.get("reads", {}), p.get("writes", {}), p.get("three_nodes", {})

    def ok_per_s(w):
        return None if not w else w["ok_per_s"]

    def figure(name, w, unit):
        if not w:
            rows.append({"measurement": name, "value": "not measured", "p50": None, "p99": None, "target": "—", "met": None})
            return
        v = f"{fmt_int(w['ok_per_s'])} {unit}"
        if w.get("non2xx"):
            v += f" ({w['non2xx']:,} non-2xx)"
        lat = w.get("latency_ms") or {}
        rows.append({"measurement": name, "value": v, "p50": fmt_ms(lat.get("p50")) if lat else None,
                     "p99": fmt_ms(lat.get("p99")) if lat else None, "target": "—", "met": None})

    def target(name, value, want, label):
        rows.append({"measurement": name, "value": "not measured" if value is None else f"{value:.2f}×",
                     "p50": None, "p99": None, "target": label, "met": None if value is None else value >= want})

    figure("HTTP ceiling (Hummingbird, constant body)", reads.get("ceiling"), "req/s")
    figure("etcd 3.4, serializable reads of one key", reads.get("etcd"), "reads/s")
    figure("SecureConf, warm reads of one key, audit on", reads.get("secureconf_audit_on"), "reads/s")
    figure("SecureConf, warm reads of one key, audit off", reads.get("secureconf_audit_off"), "reads/s")
    figure("etcd 3.4, unique-key puts", writes.get("etcd"), "puts/s")
    figure("SecureConf, unique-key creates, audit on", writes.get("secureconf_audit_on"), "writes/s")
    figure("SecureConf, unique-key creates, audit off", writes.get("secureconf_audit_off"), "writes/s")
    figure("etcd 3.4, three members, puts to one", three.get("etcd"), "puts/s")
    for q in ("1", "majority"):
        c = three.get(f"secureconf_quorum_{q}") or {}
        lat = c.get("per_node_latency_ms") or []
        rows.append({"measurement": f"SecureConf, three nodes, quorum {q}, writes to one",
                     "value": "not measured" if "writes_per_s" not in c else
                     f"{fmt_int(c['writes_per_s'])} writes/s ({c['non2xx']:,} non-2xx), agreed after "
                     f"{'—' if c.get('agreement_ms') is None else fmt_ms(c['agreement_ms'])}",
                     "p50": fmt_ms(lat[0]["p50"]) if lat else None, "p99": fmt_ms(lat[0]["p99"]) if lat else None,
                     "target": "agreement ≤ 1,000 ms", "met": None if c.get("agreement_ms") is None and "writes_per_s" not in c
                     else (c.get("agreement_ms") is not None and c["agreement_ms"] <= 1000 and c.get("revisions_equal_acknowledged", False))})

    on, off = reads.get("secureconf_audit_on"), reads.get("secureconf_audit_off")
    target("reads, audit on / HTTP ceiling", ratio(ok_per_s(on), ok_per_s(reads.get("ceiling"))), 0.5, "≥ 0.5×")
    target("reads, audit on / etcd reads", ratio(ok_per_s(on), ok_per_s(reads.get("etcd"))), 2.0, "≥ 2×")
    target("reads, audit on / audit off", ratio(ok_per_s(on), ok_per_s(off)), 0.85, "≥ 0.85×")
    target("unique-key creates (audit on) / etcd puts", ratio(ok_per_s(writes.get("secureconf_audit_on")),
                                                               ok_per_s(writes.get("etcd"))), 1.5, "≥ 1.5×")
    if on:
        p99 = on["latency_ms"]["p99"]
        rows.append({"measurement": "p99 of warm reads, audit on, c32", "value": fmt_ms(p99), "p50": None, "p99": None,
                     "target": "≤ 3 ms", "met": p99 <= 3.0})
    creates = ok_per_s(r.get("writes_unique"))
    target("updates / creates (single-node phase)", ratio(ok_per_s(r.get("updates")), creates), 1.0, "≥ 1×")
    target("90/10 mix / creates (single-node phase)", ratio(ok_per_s(r.get("mix_90_10")), creates), 1.0, "≥ 1×")
    target("reads of 10,000 random keys / of one key (single-node phase)",
           ratio(ok_per_s(r.get("read_10k")), ok_per_s(r.get("read_one"))), 0.9, "≥ 0.9×")
    q1, qm = three.get("secureconf_quorum_1") or {}, three.get("secureconf_quorum_majority") or {}
    target("three nodes, quorum majority / etcd three members", ratio(qm.get("writes_per_s"), ok_per_s(three.get("etcd"))),
           1.2, "≥ 1.2×")
    v = q1.get("writes_per_s")
    rows.append({"measurement": "three nodes, quorum 1", "value": "not measured" if v is None else f"{fmt_int(v)} writes/s",
                 "p50": None, "p99": None, "target": "≥ 6,000/s", "met": None if v is None else v >= 6000})
    kdf, fr = r.get("kdf"), r.get("first_request")
    if kdf and fr:
        x = fr["median_ms"] / kdf["sha256_limit_ms"]
        rows.append({"measurement": "first request with a new user key / SHA-256 limit of the derivation",
                     "value": f"{x:.2f}× ({fmt_ms(fr['median_ms'])} / {fmt_ms(kdf['sha256_limit_ms'])})",
                     "p50": None, "p99": None, "target": "≤ 1.2×", "met": x <= 1.2})
    return rows


# --------------------------------------------------------------------------- growth (issue 14, item 5)

GROWTH_SIZES = [1_000, 10_000, 100_000, 1_000_000]
GROWTH_CLIENTS = [1, 4, 16, 64]


def metric_value(port: int, name: str, headers: dict[str, str]) -> float | None:
    c = Client(port, headers)
    try:
        status, _, payload = c.request("GET", "/metrics")
    finally:
        c.close()
    if status != 200:
        return None
    for line in payload.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def anti_entropy_round(binary: Path, root: Path, source: Path, entries: int) -> dict:
    """Two replica nodes started on copies of one store (so they agree): the mean duration of
    their anti-entropy rounds (digest exchange and comparison), from
    osc_cluster_sync_duration_seconds, over the rounds after the first two."""
    ports = free_ports(2)
    api_key = random_token(32)
    members = ",".join(f"{HOST}:{p}" for p in ports)
    nodes = []
    for i, port in enumerate(ports):
        workdir = root / f"growth-ae-{i}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        for name in ("configurations.db", "configurations.db-wal", "encryption.salt"):
            if (source / name).exists():
                shutil.copy2(source / name, workdir / name)
        nodes.append(Node(binary, workdir, port, {
            "OSC_CLUSTER_ENABLED": "true", "OSC_CLUSTER_MODE": "replica", "OSC_CLUSTER_NODE_ID": f"{HOST}:{port}",
            "OSC_CLUSTER_NODES": members, "OSC_API_KEY_REQUIRED": "true", "OSC_API_KEY": api_key,
            "OSC_CLUSTER_SYNC_INTERVAL": "1",
        }))
    headers = {"X-API-Key": api_key}
    try:
        for n in nodes:
            n.start(ready_timeout=300)
        # Rounds count only once each node sees the other healthy (its health probe runs every 5 s).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            healthy = []
            for n in nodes:
                c = Client(n.port, headers)
                healthy.append(c.json("GET", "/cluster/status")["healthy_nodes"])
                c.close()
            if healthy == [2, 2]:
                break
            time.sleep(0.2)
        else:
            raise BenchError("anti-entropy: the two nodes never saw each other healthy")
        name = "osc_cluster_sync_duration_seconds"
        first = None
        while time.monotonic() < deadline:
            count = metric_value(nodes[0].port, name + "_count", headers) or 0
            total = metric_value(nodes[0].port, name + "_sum", headers) or 0.0
            if first is None:
                first = (count, total)
            elif first is not None and count >= first[0] + 3:
                digests = set()
                for n in nodes:
                    c = Client(n.port, headers)
                    digests.add(c.json("GET", "/cluster/digest")["digest"])
                    c.close()
                return {"entries": entries, "rounds": int(count - first[0]),
                        "round_ms": round((total - first[1]) / (count - first[0]) * 1000, 2),
                        "digests_equal": len(digests) == 1}
            time.sleep(0.2)
        raise BenchError("anti-entropy: fewer than 5 rounds in 120 s")
    finally:
        stop_processes([n.proc for n in nodes if n.proc is not None])
        for n in nodes:
            shutil.rmtree(n.workdir, ignore_errors=True)


def list_page_ms(port: int, user_key: str, env_name: str, pages: int = 5) -> dict:
    """Median time of one 1,000-entry page, over the first `pages` pages of a walk."""
    c = Client(port, {"X-User-Key": user_key})
    times = []
    after = None
    try:
        for _ in range(pages):
            q = f"/configs?environment={env_name}&limit=1000" + (f"&after={after}" if after else "")
            t0 = time.perf_counter()
            status, headers, payload = c.request("GET", q)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise BenchError(f"GET {q}: HTTP {status}")
            after = headers.get("X-SecureConf-Next-After")
            if not after:
                break
    finally:
        c.close()
    return {"pages": len(times), "median_ms": round(statistics.median(times), 2)}


def phase_growth(binary: Path, root: Path, duration: int, sizes: list[int], clients: list[int], results: dict) -> None:
    """How cost grows with the work: one store grown through the API to each size in turn;
    at each, warm reads and updates of random keys, a list page, start-up, RSS, database size
    and one anti-entropy round between two nodes; then three-node replicated writes (quorum
    majority, to one node) at each number of concurrent clients."""
    out: dict = {"sizes": [], "cluster_clients": []}
    results["growth"] = out
    user_key = "bench-" + random_token(24)
    env_name, prefix = "growth", "g-"
    node = Node(binary, root / "growth", free_ports(1)[0])
    node.start()
    have = 0
    try:
        for n in sizes:
            log(f"growth: {n:,} entries (populating {n - have:,})")
            pop = populate(node, n - have, env_name, prefix, user_key, timeout=max(300.0, (n - have) / 1000), first=have)
            have = n
            common = {"BENCH_USER_KEY": user_key, "BENCH_ENV": env_name, "BENCH_KEY_PREFIX": prefix, "BENCH_KEYS": str(n)}
            run_wrk("read_random.lua", node.port, 1, common)
            reads = run_wrk("read_random.lua", node.port, duration, common)
            updates = run_wrk("update_random.lua", node.port, duration, common)
            page = list_page_ms(node.port, user_key, env_name)
            rss_loaded = mb(node.rss_kb())
            node.stop()
            db_bytes = sum(p.stat().st_size for p in node.workdir.glob("configurations.db*"))
            log(f"growth: {n:,} entries: anti-entropy round between two copies")
            ae = anti_entropy_round(binary, root, node.workdir, n)
            node.port = free_ports(1)[0]
            startup = node.start(ready_timeout=300)
            time.sleep(1.0)
            step = {"entries": n, "populate_writes_per_s": pop["writes_per_s"],
                    "reads_per_s": reads["ok_per_s"], "read_p99_ms": reads["latency_ms"]["p99"],
                    "updates_per_s": updates["ok_per_s"], "update_p99_ms": updates["latency_ms"]["p99"],
                    "list_page_ms": page["median_ms"], "startup_ms": round(startup * 1000, 1),
                    "rss_after_load_mb": rss_loaded, "rss_idle_after_restart_mb": mb(node.rss_kb()),
                    "database_mb": round(db_bytes / 1e6, 1), "anti_entropy_round_ms": ae["round_ms"],
                    "anti_entropy_digests_equal": ae["digests_equal"],
                    "non2xx": reads["non2xx"] + updates["non2xx"]}
            out["sizes"].append(step)
            log(f"growth: {json.dumps(step)}")
    finally:
        node.stop()
    for c in clients:
        r: dict = {"clients": c}
        log(f"growth: three nodes, quorum majority, {c} concurrent client(s)")
        run_replica_cluster(binary, root, f"growth-c{c}", duration, r, spread=False,
                            extra_env={"OSC_CLUSTER_WRITE_QUORUM": "majority"}, connections=c)
        out["cluster_clients"].append(r)


def growth_plot(growth: dict, path: Path) -> str | None:
    """Draws the growth figures (matplotlib, PyPI); returns why not when it cannot."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install matplotlib): no plot"
    steps = growth.get("sizes") or []
    if not steps:
        return "no growth figures"
    xs = [s["entries"] for s in steps]
    panels = [
        ("warm reads and updates (req/s)", [("reads", "reads_per_s"), ("updates", "updates_per_s")]),
        ("list page of 1,000 (ms)", [("page", "list_page_ms")]),
        ("start-up (ms)", [("start-up", "startup_ms")]),
        ("memory and disk (MB)", [("RSS after load", "rss_after_load_mb"), ("database", "database_mb")]),
        ("anti-entropy round, two nodes (ms)", [("round", "anti_entropy_round_ms")]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (title, series) in zip(axes.flat, panels):
        for label, key in series:
            ax.plot(xs, [s[key] for s in steps], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("entries")
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    ax = axes.flat[5]
    cl = [c for c in growth.get("cluster_clients") or [] if "writes_per_s" in c]
    if cl:
        ax.plot([c["clients"] for c in cl], [c["writes_per_s"] for c in cl], marker="o")
        ax.set_xscale("log", base=2)
    ax.set_title("three nodes, quorum majority: writes/s", fontsize=10)
    ax.set_xlabel("concurrent clients")
    ax.grid(True, alpha=0.3)
    fig.suptitle("SecureConf: how cost grows with the work (bench/bench.py --only growth)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def phase_postgres(binary: Path, root: Path, duration: int, results: dict) -> None:
    """SQLite beside PostgreSQL, the same load: one node on each (warm reads of one key and
    unique-key creates), then three nodes on one PostgreSQL with the load spread over them (one
    wrk per node, a third of the connections each). PostgreSQL is a private server from
    Debian's package (tests/postgres/pgserver.py), fsync on, on the same machine."""
    sys.path.insert(0, str(REPO_ROOT / "tests" / "postgres"))
    from pgserver import PgServer  # noqa: E402  (the test suite's server)

    out: dict = {}
    results["postgres"] = out
    user_key = "bench-" + random_token(24)
    run_id = random_token(8)
    with PgServer() as pg:
        pg.create_role_and_db("bench", "bench-password", "bench")
        url = pg.url("bench", "bench-password", "bench")
        salt = root / "pg-shared.salt"

        def measure(nodes: list[Node], label: str) -> dict:
            hot = f"hot-{label}-{run_id}"
            c = Client(nodes[0].port, {"X-User-Key": user_key})
            c.json("POST", "/configs", {"key": hot, "value": {"host": "db.internal", "password": "s3cret"},
                                        "environment": "hot"}, expect=(201,))
            c.close()
            for n in nodes:
                w = Client(n.port, {"X-User-Key": user_key})
                w.json("GET", f"/configs/{hot}?environment=hot")
                w.close()
            env = {"BENCH_USER_KEY": user_key, "BENCH_ENV": "hot", "BENCH_KEY": hot}

            def spread(script: str, extra: dict) -> dict:
                per = max(1, 32 // len(nodes))
                # Each wrk its own key prefix: creates through different nodes never collide.
                runs = [Wrk(script, n.port, 1 if len(nodes) > 1 else 2, per if len(nodes) > 1 else 32, duration,
                            dict(env, **{k: f"{v}-{i}" for k, v in extra.items()})) for i, n in enumerate(nodes)]
                got = [r.result() for r in runs]
                return {"ok_per_s": round(sum(g["ok_per_s"] for g in got), 1),
                        "non2xx": sum(g.get("non2xx", 0) for g in got),
                        "p99_ms": max(g["latency_ms"]["p99"] for g in got)}

            spread("read_one.lua", {})  # warm-up
            return {"reads": spread("read_one.lua", {}),
                    "creates": spread("write_unique.lua", {"BENCH_PREFIX": f"w-{label}-{run_id}"})}

        log("postgres: one node on SQLite")
        lite = Node(binary, root / "pg-vs-sqlite", free_ports(1)[0])
        lite.start()
        try:
            out["sqlite_one_node"] = measure([lite], "sqlite")
        finally:
            lite.stop()
        log("postgres: one node on PostgreSQL")
        pg_env = {"OSC_DATABASE_URL": url, "OSC_SALT_FILE_PATH": str(salt)}
        one = Node(binary, root / "pg-node-1", free_ports(1)[0], pg_env)
        one.start()
        try:
            out["postgres_one_node"] = measure([one], "pg1")
        finally:
            one.stop()
        log("postgres: three nodes on one PostgreSQL, the load spread over them")
        three = [Node(binary, root / f"pg-three-{i}", port, pg_env) for i, port in enumerate(free_ports(3))]
        for n in three:
            n.start()
        try:
            out["postgres_three_nodes"] = measure(three, "pg3")
        finally:
            for n in three:
                n.stop()


def postgres_rows(r: dict) -> list[dict]:
    p = r.get("postgres") or {}
    rows = []
    for name, label in (("sqlite_one_node", "one node, SQLite"), ("postgres_one_node", "one node, PostgreSQL"),
                        ("postgres_three_nodes", "three nodes, one PostgreSQL, load spread")):
        m = p.get(name)
        if not m:
            continue
        for kind in ("reads", "creates"):
            w = m[kind]
            rows.append({"measurement": f"{label}: {'warm reads of one key' if kind == 'reads' else 'unique-key creates'}",
                         "value": f"{fmt_int(w['ok_per_s'])}/s" + (f" ({w['non2xx']:,} non-2xx)" if w["non2xx"] else ""),
                         "p50": None, "p99": fmt_ms(w["p99_ms"]), "target": "—", "met": None})
    return rows


def growth_rows(r: dict) -> list[dict]:
    g = r.get("growth") or {}
    rows = []
    for s in g.get("sizes") or []:
        rows.append({"measurement": f"{s['entries']:,} entries",
                     "value": f"reads {fmt_int(s['reads_per_s'])}/s, updates {fmt_int(s['updates_per_s'])}/s, "
                              f"page {fmt_ms(s['list_page_ms'])}, start-up {fmt_ms(s['startup_ms'])}, "
                              f"RSS {s['rss_after_load_mb']} MB, db {s['database_mb']} MB, "
                              f"anti-entropy round {fmt_ms(s['anti_entropy_round_ms'])}",
                     "p50": None, "p99": fmt_ms(s["read_p99_ms"]), "target": "—", "met": None})
    for c in g.get("cluster_clients") or []:
        rows.append({"measurement": f"three nodes, majority, {c['clients']} client(s)",
                     "value": "not measured" if "writes_per_s" not in c else
                     f"{fmt_int(c['writes_per_s'])} writes/s ({c['non2xx']:,} non-2xx), agreed after "
                     f"{'—' if c.get('agreement_ms') is None else fmt_ms(c['agreement_ms'])}",
                     "p50": None, "p99": None, "target": "—", "met": None})
    return rows


# --------------------------------------------------------------------------- report

def fmt_int(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_ms(x) -> str:
    return "—" if x is None else (f"{x:.2f} ms" if x < 100 else f"{x:,.0f} ms")


def mark(ok) -> str:
    return "—" if ok is None else ("met" if ok else "NOT MET")


ROW_PHASE = {"kdf": "kdf", "startup_100k": "startup", "cluster": "cluster", "auth": "auth"}


def build_rows(r: dict, phase_errors: dict[str, str] | None = None) -> list[dict]:
    """Table rows; a figure missing because its phase failed says so."""
    rows = []
    phase_errors = phase_errors or {}

    def row(name, value, p50=None, p99=None, target="—", met=None, key=None):
        phase = ROW_PHASE.get(key, "single")
        if value in ("not measured", "skipped: not measured", "skipped") and phase in phase_errors:
            value = f"not measured: {phase} failed (error below)"
        rows.append({"measurement": name, "value": value, "p50": p50, "p99": p99, "target": target,
                     "met": met, "key": key})

    def wrk_row(name, key, unit, target=None, check=None):
        w = r.get(key)
        if not w:
            row(name, "not measured", target=target or "—", key=key)
            return
        value = f"{fmt_int(w['ok_per_s'])} {unit}"
        if w["non2xx"] or any(w["errors"][e] for e in ("connect", "read", "write", "timeout")):
            errs = ", ".join(f"{k} {v}" for k, v in w["errors"].items() if v and k != "status")
            value += f" ({w['non2xx']:,} non-2xx{', ' + errs if errs else ''})"
        row(name, value, fmt_ms(w["latency_ms"]["p50"]), fmt_ms(w["latency_ms"]["p99"]),
            target or "—", check(w) if check else None, key)

    def reads_ok(w):
        return w["ok_per_s"] >= TARGET_READS_PER_S and w["latency_ms"]["p99"] <= TARGET_READ_P99_MS and w["non2xx"] == 0

    read_target = f"≥ {TARGET_READS_PER_S:,}/s, p99 ≤ {TARGET_READ_P99_MS:g} ms"
    wrk_row("warm reads, one key (c32)", "read_one", "reads/s", read_target, reads_ok)
    wrk_row("warm reads, 10,000 random keys (c32)", "read_10k", "reads/s", read_target, reads_ok)
    wrk_row("unique-key writes (c32)", "writes_unique", "writes/s", f"≥ {TARGET_WRITES_PER_S:,}/s, 0 non-2xx",
            lambda w: w["ok_per_s"] >= TARGET_WRITES_PER_S and w["non2xx"] == 0)
    wrk_row("updates, 10,000 keys (c32)", "updates", "updates/s")
    wrk_row("90/10 read/update mix (c32)", "mix_90_10", "req/s")

    lst = r.get("list_10k")
    if lst:
        row("list 10,000, limit=1000 walk", f"{lst['pages_per_s']:,.1f} pages/s, walk {fmt_ms(lst['walk_ms_median'])} "
            f"({lst['requests_per_walk']} requests)", key="list_10k")
        row("list 10,000, unpaginated", fmt_ms(lst["unpaginated_ms_median"]) + f" ({lst['unpaginated_bytes'] / 1e6:.1f} MB)",
            key="list_10k")
        for problem in lst.get("problems", []):
            row("  list problem", problem, key="list_10k")
    else:
        row("list 10,000", "not measured", key="list_10k")

    fr = r.get("first_request")
    if fr:
        row("first request, new user key", f"median {fmt_ms(fr['median_ms'])} of {fr['samples']} "
            f"(min {fr['min_ms']:.1f}, max {fr['max_ms']:.1f})", fmt_ms(fr["median_ms"]), None,
            f"≤ {TARGET_FIRST_REQUEST_MS:g} ms", fr["median_ms"] <= TARGET_FIRST_REQUEST_MS, "first_request")
    else:
        row("first request, new user key", "not measured", target=f"≤ {TARGET_FIRST_REQUEST_MS:g} ms", key="first_request")

    kdf = r.get("kdf")
    if kdf:
        row("key derivation (PBKDF2, 480k)", f"{kdf['secureconf_pbkdf2_ms']:.1f} ms = {kdf['ratio_to_limit']:.2f}× "
            f"SHA-256 limit {kdf['sha256_limit_ms']:.1f} ms (OpenSSL {kdf['openssl_pkcs5_pbkdf2_ms']:.1f} ms)",
            target=f"≤ {TARGET_KDF_RATIO:g}× limit", met=kdf["ratio_to_limit"] <= TARGET_KDF_RATIO, key="kdf")
    else:
        row("key derivation", "not measured", target=f"≤ {TARGET_KDF_RATIO:g}× limit", key="kdf")

    idle, peak = r.get("rss_idle_mb"), r.get("rss_peak_mb")
    row("RSS idle after start", "not measured" if idle is None else f"{idle:.1f} MB",
        target=f"≤ {TARGET_RSS_IDLE_MB:g} MB", met=None if idle is None else idle <= TARGET_RSS_IDLE_MB, key="rss_idle_mb")
    row("RSS peak under load (VmHWM)", "not measured" if peak is None else f"{peak:.1f} MB",
        target=f"≤ {TARGET_RSS_LOAD_MB:g} MB", met=None if peak is None else peak <= TARGET_RSS_LOAD_MB, key="rss_peak_mb")

    if r.get("startup_empty_s") is not None:
        row("start-up, empty store", fmt_ms(r["startup_empty_s"] * 1000), key="startup_empty_s")
    su = r.get("startup_100k")
    if su:
        row("start-up, 100,000 entries (best of 3)", fmt_ms(su["best_s"] * 1000) + f" (median {fmt_ms(su['median_s'] * 1000)})",
            target=f"≤ {TARGET_STARTUP_S:g} s", met=su["best_s"] <= TARGET_STARTUP_S, key="startup_100k")
    else:
        row("start-up, 100,000 entries", r.get("startup_skipped", "not measured"), target=f"≤ {TARGET_STARTUP_S:g} s",
            key="startup_100k")

    auth = r.get("auth") or {}
    if auth:
        for mode in ("apikey", "tokens"):
            w = auth[f"read_one_{mode}"]
            row(f"warm reads, one key, {mode} mode (median of 5)", f"{fmt_int(w['ok_per_s'])} reads/s",
                fmt_ms(w["latency_ms"]["p50"]), fmt_ms(w["latency_ms"]["p99"]), key="auth")
        cpu = auth.get("node_cpu_us_per_read") or {}
        row("node CPU per warm read, apikey / tokens mode", f"{cpu.get('apikey', '?')} / {cpu.get('tokens', '?')} µs", key="auth")
        row("token verification (parse, cached principal, policy), in-process", f"{auth.get('verify_us_in_process')} µs", key="auth")
        row("token verification overhead on warm reads: throughput", f"{auth['token_overhead_pct']:.1f} %", target="< 5 %",
            met=auth["token_overhead_pct"] < 5, key="auth")
        if auth.get("cpu_overhead_pct") is not None:
            row("token verification overhead on warm reads: node CPU per read", f"{auth['cpu_overhead_pct']:.1f} %", target="< 5 %",
                met=auth["cpu_overhead_pct"] < 5, key="auth")
    else:
        row("token verification overhead on warm reads", "not measured", target="< 5 %", key="auth")
    cl = r.get("cluster") or {}
    reason = cl.get("skipped") or r.get("cluster_skipped")
    writes_target = f"≥ {TARGET_CLUSTER_WRITES_PER_S:,}/s"
    agree_target = f"≤ {TARGET_CLUSTER_AGREEMENT_MS:,.0f} ms, revisions = acked"
    if "writes_per_s" in cl:
        lat = cl.get("per_node_latency_ms")
        row("3-node replicated writes (3 × c16)", f"{fmt_int(cl['writes_per_s'])} writes/s "
            f"({cl['acknowledged_writes']:,} acked, {cl['non2xx']:,} non-2xx)",
            fmt_ms(max(x["p50"] for x in lat)) if lat else None, fmt_ms(max(x["p99"] for x in lat)) if lat else None,
            writes_target, cl["writes_per_s"] >= TARGET_CLUSTER_WRITES_PER_S and cl["non2xx"] == 0, "cluster")
    else:
        row("3-node replicated writes", "not measured" if not reason else
            reason if reason.startswith("skipped") else "skipped: " + reason, target=writes_target, key="cluster")
    if "agreement_ms" in cl:
        agree = cl["agreement_ms"]
        revs = cl["final_revisions"][0] if cl["final_revisions"] else None
        row("3-node agreement after the load", ("no agreement in 60 s" if agree is None else fmt_ms(agree)) +
            f"; revisions {fmt_int(revs)} {'=' if cl['revisions_equal_acknowledged'] else '≠'} acked {cl['acknowledged_writes']:,}",
            target=agree_target,
            met=agree is not None and agree <= TARGET_CLUSTER_AGREEMENT_MS and cl["revisions_equal_acknowledged"], key="cluster")
    else:
        row("3-node agreement after the load", "skipped" if reason else "not measured", target=agree_target, key="cluster")
    return rows


def render_table(rows: list[dict]) -> str:
    headers = ["measurement", "value", "p50", "p99", "target", "met"]
    cells = [[row["measurement"], row["value"], row["p50"] or "", row["p99"] or "", row["target"], mark(row["met"])]
             for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for c in cells:
        out.append("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark a SecureConf release binary against the targets of issue 5.")
    parser.add_argument("--quick", action="store_true", help="3 s per load test instead of 10 s (about a minute in all)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per load test (default 10, 3 with --quick)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON results to FILE")
    parser.add_argument("--skip-cluster", action="store_true", help="skip the three-node replica cluster test")
    parser.add_argument("--skip-startup", action="store_true", help="skip the 100,000-entry start-up test")
    parser.add_argument("--bin", metavar="PATH", help="secureconf binary (default: $SECURECONF_BIN, else .build/release/secureconf)")
    parser.add_argument("--only", metavar="PHASES", help="comma-separated subset of: kdf, single, auth, startup, cluster, peers, growth, postgres")
    parser.add_argument("--skip-peers", action="store_true", help="skip the side-by-side run against the HTTP ceiling and etcd")
    parser.add_argument("--growth", metavar="SIZES", nargs="?", const="1000,10000,100000,1000000",
                        help="also measure how cost grows with the entries (default sizes 1000,10000,100000,1000000) "
                             "and with concurrent clients on three nodes; --only growth runs it alone")
    parser.add_argument("--growth-clients", metavar="COUNTS", default=",".join(map(str, GROWTH_CLIENTS)),
                        help="concurrent clients of the growth phase's three-node writes (default 1,4,16,64)")
    parser.add_argument("--plot-out", metavar="FILE", help="where the growth plot goes (default: growth.svg beside --json-out, else in the current directory)")
    parser.add_argument("--rounds", type=int, default=None, help="read rounds of the peers phase (default 3, 1 with --quick)")
    parser.add_argument("--ceiling-bin", metavar="PATH",
                        help="the HTTP ceiling program (default: secureconf-ceiling beside the secureconf binary)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (node logs, databases)")
    args = parser.parse_args()

    duration = args.duration or (3 if args.quick else 10)
    only = {p.strip() for p in args.only.split(",") if p.strip()} if args.only else set()
    known = {"kdf", "single", "auth", "startup", "cluster", "peers", "growth", "postgres"}
    if only - known:
        parser.error(f"--only: unknown phase(s) {', '.join(sorted(only - known))}")
    if duration < 1:
        parser.error("--duration must be at least 1")
    source = Path(args.bin or os.environ.get("SECURECONF_BIN") or REPO_ROOT / ".build" / "release" / "secureconf")
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # Ctrl-C raises KeyboardInterrupt even when started in the background of a script
    # (which would otherwise inherit SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = Path(tempfile.mkdtemp(prefix="secureconf-bench-"))
    started = time.monotonic()
    results: dict = {}
    meta: dict = {}
    phase_errors: dict[str, str] = {}
    error = None
    try:
        binary, version = snapshot_binary(source, root)
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0:1]
        meta = {
            "binary": str(source), "binary_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(source.stat().st_mtime)),
            "version": version, "wrk": wrk_version[0].strip() if wrk_version else "", "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(), "duration_s": duration,
            "quick": args.quick, "loadavg_start": loadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "temp_dir": str(root),
        }
        log(f"binary {source} ({version}); {duration} s per load test; temporary directory {root}")
        if meta["loadavg_start"] and meta["loadavg_start"][0] > 0.5 * (os.cpu_count() or 1):
            log(f"note: load average {meta['loadavg_start'][0]:.2f} before starting: other work on this "
                "machine will depress the figures")

        phases = [("kdf", lambda: results.__setitem__("kdf", phase_kdf(binary))),
                  ("single", lambda: phase_single_node(binary, root, duration, args.quick, results)),
                  ("auth", lambda: phase_auth(binary, root, duration, results))]
        if args.skip_startup:
            results["startup_skipped"] = "skipped (--skip-startup)"
        else:
            phases.append(("startup", lambda: phase_startup(binary, root, 100_000, 3, results)))
        if args.skip_cluster:
            results["cluster_skipped"] = "skipped (--skip-cluster)"
        else:
            phases.append(("cluster", lambda: phase_cluster(binary, root, duration, results)))
        if args.skip_peers:
            results["peers_skipped"] = "skipped (--skip-peers)"
        else:
            ceiling = Path(args.ceiling_bin) if args.ceiling_bin else source.parent / "secureconf-ceiling"
            rounds = args.rounds or (1 if args.quick else 3)
            phases.append(("peers", lambda: phase_peers(binary, ceiling, root, duration, rounds, results)))
        if args.growth or "growth" in only:
            sizes = [int(x) for x in (args.growth or "1000,10000,100000,1000000").split(",") if x.strip()]
            clients = [int(x) for x in args.growth_clients.split(",") if x.strip()]
            phases.append(("growth", lambda: phase_growth(binary, root, duration, sizes, clients, results)))
        if "postgres" in only:
            # Needs Debian's postgresql package: run on request (--only postgres).
            phases.append(("postgres", lambda: phase_postgres(binary, root, duration, results)))
        for name, phase in phases:
            if only and name not in only:
                continue
            try:
                phase()
            except Exception as e:  # noqa: BLE001 - reported, and the other phases still run
                # One phase failing (a node that will not start, say) does not cost the others.
                phase_errors[name] = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
                log(f"error in {name}: {phase_errors[name]}")
                if not isinstance(e, BenchError):
                    traceback.print_exc(file=sys.stderr)
                stop_all_children()
    except (KeyboardInterrupt, Interrupted) as e:
        error = f"interrupted ({str(e) or 'SIGINT'})"
        log(error)
    except BenchError as e:
        error = str(e)
        log(f"error: {e}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all_children()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    meta["loadavg_end"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    rows = build_rows(results, phase_errors)
    side_by_side = peer_rows(results)
    growth = growth_rows(results)
    if results.get("growth"):
        plot = Path(args.plot_out) if args.plot_out else (
            Path(args.json_out).with_name("growth.svg") if args.json_out else Path("growth.svg"))
        why_not = growth_plot(results["growth"], plot)
        results["growth"]["plot"] = why_not or str(plot)
        log(why_not or f"growth plot written to {plot}")
    document = {
        "meta": meta,
        "results": results,
        "targets": [{"measurement": r["measurement"], "value": r["value"], "target": r["target"],
                     "met": r["met"]} for r in rows + side_by_side],
    }
    if phase_errors:
        document["phase_errors"] = phase_errors
    if error:
        document["error"] = error
    print(render_table(rows))
    if side_by_side:
        print()
        print("Side by side, one run, the same load (wrk -t2 -c32 on loopback):")
        print(render_table(side_by_side))
    if growth:
        print()
        print("How cost grows with the work:")
        print(render_table(growth))
    on_postgres = postgres_rows(results)
    if on_postgres:
        print()
        print("SQLite beside PostgreSQL (wrk, 32 connections in all, on loopback):")
        print(render_table(on_postgres))
    for name, message in phase_errors.items():
        print(f"error in {name}: {message}")
    print()
    print(json.dumps(document, indent=2, ensure_ascii=False))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        log(f"JSON written to {args.json_out}")
    if args.keep_temp:
        log(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if error or phase_errors else 0


if __name__ == "__main__":
    sys.exit(main())
