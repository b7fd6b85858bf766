"""A real Prometheus scrapes the three nodes and sees a healthy cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import free_ports, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def query(base: str, expr: str) -> list[dict]:
    r = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_healthy_cluster(factory, registry, tmp_path, report):
    if not Path(PROMETHEUS).is_file():
        pytest.skip("prometheus is not installed (Debian package `prometheus`, /usr/bin/prometheus)")
    cluster = factory.cluster(3, "replica")
    cluster.wait_healthy(timeout=10)
    for n in cluster:
        text = requests.get(n.url + "/metrics", timeout=5).text
        assert "osc_cluster_nodes_total" in text and "osc_cluster_nodes_healthy" in text

    targets = ", ".join(f"'{n.node_id}'" for n in cluster)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: secureconf\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: [{targets}]\n")
    (port,) = free_ports(1)
    log = open(tmp_path / "prometheus.log", "wb")
    try:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    registry.add(proc)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()

    def ready():
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
        return requests.get(base + "/-/ready", timeout=2).status_code == 200

    wait_until(ready, 20, interval=0.2, what="prometheus /-/ready")

    instances = {n.node_id for n in cluster}

    def three_healthy():
        result = query(base, "osc_cluster_nodes_healthy")
        values = {s["metric"].get("instance"): float(s["value"][1]) for s in result}
        return result if set(values) == instances and all(v == 3 for v in values.values()) else None

    wait_until(three_healthy, 30, interval=0.5, what="osc_cluster_nodes_healthy == 3 for all three instances")
    report("prometheus: three series osc_cluster_nodes_healthy == 3", f"{time.monotonic() - started:.1f}s after prometheus started")

    def all_up():
        result = query(base, 'up{job="secureconf"}')
        values = {s["metric"]["instance"]: float(s["value"][1]) for s in result}
        return values if set(values) == instances and all(v == 1 for v in values.values()) else None

    wait_until(all_up, 15, interval=0.5, what="up == 1 for all three targets")
    totals = query(base, "osc_cluster_nodes_total")
    assert {s["metric"]["instance"]: float(s["value"][1]) for s in totals} == {i: 3.0 for i in instances}

    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
