"""Keeps docker-compose.yml, the Dockerfile and prometheus.yml consistent with the code.

No Docker engine runs in CI, so the compose path itself is not exercised; this test parses
the files and checks every OSC_* variable they set is one the node understands (as listed
by `secureconf variables`), and that Prometheus scrapes every node of the compose file.
"""
import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def binary():
    for candidate in (os.environ.get("SECURECONF_BIN"), ROOT / ".build/release/secureconf", ROOT / ".build/debug/secureconf"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError("build secureconf first")


def known_variables():
    out = subprocess.run([binary(), "variables", "--names-only"], check=True, capture_output=True, text=True).stdout
    names = set(out.split())
    assert "OSC_HOST_PORT" in names and "OSC_CLUSTER_NODES" in names
    return names


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_sets_only_known_variables():
    known = known_variables()
    services = compose()["services"]
    nodes = {name: svc for name, svc in services.items() if name.startswith("node")}
    assert len(nodes) == 3
    for name, svc in nodes.items():
        env = svc["environment"]
        osc = {k for k in env if k.startswith("OSC_")}
        assert osc, name
        unknown = osc - known
        assert not unknown, f"{name} sets variables the node does not read: {unknown}"
        assert env["OSC_CLUSTER_NODE_ID"] == f"{name}:9000"
        assert env["OSC_CLUSTER_ENABLED"] == "true" and env["OSC_API_KEY_REQUIRED"] == "true"
        peers = env["OSC_CLUSTER_NODES"].split(",")
        assert sorted(peers) == sorted(f"{n}:9000" for n in nodes)


def test_dockerfile_sets_only_known_variables():
    known = known_variables()
    text = (ROOT / "Dockerfile").read_text()
    names = set(re.findall(r"\b(OSC_[A-Z_]+)=", text))
    assert names, "the Dockerfile configures the node through OSC_* variables"
    assert names <= known, names - known
    assert "/cluster/health" in text and "USER secureconf" in text


def test_prometheus_scrapes_every_compose_node():
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    nodes = [n for n in compose()["services"] if n.startswith("node")]
    assert sorted(targets) == sorted(f"{n}:9000" for n in nodes)


def test_grafana_dashboard_queries_exported_metrics():
    import json
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/secureconf.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ["osc_http_requests_total", "osc_cluster_nodes_healthy", "osc_cluster_outbox_depth", "osc_config_entries_total"]:
        assert metric in exprs
