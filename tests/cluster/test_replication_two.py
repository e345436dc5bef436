"""A two-node cluster: one node down is read-only, ``pvecm expected 1`` restores writes (the seed's
scenario); the other node, down past the retained change log, comes back by snapshot, keeping
its state as a file (its history can no longer be proven a prefix); the cluster log stays a
bounded ring identical on both nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.lab.cluster import LabCluster
from tests.cluster.replication import Ledger, log_op, pool_op, query, status, submit, wait_converged, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        2, name="two", env={"PVE_CHANGELOG_RETAIN": "100", "PVE_CLUSTER_LOG_MAX": "100", "PVE_LOG_LEVEL": "INFO"}
    )


def pvecm(lab: LabCluster, node, *args: str) -> subprocess.CompletedProcess:
    etc = node.directory / "etc" / "pve"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "corosync.conf").write_text((node.directory / "corosync.conf").read_text())
    process = lab.run(
        node,
        [sys.executable, str(REPO / "manage.py"), "pvecm", *args],
        env={**node.env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_one_node_down_expected_1_then_the_other_returns_by_snapshot(lab):
    ledger = Ledger()
    first, second = lab.nodes
    lab.stop_corosync(second)
    wait_for(lambda: not status(first).get("quorate"), 30, what="node1 read-only without node2")
    refused = submit(first, [pool_op("two-refused")])
    assert refused["code"] == "not_quorate" and refused["error"].startswith("cluster not ready - no quorum? (")

    result = pvecm(lab, first, "expected", "1")
    assert result.returncode == 0, result.stderr
    assert "split brain" in result.stderr
    wait_for(lambda: status(first).get("quorate") and status(first).get("synced"), 30, what="writes restored")
    assert ledger.write(first, "two-after-expected", "")["ok"]

    # past the retained change log (100) and the cluster log ring (100), crossing version 1000
    start = status(first)["version"]
    for i in range(max(0, 1100 - start)):
        ops = [pool_op(f"two-bulk-{i}")] if i % 3 else [log_op(f"entry {i}")]
        assert submit(first, ops)["ok"]
    assert status(first)["version"] > 1000
    # about 360 entries written; pruned to 100 at version 1000, those written since then on top
    since = (status(first)["version"] - 1000) // 3 + 2
    assert query(first, "SELECT COUNT(*) FROM cluster_clusterlogentry")[0][0] <= 100 + since

    lab.start_corosync(second)
    lab._wait_log(second, "ready to provide service", 30)
    wait_converged(lab, timeout=90)
    last = status(second)["last_sync"]
    assert last["kind"] == "snapshot", last
    # node2's version is older than node1's retained change log: nothing proves it a prefix of
    # node1's history, so its state is kept and reported as a fork's would be.
    report = status(second)["divergence"]
    assert report is not None and report["reason"] == "unproven" and report["winner"] == "node1", report
    assert Path(report["file"]).exists() and status(first)["divergence"] is None
    assert ledger.missing(second) == []
    shown = pvecm(lab, second, "status").stdout  # says why, not a guess at a forced quorum
    assert "cannot be proven a prefix of node1's" in shown and "forced quorum" not in shown, shown

    def reported(node) -> bool:
        return query(
            node, "SELECT COUNT(*) FROM cluster_clusterlogentry WHERE msg LIKE ?", (f"%{report['file']}%",)
        ) == [(1,)]

    wait_for(lambda: all(reported(node) for node in lab.nodes), 30, what="the kept state in the cluster log")
    # node2's own log entries were older than node1's full ring: aged out, not merged back
    logs = [query(node, "SELECT uid FROM cluster_clusterlogentry ORDER BY uid") for node in lab.nodes]
    assert logs[0] == logs[1] and len(logs[0]) <= 100 + since
    # writes go on from either node afterwards
    assert ledger.write(second, "two-from-node2", "")["ok"]
    wait_converged(lab)
