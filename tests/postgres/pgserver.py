"""A private PostgreSQL server for tests, from Debian's `postgresql` package.

It lives in a temporary directory under /tmp, listens on 127.0.0.1 on a free port (and on a
Unix socket in that directory), keeps fsync on (the tests are about durability), and is
removed at the end. As root (CI), initdb and postgres run as the `postgres` user through
`runuser`, on a directory chowned to it.

    with PgServer() as pg:
        pg.create_role_and_db("osc", "secret", "osc")
        url = pg.url("osc", "secret", "osc")

`python3 tests/postgres/pgserver.py` starts one and prints its URL until Ctrl-C.
"""

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SUPERUSER = "postgres"
SUPERPASSWORD = "pg-test-superuser"
_alive = []


def bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return found[-1]
    try:
        return subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root():
    return os.geteuid() == 0


def _cmd(args):
    """As root, the command runs as the postgres user."""
    if _as_root():
        return ["runuser", "-u", "postgres", "--"] + args
    return args


class PgServer:
    def __init__(self, port=None, data_dir=None, config=None):
        self.bin = bindir()
        self.port = port or free_port()
        self.base = data_dir or tempfile.mkdtemp(prefix="osc-pg-", dir="/tmp")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgres.log")
        self.config = dict(config or {})
        self.proc = None
        self._owned = data_dir is None

    # -- life cycle

    def initdb(self):
        os.chmod(self.base, 0o700)
        pwfile = os.path.join(self.base, "pw")
        with open(pwfile, "w") as f:
            f.write(SUPERPASSWORD + "\n")
        if _as_root():
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _cmd([f"{self.bin}/initdb", "-D", self.data, "-U", SUPERUSER, "--pwfile", pwfile,
                  "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.unlink(pwfile)

    def start(self):
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self.initdb()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": self.base,
            "fsync": "on",
            "max_connections": "200",
            "logging_collector": "off",
        }
        settings.update(self.config)
        args = [f"{self.bin}/postgres", "-D", self.data]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(_cmd(args), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        if self not in _alive:
            _alive.append(self)
        self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{self.log_tail()}")
            r = subprocess.run([f"{self.bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def kill9(self):
        """The server's whole process group, as a power cut would stop it."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self):
        self.kill9()
        return self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self in _alive:
            _alive.remove(self)
        if self._owned:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- SQL

    def url(self, user, password, db):
        return f"postgres://{user}:{password}@127.0.0.1:{self.port}/{db}?sslmode=disable"

    def psql(self, sql, db="postgres", user=SUPERUSER, password=SUPERPASSWORD):
        env = dict(os.environ, PGPASSWORD=password)
        r = subprocess.run(
            [f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db,
             "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            env=env, capture_output=True, text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_role_and_db(self, user, password, db):
        self.psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        self.psql(f"CREATE DATABASE \"{db}\" OWNER \"{user}\"")


@atexit.register
def _cleanup():
    for server in list(_alive):
        try:
            server.stop()
        except Exception:
            pass


if __name__ == "__main__":
    with PgServer() as pg:
        pg.create_role_and_db("osc", "osc-password", "osc")
        print(pg.url("osc", "osc-password", "osc"), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
