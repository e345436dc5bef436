"""Disk operations against real QEMU (firmware VMs) and real storages (a directory, btrfs on a loop device).

Online resize through QMP ``block_resize`` (QEMU's ``query-block`` shows the new size), offline
resize, and the refusals (shrink, digest, lock, a CD-ROM). ``move_disk``: a stopped VM's qcow2 on
the directory to raw on btrfs and back with ``delete`` (the data compared with ``qemu-img
compare``), a running VM's disk mirrored to btrfs through the API and the real worker (``lock:
disk`` while it runs, QEMU switched to the new image), and a mirror cancelled from outside (the
new volume freed, the config and QEMU left on the old one).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from django.test import Client

from authz.models import User
from portal.tasks.index import TaskHandle
from tests.api_client import finished_task, logged_in
from tests.harness import wait_for
from tests.vms.qemu_helpers import dir_and_btrfs, kill_qemus, quiet
from vms.exceptions import DigestMismatch, StorageError, VMError, VMLocked
from vms.models import VM, Storage
from vms.qemu import lifecycle, process, qmp
from vms.services import disk_move, disks
from vms.storage import volume_path, volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
FORM = "application/x-www-form-urlencoded"
MIB = 1024 * 1024
VMIDS = range(7800, 7810)


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def root_client() -> Client:
    return logged_in()


@pytest.fixture(scope="module")
def stores(root, tmp_path_factory, btrfs_mount) -> Iterator[dict[str, Storage]]:
    directory = tmp_path_factory.mktemp("dq-dir")
    with dir_and_btrfs(root, "dq", directory, btrfs_mount, "images,iso") as made:
        yield made


@pytest.fixture(autouse=True)
def _no_qemu_left() -> Iterator[None]:
    yield
    kill_qemus(VMIDS)


def make_vm(vmid: int, config: dict[str, str], lock: str = "") -> VM:
    VM.objects.filter(vmid=vmid).delete()
    vm = VM(vmid=vmid, node_id=NODE, config={"name": f"dq{vmid}", "memory": "64", **config}, lock=lock)
    vm.save()
    return vm


def disk_with_volume(storage: Storage, vmid: int, size: int, fmt: str) -> str:
    volid = volumes.alloc_volume(storage, vmid, size, fmt=fmt)
    return f"{volid},size={size // MIB}M"


def block_sizes(vmid: int) -> dict[str, int]:
    """QEMU's view: drive backend name -> virtual size of the inserted image."""
    return {
        entry["device"]: entry["inserted"]["image"]["virtual-size"]
        for entry in qmp.command(vmid, "query-block")
        if "inserted" in entry
    }


def test_online_resize_grows_the_disk_in_qemu(root, root_client, stores):
    vmid = 7800
    vm = make_vm(
        vmid,
        {
            "scsi0": disk_with_volume(stores["dir"], vmid, 16 * MIB, "qcow2"),
            "virtio0": disk_with_volume(stores["btrfs"], vmid, 16 * MIB, "raw"),
            "ide2": "none,media=cdrom",
        },
    )
    lifecycle.start_vm(vmid, log=quiet)
    assert block_sizes(vmid) == {"drive-scsi0": 16 * MIB, "drive-virtio0": 16 * MIB}
    answer = root_client.put(f"{API}/nodes/{NODE}/qemu/{vmid}/resize", "disk=scsi0&size=%2B1M", content_type=FORM)
    task = finished_task(answer.json()["data"])
    assert (task.type, task.exitstatus) == ("resize", "OK")
    assert block_sizes(vmid)["drive-scsi0"] == 17 * MIB
    assert VM.objects.get(vmid=vmid).config["scsi0"].endswith(",size=17M")
    # absolute, on btrfs (raw in a subvolume); a size not a whole KiB is rounded up as qemu-server does
    assert disks.resize_disk(VM.objects.get(vmid=vmid), disk="virtio0", size="20481K", actor=root) == 20481 * 1024
    assert block_sizes(vmid)["drive-virtio0"] == 20481 * 1024
    assert volumes.volume_size(VM.objects.get(vmid=vmid).config["virtio0"].split(",")[0]) == 20481 * 1024
    with pytest.raises(StorageError, match="shrinking disks is not supported"):
        disks.resize_disk(VM.objects.get(vmid=vmid), disk="scsi0", size="16M", actor=root)
    with pytest.raises(VMError, match="you can't resize a cdrom"):
        disks.resize_disk(VM.objects.get(vmid=vmid), disk="ide2", size="+1M", actor=root)
    with pytest.raises(DigestMismatch):
        disks.resize_disk(vm, disk="scsi0", size="+1M", actor=root, digest=vm.digest)  # the config changed since
    assert block_sizes(vmid)["drive-scsi0"] == 17 * MIB
    assert process.is_running(vmid)


def test_resize_of_a_locked_vm_and_offline(root, stores):
    vmid = 7801
    vm = make_vm(vmid, {"scsi0": disk_with_volume(stores["dir"], vmid, 4 * MIB, "raw")}, lock="backup")
    with pytest.raises(VMLocked):
        disks.resize_disk(vm, disk="scsi0", size="+1M", actor=root)
    assert disks.resize_disk(vm, disk="scsi0", size="+1M", actor=root, skiplock=True) == 5 * MIB
    volid = VM.objects.get(vmid=vmid).config["scsi0"].split(",")[0]
    assert volumes.volume_size(volid) == 5 * MIB  # stopped: grown by the storage (qemu-img)


def write_pattern(path: str, fmt: str, *offsets_mib: int) -> None:
    """1 MiB of 0x5a at each offset, so a copy has data to move (zeroes are skipped)."""
    commands = [arg for off in offsets_mib for arg in ("-c", f"write -P 0x5a {off}M 1M")]
    subprocess.run(["qemu-io", "-f", fmt, *commands, path], check=True, capture_output=True, timeout=60)


def same_content(first: str, second: str) -> bool:
    result = subprocess.run(["qemu-img", "compare", "-U", first, second], capture_output=True, timeout=60)
    return result.returncode == 0


def test_offline_move_dir_qcow2_to_btrfs_raw_and_back_with_delete(root, stores):
    vmid = 7802
    make_vm(vmid, {"scsi0": disk_with_volume(stores["dir"], vmid, 16 * MIB, "qcow2") + ",cache=writeback"})
    old = "dq-dir:7802/vm-7802-disk-0.qcow2"
    write_pattern(volume_path(old), "qcow2", 0, 9)
    lines: list[str] = []
    task = TaskHandle("qmmove", str(vmid), "root@pam")
    plan = disk_move.check_move(VM.objects.get(vmid=vmid), disk="scsi0", storage="dq-btrfs", actor=root)
    assert plan.format == "raw"  # btrfs takes raw only: the source's qcow2 is not possible there
    new = disk_move.move_disk(plan, owner=task.upid, user="root@pam", log=lines.append)
    task.finish()
    assert new == "dq-btrfs:7802/vm-7802-disk-0.raw"
    vm = VM.objects.get(vmid=vmid)
    assert vm.config["scsi0"] == f"{new},size=16M,cache=writeback"
    assert vm.config["unused0"] == old and vm.lock == ""
    assert same_content(volume_path(old), volume_path(new))
    assert any("transferred" in line for line in lines), lines
    # back, as qcow2, freeing the btrfs volume (its subvolume goes)
    plan = disk_move.check_move(vm, disk="scsi0", storage="dq-dir", actor=root, fmt="qcow2", delete=True)
    back = disk_move.move_disk(plan, owner=task.upid, user="root@pam", log=lines.append)
    assert back == "dq-dir:7802/vm-7802-disk-1.qcow2"
    vm = VM.objects.get(vmid=vmid)
    assert vm.config["scsi0"].startswith(f"{back},") and "unused1" not in vm.config
    assert volumes.list_volumes(stores["btrfs"], vmid=vmid) == []
    assert same_content(volume_path(old), volume_path(back))
    with pytest.raises(VMError, match="same storage with same format"):
        disk_move.check_move(vm, disk="scsi0", storage="dq-dir", actor=root)
    with pytest.raises(StorageError, match="unsupported format 'qcow2'"):
        disk_move.check_move(vm, disk="scsi0", storage="dq-btrfs", actor=root, fmt="qcow2")
    with pytest.raises(DigestMismatch):
        disk_move.check_move(vm, disk="scsi0", storage="dq-btrfs", actor=root, digest="0" * 40)


def task_log(client: Client, upid: str) -> list[str]:
    return [e["t"] for e in client.get(f"{API}/nodes/{NODE}/tasks/{upid}/log", {"limit": 1000}).json()["data"]]


@pytest.mark.usefixtures("celery_worker")
def test_online_move_dir_to_btrfs_through_the_api(root_client, stores):
    vmid = 7803
    make_vm(vmid, {"scsi0": disk_with_volume(stores["dir"], vmid, 16 * MIB, "qcow2")})
    old = "dq-dir:7803/vm-7803-disk-0.qcow2"
    write_pattern(volume_path(old), "qcow2", 0, 2, 5, 11)
    lifecycle.start_vm(vmid, log=quiet)
    url = f"{API}/nodes/{NODE}/qemu/{vmid}"
    answer = root_client.post(f"{url}/move-disk", {"disk": "scsi0", "storage": "dq-btrfs", "bwlimit": 1024})
    assert answer.status_code == 200, answer.content
    upid = answer.json()["data"]
    # while QEMU mirrors (4 MiB at 1 MiB/s), the VM is locked: no second move, no start
    assert wait_for(lambda: VM.objects.get(vmid=vmid).lock == "disk", what="lock: disk")
    second = root_client.post(f"{url}/move_disk", {"disk": "scsi0", "storage": "dq-btrfs"})
    assert second.status_code == 500 and "locked" in second.json()["message"], second.content
    task = finished_task(upid, timeout=120)
    lines = task_log(root_client, upid)
    assert (task.type, task.exitstatus) == ("qmmove", "OK"), lines
    new = "dq-btrfs:7803/vm-7803-disk-0.raw"
    assert any(line.startswith("drive-scsi0: transferred ") and line.endswith(", ready") for line in lines), lines
    assert len([line for line in lines if "transferred" in line]) >= 2, lines  # progress while it ran
    blocks = {entry["device"]: entry for entry in qmp.command(vmid, "query-block")}
    assert blocks["drive-scsi0"]["inserted"]["file"] == volume_path(new)
    assert blocks["drive-scsi0"]["inserted"]["image"]["format"] == "raw"
    vm = VM.objects.get(vmid=vmid)
    assert vm.config["scsi0"] == f"{new},size=16M" and vm.config["unused0"] == old and vm.lock == ""
    assert same_content(volume_path(old), volume_path(new))
    assert qmp.command(vmid, "query-block-jobs") == [] and qmp.status(vmid) == "running"


@pytest.mark.usefixtures("celery_worker")
def test_a_failed_mirror_frees_the_new_volume(root_client, stores):
    vmid = 7804
    make_vm(vmid, {"virtio0": disk_with_volume(stores["dir"], vmid, 16 * MIB, "raw")})
    old = "dq-dir:7804/vm-7804-disk-0.raw"
    write_pattern(volume_path(old), "raw", 0, 3, 6, 9)
    lifecycle.start_vm(vmid, log=quiet)
    url = f"{API}/nodes/{NODE}/qemu/{vmid}"
    answer = root_client.post(f"{url}/move_disk", {"disk": "virtio0", "storage": "dq-btrfs", "bwlimit": 512})
    upid = answer.json()["data"]
    wait_for(lambda: qmp.command(vmid, "query-block-jobs"), what="the mirror job")
    assert volumes.list_volumes(stores["btrfs"], vmid=vmid) != []  # the target exists while it runs
    qmp.command(vmid, "block-job-cancel", {"device": "mirror-drive-virtio0", "force": True})
    task = finished_task(upid, timeout=120)
    assert "mirroring ended early" in task.exitstatus, (task.exitstatus, task_log(root_client, upid))
    assert volumes.list_volumes(stores["btrfs"], vmid=vmid) == []
    vm = VM.objects.get(vmid=vmid)
    assert vm.config["virtio0"] == f"{old},size=16M" and "unused0" not in vm.config and vm.lock == ""
    blocks = {entry["device"]: entry for entry in qmp.command(vmid, "query-block")}
    assert blocks["drive-virtio0"]["inserted"]["file"] == volume_path(old)
    assert qmp.command(vmid, "query-block-jobs") == [] and qmp.status(vmid) == "running"
