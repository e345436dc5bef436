"""``manage.py qm`` snapshot verbs against the session's real replicator and a directory storage:
snapshot, listsnapshot (Proxmox's tree), rollback, delsnapshot; and the tree's layout."""

from __future__ import annotations

import time

import pytest

from authz.models import User
from portal.models import Task
from tests.harness import manage
from vms import services
from vms.management.commands._qm_snapshots import snapshot_tree
from vms.models import VM
from vms.storage import volume_path
from vms.storage.qemu_img import info

pytestmark = [pytest.mark.usefixtures("replicator")]
VMID = 8330


def qm(node_env, *args: str):
    return manage(node_env, "qm", *args, check=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = User.objects.get(userid="root@pam")
    storage = services.create_storage(
        "qms-a", {"path": str(tmp_path_factory.mktemp("qms-a")), "content": "images"}, actor=root
    )
    yield storage
    services.delete_storage(storage, actor=root)


def test_tree_as_proxmox_prints_it():
    stamp = 1_700_000_000
    shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    entries = [
        {"name": "later", "snaptime": stamp + 60, "parent": "base", "description": "second\nmore", "vmstate": 0},
        {"name": "base", "snaptime": stamp, "description": "", "vmstate": 1},
        {"name": "other", "snaptime": stamp + 30, "parent": "base", "description": "x", "vmstate": 0},
        {"name": "current", "parent": "later", "description": "You are here!", "running": 0},
    ]
    later = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp + 60))
    other = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp + 30))
    assert snapshot_tree(entries) == [
        f"`-> {'base':<27} {shown:<23} no-description",
        f" `-> {'other':<26} {other:<23} x",
        f" `-> {'later':<26} {later:<23} second",
        f"  `-> {'current':<25} {'':<23} You are here!",
    ]


def test_qm_snapshot_list_rollback_delete(node_env, store):
    created = qm(node_env, "create", str(VMID), "--scsi0", "qms-a:0.01,format=qcow2", "--cores", "1")
    assert created.returncode == 0, created.stderr
    volid = VM.objects.get(vmid=VMID).config["scsi0"].split(",")[0]
    made = qm(node_env, "snapshot", str(VMID), "first", "--description", "the first")
    assert made.returncode == 0, made.stderr
    assert "snapshotting 'drive-scsi0'" in made.stdout
    assert Task.objects.filter(type="qmsnapshot", vmid=str(VMID), exitstatus="OK").exists()
    assert qm(node_env, "set", str(VMID), "--cores", "2").returncode == 0
    assert qm(node_env, "snapshot", str(VMID), "second").returncode == 0
    assert [entry["name"] for entry in info(volume_path(volid), "qcow2")["snapshots"]] == ["first", "second"]
    listed = qm(node_env, "listsnapshot", str(VMID)).stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["`->", "first"], ["`->", "second"], ["`->", "current"]]
    assert listed[0].endswith(" the first") and listed[2].endswith("You are here!")
    assert listed[1].startswith(" `->") and listed[2].startswith("  `->")

    rolled = qm(node_env, "rollback", str(VMID), "first")
    assert rolled.returncode == 0, rolled.stderr
    vm = VM.objects.get(vmid=VMID)
    assert vm.config["cores"] == "1" and vm.config["parent"] == "first"
    deleted = qm(node_env, "delsnapshot", str(VMID), "second")
    assert deleted.returncode == 0, deleted.stderr
    assert [entry["name"] for entry in info(volume_path(volid), "qcow2")["snapshots"]] == ["first"]
    assert "[first]" in qm(node_env, "config", str(VMID)).stdout

    refused = qm(node_env, "snapshot", str(VMID), "first")
    assert refused.returncode != 0 and "snapshot name 'first' already used" in refused.stderr
    refused = qm(node_env, "snapshot", str(VMID), "current")
    assert refused.returncode != 0 and "reserved name" in refused.stderr
    refused = qm(node_env, "rollback", str(VMID), "first", "--bogus", "1")
    assert refused.returncode != 0 and "unknown options: bogus" in refused.stderr
    assert not VM.objects.get(vmid=VMID).lock
