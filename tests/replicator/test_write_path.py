"""The replicated write path on one node, through the ORM and a real replicator process."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.db.models import ProtectedError

from authz.models import Pool
from cluster.models import ClusterLogEntry, Node
from replicator import client
from replicator.applier import GENESIS_HASH, chain_hash
from replicator.exceptions import BulkWriteError, ChangeSetTooLargeError, ConflictError
from replicator.models import ChangeLogEntry
from vms.models import VM

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]


def _vm(vmid: int, **config: str) -> VM:
    return VM(vmid=vmid, node_id="testnode", config={"name": f"vm{vmid}", "memory": "512", **config})


def _version() -> int:
    return int(client.status()["version"])


def test_save_round_trip_and_mirror(etc_dir):
    vm = _vm(101, cores="2")
    vm.save()
    assert vm.version > 0 and not vm._state.adding
    stored = VM.objects.get(vmid=101)
    assert stored.config == {"name": "vm101", "memory": "512", "cores": "2"}
    assert stored.version == vm.version
    client.wait_mirror(vm.version)
    text = (etc_dir / "nodes/testnode/qemu-server/101.conf").read_text()
    assert "cores: 2\n" in text and "memory: 512\n" in text and "name: vm101\n" in text
    assert (etc_dir / "qemu-server").resolve() == (etc_dir / "nodes/testnode/qemu-server").resolve()

    stored.config["memory"] = "1024"
    stored.save()
    assert stored.version > vm.version
    client.wait_mirror(stored.version)
    assert "memory: 1024\n" in (etc_dir / "nodes/testnode/qemu-server/101.conf").read_text()

    stored.delete()
    assert not VM.objects.filter(vmid=101).exists()
    client.wait_mirror(_version())
    assert not (etc_dir / "nodes/testnode/qemu-server/101.conf").exists()


def test_stale_version_is_a_conflict_and_changes_nothing():
    _vm(102).save()
    first = VM.objects.get(vmid=102)
    second = VM.objects.get(vmid=102)
    first.config["memory"] = "2048"
    first.save()
    second.config["memory"] = "4096"
    before = _version()
    with pytest.raises(ConflictError, match="VM 102 was changed by another writer"):
        second.save()
    assert _version() == before
    assert VM.objects.get(vmid=102).config["memory"] == "2048"


def test_create_existing_is_refused():
    _vm(103).save()
    with pytest.raises(ConflictError, match="VM 103 already exists"):
        _vm(103, memory="64").save()
    assert VM.objects.get(vmid=103).config["memory"] == "512"


def test_delete_of_stale_row_is_a_conflict():
    _vm(104).save()
    stale = VM.objects.get(vmid=104)
    fresh = VM.objects.get(vmid=104)
    fresh.config["cores"] = "4"
    fresh.save()
    with pytest.raises(ConflictError):
        stale.delete()
    assert VM.objects.filter(vmid=104).exists()


def test_atomic_block_is_all_or_nothing():
    _vm(105).save()
    stale = VM.objects.get(vmid=105)
    VM.objects.get(vmid=105).save()  # bumps the version under `stale`
    before = _version()
    with pytest.raises(ConflictError), transaction.atomic(using="cluster"):
        _vm(106).save()
        _vm(107).save()
        stale.config["memory"] = "8"
        stale.save()
    assert not VM.objects.filter(vmid__in=[106, 107]).exists()
    assert _version() == before

    with transaction.atomic(using="cluster"):
        _vm(106).save()
        ClusterLogEntry(time=1, node="testnode", msg="created 106").save()
    after = VM.objects.get(vmid=106)
    assert _version() == before + 1
    assert after.version == before + 1
    assert ClusterLogEntry.objects.filter(msg="created 106", version=before + 1).exists()


def test_rolled_back_savepoint_drops_only_its_ops():
    with transaction.atomic(using="cluster"):
        _vm(108).save()
        try:
            with transaction.atomic(using="cluster"):
                _vm(109).save()
                raise RuntimeError("abandon the inner block")
        except RuntimeError:
            pass
        _vm(110).save()
    assert set(VM.objects.filter(vmid__in=[108, 109, 110]).values_list("vmid", flat=True)) == {108, 110}


def test_exception_in_block_submits_nothing():
    before = _version()
    with pytest.raises(ValueError), transaction.atomic(using="cluster"):
        _vm(111).save()
        raise ValueError("boom")
    assert not VM.objects.filter(vmid=111).exists()
    assert _version() == before


def test_bulk_paths_are_refused():
    _vm(112).save()
    before = _version()
    with pytest.raises(BulkWriteError, match="update"):
        VM.objects.filter(vmid=112).update(lock="backup")
    with pytest.raises(BulkWriteError, match="bulk_create"):
        VM.objects.bulk_create([_vm(113)])
    with pytest.raises(BulkWriteError, match="bulk_update"):
        VM.objects.bulk_update([VM.objects.get(vmid=112)], ["lock"])
    with pytest.raises(BulkWriteError, match="raw SQL"):
        list(VM.objects.raw("DELETE FROM vms_vm"))
    assert VM.objects.get(vmid=112).lock == ""
    assert not VM.objects.filter(vmid=113).exists()
    assert _version() == before


def test_oversized_change_set_is_refused_before_sending():
    before = _version()
    with pytest.raises(ChangeSetTooLargeError, match="exceeds the limit"):
        _vm(114, description="x" * (2 * 1024 * 1024)).save()
    assert not VM.objects.filter(vmid=114).exists()
    assert _version() == before


def test_queryset_delete_is_one_change_set_with_cascades():
    Pool(poolid="bulkpool", comment="c").save()
    with transaction.atomic(using="cluster"):
        for vmid in (115, 116):
            vm = _vm(vmid)
            vm.pool_id = "bulkpool"
            vm.save()
    before = _version()
    Pool.objects.filter(poolid="bulkpool").delete()
    assert _version() == before + 1
    assert list(VM.objects.filter(vmid__in=[115, 116]).values_list("pool_id", flat=True)) == [None, None]
    deleted, _ = VM.objects.filter(vmid__in=[115, 116]).delete()
    assert deleted == 2
    assert _version() == before + 2


def test_protected_relation_refused_at_the_writer():
    _vm(117).save()
    with pytest.raises(ProtectedError):
        Node.objects.get(name="testnode").delete()
    assert Node.objects.filter(name="testnode").exists()


def test_dangling_foreign_key_refused_at_apply():
    before = _version()
    vm = VM(vmid=118, node_id="no-such-node", config={})
    with pytest.raises(ConflictError, match="VM 118: node 'no-such-node' does not exist"):
        vm.save()
    assert not VM.objects.filter(vmid=118).exists()
    assert _version() == before


def test_delete_of_referenced_row_refused_at_apply():
    """A writer that skips Django's cascade collection still cannot orphan rows."""
    _vm(120).save()
    node = Node.objects.get(name="testnode")
    before = _version()
    op = {"m": "cluster.node", "k": "testnode", "o": "delete", "v": node.version}
    with pytest.raises(ConflictError, match="still referenced by VMs"):
        client.send_changeset([op])
    assert Node.objects.filter(name="testnode").exists()
    assert _version() == before


def test_version_and_hash_chain_match_the_change_log():
    _vm(119).save()
    status = client.status()
    head = GENESIS_HASH
    entries = list(ChangeLogEntry.objects.order_by("version"))
    assert [e.version for e in entries] == list(range(1, status["version"] + 1))
    for entry in entries:
        head = chain_hash(head, bytes(entry.payload))
        assert head == entry.hash
        assert json.loads(bytes(entry.payload))["ops"]
    assert head == status["hash"]
