"""Integrity on a real 3-node cluster with a short change log (``PVE_CHANGELOG_RETAIN=100``).

An acknowledged write is on disk first: on SQLite, with ``strace`` attached to every replicator,
every answer to a writer and every apply acknowledgement must follow the fsync of the database; on
PostgreSQL every connection commits with ``synchronous_commit=on`` against a server with
``fsync`` on, even where the database's own default says otherwise. A node whose history cannot
be proven a prefix of the winner's (here a forced-quorum fork older than the winner's retained
change log) keeps its state as a dated file and in the cluster log, as a known fork does.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from cluster.lab import services
from tests.cluster.ack_trace import check, traced
from tests.cluster.replication import log_op, pool_op, pools, query, status, submit, wait_converged, wait_for
from tests.harness import lab_postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(lab_cluster):
    postgres = lab_postgres()
    cluster = lab_cluster(
        3,
        name="integrity",
        env={"PVE_CHANGELOG_RETAIN": "100", "PVE_STATUS_INTERVAL": "60", "PVE_LOG_LEVEL": "INFO"},
        postgres=postgres,
        kind=None,  # started here, each on a database that would acknowledge too early
    )
    services.prepare_databases([node.env for node in cluster.nodes])
    for node in cluster.nodes:
        if postgres:  # a database whose default would acknowledge commits before their WAL flush
            database = services.database_name(node.env[services.CLUSTER_URL])
            services.execute_on_server(node.env, [f'ALTER DATABASE "{database}" SET synchronous_commit = off'])
        cluster.start_service(node)
    for node in cluster.nodes:
        services.wait_ready(node.socket_path, node.service, 120)
    return cluster


def test_every_acknowledgement_follows_an_fsync_of_the_database_on_every_node(lab):
    """Writes from each node in turn: each node answers its writer and acknowledges its predecessor's writes."""
    wait_converged(lab)
    with ExitStack() as stack:
        for node in lab.nodes:
            stack.enter_context(traced(lab, node, node.directory / "strace.log"))
        since = time.time()
        for i in range(30):
            result = submit(lab.nodes[i % 3], [pool_op(f"durable-{i}")])
            assert result["ok"], result
        wait_converged(lab)
    for node in lab.nodes:
        report = check(node.directory / "strace.log", since)
        assert report.unsynced == [], f"{node.name} acknowledged before the fsync: {report.unsynced[:5]}"
        # node N acknowledges the writes of the node before it in name order (quorum 2: one peer)
        assert report.replies >= 10 and report.acks >= 10 and report.syncs >= 30, (node.name, report)


@pytest.mark.postgres_too
def test_every_node_commits_durably_whatever_the_database_default(lab):
    for node in lab.nodes:
        durability = status(node)["durability"]
        if lab.postgres:
            assert durability == {"engine": "postgresql", "synchronous_commit": "on", "fsync": "on"}, node.name
        else:
            assert durability == {"engine": "sqlite", "journal_mode": "wal", "synchronous": "full"}, node.name


@pytest.mark.postgres_too
def test_a_fork_older_than_the_retained_change_log_is_kept_and_reported(lab):
    majority, isolated = lab.nodes[:2], lab.nodes[2]
    lab.partition(isolated)
    wait_for(lambda: status(isolated).get("members") == [3], 30, what="the isolated node alone in its partition")
    assert lab.run(isolated, ["corosync-quorumtool", "-e", "1"]).wait(timeout=10) == 0
    wait_for(lambda: status(isolated).get("quorate") and status(isolated).get("synced"), 30, what="forced quorum")
    forked = submit(isolated, [pool_op("fork-only-here", "written on the forced side")])
    assert forked["ok"], forked
    assert submit(isolated, [log_op("logged on the forced side", "node3")])["ok"]
    wait_for(lambda: status(majority[0]).get("quorate") and status(majority[0]).get("synced"), 30)
    # The majority writes past a pruning point (every 1000 versions): with 100 retained, its
    # change log no longer holds the version the fork stands at.
    start = status(majority[0])["version"]
    count = (start // 1000 + 1) * 1000 + 20 - start

    def write(offset: int) -> None:
        for i in range(offset, count, 4):
            assert submit(majority[i % 2], [pool_op(f"majority-{i}")])["ok"]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    oldest = query(majority[0], "SELECT MIN(version) FROM replicator_changelogentry")[0][0]
    assert oldest > forked["version"] + 1, (oldest, forked)
    lab.heal()
    wait_converged(lab, timeout=120)
    report = status(isolated)["divergence"]
    assert report is not None and report["reason"] == "unproven" and report["winner"] == "node1", report
    assert report["lost_version"] == forked["version"] + 1
    assert "written on the forced side" in Path(report["file"]).read_text()
    assert pools(isolated, "fork-") == {} and len(pools(isolated, "majority-")) == count
    assert status(majority[0])["divergence"] is None and status(majority[1])["divergence"] is None

    def messages() -> list[str]:
        return [row[0] for row in query(majority[0], "SELECT msg FROM cluster_clusterlogentry")]

    wait_for(
        lambda: any("node3" in m and "cannot be proven a prefix" in m and report["file"] in m for m in messages()),
        30,
        what="the kept state named in the cluster log",
    )
    wait_for(lambda: "logged on the forced side" in messages(), 30, what="the forced side's log entry merged back")
