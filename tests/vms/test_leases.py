"""The VM lock as a task lease: one owner at a time, released only by its owner."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connections

from portal.tasks import locks
from portal.tasks.locks import LockSpec
from replicator import client as replicator_client
from vms.exceptions import VMLocked
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE = "testnode"


def owner(number: int) -> str:
    return f"UPID:{NODE}:{number:08X}:00000001:00000001:qmigrate:7650:root@pam:"


@pytest.fixture
def vm() -> Iterator[VM]:
    existing = VM.objects.filter(vmid=7650).first()
    if existing is not None:
        existing.delete()
    created = VM(vmid=7650, node_id=NODE, config={"name": "lease"})
    created.save()
    yield created
    VM.objects.filter(vmid=7650).delete()


def test_racing_acquirers_get_exactly_one_lease(vm):
    """Eight threads (each its own replicator connection) take the lock at the same moment."""
    spec = LockSpec("vm", "7650", "migrate")
    barrier = threading.Barrier(8)
    won: list[str] = []
    refused: list[str] = []

    def contend(number: int) -> None:
        barrier.wait()
        try:
            locks.acquire(spec, owner(number))
            won.append(owner(number))
        except VMLocked as exc:
            refused.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1 and refused == ["VM 7650 is locked (migrate)"] * 7
    row = VM.objects.get(vmid=7650)
    assert (row.lock, row.lock_owner) == ("migrate", won[0])


def test_only_the_owner_releases_and_a_config_edit_in_between_does_not_stop_it(vm):
    spec = LockSpec("vm", "7650", "backup")
    locks.acquire(spec, owner(1))
    locks.acquire(spec, owner(1))  # again by its owner: no-op
    assert ("vm", "7650", owner(1)) in locks.held_leases()
    before = replicator_client.status()["version"]
    assert locks.release(spec, owner(2)) is False
    assert replicator_client.status()["version"] == before  # a stranger's release wrote nothing
    edited = VM.objects.get(vmid=7650)
    edited.config = {**edited.config, "description": "edited while locked"}
    edited.save()  # the lease holder's next write starts from an older version: it re-reads
    assert locks.release(spec, owner(1)) is True
    row = VM.objects.get(vmid=7650)
    assert (row.lock, row.lock_owner) == ("", "") and row.config["description"] == "edited while locked"
    assert ("vm", "7650", owner(1)) not in locks.held_leases()


def test_a_manual_lock_without_owner_is_never_taken_over(vm):
    vm.lock = "backup"
    vm.save()
    with pytest.raises(VMLocked):
        locks.acquire(LockSpec("vm", "7650", "migrate"), owner(3))
    with pytest.raises(VMLocked):
        locks.check(LockSpec("vm", "7650", "migrate"))
    assert locks.release(LockSpec("vm", "7650", ""), "") is False
    assert VM.objects.get(vmid=7650).lock == "backup"
