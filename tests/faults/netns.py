"""A private network of namespaces for the fault suite (iproute2 and iptables; needs root).

Layout, all made here and removed by `close()`:

    root namespace            switch namespace "<tag>-sw"          node namespaces "<tag>-n<i>"
    <tag>h (10.213.S.254) ── <tag>hb ─┐
                                      ├─ bridge br0
    node i's eth0 (10.213.S.<i+1>) ── <tag>n<i>b ─┘

The test process (root namespace) reaches every node through its own veth into the switch,
as a client would; nodes reach each other through the bridge. Faults are iptables rules inside
a node's namespace (so they cut node-to-node links and never the test's own traffic) and a
delaying proxy (`delayproxy.py`) that iptables DNAT puts on one node's links. Nothing here
touches any address outside the subnet it picked, which is checked to be unused.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROXY_MARK = 0x5C  # set by the delay proxy on its own sockets: its traffic is never redirected
HERE = Path(__file__).resolve().parent


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def available() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "the fault suite needs root (ip netns, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-deps.sh --test installs iproute2 and iptables)"
    probe = f"scprobe{os.getpid() % 100000}"
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    try:
        r = run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-s", "10.213.0.1", "-j", "DROP", check=False)
        if r.returncode != 0:
            return f"iptables does not work inside a namespace: {r.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


def _free_subnet() -> int:
    routes = run("ip", "-4", "route", "show", "table", "all").stdout + run("ip", "-4", "addr").stdout
    choices = list(range(1, 250))
    random.shuffle(choices)
    for s in choices:
        if f"10.213.{s}." not in routes:
            return s
    raise RuntimeError("no free 10.213.x.0/24 subnet")


@dataclass
class Host:
    index: int
    namespace: str
    address: str
    proxies: list[subprocess.Popen] = field(default_factory=list)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def sh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(*self.exec_prefix(), *args, check=check)


class Network:
    """`n` node namespaces on one bridge, plus the test's own link to it."""

    def __init__(self, n: int):
        self.tag = f"sf{os.getpid() % 10000}{random.randint(10, 99)}"
        self.subnet = _free_subnet()
        self.prefix = f"10.213.{self.subnet}"
        self.switch = f"{self.tag}-sw"
        self.host_link = f"{self.tag}h"
        self.hosts: list[Host] = []
        self.faults: list[str] = []
        try:
            self._build(n)
        except Exception:
            self.close()
            raise

    def _build(self, n: int) -> None:
        run("ip", "netns", "add", self.switch)
        sw = ["ip", "netns", "exec", self.switch]
        run(*sw, "ip", "link", "set", "lo", "up")
        run(*sw, "ip", "link", "add", "br0", "type", "bridge")
        run(*sw, "ip", "link", "set", "br0", "up")
        # The test's own link: an address in the subnet, a route to the subnet only.
        run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", f"{self.host_link}b")
        run("ip", "link", "set", f"{self.host_link}b", "netns", self.switch)
        run(*sw, "ip", "link", "set", f"{self.host_link}b", "master", "br0")
        run(*sw, "ip", "link", "set", f"{self.host_link}b", "up")
        run("ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.host_link)
        run("ip", "link", "set", self.host_link, "up")
        for i in range(n):
            ns = f"{self.tag}-n{i}"
            link = f"{self.tag}n{i}"
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}b")
            run("ip", "link", "set", link, "netns", ns)
            run("ip", "link", "set", f"{link}b", "netns", self.switch)
            run(*sw, "ip", "link", "set", f"{link}b", "master", "br0")
            run(*sw, "ip", "link", "set", f"{link}b", "up")
            host = Host(i, ns, f"{self.prefix}.{i + 1}")
            host.sh("ip", "link", "set", "lo", "up")
            host.sh("ip", "link", "set", link, "name", "eth0")
            host.sh("ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
            host.sh("ip", "link", "set", "eth0", "up")
            self.hosts.append(host)

    # -- faults

    def _drop(self, host: Host, chain: str, match: list[str]) -> None:
        host.sh("iptables", "-A", chain, *match, "-j", "DROP")

    def cut(self, a: int, b: int) -> None:
        """No packet between nodes a and b, either way (silently dropped, as a dead link does)."""
        ha, hb = self.hosts[a], self.hosts[b]
        self._drop(ha, "INPUT", ["-s", hb.address])
        self._drop(ha, "OUTPUT", ["-d", hb.address])
        self._drop(hb, "INPUT", ["-s", ha.address])
        self._drop(hb, "OUTPUT", ["-d", ha.address])
        self.faults.append(f"cut {a}-{b}")

    def isolate(self, i: int) -> None:
        """Node i reaches no other node and no other node reaches it (clients still do)."""
        for j in range(len(self.hosts)):
            if j != i:
                self.cut(i, j)

    def one_way(self, src: int, dst: int) -> None:
        """`src` can no longer open connections to `dst`; `dst` still reaches `src` (its
        connections and their replies pass): the asymmetric partition."""
        hs, hd = self.hosts[src], self.hosts[dst]
        self._drop(hs, "OUTPUT", ["-d", hd.address, "-p", "tcp", "--syn"])
        self._drop(hs, "OUTPUT", ["-d", hd.address, "-p", "icmp"])
        self.faults.append(f"one-way {src}-/->{dst}")

    def slow_link(self, i: int, port: int, delay_ms: int, jitter_ms: int, loss: float) -> None:
        """Node i's links to every other node go through a proxy in its namespace that delays
        each chunk by delay±jitter ms and, with probability `loss`, as a lost segment would
        (a retransmission timeout, 200–600 ms more). Both directions: i's own connections to
        its peers (DNAT on OUTPUT) and theirs to i (DNAT on PREROUTING)."""
        h = self.hosts[i]
        routes = []
        listen = 20000
        for other in self.hosts:
            if other is h:
                continue
            listen += 1
            routes.append((listen, other.address, port))
            h.sh("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", other.address, "--dport", str(port),
                 "-m", "mark", "!", "--mark", str(PROXY_MARK), "-j", "DNAT", "--to-destination", f"{h.address}:{listen}")
        listen += 1
        routes.append((listen, h.address, port))
        for other in self.hosts:
            if other is not h:
                h.sh("iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-s", other.address, "-d", h.address,
                     "--dport", str(port), "-j", "DNAT", "--to-destination", f"{h.address}:{listen}")
        spec = ",".join(f"{lp}={addr}:{p}" for lp, addr, p in routes)
        proxy = subprocess.Popen([*h.exec_prefix(), sys.executable, str(HERE / "delayproxy.py"), "--bind", h.address,
                                  "--routes", spec, "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms),
                                  "--loss", str(loss), "--mark", str(PROXY_MARK)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = proxy.stdout.readline()
        if not line.startswith("ready"):
            proxy.kill()
            raise RuntimeError(f"delay proxy did not start: {line}{proxy.stdout.read()}")
        h.proxies.append(proxy)
        self.faults.append(f"slow {i} {delay_ms}±{jitter_ms}ms loss {loss:.0%}")

    def write_hosts(self, names: dict[str, str]) -> None:
        """A private /etc/hosts for every node namespace (name -> address): `ip netns exec`
        bind-mounts /etc/netns/<namespace>/hosts over /etc/hosts in the mount namespace it
        makes for the command, so the machine's own hosts file is never touched."""
        text = "127.0.0.1\tlocalhost\n" + "".join(f"{address}\t{name}\n" for name, address in names.items())
        for h in self.hosts:
            d = Path("/etc/netns") / h.namespace
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(text)

    def heal(self) -> None:
        """Every rule and proxy removed (connections the proxy carried are reset with it)."""
        for h in self.hosts:
            h.sh("iptables", "-F", check=False)
            h.sh("iptables", "-t", "nat", "-F", check=False)
            for p in h.proxies:
                p.kill()
                p.wait(5)
            h.proxies.clear()
        self.faults.append("heal")

    def close(self) -> None:
        for h in self.hosts:
            for p in h.proxies:
                p.kill()
        run("ip", "link", "del", self.host_link, check=False)
        for h in self.hosts:
            run("ip", "netns", "del", h.namespace, check=False)
            shutil.rmtree(Path("/etc/netns") / h.namespace, ignore_errors=True)
        run("ip", "netns", "del", self.switch, check=False)
