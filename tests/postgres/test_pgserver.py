"""The test PostgreSQL itself (pgserver_ha.py): it starts, serves a role and a database over
TCP with scram, keeps a committed row across kill -9 and restart, and a synchronous hot
standby takes over after the primary is killed. Needs Debian's `postgresql` package only
(no secureconf build): `python3 -m pytest -q tests/postgres/test_pgserver.py`."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgserver import PgError, PgServer, make_standby  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _binary_present():
    """Overrides conftest.py's check for the secureconf binary: nothing here runs a node."""
    yield


@pytest.fixture
def server():
    with PgServer() as pg:
        yield pg


def _no_processes(pg: PgServer) -> bool:
    return pg._cluster_pids() == [] and pg.postmaster_pid() is None


def test_starts_private_on_loopback_with_fsync(server):
    assert server.running
    assert int(server.scalar("SHOW server_version_num")) >= 150000
    assert server.scalar("SHOW fsync") == "on"
    assert server.scalar("SHOW synchronous_commit") == "on"
    assert server.scalar("SHOW listen_addresses") == "127.0.0.1"
    assert server.scalar("SHOW unix_socket_directories") == str(server.dir)
    assert (server.dir / f".s.PGSQL.{server.port}").exists()
    assert server.scalar("SHOW password_encryption") == "scram-sha-256"
    assert str(server.dir).startswith("/tmp/")
    if os.geteuid() == 0:
        assert server.data_dir.stat().st_uid != 0  # runs as the postgres user
    # The superuser needs its password: no trust anywhere.
    with pytest.raises(PgError, match="password authentication failed"):
        server.psql("SELECT 1", password="wrong")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


def test_role_and_database(server):
    url = server.create_role_and_db("app", "s3cret 'quoted'", "appdb")
    assert url == f"postgres://app:s3cret%20%27quoted%27@127.0.0.1:{server.port}/appdb?sslmode=disable"
    assert server.url("app", "pw", "appdb", sslmode=None) == f"postgres://app:pw@127.0.0.1:{server.port}/appdb"
    out = server.psql("CREATE TABLE t (k text PRIMARY KEY, v int); INSERT INTO t VALUES ('a', 1);"
                      "SELECT current_user, current_database(), count(*) FROM t;",
                      db="appdb", user="app", password="s3cret 'quoted'")
    assert out == "app|appdb|1"
    assert server.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = 'app'") == "f"
    with pytest.raises(PgError, match="password authentication failed"):
        server.psql("SELECT 1", db="appdb", user="app", password="nope")
    # Idempotent: a second call changes the password and keeps the database.
    server.create_role_and_db("app", "other", "appdb")
    assert server.scalar("SELECT v FROM t", db="appdb", user="app", password="other") == "1"


def test_kill9_and_restart_keep_a_committed_row(server):
    server.psql("CREATE TABLE durable (id int PRIMARY KEY, note text);"
                "INSERT INTO durable VALUES (1, 'committed');")
    port, data = server.port, server.data_dir
    server.kill9()
    assert not server.running and _no_processes(server)
    assert (data / "postmaster.pid").exists()  # a crash leaves it behind
    server.restart()
    assert (server.port, server.data_dir) == (port, data)
    assert server.scalar("SELECT note FROM durable WHERE id = 1") == "committed"
    assert "not properly shut down; automatic recovery in progress" in server.log_tail(200)
    # Only the postmaster killed: its children go by themselves, and a restart works.
    server.psql("INSERT INTO durable VALUES (2, 'second')")
    server.kill9(postmaster_only=True)
    assert _no_processes(server)
    server.start()
    assert server.scalar("SELECT count(*) FROM durable") == "2"
    # A clean restart too.
    server.restart()
    assert server.scalar("SELECT count(*) FROM durable") == "2"


def test_synchronous_standby_takes_over_after_primary_kill9(server):
    primary = server
    primary.psql("CREATE TABLE t (id int PRIMARY KEY, origin text); INSERT INTO t VALUES (1, 'before');")
    standby = make_standby(primary, synchronous=True)
    try:
        assert standby.in_recovery()
        assert standby.port != primary.port and standby.dir != primary.dir
        assert primary.scalar("SELECT sync_state FROM pg_stat_replication "
                              f"WHERE application_name = '{standby.name}'") == "sync"
        primary.psql("INSERT INTO t VALUES (2, 'primary')")
        primary.wait_replayed(standby)
        assert standby.psql("SELECT id FROM t ORDER BY id") == "1\n2"
        with pytest.raises(PgError, match="read-only transaction"):
            standby.psql("INSERT INTO t VALUES (99, 'standby')")

        primary.kill9()
        standby.promote()
        assert not standby.in_recovery()
        standby.psql("INSERT INTO t VALUES (3, 'promoted')")  # must not wait for a standby of its own
        assert standby.psql("SELECT id || ':' || origin FROM t ORDER BY id") == "1:before\n2:primary\n3:promoted"
        # The promoted server is a primary of its own across restarts.
        standby.kill9()
        standby.restart()
        assert not standby.in_recovery()
        assert standby.scalar("SELECT count(*) FROM t") == "3"
    finally:
        standby.stop()
    assert standby.dir is None


def test_synchronous_commit_waits_for_the_standby(server):
    standby = server.make_standby(synchronous=True)
    try:
        standby.kill9()
        with pytest.raises(PgError, match="timed out"):
            server.psql("CREATE TABLE waits (x int)", timeout=1.5)  # blocks: no sync standby
        server.set_synchronous_standbys([])  # releases the waiting commit
        deadline = time.monotonic() + 10
        while server.scalar("SELECT count(*) FROM pg_class WHERE relname = 'waits'") != "1":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        standby.start()  # resumes streaming, now asynchronously
        server.wait_for_standby(standby.name, sync=False)
        server.psql("INSERT INTO waits VALUES (1)")
        server.wait_replayed(standby)
        assert standby.scalar("SELECT count(*) FROM waits") == "1"
    finally:
        standby.stop()


def test_stop_removes_everything_even_after_a_failure():
    pg = PgServer()
    with pytest.raises(ZeroDivisionError):
        with pg:
            directory = pg.dir
            assert directory.exists()
            1 / 0
    assert pg.dir is None and not directory.exists()
    assert _no_processes(pg)
    pg.stop()  # idempotent


def test_a_failed_start_reports_the_log():
    pg = PgServer(settings={"shared_buffers": "nonsense"})
    try:
        with pytest.raises(PgError) as err:
            pg.start()
        assert "shared_buffers" in str(err.value) and "log tail" in str(err.value)
        assert _no_processes(pg)
    finally:
        pg.stop()
    assert pg.dir is None
