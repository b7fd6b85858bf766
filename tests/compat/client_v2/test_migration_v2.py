"""A node started on OpenSecureConf 2.1 data after `secureconf import-osc` serves every
entry to the user key that wrote it, through OpenSecureConf's 2.0.2 client (no environments:
2.x rows land in `default`)."""

from __future__ import annotations

from migration import expected_reads, import_osc
from opensecureconf_client import OpenSecureConfClient


def test_imported_2_1_entries_read_back_through_the_2_0_2_client(node_factory, tmp_path):
    done = import_osc("osc2.1", tmp_path)
    assert done.returncode == 0, done.stderr
    node = node_factory.start(workdir=tmp_path)
    for entry in expected_reads("osc2.1"):
        client = OpenSecureConfClient(node.url, entry["user_key"], enable_retry=False, timeout=15)
        got = client.read(entry["key"])
        assert got["value"] == entry["value"] and got["environment"] == "default", (entry, got)
