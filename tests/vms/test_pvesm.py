"""``pvesm`` as a process: add, set, status, alloc, list, path, free, remove on a real directory and btrfs."""

from __future__ import annotations

import os

import pytest

from tests.harness import manage
from vms.models import Storage

pytestmark = [pytest.mark.usefixtures("replicator")]


def pvesm(node_env, *args: str):
    return manage(node_env, "pvesm", *args, check=False)


def test_pvesm_storage_and_volume_lifecycle(node_env, tmp_path, btrfs_mount):
    added = pvesm(node_env, "add", "dir", "cli-dir", "--path", str(tmp_path), "--content", "images,iso")
    assert added.returncode == 0, added.stderr
    assert pvesm(node_env, "add", "btrfs", "cli-btrfs", "--path", str(btrfs_mount)).returncode == 0
    assert pvesm(node_env, "set", "cli-dir", "--shared", "1", "--format", "qcow2").returncode == 0
    row = Storage.objects.get(storeid="cli-dir")
    assert row.shared and row.format == "qcow2"
    bad = pvesm(node_env, "add", "lvm", "cli-bad", "--path", "/srv/x")
    assert bad.returncode != 0 and "unknown storage type" in bad.stderr
    status = pvesm(node_env, "status").stdout
    line = next(row for row in status.splitlines() if row.startswith("cli-btrfs "))
    assert line.split()[1:3] == ["btrfs", "active"]
    made = pvesm(node_env, "alloc", "cli-dir", "9500", "vm-9500-disk-next", "1M")
    assert made.returncode == 0 and "'cli-dir:9500/vm-9500-disk-0.qcow2'" in made.stdout, made.stderr
    named = pvesm(node_env, "alloc", "cli-btrfs", "9500", "vm-9500-disk-3", "2M")
    assert "'cli-btrfs:9500/vm-9500-disk-3.raw'" in named.stdout, named.stderr
    listed = pvesm(node_env, "list", "cli-dir", "--vmid", "9500").stdout
    assert "cli-dir:9500/vm-9500-disk-0.qcow2" in listed and "1048576" in listed
    path = pvesm(node_env, "path", "cli-btrfs:9500/vm-9500-disk-3.raw").stdout.strip()
    assert path == f"{btrfs_mount}/images/9500/vm-9500-disk-3/disk.raw" and os.path.getsize(path) == 2 * 1024 * 1024
    escape = pvesm(node_env, "path", "cli-dir:9500/../../../etc/passwd.raw")
    assert escape.returncode != 0 and escape.stdout == ""
    assert pvesm(node_env, "alloc", "cli-dir", "9500", "../x.raw", "1M").returncode != 0
    assert pvesm(node_env, "free", "cli-btrfs:9500/vm-9500-disk-3.raw").returncode == 0
    assert pvesm(node_env, "free", "9500/vm-9500-disk-0.qcow2", "--storage", "cli-dir").returncode == 0
    assert not os.path.exists(path) and not (tmp_path / "images/9500").exists()
    for storeid in ("cli-dir", "cli-btrfs"):
        assert pvesm(node_env, "remove", storeid).returncode == 0
    assert not Storage.objects.filter(storeid__startswith="cli-").exists()
