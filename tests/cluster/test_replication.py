"""Replication on a real 3-node corosync cluster: order, conflicts, partitions, crashes, catch-up.

One lab for the module: corosync and a replicator per node namespace. Every test ends with
identical state checksums on all members and no acknowledged write missing (``converged``).
The tests marked ``postgres_too`` also run with each node's databases on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cluster.replication import (
    Ledger,
    log_op,
    pool_op,
    pools,
    status,
    submit,
    vm_count,
    vm_op,
    wait_converged,
    wait_for,
)
from tests.harness import lab_postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        3,
        name="replab",
        env={"PVE_FAULT_INJECTION": "1", "PVE_CHANGELOG_RETAIN": "20000", "PVE_LOG_LEVEL": "INFO"},
        postgres=lab_postgres(),
    )


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(autouse=True)
def converged(lab, ledger):
    """After each test: all members quorate, in sync, equal checksums, every acknowledged write present."""
    yield
    lab.heal()
    wait_converged(lab, timeout=90)
    for node in lab.nodes:
        assert ledger.missing(node) == [], node.name


@pytest.mark.postgres_too
def test_a_write_on_any_node_is_visible_on_all(lab, ledger):
    for node in lab.nodes:
        result = ledger.write(node, f"any-{node.name}", f"written on {node.name}")
        assert result["ok"], result
    for node in lab.nodes:
        wait_for(lambda node=node: len(pools(node, "any-")) == 3, what=f"writes on {node.name}")
        assert pools(node, "any-") == {
            f"any-{n.name}": (f"written on {n.name}", pools(n, "any-")[f"any-{n.name}"][1]) for n in lab.nodes
        }


@pytest.mark.postgres_too
def test_concurrent_writers_are_totally_ordered_with_the_same_conflicts_everywhere(lab, ledger):
    count = 60
    results: dict[str, list[tuple[int, dict]]] = {}

    def writer(node):
        out = []
        for i in range(count):
            out.append((i, ledger.write(node, f"race-{i}", f"won by {node.name}")))
        results[node.name] = out

    threads = [threading.Thread(target=writer, args=(node,)) for node in lab.nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners: dict[int, str] = {}
    for name, out in results.items():
        for i, result in out:
            if result["ok"]:
                assert i not in winners, f"race-{i} acknowledged twice"
                winners[i] = name
            else:
                assert result["code"] == "conflict" and "already exists" in result["error"], result
    assert sorted(winners) == list(range(count)), "every key was created exactly once"
    wait_converged(lab)
    for node in lab.nodes:
        rows = pools(node, "race-")
        assert {int(k.split("-")[1]): v[0] for k, v in rows.items()} == {i: f"won by {n}" for i, n in winners.items()}
    # versions are one total order: all distinct on every node and identical across nodes
    versions = [sorted(v[1] for v in pools(node, "race-").values()) for node in lab.nodes]
    assert versions[0] == versions[1] == versions[2] and len(set(versions[0])) == count


def test_stale_updates_conflict_identically(lab, ledger):
    first = lab.nodes[0]
    created = ledger.write(first, "stale", "v0")
    assert created["ok"]
    base = created["version"]
    answers = {}

    def update(node):
        answers[node.name] = submit(node, [pool_op("stale", f"by {node.name}", base=base)])

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(update, lab.nodes))
    ok = [name for name, answer in answers.items() if answer["ok"]]
    assert len(ok) == 1, answers
    ledger.acked["stale"] = f"by {ok[0]}"
    for name, answer in answers.items():
        if name not in ok:
            assert answer["code"] == "conflict" and "changed by another writer" in answer["error"]


@pytest.mark.postgres_too
def test_minority_partition_refuses_writes_majority_continues_and_it_catches_up(lab, ledger):
    isolated = lab.nodes[2]
    lab.partition(isolated)
    took = wait_for(lambda: not status(isolated).get("quorate"), 30, what="the isolated node to lose quorum")
    refused = submit(isolated, [pool_op("minority-write")])
    assert not refused["ok"] and refused["code"] == "not_quorate"
    assert refused["error"].startswith("cluster not ready - no quorum? (")  # Proxmox's words, then why
    wait_for(lambda: status(lab.nodes[0]).get("quorate") and status(lab.nodes[0]).get("synced"), 30)
    for i in range(200):
        result = ledger.write(lab.nodes[i % 2], f"majority-{i}", "while partitioned")
        assert result["ok"], result
    assert pools(isolated, "majority-") == {}
    assert pools(isolated, "minority-") == {}
    lab.heal()
    wait_converged(lab, timeout=60)
    assert len(pools(isolated, "majority-")) == 200
    assert status(isolated)["last_sync"]["kind"] in ("delta", "none")
    assert took < 30


def test_node_down_during_10000_writes_catches_up_by_delta(lab, ledger):
    down = lab.nodes[2]
    lab.stop_service(down)
    writers = lab.nodes[:2]

    acked: list[int] = []

    def write(offset):
        node = writers[offset % 2]
        for i in range(offset, 10_000, 8):
            result = submit(node, [vm_op(100_000 + i, "node1")])
            assert result["ok"], result
            acked.append(100_000 + i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    lab.start_service(down)
    wait_converged(lab, timeout=120)
    last = status(down)["last_sync"]
    assert last["kind"] == "delta" and last["entries"] >= 10_000, last
    assert len(acked) == 10_000 and vm_count(down, 100_000, 110_000) == 10_000


@pytest.mark.postgres_too
@pytest.mark.parametrize("point", ["before_mcast", "after_mcast", "after_apply"])
def test_kill_9_of_the_replicator(lab, ledger, point):
    victim = lab.nodes[1]
    result = submit(victim, [pool_op(f"crash-{point}", f"crash:{point}")], timeout=10)
    assert not result["ok"] and result["code"] == "unreachable", result
    victim.service.wait(timeout=10)
    others = [lab.nodes[0], lab.nodes[2]]
    wait_for(lambda: all(len(status(n).get("members", [])) == 2 for n in others), 30, what="membership without it")
    # the cluster keeps writing without it
    assert ledger.write(lab.nodes[0], f"after-crash-{point}", "")["ok"]
    lab.start_service(victim)
    wait_converged(lab, timeout=60)
    present = {n.name: pools(n, f"crash-{point}") for n in lab.nodes}
    assert len({str(p) for p in present.values()}) == 1, present
    # before the multicast nothing left the node; after it, the agreed stream carries it everywhere
    assert bool(present[victim.name]) is (point != "before_mcast")


def test_kill_9_of_corosync_makes_the_node_read_only_and_it_recovers(lab, ledger):
    node = lab.nodes[2]
    lab.stop_corosync(node, kill=True)
    started = time.monotonic()
    wait_for(lambda: not status(node).get("quorate"), 10, what="read-only after corosync died")
    assert time.monotonic() - started < 10
    refused = submit(node, [pool_op("no-corosync")])
    assert not refused["ok"] and refused["code"] == "not_quorate"
    assert ledger.write(lab.nodes[0], "without-node3-corosync", "")["ok"]
    lab.start_corosync(node)
    lab._wait_log(node, "ready to provide service", 30)
    wait_converged(lab, timeout=60)
    assert ledger.write(node, "node3-writes-again", "")["ok"]


def test_rolling_corosync_restarts_lose_nothing_and_apply_nothing_twice(lab, ledger):
    """Only the node whose corosync restarts may refuse a write; each key is written once, so a
    conflict would mean a change set applied twice."""
    stop = threading.Event()
    restarting = [""]
    errors: list[tuple[str, str, dict]] = []

    def writer():
        i = 0
        while not stop.is_set():
            node, during = lab.nodes[i % 3], restarting[0]
            result = ledger.write(node, f"rolling-{i}", "")
            refused = result.get("code") in ("not_quorate", "unavailable")
            if not result["ok"] and not (refused and node.name in (during, restarting[0])):
                errors.append((node.name, during, result))
            i += 1
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for node in lab.nodes:
            restarting[0] = node.name
            lab.stop_corosync(node)
            lab.start_corosync(node)
            lab._wait_log(node, "ready to provide service", 30)
            wait_for(
                lambda: all(status(n).get("quorate") and status(n).get("synced") for n in lab.nodes),
                60,
                what="all quorate and in sync while writes continue",
            )
            restarting[0] = ""
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len([p for p in ledger.acked if p.startswith("rolling-")]) > 10


@pytest.mark.postgres_too
def test_forced_quorum_on_both_sides_is_detected_and_nothing_is_silently_lost(lab, ledger):
    from tests.cluster.replication import query

    isolated = lab.nodes[2]
    lab.partition(isolated)
    wait_for(lambda: status(isolated).get("members") == [3], 30, what="the isolated node alone in its partition")
    result = lab.run(isolated, ["corosync-quorumtool", "-e", "1"]).wait(timeout=10)
    assert result == 0
    wait_for(lambda: status(isolated).get("quorate"), 30, what="forced quorum")
    lost = submit(isolated, [pool_op("split-isolated", "only on the forced side")])
    assert lost["ok"], lost
    clash = submit(isolated, [pool_op("split-both", "forced side")])
    assert clash["ok"]
    assert submit(isolated, [log_op("logged on the forced side", "node3")])["ok"]
    assert ledger.write(lab.nodes[0], "split-both", "quorate side")["ok"]
    assert ledger.write(lab.nodes[0], "split-majority", "quorate side")["ok"]
    lab.heal()
    wait_converged(lab, timeout=60)
    report = status(isolated)["divergence"]
    assert report is not None and report["winner"] in ("node1", "node2"), report
    kept = Path(report["file"]).read_text()
    assert "only on the forced side" in kept and "forced side" in kept
    assert pools(isolated, "split-") == pools(lab.nodes[0], "split-")
    assert pools(isolated, "split-both")["split-both"][0] == "quorate side"
    messages = lambda: [row[0] for row in query(lab.nodes[0], "SELECT msg FROM cluster_clusterlogentry")]  # noqa: E731
    wait_for(lambda: any("diverged" in m for m in messages()), 30, what="the divergence in the cluster log")
    # the forced side's cluster log is merged back, not lost with its history
    wait_for(lambda: "logged on the forced side" in messages(), 30, what="the forced side's log entry merged")
