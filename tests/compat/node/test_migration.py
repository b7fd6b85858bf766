"""`secureconf import-osc`: idempotent, with the node stopped or running; refuses, saying
why, when the salts differ; keeps every ciphertext byte for byte; another user's entries
stay unreadable to the first."""

from __future__ import annotations

import sqlite3

import requests

from migration import FIXTURES, expected_reads, import_osc


def test_import_is_idempotent_while_the_node_runs_and_keeps_the_ciphertexts(node_factory, tmp_path):
    assert import_osc("osc3.1", tmp_path).returncode == 0
    node = node_factory.start(workdir=tmp_path)
    again = import_osc("osc3.1", tmp_path)
    assert again.returncode == 0 and "0 imported, 4 skipped" in again.stdout, again.stdout
    osc = dict(sqlite3.connect(FIXTURES / "osc3.1" / "configurations.db").execute(
        "SELECT key || '/' || environment, encrypted_value FROM configurations").fetchall())
    ours = dict(sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True).execute(
        "SELECT key || '/' || environment, ciphertext FROM entries").fetchall())
    assert ours == osc, "every token as OpenSecureConf wrote it"
    a = [e for e in expected_reads("osc3.1") if e["user_key"].endswith("-A")]
    b = [e for e in expected_reads("osc3.1") if e["user_key"].endswith("-B")]
    listed = requests.get(node.url + "/configs", headers={"X-User-Key": a[0]["user_key"]}, timeout=15)
    assert sorted(e["key"] for e in listed.json()) == sorted(e["key"] for e in a), "the other user's entry is not listed"
    r = requests.get(f"{node.url}/configs/{b[0]['key']}", params={"environment": b[0]["environment"]},
                     headers={"X-User-Key": a[0]["user_key"]}, timeout=15)
    assert r.status_code == 401


def test_a_node_with_another_salt_refuses_the_import_and_says_why(node_factory, tmp_path):
    node = node_factory.start(workdir=tmp_path)
    assert node.create("own", 1).status_code == 201
    refused = import_osc("osc3.1", tmp_path)
    assert refused.returncode == 1 and "salts differ" in refused.stderr, refused.stderr
    assert requests.get(node.url + "/configs", headers={"X-User-Key": expected_reads("osc3.1")[0]["user_key"]},
                        timeout=15).status_code in (200, 401)
    assert node.stop() == 0


def test_a_key_already_held_with_another_value_is_left_alone(node_factory, tmp_path):
    assert import_osc("osc2.1", tmp_path).returncode == 0
    db = tmp_path / "data" / "configurations.db"
    node = node_factory.start(workdir=tmp_path)
    entry = expected_reads("osc2.1")[0]
    assert requests.put(f"{node.url}/configs/{entry['key']}", json={"value": "changed here"},
                        headers={"X-User-Key": entry["user_key"]}, timeout=15).status_code == 200
    again = import_osc("osc2.1", tmp_path)
    assert again.returncode == 0 and "3 skipped" in again.stdout and "refused default/database" in again.stdout, again.stdout
    assert requests.get(f"{node.url}/configs/{entry['key']}", headers={"X-User-Key": entry["user_key"]},
                        timeout=15).json()["value"] == "changed here"
    assert db.exists()
