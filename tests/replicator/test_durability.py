"""Crash safety: kill -9 of the replicator under a stream of writes, restarts, history checks, durable commits."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections, transaction

from cluster.models import ClusterLogEntry
from replicator import client
from replicator.applier import GENESIS_HASH, NotDurableError, chain_hash, durability
from replicator.exceptions import ReplicatorUnavailableError
from replicator.models import ChangeLogEntry
from vms.models import VM

pytestmark = [pytest.mark.postgres_too]


def _verify_chain() -> None:
    head = GENESIS_HASH
    entries = list(ChangeLogEntry.objects.order_by("version"))
    for expected_version, entry in enumerate(entries, start=1):
        assert entry.version == expected_version
        head = chain_hash(head, bytes(entry.payload))
        assert entry.hash == head
    status = client.status()
    assert (status["version"], status["hash"]) == (len(entries), head)


def _write_pair(vmid: int) -> None:
    """One change set of two rows: a VM and its log line (both or neither)."""
    with transaction.atomic(using="cluster"):
        VM(vmid=vmid, node_id="testnode", config={"name": f"k{vmid}"}).save()
        ClusterLogEntry(time=int(time.time()), node="testnode", msg=f"kill9 {vmid}").save()


def test_kill9_under_write_load_loses_no_acknowledged_write(replicator):
    acknowledged: list[int] = []
    indeterminate: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(first: int) -> None:
        vmid = first
        try:
            while not stop.is_set():
                try:
                    _write_pair(vmid)
                except ReplicatorUnavailableError:
                    with lock:
                        indeterminate.append(vmid)
                    return
                with lock:
                    acknowledged.append(vmid)
                vmid += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(start,)) for start in (10_000, 20_000, 30_000)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    replicator.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) >= 300
    replicator.start()

    vms = set(VM.objects.filter(vmid__gte=10_000, vmid__lt=40_000).values_list("vmid", flat=True))
    logged = {
        int(msg.split()[1])
        for msg in ClusterLogEntry.objects.filter(msg__startswith="kill9 ").values_list("msg", flat=True)
    }
    assert set(acknowledged) <= vms
    assert vms == logged, "a change set was applied partially"
    assert vms - set(acknowledged) <= set(indeterminate)
    _verify_chain()
    with connections["cluster"].cursor() as cursor:
        if connections["cluster"].vendor == "sqlite":
            cursor.execute("PRAGMA integrity_check")
            assert cursor.fetchone()[0] == "ok"
    # The restarted replicator takes writes again and extends the same chain.
    _write_pair(39_999)
    _verify_chain()


def test_restart_keeps_state_and_hash_chain(replicator):
    VM(vmid=40_001, node_id="testnode", config={"name": "before"}).save()
    before = client.status()
    replicator.stop()
    with pytest.raises(ReplicatorUnavailableError, match="not reachable"):
        VM(vmid=40_002, node_id="testnode", config={}).save()
    replicator.start()
    after = client.status()
    assert (after["version"], after["hash"]) == (before["version"], before["hash"])
    vm = VM(vmid=40_002, node_id="testnode", config={"name": "after"})
    vm.save()
    assert vm.version == before["version"] + 1
    _verify_chain()


def test_a_restart_removes_writes_cut_short(replicator, etc_dir):
    """A mirror write killed between its temporary file and the rename leaves ``.<name>.*.tmp``;
    the next start renders the tree without it."""
    VM(vmid=40_005, node_id="testnode", config={"name": "cut"}).save()
    replicator.stop()
    stale = etc_dir / "nodes/testnode/qemu-server/.40005.conf.abc123.tmp"
    stale.write_bytes(b"name: half")
    replicator.start()
    client.wait_mirror(int(client.status()["version"]))
    assert not stale.exists()
    assert (etc_dir / "nodes/testnode/qemu-server/40005.conf").read_text() == "name: cut\n"


def test_tampered_history_is_refused_at_start(replicator, node_env):
    """A change log that no longer chains to the head stops the replicator from serving."""
    VM(vmid=40_003, node_id="testnode", config={}).save()
    replicator.stop()
    entry = ChangeLogEntry.objects.order_by("-version").first()
    original = bytes(entry.payload)
    with connections["cluster"].cursor() as cursor:
        cursor.execute(
            "UPDATE replicator_changelogentry SET payload = %s WHERE version = %s",
            [original.replace(b"40003", b"40004"), entry.version],
        )
    try:
        with pytest.raises(RuntimeError, match="change log broken"):
            replicator.start(timeout=30)
    finally:
        with connections["cluster"].cursor() as cursor:
            cursor.execute(
                "UPDATE replicator_changelogentry SET payload = %s WHERE version = %s", [original, entry.version]
            )
        replicator.start()
    assert client.status()["version"] == entry.version


def test_commits_are_flushed_to_disk_whatever_the_database_default(replicator):
    """Every connection is configured to flush each commit, even where the database's default says not to."""
    connection = connections["cluster"]
    if connection.vendor == "postgresql":
        name = connection.settings_dict["NAME"]
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        connection.close()
        try:
            facts = durability()  # on a new connection
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f'ALTER DATABASE "{name}" RESET synchronous_commit')
            connection.close()
        assert facts == {"engine": "postgresql", "synchronous_commit": "on", "fsync": "on"}
    else:
        connection.close()
        facts = durability()
        assert facts == {"engine": "sqlite", "journal_mode": "wal", "synchronous": "full"}
    assert client.status()["durability"] == facts  # what the replicator found at its start


def test_a_connection_that_would_acknowledge_before_the_flush_is_refused():
    connection = connections["cluster"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SET synchronous_commit = off" if connection.vendor == "postgresql" else "PRAGMA synchronous = 1"
        )
    try:
        with pytest.raises(NotDurableError, match=r"does not flush every commit to disk .*refusing to start"):
            durability()
    finally:
        connection.close()
