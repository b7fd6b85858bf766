"""OpenSecureConf 3.1's backups, both ways: a backup its real server made (the fixture in
tests/compat/fixtures/osc31_backup, see its README) imports into SecureConf, through the
Python client's query form and the JS client's JSON body; a SecureConf backup opens with
OpenSecureConf's own algorithm (server/utils/backup.py: PBKDF2-HMAC-SHA256, 480,000
iterations, over a 32-byte salt, then Fernet) and has its document's shape. OpenSecureConf's
own /import fails every entry (its import_response.json); SecureConf's imports them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "osc31_backup"
OSC_USER_KEY = "osc31-fixture-user-key"
OSC_PASSWORD = "osc31-backup-password"


def osc_backup_cipher(password: str, salt: bytes):
    """OpenSecureConf 3.1's create_backup_cipher, as its server/utils/backup.py writes it."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=480000)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(password.encode())))


def osc_open(backup_data: str, password: str) -> dict:
    blob = base64.b64decode(backup_data)
    return json.loads(osc_backup_cipher(password, blob[:32]).decrypt(blob[32:]).decode())


@pytest.fixture
def fixture_backup():
    return json.loads((FIXTURES / "backup_response.json").read_text())["backup_data"]


def headers(user_key=OSC_USER_KEY, password=OSC_PASSWORD):
    h = {"X-User-Key": user_key}
    if password is not None:
        h["X-Backup-Password"] = password
    return h


def test_a_backup_made_by_opensecureconf_imports_and_reads_back(node_factory, fixture_backup):
    n = node_factory.start()
    r = requests.post(n.url + "/import", params={"backup_data": fixture_backup, "overwrite": "false"}, headers=headers(), timeout=30)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["total_in_backup"], report["imported"], report["skipped"], report["failed"]) == (4, 4, 0, 0), report
    assert report["backup_id"] == "backup-1796135590" and report["message"] == "Import completed"
    document = json.loads((FIXTURES / "backup_document.json").read_text())
    for config in document["configurations"]:
        got = requests.get(f"{n.url}/configs/{config['key']}", params={"environment": config["environment"]},
                           headers={"X-User-Key": OSC_USER_KEY}, timeout=15).json()
        assert got["value"] == config["value"] and got["category"] == config["category"], (config, got)
    # Again: everything is there already, so it is skipped; with overwrite, replaced.
    again = requests.post(n.url + "/import", params={"backup_data": fixture_backup}, headers=headers(), timeout=30).json()
    assert (again["imported"], again["skipped"]) == (0, 4)
    replaced = requests.post(n.url + "/import", params={"backup_data": fixture_backup, "overwrite": "true"}, headers=headers(), timeout=30)
    assert replaced.json()["imported"] == 4


def test_the_js_clients_json_body_form_imports_too(node_factory, fixture_backup):
    n = node_factory.start()
    r = requests.post(n.url + "/import", json={"backup_data": fixture_backup, "overwrite": False}, headers=headers(), timeout=30)
    assert r.status_code == 200 and r.json()["imported"] == 4, r.text


def test_a_secureconf_backup_opens_with_opensecureconfs_algorithm(node_factory):
    n = node_factory.start()
    user = "backup-user-key-01"
    values = {"db": {"host": "h", "pw": "s3cr3t-ü", "n": [1, 2.5, True, None]}, "token": "t-1", "blank": ""}
    for i, (key, value) in enumerate(values.items()):
        body = {"key": key, "value": value, "environment": "prod" if i < 2 else "dev"}
        if key == "db":
            body["category"] = "database"
        assert requests.post(n.url + "/configs", json=body, headers={"X-User-Key": user}, timeout=15).status_code == 201
    other = requests.post(n.url + "/configs", json={"key": "not-mine", "value": 1}, headers={"X-User-Key": "another-user-key-2"}, timeout=15)
    assert other.status_code == 201
    r = requests.post(n.url + "/backup", headers=headers(user, "a-backup-password"), timeout=30)
    assert r.status_code == 200, r.text
    made = r.json()
    assert set(made) == {"backup_data", "total_keys", "backup_timestamp", "backup_id"} and made["total_keys"] == 3
    document = osc_open(made["backup_data"], "a-backup-password")
    fixture = json.loads((FIXTURES / "backup_document.json").read_text())
    assert list(document) == list(fixture), "the document's fields, in OpenSecureConf's order"
    assert document["version"] == "2.2.0" and document["backup_id"] == made["backup_id"] and document["total_keys"] == 3
    records = {c["key"]: c for c in document["configurations"]}
    assert set(records) == set(values), "only what this user key opens"
    for c in document["configurations"]:
        assert list(c) == list(fixture["configurations"][0]), "each record's fields, in OpenSecureConf's order"
        assert c["value"] == values[c["key"]] and c["created_at"].endswith("Z")
    assert records["db"]["category"] == "database" and records["token"]["category"] is None
    staged = requests.post(n.url + "/backup", params={"environment": "dev"}, headers=headers(user, "pw2-backup"), timeout=30).json()
    assert [c["key"] for c in osc_open(staged["backup_data"], "pw2-backup")["configurations"]] == ["blank"]
    # The same backup imports into another node under another user key.
    m = node_factory.start()
    back = requests.post(m.url + "/import", json={"backup_data": made["backup_data"]}, headers=headers("restore-user-key", "a-backup-password"),
                         timeout=30).json()
    assert back["imported"] == 3
    assert requests.get(m.url + "/configs/db", params={"environment": "prod"}, headers={"X-User-Key": "restore-user-key"},
                        timeout=15).json()["value"] == values["db"]


def test_a_wrong_password_or_a_damaged_backup_is_400_and_changes_nothing(node_factory, fixture_backup):
    n = node_factory.start()
    expected = json.loads((FIXTURES / "import_response_wrong_password.json").read_text())
    wrong = requests.post(n.url + "/import", params={"backup_data": fixture_backup}, headers=headers(password="not-the-password"), timeout=30)
    assert wrong.status_code == 400 and wrong.json() == expected, "OpenSecureConf's own answer"
    for damaged in ["%%%not-base64%%%", base64.b64encode(b"short").decode(), fixture_backup[:-40] + "A" * 40]:
        r = requests.post(n.url + "/import", params={"backup_data": damaged}, headers=headers(), timeout=30)
        assert r.status_code == 400 and r.json()["detail"], (damaged[:20], r.status_code, r.text)
    assert requests.post(n.url + "/import", params={"backup_data": fixture_backup}, headers=headers(password=None), timeout=30).status_code == 422
    assert requests.post(n.url + "/import", headers=headers(), timeout=30).status_code == 422
    assert requests.post(n.url + "/backup", headers=headers(password=None), timeout=30).status_code == 422
    assert requests.get(n.url + "/configs", headers={"X-User-Key": OSC_USER_KEY}, timeout=15).json() == []


def test_overwrite_never_replaces_another_users_value(node_factory, fixture_backup):
    n = node_factory.start()
    owner = {"X-User-Key": "the-owner-user-key"}
    assert requests.post(n.url + "/configs", json={"key": "database", "value": "owners", "environment": "production"},
                         headers=owner, timeout=15).status_code == 201
    r = requests.post(n.url + "/import", params={"backup_data": fixture_backup, "overwrite": "true"}, headers=headers(), timeout=30).json()
    assert r["imported"] == 3 and r["failed"] == 1 and r["failed_keys"][0]["key"] == "database", r
    assert requests.get(n.url + "/configs/database", params={"environment": "production"}, headers=owner, timeout=15).json()["value"] == "owners"


def test_a_backup_of_more_than_a_megabyte_imports_in_the_query_form(node_factory):
    """The Python client's habit: backup_data in the query string. A backup over 1 MB fits the
    node's header limit (OSC_MAX_HEADER_BYTES, 2 MiB by default); one beyond it is refused."""
    source = node_factory.start()
    user = "large-backup-user-1"
    values = {f"blob-{i:02d}": "x" * 40_000 + f"-{i}" for i in range(16)}
    for key, value in values.items():
        r = requests.post(source.url + "/configs", json={"key": key, "value": value, "environment": "prod"},
                          headers={"X-User-Key": user}, timeout=15)
        assert r.status_code == 201, r.text
    backup = requests.post(source.url + "/backup", headers=headers(user), timeout=60).json()["backup_data"]
    assert 1_000_000 < len(backup) < 1_500_000, len(backup)
    target = node_factory.start()
    r = requests.post(target.url + "/import", params={"backup_data": backup}, headers=headers(user), timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert (r.json()["imported"], r.json()["failed"]) == (16, 0)
    got = requests.get(target.url + "/configs/blob-07", params={"environment": "prod"}, headers={"X-User-Key": user}, timeout=15)
    assert got.json()["value"] == values["blob-07"]
    small = node_factory.start(env={"OSC_MAX_HEADER_BYTES": "65536"})
    refused = requests.post(small.url + "/import", params={"backup_data": backup}, headers=headers(user), timeout=60)
    assert 400 <= refused.status_code < 500
    assert requests.get(small.url + "/health", timeout=5).status_code == 200
