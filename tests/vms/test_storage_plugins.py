"""The dir and btrfs plugins on real file systems (btrfs on a loop device) with real qemu-img."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from authz.models import User
from vms import services
from vms.exceptions import StorageError
from vms.models import Storage
from vms.storage import VolumeError, volume_format, volume_path, volumes
from vms.storage.btrfs import is_subvolume
from vms.storage.volnames import format_size, parse_size

pytestmark = [pytest.mark.usefixtures("replicator")]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def dir_store(root, tmp_path_factory) -> Storage:
    path = tmp_path_factory.mktemp("dirstore")
    return services.create_storage("tdir", {"type": "dir", "path": str(path), "content": "images,iso"}, actor=root)


@pytest.fixture(scope="module")
def btrfs_store(root, btrfs_mount) -> Storage:
    return services.create_storage(
        "tbtrfs", {"type": "btrfs", "path": str(btrfs_mount), "content": "images"}, actor=root
    )


def qemu_img_info(path: str) -> dict:
    return json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True, check=True).stdout
    )


def test_sizes():
    assert parse_size("4G") == 4 << 30 and parse_size("512", default_unit="K") == 512 << 10
    assert format_size(4 << 30) == "4G" and format_size(3 * MIB) == "3M" and format_size(1000) == "1000"
    with pytest.raises(ValueError):
        parse_size("-1G")


def test_dir_alloc_names_formats_and_free(dir_store):
    first = volumes.alloc_volume(dir_store, 9100, 2 * MIB, fmt="qcow2")
    second = volumes.alloc_volume(dir_store, 9100, MIB)
    assert first == "tdir:9100/vm-9100-disk-0.qcow2"
    assert second == "tdir:9100/vm-9100-disk-1.raw"  # the plugin's default format is raw
    path = volume_path(first)
    assert path == f"{dir_store.path}/images/9100/vm-9100-disk-0.qcow2"
    info = qemu_img_info(path)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 * MIB
    assert volume_format(second) == "raw"
    assert volumes.volume_info(first)["size"] == 2 * MIB
    listed = {v["volid"]: v for v in volumes.list_volumes(dir_store, content="images", vmid=9100)}
    assert set(listed) == {first, second} and listed[first]["format"] == "qcow2" and listed[first]["vmid"] == 9100
    assert volumes.list_volumes(dir_store, content="images", vmid=9101) == []
    volumes.resize_volume(first, 3 * MIB)
    assert qemu_img_info(path)["virtual-size"] == 3 * MIB
    with pytest.raises(StorageError, match="shrinking"):
        volumes.resize_volume(first, MIB)
    volumes.free_volume(first)
    volumes.free_volume(second)
    assert not (dir_store.path and os.path.exists(f"{dir_store.path}/images/9100"))


def test_named_allocation_refuses_existing_and_wrong_extension(dir_store):
    volid = volumes.alloc_volume(dir_store, 9102, MIB, fmt="raw", name="vm-9102-disk-7.raw")
    assert volid == "tdir:9102/vm-9102-disk-7.raw"
    with pytest.raises(StorageError, match="already exists"):
        volumes.alloc_volume(dir_store, 9102, MIB, fmt="raw", name="vm-9102-disk-7.raw")
    with pytest.raises(StorageError, match="wrong extension"):
        volumes.alloc_volume(dir_store, 9102, MIB, fmt="qcow2", name="vm-9102-disk-8.raw")
    volumes.free_volume(volid)


@pytest.mark.parametrize(
    "volid",
    [
        "tdir:../../etc/passwd",
        "tdir:9100/../../../etc/passwd.raw",
        "tdir:/etc/passwd",
        "tdir:iso/../../x.iso",
        "tdir:iso/.hidden.iso",
        "tdir:9100/vm-9100-disk-0.raw/../x.raw",
        "nosuch:9100/vm-9100-disk-0.raw",
        "tdir:9100/vm 9100.raw",
        "/etc/passwd",
    ],
)
def test_traversal_ids_are_refused(dir_store, volid):
    with pytest.raises(VolumeError):
        volume_path(volid)
    with pytest.raises(VolumeError):
        volumes.free_volume(volid)


def test_symlink_out_of_the_storage_is_refused(dir_store, tmp_path):
    images = f"{dir_store.path}/images"
    os.makedirs(images, exist_ok=True)
    (tmp_path / "9150").mkdir()
    link = f"{images}/9150"
    os.symlink(tmp_path / "9150", link)
    try:
        with pytest.raises(VolumeError, match="outside"):
            volume_path("tdir:9150/vm-9150-disk-0.raw")
    finally:
        os.unlink(link)


def test_convert_between_formats_and_storages(dir_store, btrfs_store):
    source = volumes.alloc_volume(dir_store, 9103, 4 * MIB, fmt="raw")
    with open(volume_path(source), "r+b") as handle:
        handle.seek(MIB)
        handle.write(b"payload-9103")
    lines: list[str] = []
    copy = volumes.convert_volume(source, dir_store, 9103, fmt="qcow2", progress=lines.append)
    assert copy == "tdir:9103/vm-9103-disk-1.qcow2" and lines
    onto_btrfs = volumes.convert_volume(copy, btrfs_store, 9103)
    assert onto_btrfs == "tbtrfs:9103/vm-9103-disk-0.raw"
    with open(volume_path(onto_btrfs), "rb") as handle:
        handle.seek(MIB)
        assert handle.read(12) == b"payload-9103"
    for volid in (source, copy, onto_btrfs):
        volumes.free_volume(volid)


def test_btrfs_layout_snapshots_and_free(btrfs_store, btrfs_mount):
    volid = volumes.alloc_volume(btrfs_store, 9104, 2 * MIB)
    assert volid == "tbtrfs:9104/vm-9104-disk-0.raw"
    subvolume = btrfs_mount / "images/9104/vm-9104-disk-0"
    assert is_subvolume(subvolume) and volume_path(volid) == str(subvolume / "disk.raw")
    assert volumes.volume_info(volid)["size"] == 2 * MIB
    with pytest.raises(StorageError, match="unsupported format"):
        volumes.alloc_volume(btrfs_store, 9104, MIB, fmt="qcow2")
    (subvolume / "disk.raw").write_bytes(b"before")
    volumes.snapshot_volume(volid, "first")
    snapshot = btrfs_mount / "images/9104/vm-9104-disk-0@first"
    assert is_subvolume(snapshot)
    ro = subprocess.run(["btrfs", "property", "get", str(snapshot), "ro"], capture_output=True, text=True).stdout
    assert ro.strip() == "ro=true"
    (subvolume / "disk.raw").write_bytes(b"after!")
    volumes.snapshot_volume(volid, "first", "rollback")
    assert (subvolume / "disk.raw").read_bytes() == b"before"
    assert [v["volid"] for v in volumes.list_volumes(btrfs_store, content="images", vmid=9104)] == [volid]
    volumes.free_volume(volid)
    assert not (btrfs_mount / "images/9104").exists()  # snapshots and the VMID directory go too


def test_status_and_availability(root, dir_store, btrfs_store):
    status = volumes.storage_status(btrfs_store)
    assert status["active"] == 1 and status["type"] == "btrfs"
    assert 0 < status["avail"] <= status["total"] and status["used"] > 0
    elsewhere = services.create_storage("tdir-other", {"path": dir_store.path, "nodes": "othernode"}, actor=root)
    assert volumes.storage_status(elsewhere)["active"] == 0
    with pytest.raises(StorageError, match="not available on node"):
        volumes.alloc_volume(elsewhere, 9105, MIB)
    services.update_storage(elsewhere, {"nodes": "", "disable": True}, actor=root)
    with pytest.raises(StorageError, match="disabled"):
        volumes.alloc_volume(elsewhere, 9105, MIB)
    not_btrfs = services.create_storage("tbtrfs-bad", {"type": "btrfs", "path": dir_store.path}, actor=root)
    assert volumes.storage_status(not_btrfs)["active"] == 0
    with pytest.raises(StorageError, match="not a btrfs"):
        volumes.alloc_volume(not_btrfs, 9105, MIB)
