"""The ctypes bindings against a real corosync (one node, in a network namespace of its own)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.harness import SingleNodeCorosync

PROBE = Path(__file__).with_name("corosync_probe.py")


@pytest.fixture(scope="module")
def corosync(tmp_path_factory):
    node = SingleNodeCorosync(tmp_path_factory.mktemp("corosync"), namespace=f"pvetest-cs-{os.getpid()}")
    node.start()
    yield node
    node.stop()


def test_cmap_votequorum_cpg_and_cfg_against_real_corosync(corosync):
    result = corosync.run_python(PROBE, "2000")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "error" not in data, data
    assert data["cluster_name"] == "testcluster"
    assert data["config_version"] == 1
    assert data["missing_key"] is None
    assert data["nodes"] == [{"nodeid": 1, "name": "n1", "ring0_addr": "127.0.0.1"}]
    assert (data["quorate"], data["total_votes"], data["expected"]) == (True, 1, 1)
    assert data["quorum_notification"] == [True, [1]]
    assert data["expected_zero"] == "expected votes must be at least 1"
    assert data["local_nodeid"] == 1
    assert data["delivered_in_order"] is True
    assert data["confchg"] == [[1], 0, 1]
    ring_nodeid, ring_seq, totem_members = data["totem"]
    assert (ring_nodeid, totem_members) == (1, [1]) and ring_seq > 0
    assert data["callback_error"] == "callback failure"  # re-raised from dispatch, not lost in C
    assert data["reloaded"] is True
    assert "1..128 bytes" in data["long_name"]


def test_without_corosync_every_call_fails_closed(tmp_path):
    """Outside any corosync's namespace the libraries answer CS_ERR_LIBRARY: an exception, never a hang."""
    node = SingleNodeCorosync(tmp_path, namespace=f"pvetest-nocs-{os.getpid()}")
    import subprocess

    subprocess.run(["ip", "netns", "add", node.namespace], check=True)
    try:
        result = node.run_python(PROBE, "1", timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", node.namespace], check=False)
    assert json.loads(result.stdout) == {
        "error": "cmap_initialize failed: CS_ERR_LIBRARY (corosync not running or not reachable)"
    }
