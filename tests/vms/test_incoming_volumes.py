"""The records of a migration target's disk copies, and the reconciler settling those a crash left.

Real VM rows, storage and volumes on the session's node; ``node2`` stands for the source. A copy
is freed only when the migration is over and the VM is not this node's; an owned VM's copies are
its disks (forgotten, never freed); a live migration or a QEMU still running keeps the record.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from authz.models import User
from cluster.models import Node
from vms import services
from vms.models import VM
from vms.qemu import incoming_volumes, migration_reconcile
from vms.storage import volume_path, volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
FAR = "ivnode2"
VMID = 7990


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def store(root, tmp_path_factory):  # type: ignore[no-untyped-def]
    if not Node.objects.filter(name=FAR).exists():
        Node(name=FAR, nodeid=9963, joining=True).save()  # no votes: quorum unchanged
    storage = services.create_storage(
        "ivdir", {"type": "dir", "path": str(tmp_path_factory.mktemp("ivdir")), "content": "images"}, actor=root
    )
    yield storage
    services.delete_storage(storage, actor=root)
    Node.objects.get(name=FAR).delete()


@pytest.fixture
def vm(root, store):  # type: ignore[no-untyped-def]
    made = services.create_vm(VMID, {"name": "iv"}, node="testnode", actor=root)
    yield made
    incoming_volumes.forget(VMID)
    current = VM.objects.filter(vmid=VMID).first()
    if current is not None:
        current.node_id, current.lock, current.lock_owner = "testnode", "", ""
        current.save()
        services.destroy_vm(current, actor=root)


def copies(store, count: int = 2) -> list[str]:  # type: ignore[no-untyped-def]
    return [volumes.alloc_volume(store, VMID, 1024 * 1024, fmt="raw") for _ in range(count)]


def set_vm(vmid: int, **fields: str) -> None:
    row = VM.objects.get(vmid=vmid)
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()


def test_free_recorded_keeps_what_it_could_not_free():
    incoming_volumes.remember(VMID, ["ivdir:7990/a.raw", "ivdir:7990/b.raw"])
    lines: list[str] = []

    def free(volid: str) -> None:
        if volid.endswith("b.raw"):
            raise OSError("busy")

    assert incoming_volumes.free_recorded(VMID, free, lines.append) == ["ivdir:7990/a.raw"]
    assert incoming_volumes.recorded(VMID) == ["ivdir:7990/b.raw"]
    assert lines == [
        "freed 'ivdir:7990/a.raw', a copy of an unfinished migration",
        "ERROR: could not free 'ivdir:7990/b.raw': busy",
    ]
    assert incoming_volumes.free_recorded(VMID, lambda volid: None, lines.append) == ["ivdir:7990/b.raw"]
    assert incoming_volumes.recorded(VMID) == [] and VMID not in incoming_volumes.pending()


def test_a_record_is_private_and_survives_as_written(store):
    incoming_volumes.remember(VMID, ["ivdir:7990/x.raw"])
    path = next(p for p in Path(incoming_volumes._directory()).iterdir() if p.name == f"{VMID}.json")
    assert path.stat().st_mode & 0o777 == 0o600
    assert incoming_volumes.pending() == [VMID] and incoming_volumes.recorded(VMID) == ["ivdir:7990/x.raw"]
    incoming_volumes.forget(VMID)
    assert incoming_volumes.pending() == []


def test_settle_decides_by_owner_lock_and_qemu(vm, store):
    made = copies(store)
    incoming_volumes.remember(VMID, made)
    freed: list[str] = []
    lines: list[str] = []
    assert incoming_volumes.settle(VMID, running=True, free=freed.append, log=lines.append) == "kept"
    set_vm(VMID, node_id=FAR, lock="migrate")
    assert incoming_volumes.settle(VMID, running=False, free=freed.append, log=lines.append) == "kept"
    assert freed == [] and incoming_volumes.recorded(VMID) == made
    set_vm(VMID, node_id="testnode", lock="")  # the migration moved the VM here: the copies are its disks
    assert incoming_volumes.settle(VMID, running=False, free=freed.append, log=lines.append) == "forgotten"
    assert freed == [] and incoming_volumes.recorded(VMID) == []
    assert all(Path(volume_path(volid)).exists() for volid in made)
    for volid in made:
        volumes.free_volume(volid)


def test_the_reconciler_frees_the_copies_of_a_migration_that_never_finished(vm, store):
    made = copies(store)
    incoming_volumes.remember(VMID, made)
    set_vm(VMID, node_id=FAR, lock="migrate")  # live: left alone
    with mock.patch.object(migration_reconcile, "quorate", return_value=True):
        assert VMID not in migration_reconcile.reconcile()
        assert all(Path(volume_path(volid)).exists() for volid in made)
        set_vm(VMID, lock="")  # the source's task died and its lock was released
        assert migration_reconcile.reconcile()[VMID] is migration_reconcile.Action.FREE
    assert not any(Path(volume_path(volid)).exists() for volid in made)
    assert incoming_volumes.pending() == []


def test_without_quorum_nothing_is_settled(vm, store):
    made = copies(store, 1)
    incoming_volumes.remember(VMID, made)
    set_vm(VMID, node_id=FAR)
    with mock.patch.object(migration_reconcile, "quorate", return_value=False):
        assert migration_reconcile.reconcile() == {}
    assert Path(volume_path(made[0])).exists() and incoming_volumes.recorded(VMID) == made
    incoming_volumes.forget(VMID)
    volumes.free_volume(made[0])
