"""A real, private PostgreSQL server for tests, with hot standbys (plain Python 3, no pytest).

PgServer() / start / stop / kill9 / url / psql / create_role_and_db, make_standby / promote,
and a kill9 that finds every process of the cluster even though runuser sits between us and
postgres.

    from pgserver import PgServer, make_standby
    with PgServer() as pg:
        pg.create_role_and_db("app", "secret", "appdb")
        url = pg.url("app", "secret", "appdb")   # postgres://app:secret@127.0.0.1:PORT/appdb
        pg.psql("SELECT 1")                      # as the superuser, over TCP
        pg.kill9(); pg.restart()                 # crash + crash recovery, same data and port
        standby = make_standby(pg)               # synchronous hot standby (pg_basebackup -R)
        pg.kill9(); standby.promote()

Every server lives in its own temporary directory (default under /tmp):

    <dir>/data          the cluster (initdb -U postgres -A scram-sha-256 -E UTF8 --locale=C)
    <dir>/postgres.log  the server's stderr (and initdb / pg_basebackup output)
    <dir>/.s.PGSQL.N    the unix socket (unix_socket_directories=<dir>)

It listens on 127.0.0.1 only, with fsync=on and synchronous_commit=on. The binaries come
from the highest /usr/lib/postgresql/<version>/bin, else `pg_config --bindir`, else PATH
(PGSERVER_BINDIR overrides all three).

As root (initdb and postgres refuse to run as root) the directory is chowned to the
`postgres` system user (PGSERVER_OS_USER overrides) and initdb / postgres / pg_basebackup /
pg_ctl run through `runuser -u postgres --`. runuser forks (it keeps a PAM session
open), so the Popen handle is runuser's, not the postmaster's: the postmaster pid is read
from data/postmaster.pid, and every process of a cluster is found by its process title,
which carries a unique cluster_name ("postgres: <cluster_name>: checkpointer", ...).

Every server started here is stopped and its directory removed at interpreter exit, even
if the test forgot (atexit), and `with` stops it on any exception. Nothing here ever
signals a process that is not part of a cluster this module started.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["PgServer", "PgError", "make_standby", "find_bindir", "free_port"]

DEFAULT_TIMEOUT = 30.0
SUPERUSER = "postgres"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.65535.lock" must fit too


class PgError(RuntimeError):
    """A PostgreSQL command or the server failed; the message carries output / log tail."""


# ---- binaries, ports, users ----------------------------------------------------------------

def _version_key(path: str):
    name = Path(path).parent.name  # /usr/lib/postgresql/<version>/bin
    return [int(p) if p.isdigit() else -1 for p in re.split(r"[.]", name)]


def find_bindir() -> Path:
    """The directory holding initdb/postgres/pg_ctl/psql/pg_basebackup/pg_isready."""
    def usable(d) -> bool:
        return bool(d) and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres"))

    explicit = os.environ.get("PGSERVER_BINDIR")
    if explicit:
        if not usable(explicit):
            raise PgError(f"PGSERVER_BINDIR={explicit} has no initdb/postgres")
        return Path(explicit)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if usable(d):
            return Path(d)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            d = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
            if usable(d):
                return Path(d)
        except (OSError, subprocess.SubprocessError):
            pass
    for name in ("initdb", "postgres"):
        found = shutil.which(name)
        if found and usable(os.path.dirname(found)):
            return Path(os.path.dirname(found))
    raise PgError("no PostgreSQL server binaries found (install Debian's `postgresql` package: "
                  "looked in /usr/lib/postgresql/*/bin, `pg_config --bindir`, PATH)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _clean_env() -> Dict[str, str]:
    """The environment minus inherited PG* variables (PGHOST, PGPORT, ... would misdirect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _conninfo_quote(value: str) -> str:
    """A libpq conninfo value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


# ---- process discovery (Linux /proc) --------------------------------------------------------

def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # a zombie ("Z") is dead for our purposes
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _all_pids() -> List[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


# ---- the server -----------------------------------------------------------------------------

_live: "weakref.WeakSet[PgServer]" = weakref.WeakSet()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live)
    # standbys first, so that a primary never waits on a synchronous standby during shutdown
    servers.sort(key=lambda s: s.primary is None)
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # pragma: no cover - best effort at exit
            print(f"pgserver: cleanup of {server.dir} failed: {exc}", file=sys.stderr)


atexit.register(_stop_all_at_exit)


class PgServer:
    """One private PostgreSQL cluster: temp dir, initdb, postgres on 127.0.0.1:port.

    base_dir: parent directory for the temporary directory (default /tmp). As root, every
        ancestor must be traversable by the postgres user.
    data_dir: (as in pgserver.py) use this directory itself instead of a new temporary one;
        an existing cluster in data_dir/data is reused, and stop() does not remove it.
    port: TCP port (default: a free one, chosen by binding port 0; kept across restarts).
    password: the `postgres` superuser password (default: random).
    settings / config: extra postgresql.conf settings (name -> value), written at initdb time.
    """

    def __init__(self, base_dir: Optional[str] = None, port: Optional[int] = None, *,
                 password: Optional[str] = None, settings: Optional[Dict[str, str]] = None,
                 timeout: float = DEFAULT_TIMEOUT, name: Optional[str] = None,
                 data_dir: Optional[str] = None, config: Optional[Dict[str, str]] = None):
        self.bindir = find_bindir()
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.gettempdir() if not _is_root() else "/tmp")
        self._port_given = port is not None
        self.port: int = port if port is not None else free_port()
        self.password: str = password if password is not None else secrets.token_hex(16)
        self.settings = dict(config or {})
        self.settings.update(settings or {})
        self.timeout = timeout
        # cluster_name ends up in every process title: how we find (only) our processes.
        self.name: str = name or ("pgs_" + secrets.token_hex(6))
        if not re.fullmatch(r"[a-z0-9_]{1,40}", self.name):
            raise ValueError("name must match [a-z0-9_]{1,40} (used as cluster_name/application_name)")
        self.os_user: Optional[str] = (os.environ.get("PGSERVER_OS_USER") or "postgres") if _is_root() else None
        self.dir: Optional[Path] = None
        self._fixed_dir: Optional[Path] = Path(data_dir).resolve() if data_dir else None
        self.proc: Optional[subprocess.Popen] = None   # runuser (as root) or postgres itself
        self.primary: Optional["PgServer"] = None      # set on a standby made by make_standby
        self.standbys: List["PgServer"] = []
        self._initialized = False
        self._log_file = None

    # -- paths and urls --

    @property
    def data_dir(self) -> Path:
        return self._require_dir() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_dir() / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self._require_dir()

    def url(self, user: str = SUPERUSER, password: Optional[str] = None, db: str = "postgres",
            sslmode: Optional[str] = "disable") -> str:
        """postgres://user:password@127.0.0.1:PORT/db?sslmode=disable (user and password
        percent-encoded; sslmode=None leaves the query off). The server has no TLS."""
        from urllib.parse import quote
        if password is None and user == SUPERUSER:
            password = self.password
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        url = f"postgres://{auth}@127.0.0.1:{self.port}/{quote(db, safe='')}"
        return url + (f"?sslmode={sslmode}" if sslmode else "")

    def dsn(self, user: str = SUPERUSER, password: Optional[str] = None, db: str = "postgres") -> str:
        """The same as a libpq key=value conninfo string."""
        if password is None and user == SUPERUSER:
            password = self.password
        parts = [f"host=127.0.0.1", f"port={self.port}", f"user={_conninfo_quote(user)}",
                 f"dbname={_conninfo_quote(db)}", "sslmode=disable"]
        if password is not None:
            parts.append(f"password={_conninfo_quote(password)}")
        return " ".join(parts)

    # -- context manager --

    def __enter__(self) -> "PgServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgServer(name={self.name!r}, port={self.port}, dir={str(self.dir)!r}, running={self.running})"

    # -- lifecycle --

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "PgServer":
        """Create the directory and cluster if needed, start postgres, wait until it accepts
        connections. Starting a running server is a no-op."""
        if self.running:
            return self
        self._prepare_dir()
        if not self._initialized:
            self._initdb()
        attempts = 1 if self._port_given else 3
        for attempt in range(attempts):
            try:
                self._launch()
                self._wait_ready()
                return self
            except PgError as exc:
                bind_failed = "could not bind" in self.log_tail(40) or "Address already in use" in self.log_tail(40)
                self._kill_cluster_processes()
                if bind_failed and attempt + 1 < attempts:
                    self.port = free_port()
                    continue
                raise exc
        raise AssertionError("unreachable")

    def restart(self) -> "PgServer":
        """Start again on the same data directory and port (fast shutdown first if running;
        after kill9 this runs crash recovery)."""
        if self.running:
            self.shutdown("fast")
        return self.start()

    def shutdown(self, mode: str = "fast") -> None:
        """Stop the server, keeping its directory. mode: smart | fast | immediate."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline and (_pid_alive(pid) or self._cluster_pids()):
                time.sleep(0.05)
        self._kill_cluster_processes()  # no-op unless the shutdown timed out
        self._reap()

    def stop(self) -> None:
        """Fast shutdown, then remove the temporary directory. Idempotent."""
        try:
            if self.dir is not None and self.dir.exists():
                self.shutdown("fast")
            else:
                self._reap()
        finally:
            if self.primary is not None and self in self.primary.standbys:
                self.primary.standbys.remove(self)
            if self.dir is not None:
                if self._fixed_dir is None:
                    shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
            self._initialized = False
            with _live_lock:
                _live.discard(self)

    def kill9(self, postmaster_only: bool = False) -> None:
        """SIGKILL the server: by default the postmaster and every backend/auxiliary process
        of the cluster (a crash of the whole machine, minus losing the page cache); with
        postmaster_only=True just the postmaster (its children then exit on their own, and
        this waits for them, since a restart needs their shared memory released)."""
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if postmaster_only:
            deadline = time.monotonic() + self.timeout
            while self._cluster_pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._kill_cluster_processes()
        self._reap()

    def postmaster_pid(self) -> Optional[int]:
        """The live postmaster's pid (from data/postmaster.pid, verified against /proc)."""
        if self.dir is None:
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            pid = None
        if pid is not None and _pid_alive(pid) and str(self.data_dir) in _cmdline(pid):
            return pid
        # not written yet / stale: look for it by its command line
        for p in _all_pids():
            cmd = _cmdline(p)
            if cmd.startswith(str(self.bindir / "postgres")) and f"cluster_name={self.name}" in cmd:
                return p
        return None

    # -- SQL --

    def psql(self, sql: str, db: str = "postgres", *, user: str = SUPERUSER,
             password: Optional[str] = None, check: bool = True, timeout: Optional[float] = None) -> str:
        """Run SQL (may be several statements; stops at the first error) through psql over
        TCP, as the superuser unless told otherwise. Returns stdout, stripped: unaligned,
        tuples only, '|' between columns, one row a line. Raises PgError on failure when check."""
        if password is None and user == SUPERUSER:
            password = self.password
        env = _clean_env()
        if password is not None:
            env["PGPASSWORD"] = password
        env["PGCONNECT_TIMEOUT"] = "5"
        env["PGSSLMODE"] = "disable"
        cmd = [str(self._bin("psql")), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db, "-f", "-"]
        try:
            r = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env,
                               timeout=timeout or self.timeout, cwd=tempfile.gettempdir())
        except subprocess.TimeoutExpired as exc:
            raise PgError(f"psql timed out after {exc.timeout}s on {self.name}:{self.port}: {sql!r}") from None
        if check and r.returncode != 0:
            raise PgError(f"psql failed (exit {r.returncode}) on {self.name}:{self.port}: {sql!r}\n{r.stderr.strip()}")
        return r.stdout.strip()

    def scalar(self, sql: str, db: str = "postgres", **kw) -> str:
        """The single value the SQL returns (stripped)."""
        return self.psql(sql, db, **kw).strip()

    def create_role_and_db(self, user: str, password: str, db: str) -> str:
        """A LOGIN role with a (scram) password and a database it owns. Idempotent: an existing
        role gets the new password, an existing database is kept. Returns url(user, password, db)."""
        exists = self.scalar(f"SELECT 1 FROM pg_roles WHERE rolname = {_sql_literal(user)}")
        verb = "ALTER" if exists == "1" else "CREATE"
        self.psql(f"{verb} ROLE {_sql_ident(user)} LOGIN PASSWORD {_sql_literal(password)};")
        if self.scalar(f"SELECT 1 FROM pg_database WHERE datname = {_sql_literal(db)}") != "1":
            # its own psql run: CREATE DATABASE cannot share a transaction
            self.psql(f"CREATE DATABASE {_sql_ident(db)} OWNER {_sql_ident(user)};")
        return self.url(user, password, db)

    # -- replication --

    def make_standby(self, synchronous: bool = True, **kw) -> "PgServer":
        """See make_standby(primary, ...)."""
        return make_standby(self, synchronous=synchronous, **kw)

    def in_recovery(self) -> bool:
        return self.scalar("SELECT pg_is_in_recovery()") == "t"

    def set_synchronous_standbys(self, names: List[str]) -> None:
        """synchronous_standby_names = FIRST n (names) (empty list: asynchronous), reloaded."""
        value = "" if not names else "FIRST %d (%s)" % (len(names), ", ".join(f'"{n}"' for n in names))
        self.psql(f"ALTER SYSTEM SET synchronous_standby_names = {_sql_literal(value)};\n"
                  "SELECT pg_reload_conf();")

    def wait_for_standby(self, name: str, sync: bool, timeout: Optional[float] = None) -> None:
        """Wait until the standby `name` streams from this server (sync_state 'sync' if sync)."""
        want = "sync" if sync else "async"
        deadline = time.monotonic() + (timeout or self.timeout)
        last = ""
        while time.monotonic() < deadline:
            last = self.scalar("SELECT state || ',' || sync_state FROM pg_stat_replication "
                               f"WHERE application_name = {_sql_literal(name)}")
            if last == f"streaming,{want}":
                return
            time.sleep(0.1)
        raise PgError(f"standby {name} not streaming/{want} from {self.name} after "
                      f"{timeout or self.timeout}s (pg_stat_replication: {last!r})")

    def wait_replayed(self, standby: "PgServer", timeout: Optional[float] = None) -> None:
        """Wait until standby has replayed everything this primary has written so far.
        (synchronous_commit=on waits for the standby's flush, not its replay.)"""
        lsn = self.scalar("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if standby.scalar(f"SELECT pg_last_wal_replay_lsn() >= {_sql_literal(lsn)}::pg_lsn") == "t":
                return
            time.sleep(0.05)
        raise PgError(f"standby {standby.name} did not replay up to {lsn} within {timeout or self.timeout}s")

    def promote(self, timeout: Optional[float] = None) -> None:
        """Promote this hot standby to a primary and wait until it accepts writes."""
        t = int(timeout or self.timeout)
        out = self.scalar(f"SELECT pg_promote(wait => true, wait_seconds => {t})", timeout=t + 5)
        if out != "t":
            raise PgError(f"pg_promote() on {self.name} returned {out!r}\n{self.log_tail()}")
        deadline = time.monotonic() + t
        while self.in_recovery():
            if time.monotonic() > deadline:
                raise PgError(f"{self.name} still in recovery after promotion\n{self.log_tail()}")
            time.sleep(0.05)
        if self.primary is not None and self in self.primary.standbys:
            self.primary.standbys.remove(self)

    # -- logs --

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                data = f.read().decode("utf-8", "replace")
        except (OSError, PgError):
            return "(no log)"
        return "\n".join(data.splitlines()[-lines:])

    # ---- internals ----------------------------------------------------------------------------

    def _require_dir(self) -> Path:
        if self.dir is None:
            raise PgError("server has no directory (not started, or stopped)")
        return self.dir

    def _bin(self, name: str) -> Path:
        return self.bindir / name

    def _as_os_user(self, argv: List[str]) -> List[str]:
        if self.os_user is None:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", self.os_user, "--"] + argv

    def _chown(self, path: Path) -> None:
        if self.os_user is not None:
            shutil.chown(path, user=self.os_user, group=_primary_group(self.os_user))

    def _prepare_dir(self) -> None:
        if self.dir is not None:
            return
        if self._fixed_dir is not None:
            self._fixed_dir.mkdir(parents=True, exist_ok=True)
            self.dir = self._fixed_dir
            self._initialized = (self.dir / "data" / "PG_VERSION").exists()
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=f"pgserver-{self.name}-", dir=self.base_dir))
        with _live_lock:
            _live.add(self)
        if len(str(self.dir / ".s.PGSQL.65535.lock")) > _SOCKET_PATH_MAX:
            if self._fixed_dir is None:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            raise PgError(f"base_dir {self.base_dir} is too long for a unix socket path; use a shorter one")
        if self.os_user is not None:
            self._chown(self.dir)
            self._check_traversable(self.dir)
        os.chmod(self.dir, 0o700)
        if not self.log_path.exists():
            self.log_path.touch()
        self._chown(self.log_path)

    def _check_traversable(self, path: Path) -> None:
        """As root: the postgres user must be able to reach its own directory."""
        r = subprocess.run(self._as_os_user(["test", "-w", str(path), "-a", "-x", str(path)]),
                           cwd="/", env=_clean_env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise PgError(f"user {self.os_user} cannot reach {path} (a parent directory is not "
                          f"traversable by it; use a base_dir under /tmp): {r.stderr.strip()}")

    def _run_tool(self, argv: List[str], what: str, env: Optional[Dict[str, str]] = None,
                  timeout: Optional[float] = None) -> str:
        """A short-lived tool (initdb, pg_basebackup, pg_ctl) as the OS user; output is kept
        in the log and in the error."""
        r = subprocess.run(self._as_os_user(argv), cwd=str(self.dir), env=env or _clean_env(),
                           capture_output=True, text=True, timeout=timeout or self.timeout * 4)
        with open(self.log_path, "a") as f:
            f.write(f"--- {what}: {' '.join(argv)} (exit {r.returncode})\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            raise PgError(f"{what} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout

    def _initdb(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        try:
            self._run_tool([str(self._bin("initdb")), "-D", str(self.data_dir), "-U", SUPERUSER,
                            "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8",
                            "--locale=C", "--no-sync", "--no-instructions"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        # Only 127.0.0.1 (and the private socket); replication too, all with scram.
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by tests/postgres/pgserver.py\n"
            "local   all          all                  scram-sha-256\n"
            "host    all          all   127.0.0.1/32   scram-sha-256\n"
            "host    replication  all   127.0.0.1/32   scram-sha-256\n")
        conf = {
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "wal_keep_size": "'128MB'",
            "hot_standby": "on",
            "max_connections": "100",
            "shared_buffers": "'32MB'",
            "logging_collector": "off",
            "log_destination": "'stderr'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_min_messages": "warning",
            "log_connections": "off",
            "password_encryption": "'scram-sha-256'",
            "update_process_title": "on",
        }
        conf.update({k: (v if re.fullmatch(r"[\w.\-]+", str(v)) else _conf_quote(str(v)))
                     for k, v in self.settings.items()})
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# ---- tests/postgres/pgserver.py ----\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        self._initialized = True

    def _launch(self) -> None:
        # Per-instance settings on the command line (a standby's copied conf files never
        # carry its primary's port, socket or cluster_name).
        argv = [str(self._bin("postgres")), "-D", str(self.data_dir),
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.dir}", "-c", f"cluster_name={self.name}"]
        self._close_log()
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"--- start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(self._as_os_user(argv), cwd=str(self.dir), env=_clean_env(),
                                     stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        isready = [str(self._bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", SUPERUSER, "-d", "postgres", "-t", "1"]
        while True:
            if self.proc.poll() is not None:
                raise PgError(f"postgres {self.name} exited with {self.proc.returncode} during startup "
                              f"(port {self.port}); log tail:\n{self.log_tail()}")
            r = subprocess.run(isready, env=_clean_env(), capture_output=True, cwd="/")
            if r.returncode == 0:
                try:
                    self.psql("SELECT 1", timeout=5)
                    return
                except PgError as exc:
                    last = str(exc)
            else:
                last = f"pg_isready exit {r.returncode}"
            if time.monotonic() > deadline:
                raise PgError(f"postgres {self.name} not accepting connections on 127.0.0.1:{self.port} "
                              f"after {self.timeout}s ({last}); log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def _cluster_pids(self) -> List[int]:
        """Every live process of this cluster: the postmaster (argv has our cluster_name)
        and its children (titles 'postgres: <cluster_name>: ...')."""
        title = f"postgres: {self.name}: "
        marker = f"cluster_name={self.name}"
        pids = []
        for p in _all_pids():
            cmd = _cmdline(p)
            if not cmd or not _pid_alive(p):
                continue
            if cmd.startswith(title) or (marker in cmd and "postgres" in cmd):
                if self.proc is not None and p == self.proc.pid and self.os_user is not None:
                    continue  # runuser itself: reaped by _reap
                pids.append(p)
        return pids

    def _kill_cluster_processes(self) -> None:
        deadline = time.monotonic() + self.timeout
        pm = self.postmaster_pid()
        if pm is not None:
            try:
                os.kill(pm, signal.SIGKILL)  # first, so it cannot fork replacements
            except ProcessLookupError:
                pass
        while True:
            pids = self._cluster_pids()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise PgError(f"processes of {self.name} survive SIGKILL: {pids}")
            time.sleep(0.02)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _primary_group(user: str) -> str:
    import grp
    import pwd
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


# ---- streaming replication ------------------------------------------------------------------

def make_standby(primary: PgServer, synchronous: bool = True, *, name: Optional[str] = None,
                 base_dir: Optional[str] = None, port: Optional[int] = None) -> PgServer:
    """A hot standby of `primary`: pg_basebackup -R -X stream into a new PgServer's directory,
    streaming as application_name=<standby.name>, started and waited for. With synchronous,
    the primary's synchronous_standby_names becomes this standby (replacing any other), so
    a commit on the primary returns only once the standby has flushed it; if the standby
    then goes away, commits on the primary block (call primary.set_synchronous_standbys([])).
    The standby's own copy of synchronous_standby_names is cleared, so that after promote()
    it does not wait for a standby of its own."""
    if not primary.running:
        raise PgError("the primary is not running")
    standby = PgServer(base_dir=base_dir or str(primary.base_dir), port=port,
                       password=primary.password, timeout=primary.timeout, name=name)
    try:
        standby._prepare_dir()
        env = _clean_env()
        env["PGPASSWORD"] = primary.password
        env["PGSSLMODE"] = "disable"
        standby._run_tool([str(standby._bin("pg_basebackup")), "-h", "127.0.0.1", "-p", str(primary.port),
                           "-U", SUPERUSER, "-D", str(standby.data_dir), "-R", "-X", "stream",
                           "-c", "fast", "--no-sync", "-w"], "pg_basebackup", env=env)
        auto = standby.data_dir / "postgresql.auto.conf"
        kept = [line for line in auto.read_text().splitlines()
                if not re.match(r"\s*(primary_conninfo|synchronous_standby_names)\s*=", line)]
        conninfo = (f"host=127.0.0.1 port={primary.port} user={SUPERUSER} "
                    f"password={_conninfo_quote(primary.password)} "
                    f"application_name={standby.name} sslmode=disable")
        kept.append(f"primary_conninfo = {_conf_quote(conninfo)}")
        auto.write_text("\n".join(kept) + "\n")
        standby._chown(auto)
        if not (standby.data_dir / "standby.signal").exists():
            raise PgError("pg_basebackup -R wrote no standby.signal")
        standby._initialized = True
        standby.primary = primary
        standby.start()
        if synchronous:
            primary.set_synchronous_standbys([standby.name])
        primary.wait_for_standby(standby.name, sync=synchronous)
        primary.standbys.append(standby)
        return standby
    except BaseException:
        standby.stop()
        raise


# ---- manual use -----------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Start a private PostgreSQL server until Ctrl-C.")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--password", default=None, help="superuser password (default: random)")
    ap.add_argument("--standby", action="store_true", help="also start a synchronous hot standby")
    args = ap.parse_args(argv)
    # Ctrl-C and SIGTERM both end in a clean stop (even when started with SIGINT ignored, as
    # a background job of a non-interactive shell is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with PgServer(port=args.port, password=args.password) as pg:
        print(f"PostgreSQL {pg.scalar('SHOW server_version')} ({pg.bindir})")
        print(f"url:  {pg.url()}")
        print(f"dir:  {pg.dir}   log: {pg.log_path}")
        standby = pg.make_standby() if args.standby else None
        if standby:
            print(f"standby url: {standby.url()}")
        print("Ctrl-C to stop.", flush=True)
        try:
            while pg.running:
                time.sleep(1)
            print("postgres exited; log tail:\n" + pg.log_tail(), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping")
        finally:
            if standby:
                standby.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
