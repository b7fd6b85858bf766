"""What a node sends its peers: encrypted revisions only, never a user key or a plaintext."""

from __future__ import annotations

import base64
import os

from harness import RecordingProxy, free_ports, token, wait_until


def encodings(s: str) -> list[bytes]:
    raw = s.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"="), raw.hex().encode()]


def test_peer_traffic_carries_no_user_key_or_plaintext(factory):
    port_a, port_b = free_ports(2)
    proxy = RecordingProxy(port_b)
    try:
        api_key = token("wire-api-")
        id_a, id_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
        salt = os.urandom(64)  # both start with the same salt, so no bootstrap has to pass the proxy
        nodes = []
        for port, listed, label in ((port_a, [id_a, proxy.address], "a"), (port_b, [id_a, id_b], "b")):
            wd = factory.workdir(f"wire-{label}")
            env = factory.node_env(wd, port, listed, api_key)
            fd = os.open(env["OSC_SALT_FILE_PATH"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, salt)
            os.close(fd)
            nodes.append(factory.node(wd, port, env, api_key))
        a, b = nodes
        a.start()
        b.start()
        a.wait_up()
        b.wait_up()
        wait_until(lambda: a.status()["healthy_nodes"] == 2 and b.status()["healthy_nodes"] == 2, 10,
                   what="both nodes healthy (a reaching b through the proxy)")
        assert proxy.address in {p["node_id"] for p in a.status()["nodes"]}

        user_key = token("wire-user-key-")
        secrets_written = {}
        for i in range(5):
            key = token(f"wire{i}-", 4)
            value = {"password": token("plain-pass-"), "note": token("plain-note-"), "i": i}
            r = a.create(user_key, key, value)
            assert r.status_code == 201, r.text
            secrets_written[key] = value
        updated_key = next(iter(secrets_written))
        secrets_written[updated_key] = token("plain-updated-")
        assert a.update(user_key, updated_key, secrets_written[updated_key]).status_code == 200

        def all_on_b():
            return all(b.read(user_key, k).json().get("value") == v for k, v in secrets_written.items())

        wait_until(all_on_b, 10, what="a's writes readable on b")
        # A few anti-entropy rounds (digest exchange through the proxy) as well.
        wait_until(lambda: proxy.sent().count(b"/cluster/digest") >= 2, 10, what="anti-entropy traffic through the proxy")

        sent, received = proxy.sent(), proxy.received()
        recorded = sent + received
        assert b"POST /cluster/replicate" in sent, sent[:500]
        assert b"ciphertext" in sent
        for key in secrets_written:
            assert key.encode() in sent, "the revisions a shipped to b passed through the proxy"
        leaks = []
        for needle in [user_key] + [v for value in secrets_written.values()
                                    for v in (value.values() if isinstance(value, dict) else [value]) if isinstance(v, str)]:
            for form in encodings(needle):
                if form in recorded:
                    leaks.append((needle, form[:40]))
        assert not leaks, f"plaintext or user key on the wire between nodes: {leaks}"
        assert b"x-user-key" not in recorded.lower()
        assert api_key.encode() in sent, "inter-node requests carry the cluster API key"
    finally:
        proxy.close()
