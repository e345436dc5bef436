"""A real 3-node corosync cluster in network namespaces: quorum, partition, heal, total order."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.lab import netns
from cluster.lab.cluster import LabCluster

PROBE = Path(__file__).with_name("lab_probe.py")
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = LabCluster(tmp_path_factory.mktemp("lab"), 3)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
    assert not {n.namespace for n in cluster.nodes} & netns.namespaces()
    assert cluster.bridge_ns not in netns.namespaces()


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
