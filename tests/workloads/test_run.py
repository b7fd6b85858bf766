"""`secureconf run` and `secureconf export` against a real node: the child sees the values as
variables (the README's naming and flattening rule), never a SecureConf credential; the exit
status and signals are the command's; with --watch, a change to an injected value restarts
the command once within a second, and a change elsewhere does not."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import yaml

from conftest import USER_KEY

PRINT_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def run(binary, node, env, *args, command=PRINT_ENV, timeout=30):
    return subprocess.run([binary, "run", "--url", node.url, "--environment", "prod", *args, "--", *command],
                          env=env, capture_output=True, text=True, timeout=timeout)


def seed(node):
    node.put("db", {"host": "db.internal", "port": 5432, "tls": {"enabled": True, "ca": "/etc/ca.pem"}}, category="database")
    node.put("api-token", "t0k'en with spaces\nand a second line")
    node.put("replicas", 3)
    node.put("hosts", ["a", "b"])
    node.put("2fa.secret", None)
    node.put("elsewhere", "not in prod", environment="staging")


def test_the_child_sees_the_values_and_no_credential(binary, node, client_env):
    seed(node)
    client_env["OSC_API_KEY"] = "an-api-key-the-child-must-not-see"
    client_env["OSC_USER_KEY"] = USER_KEY
    client_env["KEPT"] = "yes"
    r = run(binary, node, client_env)
    assert r.returncode == 0, r.stderr
    child = json.loads(r.stdout)
    assert child["DB_HOST"] == "db.internal" and child["DB_PORT"] == "5432"
    assert child["DB_TLS_ENABLED"] == "true" and child["DB_TLS_CA"] == "/etc/ca.pem"
    assert child["API_TOKEN"] == "t0k'en with spaces\nand a second line"
    assert child["REPLICAS"] == "3" and child["HOSTS"] == '["a","b"]' and child["_2FA_SECRET"] == "null"
    assert "ELSEWHERE" not in child, "another environment's value"
    assert child["KEPT"] == "yes"
    for name in ("SECURECONF_USER_KEY", "OSC_USER_KEY", "OSC_API_KEY", "SECURECONF_CREDENTIALS_FILE"):
        assert name not in child, name
    assert USER_KEY not in r.stdout
    # A prefix and a category.
    only = json.loads(run(binary, node, client_env, "--category", "database", "--prefix", "app.").stdout)
    assert only["APP_DB_HOST"] == "db.internal" and "APP_REPLICAS" not in only and "DB_HOST" not in only


def test_the_exit_status_and_signals_are_the_commands(binary, node, client_env):
    node.put("x", 1)
    assert run(binary, node, client_env, command=["sh", "-c", "exit 42"]).returncode == 42
    # Without --watch the command replaces secureconf: a signal to its pid reaches the command.
    p = subprocess.Popen([binary, "run", "--url", node.url, "--environment", "prod", "--",
                          sys.executable, "-c",
                          "import signal, sys, time\n"
                          "signal.signal(signal.SIGTERM, lambda *a: sys.exit(17))\n"
                          "print('ready', flush=True)\n"
                          "time.sleep(30)"],
                         env=client_env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 17
    missing = run(binary, node, client_env, command=["/nonexistent/program"])
    assert missing.returncode == 127 and "cannot run" in missing.stderr


def test_two_keys_that_make_one_name_are_refused_naming_both(binary, node, client_env):
    node.put("db-host", "a")
    node.put("db", {"host": "b"})
    r = run(binary, node, client_env)
    assert r.returncode == 1
    assert "key 'db-host'" in r.stderr and "key 'db' member 'host'" in r.stderr and "DB_HOST" in r.stderr


def test_credentials_come_from_a_private_file_and_never_from_arguments(binary, node, client_env, tmp_path):
    node.put("x", "from-file")
    creds = tmp_path / "creds"
    creds.write_text(f"SECURECONF_USER_KEY={USER_KEY}\n")
    creds.chmod(0o644)
    env = {k: v for k, v in client_env.items() if k != "SECURECONF_USER_KEY"}
    refused = run(binary, node, env, "--credentials-file", str(creds))
    assert refused.returncode == 1 and "readable by others" in refused.stderr
    creds.chmod(0o600)
    assert json.loads(run(binary, node, env, "--credentials-file", str(creds)).stdout)["X"] == "from-file"
    no_key = run(binary, node, env)
    assert no_key.returncode == 1 and "user key is needed" in no_key.stderr
    assert subprocess.run([binary, "run", "--help"], capture_output=True, text=True).stdout.count("user-key") == 0


def test_export_formats_parse_back_to_the_same_values(binary, node, client_env, tmp_path):
    seed(node)
    base = [binary, "export", "--url", node.url, "--environment", "prod"]
    as_json = json.loads(subprocess.run(base + ["--format", "json"], env=client_env, capture_output=True, text=True).stdout)
    assert as_json["db"] == {"host": "db.internal", "port": 5432, "tls": {"enabled": True, "ca": "/etc/ca.pem"}}
    assert as_json["2fa.secret"] is None and as_json["hosts"] == ["a", "b"]
    as_yaml = yaml.safe_load(subprocess.run(base + ["--format", "yaml"], env=client_env, capture_output=True, text=True).stdout)
    assert as_yaml == as_json
    expected = json.loads(run(binary, node, client_env).stdout)
    names = ["DB_HOST", "DB_PORT", "DB_TLS_ENABLED", "DB_TLS_CA", "API_TOKEN", "REPLICAS", "HOSTS", "_2FA_SECRET"]

    shell_file = tmp_path / "vars.sh"
    r = subprocess.run(base + ["--format", "shell", "--output", str(shell_file)], env=client_env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert stat.S_IMODE(os.stat(shell_file).st_mode) == 0o600
    sourced = subprocess.run(["bash", "-c", f"set -a; . {shell_file}; {sys.executable} -c 'import json,os; print(json.dumps(dict(os.environ)))'"],
                             capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    got = json.loads(sourced.stdout)
    assert {n: got[n] for n in names} == {n: expected[n] for n in names}

    from dotenv import dotenv_values
    dotenv_file = tmp_path / ".env"
    subprocess.run(base + ["--format", "dotenv", "--output", str(dotenv_file)], env=client_env, check=True)
    assert stat.S_IMODE(os.stat(dotenv_file).st_mode) == 0o600
    parsed = dotenv_values(dotenv_file)
    assert {n: parsed[n] for n in names} == {n: expected[n] for n in names}
    # Written again: replaced whole, still 0600, no temporary file left behind.
    subprocess.run(base + ["--format", "dotenv", "--output", str(dotenv_file)], env=client_env, check=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".env")) == [".env"]


def test_watch_restarts_once_when_an_injected_value_changes_and_not_otherwise(binary, node, client_env, tmp_path):
    node.put("db", {"host": "h1"})
    node.put("other", "o", environment="staging")
    starts = tmp_path / "starts.log"
    child = (f"import os, signal, sys, time\n"
             f"open({str(starts)!r}, 'a').write(os.environ['DB_HOST'] + ' ' + str(time.time()) + '\\n')\n"
             f"signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
             f"time.sleep(120)\n")
    p = subprocess.Popen([binary, "run", "--watch", "--grace", "5", "--url", node.url, "--environment", "prod", "--",
                          sys.executable, "-c", child], env=client_env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not (starts.exists() and starts.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert starts.read_text().split()[0] == "h1"
        node.put("other", "changed", environment="staging")  # not injected
        node.put("unrelated-prod-key", "new")  # injected? yes: a new prod key is a new variable
        time.sleep(1.5)
        lines = starts.read_text().splitlines()
        assert len(lines) == 2, f"a new prod value is a new variable: one restart ({lines})"
        changed_at = time.time()
        node.put("db", {"host": "h2"})
        deadline = time.monotonic() + 5
        while len(starts.read_text().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = starts.read_text().splitlines()
        assert len(lines) == 3 and lines[-1].split()[0] == "h2", lines
        assert float(lines[-1].split()[1]) - changed_at < 1.0, "restarted within a second"
        node.put("db", {"host": "h2"})  # the same value written again: nothing changed
        node.put("other", "again", environment="staging")
        time.sleep(1.5)
        assert len(starts.read_text().splitlines()) == 3, "no restart without a change"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, "SIGTERM passed on; the command's status is run's"
    finally:
        if p.poll() is None:
            p.kill()


def test_a_termination_signal_during_a_restart_ends_run_without_a_new_command(binary, node, client_env, tmp_path):
    """SIGTERM while the old command is still stopping (it takes a second): passed on, no new
    command is started, and run exits with the old command's status."""
    node.put("v", "1")
    starts = tmp_path / "starts.log"
    child = (f"import os, signal, sys, time\n"
             f"open({str(starts)!r}, 'a').write(os.environ['V'] + '\\n')\n"
             f"signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.0), sys.exit(3)))\n"
             f"time.sleep(120)\n")
    p = subprocess.Popen([binary, "run", "--watch", "--grace", "10", "--url", node.url, "--environment", "prod", "--",
                          sys.executable, "-c", child], env=client_env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not (starts.exists() and starts.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        node.put("v", "2")  # the restart begins: the command takes a second to stop
        time.sleep(0.4)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 3, "the old command's status"
        time.sleep(0.5)
        assert starts.read_text().split() == ["1"], "no new command after the termination signal"
    finally:
        if p.poll() is None:
            p.kill()
