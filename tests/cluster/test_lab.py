"""A real 3-node corosync cluster in network namespaces: quorum, partition, heal, total order."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.lab.cluster import LabCluster

PROBE = Path(__file__).with_name("lab_probe.py")
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(3, name="lab", kind=None)  # corosync only


def quorum(lab: LabCluster, index: int) -> dict:
    result = lab.python(lab.nodes[index], PROBE, "quorum")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_quorum(lab: LabCluster, index: int, quorate: bool, timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if quorum(lab, index).get("quorate") is quorate:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"node{index + 1} quorate={quorate} not reached: {quorum(lab, index)}")


def test_three_nodes_reach_quorum(lab):
    for index in range(3):
        wait_quorum(lab, index, True)
        assert quorum(lab, index)["total_votes"] == 3


def test_agreed_order_is_the_same_on_every_node(lab):
    processes = [
        lab.run(
            node,
            [sys.executable, str(PROBE), "order", "300", "3", node.name],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        for node in lab.nodes
    ]
    results = [json.loads(process.communicate(timeout=90)[0]) for process in processes]
    assert all(result["members"] == [1, 2, 3] for result in results)
    sequences = [result["delivered"] for result in results]
    assert len(sequences[0]) == 900
    assert sequences[0] == sequences[1] == sequences[2]
    for node in lab.nodes:  # each sender's own messages stay in its sending order
        own = [m for m in sequences[0] if m.startswith(f"{node.name}:")]
        assert own == [f"{node.name}:{i}" for i in range(300)]


def test_isolated_node_loses_quorum_and_majority_keeps_it(lab):
    lab.partition(lab.nodes[2])
    try:
        wait_quorum(lab, 2, False)
        assert quorum(lab, 0)["quorate"] is True and quorum(lab, 1)["quorate"] is True
    finally:
        lab.heal()
    wait_quorum(lab, 2, True)
    assert quorum(lab, 2)["total_votes"] == 3


def pvecm(lab: LabCluster, index: int, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    data = tmp_path / f"pvecm-node{index + 1}"
    etc = data / "etc" / "pve"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "corosync.conf").write_text((lab.nodes[index].directory / "corosync.conf").read_text())
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "PVE_DATA_DIR": str(data),
        "PVE_NODE_NAME": lab.nodes[index].name,
    }
    return subprocess.run(
        ["ip", "netns", "exec", lab.nodes[index].namespace, sys.executable, str(REPO / "manage.py"), "pvecm", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pvecm_status_and_nodes(lab, tmp_path):
    status = pvecm(lab, 0, tmp_path, "status")
    assert status.returncode == 0, status.stderr
    text = status.stdout
    for line in (
        "Name:             lab",
        "Config Version:   1",
        "Transport:        knet",
        "Secure auth:      off",
        "Nodes:            3",
        "Node ID:          0x00000001",
        "Quorate:          Yes",
        "Expected votes:   3",
        "Total votes:      3",
        "Quorum:           2",
        "Flags:            Quorate",
        "0x00000001          1 10.213.0.1 (local)",
        "0x00000003          1 10.213.0.3",
    ):
        assert line in text.splitlines(), (line, text)
    nodes = pvecm(lab, 1, tmp_path, "nodes").stdout.splitlines()
    assert nodes[:3] == ["Membership information", "----------------------", "    Nodeid      Votes Name"]
    assert nodes[3:] == [
        "         1          1 node1",
        "         2          1 node2 (local)",
        "         3          1 node3",
    ]


def test_isolated_node_regains_writes_with_pvecm_expected(lab, tmp_path):
    lab.partition(lab.nodes[2])
    try:
        wait_quorum(lab, 2, False)
        blocked = pvecm(lab, 2, tmp_path, "status").stdout
        assert "Quorate:          No" in blocked and "Nodes:            1" in blocked and "Activity blocked" in blocked
        forced = pvecm(lab, 2, tmp_path, "expected", "1")
        assert forced.returncode == 0 and "split brain" in forced.stderr
        wait_quorum(lab, 2, True, timeout=10)
        assert pvecm(lab, 2, tmp_path, "expected", "0").returncode != 0
    finally:
        lab.heal()
    for index in range(3):
        wait_quorum(lab, index, True)


def test_pvecm_outside_a_cluster_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "pvecm", "status"],
        env={"PATH": "/usr/bin:/bin", "PVE_DATA_DIR": str(tmp_path), "PVE_NODE_NAME": "lonely"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "corosync.conf' does not exist - is this node part of a cluster?" in result.stderr
