"""The ctypes bindings against a real corosync (one node, in a network namespace of its own)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cluster.lab import netns
from cluster.lab.cluster import LabCluster, run_python
from tests.lab_fixture import running_lab

PROBE = Path(__file__).with_name("corosync_probe.py")


@pytest.fixture(scope="module")
def corosync(lab_cluster):
    return lab_cluster(1, name="corosync", tag=f"b{os.getpid() % 100000}", cluster_name="testcluster", kind=None)


def test_cmap_votequorum_cpg_and_cfg_against_real_corosync(corosync):
    result = corosync.python(corosync.nodes[0], PROBE, "2000")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "error" not in data, data
    assert data["cluster_name"] == "testcluster"
    assert data["config_version"] == 1
    assert data["missing_key"] is None
    assert data["nodes"] == [{"nodeid": 1, "name": "node1", "ring0_addr": "10.213.0.1"}]
    assert (data["quorate"], data["total_votes"], data["expected"]) == (True, 1, 1)
    assert data["nodelist_votes"] == 1
    assert data["node_votes"] == [1, None]  # a node votequorum never saw: not known, not an error
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


def _bridge_only(lab: LabCluster) -> None:
    netns.create_bridge(lab.bridge_ns)  # a namespace with no corosync in it


def test_without_corosync_every_call_fails_closed(tmp_path):
    """Outside any corosync's namespace the libraries answer CS_ERR_LIBRARY: an exception, never a hang."""
    bridge_only = running_lab(tmp_path, 1, tag=f"c{os.getpid() % 100000}", up=_bridge_only, kind=None)
    with bridge_only as lab:
        result = run_python(lab.bridge_ns, PROBE, "1")
    assert json.loads(result.stdout) == {
        "error": "cmap_initialize failed: CS_ERR_LIBRARY (corosync not running or not reachable)"
    }
