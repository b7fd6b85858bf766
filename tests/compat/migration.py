"""Shared by the migration tests of every client suite: an OpenSecureConf data directory
(tests/compat/fixtures/osc_datadirs, written by its real 2.1 and 3.1 servers; see its
README) imported with `secureconf import-osc` into a fresh node's working directory."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from harness import secureconf_binary

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "osc_datadirs"
VERSIONS = ["osc2.1", "osc3.1"]


def expected_reads(version: str) -> list[dict]:
    return json.loads((FIXTURES / version / "expected_reads.json").read_text())


def import_osc(version: str, workdir: Path, copy: bool = True) -> subprocess.CompletedProcess:
    """Runs `secureconf import-osc` from a copy of the fixture into `workdir/data` (the node
    factory's default paths)."""
    source = FIXTURES / version
    if copy:
        src = workdir / "osc-source"
        src.mkdir(parents=True, exist_ok=True)
        for name in ("configurations.db", "encryption.salt"):
            shutil.copy2(source / name, src / name)
        source = src
    data = workdir / "data"
    return subprocess.run(
        [str(secureconf_binary()), "import-osc", "--database", str(source / "configurations.db"), "--salt", str(source / "encryption.salt"),
         "--database-path", str(data / "configurations.db"), "--salt-file", str(data / "encryption.salt")],
        cwd=workdir, capture_output=True, text=True, timeout=60)
