"""opensecureconf-client 3.1.0 against a real SecureConf node.

Runs in tests/compat/.venv-osc3 (see run.sh). Every client is built with
enable_retry=False, so an unexpected 5xx fails at once instead of after ~6 s of retries.
3.1.0 requires an environment on create/read/update/delete.
"""

from __future__ import annotations

import importlib.metadata

import pytest
import requests

from harness import OTHER_USER_KEY, USER_KEY, free_port, random_token

from opensecureconf_client import (
    AuthenticationError,
    ClusterError,
    ConfigurationExistsError,
    ConfigurationNotFoundError,
    OpenSecureConfClient,
    OpenSecureConfError,
)


def test_client_version_is_3_1_0():
    assert importlib.metadata.version("opensecureconf-client") == "3.1.0"
    assert hasattr(OpenSecureConfClient, "list_environments")


def make_client(node, user_key=USER_KEY, api_key="auto") -> OpenSecureConfClient:
    if api_key == "auto":
        api_key = node.api_key
    return OpenSecureConfClient(node.url, user_key, api_key=api_key, enable_retry=False, timeout=15,
                                log_level="CRITICAL")


@pytest.fixture(scope="module")
def client(node):
    with make_client(node) as c:
        yield c


def unique(prefix="k"):
    return random_token(prefix + "-", 6)


# ---- service, health, cluster -----------------------------------------------------------

def test_ping_and_service_info(client):
    assert client.ping() is True
    info = client.get_service_info()
    assert isinstance(info, dict) and info.get("status") == "operational"
    assert info["cluster"] == {"enabled": False} or info["cluster"]["enabled"] is False


def test_ping_is_false_when_node_is_down():
    c = OpenSecureConfClient(f"http://127.0.0.1:{free_port()}", USER_KEY, enable_retry=False, timeout=2,
                             log_level="CRITICAL")
    assert c.ping() is False


def test_cluster_status_and_health(client):
    status = client.get_cluster_status()
    assert status["enabled"] is False
    for field in ("mode", "node_id", "total_nodes", "healthy_nodes"):
        assert field in status
    health = client.get_cluster_health()
    assert health["status"] == "healthy" and isinstance(health["node_id"], str)


# ---- CRUD with environments --------------------------------------------------------------

def test_create_read_update_delete(client):
    key = unique("db")
    created = client.create(key, {"host": "db.prod", "port": 5432}, "production", category="database")
    assert created["key"] == key
    assert created["environment"] == "production"
    assert created["category"] == "database"
    assert created["value"] == {"host": "db.prod", "port": 5432}
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")

    read = client.read(key, "production")
    assert read["value"] == {"host": "db.prod", "port": 5432}
    assert read["environment"] == "production"

    updated = client.update(key, "production", [1, 2])
    assert updated["value"] == [1, 2]
    assert updated["category"] == "database", "a null category on update keeps the old one"
    assert updated["environment"] == "production"
    assert client.read(key, "production")["value"] == [1, 2]

    assert client.update(key, "production", "s", category="moved")["category"] == "moved"

    deleted = client.delete(key, "production")
    assert deleted["message"] == f"Configuration '{key}' deleted successfully"
    with pytest.raises(ConfigurationNotFoundError):
        client.read(key, "production")
    assert client.exists(key, "production") is False


def test_same_key_in_two_environments(client):
    key = unique("multi")
    prod = client.create(key, {"host": "db.prod"}, "prod", category="db")
    dev = client.create(key, {"host": "db.dev"}, "dev", category="db")
    assert prod["id"] != dev["id"]
    assert client.read(key, "prod")["value"] == {"host": "db.prod"}
    assert client.read(key, "dev")["value"] == {"host": "db.dev"}
    with pytest.raises(ConfigurationNotFoundError):
        client.read(key, "staging")

    client.update(key, "dev", {"host": "db2.dev"})
    assert client.read(key, "prod")["value"] == {"host": "db.prod"}, "updating dev leaves prod alone"
    assert client.read(key, "dev")["value"] == {"host": "db2.dev"}

    with pytest.raises(ConfigurationExistsError) as e:
        client.create(key, {"again": 1}, "prod")
    assert "already exists" in str(e.value).lower()

    client.delete(key, "dev")
    assert client.exists(key, "dev") is False
    assert client.read(key, "prod")["value"] == {"host": "db.prod"}, "deleting dev leaves prod alone"


VALUES = {
    "object": {"host": "x", "port": 1, "nested": {"list": [1, {"a": None}]}},
    "empty_object": {},
    "array": [1, "two", 3.5, True, None, {"k": "v"}, [[]]],
    "empty_array": [],
    "string": "plain string",
    "unicode_string": "héllo ✓ 😀 \u0000 \u001f \"quoted\" \\",
    "empty_string": "",
    "numeric_string": "1",
    "int": 1,
    "zero": 0,
    "negative_int": -42,
    "big_int": 2 ** 70,
    "float": 3.14,
    "small_float": 1.5e-07,
    "large_float": 1e100,
    "negative_float": -0.5,
    "float_whole": 2.0,
    "true": True,
    "false": False,
    "nested": {"a": [{"b": [{"c": {"d": [1, 2, {"e": "deep"}]}}]}]},
}


@pytest.mark.parametrize("name", list(VALUES))
def test_every_json_type_round_trips(client, name):
    value = VALUES[name]
    key = unique("type-" + name)
    created = client.create(key, value, "types")
    assert created["value"] == value
    got = client.read(key, "types")["value"]
    assert got == value
    assert type(got) is type(value), f"{name}: {type(got).__name__} came back for {type(value).__name__}"
    if isinstance(value, dict):
        assert list(got) == list(value), "member order is preserved"
    # Change the type on update, and back.
    assert client.update(key, "types", {"was": name})["value"] == {"was": name}
    assert client.update(key, "types", value)["value"] == value
    assert type(client.read(key, "types")["value"]) is type(value)


def test_bool_is_not_int(client):
    key = unique("flag")
    client.create(key, True, "prod")
    assert client.read(key, "prod")["value"] is True
    key1 = unique("one")
    client.create(key1, 1, "prod")
    v = client.read(key1, "prod")["value"]
    assert v == 1 and type(v) is int


@pytest.mark.parametrize("key", ["with space", "ключ", "a.b-c_d~e", "y" * 255, "a+b", "100%", "emoji-😀", "quote'\"s"])
def test_unusual_keys(client, key):
    env = "keys-" + random_token(n=4)
    client.create(key, {"k": key}, env)
    assert client.read(key, env)["value"] == {"k": key}
    client.update(key, env, "v2")
    assert client.read(key, env)["value"] == "v2"
    client.delete(key, env)
    assert not client.exists(key, env)


@pytest.mark.parametrize("env", ["prod env", "prød", "e" * 100])
def test_unusual_environment_names(client, env):
    key = unique("envname")
    assert client.create(key, 1, env)["environment"] == env
    assert client.read(key, env)["environment"] == env
    assert key in [e["key"] for e in client.list_all(environment=env)]
    client.delete(key, env)


# ---- error paths -------------------------------------------------------------------------

def test_missing_key_raises_not_found(client):
    key = unique("missing")
    with pytest.raises(ConfigurationNotFoundError):
        client.read(key, "prod")
    with pytest.raises(ConfigurationNotFoundError):
        client.update(key, "prod", {"v": 1})
    with pytest.raises(ConfigurationNotFoundError):
        client.delete(key, "prod")


def test_client_side_validation():
    with pytest.raises(ValueError):
        OpenSecureConfClient("http://127.0.0.1:1", "short")
    c = OpenSecureConfClient("http://127.0.0.1:1", USER_KEY, enable_retry=False, log_level="CRITICAL")
    with pytest.raises(ValueError):
        c.create("k", 1, "")
    with pytest.raises(ValueError):
        c.read("k", "")


def test_wrong_user_key_on_read_update_delete(node, client):
    key = unique("owned")
    client.create(key, {"secret": "original"}, "prod", category="owned")
    intruder = make_client(node, user_key=OTHER_USER_KEY)

    with pytest.raises(AuthenticationError):
        intruder.read(key, "prod")
    with pytest.raises(AuthenticationError):
        intruder.update(key, "prod", {"secret": "clobbered"})
    with pytest.raises(AuthenticationError):
        intruder.update(key, "prod", "clobbered", category="stolen")
    with pytest.raises(AuthenticationError):
        intruder.delete(key, "prod")
    with pytest.raises(AuthenticationError):
        intruder.exists(key, "prod")
    with pytest.raises(AuthenticationError):
        intruder.get_or_default(key, "prod", "default")

    after = client.read(key, "prod")
    assert after["value"] == {"secret": "original"}, "a wrong-key update must not change the value"
    assert after["category"] == "owned"


def test_wrong_user_key_on_list(fresh_node):
    owner = make_client(fresh_node)
    owner.create("only", {"v": 1}, "prod", category="c")
    intruder = make_client(fresh_node, user_key=OTHER_USER_KEY)
    with pytest.raises(AuthenticationError):
        intruder.list_all()
    with pytest.raises(AuthenticationError):
        intruder.list_all(environment="prod")
    with pytest.raises(AuthenticationError):
        intruder.list_environments()
    with pytest.raises(AuthenticationError):
        intruder.list_categories()
    assert owner.count() == 1


def test_list_leaves_out_other_users_entries(fresh_node):
    a = make_client(fresh_node)
    b = make_client(fresh_node, user_key=OTHER_USER_KEY)
    a.create("shared-name", "a's", "prod")
    b.create("b-only", "b's", "prod")
    assert [(e["key"], e["value"]) for e in a.list_all(environment="prod")] == [("shared-name", "a's")]
    assert [(e["key"], e["value"]) for e in b.list_all()] == [("b-only", "b's")]
    r = requests.get(fresh_node.url + "/configs", headers={"X-User-Key": USER_KEY}, timeout=10)
    assert r.headers.get("X-SecureConf-Skipped") == "1"


# ---- lists, environments, categories, bulk, helpers --------------------------------------

def test_list_filters_environments_categories_count(fresh_node):
    c = make_client(fresh_node)
    assert c.list_all() == [] and c.list_environments() == [] and c.list_categories() == []
    c.create("db", {"h": "p"}, "prod", category="database")
    c.create("db", {"h": "s"}, "staging", category="database")
    c.create("db", {"h": "d"}, "dev", category="database")
    c.create("token", "secret", "prod", category="auth")
    c.create("debug", False, "dev")

    everything = c.list_all()
    assert [(e["key"], e["environment"]) for e in everything] == [
        ("db", "prod"), ("db", "staging"), ("db", "dev"), ("token", "prod"), ("debug", "dev")]
    assert c.list_environments() == ["dev", "prod", "staging"]
    assert c.list_categories() == ["auth", "database"]
    assert [e["value"] for e in c.list_all(environment="prod")] == [{"h": "p"}, "secret"]
    assert [e["environment"] for e in c.list_all(category="database")] == ["prod", "staging", "dev"]
    assert [e["key"] for e in c.list_all(category="database", environment="dev")] == ["db"]
    assert c.list_all(environment="nowhere") == []
    assert c.count() == 5
    assert c.count(environment="dev") == 2
    assert c.count(category="database") == 3
    assert c.count(category="auth", environment="prod") == 1
    assert c.count(category="auth", environment="dev") == 0

    c.delete("db", "staging")
    assert c.list_environments() == ["dev", "prod"]
    assert c.count() == 4


def test_bulk_operations(fresh_node):
    c = make_client(fresh_node)
    configs = [{"key": "db", "value": {"env": env}, "environment": env, "category": "config"}
               for env in ("prod", "staging", "dev")]
    configs.append({"key": "token", "value": "secret-123", "environment": "prod", "category": "auth"})
    created = c.bulk_create(configs)
    assert [(r["key"], r["environment"]) for r in created] == [
        ("db", "prod"), ("db", "staging"), ("db", "dev"), ("token", "prod")]

    with pytest.raises(OpenSecureConfError):
        c.bulk_create([{"key": "db", "value": 1, "environment": "prod"}])
    partial = c.bulk_create([{"key": "db", "value": 1, "environment": "prod"},
                             {"key": "db", "value": 1, "environment": "qa"}], ignore_errors=True)
    assert [(r["key"], r["environment"]) for r in partial] == [("db", "qa")]

    items = [{"key": "db", "environment": e} for e in ("prod", "staging", "dev", "qa")]
    assert [r["value"] for r in c.bulk_read(items)] == [{"env": "prod"}, {"env": "staging"}, {"env": "dev"}, 1]
    with pytest.raises(ConfigurationNotFoundError):
        c.bulk_read([{"key": "db", "environment": "nowhere"}])
    got = c.bulk_read([{"key": "db", "environment": "nowhere"}, {"key": "token", "environment": "prod"}],
                      ignore_errors=True)
    assert [r["value"] for r in got] == ["secret-123"]

    result = c.bulk_delete([{"key": "db", "environment": "staging"}, {"key": "db", "environment": "nowhere"},
                            {"key": "db", "environment": "qa"}], ignore_errors=True)
    assert result["deleted"] == [{"key": "db", "environment": "staging"}, {"key": "db", "environment": "qa"}]
    assert [(f["key"], f["environment"]) for f in result["failed"]] == [("db", "nowhere")]
    with pytest.raises(ConfigurationNotFoundError):
        c.bulk_delete([{"key": "db", "environment": "staging"}])
    assert c.list_environments() == ["dev", "prod"]
    assert c.count() == 3


def test_exists_and_get_or_default(client):
    key = unique("exists")
    assert client.exists(key, "prod") is False
    assert client.get_or_default(key, "prod", "fallback") == {
        "key": key, "value": "fallback", "environment": "prod", "category": None}
    client.create(key, 7, "prod", category="c")
    assert client.exists(key, "prod") is True
    assert client.exists(key, "dev") is False
    got = client.get_or_default(key, "prod", "fallback")
    assert got["value"] == 7 and got["category"] == "c" and got["environment"] == "prod"


def test_entries_written_without_environment_are_in_default(fresh_node):
    """What a 2.x client writes (no environment) is visible to 3.x as environment "default"."""
    r = fresh_node.create("legacy", {"from": "v2"}, category="old")
    assert r.status_code == 201, r.text
    c = make_client(fresh_node)
    assert c.read("legacy", "default")["value"] == {"from": "v2"}
    with pytest.raises(ConfigurationNotFoundError):
        c.read("legacy", "prod")
    c.create("legacy", {"from": "v3"}, "prod")
    assert c.list_environments() == ["default", "prod"]
    assert fresh_node.request("GET", "/configs/legacy").json()["value"] == {"from": "v2"}


# ---- API-key mode ------------------------------------------------------------------------

def test_api_key_mode_accepts_the_right_key(api_node):
    c = make_client(api_node)
    key = unique("api")
    c.create(key, {"v": 1}, "prod", category="api")
    assert c.read(key, "prod")["value"] == {"v": 1}
    assert c.update(key, "prod", 2)["value"] == 2
    assert "prod" in c.list_environments()
    assert c.get_cluster_status()["enabled"] is False
    c.delete(key, "prod")


@pytest.mark.parametrize("bad_key", [None, "wrong-api-key", ""], ids=["missing", "wrong", "empty"])
def test_api_key_mode_rejects_missing_or_wrong_key(api_node, bad_key):
    good = make_client(api_node)
    key = unique("apiguard")
    good.create(key, "kept", "prod")
    c = make_client(api_node, api_key=bad_key)
    for call in (lambda: c.create(unique("x"), 1, "prod"), lambda: c.read(key, "prod"),
                 lambda: c.update(key, "prod", "no"), lambda: c.delete(key, "prod"),
                 lambda: c.list_all(), lambda: c.list_environments(), lambda: c.exists(key, "prod")):
        with pytest.raises(AuthenticationError) as e:
            call()
        assert "api key" in str(e.value).lower()
    with pytest.raises(ClusterError):
        c.get_cluster_status()
    assert c.ping() is True
    assert c.get_cluster_health()["status"] == "healthy"
    assert good.read(key, "prod")["value"] == "kept"
