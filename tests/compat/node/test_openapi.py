"""The API document: /openapi.json (OpenAPI 3.1, generated from the route table) passes
openapi-spec-validator and lists every endpoint; /docs renders it from the node's own page
(nothing from elsewhere); schemathesis, bounded (20 examples per operation, a fixed seed,
about 10 s), finds no 5xx and no response outside the documented ones.

Left out of the schemathesis run, deliberately: the node-to-node routes (a single node
answers them 404; tests/cluster attacks them), the event stream (`GET /sse/subscribe` never
ends, by design; test_events.py covers it), and the check that every schema-valid
request is accepted (a random user key or name is valid JSON Schema but rightly refused)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from harness import USER_KEY


def test_the_document_is_valid_openapi_and_lists_every_endpoint(api_node):
    from openapi_spec_validator import validate
    doc = requests.get(api_node.url + "/openapi.json", timeout=10).json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    listed = requests.get(api_node.url + "/", timeout=10).json()["endpoints"]
    for name, endpoint in listed.items():
        method, path = endpoint.split(" ", 1)
        assert method.lower() in doc["paths"].get(path, {}), f"{name}: {endpoint} is documented"
    page = requests.get(api_node.url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in page.text and not re.search(r"""(src|href)=["']?https?://""", page.text), "nothing loaded from elsewhere"


def schemathesis_command() -> str:
    """The venv's schemathesis (tests/compat/setup_venvs.sh installs it beside this Python)."""
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed: run tests/compat/setup_venvs.sh (FORCE=1 to rebuild the venvs)"
    return found


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(api_node):
    assert api_node.create("fuzz-me", {"a": 1}).status_code == 201
    run = subprocess.run(
        [schemathesis_command(), "run", api_node.url + "/openapi.json", "--max-examples", "20", "--seed", "1",
         "--exclude-checks", "positive_data_acceptance", "--exclude-tag", "node-to-node",
         "--exclude-operation-id", "get_sse_subscribe",
         "-H", f"X-API-Key: {api_node.api_key}", "-H", f"X-User-Key: {USER_KEY}", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=600)
    summary = [line for line in run.stdout.splitlines() if "generated" in line or "Tested" in line or "failures" in line]
    print("schemathesis:", " | ".join(s.strip() for s in summary))
    assert run.returncode == 0, run.stdout[-4000:]
