"""A three-node cluster over TLS: a throwaway CA made with the `openssl` command, nodes
serving HTTPS (OSC_TLS_CERT_FILE/OSC_TLS_KEY_FILE) and verifying each other against the CA
(OSC_CLUSTER_TLS_CA_FILE); a peer whose certificate the CA did not sign is refused."""
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.nodeproc import NodeProcess, apply_overrides, binary_path, clean_environment, free_port, wait_until  # noqa: E402

API_KEY = secrets.token_hex(16)
USER_KEY = "tls-user-key-" + secrets.token_hex(4)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


def make_cert(directory: Path, name: str, ca: Path, ca_key: Path):
    (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


class Node(NodeProcess):
    """A cluster node serving HTTPS with its certificate, verifying peers against `ca`; launched at once."""

    def __init__(self, directory: Path, port: int, nodes: str, cert: Path, key: Path, ca: Path):
        env = apply_overrides(clean_environment(), dict(
            OSC_HOST="127.0.0.1", OSC_HOST_PORT=str(port), OSC_DATABASE_PATH=str(directory / "db.sqlite"),
            OSC_SALT_FILE_PATH=str(directory / "salt"), OSC_CLUSTER_ENABLED="true", OSC_CLUSTER_MODE="replica",
            OSC_CLUSTER_NODE_ID=f"127.0.0.1:{port}", OSC_CLUSTER_NODES=nodes, OSC_API_KEY_REQUIRED="true",
            OSC_API_KEY=API_KEY, OSC_CLUSTER_SYNC_INTERVAL="1", OSC_CLUSTER_HEALTH_INTERVAL="0.5",
            OSC_CLUSTER_PEER_TIMEOUT="2", OSC_CLUSTER_SALT_WAIT="30", OSC_TLS_CERT_FILE=str(cert),
            OSC_TLS_KEY_FILE=str(key), OSC_CLUSTER_TLS_CA_FILE=str(ca), OSC_LOG_LEVEL="WARNING"))
        super().__init__(directory, port, env, log_name="stderr.log")
        self.launch()

    def get(self, path, verify, **kw):
        return requests.get(self.url + path, headers={"X-API-Key": API_KEY, "X-User-Key": USER_KEY}, verify=verify, timeout=5, **kw)


def wait_for(predicate, timeout=30.0):
    return wait_until(predicate, timeout, interval=0.2)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca(d, "cluster-ca")
    rogue_ca, rogue_key = make_ca(d, "rogue-ca")
    certs = [make_cert(d, f"node{i}", ca, ca_key) for i in range(3)]
    rogue = make_cert(d, "rogue", rogue_ca, rogue_key)
    return {"ca": ca, "certs": certs, "rogue": rogue}


def test_three_nodes_over_tls_and_an_untrusted_peer_is_refused(pki, tmp_path):
    # The salt is created by the node whose id sorts first: keep the late-starting rogue last.
    ports = sorted((free_port() for _ in range(4)), key=lambda p: f"127.0.0.1:{p}")
    trusted = ",".join(f"127.0.0.1:{p}" for p in ports[:3])
    everyone = ",".join(f"127.0.0.1:{p}" for p in ports)
    nodes = [Node(tmp_path / f"n{i}", ports[i], everyone, *pki["certs"][i], pki["ca"]) for i in range(3)]
    try:
        ca = str(pki["ca"])
        for n in nodes:
            wait_for(lambda n=n: n.get("/health", ca).status_code == 200)
        # Plain HTTP is not served on a TLS port.
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"http://127.0.0.1:{ports[0]}/health", timeout=3)
        # Clients verify the node against the CA; an unverified client connection fails.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(nodes[0].url + "/health", timeout=3)
        salts = {n.get("/cluster/health", ca).json()["salt_fingerprint"] for n in nodes}
        assert len(salts) == 1, "the salt was shared over TLS"
        value = "tls-secret-" + secrets.token_hex(6)
        r = requests.post(nodes[0].url + "/configs", json={"key": "over-tls", "value": value},
                          headers={"X-API-Key": API_KEY, "X-User-Key": USER_KEY}, verify=ca, timeout=5)
        assert r.status_code == 201, r.text
        for n in nodes[1:]:
            assert wait_for(lambda n=n: n.get("/configs/over-tls", ca).json().get("value") == value, timeout=15)
        print(f"TLS cluster: salt shared, write on node0 readable on node1 and node2 over HTTPS")

        # A fourth node whose certificate the cluster CA did not sign.
        rogue = Node(tmp_path / "rogue", ports[3], everyone, *pki["rogue"], pki["ca"])
        nodes.append(rogue)
        wait_for(lambda: rogue.get("/health", False).status_code == 200)

        def rogue_status():
            status = nodes[0].get("/cluster/status", ca).json()
            return next(p for p in status["nodes"] if p["node_id"] == f"127.0.0.1:{ports[3]}")
        def tls_refusal(p):
            # Before the rogue listened, node0 recorded "couldn't connect"; wait for the error of a
            # connection that reached it, which must be the failed certificate check.
            error = (p["last_error"] or "").lower()
            return p if "certificate" in error or "ssl" in error else None
        seen = []
        peer = wait_for(lambda: tls_refusal((lambda p: seen.append(p["last_error"]) or p)(rogue_status())), timeout=20)
        assert peer, f"node0 never reported a certificate failure for the rogue; errors seen: {sorted(set(map(str, seen)))}"
        assert peer["healthy"] is False
        time.sleep(2)
        peer = rogue_status()
        assert peer["healthy"] is False and peer["acked_seq"] == 0, "nothing is shipped to a peer whose certificate fails verification"
        print(f"untrusted peer refused: {peer['last_error']}")
        assert all(n.proc.poll() is None for n in nodes[:3])
    finally:
        for n in nodes:
            n.stop()


def test_opensecureconf_https_variables_and_an_encrypted_key(pki, tmp_path):
    """OSC_HTTPS_ENABLED with OSC_SSL_CERTFILE/OSC_SSL_KEYFILE serves HTTPS, with the key
    encrypted under OSC_SSL_KEYFILE_PASSWORD (PKCS#8 and traditional PEM); the wrong
    password stops the node without printing it; OSC_HTTPS_ENABLED=false ignores OSC_SSL_*."""
    cert, key = pki["certs"][0]
    password = "pem-pass-" + secrets.token_hex(6)
    pkcs8 = tmp_path / "pkcs8.key"
    traditional = tmp_path / "traditional.key"
    openssl("pkcs8", "-topk8", "-in", str(key), "-out", str(pkcs8), "-v2", "aes-256-cbc", "-passout", f"pass:{password}", cwd=tmp_path)
    openssl("rsa", "-in", str(key), "-out", str(traditional), "-aes256", "-traditional", "-passout", f"pass:{password}", cwd=tmp_path)
    assert b"ENCRYPTED" in pkcs8.read_bytes() and b"ENCRYPTED" in traditional.read_bytes()

    def node(name, **env):
        port = free_port()
        full = apply_overrides(clean_environment(), {"OSC_HOST": "127.0.0.1", "OSC_HOST_PORT": str(port),
                                                    "OSC_DATABASE_PATH": str(tmp_path / name / "db.sqlite"),
                                                    "OSC_SALT_FILE_PATH": str(tmp_path / name / "salt"), **env})
        return NodeProcess(tmp_path / name, port, full, log_name="stderr.log")

    ca = str(pki["ca"])
    for label, encrypted in [("pkcs8", pkcs8), ("traditional", traditional)]:
        n = node(label, OSC_HTTPS_ENABLED="true", OSC_SSL_CERTFILE=str(cert), OSC_SSL_KEYFILE=str(encrypted),
                 OSC_SSL_KEYFILE_PASSWORD=password)
        try:
            n.launch()
            wait_for(lambda n=n: requests.get(f"https://127.0.0.1:{n.port}/health", verify=ca, timeout=3).status_code == 200)
        finally:
            assert n.stop() == 0
        assert password not in n.log_text()

    wrong = node("wrong", OSC_HTTPS_ENABLED="true", OSC_SSL_CERTFILE=str(cert), OSC_SSL_KEYFILE=str(pkcs8),
                 OSC_SSL_KEYFILE_PASSWORD="not-" + password)
    wrong.launch()
    assert wrong.wait_exit(20) not in (None, 0), "a wrong passphrase must stop the node"
    assert "TLS" in wrong.log_text() and password not in wrong.log_text()

    plain = node("plain", OSC_HTTPS_ENABLED="false", OSC_SSL_CERTFILE=str(cert), OSC_SSL_KEYFILE=str(key))
    try:
        plain.launch()
        wait_for(lambda: requests.get(f"http://127.0.0.1:{plain.port}/health", timeout=3).status_code == 200)
    finally:
        assert plain.stop() == 0


def test_the_cli_and_agent_verify_an_https_node_against_a_ca_file(pki, tmp_path):
    """`secureconf export` and `secureconf agent` (the Swift client library on libcurl) reach
    an HTTPS node signed by a private CA when given that CA (`--ca-file`, `SECURECONF_CA_FILE`,
    agent.yaml's `ca_file`), follow its change events over TLS, and refuse the node, printing
    no value, without the CA or with another one."""
    cert, key = pki["certs"][0]
    port = free_port()
    env = apply_overrides(clean_environment(), {"OSC_HOST": "127.0.0.1", "OSC_HOST_PORT": str(port),
                                               "OSC_DATABASE_PATH": str(tmp_path / "n" / "db.sqlite"),
                                               "OSC_SALT_FILE_PATH": str(tmp_path / "n" / "salt"),
                                               "OSC_TLS_CERT_FILE": str(cert), "OSC_TLS_KEY_FILE": str(key),
                                               "OSC_SSE_KEEPALIVE_SECONDS": "1"})
    node = NodeProcess(tmp_path / "n", port, env, log_name="stderr.log")
    node.launch()
    ca = str(pki["ca"])
    url = f"https://127.0.0.1:{port}"
    headers = {"X-User-Key": USER_KEY}
    agent = None
    try:
        wait_for(lambda: requests.get(url + "/health", verify=ca, timeout=3).status_code == 200)
        value = "over-tls-" + secrets.token_hex(6)
        r = requests.post(url + "/configs", json={"key": "db", "value": {"password": value}, "environment": "prod"},
                          headers=headers, verify=ca, timeout=5)
        assert r.status_code == 201, r.text
        client_env = {k: v for k, v in clean_environment().items() if not k.startswith("SECURECONF_")}
        client_env["SECURECONF_USER_KEY"] = USER_KEY
        binary = str(binary_path())

        def export(*extra, env=client_env):
            return subprocess.run([binary, "export", "--url", url, "--environment", "prod", "--format", "dotenv", *extra],
                                  env=env, capture_output=True, text=True, timeout=60)

        ok = export("--ca-file", ca)
        assert ok.returncode == 0, ok.stderr
        assert f"DB_PASSWORD='{value}'" in ok.stdout
        from_variable = export(env={**client_env, "SECURECONF_CA_FILE": ca})
        assert from_variable.returncode == 0 and f"DB_PASSWORD='{value}'" in from_variable.stdout, from_variable.stderr
        rogue_ca = str(pki["rogue"][0].parent / "rogue-ca.pem")
        for label, extra in [("system trust store", ()), ("another CA", ("--ca-file", rogue_ca))]:
            refused = export(*extra)
            assert refused.returncode == 1, f"{label}: {refused.stdout}"
            assert value not in refused.stdout + refused.stderr
            assert "certificate" in refused.stderr.lower() or "ssl" in refused.stderr.lower(), f"{label}: {refused.stderr}"
        print(f"CLI over TLS: verified with the CA file; refused without it: {refused.stderr.strip()}")

        (tmp_path / "t.mustache").write_text("password={{db.password}}\n")
        rendered = tmp_path / "out.conf"
        config = tmp_path / "agent.yaml"
        config.write_text(f"url: {url}\nenvironment: prod\nca_file: {ca}\ntemplates:\n"
                          f"  - template: {tmp_path / 't.mustache'}\n    destination: {rendered}\n")
        agent = subprocess.Popen([binary, "agent", "--config", str(config)], env=client_env,
                                 stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: rendered.exists() and value in rendered.read_text(), 20)
        time.sleep(2.5)  # past a few keep-alives: the stream over TLS stays open
        changed = "changed-" + secrets.token_hex(6)
        r = requests.put(url + "/configs/db", params={"environment": "prod"}, json={"value": {"password": changed}},
                         headers=headers, verify=ca, timeout=5)
        assert r.status_code == 200, r.text
        assert wait_for(lambda: changed in rendered.read_text(), 5), "re-rendered from a change event over TLS"
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
        assert node.stop() == 0
