"""Full clone of a running VM (a real QEMU sitting in its firmware): QMP drive-mirror, cut off once ready.

The source keeps running on its own images (the VM paused only for the cut-off instant); the
clone's disks hold what the source's held, on another storage and format where asked. Every QEMU
a test starts is killed whatever the outcome.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from authz.models import User
from tests.vms.qemu_helpers import dir_and_btrfs, file_of, kill_qemus, quiet
from vms import services
from vms.exceptions import VMError
from vms.models import VM, Storage
from vms.qemu import lifecycle, process, qmp
from vms.services import clone
from vms.storage import volume_path, volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
MIB = 1024 * 1024
VMIDS = range(9230, 9236)
PATTERNS = {"scsi0": 0x61, "virtio0": 0x62}


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def stores(root, tmp_path_factory, btrfs_mount) -> Iterator[dict[str, Storage]]:
    directory = tmp_path_factory.mktemp("cq-dir")
    with dir_and_btrfs(root, "cq", directory, btrfs_mount, "images") as made:
        yield made


@pytest.fixture(autouse=True)
def _no_qemu_left() -> Iterator[None]:
    yield
    kill_qemus(VMIDS)


def pattern_at_1m(volid: str, tmp_path) -> int:
    fmt = volumes.resolve(volid)[2].format
    out = tmp_path / "read.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", volume_path(volid), str(out)], check=True)
    with open(out, "rb") as handle:
        handle.seek(MIB)
        data = handle.read(4096)
    out.unlink()
    assert len(set(data)) == 1, "the 4 KiB at 1 MiB are not one pattern"
    return data[0]


def image_files(vmid: int) -> dict[str, str]:
    return {
        entry["device"]: entry["inserted"]["file"] for entry in qmp.command(vmid, "query-block") if "inserted" in entry
    }


def test_full_clone_of_a_running_vm_mirrors_each_disk(root, stores, tmp_path):
    vmid = 9230
    options = {"name": "running", "memory": "64", "scsi0": "cq-dir:0.01,format=qcow2", "virtio0": "cq-btrfs:0.01"}
    vm = services.create_vm(vmid, options, node="testnode", actor=root)
    for key, pattern in PATTERNS.items():
        fmt = volumes.resolve(file_of(vm, key))[2].format
        command = f"write -P {pattern} {MIB} 4096"
        subprocess.run(["qemu-io", "-f", fmt, "-c", command, volume_path(file_of(vm, key))], check=True)
    lifecycle.start_vm(vmid, log=quiet)
    before = image_files(vmid)
    lines: list[str] = []
    new = clone.clone_vm(vm, 9231, actor=root, storage="cq-btrfs", progress=lines.append)
    assert process.is_running(vmid) and qmp.status(vmid) == "running"  # resumed after the cut-off
    assert image_files(vmid) == before  # the source stays on its own images
    assert file_of(new, "scsi0") == "cq-btrfs:9231/vm-9231-disk-0.raw"  # qcow2 -> raw: btrfs holds raw only
    assert file_of(new, "virtio0") == "cq-btrfs:9231/vm-9231-disk-1.raw"
    for key, pattern in PATTERNS.items():
        assert pattern_at_1m(file_of(new, key), tmp_path) == pattern
    assert new.lock == "" and VM.objects.get(vmid=9231).lock == ""
    assert "drive mirror of drive-scsi0 onto cq-btrfs:9231/vm-9231-disk-0.raw" in lines
    assert lines.count("suspend vm") == 2 and lines.count("resume vm") == 2
    assert any(line.startswith("drive-virtio0: transferred ") for line in lines)
    # A linked clone needs a template, and a template never runs.
    with pytest.raises(VMError, match="Linked clone feature is not supported for drive 'scsi0'"):
        clone.check_clone(vm, 9232, actor=root, full=False)
    lifecycle.stop_vm(vmid, log=quiet)
    for gone in (9231, vmid):
        services.destroy_vm(VM.objects.get(vmid=gone), actor=root)
