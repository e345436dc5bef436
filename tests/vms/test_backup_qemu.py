"""vzdump with real images and a real QEMU (sitting in its firmware): archives hold the disks as they were.

A stopped VM's archive holds exactly its volumes' bytes; a running VM's (snapshot mode) holds
the disk as it was when the backup job started, though the guest side writes to it while the
job runs (a write through QEMU's own block layer, HMP ``qemu-io``). Every QEMU a test starts is
killed whatever the outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from authz.models import User
from tests.vms.qemu_helpers import file_of, kill_qemus, quiet
from vms import services
from vms.config import ConfigError
from vms.exceptions import VMError
from vms.models import VM, Storage
from vms.qemu import fleecing as fleecing_module
from vms.qemu import lifecycle, qmp
from vms.services.backup import archive, restore, vzdump
from vms.storage import volume_path, volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
MIB = 1024 * 1024
VMIDS = range(9700, 9710)
OWNER = "UPID:testnode:00000001:00000001:00000001:vzdump::root@pam:"


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def store(root, tmp_path_factory) -> Iterator[Storage]:
    path = tmp_path_factory.mktemp("bk-dir")
    storage = services.create_storage("bk-dir", {"path": str(path), "content": "images,backup"}, actor=root)
    yield storage
    services.delete_storage(storage, actor=root)


@pytest.fixture(autouse=True)
def _no_qemu_left() -> Iterator[None]:
    yield
    kill_qemus(VMIDS)


def write_pattern(volid: str, pattern: int, offset: int) -> None:
    fmt = volumes.resolve(volid)[2].format
    subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} 4096", volume_path(volid)], check=True)


def raw_digest(volid: str, tmp_path: Path) -> str:
    fmt = volumes.resolve(volid)[2].format
    out = tmp_path / "read.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", volume_path(volid), str(out)], check=True)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def members(path: Path) -> dict[str, bytes]:
    """Each member of the archive (small test disks: read whole)."""
    found = {}
    with archive.open_archive(path) as tar:
        for member in tar:
            handle = tar.extractfile(member)
            assert handle is not None
            found[member.name] = handle.read()
    return found


def archive_path(store: Storage, volid: str) -> Path:
    return Path(store.path) / "dump" / volid.partition(":")[2].removeprefix("backup/")


def test_stopped_vm_archive_holds_its_volumes_and_config(root, store, tmp_path):
    vmid = 9700
    options = {
        "name": "bk-stopped",
        "memory": "64",
        "scsi0": "bk-dir:0.01,format=qcow2",
        "virtio0": "bk-dir:0.01",
        "scsi1": "bk-dir:0.01,backup=0",
        "ide2": "none,media=cdrom",
    }
    vm = services.create_vm(vmid, options, node="testnode", actor=root)
    write_pattern(file_of(vm, "scsi0"), 0x61, MIB)
    write_pattern(file_of(vm, "virtio0"), 0x62, 3 * MIB)
    lines: list[str] = []
    written = vzdump(
        {"vmid": str(vmid), "storage": "bk-dir", "compress": "zstd", "notes-template": "{{guestname}} on {{node}}"},
        owner=OWNER,
        log=lines.append,
        warn=lines.append,
    )
    assert len(written) == 1 and written[0].startswith(f"bk-dir:backup/vzdump-qemu-{vmid}-")
    assert written[0].endswith(".tar.zst")
    path = archive_path(store, written[0])
    content = members(path)
    assert list(content) == ["qemu-server.conf", "disk-scsi0.raw", "disk-virtio0.raw"]  # Proxmox's drive order
    config, maps = archive.parse_backup_config(content["qemu-server.conf"].decode())
    assert maps == {"scsi0": ("bk-dir", "qcow2"), "virtio0": ("bk-dir", "raw")}
    assert config["name"] == "bk-stopped" and "lock" not in config
    assert "#qmdump#map:scsi0:drive-scsi0:bk-dir:qcow2:" in content["qemu-server.conf"].decode()
    for key in ("scsi0", "virtio0"):
        assert hashlib.sha256(content[f"disk-{key}.raw"]).hexdigest() == raw_digest(file_of(vm, key), tmp_path)
    assert content["disk-scsi0.raw"][MIB : MIB + 4096] == bytes([0x61]) * 4096
    assert "INFO: backup mode: stop" in lines
    assert any(line.startswith("INFO: exclude disk 'scsi1' 'bk-dir:9700/") for line in lines)
    assert lines[-1] == "INFO: Backup job finished successfully"
    assert VM.objects.get(vmid=vmid).lock == ""
    # The listing shows it as Proxmox does, with notes; the log lies beside it.
    listed = [e for e in volumes.list_volumes(store, content="backup") if e["volid"] == written[0]]
    assert len(listed) == 1
    entry = listed[0]
    assert entry["vmid"] == vmid and entry["format"] == "tar.zst" and entry["subtype"] == "qemu"
    assert entry["notes"] == "bk-stopped on testnode" and "protected" not in entry
    assert abs(entry["ctime"] - time.time()) < 3600
    log_file = path.with_name(path.name.removesuffix(".tar.zst") + ".log")
    assert "INFO: Finished Backup of VM 9700" in log_file.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    volumes.free_volume(written[0])
    assert not path.exists() and not log_file.exists()
    services.destroy_vm(VM.objects.get(vmid=vmid), actor=root)


@pytest.mark.parametrize("fleecing", [True, False], ids=["fleecing", "copied-first"])
def test_running_vm_snapshot_backup_is_the_disk_at_the_job_start(root, store, tmp_path, fleecing):
    """The guest side writes while the disk is read (slowly: bwlimit); the archive holds the old block.

    Fleecing streams the disk while the guest runs; when QEMU refuses it, the backup job copies
    the disk first (the fallback), with the same result.
    """
    vmid = 9701
    vm = services.create_vm(
        vmid, {"name": "bk-live", "memory": "64", "scsi0": "bk-dir:0.015625"}, node="testnode", actor=root
    )
    late = 14 * MIB  # copied last: the job runs front to back at 1 MiB/s
    write_pattern(file_of(vm, "scsi0"), 0x61, late)
    lifecycle.start_vm(vmid, log=quiet)
    errors: list[BaseException] = []

    def write_during_job() -> None:
        try:
            deadline = time.monotonic() + 60
            while not qmp.command(vmid, "query-block-jobs"):
                assert time.monotonic() < deadline, "no backup job started"
                time.sleep(0.05)
            qmp.human_monitor(vmid, f'qemu-io drive-scsi0 "write -P 0x77 {late} 4096"')
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write_during_job)
    writer.start()
    lines: list[str] = []
    refuse = mock.patch.object(fleecing_module.Fleece, "start", side_effect=qmp.QMPCommandError("refused here"))
    try:
        with refuse if not fleecing else contextlib.nullcontext():
            written = vzdump(
                {"vmid": str(vmid), "storage": "bk-dir", "bwlimit": "1024", "compress": "gzip", "protected": "1"},
                owner=OWNER,
                log=lines.append,
                warn=lines.append,
            )
    finally:
        writer.join()
    assert not errors, errors
    assert "INFO: backup mode: snapshot" in lines
    if fleecing:
        assert any("started backup fleecing" in line for line in lines), lines
    else:
        assert "INFO: backup fleecing not possible (refused here): copying the disks first" in lines, lines
        assert any("started backup job" in line for line in lines), lines
    assert qmp.status(vmid) == "running"
    assert not qmp.command(vmid, "query-block-jobs")  # the job is gone
    nodes = [entry.get("node-name", "") for entry in qmp.command(vmid, "query-named-block-nodes")]
    assert not [name for name in nodes if name.startswith("fleece-")]  # no overlay left in QEMU
    with pytest.raises(qmp.QMPCommandError, match="not running"):
        qmp.command(vmid, "nbd-server-stop")  # no export left
    content = members(archive_path(store, written[0]))
    disk = content["disk-scsi0.raw"]
    assert len(disk) == 16 * MIB
    assert disk[late : late + 4096] == bytes([0x61]) * 4096  # as it was when the job started
    now = tmp_path / "now.raw"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", "raw", "-O", "raw", volume_path(file_of(vm, "scsi0")), str(now)], check=True
    )
    assert now.read_bytes()[late : late + 4096] == bytes([0x77]) * 4096  # the guest's write went to the disk
    entry = next(e for e in volumes.list_volumes(store, content="backup") if e["volid"] == written[0])
    assert entry["protected"] == 1 and entry["format"] == "tar.gz"
    with pytest.raises(Exception, match="protected"):
        volumes.free_volume(written[0])
    # Restored under a new VMID with new identities: its disk is the disk at backup time, and it boots.
    plan = restore.check_restore(written[0], 9702, actor=root, unique=True)
    restored = restore.restore(plan, actor=root, owner=OWNER, log=quiet)
    assert restored.lock == "" and file_of(restored, "scsi0") == "bk-dir:9702/vm-9702-disk-0.raw"
    assert Path(volume_path(file_of(restored, "scsi0"))).read_bytes() == disk
    assert restored.config["smbios1"] != vm.config["smbios1"] and restored.config["name"] == "bk-live"
    lifecycle.start_vm(9702, log=quiet)
    assert qmp.status(9702) == "running"
    lifecycle.stop_vm(9702, log=quiet)
    lifecycle.stop_vm(vmid, log=quiet)
    for gone in (9702, vmid):
        services.destroy_vm(VM.objects.get(vmid=gone), actor=root)


def test_restore_rules_new_vmid_existing_vm_and_overrides(root, store, tmp_path):
    """qmrestore's rules: a free VMID, or ``force`` over a stopped, unprotected VM; overrides; formats."""
    vmid = 9703
    options = {"name": "bk-src", "memory": "64", "scsi0": "bk-dir:0.01,format=qcow2", "net0": "virtio"}
    vm = services.create_vm(vmid, {**options, "vmgenid": "1"}, node="testnode", actor=root)
    write_pattern(file_of(vm, "scsi0"), 0x63, 2 * MIB)
    (volid,) = vzdump({"vmid": str(vmid), "storage": "bk-dir"}, owner=OWNER, log=quiet, warn=quiet)
    assert volid.endswith(".tar")  # compress=0 (the default)
    vm = VM.objects.get(vmid=vmid)
    # Without --unique the identity stays but vmgenid is new; the override wins; qcow2 stays qcow2.
    plan = restore.check_restore(volid, 9704, actor=root, overrides={"name": "bk-copy", "memory": "128"})
    copy = restore.restore(plan, actor=root, owner=OWNER, log=quiet)
    assert (copy.config["name"], copy.config["memory"]) == ("bk-copy", "128")
    assert copy.config["net0"] == vm.config["net0"] and copy.config["smbios1"] == vm.config["smbios1"]
    assert copy.config["vmgenid"] not in ("1", vm.config.get("vmgenid"))
    assert file_of(copy, "scsi0") == "bk-dir:9704/vm-9704-disk-0.qcow2"
    assert raw_digest(file_of(copy, "scsi0"), tmp_path) == raw_digest(file_of(vm, "scsi0"), tmp_path)
    with pytest.raises(ConfigError):
        restore.check_restore(volid, 9705, actor=root, overrides={"scsi1": "bk-dir:1"})
    # An existing VM: refused without force, and while it runs; replaced with force.
    with pytest.raises(VMError, match="VM 9704 already exists on node 'testnode'"):
        restore.check_restore(volid, 9704, actor=root)
    lifecycle.start_vm(9704, log=quiet)
    with pytest.raises(VMError, match="VM is running"):
        restore.check_restore(volid, 9704, actor=root, force=True)
    lifecycle.stop_vm(9704, log=quiet)
    services.update_vm_config(VM.objects.get(vmid=9704), set_={"protection": "1"}, actor=root)
    with pytest.raises(VMError, match="protection mode enabled"):
        restore.check_restore(volid, 9704, actor=root, force=True)
    services.update_vm_config(VM.objects.get(vmid=9704), set_={}, delete="protection", actor=root)
    write_pattern(file_of(copy, "scsi0"), 0x7A, 2 * MIB)
    again = restore.restore(
        restore.check_restore(volid, 9704, actor=root, force=True), actor=root, owner=OWNER, log=quiet
    )
    assert again.config["name"] == "bk-src"
    assert raw_digest(file_of(again, "scsi0"), tmp_path) == raw_digest(file_of(vm, "scsi0"), tmp_path)
    images = sorted(p.name for p in (Path(store.path) / "images" / "9704").iterdir())
    assert images == [file_of(again, "scsi0").rpartition("/")[2]]  # the old volume is gone
    for gone in (9704, vmid):
        services.destroy_vm(VM.objects.get(vmid=gone), actor=root)
