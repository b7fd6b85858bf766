"""docker-compose.yml, run as written, without a Docker engine.

Each service of the compose file gets a network namespace of its own (netns.py) where its
name resolves for the others through a private hosts file (`ip netns exec` bind-mounts
/etc/netns/<namespace>/hosts over /etc/hosts in the mount namespace it makes; the machine's
own /etc/hosts is never touched), and its published ports are forwarded from 127.0.0.1 as
Docker would. What each service runs:

- a service with `build: .` runs this repository's binary with the Dockerfile's ENV, then
  the service's `environment` (compose interpolation of `${VAR}`, `${VAR:-default}` and
  `${VAR:?message}` applied), and the Dockerfile's CMD; the container paths of its volumes
  (/var/lib/secureconf/data, /var/log/secureconf) are directories of the test;
- `prom/prometheus` runs Debian's `prometheus` with the repository's prometheus.yml, mounted
  as the file says;
- `grafana/grafana` is not run (no Grafana on these machines; its provisioning files are
  checked by tests/deploy).

The test then checks what a user of the file would: the cluster forms from nothing (one
salt), a write on node1's published port is read on node3's, and every Prometheus target
is up.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

import netns
from common.netproxy import RecordingProxy
from common.nodeproc import NodeProcess, ProcessRegistry, binary_snapshot, wait_until

ROOT = Path(__file__).resolve().parents[2]
DATA_PATH = "/var/lib/secureconf/data"
LOG_PATH = "/var/log/secureconf"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise AssertionError(f"compose: {name} is required: {arg}")
            return current
        if op in (":-", "-"):
            return arg if current is None or (op == ":-" and current == "") else current
        return current or ""
    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}", one, value)


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV (the last stage of the Dockerfile)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            for name, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line):
                env[name] = value
    return env


def forward(host_port: int, address: str, container_port: int) -> RecordingProxy:
    """A published port: 127.0.0.1:host_port -> address:container_port, as Docker would."""
    try:
        return RecordingProxy(container_port, target_host=address, listen_port=host_port)
    except OSError as e:
        raise AssertionError(f"the compose file publishes port {host_port}, which is taken on this machine: {e}")


def published(service: dict) -> list[tuple[int, int]]:
    out = []
    for p in service.get("ports", []):
        host, _, container = str(p).rpartition(":")
        out.append((int(host), int(container)))
    return out


@pytest.fixture
def compose_up(tmp_path, preconditions):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    runnable = {name: svc for name, svc in services.items() if svc.get("build") == "." or "prometheus" in str(svc.get("image", ""))}
    assert "grafana" in services and len(runnable) == len(services) - 1, "every service but Grafana runs here"
    names = list(runnable)
    net = netns.Network(len(names))
    hosts = {name: net.hosts[i] for i, name in enumerate(names)}
    net.write_hosts({name: h.address for name, h in hosts.items()})
    registry = ProcessRegistry()
    forwarders: list[RecordingProxy] = []
    procs: list[subprocess.Popen] = []
    user_env = {"OSC_API_KEY": "compose-api-" + secrets.token_hex(16), "OSC_CLUSTER_SECRET": secrets.token_hex(32)}
    nodes: dict[str, NodeProcess] = {}
    try:
        image_env = dockerfile_env()
        for name, svc in runnable.items():
            h = hosts[name]
            workdir = tmp_path / name
            workdir.mkdir()
            if svc.get("build") == ".":
                volumes = {DATA_PATH: workdir / "data", LOG_PATH: workdir / "logs"}
                for d in volumes.values():
                    d.mkdir()
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **image_env}
                env.update({k: interpolate(str(v), user_env) for k, v in svc["environment"].items()})
                for k, v in list(env.items()):
                    for container, local in volumes.items():
                        if v.startswith(container + "/"):
                            env[k] = str(local) + v[len(container):]
                port = int(env["OSC_HOST_PORT"])
                node = NodeProcess(workdir, port, env, binary=binary_snapshot(), log_name="stderr.log", registry=registry,
                                   host=h.address, command_prefix=h.exec_prefix())
                node.launch()
                nodes[name] = node
            else:
                config = next(v.split(":")[0] for v in svc["volumes"] if "prometheus.yml" in v)
                assert config == "./prometheus.yml"
                (workdir / "tsdb").mkdir()
                log = open(workdir / "prometheus.log", "wb")
                proc = subprocess.Popen([*h.exec_prefix(), shutil.which("prometheus") or "prometheus",
                                         f"--config.file={ROOT / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                         "--web.listen-address=0.0.0.0:9090"], stdout=log, stderr=log, start_new_session=True)
                registry.add(proc)
                procs.append(proc)
            for host_port, container_port in published(svc):
                forwarders.append(forward(host_port, h.address, container_port))
        yield {"compose": compose, "nodes": nodes, "api_key": user_env["OSC_API_KEY"], "workdir": tmp_path}
    finally:
        for f in forwarders:
            f.close()
        for n in nodes.values():
            n.stop(10)
        registry.kill_all()
        net.close()


def test_the_compose_file_runs_as_written(compose_up):
    compose, nodes, api_key = compose_up["compose"], compose_up["nodes"], compose_up["api_key"]
    services = compose["services"]
    urls = {name: f"http://127.0.0.1:{published(services[name])[0][0]}" for name in nodes}
    headers = {"X-API-Key": api_key, "X-User-Key": "compose-user-key-0123456789"}
    for name, url in urls.items():
        wait_until(lambda url=url: requests.get(url + "/health", timeout=2).status_code == 200, timeout=60,
                   what=f"{name} answering on its published port")
    # The cluster forms from nothing: every node healthy, one salt, peers named by service.
    def formed():
        statuses = [requests.get(u + "/cluster/status", headers=headers, timeout=3).json() for u in urls.values()]
        return all(s["healthy_nodes"] == len(nodes) for s in statuses) and len({s["salt_fingerprint"] for s in statuses}) == 1
    wait_until(formed, timeout=90, what="the compose cluster formed")
    status = requests.get(urls["node1"] + "/cluster/status", headers=headers, timeout=3).json()
    assert {n["node_id"] for n in status["nodes"]} == {f"{name}:9000" for name in nodes}
    assert status["peer_authentication"] == "secret", status
    # It replicates: written through node1's published port, read through node3's.
    r = requests.post(urls["node1"] + "/configs", headers=headers, json={"key": "compose-check", "value": {"ok": True}}, timeout=30)
    assert r.status_code == 201, r.text
    wait_until(lambda: requests.get(urls["node3"] + "/configs/compose-check", headers=headers, timeout=30).status_code == 200,
               timeout=30, what="the write on node3")
    assert requests.get(urls["node3"] + "/configs/compose-check", headers=headers, timeout=30).json()["value"] == {"ok": True}
    # The data is where the volumes say (the container path's directory, not the working directory).
    for name in nodes:
        assert (compose_up["workdir"] / name / "data" / "configurations.db").exists(), name
        assert (compose_up["workdir"] / name / "data" / "encryption.salt").exists(), name
    # Prometheus, with the repository's prometheus.yml, scrapes every node: all targets up.
    prom = f"http://127.0.0.1:{published(services['prometheus'])[0][0]}"

    def targets_up():
        active = requests.get(prom + "/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
        return len(active) == len(nodes) and all(t["health"] == "up" for t in active) and active
    active = wait_until(targets_up, timeout=60, interval=0.5, what="every Prometheus target up")
    assert sorted(t["labels"]["instance"] for t in active) == sorted(f"{name}:9000" for name in nodes)
    q = requests.get(prom + "/api/v1/query", params={"query": "osc_cluster_nodes_healthy"}, timeout=3).json()
    assert q["status"] == "success" and q["data"]["result"], q
