"""`secureconf backup` (an online snapshot of a whole node: every user's ciphertexts, the
history and the audit trail) and `secureconf restore-backup` (into an empty node, checked
against its salt file), with real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import requests

from harness import OTHER_USER_KEY, USER_KEY, secureconf_binary


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(secureconf_binary()), *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_running_nodes_snapshot_restores_into_an_empty_node(node_factory, tmp_path):
    n = node_factory.start(api_key="snapshot-admin-api-key-0001")
    for i in range(5):
        assert n.create(f"snap-{i}", {"i": i}, environment="prod").status_code == 201
    assert n.request("PUT", "/configs/snap-0?environment=prod", json={"value": {"i": 100}}).status_code == 200
    assert n.create("theirs", "x", user_key=OTHER_USER_KEY).status_code == 201
    snapshot = tmp_path / "node.snapshot"
    made = run("backup", "--output", str(snapshot), "--database-path", str(n.db_path))  # the node keeps running
    assert made.returncode == 0, made.stderr
    assert "6 entries" in made.stdout and (os.stat(snapshot).st_mode & 0o777) == 0o600, made.stdout
    assert run("backup", "--output", str(snapshot), "--database-path", str(n.db_path)).returncode == 1, "never overwrites"
    assert n.stop() == 0

    target = tmp_path / "restored"
    (target / "data").mkdir(parents=True)
    shutil.copy2(n.salt_path, target / "data" / "encryption.salt")
    done = run("restore-backup", "--input", str(snapshot), "--database-path", str(target / "data" / "configurations.db"),
               "--salt-file", str(target / "data" / "encryption.salt"))
    assert done.returncode == 0, done.stderr
    m = node_factory.start(workdir=target, api_key="snapshot-admin-api-key-0001")
    assert m.request("GET", "/configs/snap-0?environment=prod").json()["value"] == {"i": 100}
    assert len(m.request("GET", "/configs/snap-0/versions?environment=prod").json()["versions"]) == 2, "history came along"
    assert m.request("GET", "/configs/theirs", user_key=OTHER_USER_KEY).json()["value"] == "x", "every user's entries"
    verify = requests.get(m.url + "/audit/verify", headers={"X-API-Key": "snapshot-admin-api-key-0001"}, timeout=15).json()
    assert verify["valid"] is True and verify["records"] > 7, verify

    # Into a node that holds data: refused. Under another salt: refused, saying why.
    again = run("restore-backup", "--input", str(snapshot), "--database-path", str(target / "data" / "configurations.db"),
                "--salt-file", str(target / "data" / "encryption.salt"))
    assert m.stop() == 0
    assert again.returncode == 1 and "already holds data" in again.stderr, again.stderr
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    (other / "data" / "encryption.salt").write_bytes(os.urandom(64))
    refused = run("restore-backup", "--input", str(snapshot), "--database-path", str(other / "data" / "configurations.db"),
                  "--salt-file", str(other / "data" / "encryption.salt"))
    assert refused.returncode == 1 and "salt" in refused.stderr and not (other / "data" / "configurations.db").exists(), refused.stderr


def test_a_damaged_snapshot_is_refused(tmp_path):
    bad = tmp_path / "bad.snapshot"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "encryption.salt").write_bytes(os.urandom(64))
    r = run("restore-backup", "--input", str(bad), "--database-path", str(tmp_path / "data" / "configurations.db"),
            "--salt-file", str(tmp_path / "data" / "encryption.salt"))
    assert r.returncode == 1 and "restore-backup" in r.stderr and not (tmp_path / "data" / "configurations.db").exists(), r.stderr
