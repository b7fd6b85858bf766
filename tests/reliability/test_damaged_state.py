"""Scenario 2: damaged state.

- The salt file missing, truncated, unreadable or different: the node refuses to start with a
  message naming the file and saying to restore it from backup, and writes no new salt.
- The disk fills up at runtime (a tiny tmpfs): writes get 503 with a detail, not 500 and not a
  crash; reads still work; once space is freed writes succeed again and the database is sound.
- The database becomes read-only at runtime (chattr +i, which stops root too): the same.
- RLIMIT_FSIZE (the other way to make writes fail): the node must not die of SIGXFSZ.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import USER_KEY, Node, binary_variables, budget, integrity_check, log
from load import ABSENT, Model, WriteLoad

NOBODY = 65534


def _seed_store(node: Node, n: int = 10) -> dict:
    node.start()
    values = {f"seed-{i}": {"i": i, "secret": f"s3cret-{i}"} for i in range(n)}
    for k, v in values.items():
        r = node.post(k, v)
        assert r.status_code == 201, r.text
    assert node.stop() == 0
    return values


def _refuses(node: Node, label: str, must_mention: tuple[str, ...] = ("backup",)) -> str:
    """Starts the node, expects it to exit non-zero without ever serving; returns its message."""
    node.log_path.write_bytes(b"")
    node.launch()
    rc = node.wait_exit(30)
    if rc is None:
        node.stop()
        pytest.fail(f"{label}: node started (it must refuse); log:\n{node.log_text()[-2000:]}")
    text = node.log_text()
    assert rc != 0, f"{label}: exit code 0"
    assert str(node.salt_path) in text, f"{label}: message does not name {node.salt_path}:\n{text[-1500:]}"
    low = text.lower()
    assert any(m in low for m in must_mention), f"{label}: message mentions none of {must_mention}:\n{text[-1500:]}"
    line = next((l for l in text.splitlines() if l.startswith("secureconf:")), text.strip().splitlines()[-1])
    return f"exit {rc}: {line[:160]}..."


def test_salt_damaged_refuses_to_start(nodes):
    node = nodes.new("salt")
    values = _seed_store(node)
    salt = node.salt_path.read_bytes()
    assert len(salt) == 64
    results = []

    node.salt_path.unlink()
    msg = _refuses(node, "salt missing")
    assert not node.salt_path.exists(), "a new salt file was written over existing data"
    results.append(f"missing -> {msg}")

    for label, content in [("truncated to 32 bytes", salt[:32]), ("empty", b""),
                           ("different (64 random bytes)", os.urandom(64))]:
        node.salt_path.write_bytes(content)
        msg = _refuses(node, f"salt {label}")
        assert node.salt_path.read_bytes() == content, f"salt {label}: the file was changed"
        results.append(f"{label} -> {msg}")

    # Unreadable, as root can experience it: the path is a directory.
    node.salt_path.unlink()
    node.salt_path.mkdir()
    msg = _refuses(node, "salt path is a directory", ("backup", "permission"))
    assert node.salt_path.is_dir() and not any(node.salt_path.iterdir())
    node.salt_path.rmdir()
    results.append(f"unreadable (a directory) -> {msg}")

    node.salt_path.write_bytes(salt)
    node.log_path.write_bytes(b"")
    node.start()
    for k, v in values.items():
        r = node.get(f"/configs/{k}")
        assert r.status_code == 200 and r.json()["value"] == v
    assert node.stop() == 0
    assert node.salt_path.read_bytes() == salt
    for line in results:
        log(f"salt {line}")
    log(f"salt restored: node starts and all {len(values)} entries decrypt; the salt file never changed")


def test_salt_unreadable_chmod_000(tmp_path, binary):
    """chmod 000 does not stop root, so the node runs as nobody for this case."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the node as another user")
    root = Path(tempfile.mkdtemp(prefix="secureconf-nobody-"))
    node = None
    try:
        os.chmod(root, 0o755)

        def as_nobody():
            os.setgid(NOBODY)
            os.setuid(NOBODY)

        node = Node(root / "n", binary=binary, preexec_fn=as_nobody)
        os.chown(node.workdir, NOBODY, NOBODY)
        os.chown(node.data_dir, NOBODY, NOBODY)
        try:
            _seed_store(node, 3)
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"cannot run the node as uid {NOBODY} here: {e}")
        salt = node.salt_path.read_bytes()
        os.chmod(node.salt_path, 0o000)
        msg = _refuses(node, "salt chmod 000 (node as nobody)", ("backup", "permission"))
        assert node.salt_path.read_bytes() == salt
        log(f"salt unreadable (chmod 000, node running as uid {NOBODY} because root ignores file modes) -> {msg}")
        if "backup" not in node.log_text().lower():
            log("note: the unreadable-salt message says to check owner and permissions rather than "
                "to restore from backup (reasonable: the file is there, only its mode is wrong)")
    finally:
        if node is not None and node.alive():
            node.kill()
        shutil.rmtree(root, ignore_errors=True)


# ---- disk full --------------------------------------------------------------------------------

@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "test_rlimit_fsize covers failing writes instead")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> int:
    """Writes zeros to `path` until the filesystem is full; returns the bytes written."""
    written = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:  # no inode left: the load got there first
        return 0
    try:
        block = b"\0" * 65536
        while True:
            try:
                n = os.write(fd, block)
            except OSError:
                break
            if n <= 0:
                break
            written += n
    finally:
        os.close(fd)
    return written


def _writes_refused(node: Node, n: int, prefix: str) -> list[tuple[int, str, str | None]]:
    out = []
    for i in range(n):
        r = node.post(f"{prefix}-{i}", {"pad": "p" * 4000, "i": i})
        out.append((r.status_code, r.text, r.headers.get("retry-after")))
    return out


def _check_refusals(results, label):
    for status, text, retry in results:
        assert status == 503, f"{label}: write answered {status} {text[:200]} (want 503)"
        assert "detail" in text, f"{label}: 503 without a detail: {text[:200]}"


def _df(path: Path) -> str:
    st = os.statvfs(path)
    return f"{st.f_bavail * st.f_frsize // 1024} KiB free of {st.f_blocks * st.f_frsize // 1024} KiB"


def _audit_off(binary) -> dict[str, str]:
    """The audit trail (on by default) refuses any response whose audit record cannot be
    written, reads included; these tests look at the store itself, so they turn it off when the
    binary has it. test_reads_while_storage_fails_with_audit_on covers the default."""
    return {"OSC_AUDIT_ENABLED": "false"} if "OSC_AUDIT_ENABLED" in binary_variables(binary) else {}


def test_disk_full_on_tmpfs(tiny_tmpfs, nodes, seed, binary):  # tmpfs first: unmounted after the node stops
    node = nodes.new("diskfull", data_dir=tiny_tmpfs / "data", env=_audit_off(binary))
    node.start()
    model = Model()
    load = WriteLoad(node.url, 1, 4, seed).start()
    load.wait_progress(40)
    time.sleep(0.5)
    filler = tiny_tmpfs / "filler"
    filled = _fill(filler)
    acked_before_full = load.acknowledged
    time.sleep(budget(3.0, 1.5))
    load.stop()
    model.absorb(load)
    assert node.alive(), f"node died when the disk filled; log:\n{node.log_text()[-3000:]}"
    bad = load.bad_statuses()
    assert not bad, f"unexpected answers while the disk filled: {bad[:10]}"
    assert load.refused > 0, "no write was refused although the disk is full"
    refusals = _writes_refused(node, 5, "while-full")
    _check_refusals(refusals, "disk full")
    reads = [node.get(f"/configs/{k}").status_code
             for k, v in list(model.acked.items())[:40] if v is not ABSENT][:20]
    health = node.get("/health", user_key=None).status_code
    assert reads and set(reads) == {200}, f"reads while the disk is full: {reads}"
    assert health == 200
    full_df = _df(tiny_tmpfs)
    if filler.exists():
        filler.unlink()
    else:  # the load filled the disk by itself: free what the store cannot need
        pytest.fail("the tmpfs filled before the filler could be written; make it larger")
    after = [node.post(f"after-free-{i}", {"i": i}).status_code for i in range(5)]
    assert after == [201] * 5, f"writes after freeing space ({_df(tiny_tmpfs)}): {after}"
    found = node.list_all()
    ok, problems = model.check({k: v for k, v in found.items() if k.startswith("r1c")})
    assert not problems, "after the disk-full episode:\n" + "\n".join(problems[:20])
    assert not any(k.startswith("while-full") for k in found), "a write answered 503 was applied"
    assert node.stop() == 0
    ic = integrity_check(node.db_path)
    assert ic == "ok", ic
    log(f"disk full (64 MiB tmpfs filled with {filled // 1024} KiB during a 4-client write load, then {full_df}): "
        f"writes answered 503 {refusals[0][1][:90]!r} (Retry-After {refusals[0][2]}); "
        f"{load.refused} load writes refused that way, none of them applied; "
        f"{len(reads)} reads while full all {sorted(set(reads))}, /health {health}; node stayed up; "
        f"after freeing space writes 201 again; {load.acknowledged} writes acknowledged "
        f"({load.acknowledged - acked_before_full} after the disk filled), all {ok} keys intact; integrity_check ok")


def _chattr(flag: str, files: list[str]) -> bool:
    return subprocess.run(["chattr", flag, *files], capture_output=True).returncode == 0


def test_database_read_only_at_runtime(nodes, binary):
    if shutil.which("chattr") is None:
        pytest.skip("chattr not installed: no way to make a file read-only for root")
    node = nodes.new("readonly", env=_audit_off(binary))
    values = {f"k{i}": {"i": i} for i in range(10)}
    node.start()
    for k, v in values.items():
        assert node.post(k, v).status_code == 201
    files = [str(node.db_path) + s for s in ("", "-wal")]
    if not _chattr("+i", files):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        refusals = _writes_refused(node, 3, "while-ro")
        puts = [node.put("k1", {"new": 1}).status_code for _ in range(2)]
        reads = [node.get(f"/configs/{k}").status_code for k in values]
        ready_while = node.get("/ready").status_code
        alive = node.alive()
    finally:
        _chattr("-i", files)
    assert alive, f"node died when its database became read-only; log:\n{node.log_text()[-3000:]}"
    _check_refusals(refusals, "read-only database")
    assert puts == [503, 503], puts
    assert set(reads) == {200}, reads
    assert ready_while == 503, f"/ready answered {ready_while} while storage refused writes"
    assert node.get("/ready").status_code == 200, "ready again once storage takes writes"
    after = [node.post(f"after-{i}", {"i": i}).status_code for i in range(3)]
    assert after == [201] * 3, after
    found = node.list_all()
    assert not any(k.startswith("while-ro") for k in found)
    assert found["k1"] == values["k1"]
    assert node.stop() == 0
    assert integrity_check(node.db_path) == "ok"
    log(f"database + WAL read-only at runtime (chattr +i): writes answered 503 {refusals[0][1][:80]!r}, "
        f"{len(reads)} reads 200, node up; after chattr -i writes 201 again; integrity_check ok")


def test_reads_fail_closed_while_storage_fails_with_audit_on(nodes):
    """With the audit trail on (the default) a request that cannot be recorded is refused,
    reads included: fail closed, as Vault does when its audit device fails. The refusal is a
    503 that says why, and reads work again as soon as storage does."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr not installed")
    node = nodes.new("readonly-audit")
    node.start()
    for i in range(3):
        assert node.post(f"k{i}", {"i": i}).status_code == 201
    files = [str(node.db_path) + s for s in ("", "-wal")]
    if not _chattr("+i", files):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        read = node.get("/configs/k1")
        listed = node.get("/configs")
    finally:
        _chattr("-i", files)
    assert node.alive()
    log(f"default configuration (audit trail on), database read-only: GET /configs/k1 -> {read.status_code} "
        f"{read.text[:100]!r}; GET /configs -> {listed.status_code}")
    assert node.get("/configs/k1").status_code == 200  # fine again once writable
    for refused in (read, listed):
        assert refused.status_code == 503, refused.text
        assert "audit" in refused.json()["detail"].lower() and refused.headers.get("Retry-After")
        assert "write was not applied" not in refused.text


def test_wal_index_read_only_at_runtime(nodes):
    """The WAL index (<db>-shm) made immutable at run time: writes get 503 and the node lives.
    Until the change feed's reader arrived (every commit, and once a second, it reads the
    store) the node died of SIGBUS inside libsqlite3 here, and this was a strict xfail; since
    then it has answered 503 in every run (4 of 4 when it first passed). Why the SIGBUS went
    away is not established, so this test keeps watch."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr not installed")
    node = nodes.new("readonly-shm")
    node.start()
    for i in range(5):
        assert node.post(f"k{i}", {"i": i}).status_code == 201
    files = [str(node.db_path) + s for s in ("", "-wal", "-shm")]
    if not _chattr("+i", files):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        try:
            statuses = [node.post(f"ro-{i}", {"i": i}, timeout=30).status_code for i in range(3)]
        except Exception as e:  # noqa: BLE001
            statuses = [type(e).__name__]
        time.sleep(0.5)
        alive = node.alive()
    finally:
        _chattr("-i", files)
    if not alive:
        node.wait_exit(30)
        log(f"db + WAL + WAL index (-shm) read-only at runtime: the node died with exit status "
            f"{node.returncode} (SIGBUS is -{int(signal.SIGBUS)}) on the first write; answers {statuses}")
    assert alive, f"node died (exit {node.returncode}) when its -shm became read-only"
    assert all(s == 503 for s in statuses), statuses


def test_rlimit_fsize(nodes, binary):
    """Writes failing with EFBIG: the default action of SIGXFSZ would kill the process."""
    node = nodes.new("fsize", env=_audit_off(binary))
    node.start()
    for i in range(5):
        assert node.post(f"k{i}", {"i": i}).status_code == 201
    assert node.stop() == 0
    limit = max(os.path.getsize(str(node.db_path) + s) for s in ("", "-wal")
                if os.path.exists(str(node.db_path) + s)) + 256 * 1024

    def limit_fsize():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    node.preexec_fn = limit_fsize
    node.start()
    statuses = []
    for i in range(100):
        try:
            r = node.post(f"big-{i}", {"pad": "z" * 4000, "i": i})
        except Exception as e:  # noqa: BLE001
            statuses.append(type(e).__name__)
            break
        statuses.append(r.status_code)
        if r.status_code != 201:
            break
    time.sleep(0.3)
    alive = node.alive()
    if not alive:
        node.wait_exit(10)
        pytest.fail(f"node died with exit status {node.returncode} (SIGXFSZ is -{int(signal.SIGXFSZ)}) once its "
                    f"files reached RLIMIT_FSIZE={limit}; answers {statuses}")
    assert statuses[-1] == 503, f"answers under RLIMIT_FSIZE: {statuses}"
    assert node.get("/configs/k1").status_code == 200
    assert node.stop() == 0
    node.preexec_fn = None
    node.start()
    assert node.get("/configs/k1").status_code == 200
    assert node.stop() == 0
    assert integrity_check(node.db_path) == "ok"
    log(f"RLIMIT_FSIZE={limit} bytes: {statuses.count(201)} writes fit, then 503 (no SIGXFSZ death), "
        f"reads 200; restarted without the limit: serves, integrity_check ok")
