"""Snapshots of the running Linux test guest (under TCG, see tests/guest) with its guest agent:
without RAM the agent freezes the guest's filesystems around the disk snapshots; with RAM a
rollback brings back the running guest as it was, a file it held in memory included."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from authz.models import User
from vms import services
from vms.exceptions import VMError, VMLocked
from vms.models import VM, Storage
from vms.qemu import agent, hibernate, lifecycle, process, qmp
from vms.services import snapshots
from vms.storage import volume_path, volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE = "testnode"
VMID = 8340
MARKER = "/snapshot-marker"


def quiet(line: str) -> None:
    pass


def agent_answers() -> bool:
    try:
        agent.command(VMID, "guest-ping", timeout=2)
    except Exception:
        return False
    return True


def wait_for_agent(seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not agent_answers():
        assert time.monotonic() < deadline, "the guest agent did not answer"
        time.sleep(1)


def marker() -> str:
    return str(agent.file_read(VMID, MARKER, count=100)["content"])


def set_marker(text: str) -> None:
    agent.file_write(VMID, MARKER, base64.b64encode(text.encode()).decode())


@pytest.fixture(scope="module")
def guest_vm(guest_image, tmp_path_factory) -> Iterator[int]:
    """The test guest (``args`` boots its kernel, KVM off) with a small qcow2 disk on a directory storage."""
    root = User.objects.get(userid="root@pam")
    storage = services.create_storage(
        "sg-dir", {"path": str(tmp_path_factory.mktemp("sg-dir")), "content": "images"}, actor=root
    )
    disk = volumes.alloc_volume(storage, VMID, 16 * 1024 * 1024, fmt="qcow2")
    boot = f"-kernel {guest_image.kernel} -initrd {guest_image.initrd} -append 'console=ttyS0 panic=-1 loglevel=4'"
    config = {"name": "snapguest", "memory": "256", "kvm": "0", "agent": "1", "args": boot, "scsi0": f"{disk},size=16M"}
    VM.objects.filter(vmid=VMID).delete()
    VM(vmid=VMID, node_id=NODE, config=config).save()
    try:
        yield VMID
    finally:
        process.terminate(VMID, timeout=5, log=quiet)
        process.cleanup(VMID, {})
        services.destroy_vm(VM.objects.get(vmid=VMID), actor=root)
        services.delete_storage(Storage.objects.get(storeid="sg-dir"), actor=root)


def test_guest_snapshot_with_ram_and_rollback(guest_vm):
    lifecycle.start_vm(VMID, log=quiet)
    wait_for_agent()
    set_marker("before")
    lines: list[str] = []
    snapshots.create_snapshot(VMID, "frozen", owner="UPID:test:g1", log=lines.append, warn=lines.append)
    assert any("frozen (guest agent)" in line or "guest-fsfreeze-freeze" in line for line in lines), lines
    assert agent_answers() and qmp.status(VMID) == "running"  # thawed and resumed

    snapshots.create_snapshot(VMID, "withram", owner="UPID:test:g2", vmstate=True, log=quiet)
    assert qmp.status(VMID) == "running" and marker() == "before"
    set_marker("after")
    assert marker() == "after"
    snapshots.rollback_snapshot(VMID, "withram", owner="UPID:test:g3", log=quiet)
    assert qmp.command(VMID, "query-migrate").get("status") == "completed"
    wait_for_agent(120)
    assert marker() == "before"  # the guest's memory (its root filesystem is an initramfs) came back
    vm = VM.objects.get(vmid=VMID)
    assert vm.config["parent"] == "withram" and not vm.lock


def running_guest() -> None:
    if not process.is_running(VMID):
        lifecycle.start_vm(VMID, log=quiet)
    wait_for_agent(120)


def test_suspend_to_disk_keeps_the_guest_memory(guest_vm):
    running_guest()
    set_marker("hibernated")
    lines: list[str] = []
    state = hibernate.suspend_to_disk(VMID, owner="UPID:test:h1", log=lines.append, warn=lines.append)
    assert not process.is_running(VMID)
    vm = VM.objects.get(vmid=VMID)
    assert (vm.lock, vm.lock_owner, vm.config["vmstate"]) == ("suspended", "", state)
    assert state.startswith(f"sg-dir:{VMID}/vm-{VMID}-state-suspend-")
    assert any("saving VM state and RAM using storage 'sg-dir'" in line for line in lines), lines
    with pytest.raises(VMLocked):
        lifecycle.stop_vm(VMID, log=quiet)
    lifecycle.resume_vm(VMID, log=lines.append)
    wait_for_agent(120)
    assert marker() == "hibernated"  # the initramfs lives in RAM: the file came back with the state
    vm = VM.objects.get(vmid=VMID)
    assert not vm.lock and "vmstate" not in vm.config and "runningmachine" not in vm.config
    assert not os.path.exists(volume_path(state))


def test_a_failed_save_leaves_the_guest_running_and_unlocked(guest_vm, tmp_path):
    """The state storage fills up during the save: the volume is freed, the guest runs on, no lock stays."""
    root = User.objects.get(userid="root@pam")
    running_guest()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(tmp_path)], check=True)
    try:
        services.create_storage("sg-tiny", {"path": str(tmp_path), "content": "images"}, actor=root)
        lines: list[str] = []
        with pytest.raises(VMError, match="unable to save VM state and RAM"):
            hibernate.suspend_to_disk(
                VMID, owner="UPID:test:h2", log=lines.append, warn=lines.append, statestorage="sg-tiny"
            )
        assert any("the VM keeps running" in line for line in lines), lines
        assert process.is_running(VMID) and qmp.status(VMID) == "running"
        assert agent_answers()
        vm = VM.objects.get(vmid=VMID)
        assert not vm.lock and "vmstate" not in vm.config
        assert not list(tmp_path.rglob("*.raw")), "the state volume was not freed"
    finally:
        if Storage.objects.filter(storeid="sg-tiny").exists():
            services.delete_storage(Storage.objects.get(storeid="sg-tiny"), actor=root)
        subprocess.run(["umount", str(tmp_path)], check=True)
