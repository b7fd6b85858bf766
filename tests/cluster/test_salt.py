"""Salt bootstrap, salt consistency, and the refusal to run a cluster without an API key."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from harness import RecordingProxy, base_environment, free_ports, secureconf_binary, token, wait_until

USER_KEY = "salt-test-user-key-01"


def test_three_empty_nodes_share_one_salt(factory, report):
    started = time.monotonic()
    cluster = factory.cluster(3, "replica")
    up = time.monotonic() - started
    healthy = cluster.wait_healthy(timeout=10)
    report("salt bootstrap: 3 empty nodes up (all /health 200)", f"{up:.2f}s")
    report("salt bootstrap: healthy_nodes == 3 on every node after up", f"{healthy:.2f}s")

    salts = [n.salt_bytes() for n in cluster]
    assert all(s is not None for s in salts), "every node has a salt file"
    assert all(len(s) == 64 for s in salts), [len(s) for s in salts]
    assert salts[0] == salts[1] == salts[2], "salt files differ byte-for-byte"
    for n in cluster:
        mode = stat.S_IMODE(os.stat(n.salt_path).st_mode)
        assert mode == 0o600, f"{n} salt file mode {oct(mode)}"

    statuses = [n.status() for n in cluster]
    fingerprints = {s["salt_fingerprint"] for s in statuses}
    assert len(fingerprints) == 1, fingerprints
    for n, s in zip(cluster, statuses):
        assert s["enabled"] is True and s["mode"] == "replica"
        assert s["node_id"] == n.node_id
        assert s["total_nodes"] == 3 and s["healthy_nodes"] == 3
        assert s["salt_consistent"] is True
        assert len(s["nodes"]) == 3
        assert {x["node_id"] for x in s["nodes"]} == {m.node_id for m in cluster}
        assert all(x["healthy"] for x in s["nodes"])
        assert all(x["is_healthy"] is x["healthy"] for x in s["nodes"]), "OpenSecureConf 3.x's name for it, too"
        assert sum(1 for x in s["nodes"] if x["self"]) == 1
        # Every node sees the same fingerprint on its peers.
        assert {x.get("salt_fingerprint") for x in s["nodes"]} == fingerprints
        health = n.request("GET", "/cluster/health", api_key=None)
        assert health.status_code == 200, health.text
        assert health.json()["salt_fingerprint"] in fingerprints
        assert health.json()["node_id"] == n.node_id
        assert n.request("GET", "/ready").status_code == 200

    # The node whose id sorts first created the salt; the others fetched it.
    first = min(cluster, key=lambda n: n.node_id)
    assert "created a new salt" in first.output(100_000)
    for n in cluster:
        if n is not first:
            assert "fetched the cluster's salt" in n.output(100_000), n.output()


def _salt_problem(r) -> str:
    assert r.status_code == 503, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert "salt" in detail.lower(), detail
    return detail


def test_node_with_foreign_salt_refuses_to_serve(replica3, factory):
    cluster = replica3
    before = [n.salt_bytes() for n in cluster]
    fingerprint = cluster[0].status()["salt_fingerprint"]

    (port,) = free_ports(1)
    workdir = factory.workdir("foreign")
    nodes = [n.node_id for n in cluster] + [f"127.0.0.1:{port}"]
    env = factory.node_env(workdir, port, nodes, cluster.api_key)
    foreign_salt = os.urandom(64)
    fd = os.open(env["OSC_SALT_FILE_PATH"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, foreign_salt)
    os.close(fd)
    d = factory.node(workdir, port, env, cluster.api_key).start()
    d.wait_up()

    def refusing():
        return d.request("GET", "/ready").status_code == 503

    wait_until(refusing, 5, what="the foreign-salt node's /ready to answer 503")
    detail = _salt_problem(d.request("GET", "/ready"))
    assert fingerprint in detail, detail
    _salt_problem(d.request("GET", "/configs", USER_KEY))
    _salt_problem(d.request("GET", "/configs/anything", USER_KEY))
    _salt_problem(d.create(USER_KEY, "foreign-write", "must not be stored"))
    # Restore and history sit behind the same gate (security review, finding 9).
    _salt_problem(d.request("POST", "/restore", USER_KEY, params={"at": "2030-01-01T00:00:00Z"}))
    _salt_problem(d.request("GET", "/configs/anything/versions", USER_KEY))
    status = d.status()
    assert status["salt_consistent"] is False
    assert "salt" in status.get("salt_problem", "").lower()
    assert d.salt_bytes() == foreign_salt, "the foreign node's own salt is never replaced either"

    # Still refusing a few health rounds later, and the three others are untouched.
    time.sleep(1.5)
    _salt_problem(d.request("GET", "/ready"))
    assert [n.salt_bytes() for n in cluster] == before
    for n in cluster:
        s = n.status()
        assert s["salt_fingerprint"] == fingerprint and s["salt_consistent"] is True
        assert n.request("GET", "/ready").status_code == 200
        r = n.read(USER_KEY, "foreign-write")
        assert r.status_code == 404, (n, r.status_code, r.text)


def test_foreign_salt_node_never_serves_before_knowing(replica3, factory):
    """The same foreign-salt node, but its peers answer slowly (1.5 s through a delaying proxy),
    which stretches the time before its first health round completes. It must not serve data
    in that time either, and nothing it holds may reach the cluster."""
    cluster = replica3
    proxies = [RecordingProxy(n.port, delay=1.5) for n in cluster]
    try:
        (port,) = free_ports(1)
        workdir = factory.workdir("foreign-slow")
        env = factory.node_env(workdir, port, [p.address for p in proxies] + [f"127.0.0.1:{port}"], cluster.api_key,
                               extra={"OSC_CLUSTER_PEER_TIMEOUT": "5"})
        fd = os.open(env["OSC_SALT_FILE_PATH"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(64))
        os.close(fd)
        d = factory.node(workdir, port, env, cluster.api_key).start()
        d.wait_up()
        key = token("foreign-window-")
        served = []
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            ready = d.request("GET", "/ready")
            if ready.status_code != 503:
                served.append(f"GET /ready -> {ready.status_code} {ready.text[:80]}")
            created = d.create(USER_KEY, key, "written under a foreign salt")
            if created.status_code != 503:
                served.append(f"POST /configs -> {created.status_code} {created.text[:80]}")
                break
            time.sleep(0.05)
        wait_until(lambda: d.request("GET", "/ready").status_code == 503, 10, what="the foreign node refusing")
        time.sleep(3)  # a few shipping attempts and sync rounds
        reached = [n.node_id for n in cluster
                   if n.request("GET", "/cluster/revision", params={"environment": "default", "key": key}).status_code != 404]
        problems = served[:3] + ([f"its revision of {key} reached {reached}"] if reached else [])
        assert not problems, "the foreign-salt node served data: " + "; ".join(problems)
    finally:
        for p in proxies:
            p.close()


def test_post_different_salt_is_refused(replica3):
    node = replica3[1]
    before = node.salt_bytes()
    other = os.urandom(64)
    assert other != before
    r = node.request("POST", "/cluster/salt", data=other, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 409, (r.status_code, r.text)
    assert "salt" in r.json()["detail"].lower()
    assert node.salt_bytes() == before
    # The same salt is accepted (idempotent), a wrong size is a 400, no API key a 403.
    r = node.request("POST", "/cluster/salt", data=before, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    r = node.request("POST", "/cluster/salt", data=other[:10], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400, r.text
    r = node.request("POST", "/cluster/salt", api_key=None, data=other)
    assert r.status_code in (401, 403), r.text
    assert node.salt_bytes() == before
    for n in replica3:
        assert n.status()["salt_consistent"] is True


def _run_until_exit(tmp_path, env_extra: dict[str, str], timeout: float = 20.0) -> subprocess.CompletedProcess:
    (port,) = free_ports(1)
    env = base_environment()
    env.update({
        "OSC_HOST": "127.0.0.1",
        "OSC_HOST_PORT": str(port),
        "OSC_DATABASE_PATH": str(tmp_path / "configurations.db"),
        "OSC_SALT_FILE_PATH": str(tmp_path / "encryption.salt"),
        "OSC_CLUSTER_ENABLED": "true",
        "OSC_CLUSTER_NODE_ID": f"127.0.0.1:{port}",
        "OSC_CLUSTER_NODES": f"127.0.0.1:{port},127.0.0.1:1",
    })
    env.update(env_extra)
    try:
        return subprocess.run([str(secureconf_binary()), "serve"], cwd=tmp_path, env=env, capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:  # run() has killed it
        pytest.fail(f"the node kept running without an API key: {e.stderr!r}")


def test_cluster_refuses_to_start_without_api_key(tmp_path):
    result = _run_until_exit(tmp_path, {})
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode != 0, output
    assert any("OSC_API_KEY_REQUIRED" in line for line in output.splitlines()), output
    assert not (tmp_path / "encryption.salt").exists(), "no salt is created by a node that refuses to start"


def test_cluster_refuses_api_key_required_without_key(tmp_path):
    result = _run_until_exit(tmp_path, {"OSC_API_KEY_REQUIRED": "true"})
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode != 0, output
    assert "OSC_API_KEY" in output, output
