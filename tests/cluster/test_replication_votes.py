"""Acknowledgements count votes, not nodes: a real 4-node cluster in which node4 holds no vote.

node4 is in the nodelist with ``quorum_votes: 0``, as a joining node is until it has synced
(issue 9 item 18). Three votes exist; the quorum is 2. A write confirmed by its origin and node4
alone would have been applied by nodes holding one vote: node1 and node2 (two votes, a quorum)
could then go on without it. Every test ends with all members converged and nothing lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

from cluster.lab.cluster import LabCluster, LabNode, corosync_conf
from replicator import client
from tests.cluster.replication import Ledger, pool_op, pools, status, submit, wait_converged, wait_for

pytestmark = pytest.mark.slow


def quorumtool(lab: LabCluster, node: LabNode) -> str:
    process = lab.run(node, ["corosync-quorumtool", "-s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process.communicate(timeout=30)[0]


def take_node4s_vote(lab: LabCluster) -> None:
    """Every node's corosync.conf gives node4 no vote (config_version 2), reloaded cluster-wide.

    Once all four are members: a node that joins later with the older config_version exits.
    """
    for node in lab.nodes:
        wait_for(lambda node=node: "Nodes:            4\n" in quorumtool(lab, node), 60, 0.3, f"{node.name} sees all")
    nodes = [(n.nodeid, n.name, n.address) for n in lab.nodes]
    text = corosync_conf(lab.cluster_name, nodes, config_version=2)
    block = "    name: node4\n    nodeid: 4\n    quorum_votes: 1\n"
    assert block in text
    text = text.replace(block, block.replace("quorum_votes: 1", "quorum_votes: 0"))
    for node in lab.nodes:
        (node.directory / "corosync.conf").write_text(text)
    assert lab.run(lab.nodes[0], ["corosync-cfgtool", "-R"], stdout=subprocess.DEVNULL).wait(timeout=30) == 0
    shown: list[str] = []

    def counted(node: LabNode) -> bool:
        shown[:] = [quorumtool(lab, node)]
        return all(
            line in shown[0] for line in ("Expected votes:   3\n", "Quorum:           2 ", "  4          0 node4")
        )

    for node in lab.nodes:
        try:
            wait_for(lambda node=node: counted(node), 30, interval=0.3, what=f"three votes, quorum 2 on {node.name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {shown}") from None


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        4,
        name="votelab",
        tag=f"v{os.getpid() % 100000}",
        env={"PVE_STATUS_INTERVAL": "1", "PVE_LOG_LEVEL": "INFO"},
        prepare=take_node4s_vote,
    )


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(autouse=True)
def converged(lab, ledger):
    yield
    for node in lab.nodes:
        resume(node)
        if node.service is None or node.service.poll() is not None:
            lab.start_service(node)
    wait_converged(lab, timeout=90)
    for node in lab.nodes:
        assert ledger.missing(node) == [], node.name


def pause(node: LabNode) -> None:
    """SIGSTOP the node's replicator: it stays in the group (its corosync connection is open) but applies nothing."""
    assert node.service is not None and node.service.poll() is None
    os.kill(node.service.pid, signal.SIGSTOP)


def resume(node: LabNode) -> None:
    if node.service is not None and node.service.poll() is None:
        os.kill(node.service.pid, signal.SIGCONT)


def status_clock(of: LabNode, on: LabNode) -> float:
    """The send time of the newest status message from ``of`` that ``on`` has delivered."""
    board = client.request_at(on.socket_path, {"op": "cluster_status"}, timeout=5)["nodes"]
    return float(board.get(of.name, {}).get("clock", 0))


def test_votequorum_counts_no_vote_for_node4_and_every_node_writes(lab, ledger):
    shown = quorumtool(lab, lab.nodes[0])
    assert "Total votes:      3\n" in shown, shown
    for node in lab.nodes:
        result = ledger.write(node, f"votes-any-{node.name}", node.name)
        assert result["ok"], result  # node4's own apply counts nothing: a voting peer confirmed its write
    votes = status(lab.nodes[3])["votes"]
    assert (votes["expected"], votes["needed"], votes["held"]) == (3, 2, 3), votes
    assert votes["members"] == {"1": 1, "2": 1, "3": 1, "4": 0}, votes


def test_the_acknowledgement_of_a_node_without_votes_does_not_confirm_a_write(lab, ledger):
    """node1 and node2 stay in the group but apply nothing: node3's write reaches node4 only.

    Acknowledgements from node3 and node4 are two nodes but one vote; the write waits until a
    voting node applied it (here node1, once it runs again).
    """
    node1, node2, node3, node4 = lab.nodes
    answer: dict[str, Any] = {}
    pause(node1)
    pause(node2)
    try:
        writer = threading.Thread(target=lambda: answer.update(ledger.write(node3, "votes-waits", "", timeout=60)))
        writer.start()
        wait_for(lambda: pools(node4, "votes-waits") and pools(node3, "votes-waits"), 30, what="node3 and node4 apply")
        applied = time.time()
        # node4 acknowledges (if at all) right after its commit; a status message it sent a second
        # later follows that acknowledgement in CPG's order: once node3 has delivered it, node3 has
        # every acknowledgement node4 sent for the write.
        wait_for(lambda: status_clock(node4, node3) > applied + 1, 30, what="node4's later status on node3")
        assert writer.is_alive() and answer == {}, answer
        assert status(node3)["version"] == status(node4)["version"]
    finally:
        resume(node1)
        resume(node2)
    writer.join(timeout=60)
    assert answer.get("ok"), answer
    assert not writer.is_alive()


def test_members_holding_too_few_votes_refuse_writes_and_apply_nothing(lab, ledger):
    """node1's and node2's replicators stop while their corosync runs: the partition is quorate (3 votes),
    but node3 and node4, the group, hold one. Writes are refused before they are sent."""
    node1, node2, node3, node4 = lab.nodes
    lab.stop_service(node1)
    lab.stop_service(node2)
    for node in (node3, node4):
        wait_for(lambda node=node: status(node).get("members") == [3, 4], 30, what=f"{node.name}'s group of two")
    for node in (node3, node4):
        refused = submit(node, [pool_op(f"votes-refused-{node.name}")])
        assert not refused["ok"] and refused["code"] == "not_quorate", refused
        assert "hold 1 of the 2 votes that must confirm a write" in refused["error"], refused
    assert status(node3)["corosync_quorate"] and not status(node3)["quorate"]
    lab.start_service(node2)
    wait_for(lambda: status(node3).get("quorate") and status(node3).get("synced"), 60, what="node3 writable again")
    for node in (node2, node3, node4):
        assert pools(node, "votes-refused-") == {}, node.name  # refused whole: applied nowhere
    for node in (node3, node4):
        assert ledger.write(node, f"votes-with-node2-{node.name}")["ok"]
