"""``manage.py qm`` disk verbs against the session's real replicator and two directory storages:
resize, move-disk (also ``qm disk move``, with ``--delete``), unlink (also ``qm disk unlink``)."""

from __future__ import annotations

import os

import pytest

from authz.models import User
from portal.models import Task
from tests.harness import manage
from vms import services
from vms.models import VM
from vms.storage import volume_path, volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
VMID = 7820


def qm(node_env, *args: str):
    return manage(node_env, "qm", *args, check=False)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = User.objects.get(userid="root@pam")
    made = [
        services.create_storage(name, {"path": str(tmp_path_factory.mktemp(name)), "content": "images"}, actor=root)
        for name in ("qmd-a", "qmd-b")
    ]
    yield made
    for storage in made:
        services.delete_storage(storage, actor=root)


def test_qm_resize_move_disk_unlink(node_env, stores):
    created = qm(node_env, "create", str(VMID), "--scsi0", "qmd-a:0.01,format=qcow2,cache=writeback")
    assert created.returncode == 0, created.stderr
    first = "qmd-a:7820/vm-7820-disk-0.qcow2"
    assert VM.objects.get(vmid=VMID).config["scsi0"].startswith(f"{first},")
    size = volumes.volume_size(first)

    resized = qm(node_env, "resize", str(VMID), "scsi0", "+1M")
    assert resized.returncode == 0, resized.stderr
    assert "resized scsi0" in resized.stdout
    assert volumes.volume_size(first) == size + 1024 * 1024 + (-(size + 1024 * 1024) % 1024)
    shrink = qm(node_env, "disk", "resize", str(VMID), "scsi0", "1K")
    assert shrink.returncode != 0 and "shrinking disks is not supported" in shrink.stderr
    assert Task.objects.filter(type="resize", vmid=str(VMID)).exclude(exitstatus="OK").exists()

    moved = qm(node_env, "move-disk", str(VMID), "scsi0", "qmd-b", "--format", "raw")
    assert moved.returncode == 0, moved.stderr
    second = "qmd-b:7820/vm-7820-disk-0.raw"
    assert "transferred 100%" in moved.stdout and f"scsi0: now on '{second}'" in moved.stdout
    config = VM.objects.get(vmid=VMID).config
    assert config["scsi0"].startswith(f"{second},") and "cache=writeback" in config["scsi0"]
    assert config["unused0"] == first
    assert Task.objects.get(type="qmmove", vmid=str(VMID)).exitstatus == "OK"

    back = qm(node_env, "disk", "move", str(VMID), "scsi0", "--storage", "qmd-a", "--delete", "1")
    assert back.returncode == 0, back.stderr
    third = "qmd-a:7820/vm-7820-disk-1.raw"  # raw stays raw on a storage that takes it
    config = VM.objects.get(vmid=VMID).config
    assert config["scsi0"].startswith(f"{third},") and "unused1" not in config
    assert not os.path.exists(f"{stores[1].path}/images/7820/vm-7820-disk-0.raw")  # freed with --delete
    same = qm(node_env, "move-disk", str(VMID), "scsi0", "qmd-a")
    assert same.returncode != 0 and "you can't move to the same storage with same format" in same.stderr
    missing = qm(node_env, "move-disk", str(VMID), "scsi7", "qmd-b")
    assert missing.returncode != 0 and "disk 'scsi7' does not exist" in missing.stderr

    unlinked = qm(node_env, "unlink", str(VMID), "--idlist", "unused0")
    assert unlinked.returncode == 0, unlinked.stderr
    assert "unused0" not in VM.objects.get(vmid=VMID).config
    assert not os.path.exists(f"{stores[0].path}/images/7820/vm-7820-disk-0.qcow2")  # an unusedN removed: freed
    detached = qm(node_env, "disk", "unlink", str(VMID), "--idlist", "scsi0")
    assert detached.returncode == 0, detached.stderr
    config = VM.objects.get(vmid=VMID).config
    assert "scsi0" not in config and config["unused0"] == third and os.path.exists(volume_path(third))
    bad = qm(node_env, "unlink", str(VMID), "--idlist", "net0")
    assert bad.returncode != 0 and VM.objects.get(vmid=VMID).config == config
    assert qm(node_env, "destroy", str(VMID), "--purge", "1").returncode == 0
