"""A 5-node cluster: a 2-node minority partition, all nodes writing, volatile status, checksums, limits."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from replicator import client
from tests.cluster.replication import Ledger, changeset, pool_op, pools, status, submit, wait_converged, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(5, name="five", env={"PVE_STATUS_INTERVAL": "1", "PVE_LOG_LEVEL": "INFO"})


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(autouse=True)
def converged(lab, ledger):
    yield
    lab.heal()
    wait_converged(lab, timeout=90)
    for node in lab.nodes:
        assert ledger.missing(node) == [], node.name


def test_all_five_nodes_write_at_once(lab, ledger):
    def writer(node):
        for i in range(40):
            assert ledger.write(node, f"five-{node.name}-{i}", node.name)["ok"]

    threads = [threading.Thread(target=writer, args=(node,)) for node in lab.nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_converged(lab)
    assert all(len(pools(node, "five-")) == 200 for node in lab.nodes)


def test_two_node_minority_is_read_only_and_catches_up(lab, ledger):
    minority = lab.nodes[3:]
    for node in minority:
        lab.partition(node)
    for node in minority:
        wait_for(lambda node=node: not status(node).get("quorate"), 30, what=f"{node.name} read-only")
        refused = submit(node, [pool_op(f"minority-{node.name}")])
        assert refused["code"] == "not_quorate", refused
    wait_for(lambda: status(lab.nodes[0]).get("quorate") and status(lab.nodes[0]).get("synced"), 30)
    for i in range(100):
        assert ledger.write(lab.nodes[i % 3], f"three-of-five-{i}", "")["ok"]
    lab.heal()
    wait_converged(lab, timeout=60)
    for node in minority:
        assert len(pools(node, "three-of-five-")) == 100
        assert pools(node, "minority-") == {}


def test_volatile_status_shows_every_node_and_who_is_offline(lab):
    def board(node):
        return client.request_at(node.socket_path, {"op": "cluster_status"}, timeout=60)["nodes"]

    wait_for(lambda: len(board(lab.nodes[0])) == 5, 20, what="status of all five nodes")
    nodes = board(lab.nodes[0])
    for node in lab.nodes:
        entry = nodes[node.name]
        assert entry["online"] == 1 and entry["ip"] == node.address
        assert entry["maxcpu"] >= 1 and entry["maxmem"] > 0 and entry["uptime"] > 0
        assert abs(entry["time"] - entry["received"]) < 5  # its clock, as seen on arrival at node1
    cut = lab.nodes[4]
    lab.partition(cut)
    wait_for(lambda: board(lab.nodes[0])[cut.name]["online"] == 0, 30, what="node5 offline in the status")
    assert board(lab.nodes[0])["node2"]["online"] == 1


def test_checksum_verification_between_members(lab):
    asked = int(time.time())
    client.request_at(lab.nodes[2].socket_path, {"op": "verify"}, timeout=60)
    for node in lab.nodes:
        wait_for(lambda node=node: status(node).get("verification", {}).get("time", 0) >= asked, 20)
        report = status(node)["verification"]
        assert report["agree"] is True and report["members"] == 5


def test_oversized_change_set_is_refused_whole(lab):
    version = status(lab.nodes[0])["version"]
    big = [pool_op(f"big-{i}", "x" * 4000) for i in range(250)]
    size = len(changeset("node2", big)[1])
    big.append(pool_op("big-last", "y" * (1024 * 1024 + 200 - size - 60)))
    assert 1024 * 1024 < len(changeset("node2", big)[1]) < 1024 * 1024 + 1000  # over the cap, under the frame limit
    result = submit(lab.nodes[1], big)
    assert not result["ok"] and result["code"] == "too_large", result
    assert pools(lab.nodes[0], "big-") == {} and status(lab.nodes[0])["version"] == version


def test_a_stalled_corosync_makes_the_node_read_only_within_the_token_timeout(lab, ledger):
    node = lab.nodes[1]
    pid = node.corosync.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        took = wait_for(lambda: not status(node).get("quorate"), 15, what="read-only after corosync stalled")
        assert took < 5  # token timeout 2.3 s here (1000 ms + 650 ms per node beyond two)
        assert submit(node, [pool_op("while-stalled")], timeout=5)["code"] in ("not_quorate", "unavailable")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_converged(lab, timeout=60)
    assert ledger.write(node, "after-stall", "")["ok"]
