"""Templates and clones on real storage: dir (qcow2 and raw) and btrfs on a loop device, real qemu-img.

A template's disks become read-only base volumes; a linked clone is a qcow2 overlay on the base
(dir) or a writable subvolume snapshot of it (btrfs); a full clone copies the data (any format,
any storage). The clone gets new MACs and a new smbios1 uuid; a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from authz.models import User
from cluster.models import Node
from portal.models import Task
from tests.harness import manage
from vms import services
from vms.exceptions import StorageError, VMError
from vms.models import VM, Storage
from vms.property_strings import property_string_parse
from vms.qemu import lifecycle
from vms.services import clone, snapshots
from vms.storage import volume_path, volumes
from vms.storage.btrfs import is_subvolume

pytestmark = [pytest.mark.usefixtures("replicator")]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def dir_store(root, tmp_path_factory) -> Storage:
    path = tmp_path_factory.mktemp("clonedir")
    return services.create_storage("cdir", {"type": "dir", "path": str(path), "content": "images,iso"}, actor=root)


@pytest.fixture(scope="module")
def btrfs_store(root, btrfs_mount) -> Storage:
    return services.create_storage(
        "cbtrfs", {"type": "btrfs", "path": str(btrfs_mount), "content": "images"}, actor=root
    )


def file_of(vm: VM, key: str) -> str:
    return property_string_parse(vm.config[key], default_key="file")["file"]


PATTERNS = {"scsi0": 0x51, "scsi1": 0x52, "virtio0": 0x53}


def write_payload(volid: str, key: str, *, flip: bool = False) -> None:
    """4 KiB of the key's pattern byte (``flip``: its complement) at 1 MiB, written through qemu-io (qcow2 too)."""
    fmt = volumes.resolve(volid)[2].format
    command = f"write -P {PATTERNS[key] ^ (0xFF if flip else 0)} {MIB} 4096"
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, volume_path(volid)], check=True, capture_output=True)


def has_payload(volid: str, key: str, tmp_path, *, flip: bool = False) -> bool:
    """The volume's data (through its backing chain) converted to raw: the pattern is at 1 MiB."""
    fmt = volumes.resolve(volid)[2].format
    out = tmp_path / f"read-{key}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", volume_path(volid), str(out)], check=True)
    with open(out, "rb") as handle:
        handle.seek(MIB)
        data = handle.read(4096)
    out.unlink()
    return data == bytes([PATTERNS[key] ^ (0xFF if flip else 0)]) * 4096


def qemu_img_info(volid: str) -> dict:
    return json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", volume_path(volid)], capture_output=True, check=True
        ).stdout
    )


def make_vm(root, vmid: int, disks: dict[str, str], **extra: str) -> VM:
    options = {"name": f"src{vmid}", "memory": "128", "net0": "virtio,bridge=vmbr0", **disks, **extra}
    vm = services.create_vm(vmid, options, node="testnode", actor=root)
    for key in disks:
        if "media=cdrom" not in disks[key]:
            write_payload(file_of(vm, key), key)
    return vm


def destroy(root, *vmids: int) -> None:
    for vmid in vmids:
        vm = VM.objects.filter(vmid=vmid).first()
        if vm is not None:
            services.destroy_vm(vm, actor=root)


def test_template_makes_read_only_base_volumes_and_refuses_to_start(
    root, dir_store, btrfs_store, btrfs_mount, tmp_path
):
    vm = make_vm(
        root,
        9200,
        {"scsi0": "cdir:0.01,format=qcow2", "scsi1": "cdir:0.01,format=raw", "virtio0": "cbtrfs:0.01"},
        ide2="none,media=cdrom",
    )
    old_paths = {key: volume_path(file_of(vm, key)) for key in ("scsi0", "scsi1", "virtio0")}
    lines: list[str] = []
    vm = clone.template_vm(vm, actor=root, progress=lines.append)
    assert vm.config["template"] == "1" and vm.config["ide2"] == "none,media=cdrom"
    assert file_of(vm, "scsi0") == "cdir:9200/base-9200-disk-0.qcow2"
    assert file_of(vm, "scsi1") == "cdir:9200/base-9200-disk-1.raw"
    assert file_of(vm, "virtio0") == "cbtrfs:9200/base-9200-disk-0.raw"
    assert len([line for line in lines if "converted" in line]) == 3
    for key in ("scsi0", "scsi1"):
        path = volume_path(file_of(vm, key))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444 and not os.path.exists(old_paths[key])
        assert has_payload(file_of(vm, key), key, tmp_path)
    base = btrfs_mount / "images/9200/base-9200-disk-0"
    assert is_subvolume(base) and not os.path.exists(old_paths["virtio0"])
    ro = subprocess.run(["btrfs", "property", "get", "-ts", str(base), "ro"], capture_output=True, text=True).stdout
    assert ro.strip() == "ro=true"
    assert has_payload(file_of(vm, "virtio0"), "virtio0", tmp_path)
    assert VM.objects.get(vmid=9200).config == vm.config
    with pytest.raises(VMError, match="convert a template to a template"):
        clone.template_vm(vm, actor=root)
    with pytest.raises(VMError, match="can't start a vm if it's a template"):
        lifecycle.start_vm(9200, log=lines.append)


def test_linked_clone_of_a_template_on_dir_and_btrfs(root, dir_store, btrfs_store, btrfs_mount, tmp_path):
    template = VM.objects.get(vmid=9200)
    with pytest.raises(VMError, match="'storage' not allowed for linked clones"):
        clone.clone_vm(template, 9201, actor=root, storage="cdir")
    lines: list[str] = []
    new = clone.clone_vm(template, 9201, actor=root, name="linked", progress=lines.append)
    assert new.node_id == "testnode" and new.lock == "" and "template" not in new.config
    assert new.config["name"] == "linked" and new.config["ide2"] == "none,media=cdrom"
    assert file_of(new, "scsi0") == "cdir:9200/base-9200-disk-0.qcow2/9201/vm-9201-disk-0.qcow2"
    assert file_of(new, "scsi1") == "cdir:9200/base-9200-disk-1.raw/9201/vm-9201-disk-1.qcow2"
    assert file_of(new, "virtio0") == "cbtrfs:9201/vm-9201-disk-0.raw"
    assert qemu_img_info(file_of(new, "scsi1"))["backing-filename"] == "../9200/base-9200-disk-1.raw"
    assert qemu_img_info(file_of(new, "scsi1"))["backing-filename-format"] == "raw"
    for key in ("scsi0", "scsi1", "virtio0"):
        assert has_payload(file_of(new, key), key, tmp_path)
    subvolume = btrfs_mount / "images/9201/vm-9201-disk-0"
    ro = subprocess.run(["btrfs", "property", "get", "-ts", str(subvolume), "ro"], capture_output=True, text=True)
    assert is_subvolume(subvolume) and ro.stdout.strip() == "ro=false"
    assert new.config["net0"] != template.config["net0"] and new.config["net0"].startswith("virtio=BC:24:11:")
    assert new.config["smbios1"] != template.config["smbios1"]
    assert any("create linked clone of drive scsi0" in line for line in lines)
    listed = {v["volid"]: v for v in volumes.list_volumes(dir_store, content="images", vmid=9201)}
    assert set(listed) == {file_of(new, "scsi0"), file_of(new, "scsi1")}  # by their full linked names
    assert listed[file_of(new, "scsi1")]["parent"] == "../9200/base-9200-disk-1.raw"
    # The base is in use: the template cannot be destroyed until its linked clones are gone.
    with pytest.raises(StorageError, match="still in use by linked cloned"):
        volumes.free_volume(file_of(template, "scsi1"))
    with pytest.raises(StorageError, match=r"base volume 'cdir:9200/base-9200-disk-0\.qcow2' is still in use"):
        services.destroy_vm(template, actor=root)
    assert VM.objects.filter(vmid=9200).exists()
    destroy(root, 9201)
    assert not os.path.exists(btrfs_mount / "images/9201")
    assert os.path.exists(volume_path(file_of(template, "scsi1")))


def test_full_clone_copies_into_other_storage_and_format(root, dir_store, btrfs_store, tmp_path):
    template = VM.objects.get(vmid=9200)
    new = clone.clone_vm(template, 9202, actor=root, full=True, storage="cbtrfs")
    for key in ("scsi0", "scsi1", "virtio0"):
        assert file_of(new, key).startswith("cbtrfs:9202/vm-9202-disk-")
        assert has_payload(file_of(new, key), key, tmp_path)
    assert new.config["name"] == "Copy-of-VM-src9200"
    source = make_vm(root, 9203, {"scsi0": "cdir:0.01,format=qcow2"})
    copy = clone.clone_vm(source, 9204, actor=root, format="raw", description="a copy")  # a VM: full by default
    assert file_of(copy, "scsi0") == "cdir:9204/vm-9204-disk-0.raw" and copy.config["description"] == "a copy"
    assert has_payload(file_of(copy, "scsi0"), "scsi0", tmp_path)
    assert "backing-filename" not in qemu_img_info(file_of(copy, "scsi0"))
    with pytest.raises(VMError, match="Linked clone feature is not supported for drive 'scsi0'"):
        clone.clone_vm(source, 9205, actor=root, full=False)
    with pytest.raises(VMError, match="config file already exists"):
        clone.clone_vm(source, 9204, actor=root)
    elsewhere = VM.objects.get(vmid=9203)
    elsewhere.node_id = "clone-far"  # a VM of another node: cloned and templated only there
    with pytest.raises(VMError, match=r"nodes/testnode/qemu-server/9203\.conf' does not exist"):
        clone.check_clone(elsewhere, 9205, actor=root)
    with pytest.raises(VMError, match=r"nodes/testnode/qemu-server/9203\.conf' does not exist"):
        clone.check_template(elsewhere, actor=root)
    with pytest.raises(VMError, match="no such cluster node 'nowhere'"):
        clone.check_clone(source, 9205, actor=root, target="nowhere")
    other = Node(name="clone-other", nodeid=9299, joining=True)  # no votes: quorum unchanged
    other.save()
    try:
        with pytest.raises(VMError, match="can't clone VM to node 'clone-other' \\(VM uses local storage\\)"):
            clone.check_clone(source, 9205, actor=root, target="clone-other")
        with pytest.raises(VMError, match="can't clone to non-shared storage 'cdir'"):
            clone.check_clone(source, 9205, actor=root, target="clone-other", storage="cdir")
    finally:
        other.delete()
    destroy(root, 9202, 9203, 9204)


def test_full_clone_of_a_snapshot_copies_the_disks_as_the_snapshot_holds_them(root, dir_store, btrfs_store, tmp_path):
    vm = make_vm(root, 9211, {"scsi0": "cdir:0.01,format=qcow2", "virtio0": "cbtrfs:0.01"}, cores="2")
    lines: list[str] = []
    snapshots.create_snapshot(9211, "first", owner="UPID:test-clone-snapshot", log=lines.append)
    vm = services.update_vm_config(VM.objects.get(vmid=9211), set_={"cores": "4"}, actor=root)
    assert vm.config["parent"] == "first" and vm.snapshots["first"]["cores"] == "2"
    for key in ("scsi0", "virtio0"):
        write_payload(file_of(vm, key), key, flip=True)  # the current state differs from the snapshot
    with pytest.raises(VMError, match="unable to create template, because VM contains snapshots"):
        clone.template_vm(vm, actor=root)
    with pytest.raises(VMError, match="snapshot 'second' does not exist"):
        clone.check_clone(vm, 9212, actor=root, snapname="second")
    with pytest.raises(VMError, match="Linked clone feature is not supported"):
        clone.check_clone(vm, 9212, actor=root, snapname="first", full=False)
    of_snapshot = clone.clone_vm(vm, 9212, actor=root, snapname="first")
    current = clone.clone_vm(vm, 9213, actor=root)
    assert of_snapshot.config["cores"] == "2" and "parent" not in of_snapshot.config
    assert "snaptime" not in of_snapshot.config and of_snapshot.snapshots == {}
    assert current.config["cores"] == "4" and "parent" not in current.config
    for key in ("scsi0", "virtio0"):
        assert has_payload(file_of(of_snapshot, key), key, tmp_path)
        assert has_payload(file_of(current, key), key, tmp_path, flip=True)
    destroy(root, 9212, 9213)
    destroy(root, 9211)  # with its snapshots


def test_failed_clone_frees_what_it_made_and_removes_the_config(root, dir_store):
    source = make_vm(root, 9206, {"scsi0": "cdir:0.01,format=qcow2", "scsi1": "cdir:0.01,format=raw"})
    os.unlink(volume_path(file_of(source, "scsi1")))  # the second disk's volume is gone
    lines: list[str] = []
    with pytest.raises(VMError, match="clone failed"):
        clone.clone_vm(source, 9207, actor=root, progress=lines.append)
    assert not VM.objects.filter(vmid=9207).exists()
    assert not os.path.exists(os.path.join(dir_store.path, "images/9207"))
    assert VM.objects.get(vmid=9206).lock == ""
    destroy(root, 9206)


def test_qm_template_and_clone(node_env, root, dir_store):
    make_vm(root, 9208, {"scsi0": "cdir:0.01,format=qcow2"})
    done = manage(node_env, "qm", "template", "9208", check=False)
    assert done.returncode == 0, done.stderr
    assert "converted cdir:9208/vm-9208-disk-0.qcow2 to base volume" in done.stdout
    assert VM.objects.get(vmid=9208).config["template"] == "1"
    cloned = manage(node_env, "qm", "clone", "9208", "9209", "--name", "from-cli", check=False)
    assert cloned.returncode == 0, cloned.stderr
    assert "create linked clone of drive scsi0" in cloned.stdout
    assert Task.objects.get(type="qmclone", vmid="9208").exitstatus == "OK"
    new = VM.objects.get(vmid=9209)
    assert new.config["name"] == "from-cli" and "9208/base-9208-disk-0.qcow2/9209/" in new.config["scsi0"]
    full = manage(node_env, "qm", "clone", "9208", "9210", "--full", "1", "--format", "raw", check=False)
    assert full.returncode == 0, full.stderr
    assert file_of(VM.objects.get(vmid=9210), "scsi0") == "cdir:9210/vm-9210-disk-0.raw"
    bad = manage(node_env, "qm", "clone", "9208", "9209", check=False)
    assert bad.returncode != 0 and "already exists" in bad.stderr
    destroy(root, 9209, 9210, 9208)
