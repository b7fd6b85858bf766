"""`secureconf agent` against real nodes: renders Mustache templates into 0600 files, runs its
command after a change, re-renders within a second of a change event, tries every node in
turn, keeps serving the last values from its encrypted offline cache while no node answers
(exit 75 with --once), and catches up when a node returns."""

from __future__ import annotations

import os
import stat
import subprocess
import time

from conftest import USER_KEY


def write_config(tmp_path, urls, extra=""):
    (tmp_path / "app.mustache").write_text(
        "host={{db.host}}\nport={{db.port}}\n{{#entries}}{{key}}={{value}}\n{{/entries}}")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"url: [{', '.join(urls)}]\n"
        "environment: prod\n"
        f"cache: {tmp_path / 'agent.cache'}\n"
        "templates:\n"
        f"  - template: {tmp_path / 'app.mustache'}\n"
        f"    destination: {out / 'app.conf'}\n"
        f"    command: \"echo reloaded >> {tmp_path / 'actions.log'}\"\n" + extra)
    return config, out / "app.conf"


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_the_agent_renders_and_rerenders_within_a_second(binary, node, client_env, tmp_path):
    node.put("db", {"host": "h1", "port": 5432})
    node.put("token", "a&b<c>")  # no HTML escaping in config files
    dead = "http://127.0.0.1:9"  # nothing listens there: tried first, skipped
    config, rendered = write_config(tmp_path, [dead, node.url])
    agent = subprocess.Popen([binary, "agent", "--config", str(config)], env=client_env, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: rendered.exists() and "host=h1" in rendered.read_text(), 15)
        text = rendered.read_text()
        assert "port=5432" in text and "token=a&b<c>" in text, text
        assert stat.S_IMODE(os.stat(rendered).st_mode) == 0o600
        assert wait_for(lambda: (tmp_path / "actions.log").exists(), 5)
        actions = (tmp_path / "actions.log").read_text().count("reloaded")
        changed = time.monotonic()
        # A dot is not in base64's alphabet, so the check on the cache below cannot be fooled
        # by the Fernet token spelling the value by chance (as "h2" once did).
        node.put("db", {"host": "h2.internal", "port": 5432})
        assert wait_for(lambda: "host=h2.internal" in rendered.read_text(), 5)
        assert time.monotonic() - changed < 1.0, "re-rendered within a second of the change"
        assert wait_for(lambda: (tmp_path / "actions.log").read_text().count("reloaded") == actions + 1, 5)
        node.put("other", 1, environment="staging")
        time.sleep(1.0)
        assert (tmp_path / "actions.log").read_text().count("reloaded") == actions + 1, "no action without a change to the file"
        cache = (tmp_path / "agent.cache").read_bytes()
        assert b"h2.internal" not in cache and USER_KEY.encode() not in cache and stat.S_IMODE(os.stat(tmp_path / "agent.cache").st_mode) == 0o600
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_the_agent_serves_from_its_cache_while_no_node_answers_and_catches_up(binary, node, client_env, tmp_path):
    node.put("db", {"host": "before", "port": 1})
    config, rendered = write_config(tmp_path, [node.url])
    assert subprocess.run([binary, "agent", "--config", str(config), "--once"], env=client_env, timeout=60).returncode == 0
    assert "host=before" in rendered.read_text()
    agent = subprocess.Popen([binary, "agent", "--config", str(config)], env=client_env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        node.stop()
        rendered.unlink()
        # A new agent with every node down renders the cached values, and says so.
        offline = subprocess.run([binary, "agent", "--config", str(config), "--once"], env=client_env, timeout=60,
                                 capture_output=True, text=True)
        assert offline.returncode == 75, offline.stderr
        assert "offline cache" in offline.stderr and "host=before" in rendered.read_text()
        assert agent.poll() is None, "the running agent keeps running while no node answers"
        node.start()
        node.put("db", {"host": "after", "port": 2})
        assert wait_for(lambda: "host=after" in rendered.read_text(), 10), "caught up once a node returned"
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    # A cache under another user key is no cache.
    other = dict(client_env, SECURECONF_USER_KEY="another-user-key-99")
    node.stop()
    assert subprocess.run([binary, "agent", "--config", str(config), "--once"], env=other, timeout=60,
                          capture_output=True).returncode == 1


def test_a_cache_of_another_environment_is_not_used(binary, node, client_env, tmp_path):
    node.put("db", {"host": "prod-host", "port": 1})
    config, rendered = write_config(tmp_path, [node.url])
    assert subprocess.run([binary, "agent", "--config", str(config), "--once"], env=client_env, timeout=60).returncode == 0
    node.stop()
    config.write_text(config.read_text().replace("environment: prod", "environment: staging"))
    rendered.unlink()
    r = subprocess.run([binary, "agent", "--config", str(config), "--once"], env=client_env, timeout=60,
                       capture_output=True, text=True)
    assert r.returncode == 1 and not rendered.exists(), "prod's cached values are never rendered for staging"
