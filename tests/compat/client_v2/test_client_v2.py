"""opensecureconf-client 2.0.2 against a real SecureConf node.

Runs in tests/compat/.venv-osc2 (see run.sh). Every client is built with
enable_retry=False, so an unexpected 5xx fails at once instead of after ~6 s of retries.
2.0.2 knows nothing about environments: everything it writes lands in "default".
"""

from __future__ import annotations

import importlib.metadata

import pytest
from harness import OTHER_USER_KEY, USER_KEY, free_port, random_token

import opensecureconf_client as osc
from opensecureconf_client import (
    AuthenticationError,
    ClusterError,
    ConfigurationExistsError,
    ConfigurationNotFoundError,
    OpenSecureConfClient,
    OpenSecureConfError,
)


def test_client_version_is_2_0_2():
    assert importlib.metadata.version("opensecureconf-client") == "2.0.2"
    assert not hasattr(OpenSecureConfClient, "list_environments")


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
    assert isinstance(info, dict)
    assert info.get("status") == "operational"


def test_ping_is_false_when_node_is_down():
    c = OpenSecureConfClient(f"http://127.0.0.1:{free_port()}", USER_KEY, enable_retry=False, timeout=2)
    assert c.ping() is False


def test_cluster_status_and_health(client):
    status = client.get_cluster_status()
    assert isinstance(status, dict)
    assert status["enabled"] is False
    for field in ("mode", "node_id", "total_nodes", "healthy_nodes"):
        assert field in status
    health = client.get_cluster_health()
    assert health["status"] == "healthy"
    assert isinstance(health.get("node_id"), str)


# ---- CRUD --------------------------------------------------------------------------------

def test_create_read_update_delete(client):
    key = unique("db")
    created = client.create(key, {"host": "db.local", "port": 5432}, category="database")
    assert created["key"] == key
    assert created["value"] == {"host": "db.local", "port": 5432}
    assert created["category"] == "database"
    assert isinstance(created["id"], int)
    assert created["environment"] == "default"
    for ts in ("created_at", "updated_at"):
        assert created[ts].endswith("Z")

    read = client.read(key)
    assert read["value"] == {"host": "db.local", "port": 5432}
    assert read["category"] == "database"
    assert read["id"] == created["id"]

    updated = client.update(key, {"host": "db2.local", "port": 6543})
    assert updated["value"] == {"host": "db2.local", "port": 6543}
    assert updated["category"] == "database", "a null category on update keeps the old one"
    assert client.read(key)["value"] == {"host": "db2.local", "port": 6543}

    recategorised = client.update(key, {"host": "db3"}, category="db-moved")
    assert recategorised["category"] == "db-moved"
    assert client.read(key)["category"] == "db-moved"

    deleted = client.delete(key)
    assert deleted["message"] == f"Configuration '{key}' deleted successfully"
    with pytest.raises(ConfigurationNotFoundError):
        client.read(key)
    assert client.exists(key) is False


def test_create_without_category(client):
    key = unique("nocat")
    created = client.create(key, {"a": 1})
    assert created["category"] is None
    assert client.read(key)["category"] is None


def test_values_round_trip_exactly(client):
    value = {
        "str": "héllo wörld ✓ 😀",
        "int": 42,
        "neg": -7,
        "big": 2 ** 64 + 1,
        "float": 3.14159,
        "tiny": 1.5e-07,
        "true": True,
        "false": False,
        "null": None,
        "list": [1, "two", 3.0, None, [], {}],
        "nested": {"a": {"b": {"c": [{"d": "deep"}]}}},
        "quotes": 'he said "hi" \\ back\\slash\n\ttab',
        "empty": "",
    }
    key = unique("types")
    assert client.create(key, value)["value"] == value
    got = client.read(key)["value"]
    assert got == value
    assert type(got["true"]) is bool and type(got["int"]) is int and type(got["float"]) is float
    assert list(got) == list(value), "object member order is preserved"


@pytest.mark.parametrize("key", ["with space", "ключ-unicode", "dots.and-dashes_and~tilde", "x" * 255, "colon:semi;comma,"])
def test_unusual_keys(client, key):
    try:
        client.delete(key)
    except ConfigurationNotFoundError:
        pass
    assert client.create(key, {"k": key})["key"] == key
    assert client.read(key)["value"] == {"k": key}
    assert client.exists(key)
    assert client.update(key, {"k": "new"})["value"] == {"k": "new"}
    client.delete(key)
    assert not client.exists(key)


# ---- error paths -------------------------------------------------------------------------

def test_duplicate_create_raises_exists(client):
    key = unique("dup")
    client.create(key, {"v": 1})
    with pytest.raises(ConfigurationExistsError) as e:
        client.create(key, {"v": 2})
    assert "already exists" in str(e.value).lower()
    assert client.read(key)["value"] == {"v": 1}


def test_missing_key_raises_not_found(client):
    key = unique("missing")
    with pytest.raises(ConfigurationNotFoundError):
        client.read(key)
    with pytest.raises(ConfigurationNotFoundError):
        client.update(key, {"v": 1})
    with pytest.raises(ConfigurationNotFoundError):
        client.delete(key)
    assert client.exists(key) is False


def test_deleted_key_can_be_created_again(client):
    key = unique("again")
    client.create(key, {"v": 1})
    client.delete(key)
    assert client.create(key, {"v": 2})["value"] == {"v": 2}
    assert client.read(key)["value"] == {"v": 2}


def test_client_side_validation():
    with pytest.raises(ValueError):
        OpenSecureConfClient("http://127.0.0.1:1", "short")
    c = OpenSecureConfClient("http://127.0.0.1:1", USER_KEY, enable_retry=False)
    with pytest.raises(ValueError):
        c.create("k", ["not", "a", "dict"])


def test_wrong_user_key_on_read_update_delete(node, client):
    key = unique("owned")
    client.create(key, {"secret": "original"}, category="owned")
    intruder = make_client(node, user_key=OTHER_USER_KEY)

    with pytest.raises(AuthenticationError):
        intruder.read(key)
    with pytest.raises(AuthenticationError):
        intruder.update(key, {"secret": "clobbered"})
    with pytest.raises(AuthenticationError):
        intruder.update(key, {"secret": "clobbered"}, category="stolen")
    with pytest.raises(AuthenticationError):
        intruder.delete(key)
    # exists() only swallows 404, so a wrong key raises rather than answering False.
    with pytest.raises(AuthenticationError):
        intruder.exists(key)

    after = client.read(key)
    assert after["value"] == {"secret": "original"}, "a wrong-key update must not change the value"
    assert after["category"] == "owned"


def test_wrong_user_key_on_list(fresh_node):
    owner = make_client(fresh_node)
    owner.create("only", {"v": 1})
    intruder = make_client(fresh_node, user_key=OTHER_USER_KEY)
    with pytest.raises(AuthenticationError):
        intruder.list_all()
    with pytest.raises(AuthenticationError):
        intruder.count()
    assert owner.count() == 1


def test_list_leaves_out_other_users_entries(fresh_node):
    a = make_client(fresh_node)
    b = make_client(fresh_node, user_key=OTHER_USER_KEY)
    a.create("a-1", {"owner": "a"}, category="shared")
    b.create("b-1", {"owner": "b"}, category="shared")
    assert [c["key"] for c in a.list_all()] == ["a-1"]
    assert [c["key"] for c in b.list_all(category="shared")] == ["b-1"]


def test_server_rejects_short_user_key_with_401(node):
    # The client refuses short keys itself; the server must too (401 -> AuthenticationError).
    c = make_client(node)
    c._session.headers["x-user-key"] = "short"
    with pytest.raises(AuthenticationError):
        c.read("anything")
    del c._session.headers["x-user-key"]
    with pytest.raises(AuthenticationError):
        c.list_all()


# ---- lists, categories, bulk, helpers ----------------------------------------------------

def test_list_filter_categories_count(fresh_node):
    c = make_client(fresh_node)
    assert c.list_all() == []
    assert c.count() == 0
    assert c.list_categories() == []
    c.create("db", {"h": "x"}, category="prod")
    c.create("cache", {"h": "y"}, category="prod")
    c.create("feature", {"on": True}, category="flags")
    c.create("plain", {"p": 1})

    everything = c.list_all()
    assert isinstance(everything, list)
    assert [e["key"] for e in everything] == ["db", "cache", "feature", "plain"], "creation order"
    assert {e["key"]: e["value"] for e in everything}["feature"] == {"on": True}
    for e in everything:
        assert set(e) >= {"id", "key", "category", "environment", "value"}

    assert sorted(e["key"] for e in c.list_all(category="prod")) == ["cache", "db"]
    assert c.list_all(category="nope") == []
    assert c.count() == 4
    assert c.count(category="prod") == 2
    assert c.list_categories() == ["flags", "prod"]

    c.update("plain", {"p": 2}, category="misc")
    assert c.list_categories() == ["flags", "misc", "prod"]
    c.delete("feature")
    assert c.list_categories() == ["misc", "prod"]
    assert c.count() == 3


def test_bulk_operations(fresh_node):
    c = make_client(fresh_node)
    configs = [{"key": f"bulk{i}", "value": {"i": i}, "category": "bulk"} for i in range(5)]
    created = c.bulk_create(configs)
    assert [r["key"] for r in created] == [f"bulk{i}" for i in range(5)]

    with pytest.raises(OpenSecureConfError) as e:
        c.bulk_create([{"key": "bulk0", "value": {"dup": True}}])
    assert "already exists" in str(e.value)
    partial = c.bulk_create([{"key": "bulk0", "value": {}}, {"key": "bulk5", "value": {"i": 5}}], ignore_errors=True)
    assert [r["key"] for r in partial] == ["bulk5"]

    read = c.bulk_read([f"bulk{i}" for i in range(6)])
    assert [r["value"] for r in read] == [{"i": i} for i in range(6)]
    with pytest.raises(ConfigurationNotFoundError):
        c.bulk_read(["bulk0", "ghost"])
    assert [r["key"] for r in c.bulk_read(["bulk0", "ghost", "bulk1"], ignore_errors=True)] == ["bulk0", "bulk1"]

    result = c.bulk_delete(["bulk0", "bulk1", "ghost", "bulk2"], ignore_errors=True)
    assert result["deleted"] == ["bulk0", "bulk1", "bulk2"]
    assert [f["key"] for f in result["failed"]] == ["ghost"]
    with pytest.raises(ConfigurationNotFoundError):
        c.bulk_delete(["ghost"])
    assert c.count(category="bulk") == 2
    assert c.count() == 3


def test_exists_and_get_or_default(client):
    key = unique("exists")
    assert client.exists(key) is False
    assert client.get_or_default(key, {"fallback": True}) == {"key": key, "value": {"fallback": True}, "category": None}
    client.create(key, {"real": 1}, category="c")
    assert client.exists(key) is True
    got = client.get_or_default(key, {"fallback": True})
    assert got["value"] == {"real": 1} and got["category"] == "c"


# ---- API-key mode ------------------------------------------------------------------------

def test_api_key_mode_accepts_the_right_key(api_node):
    c = make_client(api_node)
    key = unique("api")
    c.create(key, {"v": 1}, category="api")
    assert c.read(key)["value"] == {"v": 1}
    assert c.update(key, {"v": 2})["value"] == {"v": 2}
    assert key in [e["key"] for e in c.list_all()]
    assert c.get_cluster_status()["enabled"] is False
    c.delete(key)


@pytest.mark.parametrize("bad_key", [None, "wrong-api-key", ""], ids=["missing", "wrong", "empty"])
def test_api_key_mode_rejects_missing_or_wrong_key(api_node, bad_key):
    good = make_client(api_node)
    key = unique("apiguard")
    good.create(key, {"v": "kept"})
    c = make_client(api_node, api_key=bad_key)
    for call in (lambda: c.create(unique("x"), {"v": 1}), lambda: c.read(key), lambda: c.update(key, {"v": "no"}),
                 lambda: c.delete(key), lambda: c.list_all(), lambda: c.exists(key)):
        with pytest.raises(AuthenticationError) as e:
            call()
        assert "api key" in str(e.value).lower()
    with pytest.raises(ClusterError):
        c.get_cluster_status()
    # Public endpoints stay open.
    assert c.ping() is True
    assert c.get_cluster_health()["status"] == "healthy"
    assert good.read(key)["value"] == {"v": "kept"}


def test_no_environment_anywhere_in_the_requests(node, client, monkeypatch):
    """2.0.2 never sends environment; the node must accept that on every route."""
    sent = []
    original = client._session.request

    def spy(method, url, **kwargs):
        sent.append((method, url, kwargs.get("params"), kwargs.get("json")))
        return original(method, url, **kwargs)

    monkeypatch.setattr(client._session, "request", spy)
    key = unique("noenv")
    client.create(key, {"v": 1})
    client.read(key)
    client.update(key, {"v": 2})
    client.list_all()
    client.delete(key)
    for method, url, params, body in sent:
        assert "environment" not in (params or {}) and "environment" not in (body or {}) and "environment" not in url
    assert len(sent) == 5
    assert osc.__name__ == "opensecureconf_client"
