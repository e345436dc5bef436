"""Storage plugins behind one interface: ``dir`` here, ``btrfs`` in ``vms.storage.btrfs``.

A plugin works on one storage's directory tree, laid out as Proxmox's dir plugin lays it out:
``images/<vmid>/<name>``, ``template/iso/``, ``template/cache/``, ``dump/``, ``snippets/``,
``import/``. Every path it hands out is resolved and checked to stay inside its content
directory (a symlink planted in the tree cannot lead out of it).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from vms.exceptions import StorageError
from vms.models import Storage
from vms.storage import backups, qemu_img
from vms.storage.volnames import IMAGE_FORMATS, VolumeName, disk_name, parse_volname

# Content type -> sub-directory (Proxmox's ``$vtype_subdirs``).
CONTENT_DIRS = {
    "images": "images",
    "rootdir": "private",
    "iso": "template/iso",
    "vztmpl": "template/cache",
    "backup": "dump",
    "snippets": "snippets",
    "import": "import",
}
MAX_DISKS_PER_VM = 1024
_LINKED_PARENT_RE = re.compile(r"\.\./(\d+/base-[^/\s]+\.(?:raw|qcow2|vmdk))")  # a linked clone's backing file
_DISK_INDEX_RE = re.compile(r"(?:vm|base)-(\d+)-disk-(\d+)(?:\.\w+)?")


class DirPlugin:
    """``dir``: image files in qcow2, raw or vmdk made and changed with qemu-img."""

    type: ClassVar[str] = "dir"
    formats: ClassVar[tuple[str, ...]] = IMAGE_FORMATS
    default_format: ClassVar[str] = "raw"
    internal_snapshots: ClassVar[bool] = True  # snapshots inside the image (qcow2), not beside it
    content_types: ClassVar[tuple[str, ...]] = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.root = Path(storage.path)

    # --- paths -------------------------------------------------------------------------------

    def content_dir(self, kind: str) -> Path:
        return self.root / CONTENT_DIRS[kind]

    def _image_file(self, volume: VolumeName, snapshot: str | None = None) -> Path:
        return self.content_dir("images") / str(volume.vmid) / volume.name

    def inside(self, path: Path, kind: str) -> str:
        """``path`` resolved; StorageError unless it lies strictly inside the ``kind`` directory."""
        base = os.path.realpath(self.content_dir(kind))
        resolved = os.path.realpath(path)
        if os.path.commonpath([base, resolved]) != base or resolved == base:
            raise StorageError(f"volume path '{path}' resolves outside storage '{self.storage.storeid}'")
        return resolved

    def path(self, volume: VolumeName, snapshot: str | None = None) -> str:
        """The host path of a volume (of its snapshot where the plugin keeps them apart)."""
        if volume.kind == "images":
            return self.inside(self._image_file(volume, snapshot), "images")
        return self.inside(self.content_dir(volume.kind) / volume.name, volume.kind)

    # --- state -------------------------------------------------------------------------------

    def check_active(self) -> None:
        """Online when its path is a directory; made if missing (Proxmox's ``create-base-path``, default on)."""
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise StorageError(f"storage '{self.storage.storeid}' is not online ('{self.root}' is not a directory)")

    def status(self) -> dict[str, int]:
        """Total, used and available bytes of the file system holding the storage (statvfs)."""
        stat = os.statvfs(self.root)
        total = stat.f_blocks * stat.f_frsize
        return {"total": total, "used": total - stat.f_bfree * stat.f_frsize, "avail": stat.f_bavail * stat.f_frsize}

    # --- images ------------------------------------------------------------------------------

    def _used_indexes(self, vmid: int) -> set[int]:
        directory = self.content_dir("images") / str(vmid)
        names = os.listdir(directory) if directory.is_dir() else []
        return {int(m.group(2)) for m in map(_DISK_INDEX_RE.fullmatch, names) if m and int(m.group(1)) == vmid}

    def _free_names(self, vmid: int, fmt: str) -> list[str]:
        """``vm-<vmid>-disk-N.<fmt>`` for each index no image of ``vmid`` (vm- or base-) uses yet, lowest first."""
        used = self._used_indexes(vmid)
        return [disk_name(vmid, i, fmt) for i in range(MAX_DISKS_PER_VM) if i not in used]

    def _claim(self, volume: VolumeName) -> str:
        """Create the image's file exclusively (FileExistsError when taken); its path."""
        path = self.path(volume)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return path

    def _make_image(self, volume: VolumeName, path: str, size: int) -> None:
        qemu_img.create(path, volume.format, size, preallocation="metadata" if volume.format == "qcow2" else None)

    def alloc_image(self, vmid: int, fmt: str, name: str | None, size: int) -> str:
        """A new image of ``size`` bytes; its volume name (``<vmid>/vm-<vmid>-disk-N.<fmt>`` unless named)."""
        if fmt not in self.formats:
            raise StorageError(f"unsupported format '{fmt}' on storage '{self.storage.storeid}' ({self.type})")
        directory = self.content_dir("images") / str(vmid)
        directory.mkdir(parents=True, exist_ok=True)
        self.inside(directory, "images")
        for candidate in [name] if name else self._free_names(vmid, fmt):
            volume = parse_volname(f"{vmid}/{candidate}")
            if volume.format != fmt:
                raise StorageError(
                    f"illegal name '{candidate}' - wrong extension for format ('{volume.format}' != '{fmt}')"
                )
            try:
                path = self._claim(volume)
            except FileExistsError:
                if name:
                    raise StorageError(f"disk image '{candidate}' already exists") from None
                continue
            try:
                self._make_image(volume, path, size)
            except BaseException:
                self.free_image(volume)
                raise
            return volume.volname
        raise StorageError(f"unable to allocate an image name for VM {vmid} in storage '{self.storage.storeid}'")

    def free_image(self, volume: VolumeName) -> None:
        if volume.kind == "images" and volume.is_base and self.linked_clones(volume):
            raise StorageError(f"base volume '{volume.volname}' is still in use by linked cloned")
        path = Path(self.path(volume))
        if volume.kind == "backup":
            if backups.is_protected(path):
                raise StorageError(f"backup '{volume.volname}' is protected")
            backups.remove_archive(path)
            return
        path.unlink(missing_ok=True)
        with_vmid = path.parent
        if volume.kind == "images" and with_vmid.is_dir() and not any(with_vmid.iterdir()):
            with_vmid.rmdir()

    def size_info(self, volume: VolumeName) -> dict[str, Any]:
        """``size`` (virtual), ``used`` (allocated on disk), ``format``, ``parent`` and ``ctime`` of a volume."""
        path = self.path(volume)
        stat = os.stat(path)
        if volume.kind != "images" and volume.format != "raw":
            return {
                "size": stat.st_size,
                "used": stat.st_blocks * 512,
                "format": volume.format,
                "ctime": int(stat.st_ctime),
            }
        if volume.kind != "images":
            return {"size": stat.st_size, "used": stat.st_size, "format": "raw", "ctime": int(stat.st_ctime)}
        data = qemu_img.info(path, volume.format)
        info = {
            "size": int(data.get("virtual-size", 0)),
            "used": int(data.get("actual-size", 0)),
            "format": volume.format,
            "ctime": int(stat.st_ctime),
        }
        backing = data.get("backing-filename")
        if volume.base or backing:
            info["parent"] = backing or f"../{volume.base}"  # Proxmox's form: ``../<basevmid>/<base image>``
        return info

    def resize(self, volume: VolumeName, size: int, *, running: bool = False) -> None:
        """Grow an image; a running VM's image file is grown by QEMU's ``block_resize`` instead (as Proxmox's plugin)."""
        if not running:
            qemu_img.resize(self.path(volume), volume.format, size)

    # --- templates and linked clones ----------------------------------------------------------

    def base_name(self, volume: VolumeName) -> VolumeName:
        """The name ``create_base`` gives ``volume``: ``vm-`` becomes ``base-`` (Proxmox's rule)."""
        if volume.kind != "images":
            raise StorageError(f"create_base on wrong vtype '{volume.kind}'")
        if volume.is_base:
            raise StorageError("create_base not possible with base image")
        if not volume.name.startswith("vm-"):
            raise StorageError(f"unable to create a base volume from '{volume.volname}' (not named vm-<vmid>-...)")
        return VolumeName("images", "base-" + volume.name.removeprefix("vm-"), volume.vmid, volume.format, volume.base)

    def create_base(self, volume: VolumeName) -> str:
        """A template's image: renamed ``base-...`` and made read-only (0444); its new volume name."""
        base = self.base_name(volume)
        source, target = self.path(volume), self.path(base)
        if os.path.lexists(target):
            raise StorageError(f"file '{target}' already exists")
        os.rename(source, target)
        os.chmod(target, 0o444)
        return base.volname

    def clone_image(self, volume: VolumeName, vmid: int) -> str:
        """A linked clone of a base image: a qcow2 overlay ``<basevmid>/<base>/<vmid>/vm-<vmid>-disk-N.qcow2``."""
        if volume.kind != "images" or not volume.is_base:
            raise StorageError("clone_image only works on base images")
        directory = self.content_dir("images") / str(vmid)
        directory.mkdir(parents=True, exist_ok=True)
        self.inside(directory, "images")
        for candidate in self._free_names(vmid, "qcow2"):
            clone = VolumeName("images", candidate, vmid, "qcow2", f"{volume.vmid}/{volume.name}")
            try:
                path = self._claim(clone)
            except FileExistsError:
                continue
            try:
                qemu_img.create(path, "qcow2", None, backing=(f"../{volume.vmid}/{volume.name}", volume.format))
            except BaseException:
                self.free_image(clone)
                raise
            return clone.volname
        raise StorageError(f"unable to allocate an image name for VM {vmid} in storage '{self.storage.storeid}'")

    def linked_clones(self, volume: VolumeName) -> list[str]:
        """The images of this storage whose backing file is the base image ``volume``."""
        images, wanted = self.content_dir("images"), f"../{volume.vmid}/{volume.name}"
        found = []
        for name in self._image_names(None):
            if name.endswith(".qcow2"):
                try:
                    backing = qemu_img.info(str(images / name), "qcow2").get("backing-filename")
                except StorageError:
                    continue
                if backing == wanted:
                    found.append(name)
        return found

    # --- snapshots (internal qcow2 snapshots on a directory storage) ---------------------------

    def _snapshot_format(self, volume: VolumeName) -> str:
        if volume.format != "qcow2":
            raise StorageError(
                f"snapshot of a {volume.format} volume is not supported on storage '{self.storage.storeid}'"
            )
        return self.path(volume)

    def snapshot(self, volume: VolumeName, snap: str) -> None:
        qemu_img.snapshot(self._snapshot_format(volume), "create", snap)

    def snapshot_delete(self, volume: VolumeName, snap: str) -> None:
        qemu_img.snapshot(self._snapshot_format(volume), "delete", snap)

    def snapshot_rollback(self, volume: VolumeName, snap: str) -> None:
        qemu_img.snapshot(self._snapshot_format(volume), "apply", snap)

    # --- listing -----------------------------------------------------------------------------

    def _image_names(self, vmid: int | None) -> list[str]:
        images = self.content_dir("images")
        owners = [str(vmid)] if vmid is not None else (os.listdir(images) if images.is_dir() else [])
        names = []
        for owner in sorted(o for o in owners if o.isdigit()):
            directory = images / owner
            for entry in sorted(os.listdir(directory)) if directory.is_dir() else []:
                names.append(f"{owner}/{entry}")
        return names

    def list_volumes(self, kinds: list[str], vmid: int | None = None) -> list[dict[str, Any]]:
        """Proxmox's content list: ``volid``, ``content``, ``format``, ``size``, ``used``, ``vmid``, ``ctime``."""
        result: list[dict[str, Any]] = []
        for kind in kinds:
            if kind == "images":
                names = self._image_names(vmid)
            elif kind in CONTENT_DIRS and kind != "rootdir":
                directory = self.content_dir(kind)
                names = [f"{kind}/{n}" for n in sorted(os.listdir(directory))] if directory.is_dir() else []
            else:
                continue
            for volname in names:
                try:
                    volume = parse_volname(volname)
                    info = self.size_info(volume)
                except (ValueError, OSError, StorageError):
                    continue  # a file that is not a volume, or vanished meanwhile
                if vmid is not None and volume.vmid != vmid:
                    continue
                linked = _LINKED_PARENT_RE.fullmatch(str(info.get("parent", "")))
                if linked and not volume.base:  # a linked clone is listed by its full name, as Proxmox does
                    volume = parse_volname(f"{linked.group(1)}/{volume.volname}")
                entry = {"volid": f"{self.storage.storeid}:{volume.volname}", "content": kind, **info}
                if kind == "backup":
                    entry.update(backups.listing_fields(Path(self.path(volume))))
                if volume.vmid is not None:
                    entry["vmid"] = volume.vmid
                result.append(entry)
        return result
