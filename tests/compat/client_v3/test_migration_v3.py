"""A node started on OpenSecureConf 2.1 and 3.1 data after `secureconf import-osc` serves
every entry to the user key that wrote it, through OpenSecureConf's 3.1.0 client."""

from __future__ import annotations

import pytest

from migration import VERSIONS, expected_reads, import_osc
from opensecureconf_client import OpenSecureConfClient


@pytest.mark.parametrize("version", VERSIONS)
def test_imported_entries_read_back_through_the_3_1_client(node_factory, tmp_path, version):
    done = import_osc(version, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4 imported, 0 skipped" in done.stdout and "adopted its salt" in done.stdout, done.stdout
    node = node_factory.start(workdir=tmp_path)
    for entry in expected_reads(version):
        client = OpenSecureConfClient(node.url, entry["user_key"], enable_retry=False, timeout=15, log_level="CRITICAL")
        got = client.read(entry["key"], entry["environment"] or "default")
        assert got["value"] == entry["value"] and got["category"] == entry["category"], (version, entry, got)
