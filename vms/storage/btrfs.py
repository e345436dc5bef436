"""``btrfs``: Proxmox's BTRFS plugin, raw images inside subvolumes, snapshots as subvolume snapshots.

The volume name is the dir plugin's (``<vmid>/vm-<vmid>-disk-N.raw``); the file lives at
``images/<vmid>/vm-<vmid>-disk-N/disk.raw`` where ``vm-<vmid>-disk-N`` is a subvolume, and a
snapshot ``S`` of it is the read-only subvolume ``images/<vmid>/vm-<vmid>-disk-N@S``.
Everything else (ISOs, templates, backups, snippets) is laid out as on a directory storage.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import ClassVar

from vms.exceptions import StorageError
from vms.storage.plugins import DirPlugin
from vms.storage.volnames import VolumeName

TIMEOUT = 60
BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory
SNAPSHOT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,39}")  # qemu-server's snapshot names


def btrfs(*args: str) -> str:
    try:
        result = subprocess.run(["btrfs", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise StorageError(f"btrfs {args[0]} {args[1]} timed out") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise StorageError(f"btrfs {args[0]} {args[1]} failed: {lines[-1] if lines else result.returncode}")
    return result.stdout


def is_subvolume(path: Path) -> bool:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    return os.path.isdir(path) and stat.st_ino == BTRFS_FIRST_FREE_OBJECTID


class BtrfsPlugin(DirPlugin):
    type: ClassVar[str] = "btrfs"
    formats: ClassVar[tuple[str, ...]] = ("raw",)
    default_format: ClassVar[str] = "raw"
    internal_snapshots: ClassVar[bool] = False

    def _subvolume(self, volume: VolumeName, snapshot: str | None = None) -> Path:
        stem = volume.name.removesuffix(".raw")
        if snapshot is not None:
            if not SNAPSHOT_RE.fullmatch(snapshot):
                raise StorageError(f"invalid snapshot name '{snapshot}'")
            stem = f"{stem}@{snapshot}"
        return self.content_dir("images") / str(volume.vmid) / stem

    def _image_file(self, volume: VolumeName, snapshot: str | None = None) -> Path:
        if volume.format != "raw":
            raise StorageError(f"unsupported format '{volume.format}' on btrfs storage '{self.storage.storeid}'")
        return self._subvolume(volume, snapshot) / "disk.raw"

    def check_active(self) -> None:
        """Online when its path is on a btrfs file system (never made: it would be on the wrong one)."""
        if not self.root.is_dir():
            raise StorageError(f"storage '{self.storage.storeid}' is not online ('{self.root}' is not a directory)")
        kind = subprocess.run(
            ["stat", "-f", "-c", "%T", "--", str(self.root)], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        if kind != "btrfs":
            raise StorageError(f"'{self.root}' is not a btrfs file system")

    def _claim(self, volume: VolumeName) -> str:
        """The image's subvolume, made atomically (an existing one is FileExistsError), then its file."""
        subvolume = self._subvolume(volume)
        self.inside(subvolume, "images")
        if subvolume.exists():
            raise FileExistsError(subvolume)
        try:
            btrfs("subvolume", "create", "--", str(subvolume))
        except StorageError:
            if subvolume.exists():
                raise FileExistsError(subvolume) from None
            raise
        return str(subvolume / "disk.raw")

    def _make_image(self, volume: VolumeName, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def _snapshots(self, volume: VolumeName) -> list[Path]:
        subvolume = self._subvolume(volume)
        prefix = f"{subvolume.name}@"
        parent = subvolume.parent
        names = os.listdir(parent) if parent.is_dir() else []
        return [parent / n for n in sorted(names) if n.startswith(prefix) and is_subvolume(parent / n)]

    def free_image(self, volume: VolumeName) -> None:
        if volume.kind != "images":
            super().free_image(volume)
            return
        subvolume = self._subvolume(volume)
        self.inside(subvolume, "images")
        if is_subvolume(subvolume):
            btrfs("subvolume", "delete", "--", *map(str, self._snapshots(volume)), str(subvolume))
        parent = subvolume.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()

    def create_base(self, volume: VolumeName) -> str:
        """A template's image: its subvolume renamed ``base-...`` and made a read-only subvolume."""
        base = self.base_name(volume)
        source, target = self._subvolume(volume), self._subvolume(base)
        self.inside(source, "images")
        self.inside(target, "images")
        if os.path.lexists(target):
            raise StorageError(f"subvolume '{target}' already exists")
        os.rename(source, target)
        btrfs("property", "set", "-ts", str(target), "ro", "true")
        return base.volname

    def clone_image(self, volume: VolumeName, vmid: int) -> str:
        """A linked clone of a base image: a writable snapshot of its subvolume, an ordinary ``<vmid>/vm-...`` name."""
        if volume.kind != "images" or not volume.is_base:
            raise StorageError("clone_image only works on base images")
        source = self._subvolume(volume)
        directory = self.content_dir("images") / str(vmid)
        directory.mkdir(parents=True, exist_ok=True)
        for candidate in self._free_names(vmid, "raw"):
            clone = VolumeName("images", candidate, vmid, "raw")
            target = self._subvolume(clone)
            self.inside(target, "images")
            if os.path.lexists(target):
                continue
            btrfs("subvolume", "snapshot", "--", str(source), str(target))
            return clone.volname
        raise StorageError(f"unable to allocate an image name for VM {vmid} in storage '{self.storage.storeid}'")

    def _image_names(self, vmid: int | None) -> list[str]:
        """Subvolumes holding a ``disk.raw`` (snapshots ``...@S`` are not volumes of their own)."""
        names = []
        for name in super()._image_names(vmid):
            owner, _, entry = name.partition("/")
            if "@" not in entry and (self.content_dir("images") / owner / entry / "disk.raw").is_file():
                names.append(f"{owner}/{entry}.raw")
        return names

    def snapshot(self, volume: VolumeName, snap: str) -> None:
        source, target = self._subvolume(volume), self._subvolume(volume, snap)
        self.inside(target, "images")
        btrfs("subvolume", "snapshot", "-r", "--", str(source), str(target))

    def snapshot_delete(self, volume: VolumeName, snap: str) -> None:
        target = self._subvolume(volume, snap)
        self.inside(target, "images")
        btrfs("subvolume", "delete", "--", str(target))

    def snapshot_rollback(self, volume: VolumeName, snap: str) -> None:
        """The current subvolume set aside, a writable snapshot of ``snap`` in its place, the old one deleted."""
        current, source = self._subvolume(volume), self._subvolume(volume, snap)
        if not is_subvolume(source):
            raise StorageError(f"snapshot '{snap}' of volume '{volume.volname}' does not exist")
        aside = current.with_name(f"{current.name}.tmp.{os.getpid()}")
        os.rename(current, aside)
        try:
            btrfs("subvolume", "snapshot", "--", str(source), str(current))
        except BaseException:
            os.rename(aside, current)
            raise
        btrfs("subvolume", "delete", "--", str(aside))
