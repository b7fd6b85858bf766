"""deploy/kubernetes: every manifest validates against the Kubernetes schemas (PyPI's
kubernetes-validate, offline, strict: unknown fields are errors) or, for the ServiceMonitor
custom resource, against the schema kept in tests/deploy/schemas; every OSC_* variable is
one the node reads; and the pieces fit together (peers' names, probes, the agent's config)."""
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from test_compose import known_variables

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.29.0"


def documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def by_kind(kind):
    return [d for _, d in documents() if d["kind"] == kind]


def test_every_manifest_validates():
    monitor_schema = json.loads((Path(__file__).parent / "schemas" / "servicemonitor.json").read_text())
    kinds = set()
    for name, doc in documents():
        kinds.add(doc["kind"])
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, monitor_schema)
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert {"StatefulSet", "Service", "Secret", "ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy", "Deployment",
            "ConfigMap"} <= kinds


def test_a_bad_manifest_is_caught():
    statefulset = by_kind("StatefulSet")[0]
    broken = json.loads(json.dumps(statefulset))
    broken["spec"]["replicas"] = "three"
    try:
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("a string replica count validated")


def env_names(doc):
    spec = doc["spec"]["template"]["spec"]
    return {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}


def test_every_osc_variable_is_known_to_the_node():
    known = known_variables()
    for kind in ("StatefulSet", "Deployment"):
        for doc in by_kind(kind):
            osc = {n for n in env_names(doc) if n.startswith("OSC_")}
            assert osc <= known, osc - known


def test_the_statefulset_forms_one_cluster():
    sts = by_kind("StatefulSet")[0]
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    headless = [s for s in by_kind("Service") if s["metadata"]["name"] == spec["serviceName"]]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    env = env_names(sts)
    node_id = env["OSC_CLUSTER_NODE_ID"]["value"]
    peers = env["OSC_CLUSTER_NODES"]["value"].split(",")
    assert [node_id.replace("$(POD_NAME)", f"{sts['metadata']['name']}-{i}") for i in range(3)] == peers
    assert all(re.fullmatch(r"[A-Za-z0-9.$()_-]+:9000", p) for p in peers)
    assert env["OSC_CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "secureconf"
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pdb = by_kind("PodDisruptionBudget")[0]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_the_example_runs_the_agent_as_a_sidecar():
    config = by_kind("ConfigMap")[0]["data"]
    agent = yaml.safe_load(config["agent.yaml"])
    assert agent["environment"] and agent["templates"][0]["destination"].startswith("/run/secrets/")
    deployment = by_kind("Deployment")[0]
    spec = deployment["spec"]["template"]["spec"]
    sidecar = [c for c in spec["containers"] if c.get("args", [])[:1] == ["agent"]][0]
    assert {e["name"] for e in sidecar["env"]} == {"OSC_API_KEY", "SECURECONF_USER_KEY"}
    app = [c for c in spec["containers"] if c is not sidecar][0]
    assert "env" not in app, "the app never holds a SecureConf credential"
    volume = [v for v in spec["volumes"] if v["name"] == "secrets"][0]
    assert volume["emptyDir"]["medium"] == "Memory"
