"""Snapshots against real QEMU (firmware VMs) on real storages: qcow2 on a directory, raw on btrfs.

Disk contents are written and checked through QEMU's own ``qemu-io`` (HMP for a running VM, the
``qemu-io`` tool for a stopped one), so a rollback is seen to bring back what was on the disks.
A snapshot with RAM is written by QEMU's migration to the state volume and a rollback to it
starts QEMU from that state (its ``query-migrate`` then reports the completed incoming stream).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from authz.models import User
from portal.models import Task
from portal.tasks.logs import read_log
from tests.api_client import finished_task, logged_in
from tests.vms.qemu_helpers import dir_and_btrfs, kill_qemus, quiet
from vms import services
from vms.exceptions import StorageError, VMError, VMLocked
from vms.models import VM, Storage
from vms.qemu import lifecycle, process, qmp
from vms.runtime_paths import vm_pid
from vms.services import snapshots
from vms.snapshot_config import parse_config_file
from vms.storage import volume_path, volumes
from vms.storage.btrfs import is_subvolume
from vms.storage.qemu_img import info

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
FORM = "application/x-www-form-urlencoded"
MIB = 1024 * 1024
VMIDS = range(8300, 8310)


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def root_client() -> Client:
    return logged_in()


@pytest.fixture(scope="module")
def stores(root, tmp_path_factory, btrfs_mount) -> Iterator[dict[str, Storage]]:
    directory = tmp_path_factory.mktemp("sq-dir")
    with dir_and_btrfs(root, "sq", directory, btrfs_mount, "images,iso") as made:
        yield made


@pytest.fixture(autouse=True)
def _no_qemu_left() -> Iterator[None]:
    yield
    kill_qemus(VMIDS)


def make_vm(vmid: int, stores: dict[str, Storage], **extra: str) -> VM:
    """A VM with a qcow2 disk on the directory and a raw one on btrfs (16 MiB each)."""
    VM.objects.filter(vmid=vmid).delete()
    qcow2 = volumes.alloc_volume(stores["dir"], vmid, 16 * MIB, fmt="qcow2")
    raw = volumes.alloc_volume(stores["btrfs"], vmid, 16 * MIB, fmt="raw")
    config = {"name": f"sq{vmid}", "memory": "64", "scsi0": f"{qcow2},size=16M", "virtio0": f"{raw},size=16M"}
    vm = VM(vmid=vmid, node_id=NODE, config={**config, **extra})
    vm.save()
    return vm


def disks(vmid: int) -> dict[str, str]:
    config = VM.objects.get(vmid=vmid).config
    return {key: config[key].split(",")[0] for key in ("scsi0", "virtio0")}


def write_online(vmid: int, key: str, pattern: int) -> None:
    """Through the running QEMU (HMP ``qemu-io``: its output goes to QEMU's stdout, so it is read back apart)."""
    qmp.human_monitor(vmid, f'qemu-io drive-{key} "write -P {pattern} 0 65536"')


def holds_online(vmid: int, volid: str, pattern: int) -> bool:
    """Read on the host, shared with QEMU, while the guest is paused (``stop`` flushes QEMU's caches)."""
    qmp.command(vmid, "stop")
    try:
        return holds_offline(volid, pattern, "-U", "-r")
    finally:
        qmp.command(vmid, "cont")


def qemu_io(volid: str, command: str, *flags: str) -> str:
    fmt = "qcow2" if volid.endswith(".qcow2") else "raw"
    done = subprocess.run(
        ["qemu-io", *flags, "-f", fmt, "-c", command, volume_path(volid)], capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def holds_offline(volid: str, pattern: int, *flags: str) -> bool:
    out = qemu_io(volid, f"read -P {pattern} 0 65536", *flags)
    assert "read 65536/65536" in out or "Pattern verification failed" in out, out
    return "Pattern verification failed" not in out


def qcow2_snapshots(volid: str) -> list[str]:
    return [entry["name"] for entry in info(volume_path(volid), "qcow2").get("snapshots", [])]


def btrfs_snapshot_exists(volid: str, snap: str) -> bool:
    return is_subvolume(Path(volume_path(volid)).parent.with_name(f"{Path(volume_path(volid)).parent.name}@{snap}"))


def api(client: Client, method: str, path: str, body: str = "") -> dict:
    answer = getattr(client, method)(f"{API}/nodes/{NODE}/qemu/{path}", body, content_type=FORM)
    assert answer.status_code == 200, answer.json()
    return answer.json()


def task_ok(client: Client, method: str, path: str, body: str = "") -> Task:
    task = finished_task(api(client, method, path, body)["data"])
    lines, _total = read_log(task.upid, 0, 200)
    assert task.exitstatus == "OK", (task.exitstatus, [line["t"] for line in lines])
    return task


def test_running_vm_with_ram_snapshot_rollback_and_delete(root_client, stores):
    vmid = 8300
    make_vm(vmid, stores)
    lifecycle.start_vm(vmid, log=quiet)
    for key in ("scsi0", "virtio0"):
        write_online(vmid, key, 0x11)
    assert all(holds_online(vmid, volid, 0x11) for volid in disks(vmid).values())
    task = task_ok(root_client, "post", f"{vmid}/snapshot", "snapname=withram&vmstate=1&description=first+one")
    assert task.type == "qmsnapshot"
    assert qmp.status(vmid) == "running"  # the guest runs on after its RAM was saved
    vm = VM.objects.get(vmid=vmid)
    config, snaps = parse_config_file(vm.config_text())
    assert config["parent"] == "withram" and "lock" not in config
    state = snaps["withram"]["vmstate"]
    assert state == f"sq-dir:{vmid}/vm-{vmid}-state-withram.raw"
    assert snaps["withram"]["runningmachine"].startswith("pc-i440fx-")
    assert snaps["withram"]["description"] == "first one" and "snapstate" not in snaps["withram"]
    assert Path(volume_path(state)).read_bytes()[:4] == b"QEVM"  # QEMU's migration stream: devices and RAM
    volids = disks(vmid)
    assert qcow2_snapshots(volids["scsi0"]) == ["withram"]
    assert btrfs_snapshot_exists(volids["virtio0"], "withram")

    for key in ("scsi0", "virtio0"):
        write_online(vmid, key, 0x22)
    assert all(holds_online(vmid, volid, 0x22) for volid in volids.values())
    task_ok(root_client, "post", f"{vmid}/snapshot", "snapname=disksonly")
    listed = {item["name"]: item for item in api(root_client, "get", f"{vmid}/snapshot")["data"]}
    assert set(listed) == {"withram", "disksonly", "current"}
    assert (listed["withram"]["vmstate"], listed["disksonly"]["vmstate"]) == (1, 0)
    assert listed["disksonly"]["parent"] == "withram" and "parent" not in listed["withram"]
    assert listed["current"] == {
        "name": "current",
        "description": "You are here!",
        "parent": "disksonly",
        "running": 1,
        "digest": VM.objects.get(vmid=vmid).digest,
    }
    pid_before = vm_pid(vmid)

    task_ok(root_client, "post", f"{vmid}/snapshot/withram/rollback")
    assert qmp.status(vmid) == "running"
    assert qmp.command(vmid, "query-migrate").get("status") == "completed"  # started from the saved state
    assert vm_pid(vmid) not in (None, pid_before)  # a new QEMU
    assert all(holds_online(vmid, volid, 0x11) for volid in volids.values())
    config = VM.objects.get(vmid=vmid).config
    assert config["parent"] == "withram" and "runningmachine" not in config and "vmstate" not in config

    task_ok(root_client, "delete", f"{vmid}/snapshot/disksonly")  # running: QEMU removes the qcow2 snapshot
    assert qcow2_snapshots(volids["scsi0"]) == ["withram"]
    assert not btrfs_snapshot_exists(volids["virtio0"], "disksonly")
    assert VM.objects.get(vmid=vmid).config["parent"] == "withram"
    task_ok(root_client, "delete", f"{vmid}/snapshot/withram")
    assert not Path(volume_path(state)).exists()
    vm = VM.objects.get(vmid=vmid)
    assert vm.snapshots == {} and "parent" not in vm.config and not vm.lock
    assert qcow2_snapshots(volids["scsi0"]) == []
    assert process.is_running(vmid)


def test_stopped_vm_rollback_restores_disks_and_config(root, stores):
    vmid = 8301
    make_vm(vmid, stores, cores="1")
    volids = disks(vmid)
    for volid in volids.values():
        qemu_io(volid, "write -P 0x33 0 65536")
    snapshots.create_snapshot(vmid, "before", owner="UPID:test:1", description="as it was", log=quiet)
    assert VM.objects.get(vmid=vmid).snapshots["before"]["cores"] == "1"
    services.update_vm_config(VM.objects.get(vmid=vmid), set_={"cores": "2"}, delete=None, actor=root)
    for volid in volids.values():
        qemu_io(volid, "write -P 0x44 0 65536")
    with pytest.raises(VMError, match="already used"):
        snapshots.create_snapshot(vmid, "before", owner="UPID:test:2", log=quiet)
    assert not VM.objects.get(vmid=vmid).lock  # a refused snapshot leaves no lock
    snapshots.rollback_snapshot(vmid, "before", owner="UPID:test:3", log=quiet)
    vm = VM.objects.get(vmid=vmid)
    assert vm.config["cores"] == "1" and vm.config["parent"] == "before" and not vm.lock
    assert not process.is_running(vmid)  # no RAM in the snapshot and no start asked
    assert all(holds_offline(volid, 0x33) for volid in volids.values())
    assert not any(holds_offline(volid, 0x44) for volid in volids.values())


def test_refusals(root, stores):
    vmid = 8302
    make_vm(vmid, stores)
    raw = volumes.alloc_volume(stores["dir"], vmid, MIB, fmt="raw")
    vm = VM.objects.get(vmid=vmid)
    vm.config = {**vm.config, "sata0": f"{raw},size=1M"}
    vm.save()
    with pytest.raises(VMError, match="snapshot feature is not available"):
        snapshots.create_snapshot(vmid, "nope", owner="UPID:test:4", log=quiet)
    assert VM.objects.get(vmid=vmid).snapshots == {}
    vm = VM.objects.get(vmid=vmid)
    vm.config = {k: v for k, v in vm.config.items() if k != "sata0"}
    vm.save()
    snapshots.create_snapshot(vmid, "one", owner="UPID:test:5", log=quiet)
    vm = VM.objects.get(vmid=vmid)
    vm.lock = "backup"
    vm.save()
    with pytest.raises(VMLocked):
        snapshots.delete_snapshot(vmid, "one", owner="UPID:test:6", log=quiet)
    with pytest.raises(VMLocked):
        snapshots.rollback_snapshot(vmid, "one", owner="UPID:test:7", log=quiet)
    vm = VM.objects.get(vmid=vmid)
    vm.lock = ""
    vm.save()
    with pytest.raises(VMError, match="snapshot 'two' does not exist"):
        snapshots.rollback_snapshot(vmid, "two", owner="UPID:test:8", log=quiet)
    # a disk snapshot gone behind our back: delete fails and marks the snapshot, force removes it
    volumes.snapshot_volume(disks(vmid)["scsi0"], "one", "delete")
    with pytest.raises(StorageError):
        snapshots.delete_snapshot(vmid, "one", owner="UPID:test:9", log=quiet)
    vm = VM.objects.get(vmid=vmid)
    assert vm.snapshots["one"]["snapstate"] == "delete" and not vm.lock
    with pytest.raises(VMError, match="incomplete snapshot"):
        snapshots.rollback_snapshot(vmid, "one", owner="UPID:test:10", log=quiet)
    warnings: list[str] = []
    snapshots.delete_snapshot(vmid, "one", owner="UPID:test:11", force=True, log=quiet, warn=warnings.append)
    assert VM.objects.get(vmid=vmid).snapshots == {} and not btrfs_snapshot_exists(disks(vmid)["virtio0"], "one")


def test_rollback_without_ram_and_start(root_client, stores):
    vmid = 8303
    make_vm(vmid, stores)
    lifecycle.start_vm(vmid, log=quiet)
    write_online(vmid, "virtio0", 0x55)
    task_ok(root_client, "post", f"{vmid}/snapshot", "snapname=cold")
    assert qmp.status(vmid) == "running"
    write_online(vmid, "virtio0", 0x66)
    assert holds_online(vmid, disks(vmid)["virtio0"], 0x66)
    task_ok(root_client, "post", f"{vmid}/snapshot/cold/rollback", "start=1")
    assert qmp.status(vmid) == "running"
    assert "status" not in qmp.command(vmid, "query-migrate")  # a fresh start, no state loaded
    assert holds_online(vmid, disks(vmid)["virtio0"], 0x55)
    answer = root_client.get(f"{API}/nodes/{NODE}/qemu/{vmid}/snapshot/cold/config").json()["data"]
    assert answer["memory"] == "64" and isinstance(answer["snaptime"], int)
    api(root_client, "put", f"{vmid}/snapshot/cold/config", "description=renamed")
    assert VM.objects.get(vmid=vmid).snapshots["cold"]["description"] == "renamed"
    assert api(root_client, "get", f"{vmid}/snapshot/cold")["data"] == [{"cmd": "rollback"}, {"cmd": "config"}]
    bad = root_client.post(f"{API}/nodes/{NODE}/qemu/{vmid}/snapshot", "snapname=x", content_type=FORM)
    assert bad.status_code == 400 and "snapname" in bad.json()["errors"]
    bad = root_client.post(f"{API}/nodes/{NODE}/qemu/{vmid}/snapshot", "snapname=current", content_type=FORM)
    assert bad.status_code == 500 and "reserved name" in bad.json()["message"]


def test_destroy_frees_the_snapshot_state_volumes(root, stores):
    vmid = 8304
    make_vm(vmid, stores)
    lifecycle.start_vm(vmid, log=quiet)
    snapshots.create_snapshot(vmid, "keep", owner="UPID:test:12", vmstate=True, log=quiet)
    state = VM.objects.get(vmid=vmid).snapshots["keep"]["vmstate"]
    assert Path(volume_path(state)).exists()
    lifecycle.stop_vm(vmid, log=quiet)
    paths = [volume_path(volid) for volid in [*disks(vmid).values(), state]]
    services.destroy_vm(VM.objects.get(vmid=vmid), actor=root)
    assert not any(Path(path).exists() for path in paths)
    assert not VM.objects.filter(vmid=vmid).exists()
